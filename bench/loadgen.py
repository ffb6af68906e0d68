"""Load for bench/run.py: OTLP trace requests made ahead of time, and a cheap gRPC sender for them.

Two ways to make the requests, both written to a load file (a 4-byte big-endian length before each
serialized ExportTraceServiceRequest):

  record_telemetrygen()   runs telemetrygen against a tiny in-process OTLP/gRPC server that keeps
                          every request it is sent, until it has the number of spans asked for.
                          (telemetrygen cannot be the live load: with --rate 0 its SDK batch span
                          processor drops most spans because it does not block on a full queue, so
                          it could not deliver a fixed number of spans.)
  realistic_requests()    our own "realistic" shape: 10 spans per trace, ~10 attributes per span,
                          8 resource attributes, 10 % of spans with events, 512 spans per request.

`python bench/loadgen.py send --target HOST:PORT --load FILE` is the sender: it reads the file,
finds where each span's start and end times are in each request, prints a "ready" line (JSON) and
waits for "go" on stdin. Then several threads send the requests over one gRPC channel, each request
stamped just before it is sent: every span's end time becomes the send time and its start time
keeps the recorded duration, so (commit time of a row - span end time) is the end-to-end lag.
Refused requests (UNAVAILABLE, RESOURCE_EXHAUSTED, ...) are sent again with the same bytes after a
backoff. At the end it prints a "done" line (JSON) with its timings and its own CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
U64 = struct.Struct("<Q")
LEN = struct.Struct(">I")

# --------------------------------------------------------------------------- load files


def write_load(path: Path, requests: list[bytes]) -> None:
    with open(path, "wb") as f:
        for r in requests:
            f.write(LEN.pack(len(r)))
            f.write(r)


def read_load(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (n,) = LEN.unpack_from(data, pos)
        pos += 4
        out.append(data[pos : pos + n])
        pos += n
    return out


def count_spans(request: bytes) -> int:
    req = ExportTraceServiceRequest.FromString(request)
    return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)


# --------------------------------------------------------------------------- span offsets


@dataclass
class SpanOffsets:
    """Where a span's fields sit in the serialized request (-1: absent)."""

    trace_id: int
    span_id: int
    parent_span_id: int
    start: int  # offset of the 8 value bytes of start_time_unix_nano
    end: int  # offset of the 8 value bytes of end_time_unix_nano
    duration: int


def span_offsets(request: bytes, parsed: ExportTraceServiceRequest | None = None) -> list[SpanOffsets]:
    """Finds each span's ids and times in the serialized request, in order.

    A span is located by its trace_id and span_id fields (field 1, 16 bytes; field 2, 8 bytes, written
    next to each other by every field-order serializer), then its fixed64 start (field 7, tag 0x39)
    and end (field 8, tag 0x41) time and parent_span_id (field 4) are searched from there on.
    """
    req = parsed or ExportTraceServiceRequest.FromString(request)
    out: list[SpanOffsets] = []
    pos = 0
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for sp in ss.spans:
                head = b"\x0a\x10" + sp.trace_id + b"\x12\x08" + sp.span_id
                at = request.find(head, pos)
                if at < 0:
                    raise ValueError(f"span {sp.span_id.hex()} not found in the serialized request")
                start = request.find(b"\x39" + U64.pack(sp.start_time_unix_nano), at)
                end = request.find(b"\x41" + U64.pack(sp.end_time_unix_nano), at)
                parent = -1
                if sp.parent_span_id:
                    parent = request.find(b"\x22\x08" + sp.parent_span_id, at)
                if start < 0 or end < 0 or (sp.parent_span_id and parent < 0):
                    raise ValueError(f"fields of span {sp.span_id.hex()} not found in the serialized request")
                out.append(
                    SpanOffsets(
                        trace_id=at + 2,
                        span_id=at + 20,
                        parent_span_id=parent + 2 if parent >= 0 else -1,
                        start=start + 1,
                        end=end + 1,
                        duration=sp.end_time_unix_nano - sp.start_time_unix_nano,
                    )
                )
                pos = max(start, end, parent) + 9
    return out


# --------------------------------------------------------------------------- telemetrygen, recorded


