"""orm-demo: a small library API that loads authors with their books in the two ways an ORM can.

- GET /authors-lazy   one query for the authors, then, as each author's books are read, one query
                      for that author's books: 1 + N queries, the N+1 pattern.
- GET /authors-eager  one query for the authors and one for the books of all of them (`IN (...)`).

Both answer the same JSON. Each request is a SERVER span; each query a CLIENT span as an ORM
instrumented after OpenTelemetry's database conventions records it: `db.system.name` "sqlite",
`db.query.text` with the values written into the statement (as ORMs that inline literals send it),
`db.operation.name`, `db.collection.name`, `db.query.summary` (also the span's name) and, for the
books of an author, the relationship attributes of the ORM the seeds describe
(`db.relationship.name`, `db.relationship.strategy`: "select" when lazy, "selectinload" when eager).

The database is SQLite in memory, which answers in microseconds; a database server answers over the
network, so each query first sleeps ORM_DEMO_DB_LATENCY_MS (default 5) as its round trip would take.

Configuration, from the environment:
  OTEL_EXPORTER_OTLP_ENDPOINT  the collector's OTLP/HTTP endpoint (default http://127.0.0.1:4318)
  OTEL_SERVICE_NAME            the service name (default orm-demo)
  ORM_DEMO_LISTEN              where to serve (default 127.0.0.1:8000)
  ORM_DEMO_AUTHORS             how many authors (default 20), each with 3 books
  ORM_DEMO_DB_LATENCY_MS       the round trip added to each query (default 5)

Run `python app.py`, then `curl localhost:8000/authors-lazy`; see README.md.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

BOOKS_PER_AUTHOR = 3


def tracer_provider(endpoint: str, service_name: str) -> TracerProvider:
    """A tracer provider that sends batches of spans to `endpoint` (OTLP/HTTP, `http://host:port`)."""
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def sql_literal(value: Any) -> str:
    """A value written into a statement, as an ORM that inlines its parameters writes it."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


class Database:
    """SQLite in memory, each query traced as a database client span."""

    def __init__(self, tracer: trace.Tracer, authors: int, latency_s: float) -> None:
        self.tracer = tracer
        self.latency_s = latency_s
        self.lock = threading.Lock()  # one connection, shared by the server's threads
        self.conn = sqlite3.connect(":memory:", check_same_thread=False)
        self.conn.executescript(
            "CREATE TABLE authors (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
            "CREATE TABLE books (id INTEGER PRIMARY KEY, author_id INTEGER NOT NULL"
            " REFERENCES authors (id), title TEXT NOT NULL, year INTEGER NOT NULL);"
            "CREATE INDEX books_author_id ON books (author_id);"
        )
        self.conn.executemany(
            "INSERT INTO authors (id, name) VALUES (?, ?)",
            [(a, f"Author {a}") for a in range(1, authors + 1)],
        )
        self.conn.executemany(
            "INSERT INTO books (author_id, title, year) VALUES (?, ?, ?)",
            [
                (a, f"Book {b} of author {a}", 1950 + (a * 7 + b) % 70)
                for a in range(1, authors + 1)
                for b in range(1, BOOKS_PER_AUTHOR + 1)
            ],
        )
        self.conn.commit()

    def query(self, statement: str, operation: str, collection: str, **attributes: Any) -> list[tuple]:
        """Runs a statement (its values already written into it) in a CLIENT span."""
        summary = f"{operation} {collection}"
        with self.tracer.start_as_current_span(
            summary,
            kind=SpanKind.CLIENT,
            attributes={
                "db.system.name": "sqlite",
                "db.namespace": "main",
                "db.operation.name": operation,
                "db.collection.name": collection,
                "db.query.summary": summary,
                "db.query.text": statement,
                **attributes,
            },
        ) as span:
            time.sleep(self.latency_s)
            with self.lock:
                rows = self.conn.execute(statement).fetchall()
            span.set_attribute("db.response.returned_rows", len(rows))
            return rows


