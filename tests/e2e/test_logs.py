"""End-to-end: OTLP logs in (the Python SDK's logging handler and logs API, telemetrygen, a raw OTLP/HTTP
request), rows of the logs table out.

Every test runs its own collector writing to a schema of its own. The SDK's OTLP exporter is wrapped
so that every request it sends is recorded; the expected rows are derived from those requests
(otlp_rows.py, following schema/postgres/0004_logs.sql and schema/README.md) and compared column by
column, and literal checks tie them to what the test logged.
"""

from __future__ import annotations

import logging
import secrets
import subprocess
import time
import warnings
from typing import Sequence

import psycopg
import pytest
import requests
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as PbLogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from conftest import TELEMETRYGEN_BIN, Collector, http_post, scalar, unique_name, wait_for_count
from otlp_rows import LOG_COLUMNS, compare_rows, expected_log_rows, fetch_rows, time_of

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


def otlp_log_exporter(protocol: str, collector: Collector) -> LogRecordExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter(endpoint=collector.grpc_endpoint, insecure=True, timeout=15)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    session = requests.Session()
    session.trust_env = False
    return OTLPLogExporter(endpoint=collector.logs_url, timeout=15, session=session)


def seq_of(row: dict) -> int:
    return row["attributes"][SEQ]


