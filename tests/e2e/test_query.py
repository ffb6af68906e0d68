"""End to end: what the collector stored, read back over otelstore-query's Jaeger HTTP API.

One collector stores, in a schema of its own, the Python SDK's spans of payloads.make_sdk_spans (every
attribute type, events, links, span kinds, errors, a remote parent, a trace state, a resource without
service.name), the spans of two more services continuing its trace (payloads.downstream_spans: a call
from a client to a server, and a message from a producer to a consumer), and telemetrygen's traces.
Then the real otelstore-query binary reads that schema, and its answers are compared with what was
sent: the services and operations, trace searches by every parameter (exact trace ids, in order),
whole traces in Jaeger's shape (derived here from the OTLP requests the SDK sent, by the mapping
rust/query/src/api/ui_trace.rs describes), the service dependencies, and the errors: an unknown
trace, bad parameters, and the database going away and coming back.

The module has a PostgreSQL cluster of its own (conftest's own_pg): its last test stops it.
"""

from __future__ import annotations

import base64
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from conftest import PgCluster, postgres_exporter, wait_for_count
from harness import Collectors, QueryServer, telemetrygen, unique_name, wait_until
from payloads import downstream_spans, export_spans, http_session, make_sdk_spans, otlp_items

MAX_SAFE_INTEGER = 2**53 - 1  # larger integers are sent as strings (JavaScript numbers are doubles)
KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
TGEN_TRACES = 6
HTTP_TIMEOUT = 15  # seconds, for every request to otelstore-query

SESSION = http_session()


# --------------------------------------------------------------------------- what Jaeger's API must say


