"""What the end-to-end tests send: spans, log records and metric points from the Python SDK (its real
OTLP exporters, over gRPC or HTTP), and raw OTLP requests for what the SDK never sends.

Shared by both backends' tests (tests/e2e for PostgreSQL, tests/clickhouse for ClickHouse), so that
both are held to the same input; each suite derives its own expected rows from the requests sent
(the SDK exporters are wrapped to record them, encoded with the SDK's own OTLP encoders).

Nothing here knows a database: a `collector` argument is anything with the endpoints of
harness.Collector (grpc_endpoint, traces_url, logs_url, metrics_url).
"""

from __future__ import annotations

import logging
import math
import secrets
import time
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import requests
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as PbLogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler, ReadableLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)


def kv(key: str, **value) -> KeyValue:
    """An OTLP attribute: kv("n", int_value=1)."""
    return KeyValue(key=key, value=AnyValue(**value))


def http_session() -> requests.Session:
    """A session for the SDK's OTLP/HTTP exporters that ignores proxies from the environment."""
    session = requests.Session()
    session.trust_env = False
    return session


# --------------------------------------------------------------------------- reading requests back

OTLP_LEVELS = {  # the repeated fields from a request down to its items
    "traces": ("resource_spans", "scope_spans", "spans"),
    "logs": ("resource_logs", "scope_logs", "log_records"),
    "metrics": ("resource_metrics", "scope_metrics", "metrics"),
}


def otlp_items(requests: Iterable, signal: str) -> Iterator[tuple]:
    """(resource group, scope group, item) for each span, log record or metric of recorded OTLP
    requests of `signal`, in order: what each suite derives its expected rows from."""
    resources, scopes, items = OTLP_LEVELS[signal]
    for req in requests:
        for rg in getattr(req, resources):
            for sg in getattr(rg, scopes):
                for item in getattr(sg, items):
                    yield rg, sg, item


def metric_points(requests: Iterable) -> Iterator[tuple]:
    """(resource group, scope group, metric, its type ("gauge", "sum", "histogram",
    "exponential_histogram" or "summary"), its data, point) for each data point of the requests."""
    for rm, sm, m in otlp_items(requests, "metrics"):
        kind = m.WhichOneof("data")
        data = getattr(m, kind)
        for pt in data.data_points:
            yield rm, sm, m, kind, data, pt


# --------------------------------------------------------------------------- spans

# Resource attributes: one of each kind an OTLP resource commonly carries.
def sdk_resource(service: str) -> Resource:
    return Resource(
        {
            "service.name": service,
            "service.version": "1.2.3-e2e",
            "res.bool": True,
            "res.int": 12345,
            "res.float": 0.75,
            "res.strs": ["x", "y"],
            "res.ints": [10, 20, 30],
        },
        schema_url="https://opentelemetry.io/schemas/1.26.0",
    )


SCOPE_ATTRS = {"scope.str": "s", "scope.int": 3, "scope.bool": False, "scope.float": 2.25, "scope.ints": [4, 5]}

# Every kind of attribute value the Python SDK sends (each suite spells out by hand how its backend
# stores them).
SPAN_ATTRS = {
    "str": "héllo wörld ✓",
    "str.empty": "",
    "bool.true": True,
    "bool.false": False,
    "int": 42,
    "int.negative": -7,
    "int.max": 2**63 - 1,
    "int.min": -(2**63),
    "float": 3.25,
    "float.integral": 1.0,
    "float.tiny": 2.5e-7,
    "float.negative": -0.1,
    "float.nan": float("nan"),
    "float.inf": float("inf"),
    "float.neginf": float("-inf"),
    "strs": ["a", "b", ""],
    "ints": [1, -2, 3],
    "floats": [0.5, 2.0],
    "bools": [True, False],
    "empty.list": [],
    "bytes": b"\x00\x01\xfe\xff",
    "none": None,
    "map": {"k": "v", "n": 1, "$ref": "x", "nested": {"deep": [1, "two"]}},
    "nested.list": [[1, 2], ["x"]],
    "mixed.list": ["a", 1, 2.5, True, None],
}