# Extra attributes of every kind the handler passes on (logging's `extra=`), and what is stored.
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
EXTRA_STORED = {
    "user.id": 42,
    "user.name": "alice",
    "ratio": 0.25,
    "float.integral": 1.0,
    "ok": True,
    "failed": False,
    "negative": -7,
    "big": 9223372036854775807,
    "tags": ["a", "b", ""],
    "ints": [1, 2, 3],
    "floats": [0.5, 2.0],
    "blob": {"$bytes": "AAH+/w=="},
    "map": {"k": "v", "n": 1, "$$ref": "x", "nested": {"deep": [1, "two"]}},
    "nan": {"$double": "NaN"},
    "none": None,
}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_logs_are_stored_exactly(protocol: str, collector: Collector, db: psycopg.Connection):
    service = unique_name(f"logs_{protocol}")
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

    assert recorder.results and all(r == LogRecordExportResult.SUCCESS for r in recorder.results), (
        f"OTLP/{protocol} log export failed: {recorder.results}\n{collector.describe()}")
    expected = expected_log_rows(recorder.requests)
    assert sorted(seq_of(r) for r in expected) == [*range(9), *range(20, 25)], "the SDK did not send every record"

    t = collector.logs_table
    wait_for_count(db, f"SELECT count(*) FROM {t}", len(expected), on_fail=collector.describe)
    rows = fetch_rows(db, t)
    assert set(rows[0]) == set(LOG_COLUMNS), "logs table columns differ from schema/postgres/0004_logs.sql"
    problems = compare_rows(rows, expected, seq_of, LOG_COLUMNS, "log")
    assert not problems, "stored log rows differ from the exported records:\n" + "\n".join(problems)

    # Literal checks: what the test logged, independent of the SDK's view of its records.
    by_seq = {seq_of(r): r for r in rows}
    levels = {0: (5, "DEBUG"), 1: (9, "INFO"), 2: (13, "WARN"), 3: (17, "ERROR"), 4: (21, "FATAL"),
              5: (12, "Level 25"), 6: (9, "INFO"), 7: (17, "ERROR"), 8: (9, "INFO")}
    for seq, (number, text) in levels.items():
        r = by_seq[seq]
        assert (r["severity_number"], r["severity_text"]) == (number, text), (seq, r["severity_number"], r["severity_text"])
        # logging's record.created -> time; the handler's own clock -> observed time.
        # (record.created is a float of seconds: allow for its rounding.)
        assert t_before - 10**6 <= r["time_unix_nano"] <= r["observed_time_unix_nano"] + 10**6, (seq, r)
        assert t_before <= r["observed_time_unix_nano"] <= t_after, (seq, r)
        assert r["time"] == time_of(r["time_unix_nano"])
        assert (r["scope_name"], r["scope_version"], r["scope_schema_url"], r["scope_attributes"]) == (logger_name, "", "", {})
        assert r["service_name"] == service and r["event_name"] == "" and r["dropped_attributes_count"] == 0
        assert r["resource_attributes"] == {"service.name": service, "service.version": "9.9.9", "res.int": 5, "res.list": ["p", "q"]}
        assert r["resource_schema_url"] == "https://opentelemetry.io/schemas/1.26.0"
        assert r["attributes"]["code.function.name"] == "test_sdk_logs_are_stored_exactly"
        assert r["attributes"]["code.file.path"] == __file__
        assert isinstance(r["attributes"]["code.line.number"], int)
        if seq != 6:
            assert (r["trace_id"], r["span_id"], r["flags"]) == (None, None, 0), (seq, r)
    assert by_seq[0]["body"] == f"debug {word} from e2e"
    assert by_seq[1]["body"] == "user alice logged in"
    assert {k: v for k, v in by_seq[1]["attributes"].items() if not k.startswith("code.")} == {SEQ: 1, **EXTRA_STORED}
    assert by_seq[2]["body"] == "disk almost full: 93%"
    assert by_seq[5]["body"] == "a level between INFO and WARNING"

    in_span = by_seq[6]
    ctx = span.get_span_context()
    assert in_span["trace_id"] == ctx.trace_id.to_bytes(16, "big")
    assert in_span["span_id"] == ctx.span_id.to_bytes(8, "big")
    assert in_span["flags"] == int(ctx.trace_flags) and in_span["flags"] & 1 == 1  # sampled

    exc = by_seq[7]
    assert exc["body"] == "failed to parse payload"
    assert exc["attributes"]["exception.type"] == "ValueError"
    assert exc["attributes"]["exception.message"] == "bad input 42"
    stack = exc["attributes"]["exception.stacktrace"]
    assert stack.startswith("Traceback (most recent call last):") and stack.endswith("ValueError: bad input 42\n")
    assert 'raise ValueError("bad input 42")' in stack

    assert by_seq[8]["body"] == {"event": "login", "user": "bob", "n": 3, "ratio": 0.5, "nested": {"a": [1, 2.5]}}

    d0 = by_seq[20]
    assert (d0["time_unix_nano"], d0["observed_time_unix_nano"]) == (0, base)
    assert d0["time"] == time_of(base) and base % 1000 == 789
    assert (d0["severity_number"], d0["severity_text"], d0["event_name"]) == (10, "info2", "e2e.login")
    assert d0["body"] == {"$bytes": "AQJyYXc="}
    assert d0["attributes"] == {SEQ: 20, "inf": {"$double": "Infinity"}}
    assert (d0["scope_name"], d0["scope_version"], d0["scope_schema_url"]) == ("e2e.direct", "7.8.9", "https://example.com/logs/1.0")
    assert d0["scope_attributes"] == {"scope.k": "v", "scope.n": 2}
    d1 = by_seq[21]
    assert (d1["time_unix_nano"], d1["observed_time_unix_nano"]) == (base + 1_000_000_001, base + 2_000_000_002)
    assert d1["time"] == time_of(base + 1_000_000_001)
    assert (d1["severity_number"], d1["severity_text"]) == (24, "")
    assert d1["body"] == ["list", 1, 2.5, False, {"k": "v"}]
    d2 = by_seq[22]
    assert (d2["severity_number"], d2["body"]) == (0, 12345) and type(d2["body"]) is int
    assert d2["trace_id"] == remote.trace_id.to_bytes(16, "big") and d2["span_id"] == remote.span_id.to_bytes(8, "big")
    assert d2["flags"] == 0
    d3 = by_seq[23]
    assert d3["body"] == 2.0 and type(d3["body"]) is float
    assert scalar(db, f"SELECT body::text FROM {t} WHERE attributes @> %s::jsonb", (f'{{"{SEQ}": 23}}',)) == "2.0"
    assert scalar(db, f"SELECT body::text FROM {t} WHERE attributes @> %s::jsonb", (f'{{"{SEQ}": 22}}',)) == "12345"

    # What a user runs: full-text search on the body (logs_body_search_idx's expression).
    def search(words: str) -> list[int]:
        with db.cursor() as cur:
            cur.execute(
                f"SELECT (attributes->>'{SEQ}')::int FROM {t} "
                "WHERE to_tsvector('simple', body #>> '{}') @@ plainto_tsquery('simple', %s) ORDER BY 1",
                (words,),
            )
            return [r[0] for r in cur.fetchall()]

    assert search(word) == [0, 3, 24]
    assert search("alice logged") == [1]
    assert search("bob") == [8]  # a map body is searched as its JSON text
    assert search("inside span") == [6]
    assert search(f"{word} again") == [24]
    assert search("nosuchwordanywhere") == []
    assert scalar(db, f"SELECT count(*) FROM {t} WHERE service_name = %s AND severity_number >= 17", (service,)) == 4
    tid = ctx.trace_id.to_bytes(16, "big")
    assert scalar(db, f"SELECT count(*) FROM {t} WHERE trace_id = %s", (tid,)) == 1


