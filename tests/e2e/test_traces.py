"""End-to-end: OTLP traces in (SDK, telemetrygen, raw HTTP), rows in PostgreSQL out.

Every test runs its own collector writing to a schema of its own, so counts are exact and tests are
independent. Expected column values follow schema/postgres/0001_spans.sql and the jsonb attribute
encoding in schema/README.md.
"""

from __future__ import annotations

import base64
import math
import secrets
import subprocess
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span as PbSpan
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from conftest import ROOT, TELEMETRYGEN_BIN, Collector, http_post, scalar, unique_name, wait_for_count
from payloads import make_sdk_spans, otlp_exporter
from row_diff import strict_diff

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Every column of schema/postgres/0001_spans.sql.
SPAN_COLUMNS = [
    "trace_id", "span_id", "parent_span_id", "trace_state", "flags", "name", "kind",
    "start_time", "start_time_unix_nano", "duration_ns", "status_code", "status_message",
    "service_name", "resource_attributes", "resource_schema_url", "scope_name", "scope_version",
    "scope_attributes", "scope_schema_url", "span_attributes", "events", "links",
    "dropped_attributes_count", "dropped_events_count", "dropped_links_count",
]

# SDK SpanKind -> OTLP SpanKind number.
OTLP_KIND = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
OTLP_STATUS = {StatusCode.UNSET: 0, StatusCode.OK: 1, StatusCode.ERROR: 2}

# OTLP span flags (trace.proto SpanFlags) as the Python SDK sets them.
HAS_IS_REMOTE = 0x100
IS_REMOTE = 0x200


# --------------------------------------------------------------------------- expectations


def jsonb_expected(value: Any) -> Any:
    """An attribute value as schema/README.md says it is stored in jsonb."""
    if value is None:
        return None
    if isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return {"$double": "NaN"}
        if math.isinf(value):
            return {"$double": "Infinity" if value > 0 else "-Infinity"}
        return value
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, (list, tuple)):
        return [jsonb_expected(v) for v in value]
    if isinstance(value, dict) or hasattr(value, "items"):
        return {("$" + k if k.startswith("$") else k): jsonb_expected(v) for k, v in value.items()}
    raise TypeError(f"no jsonb encoding for {value!r}")


def attrs_expected(attributes: Any) -> dict:
    return {k: jsonb_expected(v) for k, v in (attributes or {}).items()}