def random_context(remote: bool, trace_state: TraceState | None = None) -> SpanContext:
    return SpanContext(
        trace_id=int.from_bytes(secrets.token_bytes(16), "big") | 1,
        span_id=int.from_bytes(secrets.token_bytes(8), "big") | 1,
        is_remote=remote,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=trace_state or TraceState(),
    )


def make_sdk_spans(service: str) -> tuple[list[ReadableSpan], dict[str, Any]]:
    """Builds the spans (without exporting them) and returns them with facts for literal checks."""
    # A recent whole second, plus 123_456_789 ns: the last three digits are below timestamptz's
    # microsecond resolution, and 789 would round (not truncate) upwards.
    base = (time.time_ns() // 10**9 - 60) * 10**9 + 123_456_789

    mem1, mem2, mem3 = InMemorySpanExporter(), InMemorySpanExporter(), InMemorySpanExporter()
    p1 = TracerProvider(resource=sdk_resource(service))
    p1.add_span_processor(SimpleSpanProcessor(mem1))
    # A second resource in the same request, without service.name.
    p2 = TracerProvider(resource=Resource({"host.name": "e2e-host", "e2e.service": service}))
    p2.add_span_processor(SimpleSpanProcessor(mem2))
    # Tight limits, to make the SDK drop attributes, events and links and report the counts.
    p3 = TracerProvider(
        resource=Resource({"service.name": service, "limits": True}),
        span_limits=SpanLimits(
            max_span_attributes=3, max_events=2, max_links=1,
            max_event_attributes=1, max_link_attributes=1,
        ),
    )
    p3.add_span_processor(SimpleSpanProcessor(mem3))

    tracer_a = p1.get_tracer("e2e.scope.a", "4.5.6", schema_url="https://example.com/scope/1.0", attributes=SCOPE_ATTRS)
    tracer_b = p1.get_tracer("e2e.scope.b")
    tracer_c = p2.get_tracer("e2e.scope.c", "0.0.1")
    tracer_d = p3.get_tracer("e2e.scope.d")

    linked = random_context(remote=True)
    root = tracer_a.start_span(
        "GET /checkout",
        kind=SpanKind.SERVER,
        attributes=SPAN_ATTRS,
        links=[Link(linked, {"link.str": "l", "link.int": 5, "link.float": 1.5, "link.bools": [True, False]})],
        start_time=base,
    )
    root.add_event("cache.miss", {"key": "user:1", "hits": 0, "ratio": 0.5, "ok": False, "tags": ["a", "b"]}, timestamp=base + 100_001)
    root.add_event("exception", {"exception.type": "ValueError", "exception.message": "boom"}, timestamp=base + 200_002)
    root.add_event("bare", timestamp=base + 300_003)
    root.set_status(Status(StatusCode.ERROR, "payment declined"))

    root_ctx = set_span_in_context(root)
    child = tracer_a.start_span("SELECT orders", context=root_ctx, kind=SpanKind.CLIENT,
                                attributes={"db.system": "postgresql", "db.rows": 3}, start_time=base + 1_000_999)
    child.set_status(Status(StatusCode.OK))
    child.end(end_time=base + 1_000_999)  # zero duration

    producer = tracer_b.start_span("publish", context=set_span_in_context(child), kind=SpanKind.PRODUCER,
                                   start_time=base + 1_500_000_000)
    producer.end(end_time=base + 1_500_000_000 + 987_654_321)

    # Continues a trace from another process, whose context carries a trace state.
    remote_parent = random_context(remote=True, trace_state=TraceState([("vendor", "abc"), ("other", "1")]))
    consumer = tracer_b.start_span("consume", context=set_span_in_context(NonRecordingSpan(remote_parent)),
                                   kind=SpanKind.CONSUMER, links=[Link(producer.get_span_context())],
                                   start_time=base + 3_000_000_555)
    consumer.end(end_time=base + 3_000_000_556)  # 1 ns

    internal = tracer_c.start_span("housekeeping", kind=SpanKind.INTERNAL, start_time=base + 3_999_999_999)
    internal.end(end_time=base + 4_999_999_999)

    # end before start, as a client with a bad clock may send: stored as a negative duration.
    skewed = tracer_c.start_span("skewed clock", kind=SpanKind.INTERNAL, start_time=base + 6_000_000_000)
    skewed.end(end_time=base + 6_000_000_000 - 1_500)

    limited = tracer_d.start_span(
        "limited",
        attributes={"a1": 1, "a2": 2, "a3": 3, "a4": 4, "a5": 5},
        links=[Link(random_context(remote=False), {"x": 1, "y": 2}),
               Link(random_context(remote=True), {"x": 3, "y": 4})],
        start_time=base + 5_000_000_005,
    )
    for i in range(3):
        limited.add_event(f"e{i}", {"i": i, "j": -i}, timestamp=base + 5_000_000_005 + i)
    limited.end(end_time=base + 5_000_001_005)

    root.end(end_time=base + 2_500_000_001)

    spans = list(mem1.get_finished_spans()) + list(mem2.get_finished_spans()) + list(mem3.get_finished_spans())
    for p in (p1, p2, p3):
        p.shutdown()
    facts = {
        "base": base,
        "root": root.get_span_context(),
        "child": child.get_span_context(),
        "producer": producer.get_span_context(),
        "consumer": consumer.get_span_context(),
        "internal": internal.get_span_context(),
        "skewed": skewed.get_span_context(),
        "limited": limited.get_span_context(),
        "linked": linked,
        "remote_parent": remote_parent,
    }
    return spans, facts


def downstream_spans(facts: dict, service: str) -> list[ReadableSpan]:
    """Spans of two other services continuing make_sdk_spans' trace: a Server span under its
    Client span (an inventory service) and a failed Consumer span under its Producer span (a
    worker), so that the dependency views have calls between services to find."""
    def provider(name):
        mem = InMemorySpanExporter()
        p = TracerProvider(resource=Resource({"service.name": name}))
        p.add_span_processor(SimpleSpanProcessor(mem))
        return p, mem

    base = facts["base"]
    (inv, inv_mem), (worker, worker_mem) = provider(f"{service}_inventory"), provider(f"{service}_worker")
    served = inv.get_tracer("e2e.downstream").start_span(
        "GET /stock", context=set_span_in_context(NonRecordingSpan(facts["child"])), kind=SpanKind.SERVER,
        start_time=base + 1_100_000)
    served.end(end_time=base + 1_900_000)
    consumed = worker.get_tracer("e2e.downstream").start_span(
        "process", context=set_span_in_context(NonRecordingSpan(facts["producer"])), kind=SpanKind.CONSUMER,
        start_time=base + 2_600_000_000)
    consumed.set_status(Status(StatusCode.ERROR, "poison message"))
    consumed.end(end_time=base + 2_700_000_000)
    spans = [*inv_mem.get_finished_spans(), *worker_mem.get_finished_spans()]
    for p in (inv, worker):
        p.shutdown()
    return spans


def otlp_exporter(protocol: str, collector):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=collector.grpc_endpoint, insecure=True, timeout=15)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=collector.traces_url, timeout=15, session=http_session())