def plain(value: AnyValue) -> Any:
    """An OTLP value as plain JSON, as an array or map attribute is shown: doubles JSON has no number
    for and bytes as strings, an empty value as null."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "double_value":
        return double(value.double_value)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if which == "array_value":
        return [plain(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: plain(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which)


def double(x: float) -> float | str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def string_tag(key: str, text: str) -> dict:
    return {"key": key, "type": "string", "value": text}


def tag(key: str, value: AnyValue) -> dict:
    """A typed Jaeger tag: string, bool, int64 (a string beyond 2^53), float64 or binary (base64);
    arrays and maps as their JSON text, keys sorted; an empty value as ""."""
    which = value.WhichOneof("value")
    if which == "bool_value":
        return {"key": key, "type": "bool", "value": value.bool_value}
    if which == "int_value":
        n = value.int_value
        return {"key": key, "type": "int64", "value": n if abs(n) <= MAX_SAFE_INTEGER else str(n)}
    if which == "double_value":
        return {"key": key, "type": "float64", "value": double(value.double_value)}
    if which == "bytes_value":
        return {"key": key, "type": "binary", "value": plain(value)}
    if which in ("array_value", "kvlist_value"):
        text = json.dumps(plain(value), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        return string_tag(key, text)
    return string_tag(key, value.string_value)  # an empty value too: ""


def tags(attributes) -> list[dict]:
    return [tag(kv.key, kv.value) for kv in sorted(attributes, key=lambda kv: kv.key)]


def reference(ref_type: str, trace_id: bytes, span_id: bytes) -> dict:
    return {"refType": ref_type, "traceID": trace_id.hex(), "spanID": span_id.hex()}


def jaeger_span(resource_spans, scope_spans, span, processes: list[dict]) -> dict:
    """One OTLP span as a span of Jaeger's UI model; its process is added to `processes` if new."""
    resource = resource_spans.resource.attributes
    process = {
        "serviceName": next((kv.value.string_value for kv in resource if kv.key == "service.name"), ""),
        "tags": tags([kv for kv in resource if kv.key != "service.name"]),
    }
    if process not in processes:
        processes.append(process)

    references = [reference("CHILD_OF", span.trace_id, span.parent_span_id)] if span.parent_span_id else []
    for link in span.links:
        assert link.trace_id.strip(b"\0"), "a link without a trace id is dropped with a warning: not covered here"
        child_of = any(kv.key == "opentracing.ref_type" and kv.value.string_value == "child_of" for kv in link.attributes)
        ref_type = "CHILD_OF" if child_of else "FOLLOWS_FROM"
        if span.parent_span_id and (link.trace_id, link.span_id) == (span.trace_id, span.parent_span_id):
            references[0]["refType"] = ref_type
        else:
            references.append(reference(ref_type, link.trace_id, link.span_id))

    span_tags = []
    if scope_spans.scope.name:
        span_tags.append(string_tag("otel.scope.name", scope_spans.scope.name))
    if scope_spans.scope.version:
        span_tags.append(string_tag("otel.scope.version", scope_spans.scope.version))
    span_tags += tags(span.attributes)
    if span.kind in KINDS:
        span_tags.append(string_tag("span.kind", KINDS[span.kind]))
    if span.status.code == 1:
        span_tags.append(string_tag("otel.status_code", "OK"))
    elif span.status.code == 2:
        span_tags += [string_tag("otel.status_code", "ERROR"), {"key": "error", "type": "bool", "value": True}]
    if span.status.message:
        span_tags.append(string_tag("otel.status_description", span.status.message))
    if span.trace_state:
        span_tags.append(string_tag("w3c.tracestate", span.trace_state))

    logs = []
    for event in span.events:
        named = event.name and not any(kv.key == "event" for kv in event.attributes)
        fields = [string_tag("event", event.name)] if named else []
        logs.append({"timestamp": event.time_unix_nano // 1000, "fields": fields + tags(event.attributes)})

    out = {
        "traceID": span.trace_id.hex(),
        "spanID": span.span_id.hex(),
        "operationName": span.name,
        "references": references,
        "startTime": span.start_time_unix_nano // 1000,
        "duration": max(span.end_time_unix_nano - span.start_time_unix_nano, 0) // 1000,
        "tags": span_tags,
        "logs": logs,
        "processID": f"p{processes.index(process) + 1}",
        "warnings": None,
    }
    if span.flags & 1:  # W3C sampled; the other bits have no place in Jaeger's model
        out["flags"] = 1
    return out


def jaeger_traces(requests_sent: list) -> dict[str, dict]:
    """The traces of OTLP requests in Jaeger's UI model, by trace id: spans in the order they
    started (then by span id), processes p1, p2, ... in the order the spans first use them."""
    by_trace: dict[bytes, list] = {}
    for item in otlp_items(requests_sent, "traces"):
        by_trace.setdefault(item[2].trace_id, []).append(item)
    traces = {}
    for trace_id, items in by_trace.items():
        items.sort(key=lambda item: (item[2].start_time_unix_nano, item[2].span_id))
        processes: list[dict] = []
        spans = [jaeger_span(*item, processes) for item in items]
        traces[trace_id.hex()] = {
            "traceID": trace_id.hex(),
            "spans": spans,
            "processes": {f"p{i + 1}": process for i, process in enumerate(processes)},
            "warnings": None,
        }
    return traces


def envelope(data: Any, total: int = 0) -> dict:
    """Jaeger's v1 answer: `errors` null on success, never []."""
    return {"data": data, "total": total, "limit": 0, "offset": 0, "errors": None}


def error_envelope(code: int, msg: str) -> dict:
    return {"data": None, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": code, "msg": msg}]}


# --------------------------------------------------------------------------- fixtures


@dataclass
class Stored:
    """What was sent to the collector, and otelstore-query reading what it stored."""

    query: QueryServer
    service: str  # make_sdk_spans' service
    facts: dict  # make_sdk_spans' facts
    traces: dict[str, dict]  # the SDK's traces, as Jaeger's API must give them
    tgen_service: str
    tgen_latest: dict[str, int]  # telemetrygen's traces: the latest start of a span (µs) by trace id

    def trace_id(self, fact: str) -> str:
        return f"{self.facts[fact].trace_id:032x}"

    def get(self, path: str, status: int = 200, **params: Any) -> dict:
        """GET path?params (a list value repeats the parameter); checks the status and that the
        body is JSON, and returns it."""
        r = SESSION.get(self.query.base_url + path, params=params, timeout=HTTP_TIMEOUT)
        assert r.status_code == status, f"GET {r.url}: {r.status_code} {r.text[:3000]}\n{self.query.describe()}"
        assert r.headers.get("Content-Type") == "application/json", r.headers
        return r.json()

    def search(self, **params: Any) -> list[str]:
        """The trace ids a search finds, in the order given."""
        body = self.get("/api/traces", **params)
        assert body == envelope(body["data"]), body
        return [trace["traceID"] for trace in body["data"]]


@pytest.fixture(scope="module")
def stored(own_pg: PgCluster, start_query, request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Stored:
    collectors = Collectors(request, tmp_path_factory.mktemp("collectors"))
    schema = unique_name("e2e_query")
    collector = collectors.start(postgres_exporter(own_pg.dsn, schema), schema=schema, signals=("traces",))
    try:
        service = unique_name("shop")
        spans, facts = make_sdk_spans(service)
        # One request, so that the exporter pairs the calls between services as it stores them.
        sent = export_spans("grpc", collector, spans + downstream_spans(facts, service))
        tgen_service = unique_name("tgen")
        telemetrygen(collector, "traces", "--traces", str(TGEN_TRACES), "--workers", "1",
                     "--service", tgen_service, "--span-duration", "5ms")

        traces = jaeger_traces(sent)
        sdk_spans = sum(len(trace["spans"]) for trace in traces.values())
        with psycopg.connect(own_pg.dsn, autocommit=True, connect_timeout=10) as db:
            wait_for_count(db, f"SELECT count(*) FROM {collector.spans_table}", sdk_spans + 2 * TGEN_TRACES,
                           on_fail=collector.describe)
            rows = db.execute(f"SELECT encode(trace_id, 'hex'), max(start_time_unix_nano) / 1000 "
                              f"FROM {collector.spans_table} WHERE service_name = %s GROUP BY 1",
                              (tgen_service,)).fetchall()
        assert len(rows) == TGEN_TRACES, rows

        # Started once the spans are stored: its answers are cached (cache.ttl, 15 minutes by default).
        yield Stored(query=start_query(own_pg.dsn, schema), service=service, facts=facts, traces=traces,
                     tgen_service=tgen_service, tgen_latest={trace_id: int(latest) for trace_id, latest in rows})
    finally:
        problems = collectors.stop_all()
        if problems:
            pytest.fail("\n\n".join(problems))


# --------------------------------------------------------------------------- services and operations


def test_services(stored: Stored):
    s = stored.service
    # The resource of make_sdk_spans' internal spans has no service.name: stored as "".
    services = sorted([s, f"{s}_inventory", f"{s}_worker", stored.tgen_service, ""])
    assert stored.get("/api/services") == envelope(services, total=5)


def test_operations(stored: Stored):
    s = stored.service
    names = ["GET /checkout", "SELECT orders", "consume", "limited", "publish"]
    assert stored.get(f"/api/services/{s}/operations") == envelope(names, total=5)
    kinds = ["server", "client", "consumer", "internal", "producer"]
    every = [{"name": name, "spanKind": kind} for name, kind in zip(names, kinds)]
    assert stored.get("/api/operations", service=s) == envelope(every, total=5)
    server = [{"name": "GET /checkout", "spanKind": "server"}]
    assert stored.get("/api/operations", service=s, spanKind="server") == envelope(server, total=1)
    assert stored.get("/api/operations", service=f"{s}_inventory", spanKind="server") == envelope(
        [{"name": "GET /stock", "spanKind": "server"}], total=1)
    assert stored.get("/api/operations", service=s, spanKind="consumer") == envelope(
        [{"name": "consume", "spanKind": "consumer"}], total=1)
    assert stored.get("/api/services/nobody/operations") == envelope([], total=0)


# --------------------------------------------------------------------------- search


def test_search_by_service_returns_whole_traces_newest_first(stored: Stored):
    """Each trace with a span of the service, ordered by its latest such span (limited at +5 s, the
    consumer at +3 s, the producer at +1.5 s), whole: the root trace with the spans of the two other
    services too."""
    expected = [stored.trace_id("limited"), stored.trace_id("remote_parent"), stored.trace_id("root")]
    body = stored.get("/api/traces", service=stored.service)
    assert body == envelope([stored.traces[t] for t in expected])
    assert len(stored.traces[stored.trace_id("root")]["processes"]) == 3


def test_search_parameters(stored: Stored):
    s, base = stored.service, stored.facts["base"]
    root, remote = stored.trace_id("root"), stored.trace_id("remote_parent")
    limited, internal = stored.trace_id("limited"), stored.trace_id("internal")

    def us(offset_ns: int) -> int:
        return (base + offset_ns) // 1000

    assert stored.search(service=s, operation="publish") == [root]
    assert stored.search(service=s, operation="no such operation") == []
    # Tags, as Grafana sends them (a JSON object of strings) and as the Jaeger UI's URL has them.
    assert stored.search(service=s, tags='{"db.system":"postgresql"}') == [root]
    assert stored.search(service=s, tag="db.system:postgresql") == [root]
    assert stored.search(service=s, tag=["db.system:postgresql", "db.rows:3"]) == [root]
    assert stored.search(service=s, tag="db.rows:4") == []
    assert stored.search(tags='{"int":"42"}') == [root]  # an int attribute, given as a string
    assert stored.search(service=s, tags='{"res.int":"12345"}') == [remote, root]  # a resource attribute
    assert stored.search(service=s, tags='{"error":"true"}') == [root]
    assert stored.search(service=s, tag="span.kind:consumer") == [remote]
    assert stored.search(service=f"{s}_worker", tag="otel.status_code:ERROR") == [root]
    # Durations: the root lasts 2.5 s, the producer 987.65 ms, housekeeping exactly 1 s, the client
    # span 0 and the consumer 1 ns.
    assert stored.search(service=s, minDuration="2s") == [root]
    assert stored.search(minDuration="900ms", maxDuration="1s") == [internal, root]
    assert stored.search(service=s, maxDuration="500ns") == [remote, root]
    # Start and end (µs): a window around the limited span only, then around the producer only; the
    # trace comes whole all the same.
    assert stored.search(service=s, start=us(4_500_000_000), end=us(5_500_000_000)) == [limited]
    window = stored.get("/api/traces", service=s, start=us(1_400_000_000), end=us(1_600_000_000))
    assert window == envelope([stored.traces[root]])
    assert stored.search(service=s, start=us(-60_000_000_000), end=us(-50_000_000_000)) == []
    # Limit: the newest ones.
    assert stored.search(service=s, limit=2) == [limited, remote]


def test_search_limit_keeps_the_newest_traces(stored: Stored):
    latest = stored.tgen_latest
    found = stored.search(service=stored.tgen_service, limit=3)
    assert len(found) == 3 and set(found) <= set(latest), found
    starts = [latest[t] for t in found]
    assert starts == sorted(starts, reverse=True), starts
    assert min(starts) >= max(latest[t] for t in latest if t not in found), (found, latest)
    assert sorted(stored.search(service=stored.tgen_service)) == sorted(latest)


def test_search_by_trace_ids_names_the_missing(stored: Stored):
    root, missing = stored.trace_id("root"), "0123456789abcdef0123456789abcdef"
    body = stored.get("/api/traces", traceID=[root, missing])
    assert body == {**envelope([stored.traces[root]]), "errors": [{"msg": "trace not found", "traceID": missing}]}


# --------------------------------------------------------------------------- traces by id


def test_every_trace_by_id(stored: Stored):
    assert len(stored.traces) == 5  # root (with the other services' spans), remote, internal, skewed, limited
    for trace_id, trace in stored.traces.items():
        assert stored.get(f"/api/traces/{trace_id}") == envelope([trace]), trace_id
        assert stored.get(f"/api/traces/{trace_id.upper()}") == envelope([trace]), trace_id


def test_trace_by_id_literals(stored: Stored):
    """A few values checked literally, independently of jaeger_span above."""
    trace = stored.get(f"/api/traces/{stored.trace_id('root')}")["data"][0]
    by_name = {span["operationName"]: span for span in trace["spans"]}
    root, child = by_name["GET /checkout"], by_name["SELECT orders"]
    assert root["references"] == [{"refType": "FOLLOWS_FROM", "traceID": f"{stored.facts['linked'].trace_id:032x}",
                                   "spanID": f"{stored.facts['linked'].span_id:016x}"}]
    assert child["references"] == [{"refType": "CHILD_OF", "traceID": trace["traceID"], "spanID": root["spanID"]}]
    assert (root["startTime"], root["duration"]) == (stored.facts["base"] // 1000, 2_500_000)
    root_tags = {t["key"]: (t["type"], t["value"]) for t in root["tags"]}
    assert root_tags["span.kind"] == ("string", "server")
    assert root_tags["otel.status_code"] == ("string", "ERROR")
    assert root_tags["error"] == ("bool", True)
    assert root_tags["otel.status_description"] == ("string", "payment declined")
    assert root_tags["int"] == ("int64", 42) and root_tags["int.max"] == ("int64", str(2**63 - 1))
    assert root_tags["float.nan"] == ("float64", "NaN") and root_tags["bytes"] == ("binary", "AAH+/w==")
    assert root_tags["map"] == ("string", '{"$ref":"x","k":"v","n":1,"nested":{"deep":[1,"two"]}}')
    assert [log["fields"][0] for log in root["logs"]] == [
        {"key": "event", "type": "string", "value": name} for name in ("cache.miss", "exception", "bare")]
    assert root["logs"][0]["timestamp"] == (stored.facts["base"] + 100_001) // 1000
    assert {p["serviceName"] for p in trace["processes"].values()} == {
        stored.service, f"{stored.service}_inventory", f"{stored.service}_worker"}
    assert root["processID"] == "p1"


def test_trace_by_id_with_a_time_window(stored: Stored):
    """start and end narrow where the spans are looked for first: µs as Jaeger defines them, or ms
    as Grafana sends them; a window that misses the trace finds it all the same."""
    trace_id = stored.trace_id("root")
    expected = envelope([stored.traces[trace_id]])
    base_ms = stored.facts["base"] // 10**6
    for start, end in [((base_ms - 60_000) * 1000, (base_ms + 60_000) * 1000),  # µs
                       (base_ms - 60_000, base_ms + 60_000),  # ms
                       (base_ms - 3 * 3_600_000, base_ms - 2 * 3_600_000)]:  # ms, hours too early
        assert stored.get(f"/api/traces/{trace_id}", start=start, end=end) == expected, (start, end)


def test_unknown_trace_is_404(stored: Stored):
    assert stored.get("/api/traces/0123456789abcdef0123456789abcdef", status=404) == error_envelope(404, "trace not found")
    assert stored.get("/api/nothing/here", status=404)["errors"][0]["code"] == 404


@pytest.mark.parametrize("path,params,param", [
    ("/api/traces", {"minDuration": "soon"}, "minDuration"),
    ("/api/traces", {"maxDuration": "10 parsecs"}, "maxDuration"),
    ("/api/traces", {"limit": "many"}, "limit"),
    ("/api/traces", {"start": "yesterday"}, "start"),
    ("/api/traces", {"end": "1.5"}, "end"),
    ("/api/traces", {"tag": "no-colon"}, "tag"),
    ("/api/traces", {"tags": '{"http.status_code": 500}'}, "tags"),
    ("/api/traces", {"traceID": "not-hex"}, "traceID"),
    ("/api/traces/not-hex", {}, "traceID"),
    ("/api/traces/0123456789abcdef0123456789abcdef", {"start": "soon"}, "start"),
    ("/api/operations", {"service": "x", "spanKind": "sideways"}, "spanKind"),
    ("/api/dependencies", {"endTs": "now"}, "endTs"),
    ("/api/dependencies", {"lookback": "1h"}, "lookback"),
])
def test_bad_parameter_is_400_naming_it(stored: Stored, path: str, params: dict, param: str):
    body = stored.get(path, status=400, **params)
    msg = body["errors"][0]["msg"]
    assert body == error_envelope(400, msg)
    assert msg.startswith(f"unable to parse param '{param}': "), msg
    value = params.get(param, path.rsplit("/", 1)[1])
    assert json.dumps(value)[1:-1] in msg, msg  # the value, repeated (quoted)


def test_missing_or_contradictory_parameters_are_400(stored: Stored):
    assert stored.get("/api/operations", status=400) == error_envelope(400, "parameter 'service' is required")
    body = stored.get("/api/traces", status=400, service="x", minDuration="2s", maxDuration="1s")
    assert body == error_envelope(400, "'maxDuration' must not be shorter than 'minDuration'")
    assert stored.get("/api/traces", status=400, start=2000, end=1000)["errors"][0]["msg"].startswith("'start'")


# --------------------------------------------------------------------------- dependencies


def test_dependencies(stored: Stored):
    s = stored.service
    now_ms = time.time_ns() // 10**6
    links = [{"parent": s, "child": f"{s}_inventory", "callCount": 1},
             {"parent": s, "child": f"{s}_worker", "callCount": 1}]
    assert stored.get("/api/dependencies", endTs=now_ms, lookback=3_600_000) == envelope(links)
    assert stored.get("/api/dependencies", endTs=now_ms, lookback=3_600_000, service=f"{s}_worker") == envelope(links[1:])
    assert stored.get("/api/dependencies", endTs=now_ms - 3 * 86_400_000, lookback=3_600_000) == envelope([])


# --------------------------------------------------------------------------- the database goes away


def test_database_down_is_503_and_back_up_is_200(stored: Stored, own_pg: PgCluster):
    """PostgreSQL stopped (fast shutdown: the pool's connections are closed under it): what was
    answered before still comes from the cache; anything else is 503 in Jaeger's envelope, quickly.
    Started again on the same port: the same requests are answered."""
    services = stored.get("/api/services")
    new = {"service": stored.service, "limit": 7}  # a search not asked before, so not cached
    own_pg.stop()
    try:
        started = time.monotonic()
        assert stored.get("/api/services") == services
        for path, params in [("/api/traces", new), (f"/api/traces/{stored.trace_id('skewed')}", {"end": 1}),
                             ("/api/services/nobody/operations", {"prettyPrint": "false"})]:
            body = stored.get(path, status=503, **params)
            msg = body["errors"][0]["msg"]
            assert body == error_envelope(503, msg) and msg.startswith("the database is unavailable: "), body
        elapsed = time.monotonic() - started
        assert elapsed < 10, f"the 503 answers took {elapsed:.1f}s"
    finally:
        own_pg.start()

    def answered() -> bool:
        r = SESSION.get(stored.query.base_url + "/api/traces", params=new, timeout=HTTP_TIMEOUT)
        return r.status_code == 200

    wait_until(answered, timeout=30, what="otelstore-query answering once PostgreSQL is back",
               on_fail=stored.query.describe)
    expected = [stored.trace_id("limited"), stored.trace_id("remote_parent"), stored.trace_id("root")]
    assert stored.search(**new) == expected
    assert stored.query.alive()
