"""End-to-end: the demo application's requests (examples/orm-demo) traced with the OpenTelemetry
SDK, stored in PostgreSQL by the collector, and analysed by otelstore-query: its N+1 detector finds
the lazy endpoint, and not the eager one.

Environment overrides (optional):
  OTELSTORE_QUERY_BIN  the otelstore-query binary. Without it the test runs
                       `cargo build --release -p otelstore-query` (nothing to do when `make build`
                       built it) and uses target/release/otelstore-query.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from types import ModuleType

import psycopg
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conftest import ROOT, Collector, unique_name, wait_for_count
from harness import free_port, http_get, tail, wait_until

DEMO = ROOT / "examples/orm-demo/app.py"
CARGO_BUILD_TIMEOUT = 1800  # a release build from nothing on a busy 2-core machine
QUERY_READY_TIMEOUT = 30
# The demo's defaults: 20 authors, each with a query of 5 ms or more when lazy.
AUTHORS = 20
LAZY_STATEMENT = "SELECT id, author_id, title, year FROM books WHERE author_id = ? ORDER BY id"


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("orm_demo_app", DEMO)
    assert spec is not None and spec.loader is not None, DEMO
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def query_bin() -> Path:
    given = os.environ.get("OTELSTORE_QUERY_BIN")
    if given:
        path = Path(given)
        if not path.exists():
            pytest.fail(f"OTELSTORE_QUERY_BIN={given} does not exist")
        return path
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    r = subprocess.run(
        ["cargo", "build", "--release", "-p", "otelstore-query"],
        cwd=ROOT, capture_output=True, text=True, timeout=CARGO_BUILD_TIMEOUT,
    )
    if r.returncode != 0:
        pytest.fail(f"cargo build --release -p otelstore-query failed:\n{r.stderr[-5000:]}")
    return target / "release/otelstore-query"


class Query:
    """otelstore-query serving one schema on a free port."""

    def __init__(self, binary: Path, dsn: str, schema: str, workdir: Path) -> None:
        self.port = free_port()
        self.log_path = workdir / "otelstore-query.log"
        config = workdir / "otelstore-query.json"
        config.write_text(json.dumps({
            "listen": f"127.0.0.1:{self.port}",
            "postgres": {"dsn": dsn, "schema": schema},
            "cache": {"ttl": "0s"},
        }))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(binary), "--config", str(config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return f"--- otelstore-query log ({self.log_path}) ---\n{tail(self.log_path)}"

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"otelstore-query exited with {self.proc.returncode}\n{self.log()}")
        try:
            return http_get(f"{self.base}/api/services")[0] == 200
        except OSError:
            return False

    def get(self, path: str, **params: str) -> dict:
        status, body = http_get(f"{self.base}{path}?{urllib.parse.urlencode(params)}", timeout=30)
        assert status == 200, f"{path}: {status} {body[:2000]!r}\n{self.log()}"
        return json.loads(body)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def start_query(query_bin: Path, pg_dsn: str, tmp_path: Path):
    """Factory: start_query(schema) -> a ready otelstore-query reading that schema; stopped after."""
    started: list[Query] = []

    def start(schema: str) -> Query:
        query = Query(query_bin, pg_dsn, schema, tmp_path)
        started.append(query)
        wait_until(query.ready, QUERY_READY_TIMEOUT, "otelstore-query answering", on_fail=query.log)
        return query

    yield start
    for query in started:
        query.stop()


def test_the_lazy_endpoint_is_an_n_plus_one_and_the_eager_one_is_not(
    collector: Collector, db: psycopg.Connection, start_query
):
    demo = load_demo()
    service = unique_name("orm_demo")
    provider = demo.tracer_provider(collector.http_base, service)
    # The trace ids of each endpoint's requests, as the SDK saw them.
    seen = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(seen))
    app = demo.App(provider)
    server = demo.server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    start_ms = int(time.time() * 1000) - 1000
    try:
        bodies = {}
        for path in ["/authors-lazy", "/authors-eager", "/authors-lazy", "/authors-eager"]:
            status, body = http_get(f"http://127.0.0.1:{server.server_port}{path}", timeout=30)
            assert status == 200, (path, status, body[:500])
            bodies.setdefault(path, []).append(json.loads(body))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        assert provider.force_flush(30_000), "the SDK did not send every span"
        provider.shutdown()
    end_ms = int(time.time() * 1000) + 1000
    lazy, eager = bodies["/authors-lazy"][0], bodies["/authors-eager"][0]
    assert lazy == eager and len(lazy) == AUTHORS, "both endpoints answer the same authors and books"

    spans = seen.get_finished_spans()
    roots: dict[str, set[str]] = {}
    for s in spans:
        if s.parent is None:
            roots.setdefault(s.name, set()).add(format(s.context.trace_id, "032x"))
    lazy_traces, eager_traces = roots["GET /authors-lazy"], roots["GET /authors-eager"]
    assert len(lazy_traces) == 2 and len(eager_traces) == 2, roots
    # Per lazy request: the server span, the authors, then the books of each author; eager: 3.
    assert len(spans) == 2 * (2 + AUTHORS) + 2 * 3
    wait_for_count(db, f"SELECT count(*) FROM {collector.spans_table} WHERE service_name = %s",
                   len(spans), params=(service,), on_fail=collector.describe)

    query = start_query(collector.schema)
    report = query.get("/api/v1/analysis/n-plus-one", service=service, start=str(start_ms), end=str(end_ms))
    assert report["traces_examined"] == 4, report
    assert report["thresholds"] == {"min_repeats": 5, "min_total_ms": 50.0}, report
    findings = report["findings"]
    assert len(findings) == 1, json.dumps(findings, indent=2)
    [finding] = findings
    assert finding["service"] == service
    assert finding["parent_operation"] == "GET /authors-lazy"
    assert finding["statement"] == LAZY_STATEMENT
    assert (finding["count"], finding["occurrences"]) == (2 * AUTHORS, 2)
    # Each query sleeps the demo's 5 ms round trip first.
    assert finding["total_ms"] >= 2 * AUTHORS * 5, finding
    assert set(finding["traces"]) == lazy_traces
    example = finding["example"]
    assert example["trace_id"] in lazy_traces
    assert example["count"] == AUTHORS
    assert example["total_ms"] >= AUTHORS * 5
    lazy_roots = {format(s.context.span_id, "016x") for s in spans if s.name == "GET /authors-lazy"}
    assert example["parent_span_id"] in lazy_roots
    assert not eager_traces & set(finding["traces"])

    # The window is read in RFC 3339 as well; another service has no findings.
    iso = lambda ms: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))  # noqa: E731
    again = query.get("/api/v1/analysis/n-plus-one", service=service,
                      start=iso(start_ms - 1000), end=iso(end_ms + 1000))
    assert again["findings"] == findings
    other = query.get("/api/v1/analysis/n-plus-one", service="nobody", start=str(start_ms), end=str(end_ms))
    assert other == {**report, "findings": [], "traces_examined": 0}