def export_spans(protocol: str, collector, *batches: list[ReadableSpan]) -> list[ExportTraceServiceRequest]:
    """Exports each batch of SDK spans in a request of its own; returns the requests sent (the SDK
    exporter's own encoding)."""
    exporter = otlp_exporter(protocol, collector)
    try:
        for spans in batches:
            result = exporter.export(spans)
            assert result == SpanExportResult.SUCCESS, f"OTLP/{protocol} export failed\n{collector.describe()}"
    finally:
        exporter.shutdown()
    return [encode_spans(spans) for spans in batches]


# --------------------------------------------------------------------------- log records

SEQ = "e2e.seq"  # an attribute on every SDK log record: matches rows to records


class RecordingLogExporter(LogRecordExporter):
    """Sends through the wrapped OTLP exporter and keeps, for each export, the request it encodes
    (the SDK's own encoder) and the result."""

    def __init__(self, inner: LogRecordExporter) -> None:
        self.inner = inner
        self.requests: list[ExportLogsServiceRequest] = []
        self.results: list[LogRecordExportResult] = []

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.requests.append(encode_logs(batch))
        result = self.inner.export(batch)
        self.results.append(result)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def otlp_log_exporter(protocol: str, collector) -> LogRecordExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter(endpoint=collector.grpc_endpoint, insecure=True, timeout=15)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return OTLPLogExporter(endpoint=collector.logs_url, timeout=15, session=http_session())


