"""A steady OTLP/HTTP (protobuf) trace load that records what the collector acknowledged.

    load = OtlpLoad(collector.traces_url, service="faults", rate=20, spans_per_request=200)
    load.start()
    ...                      # break something
    load.finish(timeout=60)  # stop making new requests, retry the refused ones until all are in
    load.acked_span_ids()    # every span of every request answered with HTTP 200

Each request is an ExportTraceServiceRequest of `spans_per_request` spans with span ids unique to
this load (a random 3-byte prefix and a 5-byte sequence number). Requests are issued open-loop at
`rate` per second by `concurrency` sender threads. A request answered 200 is acknowledged; any other
answer (429, 503, 4xx, 5xx) or a connection error or timeout is not, and the request is sent again
later with the same bytes, as an OTLP client does (backing off, and honouring Retry-After up to a
cap), until it is acknowledged or finish() gives up. A request that timed out may still have been
taken in, so its spans can be stored twice: that duplicate is the client's, and `retried_request_ids`
lets a test tell those apart.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

CONTENT_TYPE = "application/x-protobuf"
SPANS_PER_TRACE = 10


def build_request(service: str, span_ids: list[bytes], request_no: int, pad: int = 0) -> bytes:
    """One ExportTraceServiceRequest: the given span ids, SPANS_PER_TRACE spans per trace, each span
    carrying an attribute of `pad` bytes (to make requests as large as a test needs)."""
    now = time.time_ns()
    padding = "x" * pad
    spans = []
    trace_id = b""
    for i, span_id in enumerate(span_ids):
        if i % SPANS_PER_TRACE == 0:
            trace_id = secrets.token_bytes(16)
            parent = b""
        attrs = [
            KeyValue(key="load.request", value=AnyValue(int_value=request_no)),
            KeyValue(key="load.index", value=AnyValue(int_value=i)),
        ]
        if pad:
            attrs.append(KeyValue(key="load.pad", value=AnyValue(string_value=padding)))
        spans.append(
            Span(
                trace_id=trace_id,
                span_id=span_id,
                parent_span_id=parent,
                name=f"load-{request_no}-{i}",
                kind=Span.SPAN_KIND_SERVER if not parent else Span.SPAN_KIND_INTERNAL,
                start_time_unix_nano=now + i * 1_000,
                end_time_unix_nano=now + i * 1_000 + 500_000,
                attributes=attrs,
            )
        )
        if not parent:
            parent = span_id
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))]),
                scope_spans=[ScopeSpans(scope=InstrumentationScope(name="e2e.load"), spans=spans)],
            )
        ]
    ).SerializeToString()


@dataclass
class LoadRequest:
    no: int
    body: bytes
    span_ids: list[bytes]
    attempts: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, HTTP status; 0: no answer)
    acked_at: float | None = None


class OtlpLoad:
    def __init__(
        self,
        url: str,
        service: str,
        *,
        rate: float = 20.0,
        spans_per_request: int = 200,
        pad: int = 0,
        concurrency: int = 4,
        timeout: float = 15.0,
        retry_initial: float = 0.2,
        retry_max: float = 2.0,
    ) -> None:
        self.url = url
        self.service = service
        self.rate = rate
        self.spans_per_request = spans_per_request
        self.pad = pad
        self.concurrency = concurrency
        self.timeout = timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max

        self._prefix = secrets.token_bytes(3)
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._requests: list[LoadRequest] = []
        self._work: queue.Queue[LoadRequest] = queue.Queue()
        self._retry_heap: list[tuple[float, int, LoadRequest]] = []
        self._generating = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started_at: float | None = None
        self.generation_ended_at: float | None = None
        self.finished_at: float | None = None
        self.errors: Counter[str] = Counter()  # client-side exceptions by type

    # ------------------------------------------------------------------ control

    def start(self) -> "OtlpLoad":
        self.started_at = time.monotonic()
        self._generating.set()
        self._threads = [threading.Thread(target=self._generate, name="otlp-load-gen", daemon=True)]
        self._threads += [
            threading.Thread(target=self._send_loop, name=f"otlp-load-send-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for t in self._threads:
            t.start()
        return self

    def stop_generating(self) -> None:
        """No new requests from now on; refused ones go on being retried."""
        if self._generating.is_set():
            self._generating.clear()
            self.generation_ended_at = time.monotonic()

    def finish(self, timeout: float) -> bool:
        """Stops generating, then waits up to `timeout` seconds until every request is acknowledged.
        Returns whether they all were. The sender threads are stopped either way."""
        self.stop_generating()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.unacked_count() > 0:
            time.sleep(0.05)
        done = self.unacked_count() == 0
        self.close()
        return done

    def close(self) -> None:
        self.stop_generating()
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)
        self.finished_at = time.monotonic()

    def send_one(self) -> LoadRequest:
        """Makes one more request and queues it (also when not generating), for a test that wants
        requests at moments of its own choosing."""
        req = self._new_request()
        self._work.put(req)
        return req

    # ------------------------------------------------------------------ figures

    def requests(self) -> list[LoadRequest]:
        with self._lock:
            return list(self._requests)

    def sent_span_ids(self) -> set[bytes]:
        return {s for r in self.requests() for s in r.span_ids}

    def acked_span_ids(self) -> set[bytes]:
        return {s for r in self.requests() if r.acked_at is not None for s in r.span_ids}

    def unacked_count(self) -> int:
        return sum(1 for r in self.requests() if r.acked_at is None)

    def retried_request_nos(self) -> set[int]:
        """Requests sent more than once (their spans may legitimately be stored twice if an attempt
        that got no answer had in fact been taken in)."""
        return {r.no for r in self.requests() if len(r.attempts) > 1}

    def statuses(self, since: float | None = None, until: float | None = None) -> Counter[int]:
        """HTTP statuses of all attempts in [since, until) (monotonic times); 0 means no answer."""
        c: Counter[int] = Counter()
        for r in self.requests():
            for t, status in list(r.attempts):
                if (since is None or t >= since) and (until is None or t < until):
                    c[status] += 1
        return c

    def summary(self) -> dict:
        reqs = self.requests()
        statuses = self.statuses()
        return {
            "requests": len(reqs),
            "requests_acked": sum(1 for r in reqs if r.acked_at is not None),
            "attempts": sum(len(r.attempts) for r in reqs),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "client_errors": dict(self.errors),
            "spans_sent": sum(len(r.span_ids) for r in reqs),
            "spans_acked": sum(len(r.span_ids) for r in reqs if r.acked_at is not None),
        }

    # ------------------------------------------------------------------ internals

    def _new_request(self) -> LoadRequest:
        no = next(self._seq)
        first = no * self.spans_per_request
        span_ids = [self._prefix + (first + i).to_bytes(5, "big") for i in range(self.spans_per_request)]
        req = LoadRequest(no=no, body=build_request(self.service, span_ids, no, self.pad), span_ids=span_ids)
        with self._lock:
            self._requests.append(req)
        return req

    def _generate(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            # Due retries go back to the senders.
            with self._lock:
                while self._retry_heap and self._retry_heap[0][0] <= now:
                    _, _, req = heapq.heappop(self._retry_heap)
                    self._work.put(req)
            if self._generating.is_set() and now >= next_at:
                self._work.put(self._new_request())
                next_at += interval
                if next_at < now - 1.0:  # far behind (a slow machine): do not burst to catch up
                    next_at = now
                continue
            time.sleep(min(0.01, max(0.0, next_at - now)) if self._generating.is_set() else 0.01)

    def _send_loop(self) -> None:
        session = requests.Session()
        session.trust_env = False  # loopback only: never through a proxy from the environment
        while not self._stop.is_set():
            try:
                req = self._work.get(timeout=0.05)
            except queue.Empty:
                continue
            status, retry_after = self._post(session, req.body)
            now = time.monotonic()
            with self._lock:
                req.attempts.append((now, status))
                if status == 200:
                    req.acked_at = now
                    continue
                n = len(req.attempts)
                delay = min(self.retry_max, self.retry_initial * 2 ** (n - 1))
                if retry_after is not None:
                    delay = min(self.retry_max, max(delay, retry_after))
                heapq.heappush(self._retry_heap, (now + delay, req.no, req))
        session.close()

    def _post(self, session: requests.Session, body: bytes) -> tuple[int, float | None]:
        try:
            r = session.post(
                self.url, data=body, headers={"Content-Type": CONTENT_TYPE}, timeout=(5.0, self.timeout)
            )
        except requests.RequestException as e:
            with self._lock:
                self.errors[type(e).__name__] += 1
            return 0, None
        retry_after = None
        if r.headers.get("Retry-After", "").isdigit():
            retry_after = float(r.headers["Retry-After"])
        return r.status_code, retry_after