class Author:
    """An author row; `books` is a relationship loaded on first access unless loaded already."""

    def __init__(self, session: Session, id: int, name: str) -> None:
        self.session = session
        self.id = id
        self.name = name
        self._books: list[dict] | None = None

    @property
    def books(self) -> list[dict]:
        if self._books is None:
            self._books = self.session.books_of([self.id], strategy="select")[self.id]
        return self._books


class Session:
    """The ORM's unit of work: loads authors, and their books lazily or eagerly."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def authors(self, eager: bool) -> list[Author]:
        rows = self.db.query("SELECT id, name FROM authors ORDER BY id", "SELECT", "authors")
        authors = [Author(self, id, name) for id, name in rows]
        if eager and authors:
            books = self.books_of([a.id for a in authors], strategy="selectinload")
            for author in authors:
                author._books = books[author.id]
        return authors

    def books_of(self, author_ids: list[int], strategy: str) -> dict[int, list[dict]]:
        """The books of these authors, in one query."""
        if len(author_ids) == 1:
            where = f"author_id = {sql_literal(author_ids[0])}"
        else:
            where = f"author_id IN ({', '.join(sql_literal(i) for i in author_ids)})"
        rows = self.db.query(
            f"SELECT id, author_id, title, year FROM books WHERE {where} ORDER BY id",
            "SELECT",
            "books",
            **{"db.relationship.name": "books", "db.relationship.strategy": strategy},
        )
        books: dict[int, list[dict]] = {i: [] for i in author_ids}
        for id, author_id, title, year in rows:
            books[author_id].append({"id": id, "title": title, "year": year})
        return books


def authors_json(authors: Iterable[Author]) -> list[dict]:
    return [{"id": a.id, "name": a.name, "books": a.books} for a in authors]


class App:
    """The endpoints, each request traced as a SERVER span."""

    def __init__(self, provider: trace.TracerProvider, authors: int = 20, latency_ms: float = 5.0) -> None:
        self.tracer = provider.get_tracer("orm-demo")
        self.db = Database(self.tracer, authors, latency_ms / 1000)
        self.routes: dict[str, Callable[[], Any]] = {
            "/authors-lazy": lambda: authors_json(Session(self.db).authors(eager=False)),
            "/authors-eager": lambda: authors_json(Session(self.db).authors(eager=True)),
        }

    def handle(self, method: str, path: str) -> tuple[int, Any]:
        """The status and JSON body of a request."""
        route = path.split("?", 1)[0]
        handler = self.routes.get(route) if method == "GET" else None
        attributes = {"http.request.method": method, "url.path": route}
        if handler is not None:
            attributes["http.route"] = route
        name = f"{method} {route}" if handler is not None else method
        with self.tracer.start_as_current_span(name, kind=SpanKind.SERVER, attributes=attributes) as span:
            if handler is None:
                status, body = 404, {"error": f"no route {method} {route}"}
            else:
                status, body = 200, handler()
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return status, body


def server(app: App, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server for the app (port 0: any free port); serve_forever() runs it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
            status, body = app.handle("GET", self.path)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            sys.stderr.write(f"orm-demo: {self.address_string()} {format % args}\n")

    return ThreadingHTTPServer((host, port), Handler)


def main() -> None:
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    service = os.environ.get("OTEL_SERVICE_NAME", "orm-demo")
    host, _, port = os.environ.get("ORM_DEMO_LISTEN", "127.0.0.1:8000").rpartition(":")
    provider = tracer_provider(endpoint, service)
    app = App(
        provider,
        authors=int(os.environ.get("ORM_DEMO_AUTHORS", "20")),
        latency_ms=float(os.environ.get("ORM_DEMO_DB_LATENCY_MS", "5")),
    )
    httpd = server(app, host, int(port))
    # SIGTERM as Ctrl-C: stop serving, then send what is batched.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(
        f"orm-demo ({service}) on http://{host}:{httpd.server_port}: /authors-lazy, /authors-eager;"
        f" spans to {endpoint}",
        file=sys.stderr,
    )
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        provider.shutdown()  # sends the spans still batched


if __name__ == "__main__":
    main()
