"""otelstore-query's HTTP APIs end to end over one backend: what the collector stored, read back by
the real binary, and compared with the OTLP requests that were sent.

Shared by tests/e2e/test_query.py (PostgreSQL) and tests/clickhouse/test_query.py (ClickHouse):
each builds a `Stored` (a collector fed the Python SDK's spans of payloads.make_sdk_spans and
payloads.downstream_spans in one request, and telemetrygen's traces; then otelstore-query over what
it stored) in a module-scoped `stored` fixture, and runs the checks of `QueryApiChecks` by
subclassing it. The expected answers are derived here from the requests sent, through the
backend's `Storage`: what it keeps of an attribute value (typed in PostgreSQL, pdata's AsString in
ClickHouse) and of the span flags. Checked:

* Jaeger's v1 API: services, operations (by kind), trace searches by every parameter (exact trace
  ids, in order), whole traces in Jaeger's UI model (rust/query/src/api/ui_trace.rs describes the
  mapping), dependencies, and the errors: an unknown trace, bad parameters;
* Jaeger's v3 API: services, operations, search and trace by id in OTLP JSON
  (rust/query/src/api/otlp_json.rs), its error shape;
* otelstore's own API: POST /api/v1/traces (by id and searched) and /api/v1/services/stats (from
  the spans, exact, and from the hourly statistics);
* the database going away (503 on every API, cached answers still served) and coming back.
"""

from __future__ import annotations

import base64
import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from harness import QueryServer, telemetrygen, unique_name, wait_until
from payloads import downstream_spans, export_spans, http_session, make_sdk_spans, otlp_items

MAX_SAFE_INTEGER = 2**53 - 1  # larger integers are sent as strings (JavaScript numbers are doubles)
KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
TGEN_TRACES = 6
HTTP_TIMEOUT = 15  # seconds, for every request to otelstore-query
SECOND = 10**9
HOUR = 3600 * SECOND
STATS_QUANTILES = (0.5, 0.95, 0.99)

SESSION = http_session()


# --------------------------------------------------------------------------- what a backend keeps


@dataclass(frozen=True)
class Storage:
    """What a backend gives back of what was sent, where that is less than OTLP."""

    # An attribute value (resource, span, event, link) as it is read back.
    value: Callable[[AnyValue], AnyValue] = lambda value: value
    # Whether span flags are kept (else they read as 0).
    flags: bool = True
    # The root span's tags `int`, `int.max`, `float.nan` and `bytes` as (type, value), literally.
    root_tags: dict = field(default_factory=dict)


def as_stored(requests_sent: list, storage: Storage) -> list:
    """Copies of trace requests holding only what `storage` keeps: what the API must answer."""
    out = []
    for request in requests_sent:
        copy = type(request)()
        copy.CopyFrom(request)
        for resource_spans, _, span in otlp_items([copy], "traces"):
            lists = [resource_spans.resource.attributes, span.attributes]
            lists += [event.attributes for event in span.events] + [link.attributes for link in span.links]
            for attributes in lists:
                for kv in attributes:
                    kv.value.CopyFrom(storage.value(kv.value))
            if not storage.flags:
                span.flags = 0
        out.append(copy)
    return out


# --------------------------------------------------------------------------- Jaeger's UI model


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


def by_key(attributes) -> list:
    """Attributes sorted by key, stably (duplicates keep their order)."""
    return sorted(attributes, key=lambda kv: kv.key)


def tags(attributes) -> list[dict]:
    return [tag(kv.key, kv.value) for kv in by_key(attributes)]


def service_of(resource) -> str:
    return next((kv.value.string_value for kv in resource.attributes if kv.key == "service.name"), "")


def reference(ref_type: str, trace_id: bytes, span_id: bytes) -> dict:
    return {"refType": ref_type, "traceID": trace_id.hex(), "spanID": span_id.hex()}


