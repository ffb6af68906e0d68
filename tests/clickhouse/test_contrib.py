"""The upstream contrib `clickhouseexporter` writes into OUR ClickHouse tables.

schema/clickhouse/ keeps the contrib exporter's table names and column types so that its users can
switch to otelstore and keep their dashboards. This test runs the other direction end to end: the
contrib exporter (built by bench/contrib/build.sh into build/otelcol-contrib-clickhouse/, otlp
receiver + clickhouseexporter) with `create_schema: false` inserts into the tables rendered from
schema/clickhouse/ (single-node values, as test_schema.py), served by chdb_front.py over HTTP,
which is the transport the contrib exporter uses for `http://` endpoints (clickhouse-go: Native
blocks, LZ4-compressed, `client_protocol_version` on the URL). telemetrygen sends traces, logs and
every metric type the exporter stores; then rows, a few columns and the rollup views are checked.

Skipped until the contrib distribution is built (`bench/contrib/build.sh`), so `make test` does not
depend on it.
"""

import json
import subprocess
import time

import pytest
import requests

from conftest import ROOT, free_port, stop_process
from test_schema import SINGLE_NODE, migrate

COLLECTOR = ROOT / "build" / "otelcol-contrib-clickhouse" / "otelcol-contrib-clickhouse"
TELEMETRYGEN = ROOT / ".tools" / "bin" / "telemetrygen"

pytestmark = [
    pytest.mark.skipif(not COLLECTOR.exists(), reason=f"{COLLECTOR.relative_to(ROOT)} not built (run bench/contrib/build.sh)"),
    pytest.mark.skipif(not TELEMETRYGEN.exists(), reason=f"{TELEMETRYGEN.relative_to(ROOT)} missing (run make tools)"),
]

TRACES, CHILD_SPANS = 50, 1
INFO_LOGS, ERROR_LOGS = 20, 10
METRIC_POINTS = 20
METRIC_TYPES = {  # telemetrygen --metric-type -> our table suffix and the rollups' MetricType
    "Gauge": "gauge", "Sum": "sum", "Histogram": "histogram", "ExponentialHistogram": "exponential_histogram"}


@pytest.fixture(scope="module")
def schema(front):
    """Our tables, created as the core creates them (test_schema.migrate), through the front."""
    migrate(front.run, SINGLE_NODE)


@pytest.fixture(scope="module")
def collector(front, schema, tmp_path_factory):
    d = tmp_path_factory.mktemp("contrib")
    grpc, http = free_port(), free_port()
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{grpc}"},
                                             "http": {"endpoint": f"127.0.0.1:{http}"}}}},
        "processors": {"batch": {"timeout": "200ms"}},
        "exporters": {"clickhouse": {
            "endpoint": front.url,  # http://: clickhouse-go's HTTP protocol
            "database": "otel",
            "create_schema": False,  # write into our tables, created above
            "traces_table_name": "otel_traces",
            "logs_table_name": "otel_logs",
            "metrics_tables": {t: {"name": f"otel_metrics_{t}"} for t in [*METRIC_TYPES.values(), "summary"]},
            "timeout": "10s",
            # A rejected insert is logged at once (and the test fails on the row counts) instead
            # of being retried for minutes.
            "retry_on_failure": {"enabled": False},
        }},
        "service": {
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "info"}},
            "pipelines": {p: {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["clickhouse"]}
                          for p in ("traces", "logs", "metrics")},
        },
    }
    cfg = d / "config.yaml"
    cfg.write_text(json.dumps(config, indent=2))  # JSON is YAML
    log_path = d / "collector.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([str(COLLECTOR), "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "Everything is ready" not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"contrib collector did not start (exit {proc.poll()}):\n{log_path.read_text()}")
            time.sleep(0.2)
        yield {"grpc": f"127.0.0.1:{grpc}", "http": f"http://127.0.0.1:{http}", "log": log_path}
    finally:
        stop_process(proc)
        log.close()


# What telemetrygen cannot send, as OTLP/HTTP JSON: a call from svc-a (Client span, with an event)
# to svc-b (Server span, with a link), for the Nested Events/Links columns and the dependency view,
# and a summary point.
TRACE_ID, CLIENT_ID, SERVER_ID = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "eee19b7ec3c1b175"
LINKED_TRACE, LINKED_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