def start_time_expected(ns: int) -> datetime:
    """timestamptz holds microseconds: the nanoseconds truncated."""
    return EPOCH + timedelta(microseconds=ns // 1000)


def expected_row(span: ReadableSpan) -> dict:
    """The row otelstore must write for one SDK span, from what the SDK exported."""
    ctx = span.get_span_context()
    parent = span.parent
    resource = span.resource
    scope = span.instrumentation_scope
    status = span.status
    flags = HAS_IS_REMOTE | (IS_REMOTE if parent is not None and parent.is_remote else 0)
    return {
        "trace_id": ctx.trace_id.to_bytes(16, "big"),
        "span_id": ctx.span_id.to_bytes(8, "big"),
        "parent_span_id": parent.span_id.to_bytes(8, "big") if parent is not None else None,
        "trace_state": ",".join(f"{k}={v}" for k, v in ctx.trace_state.items()),
        "flags": flags,
        "name": span.name,
        "kind": OTLP_KIND[span.kind],
        "start_time": start_time_expected(span.start_time),
        "start_time_unix_nano": span.start_time,
        "duration_ns": span.end_time - span.start_time,
        "status_code": OTLP_STATUS[status.status_code],
        "status_message": status.description or "",
        "service_name": resource.attributes.get("service.name", ""),
        "resource_attributes": attrs_expected(resource.attributes),
        "resource_schema_url": resource.schema_url or "",
        "scope_name": scope.name,
        "scope_version": scope.version or "",
        "scope_attributes": attrs_expected(scope.attributes),
        "scope_schema_url": scope.schema_url or "",
        "span_attributes": attrs_expected(span.attributes),
        "events": [
            {
                "time_unix_nano": e.timestamp,
                "name": e.name,
                "attributes": attrs_expected(e.attributes),
                "dropped_attributes_count": e.dropped_attributes,
            }
            for e in span.events
        ],
        "links": [
            {
                "trace_id": f"{l.context.trace_id:032x}",
                "span_id": f"{l.context.span_id:016x}",
                "trace_state": "",  # the Python OTLP encoder does not send a link's trace_state
                "flags": HAS_IS_REMOTE | (IS_REMOTE if l.context.is_remote else 0),
                "attributes": attrs_expected(l.attributes),
                "dropped_attributes_count": l.dropped_attributes,
            }
            for l in span.links
        ],
        "dropped_attributes_count": span.dropped_attributes,
        "dropped_events_count": span.dropped_events,
        "dropped_links_count": span.dropped_links,
    }


def fetch_rows(db: psycopg.Connection, table: str, where: str = "TRUE", params: Any = None) -> list[dict]:
    with db.cursor() as cur:
        cur.execute(f"SELECT * FROM {table} WHERE {where}", params)
        names = [d.name for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]


def rows_by_span_id(rows: list[dict]) -> dict[bytes, dict]:
    by_id: dict[bytes, dict] = {}
    for r in rows:
        assert r["span_id"] not in by_id, f"span {r['span_id'].hex()} stored more than once"
        by_id[r["span_id"]] = r
    return by_id


# --------------------------------------------------------------------------- SDK spans

# How the root span's attributes (payloads.SPAN_ATTRS) are stored, spelled out by hand (this is what
# a user reading schema/README.md expects to query).
SPAN_ATTRS_STORED = {
    "str": "héllo wörld ✓",
    "str.empty": "",
    "bool.true": True,
    "bool.false": False,
    "int": 42,
    "int.negative": -7,
    "int.max": 9223372036854775807,
    "int.min": -9223372036854775808,
    "float": 3.25,
    "float.integral": 1.0,
    "float.tiny": 2.5e-7,
    "float.negative": -0.1,
    "float.nan": {"$double": "NaN"},
    "float.inf": {"$double": "Infinity"},
    "float.neginf": {"$double": "-Infinity"},
    "strs": ["a", "b", ""],
    "ints": [1, -2, 3],
    "floats": [0.5, 2.0],
    "bools": [True, False],
    "empty.list": [],
    "bytes": {"$bytes": "AAH+/w=="},
    "none": None,
    "map": {"k": "v", "n": 1, "$$ref": "x", "nested": {"deep": [1, "two"]}},
    "nested.list": [[1, 2], ["x"]],
    "mixed.list": ["a", 1, 2.5, True, None],
}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_spans_are_stored_exactly(protocol: str, collector: Collector, db: psycopg.Connection):
    service = unique_name(f"sdk_{protocol}")
    spans, facts = make_sdk_spans(service)
    assert len(spans) == 7

    exporter = otlp_exporter(protocol, collector)
    try:
        result = exporter.export(spans)
    finally:
        exporter.shutdown()
    assert result == SpanExportResult.SUCCESS, f"OTLP/{protocol} export failed\n{collector.describe()}"

    wait_for_count(db, f"SELECT count(*) FROM {collector.spans_table}", len(spans), on_fail=collector.describe)

    rows = fetch_rows(db, collector.spans_table)
    assert set(rows[0]) == set(SPAN_COLUMNS), "spans table columns differ from schema/postgres/0001_spans.sql"
    by_id = rows_by_span_id(rows)
    expected = {s.get_span_context().span_id.to_bytes(8, "big"): expected_row(s) for s in spans}
    assert set(by_id) == set(expected), "stored span ids differ from the exported ones"

    problems = []
    for span_id, exp in expected.items():
        row = by_id[span_id]
        for col in SPAN_COLUMNS:
            problems += [f"span {exp['name']!r} {col}: {d}" for d in strict_diff(row[col], exp[col], "")]
    assert not problems, "stored rows differ from the exported spans:\n" + "\n".join(problems)

    # Literal checks, independent of the SDK's view of its own spans.
    base = facts["base"]
    root = by_id[facts["root"].span_id.to_bytes(8, "big")]
    assert root["kind"] == 2 and root["parent_span_id"] is None
    assert root["start_time_unix_nano"] == base and base % 1000 == 789
    assert root["duration_ns"] == 2_500_000_001
    assert root["start_time"] == EPOCH + timedelta(microseconds=base // 1000)
    assert (root["status_code"], root["status_message"]) == (2, "payment declined")
    assert root["service_name"] == service
    assert not strict_diff(root["span_attributes"], SPAN_ATTRS_STORED), strict_diff(root["span_attributes"], SPAN_ATTRS_STORED)
    assert root["resource_attributes"] == {
        "service.name": service, "service.version": "1.2.3-e2e", "res.bool": True, "res.int": 12345,
        "res.float": 0.75, "res.strs": ["x", "y"], "res.ints": [10, 20, 30],
    }
    assert (root["scope_name"], root["scope_version"], root["scope_schema_url"]) == ("e2e.scope.a", "4.5.6", "https://example.com/scope/1.0")
    assert [(e["name"], e["time_unix_nano"]) for e in root["events"]] == [
        ("cache.miss", base + 100_001), ("exception", base + 200_002), ("bare", base + 300_003)]
    assert root["links"][0]["trace_id"] == f"{facts['linked'].trace_id:032x}"
    assert root["links"][0]["span_id"] == f"{facts['linked'].span_id:016x}"
    assert root["links"][0]["attributes"] == {"link.str": "l", "link.int": 5, "link.float": 1.5, "link.bools": [True, False]}

    child = by_id[facts["child"].span_id.to_bytes(8, "big")]
    assert child["kind"] == 3 and child["parent_span_id"] == facts["root"].span_id.to_bytes(8, "big")
    assert child["trace_id"] == facts["root"].trace_id.to_bytes(16, "big")
    assert child["duration_ns"] == 0 and (child["status_code"], child["status_message"]) == (1, "")
    assert child["start_time_unix_nano"] == base + 1_000_999

    consumer = by_id[facts["consumer"].span_id.to_bytes(8, "big")]
    assert consumer["kind"] == 5 and consumer["duration_ns"] == 1
    assert consumer["trace_id"] == facts["remote_parent"].trace_id.to_bytes(16, "big")
    assert consumer["parent_span_id"] == facts["remote_parent"].span_id.to_bytes(8, "big")
    assert consumer["trace_state"] == "vendor=abc,other=1"
    assert consumer["links"][0]["span_id"] == f"{facts['producer'].span_id:016x}"

    internal = by_id[facts["internal"].span_id.to_bytes(8, "big")]
    assert internal["kind"] == 1 and internal["service_name"] == ""
    assert (internal["span_attributes"], internal["events"], internal["links"]) == ({}, [], [])

    skewed = by_id[facts["skewed"].span_id.to_bytes(8, "big")]
    assert skewed["duration_ns"] == -1_500

    limited = by_id[facts["limited"].span_id.to_bytes(8, "big")]
    assert (limited["dropped_attributes_count"], limited["dropped_events_count"], limited["dropped_links_count"]) == (2, 1, 1)
    assert len(limited["span_attributes"]) == 3 and len(limited["events"]) == 2 and len(limited["links"]) == 1
    assert [e["dropped_attributes_count"] for e in limited["events"]] == [1, 1]
    assert limited["links"][0]["dropped_attributes_count"] == 1

    producer = by_id[facts["producer"].span_id.to_bytes(8, "big")]
    assert producer["kind"] == 4 and producer["scope_name"] == "e2e.scope.b" and producer["scope_version"] == ""

    # What a user would run: attribute filters and the float/int distinction in jsonb text.
    t = collector.spans_table
    assert scalar(db, f"SELECT count(*) FROM {t} WHERE span_attributes @> %s::jsonb", ('{"int": 42}',)) == 1
    assert scalar(db, f"SELECT span_attributes->>'float.integral' FROM {t} WHERE span_id = %s", (root["span_id"],)) == "1.0"
    assert scalar(db, f"SELECT span_attributes->>'int' FROM {t} WHERE span_id = %s", (root["span_id"],)) == "42"
    assert scalar(db, f"SELECT jsonb_typeof(span_attributes->'none') FROM {t} WHERE span_id = %s", (root["span_id"],)) == "null"
    assert scalar(db, f"SELECT count(*) FROM {t} WHERE service_name = %s", (service,)) == 5
    assert scalar(
        db, f"SELECT count(*) FROM {t} WHERE trace_id = decode(%s, 'hex')", (f"{facts['root'].trace_id:032x}",)
    ) == 3  # root, child, producer


# --------------------------------------------------------------------------- telemetrygen


@pytest.mark.parametrize(
    "protocol,status_flag,status_code",
    [("grpc", "Unset", 0), ("http", "Error", 2)],
    ids=["grpc", "http"],
)
def test_telemetrygen_traces(protocol, status_flag, status_code, collector: Collector, db: psycopg.Connection):
    if not TELEMETRYGEN_BIN.exists():
        pytest.fail(f"{TELEMETRYGEN_BIN} is missing; run `make tools`")
    service = unique_name(f"tgen_{protocol}")
    run_id = secrets.token_hex(6)
    traces_per_worker, workers = 40, 2
    cmd = [
        str(TELEMETRYGEN_BIN), "traces",
        "--otlp-insecure",
        "--traces", str(traces_per_worker),
        "--workers", str(workers),
        "--rate", "0",  # the default is 1 span/s per worker
        "--service", service,
        "--span-duration", "5ms",
        "--status-code", status_flag,
        "--otlp-attributes", f'e2e.run="{run_id}"',
        "--telemetry-attributes", 'e2e.attr="tgen"',
    ]
    if protocol == "grpc":
        cmd += ["--otlp-endpoint", collector.grpc_endpoint]
    else:
        cmd += ["--otlp-http", "--otlp-endpoint", f"127.0.0.1:{collector.http_port}"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"telemetrygen did not finish in 60s\n{e.stderr}\n{collector.describe()}")
    assert r.returncode == 0, f"telemetrygen failed ({r.returncode})\n{r.stdout}\n{r.stderr}\n{collector.describe()}"

    traces = traces_per_worker * workers  # --traces is per worker
    spans = traces * 2  # --child-spans defaults to 1: a "lets-go" root and one "okey-dokey-0" child
    t = collector.spans_table
    wait_for_count(db, f"SELECT count(*) FROM {t} WHERE service_name = %s", spans, params=(service,),
                   on_fail=collector.describe)
    assert scalar(db, f"SELECT count(*) FROM {t}") == spans, "rows of another service in a fresh schema"
    assert scalar(db, f"SELECT count(DISTINCT span_id) FROM {t}") == spans, "duplicate span ids"
    assert scalar(db, f"SELECT count(DISTINCT trace_id) FROM {t}") == traces

    rows = fetch_rows(db, t)
    by_trace: dict[bytes, list[dict]] = {}
    for r in rows:
        by_trace.setdefault(r["trace_id"], []).append(r)
    problems = []
    for trace_id, trace_rows in by_trace.items():
        tid = trace_id.hex()
        if len(trace_rows) != 2:
            problems.append(f"trace {tid}: {len(trace_rows)} spans")
            continue
        roots = [r for r in trace_rows if r["parent_span_id"] is None]
        kids = [r for r in trace_rows if r["parent_span_id"] is not None]
        if len(roots) != 1 or len(kids) != 1:
            problems.append(f"trace {tid}: {len(roots)} roots, {len(kids)} children")
            continue
        root, kid = roots[0], kids[0]
        if (root["name"], root["kind"]) != ("lets-go", 3):
            problems.append(f"trace {tid}: root {root['name']!r} kind {root['kind']}")
        if (kid["name"], kid["kind"]) != ("okey-dokey-0", 2):
            problems.append(f"trace {tid}: child {kid['name']!r} kind {kid['kind']}")
        if kid["parent_span_id"] != root["span_id"]:
            problems.append(f"trace {tid}: child parent {kid['parent_span_id'].hex()} != root {root['span_id'].hex()}")
        if kid["start_time_unix_nano"] != root["start_time_unix_nano"]:
            problems.append(f"trace {tid}: child starts at {kid['start_time_unix_nano']}, root at {root['start_time_unix_nano']}")
        for r, peer in ((root, "telemetrygen-server"), (kid, "telemetrygen-client")):
            if len(r["trace_id"]) != 16 or len(r["span_id"]) != 8:
                problems.append(f"trace {tid}: id lengths {len(r['trace_id'])}/{len(r['span_id'])}")
            if r["duration_ns"] != 5_000_000:
                problems.append(f"trace {tid} {r['name']}: duration {r['duration_ns']} != 5ms")
            if r["start_time"] != start_time_expected(r["start_time_unix_nano"]):
                problems.append(f"trace {tid} {r['name']}: start_time {r['start_time']} != truncated {r['start_time_unix_nano']}")
            if (r["status_code"], r["status_message"]) != (status_code, ""):
                problems.append(f"trace {tid} {r['name']}: status {r['status_code']} {r['status_message']!r}")
            if r["resource_attributes"] != {"service.name": service, "e2e.run": run_id}:
                problems.append(f"trace {tid}: resource {r['resource_attributes']}")
            if r["span_attributes"] != {"network.peer.address": "1.2.3.4", "service.peer.name": peer, "e2e.attr": "tgen"}:
                problems.append(f"trace {tid} {r['name']}: attributes {r['span_attributes']}")
            if (r["scope_name"], r["events"], r["links"]) != ("telemetrygen", [], []):
                problems.append(f"trace {tid} {r['name']}: scope {r['scope_name']!r} events {r['events']} links {r['links']}")
            if not r["resource_schema_url"].startswith("https://opentelemetry.io/schemas/"):
                problems.append(f"trace {tid}: resource_schema_url {r['resource_schema_url']!r}")
    assert not problems, "\n".join(problems[:30])


# --------------------------------------------------------------------------- malformed requests


def pb_request(service: str, n: int, name: str = "raw") -> ExportTraceServiceRequest:
    """A valid ExportTraceServiceRequest of n spans in one trace, built by hand."""
    now = time.time_ns()
    trace_id = secrets.token_bytes(16)
    spans = [
        PbSpan(
            trace_id=trace_id,
            span_id=secrets.token_bytes(8),
            name=f"{name}-{i}",
            kind=PbSpan.SPAN_KIND_SERVER,
            start_time_unix_nano=now + i,
            end_time_unix_nano=now + i + 1_000,
            attributes=[KeyValue(key="i", value=AnyValue(int_value=i))],
        )
        for i in range(n)
    ]
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=PbResource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))]),
                scope_spans=[ScopeSpans(scope=InstrumentationScope(name="e2e.raw"), spans=spans)],
            )
        ]
    )