# Extra attributes of every kind the handler passes on (logging's `extra=`).
EXTRA = {
    "user.id": 42,
    "user.name": "alice",
    "ratio": 0.25,
    "float.integral": 1.0,
    "ok": True,
    "failed": False,
    "negative": -7,
    "big": 2**63 - 1,
    "tags": ["a", "b", ""],
    "ints": [1, 2, 3],
    "floats": [0.5, 2.0],
    "blob": b"\x00\x01\xfe\xff",
    "map": {"k": "v", "n": 1, "$ref": "x", "nested": {"deep": [1, "two"]}},
    "nan": float("nan"),
    "none": None,
}
# The e2e.seq numbers of emit_sdk_logs' records: 0-8 through the logging handler, 20-24 through the
# logs API.
SDK_LOG_SEQS = [*range(9), *range(20, 25)]


@dataclass
class SdkLogs:
    """What emit_sdk_logs sent, with the facts the tests check rows against."""

    requests: list[ExportLogsServiceRequest]
    results: list[LogRecordExportResult]
    word: str  # a word only records 0, 3 and 24 hold in their bodies
    base: int  # the explicit times of the logs API records are offsets from it
    logger_name: str
    remote: SpanContext  # record 22's (not sampled) context
    span: SpanContext  # record 6 was logged inside this (sampled) span
    t_before: int  # the logging handler's records were logged between these two clock readings
    t_after: int
    code_file: str = __file__  # code.file.path of the handler's records
    code_function: str = "emit_sdk_logs"  # their code.function.name


