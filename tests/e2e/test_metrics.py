"""End-to-end: OTLP metrics in (every instrument of the Python SDK, cumulative and delta, over gRPC and
HTTP; summaries and other points the SDK never sends in a raw OTLP/HTTP request), rows of the
metrics_* tables out.

Every test runs its own collector writing to a schema of its own. The SDK's OTLP exporter is wrapped
so that every request it sends is recorded; the expected rows are derived from those requests
(otlp_rows.py, following schema/postgres/0005_metrics.sql and schema/README.md) and compared column by
column. Literal checks then tie the stored values to the measurements the test recorded (sums, bucket
counts, min/max, temporality, monotonicity, int versus double).

The reader exports only when the test calls force_flush (export_interval_millis=inf), so each test
knows exactly which collections were sent: two rounds of measurements, a collection after each.
"""

from __future__ import annotations

import bisect
from collections import Counter as Tally

import psycopg
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.sdk.metrics.export import MetricExportResult

from conftest import Collector, count_or_zero, scalar, unique_name, wait_for_count
from otlp_rows import (
    METRIC_COLUMNS,
    METRIC_TABLES,
    canonical,
    compare_rows,
    expected_metric_rows,
    fetch_rows,
    metric_key,
    time_of,
)
from payloads import (
    BOUNDS,
    CUMULATIVE,
    DELTA,
    HIST,
    QUEUE,
    ROUNDS,
    ROUTE_A,
    ROUTE_B,
    exp_bucket_index,
    http_session,
    measurements,
    raw_metrics_request,
    record_sdk_metrics,
)


def wait_for_tables(db: psycopg.Connection, collector: Collector, expected: dict[str, list[dict]]) -> None:
    """Waits until every metrics table holds exactly its expected number of rows."""
    first = True
    for table in METRIC_TABLES:
        n = len(expected[table])
        if n:
            wait_for_count(db, f"SELECT count(*) FROM {collector.table(table)}", n,
                           settle=1.0 if first else 0.2, on_fail=collector.describe)
            first = False
    for table in METRIC_TABLES:
        got = count_or_zero(db, f"SELECT count(*) FROM {collector.table(table)}")
        assert got == len(expected[table]), f"{table}: {got} rows, expected {len(expected[table])}"


