#!/usr/bin/env python3
"""otelstore-query latency benchmark (`make bench-query`; `--spans 200000` for a quick run).

    bench/query.py [--backend postgres|clickhouse|all] [--spans N]

Per backend: a fresh database (PostgreSQL by scripts/pg.sh, or the ClickHouse test engine
tests/clickhouse/chdb_front.py with schema/clickhouse/ applied), N spans of the realistic shape
(bench/loadgen.py, 20 services, 8 spans per trace, 512 spans per request) pushed through the real
collector (bench/run.py's pipeline and exporter settings), each request's spans ending up to 24 h
before they are sent, the oldest first (loadgen.py send --spread 86400 --oldest-first), so the data
covers the last day and arrives in time order, as a collector receives it. Then
otelstore-query with its cache off (`cache: {ttl: 0s}`) and, one request at a time over one
keep-alive HTTP connection:

  trace-by-id    GET /api/traces/{id}, random ids among those loaded
  search 24 h    GET /api/traces?service=S&start=&end=&limit=20 over the last 24 h, random services
  search 24 h, any service
                 GET /api/v3/traces?query.start_time_min=&query.start_time_max=&query.search_depth=20
                 over the last 24 h (Jaeger's v3 API, whose service is optional)
  stats 24 h     GET /api/v1/services/stats?start=&end= over the last 24 h

p50/p95/p99 of each against the targets (trace-by-id p95 < 100 ms, searches and stats p95 < 500 ms),
and the load rate, printed and written as a dated section to docs/BENCHMARKS.md (bench/run.py's
write_doc). Helpers (PostgreSQL, collector, sender, engine, report) come from bench/run.py.

Environment (all optional): BENCH_COLLECTOR (collector binary), BENCH_QUERY (otelstore-query binary,
default target/release/otelstore-query), BENCH_QUERY_TRACES / BENCH_QUERY_SEARCHES / BENCH_QUERY_STATS
(requests per kind, default 200 / 100 / 50), BENCH_WRITE=0 (do not write docs/BENCHMARKS.md),
BENCH_KEEP=1 (keep .run/bench-query's databases).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402
import run as bench  # noqa: E402  bench/run.py
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

ROOT = bench.ROOT
RUN_DIR = ROOT / ".run/bench-query"
QUERY = Path(os.environ.get("BENCH_QUERY", ROOT / "target/release/otelstore-query"))
N_TRACES = int(os.environ.get("BENCH_QUERY_TRACES", "200"))
N_SEARCHES = int(os.environ.get("BENCH_QUERY_SEARCHES", "100"))
N_STATS = int(os.environ.get("BENCH_QUERY_STATS", "50"))
WRITE_DOC = os.environ.get("BENCH_WRITE", "1") != "0"
KEEP = os.environ.get("BENCH_KEEP", "0") == "1"
DAY = 86400
SERVICES = [
    "frontend", "checkout", "cart", "payment", "shipping", "inventory", "auth", "search", "catalog",
    "pricing", "recommendation", "email", "notification", "currency", "ad", "review", "user", "order",
    "fraud", "gateway",
]
SPANS_PER_TRACE = 8
TARGETS = {"trace-by-id": 100.0, "search 24 h": 500.0, "search 24 h, any service": 500.0,
           "stats 24 h": 500.0}  # p95, ms
log = bench.log
BenchError = bench.BenchError


def make_load(spans: int) -> tuple[dict, list[str]]:
    """The load file, its description, and a sample of its trace ids (hex)."""
    t = time.monotonic()
    requests = loadgen.realistic_requests(spans, services=SERVICES, spans_per_trace=SPANS_PER_TRACE)
    path = RUN_DIR / "load-query.bin"
    loadgen.write_load(path, requests)
    desc = loadgen.describe(requests)
    rng = random.Random(7)
    ids = []
    for raw in rng.sample(requests, min(len(requests), N_TRACES)):
        req = ExportTraceServiceRequest.FromString(raw)
        sp = rng.choice(list(req.resource_spans[0].scope_spans[0].spans))
        ids.append(sp.trace_id.hex())
    desc.update(path=path, made_by="bench/loadgen.py (realistic, 20 services, 8 spans per trace), sent with --spread 86400 --oldest-first",
                shape_doc="")
    log(f"load: {desc['spans']} spans in {desc['requests']} requests, {desc['otlp_bytes_per_span']:.0f} OTLP bytes "
        f"per span, made in {time.monotonic() - t:.1f}s")
    return desc, ids


def load_through_collector(name: str, config: dict, load: dict, count: callable) -> dict:
    """Pushes the load through a fresh collector; returns the load rate."""
    with ExitStack() as stack:
        col = bench.Collector(name, config)
        stack.callback(col.stop)
        col.start()
        target = config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
        sender = bench.Sender(target, load["path"], RUN_DIR / f"loadgen-{name}.log", ("--spread", str(DAY), "--oldest-first"))
        stack.callback(sender.stop)
        sender.wait_for("ready", bench.SENDER_READY_TIMEOUT)
        p = bench.push(name, col, sender, count)
        elapsed = p.t_stored - p.t_go
        log(f"{name}: {p.stored} spans stored in {elapsed:.1f}s = {p.stored / elapsed:,.0f} spans/s")
        return {"stored": p.stored, "elapsed": elapsed, "per_s": p.stored / elapsed}


class Query:
    """otelstore-query on a configuration of our own, cache off."""

    def __init__(self, name: str, backend: dict) -> None:
        (port,) = bench.free_ports(1)
        self.addr = ("127.0.0.1", port)
        self.config = {"listen": f"127.0.0.1:{port}", **backend, "cache": {"ttl": "0s"},
                       "request_timeout": "60s"}
        self.config_path = RUN_DIR / f"query-{name}.yaml"
        self.log_path = RUN_DIR / f"query-{name}.log"
        self.proc = None
        self.conn: http.client.HTTPConnection | None = None

    def start(self) -> None:
        self.config_path.write_text(bench.to_yaml(self.config) + "\n")
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen([str(QUERY), "--config", str(self.config_path)], stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"otelstore-query exited with {self.proc.returncode}:\n{bench.tail(self.log_path)}")
            try:
                status, _ = self.get("/api/services")
                if status == 200:
                    return
            except OSError:
                self.conn = None
            if time.monotonic() > deadline:
                raise BenchError(f"otelstore-query not ready after 60s:\n{bench.tail(self.log_path)}")
            time.sleep(0.2)

    def get(self, path: str) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(*self.addr, timeout=120)
        try:
            self.conn.request("GET", path)
            r = self.conn.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        bench.stop_process(self.proc)


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))]


def rfc3339(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 1e6, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def answered(answer: dict) -> bool:
    """Whether an answer has something: traces (v1's data, v3's resourceSpans) or services."""
    if "result" in answer:
        return bool(answer["result"].get("resourceSpans"))
    return bool(answer.get("data") if "data" in answer else answer.get("services"))


def measure(q: Query, ids: list[str]) -> dict:
    rng = random.Random(11)
    end = int(time.time() * 1e6)
    start = end - DAY * 1_000_000
    kinds = {
        "trace-by-id": [f"/api/traces/{rng.choice(ids)}" for _ in range(N_TRACES)],
        "search 24 h": [
            "/api/traces?" + urllib.parse.urlencode({"service": rng.choice(SERVICES), "start": start, "end": end, "limit": 20})
            for _ in range(N_SEARCHES)
        ],
        "search 24 h, any service": ["/api/v3/traces?" + urllib.parse.urlencode(
            {"query.start_time_min": rfc3339(start), "query.start_time_max": rfc3339(end), "query.search_depth": 20})
        ] * N_SEARCHES,
        "stats 24 h": ["/api/v1/services/stats?" + urllib.parse.urlencode({"start": rfc3339(start), "end": rfc3339(end)})] * N_STATS,
    }
    out = {}
    for kind, paths in kinds.items():
        q.get(paths[0])  # one unmeasured request: the connection and the server's first plan
        times, bad, sizes, found = [], 0, [], 0
        for path in paths:
            t = time.perf_counter()
            status, body = q.get(path)
            times.append((time.perf_counter() - t) * 1000)
            sizes.append(len(body))
            if status != 200:
                bad += 1
                if bad == 1:
                    log(f"{kind}: {path} -> {status}: {body[:300]!r}")
            else:
                found += answered(json.loads(body))
        r = {"n": len(paths), "p50": pct(times, 50), "p95": pct(times, 95), "p99": pct(times, 99),
             "max": max(times), "non_200": bad, "non_empty": found, "bytes": sum(sizes) / len(sizes),
             "source": json.loads(body).get("source") if status == 200 and kind == "stats 24 h" else None}
        r["ok"] = r["p95"] < TARGETS[kind] and bad == 0
        log(f"{kind}: {r['n']} requests, p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms, p99 {r['p99']:.1f} ms, "
            f"max {r['max']:.1f} ms; non-200 {bad}, non-empty answers {found}; target p95 < {TARGETS[kind]:.0f} ms: "
            f"{'met' if r['ok'] else 'NOT met'}")
        out[kind] = r
    return out


def bench_postgres(load: dict, ids: list[str]) -> dict:
    pg = bench.Postgres(RUN_DIR)
    with ExitStack() as stack:
        stack.callback(pg.stop)
        pg.start()
        version = pg.scalar("SELECT version()")
        log(f"PostgreSQL {pg.dsn}: {version}")
        ports = bench.free_ports(3)
        config = bench.postgres_collector_config(pg.dsn, "otel", *ports)
        rate = load_through_collector("query-postgres", config, load, lambda: bench.stored_rows(pg, "otel"))
        pg.conn.execute("VACUUM ANALYZE")  # what autovacuum would do by the time anyone queries a day of spans
        q = Query("postgres", {"postgres": {"dsn": pg.dsn, "schema": "otel"}})
        stack.callback(q.stop)
        q.start()
        results = measure(q, ids)
        size = pg.scalar("SELECT pg_size_pretty(pg_database_size(current_database()))")
    return {"backend": "PostgreSQL", "software": version.split(",")[0], "load": rate, "results": results,
            "notes": f"`VACUUM ANALYZE` after the load; database size {size}"}


def bench_clickhouse(load: dict, ids: list[str]) -> dict:
    front = bench.Front("query")
    bench.chdb_load("migrate", front.data)
    with ExitStack() as stack:
        stack.callback(front.stop)
        front.start()
        version = front.rows("SELECT version()")[0][0]
        ports = bench.free_ports(3)
        config = bench.clickhouse_collector_config("otelstore", front.url, *ports)
        rate = load_through_collector("query-clickhouse", config, load, front.count)
        q = Query("clickhouse", {"clickhouse": {"endpoint": front.url, "database": "otel"}})
        stack.callback(q.stop)
        q.start()
        results = measure(q, ids)
        parts = front.storage()["parts"]
    return {"backend": "ClickHouse", "software": f"ClickHouse {version} (chdb) behind tests/clickhouse/chdb_front.py, "
            "one query at a time", "load": rate, "results": results, "notes": f"{parts} active parts of otel_traces"}


def markdown(started: dt.datetime, m: dict, spans: int, load: dict, r: dict, elapsed: float) -> tuple[str, str]:
    key = f"{started.strftime('%Y-%m-%d')} {m['commit']} {spans} query {r['backend'].lower()}"
    below = "" if spans >= 10_000_000 else f" (**below the issue's 10,000,000**)"
    lines = [
        f"<!-- bench-run: {key} -->",
        f"## {started.strftime('%Y-%m-%d %H:%M')} UTC, commit {m['commit']}, query latency, {r['backend']}, "
        f"{r['load']['stored']:,} spans",
        "",
        "`make bench-query` (bench/query.py): otelstore-query's latency over HTTP, cache off.",
        "",
        f"- machine: {m['cpu']}, {m['nproc']} CPUs, {m['mem_gib']:.0f} GiB, Linux {m['kernel']}; load average "
        f"before the run {m['load_before']:.2f}",
        f"- {r['software']}; collector {bench.binary_file(bench.COLLECTOR)}; otelstore-query {bench.binary_file(QUERY)}",
        f"- spans loaded: **{r['load']['stored']:,}**{below}, {load['requests']:,} requests of {load['spans_per_request']:.0f} "
        f"spans, 20 services, 8 spans per trace, {load['otlp_bytes_per_span']:.0f} OTLP bytes per span; each request's "
        "spans end up to 24 h before it is sent, the oldest first (from 24 h ago to now in the order sent), through "
        "the collector of bench/run.py's pipeline",
        f"- load: **{r['load']['per_s']:,.0f} spans/s** stored ({r['load']['elapsed']:.1f} s); {r['notes']}",
        "- requests one at a time over one keep-alive connection, after one unmeasured request per kind; "
        "24 h = the last 24 h when the measurement starts",
        f"- the run took {elapsed / 60:.1f} min",
        "",
        "| request | n | p50 ms | p95 ms | p99 ms | max ms | non-200 | non-empty | target (p95) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    examples = {
        "trace-by-id": "`/api/traces/{id}`, random loaded ids",
        "search 24 h": "`/api/traces?service=S&start=&end=&limit=20`, random services",
        "search 24 h, any service": "`/api/v3/traces?query.start_time_min=&query.start_time_max=&query.search_depth=20`",
        "stats 24 h": "`/api/v1/services/stats?start=&end=` (RFC 3339)",
    }
    for kind, x in r["results"].items():
        lines.append(
            f"| {kind}: {examples[kind]} | {x['n']} | {x['p50']:.1f} | **{x['p95']:.1f}** | {x['p99']:.1f} | {x['max']:.1f} | "
            f"{x['non_200']} | {x['non_empty']} | < {TARGETS[kind]:.0f} ms: {'met' if x['ok'] else '**not met**'} |"
        )
    source = r["results"]["stats 24 h"].get("source")
    if source:
        lines += ["", f"The statistics' answers said `\"source\": \"{source}\"`."]
    lines.append(f"<!-- /bench-run: {key} -->")
    return key, "\n".join(lines) + "\n"


BENCHES = {"postgres": bench_postgres, "clickhouse": bench_clickhouse}


def main() -> int:
    global RUN_DIR
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=[*BENCHES, "all"], default="all")
    ap.add_argument("--spans", type=int, default=10_000_000, help="spans to load (default 10,000,000)")
    args = ap.parse_args()
    backends = list(BENCHES) if args.backend == "all" else [args.backend]
    bench.SPANS = args.spans  # push() waits for this many
    bench.RUN_DIR = RUN_DIR  # collector and engine files

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    for var in ("NO_PROXY", "no_proxy"):
        os.environ[var] = ",".join(filter(None, [os.environ.get(var, ""), "127.0.0.1", "localhost"]))

    ok = False
    try:
        missing = [str(p) for p in (bench.COLLECTOR, QUERY, bench.PG_SH, bench.CHDB_FRONT) if not p.exists()]
        if missing:
            raise BenchError(f"missing: {', '.join(missing)} (run `make build`)")
        m = bench.machine()
        m["load_before"] = os.getloadavg()[0]
        log(f"otelstore-query benchmark ({', '.join(backends)}), {args.spans} spans; commit {m['commit']}")
        if RUN_DIR.exists():
            bench.Postgres(RUN_DIR).pg_sh("stop")
            shutil.rmtree(RUN_DIR)
        RUN_DIR.mkdir(parents=True)
        RUN_DIR.chmod(0o755)
        load, ids = make_load(args.spans)
        for backend in backends:
            started, t0 = dt.datetime.now(dt.timezone.utc), time.monotonic()
            r = BENCHES[backend](load, ids)
            key, section = markdown(started, m, args.spans, load, r, time.monotonic() - t0)
            if WRITE_DOC:
                bench.write_doc(section, key)
                log(f"results written to {bench.DOC.relative_to(ROOT)}")
            else:
                log("\n" + section)
        ok = True
    except BenchError as e:
        log(f"\nbench-query: FAILED: {e}")
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        log("\nbench-query: interrupted; stopping everything")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if ok and not KEEP:
        for p in RUN_DIR.iterdir():
            if p.name in ("pgdata", "pgrun") or p.suffix == ".bin" or (p.name.startswith("chdb-") and p.is_dir()):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