def emit_sdk_logs(protocol: str, collector, service: str) -> SdkLogs:
    """Log records through the SDK's logging handler (every Python level, `extra` attributes of
    every kind, one inside a span, an exception, a map message) and its logs API (event name, a scope
    with version, attributes and schema URL, explicit times, bytes/list/int/double bodies, a remote
    context), exported over `protocol` to the collector. Each record carries SEQ (SDK_LOG_SEQS)."""
    word = f"zq{secrets.token_hex(4)}"  # a word only some bodies hold, for the full-text query
    resource = Resource(
        {"service.name": service, "service.version": "9.9.9", "res.int": 5, "res.list": ["p", "q"]},
        schema_url="https://opentelemetry.io/schemas/1.26.0",
    )
    recorder = RecordingLogExporter(otlp_log_exporter(protocol, collector))
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(
        BatchLogRecordProcessor(recorder, schedule_delay_millis=100, export_timeout_millis=15_000)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the SDK's handler is deprecated, not gone
        handler = LoggingHandler(level=logging.NOTSET, logger_provider=provider)
    logger_name = f"e2e.logs.{service}"
    logger = logging.getLogger(logger_name)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)

    tracer = TracerProvider().get_tracer("e2e.logs.tracer")
    base = (time.time_ns() // 10**9 - 30) * 10**9 + 123_456_789  # ends in 789: below microseconds
    remote = SpanContext(
        trace_id=int.from_bytes(secrets.token_bytes(16), "big") | 1,
        span_id=int.from_bytes(secrets.token_bytes(8), "big") | 1,
        is_remote=True,
        trace_flags=TraceFlags(0),  # not sampled: ids without the sampled flag
    )
    t_before = time.time_ns()
    try:
        # Python levels -> OTLP severity, as the handler maps them (record `i` carries e2e.seq = i).
        logger.debug("debug %s from %s", word, "e2e", extra={SEQ: 0})
        logger.info("user %s logged in", "alice", extra={SEQ: 1, **EXTRA})
        logger.warning("disk almost full: %d%%", 93, extra={SEQ: 2})
        logger.error("request failed with %s", word, extra={SEQ: 3})
        logger.critical("out of memory", extra={SEQ: 4})
        logger.log(25, "a level between INFO and WARNING", extra={SEQ: 5})
        with tracer.start_as_current_span("handle request") as span:
            logger.info("inside the span", extra={SEQ: 6})
        try:
            raise ValueError("bad input 42")
        except ValueError:
            logger.exception("failed to parse %s", "payload", extra={SEQ: 7})
        # A non-string message object: the body is the map itself.
        logger.info({"event": "login", "user": "bob", "n": 3, "ratio": 0.5, "nested": {"a": [1, 2.5]}},
                    extra={SEQ: 8})
        t_after = time.time_ns()

        # The logs API directly: event name, scope with version/attributes/schema URL, explicit times.
        direct = provider.get_logger("e2e.direct", "7.8.9", schema_url="https://example.com/logs/1.0",
                                     attributes={"scope.k": "v", "scope.n": 2})
        # No timestamp: `time` falls back to the observed time.
        direct.emit(observed_timestamp=base, severity_number=SeverityNumber.INFO2, severity_text="info2",
                    body=b"\x01\x02raw", attributes={SEQ: 20, "inf": float("inf")}, event_name="e2e.login")
        direct.emit(timestamp=base + 1_000_000_001, observed_timestamp=base + 2_000_000_002,
                    severity_number=SeverityNumber.FATAL4,
                    body=["list", 1, 2.5, False, {"k": "v"}], attributes={SEQ: 21})
        direct.emit(timestamp=base + 3_000_000_003, observed_timestamp=base + 3_000_000_004,
                    body=12345, attributes={SEQ: 22},
                    context=set_span_in_context(NonRecordingSpan(remote)))
        direct.emit(timestamp=base + 4_000_000_004, observed_timestamp=base + 4_000_000_005,
                    body=2.0, attributes={SEQ: 23})
        direct.emit(timestamp=base + 5_000_000_005, observed_timestamp=base + 5_000_000_006,
                    body=f"the {word} again", attributes={SEQ: 24})
        assert provider.force_flush(15_000), "force_flush timed out"
    finally:
        logger.removeHandler(handler)
        provider.shutdown()
    return SdkLogs(requests=recorder.requests, results=recorder.results, word=word, base=base,
                   logger_name=logger_name, remote=remote, span=span.get_span_context(),
                   t_before=t_before, t_after=t_after)


def raw_logs_request(service: str) -> tuple[ExportLogsServiceRequest, int]:
    """What the SDKs do not send: no body at all, flags with the high bit set, an observed time only,
    a trace id without a span id, a duplicated attribute key, two resources (one without
    service.name) and a map body whose keys start with '$'. Returns the request and the time its
    records' times are offsets from. Record `i` carries SEQ = i (0 to 4)."""
    now = time.time_ns()
    records = [
        PbLogRecord(time_unix_nano=now, observed_time_unix_nano=now + 1, severity_number=9,
                    severity_text="INFO", attributes=[kv(SEQ, int_value=0)]),  # no body
        PbLogRecord(time_unix_nano=now + 2, flags=0x80000101, body=AnyValue(string_value="high flags"),
                    attributes=[kv(SEQ, int_value=1)], dropped_attributes_count=4),
        PbLogRecord(observed_time_unix_nano=now + 5, body=AnyValue(string_value="observed only"),
                    attributes=[kv(SEQ, int_value=2)]),
        PbLogRecord(time_unix_nano=now + 3, trace_id=secrets.token_bytes(16), event_name="only.trace",
                    body=AnyValue(kvlist_value=KeyValueList(values=[kv("$type", string_value="x"), kv("n", double_value=-0.5)])),
                    attributes=[kv(SEQ, int_value=3), kv("dup", int_value=1), kv("dup", int_value=2)]),
    ]
    other = PbLogRecord(time_unix_nano=now + 4, body=AnyValue(string_value="other resource"),
                        severity_number=SeverityNumber.TRACE.value, attributes=[kv(SEQ, int_value=4)])
    req = ExportLogsServiceRequest(resource_logs=[
        ResourceLogs(
            resource=PbResource(attributes=[kv("service.name", string_value=service), kv("host.name", string_value="h1")]),
            scope_logs=[ScopeLogs(scope=InstrumentationScope(name="e2e.raw", version="1"), log_records=records,
                                  schema_url="https://example.com/raw")],
            schema_url="https://opentelemetry.io/schemas/1.30.0",
        ),
        ResourceLogs(
            resource=PbResource(attributes=[kv("e2e.service", string_value=service)]),
            scope_logs=[ScopeLogs(log_records=[other])],
        ),
    ])
    return req, now


# --------------------------------------------------------------------------- metric points

DELTA, CUMULATIVE = 1, 2  # AggregationTemporality numbers in OTLP
ALL_INSTRUMENTS = (Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter, ObservableGauge)


class RecordingMetricExporter(MetricExporter):
    """Sends through the wrapped OTLP exporter and keeps, for each export, the request it encodes
    (the SDK's own encoder) and the result. Temporality and aggregation preferences are the wrapped
    exporter's, as the reader asks the exporter it is given."""

    def __init__(self, inner: MetricExporter) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner = inner
        self.requests: list[ExportMetricsServiceRequest] = []
        self.results: list[MetricExportResult] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        self.requests.append(encode_metrics(metrics_data))
        result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        self.results.append(result)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def otlp_metric_exporter(protocol: str, collector, temporality: dict) -> MetricExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=collector.grpc_endpoint, insecure=True, timeout=15,
                                  preferred_temporality=temporality)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(endpoint=collector.metrics_url, timeout=15, session=http_session(),
                              preferred_temporality=temporality)