def jaeger_span(resource_spans, scope_spans, span, processes: list[dict]) -> dict:
    """One OTLP span as a span of Jaeger's UI model; its process is added to `processes` if new."""
    resource = resource_spans.resource.attributes
    process = {
        "serviceName": service_of(resource_spans.resource),
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


def spans_by_trace(requests_sent: list) -> dict[str, list[tuple]]:
    """(resource spans, scope spans, span) of each trace by hex id, in the order the spans started
    (then by span id), as both APIs order them."""
    by_trace: dict[str, list] = {}
    for item in otlp_items(requests_sent, "traces"):
        by_trace.setdefault(item[2].trace_id.hex(), []).append(item)
    for items in by_trace.values():
        items.sort(key=lambda item: (item[2].start_time_unix_nano, item[2].span_id))
    return by_trace


def jaeger_traces(requests_sent: list) -> dict[str, dict]:
    """The traces of OTLP requests in Jaeger's UI model, by trace id: spans in the order they
    started (then by span id), processes p1, p2, ... in the order the spans first use them."""
    traces = {}
    for trace_id, items in spans_by_trace(requests_sent).items():
        processes: list[dict] = []
        spans = [jaeger_span(*item, processes) for item in items]
        traces[trace_id] = {
            "traceID": trace_id,
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


# --------------------------------------------------------------------------- OTLP JSON


def otlp_value(value: AnyValue) -> dict:
    """An AnyValue in OTLP JSON: 64-bit integers as strings, doubles JSON has no number for as
    strings, bytes in base64, map entries sorted by key, `{}` for an empty value."""
    which = value.WhichOneof("value")
    if which is None:
        return {}
    if which == "int_value":
        return {"intValue": str(value.int_value)}
    if which == "double_value":
        return {"doubleValue": double(value.double_value)}
    if which == "bytes_value":
        return {"bytesValue": plain(value)}
    if which == "array_value":
        return {"arrayValue": {"values": [otlp_value(v) for v in value.array_value.values]}}
    if which == "kvlist_value":
        return {"kvlistValue": {"values": key_values(value.kvlist_value.values)}}
    return {"stringValue" if which == "string_value" else "boolValue": getattr(value, which)}


def key_values(attributes) -> list[dict]:
    return [{"key": kv.key, "value": otlp_value(kv.value)} for kv in by_key(attributes)]


def without_empty(fields: dict) -> dict:
    """Protobuf JSON leaves out a field that holds its zero value."""
    return {name: value for name, value in fields.items() if value not in ("", "0", 0, [], None)}


def otlp_span(span) -> dict:
    out = without_empty({
        "traceId": span.trace_id.hex(),
        "spanId": span.span_id.hex(),
        "traceState": span.trace_state,
        "parentSpanId": span.parent_span_id.hex(),
        "flags": span.flags,
        "name": span.name,
        "kind": span.kind,
        "startTimeUnixNano": str(span.start_time_unix_nano),
        # A span that ends before it starts is read back as lasting 0.
        "endTimeUnixNano": str(max(span.end_time_unix_nano, span.start_time_unix_nano)),
        "attributes": key_values(span.attributes),
        "events": [without_empty({"timeUnixNano": str(e.time_unix_nano), "name": e.name,
                                  "attributes": key_values(e.attributes)}) for e in span.events],
        "links": [without_empty({"traceId": link.trace_id.hex(), "spanId": link.span_id.hex(),
                                 "traceState": link.trace_state, "attributes": key_values(link.attributes)})
                  for link in span.links],
    })
    out["status"] = without_empty({"message": span.status.message, "code": span.status.code})
    return out


def otlp_traces(requests_sent: list) -> dict[str, list[dict]]:
    """Each trace's `resourceSpans` in OTLP JSON, by trace id: its spans in the order they started
    (then by id), grouped by resource, then by scope, each group where its first span puts it."""
    traces = {}
    for trace_id, items in spans_by_trace(requests_sent).items():
        groups: list[dict] = []
        for resource_spans, scope_spans, span in items:
            resource = {"attributes": key_values(resource_spans.resource.attributes)}
            key = (service_of(resource_spans.resource), json.dumps(resource))
            group = next((g for g in groups if g["key"] == key), None)
            if group is None:
                group = {"key": key, "resource": without_empty(resource), "scopeSpans": []}
                groups.append(group)
            scope = without_empty({"name": scope_spans.scope.name, "version": scope_spans.scope.version})
            scoped = next((s for s in group["scopeSpans"] if s["scope"] == scope), None)
            if scoped is None:
                scoped = {"scope": scope, "spans": []}
                group["scopeSpans"].append(scoped)
            scoped["spans"].append(otlp_span(span))
        traces[trace_id] = [{"resource": g["resource"], "scopeSpans": g["scopeSpans"]} for g in groups]
    return traces


def v3_error(code: int, message: str) -> dict:
    return {"error": {"httpCode": code, "message": message}}


def rfc3339(unix_nano: int) -> str:
    """As the API writes a time: UTC, a fraction only when there is one, without trailing zeros."""
    seconds, nanos = divmod(unix_nano, SECOND)
    text = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{nanos:09d}".rstrip("0") if nanos else "") + "Z"


# --------------------------------------------------------------------------- service statistics


def percentile_cont(values: list[int], q: float) -> float:
    """PostgreSQL's percentile_cont: interpolated between the two values nearest the rank."""
    values = sorted(values)
    rank = (len(values) - 1) * q
    low = math.floor(rank)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (rank - low)


def service_stats(requests_sent: list, start: int, end: int) -> list[dict]:
    """/api/v1/services/stats' `services` from the spans that started in [start, end): exact."""
    by_service: dict[str, list] = {}
    for resource_spans, _, span in otlp_items(requests_sent, "traces"):
        if start <= span.start_time_unix_nano < end:
            by_service.setdefault(service_of(resource_spans.resource), []).append(span)
    out = []
    for service, spans in sorted(by_service.items()):
        durations = [max(s.end_time_unix_nano - s.start_time_unix_nano, 0) for s in spans]
        errors = sum(s.status.code == 2 for s in spans)
        quantiles = [percentile_cont(durations, q) / 1e6 for q in STATS_QUANTILES]
        out.append({"service": service, "spans": len(spans), "errors": errors, "error_rate": errors / len(spans),
                    **{f"p{round(q * 100)}_ms": pytest.approx(v, rel=1e-9, abs=1e-9)
                       for q, v in zip(STATS_QUANTILES, quantiles)}})
    return out


# --------------------------------------------------------------------------- what was stored


@dataclass
class Stored:
    """What was sent to the collector, and otelstore-query reading what it stored."""

    query: QueryServer
    storage: Storage
    what: Sent
    tgen_latest: dict[str, int]  # telemetrygen's traces: the latest start of a span (µs) by trace id
    stop_database: Callable[[], None]  # makes it unreachable (pending connections closed)
    start_database: Callable[[], None]  # back, at the same address, with the same data
    service: str = field(init=False)  # make_sdk_spans' service
    facts: dict = field(init=False)  # make_sdk_spans' facts
    tgen_service: str = field(init=False)
    sent: list = field(init=False)  # the SDK's requests, as the backend keeps them (as_stored)
    traces: dict[str, dict] = field(init=False)  # the SDK's traces, as Jaeger's UI model must give them
    otlp: dict[str, list[dict]] = field(init=False)  # their resourceSpans in OTLP JSON

    def __post_init__(self) -> None:
        self.service, self.facts, self.tgen_service = self.what.service, self.what.facts, self.what.tgen_service
        self.sent = as_stored(self.what.requests, self.storage)
        self.traces = jaeger_traces(self.sent)
        self.otlp = otlp_traces(self.sent)

    def trace_id(self, fact: str) -> str:
        return f"{self.facts[fact].trace_id:032x}"

    def ns(self, offset_ns: int) -> int:
        """make_sdk_spans' base time plus an offset, in nanoseconds."""
        return self.facts["base"] + offset_ns

    def check(self, r, status: int) -> Any:
        assert r.status_code == status, f"{r.request.method} {r.url}: {r.status_code} {r.text[:3000]}\n{self.query.describe()}"
        assert r.headers.get("Content-Type") == "application/json", r.headers
        return r.json()

    def get(self, path: str, status: int = 200, **params: Any) -> Any:
        """GET path?params (a list value repeats the parameter); checks the status and that the
        body is JSON, and returns it."""
        return self.check(SESSION.get(self.query.base_url + path, params=params, timeout=HTTP_TIMEOUT), status)

    def post(self, path: str, body: Any, status: int = 200) -> Any:
        return self.check(SESSION.post(self.query.base_url + path, json=body, timeout=HTTP_TIMEOUT), status)

    def search(self, **params: Any) -> list[str]:
        """The trace ids a search finds, in the order given."""
        body = self.get("/api/traces", **params)
        assert body == envelope(body["data"]), body
        return [trace["traceID"] for trace in body["data"]]

    def v3_search(self, **params: Any) -> dict:
        """A v3 search over make_sdk_spans' time (unless given): its answer."""
        window = {"query.startTimeMin": rfc3339(self.ns(-SECOND)), "query.startTimeMax": rfc3339(self.ns(7 * SECOND))}
        return self.get("/api/v3/traces", **{**window, **params})

    def resource_spans(self, *trace_ids: str) -> dict:
        return {"result": {"resourceSpans": [group for t in trace_ids for group in self.otlp[t]]}}

    def native(self, *trace_ids: str) -> dict:
        """POST /api/v1/traces' answer with these traces."""
        return {"traces": [{"traceId": t, "resourceSpans": self.otlp[t]} for t in trace_ids]}


def trace_summary(trace_id: str, groups: list[dict]) -> dict:
    """A trace's summary (GET /api/v3/trace-summaries) from its OTLP JSON resource groups."""
    spans = []
    for group in groups:
        service = next((kv["value"].get("stringValue", "") for kv in group["resource"].get("attributes", [])
                        if kv["key"] == "service.name"), "")
        spans += [(service, span) for scope in group["scopeSpans"] for span in scope["spans"]]
    ids = {span["spanId"] for _, span in spans}
    roots = sorted((int(span["startTimeUnixNano"]), span["spanId"], service, span["name"])
                   for service, span in spans if "parentSpanId" not in span)
    services: dict[str, list[int]] = {}
    for service, span in spans:
        counts = services.setdefault(service, [0, 0])
        counts[0] += 1
        counts[1] += span.get("status", {}).get("code") == 2
    return {
        "traceId": trace_id,
        "rootServiceName": roots[0][2] if roots else "",
        "rootOperationName": roots[0][3] if roots else "",
        "minStartTimeUnixNano": str(min(int(span["startTimeUnixNano"]) for _, span in spans)),
        "maxEndTimeUnixNano": str(max(int(span["endTimeUnixNano"]) for _, span in spans)),
        "spanCount": len(spans),
        "errorSpanCount": sum(errors for _, errors in services.values()),
        "orphanSpanCount": sum(1 for _, span in spans if "parentSpanId" in span and span["parentSpanId"] not in ids),
        "services": [{"name": name, "spanCount": n, "errorSpanCount": e} for name, (n, e) in sorted(services.items())],
    }


@dataclass
class Sent:
    """What send() sent to a collector."""

    service: str  # make_sdk_spans' service
    facts: dict  # make_sdk_spans' facts
    requests: list  # the SDK's requests
    tgen_service: str
    spans: int  # how many spans in all, telemetrygen's too


def send(collector) -> Sent:
    """make_sdk_spans' and downstream_spans' spans over gRPC, then telemetrygen's traces."""
    service = unique_name("shop")
    spans, facts = make_sdk_spans(service)
    # One request, so that the exporter pairs the calls between services as it stores them.
    requests = export_spans("grpc", collector, spans + downstream_spans(facts, service))
    tgen_service = unique_name("tgen")
    telemetrygen(collector, "traces", "--traces", str(TGEN_TRACES), "--workers", "1",
                 "--service", tgen_service, "--span-duration", "5ms")
    sdk_spans = len(list(otlp_items(requests, "traces")))
    return Sent(service, facts, requests, tgen_service, spans=sdk_spans + 2 * TGEN_TRACES)


# --------------------------------------------------------------------------- the checks


class QueryApiChecks:
    """Every check of otelstore-query's APIs against a module's `stored` fixture (a `Stored`)."""

    # ------------------------------------------------------------------- services and operations

    def test_services(self, stored: Stored):
        s = stored.service
        # The resource of make_sdk_spans' internal spans has no service.name: stored as "".
        services = sorted([s, f"{s}_inventory", f"{s}_worker", stored.tgen_service, ""])
        assert stored.get("/api/services") == envelope(services, total=5)
        assert stored.get("/api/v3/services") == {"services": services}

    def test_operations(self, stored: Stored):
        s = stored.service
        names = ["GET /checkout", "SELECT orders", "consume", "limited", "publish"]
        assert stored.get(f"/api/services/{s}/operations") == envelope(names, total=5)
        kinds = ["server", "client", "consumer", "internal", "producer"]
        every = [{"name": name, "spanKind": kind} for name, kind in zip(names, kinds)]
        assert stored.get("/api/operations", service=s) == envelope(every, total=5)
        assert stored.get("/api/v3/operations", service=s) == {"operations": every}
        server = [{"name": "GET /checkout", "spanKind": "server"}]
        assert stored.get("/api/operations", service=s, spanKind="server") == envelope(server, total=1)
        assert stored.get("/api/v3/operations", service=s, spanKind="server") == {"operations": server}
        assert stored.get("/api/operations", service=f"{s}_inventory", spanKind="server") == envelope(
            [{"name": "GET /stock", "spanKind": "server"}], total=1)
        assert stored.get("/api/operations", service=s, spanKind="consumer") == envelope(
            [{"name": "consume", "spanKind": "consumer"}], total=1)
        assert stored.get("/api/services/nobody/operations") == envelope([], total=0)
        assert stored.get("/api/v3/operations", service="nobody") == {"operations": []}

    # ------------------------------------------------------------------- search

    def test_search_by_service_returns_whole_traces_newest_first(self, stored: Stored):
        """Each trace with a span of the service, ordered by its latest such span (limited at +5 s,
        the consumer at +3 s, the producer at +1.5 s), whole: the root trace with the spans of the
        two other services too."""
        expected = [stored.trace_id("limited"), stored.trace_id("remote_parent"), stored.trace_id("root")]
        body = stored.get("/api/traces", service=stored.service)
        assert body == envelope([stored.traces[t] for t in expected])
        assert len(stored.traces[stored.trace_id("root")]["processes"]) == 3

    def test_search_parameters(self, stored: Stored):
        s = stored.service
        root, remote = stored.trace_id("root"), stored.trace_id("remote_parent")
        limited, internal = stored.trace_id("limited"), stored.trace_id("internal")

        def us(offset_ns: int) -> int:
            return stored.ns(offset_ns) // 1000

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

    def test_search_limit_keeps_the_newest_traces(self, stored: Stored):
        latest = stored.tgen_latest
        found = stored.search(service=stored.tgen_service, limit=3)
        assert len(found) == 3 and set(found) <= set(latest), found
        starts = [latest[t] for t in found]
        assert starts == sorted(starts, reverse=True), starts
        assert min(starts) >= max(latest[t] for t in latest if t not in found), (found, latest)
        assert sorted(stored.search(service=stored.tgen_service)) == sorted(latest)

    def test_search_lookback(self, stored: Stored):
        """Without start, a search looks back search.default_lookback (48h) from its end: ending a
        day after make_sdk_spans' spans finds them, ending three days after does not."""
        s, day_us = stored.service, 86_400 * 10**6
        expected = [stored.trace_id("limited"), stored.trace_id("remote_parent"), stored.trace_id("root")]
        assert stored.search(service=s, end=stored.ns(0) // 1000 + day_us) == expected
        assert stored.search(service=s, end=stored.ns(0) // 1000 + 3 * day_us) == []

    def test_search_by_trace_ids_names_the_missing(self, stored: Stored):
        root, missing = stored.trace_id("root"), "0123456789abcdef0123456789abcdef"
        body = stored.get("/api/traces", traceID=[root, missing])
        assert body == {**envelope([stored.traces[root]]), "errors": [{"msg": "trace not found", "traceID": missing}]}

    # ------------------------------------------------------------------- traces by id

    def test_every_trace_by_id(self, stored: Stored):
        assert len(stored.traces) == 5  # root (with the other services' spans), remote, internal, skewed, limited
        for trace_id, trace in stored.traces.items():
            assert stored.get(f"/api/traces/{trace_id}") == envelope([trace]), trace_id
            assert stored.get(f"/api/traces/{trace_id.upper()}") == envelope([trace]), trace_id

    def test_trace_by_id_literals(self, stored: Stored):
        """A few values checked literally, independently of jaeger_span above."""
        trace = stored.get(f"/api/traces/{stored.trace_id('root')}")["data"][0]
        by_name = {span["operationName"]: span for span in trace["spans"]}
        root, child = by_name["GET /checkout"], by_name["SELECT orders"]
        assert root["references"] == [{"refType": "FOLLOWS_FROM", "traceID": f"{stored.facts['linked'].trace_id:032x}",
                                       "spanID": f"{stored.facts['linked'].span_id:016x}"}]
        assert child["references"] == [{"refType": "CHILD_OF", "traceID": trace["traceID"], "spanID": root["spanID"]}]
        assert (root["startTime"], root["duration"]) == (stored.ns(0) // 1000, 2_500_000)
        root_tags = {t["key"]: (t["type"], t["value"]) for t in root["tags"]}
        assert root_tags["span.kind"] == ("string", "server")
        assert root_tags["otel.status_code"] == ("string", "ERROR")
        assert root_tags["error"] == ("bool", True)
        assert root_tags["otel.status_description"] == ("string", "payment declined")
        assert stored.storage.root_tags and {k: root_tags[k] for k in stored.storage.root_tags} == stored.storage.root_tags
        assert root_tags["map"] == ("string", '{"$ref":"x","k":"v","n":1,"nested":{"deep":[1,"two"]}}')
        assert [log["fields"][0] for log in root["logs"]] == [
            {"key": "event", "type": "string", "value": name} for name in ("cache.miss", "exception", "bare")]
        assert root["logs"][0]["timestamp"] == stored.ns(100_001) // 1000
        assert {p["serviceName"] for p in trace["processes"].values()} == {
            stored.service, f"{stored.service}_inventory", f"{stored.service}_worker"}
        assert root["processID"] == "p1"

    def test_trace_by_id_with_a_time_window(self, stored: Stored):
        """start and end narrow where the spans are looked for first: µs as Jaeger defines them, or
        ms as Grafana sends them; a window that misses the trace finds it all the same."""
        trace_id = stored.trace_id("root")
        expected = envelope([stored.traces[trace_id]])
        base_ms = stored.ns(0) // 10**6
        for start, end in [((base_ms - 60_000) * 1000, (base_ms + 60_000) * 1000),  # µs
                           (base_ms - 60_000, base_ms + 60_000),  # ms
                           (base_ms - 3 * 3_600_000, base_ms - 2 * 3_600_000)]:  # ms, hours too early
            assert stored.get(f"/api/traces/{trace_id}", start=start, end=end) == expected, (start, end)

    def test_unknown_trace_is_404(self, stored: Stored):
        missing = "0123456789abcdef0123456789abcdef"
        assert stored.get(f"/api/traces/{missing}", status=404) == error_envelope(404, "trace not found")
        assert stored.get("/api/nothing/here", status=404)["errors"][0]["code"] == 404
        assert stored.get(f"/api/v3/traces/{missing}", status=404) == v3_error(404, "No traces found")
        assert stored.post("/api/v1/traces", {"trace_id": missing}, status=404) == v3_error(404, "trace not found")

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
    def test_bad_parameter_is_400_naming_it(self, stored: Stored, path: str, params: dict, param: str):
        body = stored.get(path, status=400, **params)
        msg = body["errors"][0]["msg"]
        assert body == error_envelope(400, msg)
        assert msg.startswith(f"unable to parse param '{param}': "), msg
        value = params.get(param, path.rsplit("/", 1)[1])
        assert json.dumps(value)[1:-1] in msg, msg  # the value, repeated (quoted)

    @pytest.mark.parametrize("path,params,param", [
        ("/api/v3/traces", {"query.durationMin": "soon"}, "query.durationMin"),
        ("/api/v3/traces", {"query.startTimeMin": "yesterday"}, "query.startTimeMin"),
        ("/api/v3/traces", {"query.attributes": "[1]"}, "query.attributes"),
        ("/api/v3/traces/not-hex", {}, "trace_id"),
        ("/api/v3/operations", {"service": "x", "spanKind": "sideways"}, "spanKind"),
        ("/api/v1/services/stats", {"start": "an hour ago"}, "start"),
    ])
    def test_v3_and_native_bad_parameter_is_400_naming_it(self, stored: Stored, path: str, params: dict,
                                                          param: str):
        window = {"query.startTimeMin": rfc3339(stored.ns(0)), "query.startTimeMax": rfc3339(stored.ns(SECOND))}
        body = stored.get(path, status=400, **({**window, **params} if path == "/api/v3/traces" else params))
        message = body["error"]["message"]
        assert body == v3_error(400, message)
        assert message.startswith(f"malformed parameter {param}: "), message

    def test_missing_or_contradictory_parameters_are_400(self, stored: Stored):
        assert stored.get("/api/operations", status=400) == error_envelope(400, "parameter 'service' is required")
        body = stored.get("/api/traces", status=400, service="x", minDuration="2s", maxDuration="1s")
        assert body == error_envelope(400, "'maxDuration' must not be shorter than 'minDuration'")
        assert stored.get("/api/traces", status=400, start=2000, end=1000)["errors"][0]["msg"].startswith("'start'")
        assert stored.get("/api/v3/traces", status=400, **{"query.serviceName": "x"}) == v3_error(
            400, "query.startTimeMin and query.startTimeMax are required")
        body = stored.post("/api/v1/traces", {"trace_id": stored.trace_id("root"), "service_name": "x"}, status=400)
        assert body == v3_error(400, "a trace_id is looked up, not searched for: leave out service_name")
        assert stored.post("/api/v1/traces", {"service": "x"}, status=400)["error"]["message"].startswith(
            'unknown field "service" in the body')
        end = stored.ns(0)
        body = stored.get("/api/v1/services/stats", status=400, start=rfc3339(end), end=rfc3339(end))
        assert body == v3_error(400, f"'start' ({rfc3339(end)}) must be before 'end' ({rfc3339(end)})")

    # ------------------------------------------------------------------- dependencies

    def test_dependencies(self, stored: Stored):
        s = stored.service
        now_ms = time.time_ns() // 10**6
        links = [{"parent": s, "child": f"{s}_inventory", "callCount": 1},
                 {"parent": s, "child": f"{s}_worker", "callCount": 1}]
        assert stored.get("/api/dependencies", endTs=now_ms, lookback=3_600_000) == envelope(links)
        assert stored.get("/api/dependencies", endTs=now_ms, lookback=3_600_000, service=f"{s}_worker") == envelope(links[1:])
        assert stored.get("/api/dependencies", endTs=now_ms - 3 * 86_400_000, lookback=3_600_000) == envelope([])

    # ------------------------------------------------------------------- Jaeger's v3 API

    def test_v3_trace_by_id(self, stored: Stored):
        for trace_id in stored.traces:
            assert stored.get(f"/api/v3/traces/{trace_id}") == stored.resource_spans(trace_id), trace_id
        root = stored.trace_id("root")
        window = {"startTime": rfc3339(stored.ns(-60 * SECOND)), "endTime": rfc3339(stored.ns(60 * SECOND))}
        assert stored.get(f"/api/v3/traces/{root}", **window) == stored.resource_spans(root)

    def test_v3_trace_literals(self, stored: Stored):
        """A few values of the root trace checked literally, independently of otlp_traces above."""
        groups = stored.get(f"/api/v3/traces/{stored.trace_id('root')}")["result"]["resourceSpans"]
        services = [next(kv["value"]["stringValue"] for kv in g["resource"]["attributes"] if kv["key"] == "service.name")
                    for g in groups]
        s = stored.service
        assert services == [s, f"{s}_inventory", f"{s}_worker"]  # in the order of their first spans
        assert [scope["scope"] for scope in groups[0]["scopeSpans"]] == [
            {"name": "e2e.scope.a", "version": "4.5.6"}, {"name": "e2e.scope.b"}]
        root = groups[0]["scopeSpans"][0]["spans"][0]
        assert (root["name"], root["kind"], root["status"]) == ("GET /checkout", 2, {"message": "payment declined", "code": 2})
        assert (root["startTimeUnixNano"], root["endTimeUnixNano"]) == (str(stored.ns(0)), str(stored.ns(2_500_000_001)))
        assert [e["name"] for e in root["events"]] == ["cache.miss", "exception", "bare"]
        assert "parentSpanId" not in root and root["links"][0]["traceId"] == f"{stored.facts['linked'].trace_id:032x}"

    def test_v3_search(self, stored: Stored):
        s = stored.service
        root, remote, limited = stored.trace_id("root"), stored.trace_id("remote_parent"), stored.trace_id("limited")
        assert stored.v3_search(**{"query.serviceName": s}) == stored.resource_spans(limited, remote, root)
        assert stored.v3_search(**{"query.service_name": s, "query.operation_name": "publish"}) == stored.resource_spans(root)
        assert stored.v3_search(**{"query.serviceName": s, "query.attributes": '{"db.system":"postgresql"}'}) == (
            stored.resource_spans(root))
        assert stored.v3_search(**{"query.serviceName": s, "query.durationMin": "2s"}) == stored.resource_spans(root)
        assert stored.v3_search(**{"query.durationMin": "900ms", "query.durationMax": "1s"}) == stored.resource_spans(
            stored.trace_id("internal"), root)
        assert stored.v3_search(**{"query.serviceName": s, "query.searchDepth": 1}) == stored.resource_spans(limited)
        window = {"query.startTimeMin": rfc3339(stored.ns(4_500_000_000)),
                  "query.startTimeMax": rfc3339(stored.ns(5_500_000_000))}
        assert stored.v3_search(**{"query.serviceName": s, **window}) == stored.resource_spans(limited)
        assert stored.v3_search(status=404, **{"query.serviceName": "nobody"}) == v3_error(404, "No traces found")

    def test_v3_trace_summaries(self, stored: Stored):
        """The search page's summaries, counted here from the OTLP JSON of the traces found: the
        root is the earliest span without a parent, an orphan's parent is not in the trace, an
        error span has status code 2, services sorted by name."""
        s = stored.service
        found = [stored.trace_id("limited"), stored.trace_id("remote_parent"), stored.trace_id("root")]
        window = {"query.startTimeMin": rfc3339(stored.ns(-SECOND)), "query.startTimeMax": rfc3339(stored.ns(7 * SECOND))}
        answer = stored.get("/api/v3/trace-summaries", **{"query.serviceName": s, **window})
        assert answer == {"summaries": [trace_summary(t, stored.otlp[t]) for t in found]}
        remote = answer["summaries"][1]
        assert (remote["orphanSpanCount"], remote["rootOperationName"]) == (1, ""), remote
        assert stored.get("/api/v3/trace-summaries", **{"query.serviceName": "nobody", **window}) == {"summaries": []}

    # ------------------------------------------------------------------- otelstore's own API

    def test_native_traces(self, stored: Stored):
        s = stored.service
        root, remote, limited = stored.trace_id("root"), stored.trace_id("remote_parent"), stored.trace_id("limited")
        assert stored.post("/api/v1/traces", {"trace_id": root}) == stored.native(root)
        window = {"start": rfc3339(stored.ns(-SECOND)), "end": rfc3339(stored.ns(7 * SECOND))}
        assert stored.post("/api/v1/traces", {"trace_id": root, **window}) == stored.native(root)
        assert stored.post("/api/v1/traces", {"service_name": s, **window}) == stored.native(limited, remote, root)
        assert stored.post("/api/v1/traces", {"service_name": s, "min_duration": "2s", **window}) == stored.native(root)
        assert stored.post("/api/v1/traces", {"service_name": s, "max_duration": "500ns", **window}) == stored.native(
            remote, root)
        assert stored.post("/api/v1/traces", {"service_name": s, "limit": 2, **window}) == stored.native(limited, remote)
        assert stored.post("/api/v1/traces", {"service_name": s, "start": rfc3339(stored.ns(4_500_000_000)),
                                              "end": rfc3339(stored.ns(5_500_000_000))}) == stored.native(limited)
        assert stored.post("/api/v1/traces", {"service_name": "nobody", **window}) == {"traces": []}

    def test_service_stats_from_the_spans(self, stored: Stored):
        """Over make_sdk_spans' seconds: every service with a span there, exact (percentiles
        interpolated as percentile_cont), of one service when asked."""
        start, end = stored.ns(-SECOND), stored.ns(7 * SECOND)
        window = {"start": rfc3339(start), "end": rfc3339(end)}
        expected = service_stats(stored.sent, start, end)
        s = stored.service
        assert [(x["service"], x["spans"], x["errors"]) for x in expected] == [
            ("", 2, 0), (s, 5, 1), (f"{s}_inventory", 1, 0), (f"{s}_worker", 1, 1)]
        answer = {"services": expected, "source": "raw", **window}
        assert stored.get("/api/v1/services/stats", **window) == answer
        worker = [x for x in expected if x["service"] == f"{s}_worker"]
        assert worker[0]["p99_ms"] == 100.0
        assert stored.get("/api/v1/services/stats", service=f"{s}_worker", **window) == {**answer, "services": worker}

    def test_service_stats_from_the_hourly_statistics(self, stored: Stored):
        """A window of 6 hours or more reads the hourly statistics: the counts are exact, over the
        whole hours the window touches; the percentiles are estimates."""
        s = stored.service
        start, end = stored.ns(-6 * HOUR - 1), stored.ns(HOUR)
        body = stored.get("/api/v1/services/stats", service=s, start=rfc3339(start), end=rfc3339(end))
        covered = (start // HOUR * HOUR, -(-end // HOUR) * HOUR)
        exact = service_stats(stored.sent, *covered)
        [mine] = [x for x in exact if x["service"] == s]
        assert (body["source"], body["start"], body["end"]) == ("hourly", rfc3339(covered[0]), rfc3339(covered[1]))
        [got] = body["services"]
        assert {k: got[k] for k in ("service", "spans", "errors", "error_rate")} == {
            "service": s, "spans": 5, "errors": 1, "error_rate": 0.2}
        estimates = [got["p50_ms"], got["p95_ms"], got["p99_ms"]]
        assert estimates == sorted(estimates) and 0 <= estimates[0] and estimates[2] <= 2500.0 * 1.1, (got, mine)

    # ------------------------------------------------------------------- the database goes away

    def test_database_down_is_503_and_back_up_is_200(self, stored: Stored):
        """The database stopped: what was answered before still comes from the cache; anything
        else is 503 in each API's error shape, quickly. Started again at the same address: the
        same requests are answered."""
        services = stored.get("/api/services")
        new = {"service": stored.service, "limit": 7}  # a search not asked before, so not cached
        stored.stop_database()
        try:
            started = time.monotonic()
            assert stored.get("/api/services") == services
            for path, params in [("/api/traces", new), (f"/api/traces/{stored.trace_id('skewed')}", {"end": 1}),
                                 ("/api/services/nobody/operations", {"prettyPrint": "false"})]:
                body = stored.get(path, status=503, **params)
                msg = body["errors"][0]["msg"]
                assert body == error_envelope(503, msg) and msg.startswith("the database is unavailable: "), body
            missing = "0123456789abcdef0123456789abcdef"  # a 404 is not cached
            for body in [stored.get(f"/api/v3/traces/{missing}", status=503),
                         stored.post("/api/v1/traces", {"service_name": "nobody"}, status=503),
                         stored.get("/api/v1/services/stats", status=503, service="nobody")]:
                message = body["error"]["message"]
                assert body == v3_error(503, message) and message.startswith("the database is unavailable: "), body
            elapsed = time.monotonic() - started
            assert elapsed < 10, f"the 503 answers took {elapsed:.1f}s"
        finally:
            stored.start_database()

        def answered() -> bool:
            r = SESSION.get(stored.query.base_url + "/api/traces", params=new, timeout=HTTP_TIMEOUT)
            return r.status_code == 200

        wait_until(answered, timeout=30, what="otelstore-query answering once the database is back",
                   on_fail=stored.query.describe)
        expected = [stored.trace_id("limited"), stored.trace_id("remote_parent"), stored.trace_id("root")]
        assert stored.search(**new) == expected
        assert stored.post("/api/v1/traces", {"service_name": "nobody"}) == {"traces": []}
        assert stored.query.alive()
