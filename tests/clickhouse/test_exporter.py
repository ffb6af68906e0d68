"""End to end through our collector into the ClickHouse test engine (chdb_front.py).

The payloads are the PostgreSQL tests' own (tests/e2e/payloads.py: the Python SDK's real OTLP
exporters over gRPC and HTTP, and raw OTLP requests for what the SDK never sends), recorded as they
are sent; ch_rows.py derives the rows ClickHouse must hold from those requests, following the
contrib clickhouseexporter's value conventions, and every stored column is compared with them.
The rollup views are checked against aggregates of the raw rows. Then: migrations applied twice
and from an older version, the ON CLUSTER DDL as the collector sends it, a database that is down
when the data arrives, and telemetrygen's counts.

Every collector writes to a database of its own on the module's front, so counts are exact.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import Counter as Tally
from http.server import ThreadingHTTPServer

import pytest
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExportResult

import chdb_front
from ch_rows import (
    METRIC_TABLES,
    expected_log_rows,
    expected_metric_rows,
    expected_trace_rows,
    fetch_rows,
    grouped,
    metric_key,
    non_finite,
    span_key,
)
from conftest import Collector, Front, start_front, stop_process, unique_name
from harness import free_port, http_post, telemetrygen, wait_until
from payloads import (
    BOUNDS,
    CUMULATIVE,
    DELTA,
    SDK_LOG_SEQS,
    SEQ,
    downstream_spans,
    emit_sdk_logs,
    export_spans,
    make_sdk_spans,
    measurements,
    raw_logs_request,
    raw_metrics_request,
    record_sdk_metrics,
)
from row_diff import compare_rows
from test_schema import CLUSTER, SCHEMA, SINGLE_NODE, first_line, migrate, migrations, render, statements


def table(c: Collector, name: str) -> str:
    """A table of the collector's database, quoted."""
    return f"`{c.schema}`.`{name}`"


def check_rows(front: Front, c: Collector, name: str, expected: list[dict], key, label: str) -> list[dict]:
    """Every stored column of `name` equals the expected rows (matched by `key`); returns the rows."""
    rows = fetch_rows(front, c.schema, name)
    assert rows and set(rows[0]) == set(expected[0]), (
        f"{name}: stored columns differ from the expected ones: {sorted(set(rows[0]) ^ set(expected[0]))}")
    columns = list(expected[0])
    problems = compare_rows(rows, expected, key, columns, label)
    assert not problems, f"stored {label} rows differ from the requests:\n" + "\n".join(problems[:60])
    return rows


# --------------------------------------------------------------------------- traces