# --------------------------------------------------------------------------- telemetrygen


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_telemetrygen_logs(protocol: str, collector: Collector, db: psycopg.Connection):
    if not TELEMETRYGEN_BIN.exists():
        pytest.fail(f"{TELEMETRYGEN_BIN} is missing; run `make tools`")
    service = unique_name(f"tgen_logs_{protocol}")
    run_id = secrets.token_hex(6)
    word = f"tg{secrets.token_hex(4)}"
    body = f"payment {word} accepted for order 17"
    logs_per_worker, workers = 30, 2
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    severity = (17, "Error") if protocol == "grpc" else (9, "Info")  # http: telemetrygen's defaults
    cmd = [
        str(TELEMETRYGEN_BIN), "logs",
        "--otlp-insecure",
        "--logs", str(logs_per_worker),
        "--workers", str(workers),
        "--rate", "0",
        "--service", service,
        "--body", body,
        "--otlp-attributes", f'e2e.run="{run_id}"',
        "--otlp-attributes", "e2e.shard=3",
        "--telemetry-attributes", 'e2e.attr="tgen"',
        "--telemetry-attributes", "e2e.flag=true",
    ]
    if protocol == "grpc":
        cmd += ["--otlp-endpoint", collector.grpc_endpoint,
                "--trace-id", trace_id, "--span-id", span_id,
                "--severity-number", str(severity[0]), "--severity-text", severity[1]]
    else:
        cmd += ["--otlp-http", "--otlp-endpoint", f"127.0.0.1:{collector.http_port}"]
    t_before = time.time_ns()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"telemetrygen did not finish in 60s\n{e.stderr}\n{collector.describe()}")
    t_after = time.time_ns()
    assert r.returncode == 0, f"telemetrygen failed ({r.returncode})\n{r.stdout}\n{r.stderr}\n{collector.describe()}"

    n = logs_per_worker * workers  # --logs is per worker
    t = collector.logs_table
    wait_for_count(db, f"SELECT count(*) FROM {t} WHERE service_name = %s", n, params=(service,),
                   on_fail=collector.describe)
    assert scalar(db, f"SELECT count(*) FROM {t}") == n, "rows of another service in a fresh schema"
    assert scalar(db, f"SELECT count(DISTINCT time_unix_nano) FROM {t}") > 1

    problems = []
    for row in fetch_rows(db, t):
        want = {
            "time": time_of(row["time_unix_nano"]),
            "observed_time_unix_nano": 0,  # telemetrygen sets no observed time
            "severity_number": severity[0],
            "severity_text": severity[1],
            "body": body,
            "attributes": {"app": "server", "e2e.attr": "tgen", "e2e.flag": True},
            "dropped_attributes_count": 1,  # telemetrygen claims one dropped attribute on every record
            "flags": 0,
            "trace_id": bytes.fromhex(trace_id) if protocol == "grpc" else None,
            "span_id": bytes.fromhex(span_id) if protocol == "grpc" else None,
            "event_name": "",
            "service_name": service,
            "resource_attributes": {"service.name": service, "e2e.run": run_id, "e2e.shard": 3},
            "scope_name": "",
            "scope_version": "",
            "scope_attributes": {},
            "scope_schema_url": "",
        }
        for col, exp in want.items():
            if row[col] != exp or type(row[col]) is not type(exp):
                problems.append(f"{col}: expected {exp!r}, got {row[col]!r}")
        if not t_before <= row["time_unix_nano"] <= t_after:
            problems.append(f"time_unix_nano {row['time_unix_nano']} outside the run [{t_before}, {t_after}]")
        if not row["resource_schema_url"].startswith("https://opentelemetry.io/schemas/"):
            problems.append(f"resource_schema_url {row['resource_schema_url']!r}")
        if set(row) != set(LOG_COLUMNS):
            problems.append(f"columns {sorted(row)}")
    assert not problems, "\n".join(sorted(set(problems))[:30])

    fts = "to_tsvector('simple', body #>> '{}') @@ plainto_tsquery('simple', %s)"
    assert scalar(db, f"SELECT count(*) FROM {t} WHERE {fts}", (word,)) == n
    assert scalar(db, f"SELECT count(*) FROM {t} WHERE {fts}", (f"{word} order",)) == n
    assert scalar(db, f"SELECT count(*) FROM {t} WHERE {fts}", ("refused",)) == 0