def record_telemetrygen(
    telemetrygen: Path, spans: int, port: int, log_path: Path, workers: int = 4, rate: float = 100_000,
    timeout: float = 900,
) -> tuple[list[bytes], list[str]]:
    """Runs telemetrygen against an in-process OTLP/gRPC server until it has received at least
    `spans` spans (runs again for what its SDK dropped), and returns exactly `spans` of them (the
    last request trimmed) with the command lines used."""
    import subprocess

    import grpc

    received: list[bytes] = []
    lock = threading.Lock()

    def export(request: bytes, context) -> bytes:
        with lock:
            received.append(request)
        return b""  # an empty ExportTraceServiceResponse

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[("grpc.max_receive_message_length", 64 << 20)],
    )
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "opentelemetry.proto.collector.trace.v1.TraceService",
                {"Export": grpc.unary_unary_rpc_method_handler(export)},
            )
        ]
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    commands: list[str] = []
    deadline = time.monotonic() + timeout
    have = 0
    try:
        with open(log_path, "ab") as log:
            while have < spans:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"telemetrygen delivered only {have} of {spans} spans in {timeout:.0f}s")
                missing = spans - have
                # 2 spans per trace (a parent and --child-spans 1); --traces counts per worker.
                traces = max(1, -(-missing // (2 * workers)))
                cmd = [
                    str(telemetrygen), "traces",
                    "--otlp-endpoint", f"127.0.0.1:{port}", "--otlp-insecure",
                    "--rate", f"{rate:g}", "--workers", str(workers), "--traces", str(traces),
                ]
                commands.append(" ".join(cmd[1:]))
                subprocess.run(
                    cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, check=True,
                    timeout=max(10.0, deadline - time.monotonic()),
                )
                with lock:
                    batch = list(received)
                have = sum(count_spans(r) for r in batch)
    finally:
        server.stop(grace=None)
    return trim(batch, spans), commands


def trim(requests: list[bytes], spans: int) -> list[bytes]:
    """The first requests holding exactly `spans` spans; the last one re-serialized with fewer."""
    out, have = [], 0
    for r in requests:
        n = count_spans(r)
        if have + n <= spans:
            out.append(r)
            have += n
        else:
            req = ExportTraceServiceRequest.FromString(r)
            keep = spans - have
            for rs in req.resource_spans:
                for ss in rs.scope_spans:
                    k = min(keep, len(ss.spans))
                    del ss.spans[k:]
                    keep -= k
            out.append(req.SerializeToString())
            have = spans
        if have == spans:
            break
    return out


# --------------------------------------------------------------------------- the realistic shape

SPANS_PER_REQUEST = 512  # the OpenTelemetry SDKs' default batch (max_export_batch_size)
SPANS_PER_TRACE = 10
EVENT_SHARE = 0.10
ERROR_SHARE = 0.03

SERVICES = ["checkout", "cart", "frontend", "payment", "shipping", "inventory", "auth", "search"]
ROUTES = ["/api/v1/orders/{id}", "/api/v1/cart", "/api/v1/products", "/api/v1/users/{id}/profile",
          "/api/v1/search", "/healthz", "/api/v1/payments/{id}/capture", "/api/v1/shipments"]
METHODS = ["GET", "GET", "GET", "POST", "PUT", "DELETE"]
TABLES = ["orders", "order_items", "customers", "products", "inventory", "payments"]
USER_AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "okhttp/4.12.0",
    "python-requests/2.32.3",
]
STACK = "".join(
    f"  at com.example.shop.{m}(Service.java:{n})\n"
    for m, n in [("OrderService.load", 118), ("OrderController.get", 52), ("Dispatcher.invoke", 311),
                 ("HttpHandler.handle", 90), ("Server.run", 1203), ("Worker.loop", 77)]
)


def _kv(key: str, value) -> KeyValue:
    if isinstance(value, bool):
        v = AnyValue(bool_value=value)
    elif isinstance(value, int):
        v = AnyValue(int_value=value)
    elif isinstance(value, float):
        v = AnyValue(double_value=value)
    else:
        v = AnyValue(string_value=value)
    return KeyValue(key=key, value=v)


def _resource(rng: random.Random, service: str) -> Resource:
    attrs = {
        "service.name": service,
        "service.namespace": "shop",
        "service.version": f"1.{rng.randrange(40)}.{rng.randrange(10)}",
        "service.instance.id": "%08x-%04x-4%03x-a%03x-%012x" % (
            rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(12), rng.getrandbits(12), rng.getrandbits(48)),
        "deployment.environment.name": "production",
        "host.name": f"ip-10-0-{rng.randrange(256)}-{rng.randrange(256)}.eu-west-1.compute.internal",
        "host.arch": "amd64",
        "telemetry.sdk.language": "java",
    }
    return Resource(attributes=[_kv(k, v) for k, v in attrs.items()])


def _server_attrs(rng: random.Random, route: str, status: int) -> dict:
    path = route.replace("{id}", str(rng.randrange(1, 10**7)))
    return {
        "http.request.method": rng.choice(METHODS),
        "http.route": route,
        "url.path": path,
        "url.scheme": "https",
        "server.address": "shop.example.com",
        "server.port": 443,
        "client.address": f"198.51.100.{rng.randrange(256)}",
        "user_agent.original": rng.choice(USER_AGENTS),
        "http.response.status_code": status,
        "network.protocol.version": "1.1",
    }


def _db_attrs(rng: random.Random) -> dict:
    table = rng.choice(TABLES)
    return {
        "db.system.name": "postgresql",
        "db.namespace": "shop",
        "db.operation.name": "SELECT",
        "db.collection.name": table,
        "db.query.text": f"SELECT * FROM {table} WHERE id = $1 AND tenant_id = $2 LIMIT 50",
        "server.address": "db-primary.shop.internal",
        "server.port": 5432,
        "network.peer.address": f"10.0.3.{rng.randrange(256)}",
        "network.peer.port": 5432,
        "db.response.returned_rows": rng.randrange(50),
    }


def _internal_attrs(rng: random.Random) -> dict:
    return {
        "code.function.name": rng.choice(["loadCart", "priceItems", "applyDiscounts", "reserveStock"]),
        "code.file.path": "src/main/java/com/example/shop/CartService.java",
        "code.line.number": rng.randrange(20, 900),
        "app.user.id": f"user-{rng.randrange(10**6)}",
        "app.cart.items": rng.randrange(1, 20),
        "app.cart.total": round(rng.uniform(1, 500), 2),
        "app.feature.new_checkout": rng.random() < 0.5,
        "app.region": rng.choice(["eu-west-1", "us-east-1", "ap-south-1"]),
        "thread.id": rng.randrange(1, 400),
        "thread.name": f"http-nio-8080-exec-{rng.randrange(1, 200)}",
    }


def _events(rng: random.Random, base: int, error: bool) -> list[Span.Event]:
    if error:
        return [Span.Event(
            time_unix_nano=base + rng.randrange(10**6),
            name="exception",
            attributes=[
                _kv("exception.type", "java.sql.SQLTransientConnectionException"),
                _kv("exception.message", "HikariPool-1 - Connection is not available, request timed out after 3000ms."),
                _kv("exception.stacktrace", STACK),
                _kv("exception.escaped", False),
            ],
        )]
    return [
        Span.Event(
            time_unix_nano=base + rng.randrange(10**6),
            name=rng.choice(["cache.miss", "retry", "message.sent", "feature_flag.evaluation"]),
            attributes=[_kv("app.cache.key", f"cart:{rng.randrange(10**6)}"), _kv("app.attempt", rng.randrange(1, 4))],
        )
        for _ in range(rng.randrange(1, 3))
    ]


def _template(rng: random.Random, spans: int, service: str | None = None,
              spans_per_trace: int = SPANS_PER_TRACE) -> bytes:
    """One request of `spans` spans of one service (`service`, else a random one of SERVICES), with
    random ids (replaced per copy)."""
    service = service or rng.choice(SERVICES)
    base = time.time_ns()
    out: list[Span] = []
    while len(out) < spans:
        trace_id = rng.randbytes(16)
        n = min(spans_per_trace, spans - len(out))
        root_id = rng.randbytes(8)
        start = base + rng.randrange(10**9)
        for i in range(n):
            error = rng.random() < ERROR_SHARE
            span_start = start + i * 1_000_000 + rng.randrange(1000)
            duration = rng.randrange(200_000, 80_000_000) if i else rng.randrange(20_000_000, 300_000_000)
            if i == 0:
                route = rng.choice(ROUTES)
                name, kind = f"{rng.choice(METHODS)} {route}", Span.SPAN_KIND_SERVER
                attrs = _server_attrs(rng, route, 500 if error else 200)
            elif i % 3 == 1:
                name, kind, attrs = f"SELECT shop.{rng.choice(TABLES)}", Span.SPAN_KIND_CLIENT, _db_attrs(rng)
            else:
                name, kind, attrs = rng.choice(["CartService.load", "PriceService.price", "render"]), Span.SPAN_KIND_INTERNAL, _internal_attrs(rng)
            span = Span(
                trace_id=trace_id,
                span_id=root_id if i == 0 else rng.randbytes(8),
                parent_span_id=b"" if i == 0 else root_id,
                name=name,
                kind=kind,
                start_time_unix_nano=span_start,
                end_time_unix_nano=span_start + duration,
                attributes=[_kv(k, v) for k, v in attrs.items()],
                status=Status(code=Status.STATUS_CODE_ERROR, message="internal error") if error else Status(),
            )
            # Error spans carry an exception event; other spans get events so that EVENT_SHARE of
            # all spans have some.
            if error or rng.random() < (EVENT_SHARE - ERROR_SHARE) / (1 - ERROR_SHARE):
                span.events.extend(_events(rng, span_start, error))
            out.append(span)
    req = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=_resource(rng, service),
                scope_spans=[
                    ScopeSpans(
                        scope=InstrumentationScope(name="io.opentelemetry.spring-webmvc-6.0", version="2.6.0-alpha"),
                        spans=out,
                    )
                ],
                schema_url="https://opentelemetry.io/schemas/1.26.0",
            )
        ]
    )
    return req.SerializeToString()