def compare_tables(db: psycopg.Connection, collector: Collector, expected: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Compares every metrics table with the expected rows; returns the stored rows by table."""
    stored: dict[str, list[dict]] = {}
    problems: list[str] = []
    for table in METRIC_TABLES:
        rows = fetch_rows(db, collector.table(table)) if expected[table] else []
        stored[table] = rows
        if rows and set(rows[0]) != set(METRIC_COLUMNS[table]):
            problems.append(f"{table}: columns differ from schema/postgres/0005_metrics.sql: "
                            f"{sorted(set(rows[0]) ^ set(METRIC_COLUMNS[table]))}")
        problems += compare_rows(rows, expected[table], metric_key, METRIC_COLUMNS[table], table)
    assert not problems, "stored data points differ from the exported ones:\n" + "\n".join(problems)
    return stored


# --------------------------------------------------------------------------- SDK instruments

@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_metrics_are_stored_exactly(protocol: str, temporality: str, collector: Collector, db: psycopg.Connection):
    service = unique_name(f"metrics_{protocol}_{temporality}")
    delta = temporality == "delta"
    recorder = record_sdk_metrics(protocol, collector, temporality, service)
    assert len(recorder.requests) == 2
    assert all(r == MetricExportResult.SUCCESS for r in recorder.results), (
        f"OTLP/{protocol} metric export failed: {recorder.results}\n{collector.describe()}")

    expected = expected_metric_rows(recorder.requests)
    wait_for_tables(db, collector, expected)
    stored = compare_tables(db, collector, expected)

    # ---- literal checks against what was recorded
    series: dict[tuple[str, str], list[dict]] = {}
    for table, rows in stored.items():
        for r in rows:
            series.setdefault((r["metric_name"], canonical(r["attributes"])), []).append({**r, "_table": table})
    for points in series.values():
        points.sort(key=lambda r: r["time_unix_nano"])

    def points_of(name: str, attrs: dict, table: str, n: int) -> list[dict]:
        got = series.get((name, canonical(attrs)), [])
        assert len(got) == n, f"{name} {attrs}: {len(got)} points, expected {n}: {got}"
        assert all(p["_table"] == table for p in got), f"{name} in {[p['_table'] for p in got]}, expected {table}"
        return got

    scope = ("e2e.metrics", "1.2.3", {"scope.attr": "m", "scope.n": 1}, "https://example.com/metrics/1.0")
    for points in series.values():
        for p in points:
            assert p["service_name"] == service
            assert p["resource_attributes"] == {"service.name": service, "service.instance.id": "i-1", "res.int": 3}
            assert p["resource_schema_url"] == "https://opentelemetry.io/schemas/1.26.0"
            assert (p["scope_name"], p["scope_version"], p["scope_attributes"], p["scope_schema_url"]) == scope
            assert p["time"] == time_of(p["time_unix_nano"]) and p["flags"] == 0 and p["metric_metadata"] == {}
    assert len(series) == 10, sorted(series)

    def rounds_for(k: int) -> list[int]:
        return [k] if delta else list(range(k + 1))

    temporality_no = DELTA if delta else CUMULATIVE

    def check_sum(name: str, attrs: dict, values_per_round: list, monotonic: bool, unit: str, description: str,
                  kind: type, temporality_expected: int = temporality_no) -> list[dict]:
        pts = points_of(name, attrs, "metrics_sum", len(values_per_round))
        for p, want in zip(pts, values_per_round):
            assert (p["metric_unit"], p["metric_description"]) == (unit, description), p
            assert (p["aggregation_temporality"], p["is_monotonic"]) == (temporality_expected, monotonic), (name, p)
            value = p["value_int"] if kind is int else p["value_double"]
            other = p["value_double"] if kind is int else p["value_int"]
            assert other is None, f"{name}: both value_int and value_double set: {p}"
            assert type(value) is kind and value == want, f"{name} {attrs}: expected {want!r}, got {value!r}"
            assert 0 < p["start_time_unix_nano"] < p["time_unix_nano"], p
        if not delta:
            assert len({p["start_time_unix_nano"] for p in pts}) == 1, f"{name}: cumulative start times differ"
        return pts

    # Counter (int): per attribute set; ROUTE_B has no measurement in round 1.
    def counter_values(attrs: dict, k: int) -> int:
        return sum(v for v, a in measurements("requests", rounds_for(k)) if a == attrs)

    req_a = check_sum("e2e.requests", ROUTE_A, [counter_values(ROUTE_A, k) for k in range(2)], True,
                      "{request}", "Requests served", int)
    check_sum("e2e.requests", ROUTE_B, [counter_values(ROUTE_B, k) for k in ([0] if delta else [0, 1])], True,
              "{request}", "Requests served", int)
    assert [p["value_int"] for p in req_a] == ([6, 3] if delta else [6, 9])
    check_sum("e2e.bytes", {}, [sum(v for v, _ in measurements("bytes", rounds_for(k))) for k in range(2)], True,
              "By", "Bytes sent", float)
    check_sum("e2e.queue.depth", QUEUE, [sum(v for v, _ in measurements("queue", rounds_for(k))) for k in range(2)],
              False, "{item}", "Items queued", int)
    cpu = [ROUNDS[k]["cpu.time"] - (ROUNDS[k - 1]["cpu.time"] if delta and k else 0) for k in range(2)]
    check_sum("e2e.cpu.time", {"cpu": 0}, cpu, True, "s", "CPU time", float)
    pending = [ROUNDS[k]["pending"] - (ROUNDS[k - 1]["pending"] if delta and k else 0) for k in range(2)]
    check_sum("e2e.pending", {}, pending, False, "{job}", "Jobs pending", int)

    # Gauges: the value observed in each collection, no start time.
    for name, attrs, key, kind, desc in (("e2e.temperature.int", {"room": "a"}, "temperature.int", int, "Whole degrees"),
                                         ("e2e.temperature", {"room": "b"}, "temperature", float, "Degrees")):
        pts = points_of(name, attrs, "metrics_gauge", 2)
        for k, p in enumerate(pts):
            value = p["value_int"] if kind is int else p["value_double"]
            other = p["value_double"] if kind is int else p["value_int"]
            assert type(value) is kind and value == ROUNDS[k][key] and other is None, (name, p)
            assert (p["metric_unit"], p["metric_description"], p["start_time_unix_nano"]) == ("Cel", desc, 0), p

    # Histogram with explicit buckets.
    pts = points_of("e2e.latency", HIST, "metrics_histogram", 2)
    for k, p in enumerate(pts):
        values = measurements("latency", rounds_for(k))
        buckets = [0] * (len(BOUNDS) + 1)
        for v in values:
            buckets[bisect.bisect_left(BOUNDS, v)] += 1
        assert p["explicit_bounds"] == BOUNDS and p["bucket_counts"] == buckets, (k, p)
        assert (p["count"], p["sum"], p["min"], p["max"]) == (len(values), sum(values), min(values), max(values)), (k, p)
        assert type(p["sum"]) is float and type(p["min"]) is float
        assert (p["aggregation_temporality"], p["metric_unit"], p["metric_description"]) == (temporality_no, "ms", "Request latency")
        assert 0 < p["start_time_unix_nano"] < p["time_unix_nano"]

    # Histogram turned exponential by the View.
    pts = points_of("e2e.payload.size", {}, "metrics_exponential_histogram", 2)
    for k, p in enumerate(pts):
        values = measurements("size", rounds_for(k))
        assert (p["count"], p["sum"], p["min"], p["max"]) == (len(values), sum(values), min(values), max(values)), (k, p)
        assert p["zero_count"] == sum(1 for v in values if v == 0) and p["zero_threshold"] == 0.0
        assert -10 <= p["scale"] <= 20, p["scale"]
        positive = {p["positive_offset"] + i: c for i, c in enumerate(p["positive_bucket_counts"]) if c}
        want = Tally(exp_bucket_index(v, p["scale"]) for v in values if v > 0)
        assert positive == dict(want), f"scale {p['scale']}: buckets {positive}, expected {dict(want)}"
        assert sum(p["negative_bucket_counts"]) == 0
        assert (p["aggregation_temporality"], p["metric_unit"]) == (temporality_no, "By")

    # Exemplars: only from round 0's measurements (inside the sampled span), with its ids.
    trace_hex = f"{recorder.span.trace_id:032x}"
    span_hex = f"{recorder.span.span_id:016x}"
    with_exemplars = 0
    recorded = {"e2e.requests": [v for v, _ in ROUNDS[0]["requests"]], "e2e.bytes": [v for v, _ in ROUNDS[0]["bytes"]],
                "e2e.queue.depth": [v for v, _ in ROUNDS[0]["queue"]], "e2e.latency": ROUNDS[0]["latency"],
                "e2e.payload.size": ROUNDS[0]["size"]}
    for (name, _), points in series.items():
        for p in points:
            for e in p["exemplars"]:
                assert (e["trace_id"], e["span_id"]) == (trace_hex, span_hex), (name, e)
                assert e["value"] in recorded.get(name, []), (name, e)
                assert e["time_unix_nano"] <= p["time_unix_nano"]
            with_exemplars += bool(p["exemplars"])
    first_round_sync = [points_of("e2e.requests", ROUTE_A, "metrics_sum", 2)[0], points_of("e2e.latency", HIST, "metrics_histogram", 2)[0]]
    sent_exemplars = sum(len(pt.exemplars) for r in recorder.requests for rm in r.resource_metrics
                         for sm in rm.scope_metrics for m in sm.metrics
                         for pt in getattr(m, m.WhichOneof("data")).data_points)
    # The pinned SDK's default exemplar filter (trace_based) samples measurements made in a sampled span.
    assert sent_exemplars > 0, "the SDK sent no exemplars: was its default exemplar filter changed?"
    assert all(p["exemplars"] for p in first_round_sync), "exemplars were sent, but not stored for these points"
    assert with_exemplars > 0
    # The int/double distinction holds in exemplar values too.
    latency_ex = {e["value"]: e for e in first_round_sync[1]["exemplars"]}
    for v, e in latency_ex.items():
        assert type(v) is type(next(x for x in ROUNDS[0]["latency"] if x == v)), e

    # What a user runs.
    t = collector.table("metrics_sum")
    assert scalar(db, f"SELECT count(*) FROM {t} WHERE metric_name = 'e2e.requests' AND attributes @> %s::jsonb",
                  ('{"http.route": "/a"}',)) == 2
    assert scalar(db, f"SELECT attributes->>'ratio' FROM {t} WHERE metric_name = 'e2e.requests' AND attributes ? 'ratio' "
                      "ORDER BY time DESC LIMIT 1") == "0.5"


# --------------------------------------------------------------------------- raw OTLP/HTTP


def test_summary_and_bare_points_from_a_raw_request(collector: Collector, db: psycopg.Connection):
    """Points the Python SDK never sends (payloads.raw_metrics_request), posted to /v1/metrics."""
    service = unique_name("raw_metrics")
    raw = raw_metrics_request(service)
    req, base, trace_id, span_id = raw.request, raw.base, raw.trace_id, raw.span_id
    resp = http_session().post(collector.metrics_url, data=req.SerializeToString(),
                        headers={"Content-Type": "application/x-protobuf"}, timeout=15)
    assert resp.status_code == 200, f"{resp.status_code} {resp.content[:500]!r}\n{collector.describe()}"
    partial = ExportMetricsServiceResponse.FromString(resp.content).partial_success
    assert partial.rejected_data_points == 0, partial

    expected = expected_metric_rows([req])
    assert [len(expected[t]) for t in METRIC_TABLES] == [1, 1, 1, 0, 3]
    wait_for_tables(db, collector, expected)
    stored = compare_tables(db, collector, expected)

    # Literal checks, independent of otlp_rows.py.
    s = {(r["attributes"]["method"], r["time_unix_nano"]): r for r in stored["metrics_summary"]}
    get1 = s[("GET", base + 1_000_000_001)]
    assert get1["quantiles"] == [0.0, 0.5, 0.9, 0.99, 1.0]
    assert get1["quantile_values"] == [1.5, 10.25, 30.0, 40.0, 55.5]
    assert (get1["count"], get1["sum"], get1["start_time_unix_nano"], get1["flags"]) == (10, 123.5, base, 0)
    assert get1["time"] == time_of(base + 1_000_000_001) and (base + 1_000_000_001) % 1000 == 790
    assert (get1["metric_name"], get1["metric_description"], get1["metric_unit"]) == ("e2e.rpc.duration", "RPC duration", "s")
    assert get1["metric_metadata"] == {"origin": "prometheus", "$weird": 1}  # top-level keys: not escaped
    assert get1["exemplars"] == [] and get1["service_name"] == service
    assert (get1["scope_name"], get1["scope_version"], get1["scope_attributes"]) == ("e2e.raw", "0.1", {"s": 1})
    get2 = s[("GET", base + 2_000_000_002)]
    assert (get2["count"], get2["sum"], get2["quantiles"], get2["quantile_values"]) == (25, 400.75, [0.5], [12.0])
    put = s[("PUT", base + 3)]
    assert (put["count"], put["sum"], put["quantiles"], put["quantile_values"]) == (0, 0.0, [], [])
    assert (put["flags"], put["start_time_unix_nano"], put["attributes"]) == (1, 0, {"method": "PUT", "retry": False})
    q = scalar(db, f"SELECT quantile_values[array_position(quantiles, 0.99::float8)] FROM {collector.table('metrics_summary')} "
                   "WHERE time_unix_nano = %s", (base + 1_000_000_001,))
    assert q == 40.0

    h = stored["metrics_histogram"][0]
    assert (h["count"], h["sum"], h["min"], h["max"]) == (3, None, None, None)
    assert (h["bucket_counts"], h["explicit_bounds"], h["aggregation_temporality"]) == ([1, 2], [10.0], 2)
    assert h["exemplars"] == [{"time_unix_nano": base + 4, "value": 7, "trace_id": trace_id.hex(), "span_id": span_id.hex(),
                               "filtered_attributes": {"user": "u1", "$x": 1.0}}]
    assert type(h["exemplars"][0]["value"]) is int and type(h["exemplars"][0]["filtered_attributes"]["$x"]) is float
    assert scalar(db, f"SELECT sum IS NULL AND min IS NULL AND max IS NULL FROM {collector.table('metrics_histogram')}") is True

    u = stored["metrics_sum"][0]
    assert (u["aggregation_temporality"], u["is_monotonic"], u["value_int"], u["value_double"]) == (0, False, -(2**63), None)
    assert (u["metric_description"], u["metric_unit"], u["start_time_unix_nano"]) == ("", "", 0)
    g = stored["metrics_gauge"][0]
    assert (g["value_double"], g["value_int"], g["start_time_unix_nano"]) == (1e300, None, base)
    assert g["attributes"] == {"k": {"$bytes": "/w=="}}