# The root span's attributes (payloads.SPAN_ATTRS) as contrib stores them, by hand: pdata's
# AsString (non-finite doubles as the pdata version chosen in ch_rows.py writes them).
SPAN_ATTRS_STORED = {
    "str": "héllo wörld ✓",
    "str.empty": "",
    "bool.true": "true",
    "bool.false": "false",
    "int": "42",
    "int.negative": "-7",
    "int.max": "9223372036854775807",
    "int.min": "-9223372036854775808",
    "float": "3.25",
    "float.integral": "1",
    "float.tiny": "2.5e-7",
    "float.negative": "-0.1",
    "float.nan": "NaN",
    "float.inf": "Infinity",
    "float.neginf": "-Infinity",
    "strs": '["a","b",""]',
    "ints": "[1,-2,3]",
    "floats": "[0.5,2]",
    "bools": "[true,false]",
    "empty.list": "[]",
    "bytes": "AAH+/w==",
    "none": "",
    "map": '{"$ref":"x","k":"v","n":1,"nested":{"deep":[1,"two"]}}',
    "nested.list": '[[1,2],["x"]]',
    "mixed.list": '["a",1,2.5,true,null]',
}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_spans_every_column_and_the_trace_views(protocol: str, start_collector, front: Front):
    c = start_collector()
    service = unique_name(f"sdk_{protocol}")
    spans, facts = make_sdk_spans(service)
    downstream = downstream_spans(facts, service)
    requests = export_spans(protocol, c, spans, downstream)
    expected = expected_trace_rows(requests)
    assert len(expected) == len(spans) + len(downstream) == 9

    front.wait_for_count(f"SELECT count() FROM {table(c, 'otel_traces')}", len(expected), on_fail=c.describe)
    rows = check_rows(front, c, "otel_traces", expected, span_key, "span")

    # Literal checks, independent of ch_rows.py.
    base = facts["base"]
    by_id = {r["SpanId"]: r for r in rows}
    root = by_id[f"{facts['root'].span_id:016x}"]
    assert (root["Timestamp"], root["Duration"], root["SpanKind"], root["ParentSpanId"]) == (base, 2_500_000_001, "Server", "")
    assert (root["StatusCode"], root["StatusMessage"], root["ServiceName"]) == ("Error", "payment declined", service)
    assert root["TraceId"] == f"{facts['root'].trace_id:032x}"
    assert dict(root["SpanAttributes"]) == SPAN_ATTRS_STORED and len(root["SpanAttributes"]) == len(SPAN_ATTRS_STORED)
    assert dict(root["ResourceAttributes"]) == {
        "service.name": service, "service.version": "1.2.3-e2e", "res.bool": "true", "res.int": "12345",
        "res.float": "0.75", "res.strs": '["x","y"]', "res.ints": "[10,20,30]"}
    assert (root["ScopeName"], root["ScopeVersion"]) == ("e2e.scope.a", "4.5.6")
    assert root["Events.Name"] == ["cache.miss", "exception", "bare"]
    assert root["Events.Timestamp"] == [base + 100_001, base + 200_002, base + 300_003]
    assert dict(root["Events.Attributes"][0]) == {"key": "user:1", "hits": "0", "ratio": "0.5", "ok": "false",
                                                  "tags": '["a","b"]'}
    assert root["Links.TraceId"] == [f"{facts['linked'].trace_id:032x}"]
    assert root["Links.SpanId"] == [f"{facts['linked'].span_id:016x}"] and root["Links.TraceState"] == [""]
    assert dict(root["Links.Attributes"][0]) == {"link.str": "l", "link.int": "5", "link.float": "1.5",
                                                 "link.bools": "[true,false]"}
    child = by_id[f"{facts['child'].span_id:016x}"]
    assert (child["SpanKind"], child["StatusCode"], child["Duration"]) == ("Client", "Ok", 0)
    assert child["ParentSpanId"] == root["SpanId"] and child["TraceId"] == root["TraceId"]
    consumer = by_id[f"{facts['consumer'].span_id:016x}"]
    assert (consumer["SpanKind"], consumer["Duration"], consumer["TraceState"]) == ("Consumer", 1, "vendor=abc,other=1")
    internal = by_id[f"{facts['internal'].span_id:016x}"]
    assert (internal["SpanKind"], internal["ServiceName"], internal["SpanAttributes"]) == ("Internal", "", [])
    # otelstore's deliberate difference: a span ending before it starts lasts 0 ns (not 2^64 - 1500)
    assert by_id[f"{facts['skewed'].span_id:016x}"]["Duration"] == 0
    limited = by_id[f"{facts['limited'].span_id:016x}"]
    assert (len(limited["SpanAttributes"]), len(limited["Events.Name"]), len(limited["Links.SpanId"])) == (3, 2, 1)
    assert by_id[f"{facts['producer'].span_id:016x}"]["ScopeVersion"] == ""

    # What a user would run.
    t = table(c, "otel_traces")
    assert front.value(f"SELECT count() FROM {t} WHERE SpanAttributes['int'] = '42'") == 1
    assert front.value(f"SELECT count() FROM {t} WHERE ServiceName = '{service}'") == 5
    assert front.value(f"SELECT count() FROM {t} WHERE TraceId = '{facts['root'].trace_id:032x}'") == 5
    assert front.value(f"SELECT countIf(has(mapKeys(SpanAttributes), 'db.system')) FROM {t}") == 1

    check_trace_views(front, c, rows)


