"""The N+1 check of the demo application (examples/orm-demo), shared by the PostgreSQL and
ClickHouse end-to-end tests: run_demo sends its requests' spans to a collector with the
OpenTelemetry SDK, and check_findings asks otelstore-query's N+1 detector about them: it must find
the lazy endpoint, and not the eager one.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass
from types import ModuleType

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from harness import ROOT, QueryServer, http_get, unique_name

DEMO = ROOT / "examples/orm-demo/app.py"
# The demo's defaults: 20 authors, each with a query of 5 ms or more when lazy.
AUTHORS = 20
LAZY_STATEMENT = "SELECT id, author_id, title, year FROM books WHERE author_id = ? ORDER BY id"


@dataclass
class DemoRun:
    """What the demo sent: its service, the spans as the SDK saw them, the trace ids of each
    endpoint's requests, and a window in ms that holds them."""

    service: str
    spans: list[ReadableSpan]
    lazy_traces: set[str]
    eager_traces: set[str]
    start_ms: int
    end_ms: int


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("orm_demo_app", DEMO)
    assert spec is not None and spec.loader is not None, DEMO
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get(query: QueryServer, path: str, **params: str) -> dict:
    status, body = http_get(f"{query.base_url}{path}?{urllib.parse.urlencode(params)}", timeout=30)
    assert status == 200, f"{path}: {status} {body[:2000]!r}\n{query.describe()}"
    return json.loads(body)


def run_demo(collector_http_base: str) -> DemoRun:
    """Serves the demo, calls each endpoint twice, and sends its spans to the collector's
    OTLP/HTTP receiver."""
    demo = load_demo()
    service = unique_name("orm_demo")
    provider = demo.tracer_provider(collector_http_base, service)
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

    spans = list(seen.get_finished_spans())
    roots: dict[str, set[str]] = {}
    for s in spans:
        if s.parent is None:
            roots.setdefault(s.name, set()).add(format(s.context.trace_id, "032x"))
    lazy_traces, eager_traces = roots["GET /authors-lazy"], roots["GET /authors-eager"]
    assert len(lazy_traces) == 2 and len(eager_traces) == 2, roots
    # Per lazy request: the server span, the authors, then the books of each author; eager: 3.
    assert len(spans) == 2 * (2 + AUTHORS) + 2 * 3
    return DemoRun(service, spans, lazy_traces, eager_traces, start_ms, end_ms)


def check_findings(query: QueryServer, run: DemoRun) -> None:
    """otelstore-query (cache off), once the demo's spans are stored: one finding, the lazy
    endpoint's repeated statement, in its two traces and none of the eager ones."""
    service, start_ms, end_ms = run.service, run.start_ms, run.end_ms
    report = get(query, "/api/v1/analysis/n-plus-one", service=service, start=str(start_ms), end=str(end_ms))
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
    assert set(finding["traces"]) == run.lazy_traces
    example = finding["example"]
    assert example["trace_id"] in run.lazy_traces
    assert example["count"] == AUTHORS
    assert example["total_ms"] >= AUTHORS * 5
    lazy_roots = {format(s.context.span_id, "016x") for s in run.spans if s.name == "GET /authors-lazy"}
    assert example["parent_span_id"] in lazy_roots
    assert not run.eager_traces & set(finding["traces"])

    # The window is read in RFC 3339 as well; another service has no findings.
    iso = lambda ms: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))  # noqa: E731
    again = get(query, "/api/v1/analysis/n-plus-one", service=service,
                      start=iso(start_ms - 1000), end=iso(end_ms + 1000))
    assert again["findings"] == findings
    other = get(query, "/api/v1/analysis/n-plus-one", service="nobody", start=str(start_ms), end=str(end_ms))
    assert other == {**report, "findings": [], "traces_examined": 0}