ROUTE_A = {"http.route": "/a", "ok": True}
ROUTE_B = {"http.route": "/b", "http.status_code": 200, "ratio": 0.5}
QUEUE = {"queue": "q1"}
HIST = {"endpoint": "checkout", "tags": ["x", "y"]}
BOUNDS = [0.0, 5.0, 10.0, 25.0, 50.0, 100.0]

# What record_sdk_metrics records, round by round (a collection and export after each). Every double
# is exactly representable and every sum exact, so expected sums do not depend on the order of
# addition.
ROUNDS: list[dict[str, Any]] = [
    {
        "requests": [(1, ROUTE_A), (5, ROUTE_A), (2, ROUTE_B)],
        "bytes": [(0.5, {}), (1.25, {})],
        "queue": [(5, QUEUE), (-8, QUEUE)],
        "latency": [3, 7.5, 0, 30, 120.25, 5],  # 0 and 5 lie on bounds: (-inf, 0] and (0, 5]
        "size": [3.0, 100, 0, 1500.5, 0.75],
        "temperature.int": 21,
        "temperature": 21.5,
        "cpu.time": 10.5,  # ObservableCounter: the callback reports the running total
        "pending": 4,  # ObservableUpDownCounter
    },
    {
        "requests": [(3, ROUTE_A)],  # nothing for ROUTE_B: a delta reader exports no point for it
        "bytes": [(2.0, {})],
        "queue": [(2, QUEUE)],
        "latency": [60],
        "size": [7.0],
        "temperature.int": 23,
        "temperature": -1.5,
        "cpu.time": 12.0,
        "pending": -2,
    },
]


def exp_bucket_index(value: float, scale: int) -> int:
    """The exponential histogram bucket of a positive value: (base**i, base**(i+1)], base = 2**2**-scale."""
    return math.ceil(math.log2(value) * 2**scale) - 1


def measurements(name: str, rounds: list[int]) -> list:
    return [m for k in rounds for m in ROUNDS[k][name]]