def realistic_requests(spans: int, seed: int = 1, templates: int = 16, services: list[str] | None = None,
                       spans_per_trace: int = SPANS_PER_TRACE) -> list[bytes]:
    """`spans` spans in requests of SPANS_PER_REQUEST: copies of a few template requests whose trace
    and span ids are replaced by fresh random ones, so every span (and request) is unique. With
    `services`, template k is of services[k % len(services)] (at least one template each) instead of
    a random one of SERVICES."""
    rng = random.Random(seed)
    made = []
    if services:
        templates = max(templates, len(services))
    for k in range(templates):  # 16 x 512 different spans; ids, and send times, differ per copy
        raw = _template(rng, SPANS_PER_REQUEST, services[k % len(services)] if services else None, spans_per_trace)
        made.append((raw, span_offsets(raw)))
    out: list[bytes] = []
    left = spans
    k = 0
    while left > 0:
        raw, offsets = made[k % len(made)]
        k += 1
        if left < len(offsets):
            raw = trim([raw], left)[0]
            offsets = span_offsets(raw)
        buf = bytearray(raw)
        ids = os.urandom(16 * len(offsets) + 8 * len(offsets))
        new_span_id: dict[bytes, bytes] = {}  # template span id -> new span id
        new_trace_id: dict[bytes, bytes] = {}
        j = 16 * len(offsets)
        for i, o in enumerate(offsets):
            old_tid = raw[o.trace_id : o.trace_id + 16]
            tid = new_trace_id.setdefault(old_tid, ids[16 * i : 16 * i + 16])
            buf[o.trace_id : o.trace_id + 16] = tid
            sid = ids[j : j + 8]
            j += 8
            new_span_id[raw[o.span_id : o.span_id + 8]] = sid
            buf[o.span_id : o.span_id + 8] = sid
        for o in offsets:
            if o.parent_span_id >= 0:
                buf[o.parent_span_id : o.parent_span_id + 8] = new_span_id[raw[o.parent_span_id : o.parent_span_id + 8]]
        out.append(bytes(buf))
        left -= len(offsets)
    return out