def bad_payload(kind: str, service: str) -> bytes:
    if kind == "garbage":
        return b"this is not protobuf \xff\xfe\xfd\x00\x01"
    if kind == "truncated":
        data = pb_request(service, 3).SerializeToString()
        return data[: len(data) * 2 // 3]
    if kind == "bad_id_length":
        req = pb_request(service, 1)
        req.resource_spans[0].scope_spans[0].spans[0].trace_id = b"\x01\x02\x03"
        return req.SerializeToString()
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["garbage", "truncated", "bad_id_length"])
def test_malformed_otlp_http_is_rejected_and_harmless(kind: str, collector: Collector, db: psycopg.Connection):
    service = unique_name(f"malformed_{kind}")
    bad_service = service + "_bad"
    t = collector.spans_table
    ctype = "application/x-protobuf"

    before = pb_request(service, 3, "before")
    status, body = http_post(collector.traces_url, before.SerializeToString(), ctype)
    assert status == 200, f"good request refused: {status} {body[:500]!r}\n{collector.describe()}"
    wait_for_count(db, f"SELECT count(*) FROM {t}", 3, on_fail=collector.describe)

    payload = bad_payload(kind, bad_service)
    if kind in ("garbage", "truncated"):
        with pytest.raises(DecodeError):  # precondition: this really is not a valid protobuf message
            ExportTraceServiceRequest.FromString(payload)
    status, body = http_post(collector.traces_url, payload, ctype)
    assert status == 400, f"malformed ({kind}) request: expected HTTP 400, got {status} {body[:500]!r}"
    assert collector.alive(), f"collector died on a malformed request\n{collector.describe()}"

    after = pb_request(service, 4, "after")
    status, body = http_post(collector.traces_url, after.SerializeToString(), ctype)
    assert status == 200, f"good request after a malformed one refused: {status} {body[:500]!r}\n{collector.describe()}"
    wait_for_count(db, f"SELECT count(*) FROM {t}", 7, on_fail=collector.describe)

    sent = {s.span_id: s.name
            for req in (before, after)
            for s in req.resource_spans[0].scope_spans[0].spans}
    rows = rows_by_span_id(fetch_rows(db, t))
    assert {k: r["name"] for k, r in rows.items()} == sent
    assert all(r["service_name"] == service for r in rows.values())
    assert scalar(db, f"SELECT count(*) FROM {t} WHERE service_name = %s", (bad_service,)) == 0
    assert collector.alive() and collector.healthy(), collector.describe()