@dataclass
class SdkMetrics:
    """What record_sdk_metrics sent."""

    requests: list[ExportMetricsServiceRequest]
    results: list[MetricExportResult]
    span: SpanContext  # round 0 was recorded inside this sampled span: exemplars carry its ids


def record_sdk_metrics(protocol: str, collector, temporality: str, service: str) -> SdkMetrics:
    """Every instrument of the Python SDK (counters, up-down counters, histograms with explicit and,
    through a View, exponential buckets, and the observable ones), `temporality` "cumulative" or
    "delta", recording ROUNDS: two rounds, a collection and an export over `protocol` after each."""
    delta = temporality == "delta"
    preferred = {cls: AggregationTemporality.DELTA for cls in ALL_INSTRUMENTS} if delta else {}
    recorder = RecordingMetricExporter(otlp_metric_exporter(protocol, collector, preferred))
    # The reader exports only when force_flush is called (export_interval_millis=inf), so exactly
    # two collections are sent.
    reader = PeriodicExportingMetricReader(recorder, export_interval_millis=math.inf, export_timeout_millis=15_000)
    resource = Resource({"service.name": service, "service.instance.id": "i-1", "res.int": 3},
                        schema_url="https://opentelemetry.io/schemas/1.26.0")
    provider = MeterProvider(
        metric_readers=[reader],
        resource=resource,
        views=[View(instrument_name="e2e.payload.size",
                    aggregation=ExponentialBucketHistogramAggregation(max_size=40, max_scale=20))],
    )
    meter = provider.get_meter("e2e.metrics", "1.2.3", schema_url="https://example.com/metrics/1.0",
                               attributes={"scope.attr": "m", "scope.n": 1})
    tracer = TracerProvider().get_tracer("e2e.metrics.tracer")

    requests_c = meter.create_counter("e2e.requests", unit="{request}", description="Requests served")
    bytes_c = meter.create_counter("e2e.bytes", unit="By", description="Bytes sent")
    queue_c = meter.create_up_down_counter("e2e.queue.depth", unit="{item}", description="Items queued")
    latency_h = meter.create_histogram("e2e.latency", unit="ms", description="Request latency",
                                       explicit_bucket_boundaries_advisory=BOUNDS)
    size_h = meter.create_histogram("e2e.payload.size", unit="By", description="Payload sizes")
    current = {"round": 0}

    def observe(name: str, attrs: dict):
        def callback(options: CallbackOptions):
            yield Observation(ROUNDS[current["round"]][name], attrs)
        return callback

    meter.create_observable_gauge("e2e.temperature.int", [observe("temperature.int", {"room": "a"})], unit="Cel",
                                  description="Whole degrees")
    meter.create_observable_gauge("e2e.temperature", [observe("temperature", {"room": "b"})], unit="Cel",
                                  description="Degrees")
    meter.create_observable_counter("e2e.cpu.time", [observe("cpu.time", {"cpu": 0})], unit="s",
                                    description="CPU time")
    meter.create_observable_up_down_counter("e2e.pending", [observe("pending", {})], unit="{job}",
                                            description="Jobs pending")

    def record(k: int) -> None:
        r = ROUNDS[k]
        for v, a in r["requests"]:
            requests_c.add(v, a)
        for v, a in r["bytes"]:
            bytes_c.add(v, a)
        for v, a in r["queue"]:
            queue_c.add(v, a)
        for v in r["latency"]:
            latency_h.record(v, HIST)
        for v in r["size"]:
            size_h.record(v)

    try:
        # Round 0 inside a sampled span (the default exemplar filter is trace-based: its
        # measurements may become exemplars), round 1 outside any span (they may not).
        with tracer.start_as_current_span("work") as span:
            record(0)
        assert reader.force_flush(15_000)
        current["round"] = 1
        record(1)
        assert reader.force_flush(15_000)
    finally:
        provider.shutdown()  # no further collection: the reader has no export thread
    return SdkMetrics(requests=recorder.requests, results=recorder.results, span=span.get_span_context())


