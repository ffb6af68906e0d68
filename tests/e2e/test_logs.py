"""End-to-end: OTLP logs in (the Python SDK's logging handler and logs API, telemetrygen, a raw OTLP/HTTP
request), rows of the logs table out.

Every test runs its own collector writing to a schema of its own. The SDK's OTLP exporter is wrapped
so that every request it sends is recorded; the expected rows are derived from those requests
(otlp_rows.py, following schema/postgres/0004_logs.sql and schema/README.md) and compared column by
column, and literal checks tie them to what the test logged.
"""

from __future__ import annotations

import secrets
import subprocess
import time

import psycopg
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.sdk._logs.export import LogRecordExportResult

from conftest import TELEMETRYGEN_BIN, Collector, http_post, scalar, unique_name, wait_for_count
from otlp_rows import LOG_COLUMNS, compare_rows, expected_log_rows, fetch_rows, time_of
from payloads import SDK_LOG_SEQS, SEQ, emit_sdk_logs, raw_logs_request


def seq_of(row: dict) -> int:
    return row["attributes"][SEQ]


# How payloads.EXTRA, the extra attributes of every kind passed to the logging handler, is stored.
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
    sent = emit_sdk_logs(protocol, collector, service)
    word, base, remote, ctx = sent.word, sent.base, sent.remote, sent.span
    assert sent.results and all(r == LogRecordExportResult.SUCCESS for r in sent.results), (
        f"OTLP/{protocol} log export failed: {sent.results}\n{collector.describe()}")
    expected = expected_log_rows(sent.requests)
    assert sorted(seq_of(r) for r in expected) == SDK_LOG_SEQS, "the SDK did not send every record"

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
        assert sent.t_before - 10**6 <= r["time_unix_nano"] <= r["observed_time_unix_nano"] + 10**6, (seq, r)
        assert sent.t_before <= r["observed_time_unix_nano"] <= sent.t_after, (seq, r)
        assert r["time"] == time_of(r["time_unix_nano"])
        assert (r["scope_name"], r["scope_version"], r["scope_schema_url"], r["scope_attributes"]) == (sent.logger_name, "", "", {})
        assert r["service_name"] == service and r["event_name"] == "" and r["dropped_attributes_count"] == 0
        assert r["resource_attributes"] == {"service.name": service, "service.version": "9.9.9", "res.int": 5, "res.list": ["p", "q"]}
        assert r["resource_schema_url"] == "https://opentelemetry.io/schemas/1.26.0"
        assert r["attributes"]["code.function.name"] == sent.code_function
        assert r["attributes"]["code.file.path"] == sent.code_file
        assert isinstance(r["attributes"]["code.line.number"], int)
        if seq != 6:
            assert (r["trace_id"], r["span_id"], r["flags"]) == (None, None, 0), (seq, r)
    assert by_seq[0]["body"] == f"debug {word} from e2e"
    assert by_seq[1]["body"] == "user alice logged in"
    assert {k: v for k, v in by_seq[1]["attributes"].items() if not k.startswith("code.")} == {SEQ: 1, **EXTRA_STORED}
    assert by_seq[2]["body"] == "disk almost full: 93%"
    assert by_seq[5]["body"] == "a level between INFO and WARNING"

    in_span = by_seq[6]
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


def test_raw_log_records_edge_cases(collector: Collector, db: psycopg.Connection):
    """What the SDKs do not send (payloads.raw_logs_request)."""
    service = unique_name("raw_logs")
    req, now = raw_logs_request(service)
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