# --------------------------------------------------------------------------- shared schema, restart


def test_collectors_sharing_a_schema_migrate_once(start_collector, db: psycopg.Connection):
    """Two collectors write their first batches to one new schema at the same moment; a third starts
    after one of them stops. The migrations are applied once and every span is stored once."""
    from concurrent.futures import ThreadPoolExecutor

    schema = unique_name("e2e_shared")
    c1 = start_collector(schema=schema)
    c2 = start_collector(schema=schema)
    service = unique_name("shared")
    r1, r2 = pb_request(service, 5, "c1"), pb_request(service, 6, "c2")
    with ThreadPoolExecutor(2) as pool:
        f1 = pool.submit(http_post, c1.traces_url, r1.SerializeToString(), "application/x-protobuf")
        f2 = pool.submit(http_post, c2.traces_url, r2.SerializeToString(), "application/x-protobuf")
        assert f1.result()[0] == 200 and f2.result()[0] == 200
    t = c1.spans_table
    wait_for_count(db, f"SELECT count(*) FROM {t}", 11, on_fail=lambda: c1.describe() + "\n" + c2.describe())

    migrations = len(list((ROOT / "schema/postgres").glob("*.sql")))
    applied = f'SELECT count(*) FROM "{schema}".otelstore_schema_migrations'
    assert scalar(db, applied) == migrations

    assert c1.stop() == 0, c1.describe()
    c3 = start_collector(schema=schema)
    r3 = pb_request(service, 2, "c3")
    assert http_post(c3.traces_url, r3.SerializeToString(), "application/x-protobuf")[0] == 200
    wait_for_count(db, f"SELECT count(*) FROM {t}", 13, on_fail=c3.describe)
    assert scalar(db, applied) == migrations, "a restart re-applied migrations"

    sent = {s.span_id for r in (r1, r2, r3) for s in r.resource_spans[0].scope_spans[0].spans}
    assert set(rows_by_span_id(fetch_rows(db, t))) == sent


