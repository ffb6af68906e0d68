"""End-to-end: the rollup tables of schema/postgres/0006_rollups.sql and the exporter's partition
maintenance (rust/core/src/sink/postgres/rollup.rs and partitions.rs), through a real collector.

Data comes from the Python OpenTelemetry SDK over OTLP. Every rollup is compared with the same
aggregate computed in SQL from the raw rows of the same schema (so the test does not restate the
exporter's arithmetic in Python), and with at least one literal value of what the test sent (so
empty tables cannot agree). Maintenance runs every second (postgres.maintenance_interval) so that
pending service dependencies, partitions and retention can be observed within a few seconds.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
import warnings
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry._logs import SeverityNumber

from conftest import Collector, query, scalar, unique_name, wait_for_count, wait_until
from otlp_rows import canonical, expected_metric_rows
from payloads import (
    ALL_INSTRUMENTS,
    RecordingLogExporter,
    RecordingMetricExporter,
    otlp_exporter,
    otlp_log_exporter,
    otlp_metric_exporter,
    random_context,
)
from test_metrics import wait_for_tables

FAST_MAINTENANCE = {"postgres": {"maintenance_interval": "1s"}}
SERVER, CLIENT, INTERNAL = 2, 3, 1  # OTLP span kinds


def rows_of(db: psycopg.Connection, sql: str, params: Any = None) -> list[dict]:
    with db.cursor() as cur:
        cur.execute(sql, params)
        names = [d.name for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]


def keyed(rows: list[dict], key: tuple[str, ...]) -> dict[tuple, dict]:
    """Rows by their key columns (jsonb values made hashable); a key seen twice fails."""
    out: dict[tuple, dict] = {}
    for r in rows:
        k = tuple(canonical(r[c]) if isinstance(r[c], (dict, list)) and c != "explicit_bounds" else
                  (tuple(r[c]) if isinstance(r[c], list) else r[c]) for c in key)
        assert k not in out, f"key {k} twice: {out[k]} and {r}"
        out[k] = r
    return out


def compare_keyed(got: list[dict], want: list[dict], key: tuple[str, ...], columns: list[str], label: str) -> None:
    """Every row of `want` has a row of `got` with the same key and equal `columns`, and no more."""
    g, w = keyed(got, key), keyed(want, key)
    problems = [f"{label}: missing rollup row {k}: expected {w[k]}" for k in w.keys() - g.keys()]
    problems += [f"{label}: rollup row without raw rows {k}: {g[k]}" for k in g.keys() - w.keys()]
    for k in sorted(w.keys() & g.keys(), key=repr):
        for c in columns:
            if g[k][c] != w[k][c]:
                problems.append(f"{label} {k} {c}: expected {w[k][c]!r} (from the raw rows), got {g[k][c]!r}")
    assert not problems, "rollup differs from the raw rows:\n" + "\n".join(problems)


def hour_bucket(column: str, width: int = 3600) -> str:
    """The SQL for the start of the `width`-second bucket (epoch-aligned, UTC) holding `column`."""
    return f"to_timestamp(floor(extract(epoch FROM {column}) / {width}) * {width})"


# --------------------------------------------------------------------------- span statistics and dependencies


def test_span_stats_and_service_dependencies(start_collector, db: psycopg.Connection):
    c = start_collector(exporter_overrides=FAST_MAINTENANCE)
    run = secrets.token_hex(3)
    frontend, backend = f"frontend_{run}", f"backend_{run}"

    def provider(service: str) -> TracerProvider:
        p = TracerProvider(resource=Resource({"service.name": service}))
        # One export request per provider: the test flushes it by hand.
        p.add_span_processor(BatchSpanProcessor(otlp_exporter("grpc", c), schedule_delay_millis=60_000,
                                                max_export_batch_size=2048, max_queue_size=4096))
        return p

    fe, be, be_callers = provider(frontend), provider(backend), provider(backend)
    fe_t, be_t, be_callers_t = (p.get_tracer("e2e.rollups") for p in (fe, be, be_callers))

    # Every start within one minute of `base`, all in one hour (so one span_stats row per operation
    # holds every span of it, for the quantile check).
    now = time.time_ns()
    t0 = now - 120 * 10**9
    hour_start = t0 // (3600 * 10**9) * 3600 * 10**9
    base = max(t0 - 60 * 10**9, hour_start + 10**9)
    ms = 10**6

    def span(tracer, name: str, kind: SpanKind, start: int, duration: int, parent=None, error: bool = False):
        ctx = set_span_in_context(NonRecordingSpan(parent)) if parent is not None else None
        s = tracer.start_span(name, context=ctx, kind=kind, start_time=start)
        if error:
            s.set_status(Status(StatusCode.ERROR, "boom"))
        s.end(end_time=start + duration)
        return s

    n_calls, call_errors, server_errors = 40, {3, 17}, {5, 11, 29}
    durations = [(7 + 13 * i % 97) * ms + i * 1_111 for i in range(n_calls)]  # 7 ms .. 103 ms, all distinct
    orphans = []
    for i in range(n_calls):
        start = base + i * 1_000 * ms // 2
        root = span(fe_t, "checkout", SpanKind.INTERNAL, start, durations[i] + 5 * ms)
        root_ctx = root.get_span_context()
        call = span(fe_t, "GET /api", SpanKind.CLIENT, start + ms, durations[i] + 2 * ms, parent=root_ctx,
                    error=i in call_errors)
        call_ctx = call.get_span_context()
        # The backend's side, in another export request: a remote parent.
        remote = SpanContext(call_ctx.trace_id, call_ctx.span_id, is_remote=True, trace_flags=call_ctx.trace_flags)
        server = span(be_t, "handle /api", SpanKind.SERVER, start + 2 * ms, durations[i], parent=remote,
                      error=i in server_errors)
        span(be_t, "db query", SpanKind.INTERNAL, start + 3 * ms, durations[i] // 2, parent=server.get_span_context(),
             error=i == 5)
    # A client -> server pair within the frontend, in one request: the same service calls nothing.
    self_call = span(fe_t, "self call", SpanKind.CLIENT, base, 4 * ms)
    span(fe_t, "self handler", SpanKind.SERVER, base + ms, 2 * ms, parent=self_call.get_span_context())
    # The same within the backend, across requests (be_callers is another provider of "backend"):
    # resolved by the maintenance, and still nothing counted.
    for i in range(3):
        caller = span(be_callers_t, "backend self call", SpanKind.CLIENT, base + i * ms, 6 * ms)
        cctx = caller.get_span_context()
        remote = SpanContext(cctx.trace_id, cctx.span_id, is_remote=True, trace_flags=cctx.trace_flags)
        span(be_t, "backend self handler", SpanKind.SERVER, base + i * ms + ms, 3 * ms, parent=remote)
    # Server spans whose (remote) parent never arrives: they stay pending.
    for i in range(2):
        parent = random_context(remote=True)
        orphans.append(parent.span_id.to_bytes(8, "big"))
        span(be_t, "handle orphan", SpanKind.SERVER, base + i * ms, 5 * ms, parent=parent, error=i == 0)

    try:
        # The backend first, so that its server spans certainly miss their parents in their request.
        for p in (be, be_callers, fe):
            assert p.force_flush(15_000), "span export timed out"
    finally:
        for p in (fe, be, be_callers):
            p.shutdown()

    total = n_calls * 4 + 2 + 3 * 2 + 2
    wait_for_count(db, f"SELECT count(*) FROM {c.spans_table}", total, on_fail=c.describe)
    spans = c.spans_table

    # ---- span_stats_1h against the raw spans
    want = rows_of(db, f"""
        SELECT {hour_bucket('start_time')} AS bucket_start, service_name, name AS span_name, kind AS span_kind,
               count(*) AS spans, count(*) FILTER (WHERE status_code = 2) AS errors,
               sum(duration_ns)::bigint AS duration_sum_ns, min(duration_ns) AS duration_min_ns,
               max(duration_ns) AS duration_max_ns
        FROM {spans} GROUP BY 1, 2, 3, 4""")
    got = rows_of(db, f"""
        SELECT bucket_start, service_name, span_name, span_kind, spans, errors, duration_sum_ns, duration_min_ns,
               duration_max_ns, (SELECT sum(b) FROM unnest(duration_buckets) b)::bigint AS bucket_total
        FROM {c.table('span_stats_1h')}""")
    stat_columns = ["spans", "errors", "duration_sum_ns", "duration_min_ns", "duration_max_ns"]
    compare_keyed(got, want, ("bucket_start", "service_name", "span_name", "span_kind"), stat_columns, "span_stats_1h")
    for r in got:
        assert r["bucket_total"] == r["spans"], f"duration_buckets do not add up to the span count: {r}"
    by_op = {(r["service_name"], r["span_name"], r["span_kind"]): r for r in got}
    # Literal: what the test sent.
    assert len(got) == 9, sorted(by_op)  # 4 frontend operations, 5 backend ones
    handle = by_op[(backend, "handle /api", SERVER)]
    assert (handle["spans"], handle["errors"]) == (n_calls, len(server_errors))
    assert (handle["duration_min_ns"], handle["duration_max_ns"], handle["duration_sum_ns"]) == (
        min(durations), max(durations), sum(durations))
    client = by_op[(frontend, "GET /api", CLIENT)]
    assert (client["spans"], client["errors"]) == (n_calls, len(call_errors))
    assert by_op[(backend, "db query", INTERNAL)]["errors"] == 1
    assert by_op[(frontend, "checkout", INTERNAL)]["errors"] == 0

    # ---- the median estimate, for an operation of 40 spans in one hour
    estimate, exact = query(db, f"""
        SELECT "{c.schema}".otelstore_duration_quantile(r.duration_buckets, 0.5),
               (SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_ns) FROM {spans}
                WHERE service_name = r.service_name AND name = r.span_name AND kind = r.span_kind)
        FROM {c.table('span_stats_1h')} r WHERE service_name = %s AND span_name = 'handle /api'""", (backend,))[0]
    assert exact == sorted(durations)[n_calls // 2 - 1]
    assert abs(estimate - exact) <= 0.1 * exact, f"median estimate {estimate} vs exact {exact}"

    # ---- service_dependencies_1h, once the maintenance has matched the pending spans
    pending = c.table("otelstore_pending_dependencies")

    def dependencies_settled():
        left = [r[0] for r in query(db, f"SELECT parent_span_id FROM {pending}")]
        return sorted(left) == sorted(orphans) and left

    wait_until(dependencies_settled, 20, "pending dependencies drained to the orphans", c.describe)
    want = rows_of(db, f"""
        SELECT {hour_bucket('child.start_time')} AS bucket_start, parent.service_name AS parent_service,
               child.service_name AS child_service, count(*) AS calls,
               count(*) FILTER (WHERE child.status_code = 2) AS errors
        FROM {spans} child JOIN {spans} parent
          ON parent.trace_id = child.trace_id AND parent.span_id = child.parent_span_id
        WHERE child.kind IN (2, 5) AND parent.kind IN (3, 4) AND parent.service_name <> child.service_name
        GROUP BY 1, 2, 3""")
    got = rows_of(db, f"SELECT bucket_start, parent_service, child_service, calls, errors "
                      f"FROM {c.table('service_dependencies_1h')}")
    compare_keyed(got, want, ("bucket_start", "parent_service", "child_service"), ["calls", "errors"],
                  "service_dependencies_1h")
    assert {(r["parent_service"], r["child_service"]) for r in got} == {(frontend, backend)}, got
    assert sum(r["calls"] for r in got) == n_calls and sum(r["errors"] for r in got) == len(server_errors)
    # The orphans stay (the maintenance gives up on them only after an hour), with their facts.
    assert sorted(query(db, f"SELECT child_service, child_error FROM {pending}")) == [(backend, False), (backend, True)]
    # Nothing more is counted on later runs.
    time.sleep(2.5)
    assert rows_of(db, f"SELECT bucket_start, parent_service, child_service, calls, errors "
                       f"FROM {c.table('service_dependencies_1h')}") == got


# --------------------------------------------------------------------------- error logs


def test_error_logs_per_service_and_hour(start_collector, db: psycopg.Connection):
    c = start_collector(exporter_overrides=FAST_MAINTENANCE)
    run = secrets.token_hex(3)
    services = [f"logs_a_{run}", f"logs_b_{run}"]
    recorders, providers, handlers = [], [], []
    now = time.time_ns()
    try:
        for i, service in enumerate(services):
            recorder = RecordingLogExporter(otlp_log_exporter("grpc" if i == 0 else "http", c))
            provider = LoggerProvider(resource=Resource({"service.name": service}))
            provider.add_log_record_processor(BatchLogRecordProcessor(recorder, schedule_delay_millis=100,
                                                                      export_timeout_millis=15_000))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                handler = LoggingHandler(level=logging.NOTSET, logger_provider=provider)
            logger = logging.getLogger(f"e2e.rollups.{service}")
            logger.propagate = False
            logger.setLevel(logging.DEBUG)
            logger.addHandler(handler)
            recorders.append(recorder)
            providers.append(provider)
            handlers.append((logger, handler))

            # Python logging at every level: ERROR, CRITICAL and exception() are >= 17.
            for k in range(3 + i):
                logger.debug("debug %d", k)
                logger.info("info %d", k)
                logger.warning("warning %d", k)
                logger.error("error %d", k)
            logger.critical("critical")
            try:
                raise RuntimeError("e2e")
            except RuntimeError:
                logger.exception("exception")
            logger.log(35, "between WARNING and ERROR")  # 13..16: not an error
            # Records two and three hours back, at the edges of severity 17 (other hour buckets).
            direct = provider.get_logger("e2e.rollups.direct")
            for hours_back, severity in [(2, SeverityNumber.WARN4), (2, SeverityNumber.ERROR), (2, SeverityNumber.FATAL4),
                                         (3, SeverityNumber.ERROR2), (3, SeverityNumber.INFO)]:
                ts = now - hours_back * 3600 * 10**9
                direct.emit(timestamp=ts, observed_timestamp=now, severity_number=severity, body=f"{hours_back}h ago")
            # No timestamp: counted at the observed time (which the `time` column holds).
            direct.emit(observed_timestamp=now - 3600 * 10**9, severity_number=SeverityNumber.ERROR3, body="observed only")
            assert provider.force_flush(15_000)
    finally:
        for logger, handler in handlers:
            logger.removeHandler(handler)
        for p in providers:
            p.shutdown()
    for r in recorders:
        assert r.results and all(x == LogRecordExportResult.SUCCESS for x in r.results), r.results

    sent = sum(len(lr.log_records) for r in recorders for req in r.requests
               for rl in req.resource_logs for lr in rl.scope_logs)
    wait_for_count(db, f"SELECT count(*) FROM {c.logs_table}", sent, on_fail=c.describe)
    want = rows_of(db, f"""
        SELECT {hour_bucket('time')} AS bucket_start, service_name, count(*) AS error_logs
        FROM {c.logs_table} WHERE severity_number >= 17 GROUP BY 1, 2""")
    got = rows_of(db, f"SELECT bucket_start, service_name, error_logs FROM {c.table('error_logs_1h')}")
    compare_keyed(got, want, ("bucket_start", "service_name"), ["error_logs"], "error_logs_1h")
    # Literal: per service, (3 + i) error() + critical + exception + ERROR + FATAL4 + ERROR2 + ERROR3.
    for i, service in enumerate(services):
        assert sum(r["error_logs"] for r in got if r["service_name"] == service) == 3 + i + 2 + 4, (service, got)
        assert len({r["bucket_start"] for r in got if r["service_name"] == service}) >= 3, got


# --------------------------------------------------------------------------- metrics


# Measurements per collection (a collection and export after each). Every double is a multiple of
# 1/4, so sums are exact whatever the order of addition.
METRIC_ROUNDS: list[dict[str, Any]] = [
    {"requests": [(1, {"route": "/a"}), (5, {"route": "/a"}), (2, {"route": "/b"})], "bytes": [0.5, 1.25],
     "queue": [5, -8], "gauge": 21.5, "gauge.int": 7, "latency": [3, 7.5, 0, 30, 120.25, 5],
     "size": [3.0, 100, 0, 1500.5, 0.75]},
    {"requests": [(3, {"route": "/a"})], "bytes": [2.0], "queue": [2], "gauge": -1.5, "gauge.int": 9,
     "latency": [60, 1], "size": [7.0, 2.5]},
    {"requests": [(4, {"route": "/a"}), (6, {"route": "/b"})], "bytes": [0.25, 8.0], "queue": [-1],
     "gauge": 3.0, "gauge.int": -2, "latency": [0.5, 99], "size": [12.0, 0, 48.25]},
]
HIST_BOUNDS = [0.0, 5.0, 10.0, 25.0, 50.0, 100.0]


def metric_rollup_sql(c: Collector, table: str, width: int) -> dict[str, str]:
    """(expected from the raw rows, stored rollup) queries for the points of one raw table, bucketed
    as `width`-second buckets. Series: metric name, resource, point attributes, temporality (and
    histogram bounds or exponential scale, which the series id hashes too)."""
    raw = c.table(table)
    temporality = "0" if table == "metrics_gauge" else "aggregation_temporality"
    extra = {"metrics_histogram": ", explicit_bounds", "metrics_exponential_histogram": ", scale"}.get(table, "")
    key = f"metric_name, resource_attributes, attributes, {temporality}{extra}"
    bucket = hour_bucket("time", width)
    metric_type = {"metrics_gauge": 1, "metrics_sum": 2, "metrics_histogram": 3, "metrics_exponential_histogram": 4}[table]
    rollup = f"""SELECT bucket_start, metric_name, resource_attributes, attributes, aggregation_temporality AS t{extra},
                        points, last_time_unix_nano, sum, min, max, last, count, bucket_counts, zero_count,
                        positive_offset, positive_bucket_counts, negative_offset, negative_bucket_counts
                 FROM {c.table('metrics_rollup_5m' if width == 300 else 'metrics_rollup_1h')}
                 WHERE metric_type = {metric_type}"""
    if table in ("metrics_gauge", "metrics_sum"):
        want = f"""
            SELECT {bucket} AS bucket_start, metric_name, resource_attributes, attributes, {temporality} AS t,
                   count(*) AS points, max(time_unix_nano) AS last_time_unix_nano,
                   sum(coalesce(value_double, value_int)) AS sum, min(coalesce(value_double, value_int)) AS min,
                   max(coalesce(value_double, value_int)) AS max,
                   (array_agg(coalesce(value_double, value_int) ORDER BY time_unix_nano DESC))[1] AS last
            FROM {raw} GROUP BY 1, 2, 3, 4, 5"""
        return {"want": want, "got": rollup}
    # Histograms: delta points add up (counts element by element), of cumulative ones the newest
    # point counts. Exponential buckets are added at their absolute index (offset + position).
    counts = "bucket_counts" if table == "metrics_histogram" else "positive_bucket_counts"
    neg = "" if table == "metrics_histogram" else "negative_bucket_counts"

    def cells(array: str, offset: str) -> str:
        """Every count of `array` with its absolute bucket index, per series and bucket (k)."""
        return f"""cells_{array} AS (
            SELECT k, {offset} + o::int - 1 AS i, n FROM pts, unnest({array}) WITH ORDINALITY AS u(n, o))"""

    pos_offset = "0" if table == "metrics_histogram" else "positive_offset"
    ctes = [f"""pts AS (
            SELECT *, row_number() OVER (PARTITION BY k ORDER BY time_unix_nano DESC) AS newest FROM (
                SELECT *, {bucket} AS bucket_start, {temporality} AS t,
                       md5(row({bucket}, {key})::text) AS k FROM {raw}) r)""",
            cells(counts, pos_offset)]
    if neg:
        ctes.append(cells(neg, "negative_offset"))
    sums = f"""
        SELECT k, bucket_start, metric_name, resource_attributes, attributes, t{extra},
               count(*) AS points, max(time_unix_nano) AS last_time_unix_nano,
               min(min) AS min, max(max) AS max, sum(count)::bigint AS d_count, sum(sum) AS d_sum,
               {"sum(zero_count)::bigint" if neg else "NULL::bigint"} AS d_zero_count
        FROM pts GROUP BY k, bucket_start, metric_name, resource_attributes, attributes, t{extra}"""

    def filled(array: str) -> str:
        """Per series and bucket: the lowest index and the element-wise sums from there (gaps as 0)."""
        return f"""(SELECT k, min(g) AS lo, array_agg(coalesce(s.n, 0) ORDER BY g) AS counts
                   FROM (SELECT k, min(i) AS lo, max(i) AS hi FROM cells_{array} GROUP BY k) b
                   CROSS JOIN LATERAL generate_series(b.lo, b.hi) g
                   LEFT JOIN LATERAL (SELECT sum(n)::bigint AS n FROM cells_{array} c WHERE c.k = b.k AND c.i = g) s ON TRUE
                   GROUP BY k)"""
    want = f"""WITH {', '.join(ctes)}
        SELECT a.bucket_start, a.metric_name, a.resource_attributes, a.attributes, a.t{extra.replace(', ', ', a.')},
               a.points, a.last_time_unix_nano, a.min, a.max,
               CASE WHEN a.t = 1 THEN a.d_count ELSE latest.count END AS count,
               CASE WHEN a.t = 1 THEN a.d_sum ELSE latest.sum END AS sum,
               CASE WHEN a.t = 1 THEN coalesce(p.counts, '{{}}') ELSE latest.{counts} END AS {counts}
               {f''', CASE WHEN a.t = 1 THEN p.lo ELSE latest.positive_offset END AS positive_offset,
                      CASE WHEN a.t = 1 THEN a.d_zero_count ELSE latest.zero_count END AS zero_count,
                      CASE WHEN a.t = 1 THEN coalesce(n.counts, '{{}}') ELSE latest.{neg} END AS {neg}''' if neg else ''}
        FROM ({sums}) a
        JOIN pts latest ON latest.k = a.k AND latest.newest = 1
        LEFT JOIN {filled(counts)} p ON p.k = a.k
        {f'LEFT JOIN {filled(neg)} n ON n.k = a.k' if neg else ''}"""
    return {"want": want, "got": rollup}


def test_metrics_rollups(start_collector, db: psycopg.Connection):
    c = start_collector(exporter_overrides=FAST_MAINTENANCE)
    run = secrets.token_hex(3)
    recorders, providers, meters = [], [], []
    state = {"round": 0}
    for temporality in ("cumulative", "delta"):
        preferred = ({cls: AggregationTemporality.DELTA for cls in ALL_INSTRUMENTS}
                     if temporality == "delta" else {})
        recorder = RecordingMetricExporter(otlp_metric_exporter("grpc", c, preferred))
        reader = PeriodicExportingMetricReader(recorder, export_interval_millis=math.inf, export_timeout_millis=15_000)
        provider = MeterProvider(
            metric_readers=[reader],
            resource=Resource({"service.name": f"metrics_{temporality}_{run}"}),
            views=[View(instrument_name="e2e.size",
                        aggregation=ExponentialBucketHistogramAggregation(max_size=40, max_scale=20))],
        )
        meter = provider.get_meter("e2e.rollups")
        instruments = {
            "requests": meter.create_counter("e2e.requests"),
            "bytes": meter.create_counter("e2e.bytes"),
            "queue": meter.create_up_down_counter("e2e.queue"),
            "latency": meter.create_histogram("e2e.latency", explicit_bucket_boundaries_advisory=HIST_BOUNDS),
            "size": meter.create_histogram("e2e.size"),
        }

        def gauge(name: str):
            def callback(options: CallbackOptions):
                yield Observation(METRIC_ROUNDS[state["round"]][name], {"room": "a"})
            return callback

        meter.create_observable_gauge("e2e.gauge", [gauge("gauge")])
        meter.create_observable_gauge("e2e.gauge.int", [gauge("gauge.int")])
        recorders.append((recorder, reader))
        providers.append(provider)
        meters.append(instruments)
    try:
        for k, r in enumerate(METRIC_ROUNDS):
            state["round"] = k
            for inst in meters:
                for v, a in r["requests"]:
                    inst["requests"].add(v, a)
                for v in r["bytes"]:
                    inst["bytes"].add(v)
                for v in r["queue"]:
                    inst["queue"].add(v, {"q": "1"})
                for v in r["latency"]:
                    inst["latency"].record(v, {"endpoint": "checkout"})
                for v in r["size"]:
                    inst["size"].record(v)
            for _, reader in recorders:
                assert reader.force_flush(15_000)
    finally:
        for p in providers:
            p.shutdown()
    requests_sent = [req for recorder, _ in recorders for req in recorder.requests]
    assert all(x == MetricExportResult.SUCCESS for recorder, _ in recorders for x in recorder.results)
    expected = expected_metric_rows(requests_sent)
    wait_for_tables(db, c, expected)

    key = ("bucket_start", "metric_name", "resource_attributes", "attributes", "t")
    for width in (300, 3600):
        label = "metrics_rollup_5m" if width == 300 else "metrics_rollup_1h"
        for table, columns, extra in [
            ("metrics_gauge", ["points", "last_time_unix_nano", "sum", "min", "max", "last"], ()),
            ("metrics_sum", ["points", "last_time_unix_nano", "sum", "min", "max", "last"], ()),
            ("metrics_histogram", ["points", "last_time_unix_nano", "count", "sum", "min", "max", "bucket_counts"],
             ("explicit_bounds",)),
            ("metrics_exponential_histogram",
             ["points", "last_time_unix_nano", "count", "sum", "min", "max", "zero_count", "positive_offset",
              "positive_bucket_counts", "negative_bucket_counts"], ("scale",)),
        ]:
            q = metric_rollup_sql(c, table, width)
            want_rows = rows_of(db, q["want"])
            assert want_rows, f"no raw points in {table}"
            compare_keyed(rows_of(db, q["got"]), want_rows, key + extra, columns, f"{label} ({table})")

        # Literal values from what was recorded, per temporality, summed over the buckets.
        rows = rows_of(db, f"SELECT * FROM {c.table(label)}")
        assert rows, f"{label} is empty"

        def rollup(name: str, temporality: int, attrs: dict | None = None) -> list[dict]:
            got = [r for r in rows if r["metric_name"] == name and r["aggregation_temporality"] == temporality
                   and (attrs is None or r["attributes"] == attrs)]
            assert got, (label, name, temporality, attrs)
            return got

        n_rounds = len(METRIC_ROUNDS)
        a_total = sum(v for r in METRIC_ROUNDS for v, a in r["requests"] if a == {"route": "/a"})
        # Delta: the rollup's sum is the total counted.
        assert sum(r["sum"] for r in rollup("e2e.requests", 1, {"route": "/a"})) == a_total
        assert sum(r["sum"] for r in rollup("e2e.bytes", 1)) == sum(v for r in METRIC_ROUNDS for v in r["bytes"])
        # Cumulative: one point per collection, the last one the running total.
        cum = rollup("e2e.requests", 2, {"route": "/a"})
        assert sum(r["points"] for r in cum) == n_rounds
        assert max(cum, key=lambda r: r["last_time_unix_nano"])["last"] == a_total
        g = rollup("e2e.gauge", 0)
        assert sum(r["points"] for r in g) == 2 * n_rounds  # both providers' gauges (temporality 0)
        assert {r["min"] for r in g} <= {21.5, -1.5, 3.0} and min(r["min"] for r in g) == -1.5
        lat_delta = rollup("e2e.latency", 1)
        all_latency = [v for r in METRIC_ROUNDS for v in r["latency"]]
        assert sum(r["count"] for r in lat_delta) == len(all_latency)
        assert sum(r["sum"] for r in lat_delta) == sum(all_latency)
        # Three collections in at most two buckets: some delta row merged several points.
        assert sum(r["points"] for r in lat_delta) == n_rounds and max(r["points"] for r in lat_delta) >= 2
        assert sorted(r["explicit_bounds"] for r in lat_delta)[0] == HIST_BOUNDS
        # Cumulative: the newest point is the running total.
        lat_cum = max(rollup("e2e.latency", 2), key=lambda r: r["last_time_unix_nano"])
        assert (lat_cum["count"], lat_cum["sum"]) == (len(all_latency), sum(all_latency))
        assert min(r["min"] for r in rollup("e2e.latency", 2)) == min(all_latency)
        size_delta = rollup("e2e.size", 1)
        all_size = [v for r in METRIC_ROUNDS for v in r["size"]]
        assert sum(r["count"] for r in size_delta) == len(all_size)
        assert sum(r["zero_count"] for r in size_delta) == all_size.count(0)
        assert sum(sum(r["positive_bucket_counts"]) for r in size_delta) == len(all_size) - all_size.count(0)


# --------------------------------------------------------------------------- retention and partitions


def day_digits(d: datetime) -> str:
    return d.strftime("%Y%m%d")


def test_retention_drops_old_partitions_and_rows(start_collector, db: psycopg.Connection):
    c = start_collector(exporter_overrides={
        "retention": {"raw": "24h", "rollup_5m": "24h", "rollup_1h": "48h"},
        **FAST_MAINTENANCE,
    })
    service = unique_name("retention")
    provider = TracerProvider(resource=Resource({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(otlp_exporter("grpc", c), schedule_delay_millis=60_000))
    try:
        with provider.get_tracer("e2e.rollups").start_as_current_span("first", kind=SpanKind.SERVER):
            pass
        assert provider.force_flush(15_000)
    finally:
        provider.shutdown()
    spans = c.spans_table
    wait_for_count(db, f"SELECT count(*) FROM {spans}", 1, on_fail=c.describe)

    now = scalar(db, "SELECT now()").astimezone(timezone.utc)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    old_day = today - timedelta(days=3)
    old_partition = f"spans_p{day_digits(old_day)}"

    def insert_span(at: datetime, name: str) -> None:
        """A copy of the SDK's span (every NOT NULL column filled as the exporter fills it) with
        another id, name and start time, inserted with plain SQL."""
        ns = (at - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1) * 1000
        override = {"span_id": "\\x" + secrets.token_hex(8), "name": name, "start_time": at.isoformat(),
                    "start_time_unix_nano": ns}
        db.execute(f"""INSERT INTO {spans} SELECT (jsonb_populate_record(NULL::{spans}, to_jsonb(s) || %s::jsonb)).*
                       FROM {spans} s WHERE name = 'first'""", (json.dumps(override),))

    # (a) a whole day partition three days old, with a row in it, created as the exporter names them.
    with db.transaction():
        db.execute(f'CREATE TABLE "{c.schema}".{old_partition} PARTITION OF {spans} '
                   f"FOR VALUES FROM (%s) TO (%s)".replace("%s", "'{}'").format(
                       old_day.isoformat(), (old_day + timedelta(days=1)).isoformat()))
        insert_span(old_day + timedelta(hours=12), "old in partition")
        assert scalar(db, f'SELECT count(*) FROM "{c.schema}".{old_partition}') == 1
    # (b) a row three and a half days old (the day before (a)'s: no partition holds it): the default one.
    stray_at = old_day - timedelta(hours=12)
    insert_span(stray_at, "old stray")
    assert scalar(db, f"SELECT count(*) FROM {c.table('spans_default')} WHERE name = 'old stray'") == 1
    # (c) a row from an hour ago: kept.
    insert_span(now - timedelta(hours=1), "recent")
    # An hourly rollup row beyond its 48h retention, in a 7-day period no partition covers (the
    # default partition), and a recent one of the same table.
    rollup_old_at = today - timedelta(days=20)
    db.execute(f"INSERT INTO {c.table('error_logs_1h')} (bucket_start, service_name, error_logs) VALUES (%s, %s, 1)",
               (rollup_old_at, "old rollup"))
    assert scalar(db, f"SELECT count(*) FROM {c.table('error_logs_1h_default')} WHERE service_name = 'old rollup'") in (0, 1)
    db.execute(f"INSERT INTO {c.table('error_logs_1h')} (bucket_start, service_name, error_logs) VALUES (%s, %s, 1)",
               (now.replace(minute=0, second=0, microsecond=0), "recent rollup"))

    def cleaned():
        return (scalar(db, "SELECT to_regclass(%s) IS NULL", (f'"{c.schema}".{old_partition}',))
                and scalar(db, f"SELECT count(*) FROM {spans} WHERE name LIKE 'old%%'") == 0
                and scalar(db, f"SELECT count(*) FROM {c.table('error_logs_1h')} WHERE service_name = 'old rollup'") == 0)

    wait_until(cleaned, 15, f"{old_partition} dropped and the expired rows deleted", c.describe)
    # The recent rows stay: the SDK's span, the row from an hour ago, and the recent rollup rows.
    assert sorted(r[0] for r in query(db, f"SELECT name FROM {spans}")) == ["first", "recent"]
    assert scalar(db, f"SELECT count(*) FROM {c.table('error_logs_1h')} WHERE service_name = 'recent rollup'") == 1
    stats = query(db, f"SELECT span_name, spans FROM {c.table('span_stats_1h')} WHERE service_name = %s", (service,))
    assert stats == [("first", 1)], stats
    # The stray was deleted, not moved into a partition of its own day.
    assert scalar(db, "SELECT to_regclass(%s) IS NULL", (f'"{c.schema}".spans_p{day_digits(stray_at)}',))
    # The partition of (c)'s row, and today's and the next two days', exist for the raw tables.
    for table in ("spans", "logs", "metrics_gauge"):
        for d in range(3):
            name = f"{table}_p{day_digits(today + timedelta(days=d))}"
            assert scalar(db, "SELECT to_regclass(%s) IS NOT NULL", (f'"{c.schema}".{name}',)), f"{name} missing"
    assert scalar(db, f"""SELECT count(*) FROM pg_inherits i JOIN pg_class ch ON ch.oid = i.inhrelid
                          WHERE i.inhparent = to_regclass(%s) AND ch.relname = %s""",
                  (f'"{c.schema}".spans', f"spans_p{day_digits(now - timedelta(hours=1))}")) == 1
    # Rollup tables are partitioned (a default partition and periods of their own) too.
    for table in ("metrics_rollup_5m", "metrics_rollup_1h", "span_stats_1h", "service_dependencies_1h", "error_logs_1h"):
        kind = scalar(db, "SELECT relkind::text FROM pg_class WHERE oid = to_regclass(%s)", (f'"{c.schema}".{table}',))
        assert kind == "p", (table, kind)
        children = [r[0] for r in query(db, """SELECT ch.relname FROM pg_inherits i JOIN pg_class ch ON ch.oid = i.inhrelid
                                               WHERE i.inhparent = to_regclass(%s)""", (f'"{c.schema}".{table}',))]
        assert f"{table}_default" in children and any(ch.startswith(f"{table}_p") for ch in children), (table, children)
    # Every rollup row in a partitioned table survives (the recent span's hour is in a kept partition).
    assert scalar(db, f"SELECT count(*) FROM {c.table('span_stats_1h_default')}") == 0