def otlp_json(now_ns):
    def res(service):
        return {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]}

    def span(span_id, parent, kind, start, end, **extra):
        return {"traceId": TRACE_ID, "spanId": span_id, "parentSpanId": parent, "name": "GET /items", "kind": kind,
                "startTimeUnixNano": str(start), "endTimeUnixNano": str(end), "status": {"code": 2 if kind == 2 else 0},
                "attributes": [{"key": "http.route", "value": {"stringValue": "/items"}}], **extra}

    traces = {"resourceSpans": [
        {"resource": res("svc-a"), "scopeSpans": [{"scope": {"name": "itest", "version": "1"}, "spans": [
            span(CLIENT_ID, "", 3, now_ns, now_ns + 5_000_000, events=[
                {"timeUnixNano": str(now_ns + 1000), "name": "retry",
                 "attributes": [{"key": "attempt", "value": {"intValue": "2"}}]}])]}]},
        {"resource": res("svc-b"), "scopeSpans": [{"scope": {"name": "itest"}, "spans": [
            span(SERVER_ID, CLIENT_ID, 2, now_ns + 1_000_000, now_ns + 4_000_000, links=[
                {"traceId": LINKED_TRACE, "spanId": LINKED_SPAN, "traceState": "k=v",
                 "attributes": [{"key": "why", "value": {"stringValue": "batch"}}]}])]}]},
    ]}
    metrics = {"resourceMetrics": [{"resource": res("svc-a"), "scopeMetrics": [{"scope": {"name": "itest"}, "metrics": [
        {"name": "rpc.latency", "unit": "s", "summary": {"dataPoints": [{
            "startTimeUnixNano": str(now_ns - 60_000_000_000), "timeUnixNano": str(now_ns), "count": "3", "sum": 0.3,
            "attributes": [{"key": "rpc.method", "value": {"stringValue": "Get"}}],
            "quantileValues": [{"quantile": 0.5, "value": 0.1}, {"quantile": 0.99, "value": 0.2}]}]}}]}]}]}
    return traces, metrics