# --------------------------------------------------------------------------- unrepresentable span


def test_span_beyond_bigint_nanoseconds_is_rejected_alone(collector: Collector, db: psycopg.Connection):
    """schema/README.md: a timestamp above 2^63-1 ns does not fit the bigint column; that span is
    rejected with an error naming the span and the field. The other spans are still stored."""
    service = unique_name("overflow")
    t = collector.spans_table
    req = pb_request(service, 3, "overflow")
    bad = req.resource_spans[0].scope_spans[0].spans[1]
    bad.end_time_unix_nano = 2**64 - 1
    status, body = http_post(collector.traces_url, req.SerializeToString(), "application/x-protobuf")
    assert status in (200, 400), f"{status} {body[:500]!r}"

    good_ids = {s.span_id for i, s in enumerate(req.resource_spans[0].scope_spans[0].spans) if i != 1}
    wait_for_count(db, f"SELECT count(*) FROM {t}", 2, on_fail=collector.describe)
    assert set(rows_by_span_id(fetch_rows(db, t))) == good_ids

    deadline = time.monotonic() + 15
    while bad.span_id.hex() not in collector.log():
        assert time.monotonic() < deadline, f"no error naming span {bad.span_id.hex()}\n{collector.describe()}"
        time.sleep(0.2)
    line = next(ln for ln in collector.log().splitlines() if bad.span_id.hex() in ln)
    assert "end_time_unix_nano" in line, line

    # The collector goes on storing data.
    after = pb_request(service, 2, "after")
    assert http_post(collector.traces_url, after.SerializeToString(), "application/x-protobuf")[0] == 200
    wait_for_count(db, f"SELECT count(*) FROM {t}", 4, on_fail=collector.describe)
    assert collector.alive()