@dataclass
class RawMetrics:
    """raw_metrics_request's request and the values it was built from."""

    request: ExportMetricsServiceRequest
    base: int
    trace_id: bytes  # the histogram exemplar's ids
    span_id: bytes
    quantiles: list[tuple[float, float]]  # the first summary point's (quantile, value) pairs


def raw_metrics_request(service: str) -> RawMetrics:
    """Points the Python SDK never sends, built with opentelemetry-proto: summaries (with and without
    quantiles, two points of one series), a histogram without sum, min and max, an int exemplar, a
    sum of unspecified temporality, a gauge with a start time, point flags and metric metadata."""
    base = (time.time_ns() // 10**9 - 10) * 10**9 + 123_456_789
    trace_id, span_id = secrets.token_bytes(16), secrets.token_bytes(8)
    quantiles = [(0.0, 1.5), (0.5, 10.25), (0.9, 30.0), (0.99, 40.0), (1.0, 55.5)]
    summary = pb.Metric(
        name="e2e.rpc.duration", description="RPC duration", unit="s",
        metadata=[kv("origin", string_value="prometheus"), kv("$weird", int_value=1)],
        summary=pb.Summary(data_points=[
            pb.SummaryDataPoint(
                attributes=[kv("method", string_value="GET")], start_time_unix_nano=base,
                time_unix_nano=base + 1_000_000_001, count=10, sum=123.5,
                quantile_values=[pb.SummaryDataPoint.ValueAtQuantile(quantile=q, value=v) for q, v in quantiles]),
            pb.SummaryDataPoint(
                attributes=[kv("method", string_value="GET")], start_time_unix_nano=base,
                time_unix_nano=base + 2_000_000_002, count=25, sum=400.75,
                quantile_values=[pb.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=12.0)]),
            pb.SummaryDataPoint(
                attributes=[kv("method", string_value="PUT"), kv("retry", bool_value=False)],
                time_unix_nano=base + 3, count=0, sum=0.0, flags=1),  # FLAG_NO_RECORDED_VALUE
        ]),
    )
    bare_histogram = pb.Metric(
        name="e2e.bare.histogram", unit="1",
        histogram=pb.Histogram(
            aggregation_temporality=pb.AGGREGATION_TEMPORALITY_CUMULATIVE,
            data_points=[pb.HistogramDataPoint(
                start_time_unix_nano=base, time_unix_nano=base + 5, count=3, bucket_counts=[1, 2],
                explicit_bounds=[10.0],
                exemplars=[pb.Exemplar(time_unix_nano=base + 4, as_int=7, trace_id=trace_id, span_id=span_id,
                                       filtered_attributes=[kv("user", string_value="u1"), kv("$x", double_value=1.0)])],
            )],
        ),
    )
    unspecified_sum = pb.Metric(
        name="e2e.unspecified.sum",
        sum=pb.Sum(aggregation_temporality=pb.AGGREGATION_TEMPORALITY_UNSPECIFIED, is_monotonic=False,
                   data_points=[pb.NumberDataPoint(time_unix_nano=base + 6, as_int=-(2**63))]),
    )
    gauge = pb.Metric(
        name="e2e.gauge.started",
        gauge=pb.Gauge(data_points=[pb.NumberDataPoint(start_time_unix_nano=base, time_unix_nano=base + 7,
                                                       as_double=1e300, attributes=[kv("k", bytes_value=b"\xff")])]),
    )
    req = ExportMetricsServiceRequest(resource_metrics=[pb.ResourceMetrics(
        resource=PbResource(attributes=[kv("service.name", string_value=service), kv("host.name", string_value="h1")]),
        scope_metrics=[pb.ScopeMetrics(
            scope=InstrumentationScope(name="e2e.raw", version="0.1", attributes=[kv("s", int_value=1)]),
            metrics=[summary, bare_histogram, unspecified_sum, gauge],
            schema_url="https://example.com/raw/1.0",
        )],
        schema_url="https://opentelemetry.io/schemas/1.30.0",
    )])
    return RawMetrics(request=req, base=base, trace_id=trace_id, span_id=span_id, quantiles=quantiles)