def telemetrygen(collector, *args):
    cmd = [str(TELEMETRYGEN), *args, "--otlp-insecure", "--otlp-endpoint", collector["grpc"], "--rate", "0"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{' '.join(cmd)}: {r.stderr[-2000:]}"


@pytest.fixture(scope="module")
def pushed(front, collector):
    """Sends everything once, then waits until every raw table holds what was sent."""
    telemetrygen(collector, "traces", "--traces", str(TRACES), "--child-spans", str(CHILD_SPANS))
    telemetrygen(collector, "logs", "--logs", str(INFO_LOGS))
    telemetrygen(collector, "logs", "--logs", str(ERROR_LOGS), "--severity-number", "17", "--severity-text", "Error",
                 "--body", "connection refused")
    for kind in METRIC_TYPES:
        telemetrygen(collector, "metrics", "--metrics", str(METRIC_POINTS), "--metric-type", kind)
    traces, metrics = otlp_json(time.time_ns())
    for path, body in (("/v1/traces", traces), ("/v1/metrics", metrics)):
        r = requests.post(collector["http"] + path, json=body, timeout=30)
        assert r.status_code == 200, (path, r.text)
    want = {"otel_traces": TRACES * (1 + CHILD_SPANS) + 2, "otel_logs": INFO_LOGS + ERROR_LOGS, "otel_metrics_summary": 1}
    want.update({f"otel_metrics_{t}": METRIC_POINTS for t in METRIC_TYPES.values()})
    deadline = time.monotonic() + 60
    while True:
        got = {t: front.value(f"SELECT count() FROM otel.{t}") for t in want}
        if got == want:
            return
        log = collector["log"].read_text()
        if time.monotonic() > deadline or "Exporting failed" in log:
            time.sleep(1)  # let the other signals' errors reach the log too
            pytest.fail(f"rows {got}, expected {want}; contrib collector log:\n{collector['log'].read_text()[-6000:]}")
        time.sleep(0.5)


def test_traces(front, pushed):
    spans = TRACES * (1 + CHILD_SPANS)
    assert front.rows("SELECT count(), uniqExact(TraceId), uniqExact(SpanId), countIf(ParentSpanId = ''), "
                      "min(length(TraceId)), max(length(SpanId)), countIf(ServiceName = 'telemetrygen'), "
                      "countIf(ResourceAttributes['service.name'] = 'telemetrygen'), countIf(Duration > 0), "
                      "countIf(StatusCode = 'Unset'), countIf(abs(dateDiff('minute', Timestamp, now64(9))) < 30) "
                      "FROM otel.otel_traces WHERE ServiceName = 'telemetrygen'") == [[spans, TRACES, spans, TRACES, 32, 16, spans, spans, spans, spans, spans]]
    kinds = {r[0] for r in front.rows("SELECT DISTINCT SpanKind FROM otel.otel_traces WHERE ServiceName = 'telemetrygen'")}
    assert kinds <= {"Client", "Server", "Internal", "Producer", "Consumer"}, kinds  # pdata's names, as the views expect
    # the child spans point at their parents
    assert front.value("SELECT count() FROM otel.otel_traces c JOIN otel.otel_traces p "
                       "ON c.TraceId = p.TraceId AND c.ParentSpanId = p.SpanId "
                       "WHERE c.ServiceName = 'telemetrygen'") == TRACES * CHILD_SPANS


def test_events_links_and_statuses(front, pushed):
    """The Nested columns (Array(DateTime64(9)), Array(Map(...))) and enum strings, as contrib writes them."""
    rows = front.rows(f"SELECT ServiceName, SpanKind, StatusCode, ParentSpanId, ScopeName, ScopeVersion, SpanAttributes, "
                      f"Duration, `Events.Name`, `Events.Attributes`, "
                      f"arrayMap(t -> toUnixTimestamp64Nano(t) - toUnixTimestamp64Nano(Timestamp), `Events.Timestamp`), "
                      f"`Links.TraceId`, `Links.SpanId`, `Links.TraceState`, `Links.Attributes` "
                      f"FROM otel.otel_traces WHERE TraceId = '{TRACE_ID}' ORDER BY Timestamp")
    assert rows == [
        ["svc-a", "Client", "Unset", "", "itest", "1", {"http.route": "/items"}, 5_000_000,
         ["retry"], [{"attempt": "2"}], [1000], [], [], [], []],
        ["svc-b", "Server", "Error", CLIENT_ID, "itest", "", {"http.route": "/items"}, 3_000_000,
         [], [], [], [LINKED_TRACE], [LINKED_SPAN], ["k=v"], [{"why": "batch"}]],
    ]


def test_trace_views(front, pushed):
    spans = TRACES * (1 + CHILD_SPANS)
    assert front.value("SELECT uniqExact(TraceId) FROM otel.otel_traces_trace_id_ts") == TRACES + 1  # + the JSON one
    stats = front.rows("SELECT SpanKind, countMerge(Spans), sumMerge(Errors), minMerge(DurationMin) > 0, "
                       "quantileTDigestMerge(0.5)(DurationQuantiles) > 0 FROM otel.otel_span_stats_1h "
                       "WHERE ServiceName = 'telemetrygen' GROUP BY SpanKind ORDER BY SpanKind")
    assert sum(r[1] for r in stats) == spans and all(r[2] == 0 and r[3] and r[4] for r in stats), stats
    assert front.rows("SELECT ServiceName, SpanKind, countMerge(Spans), sumMerge(Errors) FROM otel.otel_span_stats_1h "
                      "WHERE ServiceName LIKE 'svc-%' GROUP BY ServiceName, SpanKind ORDER BY ServiceName") == [
        ["svc-a", "Client", 1, 0], ["svc-b", "Server", 1, 1]]
    # the call svc-a -> svc-b (an error), found by the dependency view across the two services
    assert front.rows("SELECT ParentService, ChildService, uniqCombined64Merge(Calls), uniqCombined64Merge(Errors) "
                      "FROM otel.otel_service_dependencies_1h GROUP BY ParentService, ChildService") == [
        ["svc-a", "svc-b", 1, 1]]


def test_logs_and_error_view(front, pushed):
    assert front.rows("SELECT SeverityText, SeverityNumber, any(Body), count(), countIf(ServiceName = 'telemetrygen'), "
                      "countIf(TimestampTime = toDateTime(Timestamp)), countIf(abs(dateDiff('minute', Timestamp, now64(9))) < 30) "
                      "FROM otel.otel_logs GROUP BY SeverityText, SeverityNumber ORDER BY SeverityNumber") == [
        ["Info", 9, "the message", INFO_LOGS, INFO_LOGS, INFO_LOGS, INFO_LOGS],
        ["Error", 17, "connection refused", ERROR_LOGS, ERROR_LOGS, ERROR_LOGS, ERROR_LOGS],
    ]
    assert front.rows("SELECT ServiceName, countMerge(Records) FROM otel.otel_error_logs_1h GROUP BY ServiceName") == [
        ["telemetrygen", ERROR_LOGS]]
    assert front.value("SELECT count() FROM otel.otel_logs WHERE hasToken(lower(Body), 'refused')") == ERROR_LOGS


def test_metrics_and_rollups(front, pushed):
    for kind, table in METRIC_TYPES.items():
        assert front.rows(f"SELECT uniqExact(MetricName), count(), countIf(ServiceName = 'telemetrygen'), "
                          f"countIf(abs(dateDiff('minute', TimeUnix, now64(9))) < 30) FROM otel.otel_metrics_{table}") == [
            [1, METRIC_POINTS, METRIC_POINTS, METRIC_POINTS]], kind
    for rollup in ("5m", "1h"):
        got = dict(front.rows(f"SELECT MetricType, countMerge(Points) FROM otel.otel_metrics_rollup_{rollup} GROUP BY MetricType"))
        assert got == {t: METRIC_POINTS for t in METRIC_TYPES.values()}, rollup
    hist = front.rows("SELECT sum(Count), sum(length(BucketCounts)) > 0 FROM otel.otel_metrics_histogram")
    assert hist[0][0] > 0 and hist[0][1], hist
    # summaries (not rolled up), from the OTLP/HTTP request
    assert front.rows("SELECT ServiceName, MetricName, MetricUnit, Attributes, Count, Sum, `ValueAtQuantiles.Quantile`, "
                      "`ValueAtQuantiles.Value`, toUnixTimestamp64Nano(TimeUnix) - toUnixTimestamp64Nano(StartTimeUnix) "
                      "FROM otel.otel_metrics_summary") == [
        ["svc-a", "rpc.latency", "s", {"rpc.method": "Get"}, 3, 0.3, [0.5, 0.99], [0.1, 0.2], 60_000_000_000]]