# --------------------------------------------------------------------------- raw OTLP/HTTP


def kv(key: str, **value) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


def test_raw_log_records_edge_cases(collector: Collector, db: psycopg.Connection):
    """What the SDKs do not send: no body at all, flags with the high bit set, an observed time only,
    a trace id without a span id, two resources (one without service.name) and a map body whose keys
    start with '$'."""
    service = unique_name("raw_logs")
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
    status, resp = http_post(collector.logs_url, req.SerializeToString(), "application/x-protobuf")
    assert status == 200, f"{status} {resp[:500]!r}\n{collector.describe()}"
    partial = ExportLogsServiceResponse.FromString(resp).partial_success
    assert partial.rejected_log_records == 0, partial

    t = collector.logs_table
    wait_for_count(db, f"SELECT count(*) FROM {t}", 5, on_fail=collector.describe)
    rows = fetch_rows(db, t)
    problems = compare_rows(rows, expected_log_rows([req]), seq_of, LOG_COLUMNS, "log")
    assert not problems, "stored log rows differ from the request:\n" + "\n".join(problems)

    by_seq = {seq_of(r): r for r in rows}
    assert by_seq[1]["flags"] == -(2**31) + 0x101
    assert by_seq[1]["dropped_attributes_count"] == 4
    assert (by_seq[2]["time_unix_nano"], by_seq[2]["observed_time_unix_nano"]) == (0, now + 5)
    assert by_seq[2]["time"] == time_of(now + 5)
    assert by_seq[3]["span_id"] is None and len(by_seq[3]["trace_id"]) == 16
    assert by_seq[3]["body"] == {"$$type": "x", "n": -0.5} and by_seq[3]["attributes"]["dup"] == 2
    assert by_seq[4]["service_name"] == "" and by_seq[4]["severity_number"] == 1
    assert by_seq[4]["resource_attributes"] == {"e2e.service": service}
    assert by_seq[0]["service_name"] == service and by_seq[0]["scope_schema_url"] == "https://example.com/raw"
    # (psycopg reads both SQL NULL and jsonb 'null' as None: ask PostgreSQL which it is.)
    stored_body = scalar(db, f"SELECT coalesce(body::text, 'SQL NULL') FROM {t} WHERE attributes @> %s::jsonb",
                         (f'{{"{SEQ}": 0}}',))
    assert stored_body == "SQL NULL", f"a record without a body must store SQL NULL in body, got jsonb {stored_body!r}"