def describe(requests: list[bytes], sample: int = 50) -> dict:
    """Averages over (a sample of) the requests, for the report."""
    step = max(1, len(requests) // sample)
    spans = span_attrs = res_attrs = with_events = 0
    for r in requests[::step]:
        req = ExportTraceServiceRequest.FromString(r)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    spans += 1
                    span_attrs += len(sp.attributes)
                    res_attrs += len(rs.resource.attributes)
                    with_events += bool(sp.events)
    total_spans = sum(count_spans(r) for r in requests)
    total_bytes = sum(len(r) for r in requests)
    return {
        "requests": len(requests),
        "spans": total_spans,
        "spans_per_request": total_spans / max(1, len(requests)),
        "otlp_bytes_per_span": total_bytes / max(1, total_spans),
        "span_attributes": span_attrs / max(1, spans),
        "resource_attributes": res_attrs / max(1, spans),
        "spans_with_events": with_events / max(1, spans),
    }


# --------------------------------------------------------------------------- the sender

RETRY_CODES = {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "ABORTED", "DEADLINE_EXCEEDED", "CANCELLED"}


def spread_offset(i: int, n: int, spread: float, oldest_first: bool) -> int:
    """How far back (ns) request i of n's spans end with `--spread SECONDS`: spread evenly over the
    window, in golden-ratio steps, so that any part of the load covers all of it, or with
    `--oldest-first` from the start of the window to its end in the order sent, as spans reach a
    collector (what time-local storage, BRIN or ClickHouse parts, sees in production)."""
    share = 1.0 - i / n if oldest_first else (i * 0.6180339887498949) % 1.0
    return int(spread * 1e9 * share)


def send(target: str, load: Path, concurrency: int, call_timeout: float, give_up: float, spread: float = 0.0,
         oldest_first: bool = False) -> int:
    import grpc

    requests = read_load(load)
    prepared = []
    spans = 0
    for r in requests:
        offs = span_offsets(r)
        spans += len(offs)
        prepared.append((r, [(o.start, o.end, o.duration) for o in offs]))
    del requests

    channel = grpc.insecure_channel(
        target,
        options=[("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)],
    )
    grpc.channel_ready_future(channel).result(timeout=30)
    export = channel.unary_unary(EXPORT_METHOD)  # no serializers: bytes in, bytes out

    print(json.dumps({"event": "ready", "requests": len(prepared), "spans": spans}), flush=True)
    if sys.stdin.readline().strip() != "go":
        return 2

    next_index = iter(range(len(prepared)))
    index_lock = threading.Lock()
    stats = {"retries": 0, "errors": []}
    stats_lock = threading.Lock()
    give_up_at = time.monotonic() + give_up

    def worker() -> None:
        pack = U64.pack_into
        while True:
            with index_lock:
                i = next(next_index, None)
            if i is None:
                return
            raw, times = prepared[i]
            buf = bytearray(raw)
            now = time.time_ns() - (spread_offset(i, len(prepared), spread, oldest_first) if spread else 0)
            for start, end, duration in times:
                pack(buf, end, now)
                pack(buf, start, now - duration)
            payload = bytes(buf)
            backoff = 0.05
            while True:
                try:
                    export(payload, timeout=call_timeout)
                    break
                except grpc.RpcError as e:
                    code = e.code().name if e.code() else "UNKNOWN"
                    if code not in RETRY_CODES or time.monotonic() + backoff > give_up_at:
                        with stats_lock:
                            stats["errors"].append(f"request {i}: {code}: {e.details()}")
                        return
                    with stats_lock:
                        stats["retries"] += 1
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)

    cpu0 = os.times()
    t0 = time.time()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t1 = time.time()
    cpu1 = os.times()
    channel.close()
    print(
        json.dumps(
            {
                "event": "done",
                "start": t0,
                "end": t1,
                "requests": len(prepared),
                "spans": spans,
                "retries": stats["retries"],
                "errors": stats["errors"][:10],
                "cpu_seconds": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
            }
        ),
        flush=True,
    )
    return 1 if stats["errors"] else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("send", help="send a load file to an OTLP/gRPC endpoint")
    s.add_argument("--target", required=True)
    s.add_argument("--load", required=True, type=Path)
    s.add_argument("--concurrency", type=int, default=4)
    s.add_argument("--call-timeout", type=float, default=60.0)
    s.add_argument("--give-up", type=float, default=600.0, help="stop retrying after this many seconds")
    s.add_argument("--spread", type=float, default=0.0,
                   help="end each request's spans up to this many seconds before it is sent, spread "
                        "evenly (bench/query.py: a day of spans); default 0: at the send time")
    s.add_argument("--oldest-first", action="store_true",
                   help="with --spread: the requests' times go from the oldest to the newest in the order "
                        "sent, as spans reach a collector; default: interleaved, any part covering the window")
    args = p.parse_args()
    if args.command == "send":
        return send(args.target, args.load, args.concurrency, args.call_timeout, args.give_up, args.spread,
                    args.oldest_first)
    return 2


if __name__ == "__main__":
    sys.exit(main())