def check_trace_views(front: Front, c: Collector, rows: list[dict]) -> None:
    """The trace-id lookup, the span stats and the service dependencies agree with aggregates of the
    raw rows (computed here from the rows read back)."""
    hour = lambda ns: ns // 3_600_000_000_000 * 3600  # noqa: E731 (seconds at the start of the hour)

    # First and last span start of each trace, in whole seconds.
    want = sorted([tid, min(r["Timestamp"] for r in rs) // 10**9, max(r["Timestamp"] for r in rs) // 10**9]
                  for tid, rs in grouped(rows, lambda r: r["TraceId"]).items())
    got = front.rows(f"SELECT TraceId, toUnixTimestamp(min(Start)), toUnixTimestamp(max(End)) "
                     f"FROM {table(c, 'otel_traces_trace_id_ts')} GROUP BY TraceId ORDER BY TraceId")
    assert got == want

    # Spans, errors and durations per service, operation and kind, per hour.
    want = sorted([hour(rs[0]["Timestamp"]), *k, len(rs), sum(r["StatusCode"] == "Error" for r in rs),
                   min(r["Duration"] for r in rs), max(r["Duration"] for r in rs), sum(r["Duration"] for r in rs)]
                  for k, rs in grouped(rows, lambda r: (r["ServiceName"], r["SpanName"], r["SpanKind"])).items())
    got = front.rows(f"SELECT toUnixTimestamp(Hour), ServiceName, SpanName, SpanKind, countMerge(Spans), "
                     f"sumMerge(Errors), minMerge(DurationMin), maxMerge(DurationMax), sumMerge(DurationSum) "
                     f"FROM {table(c, 'otel_span_stats_1h')} GROUP BY Hour, ServiceName, SpanName, SpanKind "
                     "ORDER BY Hour, ServiceName, SpanName, SpanKind")
    assert got == want

    # Calls from a Client or Producer span of one service to a Server or Consumer span of another.
    by_id = {(r["TraceId"], r["SpanId"]): r for r in rows}
    edges: dict[tuple, list] = {}
    for child in rows:
        parent = by_id.get((child["TraceId"], child["ParentSpanId"]))
        if (parent and child["SpanKind"] in ("Server", "Consumer") and parent["SpanKind"] in ("Client", "Producer")
                and parent["ServiceName"] != child["ServiceName"]):
            edges.setdefault((hour(child["Timestamp"]), parent["ServiceName"], child["ServiceName"]), []).append(child)
    want = sorted([*k, len(cs), sum(r["StatusCode"] == "Error" for r in cs)] for k, cs in edges.items())
    got = front.rows(f"SELECT toUnixTimestamp(Hour), ParentService, ChildService, uniqCombined64Merge(Calls), "
                     f"uniqCombined64Merge(Errors) FROM {table(c, 'otel_service_dependencies_1h')} "
                     "GROUP BY Hour, ParentService, ChildService ORDER BY Hour, ParentService, ChildService")
    assert got == want
    service = next(r["ServiceName"] for r in rows if r["SpanName"] == "GET /checkout")
    assert sorted(e[1:] for e in got) == [[service, f"{service}_inventory", 1, 0], [service, f"{service}_worker", 1, 1]]


# --------------------------------------------------------------------------- logs

# payloads.EXTRA, the logging handler's extra attributes of every kind, as contrib stores them.
EXTRA_STORED = {
    "user.id": "42",
    "user.name": "alice",
    "ratio": "0.25",
    "float.integral": "1",
    "ok": "true",
    "failed": "false",
    "negative": "-7",
    "big": "9223372036854775807",
    "tags": '["a","b",""]',
    "ints": "[1,2,3]",
    "floats": "[0.5,2]",
    "blob": "AAH+/w==",
    "map": '{"$ref":"x","k":"v","n":1,"nested":{"deep":[1,"two"]}}',
    "nan": "NaN",
    "none": "",
}


def log_key(row: dict) -> tuple:
    """A log record's identity in these tests: its resource's service, its scope and its SEQ."""
    return row["ServiceName"], row["ScopeName"], dict(row["LogAttributes"])[SEQ]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_and_raw_logs_every_column_and_the_error_view(protocol: str, start_collector, front: Front):
    c = start_collector()
    service = unique_name(f"logs_{protocol}")
    sent = emit_sdk_logs(protocol, c, service)
    assert sent.results and all(r == LogRecordExportResult.SUCCESS for r in sent.results), (
        f"OTLP/{protocol} log export failed: {sent.results}\n{c.describe()}")
    raw, now = raw_logs_request(f"{service}_raw")
    status, body = http_post(c.logs_url, raw.SerializeToString(), "application/x-protobuf")
    assert status == 200, f"{status} {body[:500]!r}\n{c.describe()}"
    expected = expected_log_rows([*sent.requests, raw])
    assert len(expected) == len(SDK_LOG_SEQS) + 5

    front.wait_for_count(f"SELECT count() FROM {table(c, 'otel_logs')}", len(expected), on_fail=c.describe)
    rows = check_rows(front, c, "otel_logs", expected, log_key, "log")

    # Literal checks, independent of ch_rows.py.
    sdk = {int(dict(r["LogAttributes"])[SEQ]): r for r in rows if r["ServiceName"] == service}
    levels = {0: (5, "DEBUG"), 1: (9, "INFO"), 2: (13, "WARN"), 3: (17, "ERROR"), 4: (21, "FATAL"),
              5: (12, "Level 25"), 6: (9, "INFO"), 7: (17, "ERROR"), 8: (9, "INFO")}
    for seq, (number, text) in levels.items():
        r = sdk[seq]
        assert (r["SeverityNumber"], r["SeverityText"], r["ScopeName"], r["ScopeVersion"]) == (
            number, text, sent.logger_name, ""), (seq, r)
        assert sent.t_before - 10**6 <= r["Timestamp"] <= sent.t_after + 10**6 and r["TimestampTime"] == r["Timestamp"] // 10**9
        assert dict(r["ResourceAttributes"]) == {"service.name": service, "service.version": "9.9.9", "res.int": "5",
                                                 "res.list": '["p","q"]'}
        assert r["ResourceSchemaUrl"] == "https://opentelemetry.io/schemas/1.26.0"
        assert dict(r["LogAttributes"])["code.function.name"] == sent.code_function
        if seq != 6:
            assert (r["TraceId"], r["SpanId"], r["TraceFlags"]) == ("", "", 0), (seq, r)
    assert sdk[0]["Body"] == f"debug {sent.word} from e2e"
    assert {k: v for k, v in dict(sdk[1]["LogAttributes"]).items() if not k.startswith("code.")} == {
        SEQ: "1", **EXTRA_STORED}
    assert (sdk[6]["TraceId"], sdk[6]["SpanId"], sdk[6]["TraceFlags"]) == (
        f"{sent.span.trace_id:032x}", f"{sent.span.span_id:016x}", int(sent.span.trace_flags))
    assert sdk[6]["TraceFlags"] & 1 == 1  # sampled
    assert dict(sdk[7]["LogAttributes"])["exception.message"] == "bad input 42"
    assert sdk[8]["Body"] == '{"event":"login","n":3,"nested":{"a":[1,2.5]},"ratio":0.5,"user":"bob"}'
    assert (sdk[20]["Timestamp"], sdk[20]["Body"], sdk[20]["EventName"]) == (sent.base, "AQJyYXc=", "e2e.login")
    assert (sdk[20]["SeverityNumber"], sdk[20]["SeverityText"]) == (10, "info2")
    assert dict(sdk[20]["LogAttributes"])["inf"] == "Infinity"
    assert dict(sdk[20]["ScopeAttributes"]) == {"scope.k": "v", "scope.n": "2"}
    assert (sdk[20]["ScopeName"], sdk[20]["ScopeVersion"], sdk[20]["ScopeSchemaUrl"]) == (
        "e2e.direct", "7.8.9", "https://example.com/logs/1.0")
    assert (sdk[21]["Timestamp"], sdk[21]["Body"], sdk[21]["SeverityNumber"]) == (
        sent.base + 1_000_000_001, '["list",1,2.5,false,{"k":"v"}]', 24)
    assert (sdk[22]["Body"], sdk[22]["TraceId"], sdk[22]["SpanId"], sdk[22]["TraceFlags"]) == (
        "12345", f"{sent.remote.trace_id:032x}", f"{sent.remote.span_id:016x}", 0)
    assert (sdk[23]["Body"], sdk[24]["Body"]) == ("2", f"the {sent.word} again")
    raw_rows = {int(dict(r["LogAttributes"])[SEQ]): r for r in rows if r["ServiceName"] != service}
    assert raw_rows[0]["Body"] == "" and raw_rows[0]["ServiceName"] == f"{service}_raw"
    assert raw_rows[1]["TraceFlags"] == 0x01  # the low byte of 0x80000101
    assert (raw_rows[2]["Timestamp"], raw_rows[2]["TimestampTime"]) == (now + 5, (now + 5) // 10**9)
    assert raw_rows[3]["Body"] == '{"$type":"x","n":-0.5}' and raw_rows[3]["SpanId"] == ""
    assert sorted(v for k, v in raw_rows[3]["LogAttributes"] if k == "dup") == ["1", "2"]  # both pairs kept
    assert (raw_rows[4]["ServiceName"], raw_rows[4]["SeverityNumber"], raw_rows[4]["ScopeName"]) == ("", 1, "")

    # What a user would run: the body's token index, and errors per service.
    t = table(c, "otel_logs")
    assert [r[0] for r in front.rows(f"SELECT LogAttributes['{SEQ}'] FROM {t} WHERE hasToken(lower(Body), "
                                     f"'{sent.word}') ORDER BY toUInt32(LogAttributes['{SEQ}'])")] == ["0", "3", "24"]
    want = sorted([hour, svc, len(rs)] for (hour, svc), rs in grouped(
        (r for r in rows if r["SeverityNumber"] >= 17),
        lambda r: (r["Timestamp"] // 3_600_000_000_000 * 3600, r["ServiceName"])).items())
    got = front.rows(f"SELECT toUnixTimestamp(Hour), ServiceName, countMerge(Records) FROM {table(c, 'otel_error_logs_1h')} "
                     "GROUP BY Hour, ServiceName ORDER BY Hour, ServiceName")
    assert got == want and sum(r[2] for r in got) == 4  # ERROR, FATAL, exception, FATAL4


# --------------------------------------------------------------------------- metrics

ROLLUP_TYPES = {  # the rollups' MetricType -> the raw table, the column of its value, what else makes a series
    "gauge": ("otel_metrics_gauge", "Value", ()),
    "sum": ("otel_metrics_sum", "Value", ("IsMonotonic",)),
    "histogram": ("otel_metrics_histogram", "Sum", ("ExplicitBounds",)),
    "exponential_histogram": ("otel_metrics_exponential_histogram", "Sum", ("Scale",)),
}


@pytest.mark.parametrize("protocol,temporality", [("grpc", "cumulative"), ("http", "delta")])
def test_sdk_and_raw_metrics_every_column_and_the_rollups(protocol: str, temporality: str, start_collector,
                                                          front: Front):
    c = start_collector()
    service = unique_name(f"metrics_{protocol}_{temporality}")
    sent = record_sdk_metrics(protocol, c, temporality, service)
    assert len(sent.requests) == 2 and all(r == MetricExportResult.SUCCESS for r in sent.results), (
        f"OTLP/{protocol} metric export failed: {sent.results}\n{c.describe()}")
    raw = raw_metrics_request(f"{service}_raw")
    status, body = http_post(c.metrics_url, raw.request.SerializeToString(), "application/x-protobuf")
    assert status == 200, f"{status} {body[:500]!r}\n{c.describe()}"
    expected = expected_metric_rows([*sent.requests, raw.request])
    assert all(expected[t] for t in METRIC_TABLES), {t: len(rows) for t, rows in expected.items()}

    for t in METRIC_TABLES:
        front.wait_for_count(f"SELECT count() FROM {table(c, t)}", len(expected[t]), settle=0.1, on_fail=c.describe)
    stored = {t: check_rows(front, c, t, expected[t], metric_key, t) for t in METRIC_TABLES}

    # Literal checks, independent of ch_rows.py.
    delta = temporality == "delta"
    points = grouped((r for rows in stored.values() for r in rows if r["ServiceName"] == service),
                     lambda r: (r["MetricName"], json.dumps(sorted(r["Attributes"]))))
    for rows in points.values():
        rows.sort(key=lambda r: r["TimeUnix"])
    by_name = lambda name, attrs: points[(name, json.dumps(sorted(attrs.items())))]  # noqa: E731
    first = by_name("e2e.requests", {"http.route": "/a", "ok": "true"})
    assert [r["Value"] for r in first] == ([6.0, 3.0] if delta else [6.0, 9.0])
    assert [(r["AggregationTemporality"], r["IsMonotonic"], r["MetricUnit"], r["MetricDescription"]) for r in first] == [
        (DELTA if delta else CUMULATIVE, True, "{request}", "Requests served")] * 2
    assert first[0]["ResourceAttributes"] == [["res.int", "3"], ["service.instance.id", "i-1"], ["service.name", service]]
    assert (first[0]["ScopeName"], first[0]["ScopeVersion"], first[0]["ScopeSchemaUrl"], first[0]["ScopeAttributes"]) == (
        "e2e.metrics", "1.2.3", "https://example.com/metrics/1.0", [["scope.attr", "m"], ["scope.n", "1"]])
    assert [r["IsMonotonic"] for r in by_name("e2e.queue.depth", {"queue": "q1"})] == [False, False]
    assert [r["Value"] for r in by_name("e2e.temperature.int", {"room": "a"})] == [21.0, 23.0]
    assert [r["StartTimeUnix"] for r in by_name("e2e.temperature", {"room": "b"})] == [0, 0]
    latency = by_name("e2e.latency", {"endpoint": "checkout", "tags": '["x","y"]'})
    values = measurements("latency", [0])
    assert (latency[0]["Count"], latency[0]["Sum"], latency[0]["Min"], latency[0]["Max"]) == (
        len(values), sum(values), min(values), max(values))
    assert (latency[0]["ExplicitBounds"], latency[0]["BucketCounts"]) == (BOUNDS, [1, 2, 1, 0, 1, 0, 1])
    assert set(latency[0]["Exemplars.TraceId"]) == {f"{sent.span.trace_id:032x}"}  # measured in that span
    size = by_name("e2e.payload.size", {})
    assert (size[0]["Count"], size[0]["ZeroCount"], size[0]["Sum"]) == (5, 1, sum(measurements("size", [0])))
    raw_points = {r["MetricName"]: r for rows in stored.values() for r in rows if r["ServiceName"] == f"{service}_raw"}
    summary = front.rows(f"SELECT Attributes['method'], Count, Sum, `ValueAtQuantiles.Quantile`, "
                         f"`ValueAtQuantiles.Value`, Flags FROM {table(c, 'otel_metrics_summary')} ORDER BY TimeUnix")
    assert summary == [["PUT", 0, 0, [], [], 1],
                       ["GET", 10, 123.5, [q for q, _ in raw.quantiles], [v for _, v in raw.quantiles], 0],
                       ["GET", 25, 400.75, [0.5], [12], 0]]
    bare = raw_points["e2e.bare.histogram"]
    assert (bare["Sum"], bare["Min"], bare["Max"], bare["Exemplars.Value"]) == (0.0, 0.0, 0.0, [7.0])
    assert (bare["Exemplars.TraceId"], bare["Exemplars.SpanId"]) == ([raw.trace_id.hex()], [raw.span_id.hex()])
    assert bare["Exemplars.FilteredAttributes"] == [[["$x", "1"], ["user", "u1"]]]
    assert raw_points["e2e.unspecified.sum"]["Value"] == -(2.0**63)
    assert raw_points["e2e.unspecified.sum"]["AggregationTemporality"] == 0
    assert (raw_points["e2e.gauge.started"]["Value"], raw_points["e2e.gauge.started"]["Attributes"]) == (1e300, [["k", "/w=="]])

    for width, rollup in ((300, "otel_metrics_rollup_5m"), (3600, "otel_metrics_rollup_1h")):
        check_rollup(front, c, rollup, width, stored)


def check_rollup(front: Front, c: Collector, rollup: str, width: int, stored: dict[str, list[dict]]) -> None:
    """A metrics rollup (one row per series per `width` seconds) agrees with aggregates of the raw
    rows, computed here: points, sum, min, max, last value, counts and bucket counts."""
    def series(row: dict, metric_type: str, extra: tuple) -> tuple:
        return (row["MetricName"], metric_type, row.get("AggregationTemporality", 0), row["ServiceName"],
                json.dumps(sorted(row["ResourceAttributes"])), row["ScopeName"], json.dumps(sorted(row["Attributes"])),
                row["MetricUnit"], *(json.dumps(row[e]) for e in extra))

    want = {}
    for metric_type, (raw_table, value, extra) in ROLLUP_TYPES.items():
        by_series = grouped(stored[raw_table], lambda r: (r["TimeUnix"] // (width * 10**9) * width,
                                                          *series(r, metric_type, extra)))
        for key, rows in by_series.items():
            positive, negative = Tally(), Tally()
            for r in rows:
                for side, tally in (("Positive", positive), ("Negative", negative)):
                    for i, n in enumerate(r.get(f"{side}BucketCounts", [])):
                        tally[r[f"{side}Offset"] + i] += n
            want[key] = {
                "points": len(rows),
                "sum": float(sum(r[value] for r in rows)),
                "min": float(min(r[value if metric_type in ("gauge", "sum") else "Min"] for r in rows)),
                "max": float(max(r[value if metric_type in ("gauge", "sum") else "Max"] for r in rows)),
                "last": float(max(rows, key=lambda r: r["TimeUnix"])[value]),
                "count": sum(r.get("Count", 0) for r in rows),
                "zero_count": sum(r.get("ZeroCount", 0) for r in rows),
                "buckets": [sum(b) for b in zip(*(r["BucketCounts"] for r in rows))] if "BucketCounts" in rows[0] else [],
                "positive": sorted((k, n) for k, n in positive.items() if n),  # sumMap leaves out zero sums
                "negative": sorted((k, n) for k, n in negative.items() if n),
            }
    got = {}
    for r in front.rows(
            f"SELECT toUnixTimestamp(Bucket), MetricName, MetricType, AggregationTemporality, ServiceName, "
            f"any(ResourceAttributes), any(ScopeName), any(Attributes), any(MetricUnit), any(IsMonotonic), "
            f"any(ExplicitBounds), any(Scale), countMerge(Points), sumMerge(Sum), minMerge(Min), maxMerge(Max), "
            f"argMaxMerge(Last), sumMerge(Count), sumMerge(ZeroCount), sumForEachMerge(BucketCounts), "
            f"sumMapMerge(PositiveBuckets), sumMapMerge(NegativeBuckets) FROM {table(c, rollup)} "
            f"GROUP BY Bucket, ServiceName, MetricName, MetricType, AggregationTemporality, SeriesHash"):
        bucket, name, metric_type, temporality, service, resource, scope, attrs, unit, monotonic, bounds, scale = r[:12]
        extra = {"gauge": (), "sum": (monotonic,), "histogram": ([float(b) for b in bounds],),
                 "exponential_histogram": (scale,)}[metric_type]
        key = (bucket, name, metric_type, temporality, service, json.dumps(sorted(map(list, resource.items()))), scope,
               json.dumps(sorted(map(list, attrs.items()))), unit, *(json.dumps(e) for e in extra))
        assert key not in got, f"{rollup}: two rows for one series and bucket: {key}"
        points, total, low, high, last, count, zero_count, buckets, positive, negative = r[12:]
        got[key] = {"points": points, "sum": float(total), "min": float(low), "max": float(high), "last": float(last),
                    "count": count, "zero_count": zero_count, "buckets": buckets,
                    "positive": [tuple(p) for p in zip(*positive)], "negative": [tuple(p) for p in zip(*negative)]}
    problems = [f"{rollup}: no row for {k}: expected {want[k]}" for k in want.keys() - got.keys()]
    problems += [f"{rollup}: a row without raw rows {k}: {got[k]}" for k in got.keys() - want.keys()]
    problems += [f"{rollup} {k}: expected {want[k]} (from the raw rows), got {got[k]}"
                 for k in want.keys() & got.keys() if want[k] != got[k]]
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- migrations

MIGRATED = re.compile(r'applied ClickHouse schema migrations\t.*"versions": "\[([0-9, ]*)\]"')


# Every numbered migration of schema/clickhouse/, as the collector logs and records them.
ALL_VERSIONS = [version for version, _, _ in migrations()]
ALL_RECORDS = [[version, name] for version, name, _ in migrations()]


def applied_versions(c: Collector) -> list[list[int]]:
    """The versions of each "applied ClickHouse schema migrations" line in the collector's log."""
    return [[int(v) for v in m.group(1).split(", ")] for m in MIGRATED.finditer(c.log())]


def migration_records(front: Front, database: str) -> list[list]:
    return front.rows(f"SELECT version, name FROM `{database}`.otelstore_schema_migrations ORDER BY version")


def send_spans(c: Collector, service: str) -> list[str]:
    """make_sdk_spans' spans over OTLP/HTTP; returns their span ids."""
    spans, _ = make_sdk_spans(service)
    export_spans("http", c, spans)
    return [f"{s.get_span_context().span_id:016x}" for s in spans]


def test_migrations_applied_once(start_collector, front: Front):
    """A collector applies every migration to a new database, and a second one, started on it
    later, applies none: both log line and records say so, and the data goes on flowing."""
    database = unique_name("ch_migrate")
    first = start_collector(database)
    wait_until(lambda: applied_versions(first), 20, "the migrations", first.describe)
    assert applied_versions(first) == [ALL_VERSIONS]
    assert migration_records(front, database) == ALL_RECORDS
    assert first.stop() == 0, first.describe()

    second = start_collector(database)
    ids = send_spans(second, unique_name("after_restart"))
    # A write runs only after the schema pass: once the spans are in, the pass is over.
    front.wait_for_count(f"SELECT count() FROM {table(second, 'otel_traces')}", len(ids), on_fail=second.describe)
    assert "applied ClickHouse schema migrations" not in second.log()
    assert applied_versions(second) == []
    assert front.value(f"SELECT count() FROM `{database}`.otelstore_schema_migrations") == len(ALL_RECORDS), \
        "records written again"
    assert migration_records(front, database) == ALL_RECORDS


def test_upgrade_from_an_older_schema(start_collector, front: Front):
    """A database an older version made (migrations 1 and 2 applied and recorded, a span in it): the
    collector applies 3 and later only, the old span stays, new data is stored and reaches the views
    that 4 creates."""
    database = unique_name("ch_upgrade")
    assert migrate(front.run, dict(SINGLE_NODE, database=f'"{database}"'), upto=2) == [1, 2]
    old_trace = "0af7651916cd43dd8448eb211c80319c"
    front.run(f"INSERT INTO `{database}`.otel_traces (Timestamp, TraceId, SpanId, ServiceName, SpanName, SpanKind) "
              f"VALUES (now64(9), '{old_trace}', 'b7ad6b7169203331', 'old', 'before the upgrade', 'Server')")

    c = start_collector(database)
    wait_until(lambda: applied_versions(c), 20, "the migrations", c.describe)
    assert applied_versions(c) == [[v for v in ALL_VERSIONS if v > 2]]
    assert migration_records(front, database) == ALL_RECORDS

    service = unique_name("upgraded")
    ids = send_spans(c, service)
    t = table(c, "otel_traces")
    front.wait_for_count(f"SELECT count() FROM {t}", len(ids) + 1, on_fail=c.describe)
    assert sorted(r[0] for r in front.rows(f"SELECT SpanId FROM {t} WHERE TraceId != '{old_trace}'")) == sorted(ids)
    assert front.rows(f"SELECT ServiceName, SpanName FROM {t} WHERE TraceId = '{old_trace}'") == [
        ["old", "before the upgrade"]]
    # The span stats view (migration 4) sees what was written after it.
    assert front.value(f"SELECT countMerge(Spans) FROM {table(c, 'otel_span_stats_1h')} "
                       f"WHERE ServiceName = '{service}'") == 5


class RecordingClickHouse:
    """An HTTP server that answers like ClickHouse (chdb_front's handler) but runs nothing: it
    records every query and returns empty results, so the collector's DDL can be read as sent."""

    version, timezone = "26.9.0", "UTC"

    def __init__(self) -> None:
        self.queries: list[str] = []
        self.lock = threading.Lock()
        handler = type("RecordingHandler", (chdb_front.Handler,), {"engine": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def execute(self, query: bytes, data_start: int, **kwargs) -> chdb_front.Result:
        with self.lock:
            self.queries.append(query[:data_start].decode().strip())
        return chdb_front.Result(b"", kwargs.get("default_format") or "TabSeparated", {})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_on_cluster_ddl_as_sent(start_collector):
    """With clickhouse.cluster_name, every statement of bootstrap.sql and the migrations goes out
    ON CLUSTER with Replicated engines, then distributed.sql's Distributed tables: the text the
    collector sends is schema/clickhouse/ rendered with test_schema.CLUSTER's values, statement by
    statement, each migration then recorded."""
    server = RecordingClickHouse()
    try:
        c = start_collector("otel", {"clickhouse": {"cluster_name": "otel_cluster"}}, endpoint=server.url,
                            signals=("traces",))
        records = lambda: [q for q in server.queries if q.startswith("INSERT INTO")]  # noqa: E731
        distributed = statements(render((SCHEMA / "distributed.sql").read_text(), CLUSTER))
        wait_until(lambda: len(records()) == len(ALL_RECORDS) and distributed[-1] in server.queries, 20,
                   "every migration recorded and the Distributed tables created", c.describe)
        assert c.stop() == 0, c.describe()
    finally:
        server.close()

    want = statements(render((SCHEMA / "bootstrap.sql").read_text(), CLUSTER))
    want.append('SELECT version FROM "otel".otelstore_schema_migrations FINAL')
    for version, name, text in migrations():
        want += statements(render(text, CLUSTER))
        want.append(f"INSERT INTO \"otel\".otelstore_schema_migrations (version, name) VALUES ({version}, '{name}')")
    want += distributed
    got = [q.removesuffix(" FORMAT TabSeparated") for q in server.queries]
    assert got == want
    ddl = [q for q in got if first_line(q).startswith(("CREATE", "ALTER"))]
    assert len(ddl) >= 25 and all(' ON CLUSTER "otel_cluster"' in first_line(q) for q in ddl)
    engines = [e for q in ddl for e in re.findall(r"ENGINE = (\w+)\(", q)]
    assert engines.count("Distributed") == len(distributed)
    assert all(e.startswith("Replicated") for e in engines if e != "Distributed")


# --------------------------------------------------------------------------- the database down


def test_database_down_then_up_spans_arrive_exactly_once(start_collector, tmp_path):
    """The collector starts while nothing listens at its endpoint and receives spans (acknowledge:
    committed, a short write timeout: every write fails fast and is retried from the sending
    queue). Then the database comes up on that port: every span is stored, once, within 60 s."""
    started = time.monotonic()
    port = free_port()
    c = start_collector(endpoint=f"http://127.0.0.1:{port}", exporter_overrides={
        "acknowledge": "committed", "write_timeout": "2s", "timeout": "5s",
        "retry_on_failure": {"max_elapsed_time": "60s"}})
    ids = []
    for i in range(3):
        ids += send_spans(c, unique_name(f"down_{i}"))
    # Writes fail (and are retried) while nothing listens.
    wait_until(lambda: c.log().count("write failed") >= 3, 20, "failed writes", c.describe)
    assert "applied ClickHouse schema migrations" not in c.log()
    proc, _ = start_front(tmp_path / "chdb", port)
    try:
        t = table(c, "otel_traces")
        remaining = 60 - (time.monotonic() - started)
        Front(f"http://127.0.0.1:{port}").wait_for_count(f"SELECT count() FROM {t}", len(ids), timeout=remaining,
                                                         settle=2.0, on_fail=c.describe)
        assert sorted(r[0] for r in Front(f"http://127.0.0.1:{port}").rows(f"SELECT SpanId FROM {t}")) == sorted(ids)
        assert time.monotonic() - started < 60
    finally:
        stop_process(proc)


# --------------------------------------------------------------------------- telemetrygen


TGEN_TRACES, TGEN_LOGS, TGEN_POINTS = 40, 30, 20
TGEN_METRICS = {"Gauge": "otel_metrics_gauge", "Sum": "otel_metrics_sum", "Histogram": "otel_metrics_histogram",
                "ExponentialHistogram": "otel_metrics_exponential_histogram"}


@pytest.mark.parametrize("signal", ["traces", "logs", "metrics"])
def test_telemetrygen_counts(signal: str, start_collector, front: Front):
    c = start_collector(signals=(signal,))
    service = unique_name(f"tgen_{signal}")
    if signal == "traces":
        telemetrygen(c, "traces", "--traces", str(TGEN_TRACES), "--child-spans", "1", "--service", service)
        t = table(c, "otel_traces")
        front.wait_for_count(f"SELECT count() FROM {t}", 2 * TGEN_TRACES, on_fail=c.describe)
        assert front.rows(f"SELECT uniqExact(TraceId), uniqExact(SpanId), countIf(ParentSpanId = ''), "
                          f"countIf(ServiceName = '{service}') FROM {t}") == [
            [TGEN_TRACES, 2 * TGEN_TRACES, TGEN_TRACES, 2 * TGEN_TRACES]]
        assert front.value(f"SELECT count() FROM {t} AS child JOIN {t} AS parent "
                           "ON child.TraceId = parent.TraceId AND child.ParentSpanId = parent.SpanId") == TGEN_TRACES
    elif signal == "logs":
        telemetrygen(c, "logs", "--logs", str(TGEN_LOGS), "--service", service, "--severity-number", "17",
                     "--severity-text", "Error", "--body", "connection refused")
        t = table(c, "otel_logs")
        front.wait_for_count(f"SELECT count() FROM {t}", TGEN_LOGS, on_fail=c.describe)
        assert front.rows(f"SELECT ServiceName, SeverityNumber, SeverityText, Body, count() FROM {t} "
                          "GROUP BY ALL") == [[service, 17, "Error", "connection refused", TGEN_LOGS]]
        assert front.value(f"SELECT countMerge(Records) FROM {table(c, 'otel_error_logs_1h')}") == TGEN_LOGS
    else:
        for kind, name in TGEN_METRICS.items():
            telemetrygen(c, "metrics", "--metrics", str(TGEN_POINTS), "--metric-type", kind, "--service", service)
            front.wait_for_count(f"SELECT count() FROM {table(c, name)}", TGEN_POINTS, settle=0.1, on_fail=c.describe)
        for rollup in ("otel_metrics_rollup_5m", "otel_metrics_rollup_1h"):
            assert dict(front.rows(f"SELECT MetricType, countMerge(Points) FROM {table(c, rollup)} "
                                   "GROUP BY MetricType")) == {
                name.removeprefix("otel_metrics_"): TGEN_POINTS for name in TGEN_METRICS.values()}
