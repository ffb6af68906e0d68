#!/usr/bin/env python3
"""otelstore ingest benchmark (`make bench`; `BENCH_SPANS=100000 make bench` for a quick run).

    bench/run.py [--backend postgres|clickhouse|all] [--spans N]

The same loads (load shapes, bench/loadgen.py) go through each backend's path:

PostgreSQL: a fresh PostgreSQL (scripts/pg.sh in .run/bench), then for each load shape: a fresh
collector with the otelstore exporter writing to a schema of its own, a fixed number of OTLP/gRPC
spans pushed as fast as the collector takes them, and the time until every span is committed. Then
the ceiling: the same rows, dumped with COPY TO, loaded with psql's \\copy into a fresh table with
the same definition.

ClickHouse: for each load shape and each collector (ours with the otelstore exporter, and the
upstream contrib clickhouseexporter in a distribution of its own, bench/contrib/), a fresh test
engine (tests/clickhouse/chdb_front.py over chdb, schema/clickhouse/ applied by bench/chdb_load.py),
the same spans pushed through the collector into it, and the time until count() of otel_traces
shows them all. Then the ceiling: the rows the first collector stored, dumped to a Native file,
loaded into a fresh engine with `INSERT ... FROM INFILE` by chdb in-process (bench/chdb_load.py).

Each backend's results are printed and written as a dated section to docs/BENCHMARKS.md.

Options:
  --backend            postgres, clickhouse or all (default all: PostgreSQL first)
  --spans              spans per shape (default BENCH_SPANS, else 1000000)

Environment (all optional):
  BENCH_SPANS          spans per shape (default 1000000)
  BENCH_SHAPES         comma-separated, of: telemetrygen, realistic (default both)
  BENCH_SENDERS        concurrent gRPC calls of the load generator (default 4)
  BENCH_STALL_SECONDS  fail when no new row is stored for this long (default 60)
  BENCH_EXPORTER       JSON merged into the otelstore exporter's configuration, e.g.
                       '{"postgres": {"pool_size": 8}}' (with --backend postgres) or
                       '{"clickhouse": {"parallel_inserts": 2}}' (with --backend clickhouse)
  BENCH_COLLECTOR      the collector binary (default build/otelcol-otelstore/otelcol-otelstore)
  BENCH_CONTRIB_COLLECTOR  the contrib distribution (default
                       build/otelcol-contrib-clickhouse/otelcol-contrib-clickhouse)
  BENCH_CLICKHOUSE_COLLECTORS  comma-separated, of: otelstore, contrib (default both)
  BENCH_TG_RATE        telemetrygen --rate while recording its spans (default 100000; see loadgen.py)
  BENCH_WRITE          0: do not write docs/BENCHMARKS.md
  BENCH_KEEP           1: keep the databases, load and dump files in .run/bench afterwards
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import queue
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = ROOT / ".run/bench"
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
PSQL = PG_BIN / "psql"
PG_SH = ROOT / "scripts/pg.sh"
COLLECTOR = Path(os.environ.get("BENCH_COLLECTOR", ROOT / "build/otelcol-otelstore/otelcol-otelstore"))
CONTRIB_COLLECTOR = Path(
    os.environ.get("BENCH_CONTRIB_COLLECTOR", ROOT / "build/otelcol-contrib-clickhouse/otelcol-contrib-clickhouse")
)
TELEMETRYGEN = ROOT / ".tools/bin/telemetrygen"
LOADGEN = Path(__file__).resolve().parent / "loadgen.py"
CHDB_LOAD = Path(__file__).resolve().parent / "chdb_load.py"
CHDB_FRONT = ROOT / "tests/clickhouse/chdb_front.py"
DOC = ROOT / "docs/BENCHMARKS.md"

SPANS = int(os.environ.get("BENCH_SPANS", "1000000"))  # --spans overrides it
SHAPES = [s.strip() for s in os.environ.get("BENCH_SHAPES", "telemetrygen,realistic").split(",") if s.strip()]
CH_COLLECTORS = [s.strip() for s in os.environ.get("BENCH_CLICKHOUSE_COLLECTORS", "otelstore,contrib").split(",") if s.strip()]
SENDERS = int(os.environ.get("BENCH_SENDERS", "4"))
STALL_SECONDS = float(os.environ.get("BENCH_STALL_SECONDS", "60"))
EXPORTER_OVERRIDES = json.loads(os.environ.get("BENCH_EXPORTER") or "{}")
TG_RATE = float(os.environ.get("BENCH_TG_RATE", "100000"))
WRITE_DOC = os.environ.get("BENCH_WRITE", "1") != "0"
KEEP = os.environ.get("BENCH_KEEP", "0") == "1"

TICKS = os.sysconf("SC_CLK_TCK")
NOISE_LIMIT = 0.03  # other processes using more than this share of the CPU make a measurement noisy
NOISY = " (NOISY: other work on the machine)"
POLL_INTERVAL = 0.25
PG_TIMEOUT = 180
COLLECTOR_READY_TIMEOUT = 60
FRONT_READY_TIMEOUT = 60  # chdb_front.py: loading chdb, opening its data directory
STOP_TIMEOUT = 60  # collectors and chdb_front.py
SENDER_READY_TIMEOUT = 600  # reading and indexing the load file
COPY_TIMEOUT = 3600

# The one server setting we change, for both our run and the ceiling: each row's commit time becomes
# readable with pg_xact_commit_timestamp(xmin), which gives the end-to-end lag of every span without
# adding a column to the schema. It costs a few bytes per transaction.
# Every statement's duration goes to the server log, to split the database's time among COPY,
# rollup upserts and the rest (a few lines per 20k-row transaction: no measurable cost).
PG_CHANGED = {"track_commit_timestamp": "on", "log_min_duration_statement": "0"}
SERVER_LOG = RUN_DIR / "pgrun/server.log"
STATEMENT_KINDS = [
    ("COPY", re.compile(r"^COPY ")),
    ("rollup upserts", re.compile(r"INSERT INTO \S+\.(span_stats_1h|error_logs_1h|service_dependencies_1h|metrics_rollup_\w+) ")),
    ("request ids", re.compile(r"otelstore_batches")),
    ("COMMIT", re.compile(r"^COMMIT")),
]
PG_SHOWN = [
    "shared_buffers", "effective_cache_size", "work_mem", "maintenance_work_mem", "wal_level",
    "wal_buffers", "max_wal_size", "checkpoint_timeout", "synchronous_commit", "fsync",
    "full_page_writes", "wal_compression", "autovacuum", "max_connections", "track_commit_timestamp",
]

SHAPE_DOC = {
    "telemetrygen": "telemetrygen's default spans (2 per trace, 2 span attributes, 1 resource attribute, "
    "~100 spans per request), recorded from telemetrygen and replayed by bench/loadgen.py",
    "realistic": "10 spans per trace, 10 span attributes, 8 resource attributes, 10 % of spans with events, "
    "512 spans per request, made and sent by bench/loadgen.py",
}

DEFINITIONS = """\
- **stored spans/s** = spans / (commit time of the last row - start of the load). Commit times are
  read from PostgreSQL (`pg_xact_commit_timestamp(xmin)`, `track_commit_timestamp = on`).
- **steady spans/s** = spans / (last commit - first commit): the rate once rows flow.
- **sent spans/s**: how fast the load generator got its requests accepted by the collector (the
  receiver answers once the sending queue holds the data).
- **lag p50/p99/max** = commit time of a row - end time of its span; every span's end time is set
  to the moment its request is sent, so this is the delay from the client to a committed row.
- **tail** = last commit - the load generator's last acknowledged request.
- **CPU s per 100k spans**: user+system time (/proc/PID/stat) between the start of the load and the
  last commit. PostgreSQL's is the sum over the postmaster and all its children (exited ones
  included), except the benchmark's own polling connection.
- **peak RSS**: the collector's VmHWM (/proc/PID/status) at the end of the shape's run.
- **other processes**: CPU that user-space processes other than ours (collector, PostgreSQL, load
  generator, bench/run.py and their children) used during a measurement, as a share of the
  machine; above 3 % the measurement is marked noisy.
- **ceiling**: the same rows, dumped with `COPY (SELECT ...) TO`, loaded with one
  `psql -c "\\copy ... FROM file"` into a fresh table created with `LIKE ... INCLUDING ALL` (same
  columns and indexes): rows / wall time of that psql. "of ceiling" = stored spans/s / the best
  ceiling of the shape."""

CLICKHOUSE_DEFINITIONS = """\
The ClickHouse path (`make bench-clickhouse`, or `bench/run.py --backend clickhouse`; its sections'
titles end in "ClickHouse"): the test engine is ClickHouse embedded in Python (chdb) behind
tests/clickhouse/chdb_front.py, an HTTP front that speaks ClickHouse's HTTP interface and runs one
query at a time. Each collector run gets a fresh engine (a new data directory) with schema/clickhouse/
applied by bench/chdb_load.py (tests/clickhouse/test_schema.migrate); neither collector creates
tables (`create_schema: false`), so both write into the same schema. Both run the same pipeline
(OTLP/gRPC receiver, memory_limiter, the exporter with the example's sending queue: at most 50,000
spans, batches of at least 8,192 spans or what 200 ms gathered, 10 consumers) and insert
LZ4-compressed Native blocks over HTTP: ours merges up to 20,000 rows per insert with up to 4 inserts
in flight; the contrib clickhouseexporter (bench/contrib/, `async_insert: false` like ours) inserts
each batch of the queue.

- **stored spans/s** = spans / (time the first `SELECT count() FROM otel.otel_traces` that counts
  them all answered - start of the load); the count is polled through the front every 0.25 s.
- **of the ceiling** = stored spans/s / the ceiling's rows/s, same shape, same run.
- **spans/s per CPU core of the collector** = spans / CPU seconds of the collector process alone
  (user + system, /proc/PID/stat, from the start of the load until every span was counted): the
  rate at which one fully busy core would take spans.
- **engine CPU**: the front's process, where chdb runs: HTTP, decompression, the inserts, the
  materialized views, background merges, and the benchmark's count() polls.
- **otel_traces on disk per span**: system.parts of otel_traces (active parts) once every span is
  stored: bytes on disk, and the columns' compressed / uncompressed bytes; the largest columns from
  system.columns.
- **ceiling**: the rows the first collector of the shape stored, written by the engine to a Native
  file (`SELECT * FROM otel.otel_traces INTO OUTFILE ... FORMAT Native`), then loaded into a fresh
  engine with the same schema by chdb in-process (no HTTP, bench/chdb_load.py) with one
  `INSERT INTO otel.otel_traces FROM INFILE ... FORMAT Native`: rows / wall time of that statement,
  in the same run as the collectors. Engine CPU: that process's during the statement."""


class BenchError(Exception):
    pass


def log(msg: str = "") -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- small helpers


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tail(path: Path, chars: int = 4000) -> str:
    try:
        data = path.read_text(errors="replace")
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return data[-chars:]


def run(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, start_new_session=True, **kw)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{' '.join(map(str, cmd))} did not finish in {timeout}s") from e
    if r.returncode != 0:
        raise BenchError(f"{' '.join(map(str, cmd))} failed (rc={r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def to_yaml(obj, indent: int = 0) -> str:
    """Enough YAML for a collector configuration (dicts, lists, scalars)."""

    def scalar(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, dict):
            return "{}"
        if isinstance(v, list):
            return "[]"
        s = str(v)
        return s if re.fullmatch(r"[A-Za-z0-9_./:@-]+", s) and s not in ("true", "false", "null") else json.dumps(s)

    pad = "  " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:")
                lines.append(to_yaml(v, indent + 1))
            else:
                lines.append(f"{pad}{k}: {scalar(v)}")
    else:
        for v in obj:
            if isinstance(v, (dict, list)) and v:
                sub = to_yaml(v, indent + 1).split("\n")
                lines.append(f"{pad}- {sub[0].strip()}")
                lines.extend(sub[1:])
            else:
                lines.append(f"{pad}- {scalar(v)}")
    return "\n".join(lines)


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# --------------------------------------------------------------------------- /proc


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 is the state)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pid: int, children: bool = False) -> float:
    f = proc_stat(pid)
    if f is None:
        return 0.0
    ticks = int(f[11]) + int(f[12])  # utime, stime
    if children:
        ticks += int(f[13]) + int(f[14])  # cutime, cstime: children that exited and were waited for
    return ticks / TICKS


def process_cpu() -> dict[int, tuple[str, int, float]]:
    """Every process now: pid -> (name, parent pid, CPU seconds of its own)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            name = text[text.index("(") + 1 : text.rindex(")")]
            f = text.rsplit(")", 1)[1].split()
            out[int(stat.parent.name)] = (name, int(f[1]), (int(f[11]) + int(f[12])) / TICKS)
        except (OSError, ValueError, IndexError):
            continue
    return out


def others(before: dict, after: dict, ours: set[int], wall: float) -> tuple[float, str]:
    """CPU used between two process_cpu() snapshots by user-space processes other than `ours` and
    their children, as a share of the machine's capacity, and the top ones by name. Kernel threads
    (writeback, softirq) are left out: they mostly work for our own writes. Processes that came and
    went between the snapshots are not seen."""
    by_name: dict[str, float] = {}
    for pid, (name, ppid, cpu) in after.items():
        if pid in ours or ppid in ours or ppid == 2 or pid == 2:  # 2: kthreadd, the kernel threads' parent
            continue
        prev = before.get(pid)
        used = cpu - prev[2] if prev and prev[0] == name else cpu
        if used > 0:
            by_name[name] = by_name.get(name, 0.0) + used
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:3]
    share = sum(by_name.values()) / (wall * (os.cpu_count() or 1))
    return share, ", ".join(f"{name} {cpu:.1f} s" for name, cpu in top) or "none"


def status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


# --------------------------------------------------------------------------- PostgreSQL


class Postgres:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dsn = ""
        self.conn: psycopg.Connection | None = None
        self.own_backend = 0

    def pg_sh(self, command: str) -> str:
        return run(["bash", str(PG_SH), command, str(self.dir)], timeout=PG_TIMEOUT).stdout

    def start(self) -> None:
        lines = [ln for ln in self.pg_sh("start").splitlines() if ln.strip()]
        if not lines:
            raise BenchError("pg.sh start printed no DSN")
        self.dsn = lines[-1].strip()
        self.connect()

    def connect(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                self.conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.conn.execute("SET statement_timeout = '30min'")
        self.own_backend = self.scalar("SELECT pg_backend_pid()")

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.pg_sh("stop")

    def abandon(self) -> None:
        """Forget a connection stuck in a query (closing it would wait for that query)."""
        self.conn = None

    def configure(self, settings: dict[str, str]) -> None:
        """ALTER SYSTEM, then a restart (track_commit_timestamp needs one)."""
        for k, v in settings.items():
            self.conn.execute(f"ALTER SYSTEM SET {k} = '{v}'")
        self.stop()
        self.start()

    def scalar(self, sql: str, params=None):
        return self.conn.execute(sql, params).fetchone()[0]

    def rows(self, sql: str, params=None) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()

    def postmaster(self) -> int:
        return int((self.dir / "pgdata/postmaster.pid").read_text().split("\n", 1)[0])

    def cpu(self) -> float:
        """CPU seconds of the postmaster and every process it forked, live or exited (the postmaster
        waits for its children, so theirs is in its cutime/cstime), except our own backend."""
        pm = self.postmaster()
        total = cpu_seconds(pm, children=True)
        for stat in Path("/proc").glob("[0-9]*/stat"):
            pid = int(stat.parent.name)
            if pid == self.own_backend:
                continue
            f = proc_stat(pid)
            if f is not None and int(f[1]) == pm:
                total += (int(f[11]) + int(f[12])) / TICKS
        return total

    def wal_lsn(self) -> int:
        return int(self.scalar("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))

    def psql(self, command: str, timeout: float) -> subprocess.CompletedProcess:
        return run([str(PSQL), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.dsn, "-c", command], timeout=timeout)


# --------------------------------------------------------------------------- collector


# examples/postgres.yaml's sending queue: at most 50,000 spans, merged into batches of about 8,192
# (exporterhelper's other queue settings, such as 10 consumers, at their defaults).
SENDING_QUEUE = {"sizer": "items", "queue_size": 50000, "batch": {"flush_timeout": "200ms", "min_size": 8192}}


def otelstore_exporter(backend: dict) -> dict:
    """The otelstore exporter on `backend` (its section, such as {"postgres": ...}, and any
    top-level keys) with the example's sending queue; every other key keeps its default (pool_size,
    max_batch_rows, timeout, ...) unless BENCH_EXPORTER overrides it."""
    return merge({**backend, "sending_queue": SENDING_QUEUE}, EXPORTER_OVERRIDES)


def collector_config(exporter: str, settings: dict, grpc: int | str, health: int | str, metrics: int | str) -> dict:
    """examples/postgres.yaml's traces pipeline (memory_limiter, then the exporter `exporter`
    configured with `settings`) on our ports."""
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{grpc}"}}}},
        "processors": {
            "memory_limiter": {"check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 20},
        },
        "exporters": {exporter: settings},
        "extensions": {"health_check": {"endpoint": f"127.0.0.1:{health}"}},
        "service": {
            "extensions": ["health_check"],
            "pipelines": {
                "traces": {"receivers": ["otlp"], "processors": ["memory_limiter"], "exporters": [exporter]}
            },
            "telemetry": {
                "logs": {"level": "info"},
                "metrics": {"readers": [{"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": metrics}}}}]},
            },
        },
    }


def postgres_collector_config(dsn: str, schema: str, grpc: int | str, health: int | str, metrics: int | str) -> dict:
    return collector_config("otelstore", otelstore_exporter({"postgres": {"dsn": dsn, "schema": schema}}), grpc, health, metrics)


class Collector:
    def __init__(self, name: str, config: dict, binary: Path = COLLECTOR) -> None:
        self.name = name
        self.binary = binary
        self.config = config
        self.config_path = RUN_DIR / f"collector-{name}.yaml"
        self.log_path = RUN_DIR / f"collector-{name}.log"
        self.proc: subprocess.Popen | None = None
        self.health = f"http://{config['extensions']['health_check']['endpoint']}/"
        prom = config["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]
        self.metrics_url = f"http://{prom['host']}:{prom['port']}/metrics"

    def start(self) -> None:
        self.config_path.write_text(to_yaml(self.config) + "\n")
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                [str(self.binary), "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + COLLECTOR_READY_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"collector exited with {self.proc.returncode} at start:\n{tail(self.log_path)}")
            try:
                with urllib.request.urlopen(self.health, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"collector not healthy after {COLLECTOR_READY_TIMEOUT}s:\n{tail(self.log_path)}")
            time.sleep(0.2)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def metrics(self) -> str:
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=10) as r:
                return r.read().decode(errors="replace")
        except OSError as e:
            return f"# could not read {self.metrics_url}: {e}\n"

    def stop(self) -> int | None:
        return stop_process(self.proc)


def stop_process(proc: subprocess.Popen | None) -> int | None:
    """SIGTERM, SIGKILL after STOP_TIMEOUT; its exit status (None when it never started)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def metric_lines(text: str, pattern: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#") and re.match(pattern, ln)]


def metric_sum(text: str, name: str) -> float:
    """Sum of a metric's samples over all label sets (0 when absent); with or without `_total`."""
    total = 0.0
    for ln in metric_lines(text, re.escape(name) + r"(_total)?(\{|\s)"):
        try:
            total += float(ln.rsplit(None, 1)[1])
        except ValueError:
            pass
    return total


# --------------------------------------------------------------------------- loads


def make_loads() -> dict[str, dict]:
    loads = {}
    for shape in SHAPES:
        path = RUN_DIR / f"load-{shape}.bin"
        t = time.monotonic()
        if shape == "telemetrygen":
            (port,) = free_ports(1)
            requests, commands = loadgen.record_telemetrygen(
                TELEMETRYGEN, SPANS, port, RUN_DIR / "telemetrygen.log", workers=4, rate=TG_RATE
            )
            made_by = (
                f"telemetrygen {tool_version(TELEMETRYGEN)}, recorded ({len(commands)} run(s) of "
                f"`{commands[0].replace(str(port), 'PORT')}`), replayed by bench/loadgen.py"
            )
        elif shape == "realistic":
            requests = loadgen.realistic_requests(SPANS)
            made_by = "bench/loadgen.py"
        else:
            raise BenchError(f"unknown shape {shape!r} in BENCH_SHAPES (known: telemetrygen, realistic)")
        loadgen.write_load(path, requests)
        desc = loadgen.describe(requests)
        desc.update(path=path, made_by=made_by, shape_doc=SHAPE_DOC[shape])
        log(
            f"load {shape}: {desc['spans']} spans in {desc['requests']} requests "
            f"({desc['spans_per_request']:.0f} spans, {desc['otlp_bytes_per_span']:.0f} OTLP bytes per span; "
            f"{desc['span_attributes']:.1f} span / {desc['resource_attributes']:.1f} resource attributes; "
            f"{100 * desc['spans_with_events']:.1f} % with events) made by {made_by} in {time.monotonic() - t:.1f}s"
        )
        if desc["spans"] != SPANS:
            raise BenchError(f"load {shape} has {desc['spans']} spans, not {SPANS}")
        loads[shape] = desc
    return loads


def tool_version(binary: Path) -> str:
    try:
        out = subprocess.run(["go", "version", "-m", str(binary)], capture_output=True, text=True, timeout=30).stdout
        m = re.search(r"^\s*mod\s+\S+\s+(v\S+)", out, re.M)
        return m.group(1) if m else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


# --------------------------------------------------------------------------- one shape through the collector


class Sender:
    """bench/loadgen.py send, in its own process so that its CPU is its own."""

    def __init__(self, target: str, load: Path, log_path: Path, extra: tuple[str, ...] = ()) -> None:
        self.log_path = log_path
        with open(log_path, "ab") as errf:
            self.proc = subprocess.Popen(
                [sys.executable, str(LOADGEN), "send", "--target", target, "--load", str(load),
                 "--concurrency", str(SENDERS), *extra],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errf, text=True, start_new_session=True,
            )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                pass
        self.lines.put(None)

    def wait_for(self, event: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchError(f"load generator: no {event!r} within {timeout}s\n{tail(self.log_path)}") from None
            if msg is None:
                raise BenchError(f"load generator exited (rc={self.proc.wait()}) before {event!r}\n{tail(self.log_path)}")
            if msg.get("event") == event:
                return msg

    def poll_done(self) -> dict | None:
        try:
            msg = self.lines.get_nowait()
        except queue.Empty:
            return None
        if msg is None:
            raise BenchError(f"load generator exited (rc={self.proc.wait()}) without finishing\n{tail(self.log_path)}")
        return msg if msg.get("event") == "done" else None

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def stored_rows(pg: Postgres, schema: str, timeout: float = 30) -> int:
    """Rows committed so far: the exporter records each request's row count in otelstore_batches in
    the same transaction as the rows, so this is exact and far cheaper than count(*) on spans.
    Runs in a thread so that a server that stops answering fails the run instead of hanging it."""

    def query() -> int:
        try:
            return int(pg.scalar(f'SELECT coalesce(sum(rows), 0) FROM "{schema}".otelstore_batches'))
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            return 0  # the exporter creates its tables on the first write

    result: list = []
    worker = threading.Thread(target=lambda: result.append(query()), daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        pg.abandon()
        raise BenchError(f"PostgreSQL did not answer a progress query within {timeout:.0f}s")
    if not result:
        raise BenchError("the progress query failed (see the traceback above)")
    return result[0]


def statement_time(since: int) -> dict[str, float]:
    """Seconds of statement time per kind, from the server log's duration lines after byte `since`."""
    totals: dict[str, float] = {}
    line_re = re.compile(r"duration: ([0-9.]+) ms  (?:statement|execute [^:]*|bind [^:]*|parse [^:]*): (.*)")
    with open(SERVER_LOG, "rb") as f:
        f.seek(since)
        for raw in f:
            m = line_re.search(raw.decode("utf-8", "replace"))
            if not m:
                continue
            kind = next((k for k, pattern in STATEMENT_KINDS if pattern.search(m.group(2))), "other")
            totals[kind] = totals.get(kind, 0.0) + float(m.group(1)) / 1000
    return totals


def describe_db_time(totals: dict[str, float]) -> str:
    whole = sum(totals.values()) or 1.0
    parts = sorted(totals.items(), key=lambda kv: -kv[1])
    return f"{whole:.1f} s: " + ", ".join(f"{k} {100 * v / whole:.1f} %" for k, v in parts)


@dataclass
class Pushed:
    """What push() saw; times are time.time()."""

    done: dict  # the load generator's "done" line
    t_go: float  # the load started
    t_stored: float  # the first progress query that counted every span answered
    stored: int
    held_max: float  # otelstore_memory_held, sampled every 2 s
    queue_max: float  # otelcol_exporter_queue_size, sampled every 2 s


def start_collector(name: str, config_for: Callable[[int, int, int], dict], load: dict, stack: ExitStack,
                    binary: Path = COLLECTOR) -> tuple[Collector, Sender]:
    """A collector on config_for(grpc, health, metrics ports), and a load generator ready to send it
    `load`; `stack` stops both."""
    config = config_for(*free_ports(3))
    col = Collector(name, config, binary)
    stack.callback(col.stop)
    col.start()
    log(f"\n=== {name}: collector pid {col.proc.pid}, config {col.config_path}:\n{to_yaml(col.config)}\n")
    target = config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    sender = Sender(target, load["path"], RUN_DIR / f"loadgen-{name}.log")
    stack.callback(sender.stop)
    sender.wait_for("ready", SENDER_READY_TIMEOUT)
    return col, sender


def push(name: str, col: Collector, sender: Sender, count_stored: Callable[[], int]) -> Pushed:
    """Starts the load and returns once the load generator is done and count_stored() counts every
    span; fails when the collector exits or no new row is stored for STALL_SECONDS."""
    t_go = time.time()
    sender.go()
    log(f"{name}: sending {SPANS} spans with {SENDERS} concurrent calls")

    done: dict | None = None
    stored, last_stored, last_change = 0, -1, time.monotonic()
    last_report = last_scrape = 0.0
    held_max = queue_max = 0.0
    while True:
        now = time.monotonic()
        stored = count_stored()
        if stored != last_stored:
            last_stored, last_change = stored, now
        if done is None:
            done = sender.poll_done()
            if done is not None:
                log(f"{name}: load generator finished after {done['end'] - done['start']:.1f}s "
                    f"({done['retries']} retried calls); {stored} spans stored")
                if done["errors"]:
                    raise BenchError(f"load generator gave up on requests: {done['errors']}")
        if not col.alive():
            raise BenchError(f"collector exited with {col.proc.returncode}\n{tail(col.log_path)}")
        if stored >= SPANS and done is not None:
            return Pushed(done, t_go, time.time(), stored, held_max, queue_max)
        if now - last_change > STALL_SECONDS:
            raise BenchError(
                f"{name}: no new rows for {STALL_SECONDS:.0f}s: {stored} of {SPANS} stored, load generator "
                f"{'finished' if done else 'still sending'}\ncollector log:\n{tail(col.log_path)}"
            )
        if now - last_scrape >= 2:  # cheap: a few hundred lines of text
            last_scrape = now
            sample = col.metrics()
            held_max = max(held_max, metric_sum(sample, "otelstore_memory_held"))
            queue_max = max(queue_max, metric_sum(sample, "otelcol_exporter_queue_size"))
        if now - last_report >= 10:
            last_report = now
            log(f"{name}: {stored} spans stored after {time.time() - t_go:.0f}s, "
                f"collector RSS {(status_kib(col.proc.pid, 'VmRSS') or 0) / 1024:.0f} MiB")
        time.sleep(POLL_INTERVAL)


def final_metrics(name: str, col: Collector) -> str:
    """The collector's metrics, once the otelstore exporter's counters (published once a second)
    show every row (a bounded wait; none for other exporters), also written to metrics-NAME.txt."""
    deadline = time.monotonic() + 5
    while True:
        metrics = col.metrics()
        if "otelstore_" not in metrics or metric_sum(metrics, "otelstore_rows_written") >= SPANS:
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    (RUN_DIR / f"metrics-{name}.txt").write_text(metrics)
    return metrics


def pipeline_metrics(metrics: str, pushed: Pushed) -> dict:
    return {
        "receiver_accepted": metric_sum(metrics, "otelcol_receiver_accepted_spans"),
        "receiver_refused": metric_sum(metrics, "otelcol_receiver_refused_spans"),
        "exporter_sent": metric_sum(metrics, "otelcol_exporter_sent_spans"),
        "exporter_send_failed": metric_sum(metrics, "otelcol_exporter_send_failed_spans"),
        "exporter_queue_size_max": pushed.queue_max,  # sampled every 2 s
    }


def run_shape(shape: str, load: dict, pg: Postgres, stack: ExitStack) -> dict:
    schema = f"bench_{shape}"
    col, sender = start_collector(shape, lambda *ports: postgres_collector_config(pg.dsn, schema, *ports), load, stack)

    pg.conn.execute("CHECKPOINT")  # every run starts with no dirty buffers from the one before
    col_cpu0, pg_cpu0, wal0 = cpu_seconds(col.proc.pid), pg.cpu(), pg.wal_lsn()
    log_offset = SERVER_LOG.stat().st_size
    procs0 = process_cpu()
    pushed = push(shape, col, sender, lambda: stored_rows(pg, schema))
    done, t_go = pushed.done, pushed.t_go
    time.sleep(0.5)  # let the last backends' CPU time settle
    col_cpu1, pg_cpu1, wal1 = cpu_seconds(col.proc.pid), pg.cpu(), pg.wal_lsn()
    db_time = statement_time(log_offset)
    t_end, procs1 = time.time(), process_cpu()
    other_share, other_top = others(procs0, procs1, {os.getpid(), col.proc.pid, sender.proc.pid, pg.postmaster()}, t_end - t_go)
    peak_rss = status_kib(col.proc.pid, "VmHWM")
    metrics = final_metrics(shape, col)
    rc = col.stop()
    log(f"{shape}: all {pushed.stored} spans stored; collector stopped (rc={rc})")

    table = f'"{schema}".spans'
    count = pg.scalar(f"SELECT count(*) FROM {table}")
    first, last, transactions, rows_p50, rows_max = pg.rows(
        f"""SELECT extract(epoch FROM min(ts))::float8, extract(epoch FROM max(ts))::float8, count(*),
                   percentile_disc(0.5) WITHIN GROUP (ORDER BY n), max(n)
            FROM (SELECT pg_xact_commit_timestamp(x) AS ts, n
                  FROM (SELECT xmin AS x, count(*) AS n FROM {table} GROUP BY xmin) t) u"""
    )[0]
    lag = pg.rows(
        f"""SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY lag), max(lag)
            FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8
                         - (start_time_unix_nano + duration_ns) / 1e9 AS lag FROM {table}) q"""
    )[0]
    requests_stored, rows_per_request = pg.rows(
        f'SELECT count(*), avg(rows)::float8 FROM "{schema}".otelstore_batches'
    )[0]
    # spans is partitioned by day: its size is that of its partitions.
    heap, indexes = pg.rows(
        f"SELECT sum(pg_relation_size(relid))::bigint, sum(pg_indexes_size(relid))::bigint FROM pg_partition_tree('{table}') WHERE isleaf"
    )[0]
    # Did autovacuum work on the table while it was filling? Its CPU is in PostgreSQL's.
    autovacuums, autoanalyzes = pg.rows(
        f"SELECT coalesce(sum(autovacuum_count), 0), coalesce(sum(autoanalyze_count), 0) FROM pg_stat_user_tables"
        f" WHERE relid IN (SELECT relid FROM pg_partition_tree('{table}'))",
    )[0]
    pg.conn.execute(f"VACUUM (ANALYZE) {table}")  # so that autovacuum does not run during the next measurement
    pg.conn.execute("CHECKPOINT")

    result = {
        "shape": shape,
        "schema": schema,
        "spans": SPANS,
        "count": count,
        "stored_per_s": SPANS / (last - t_go),
        "steady_per_s": SPANS / (last - first) if last > first else float("nan"),
        "sent_per_s": SPANS / (done["end"] - done["start"]),
        "elapsed": last - t_go,
        "send_elapsed": done["end"] - done["start"],
        "retries": done["retries"],
        "tail": last - done["end"],
        "lag_p50": lag[0][0],
        "lag_p99": lag[0][1],
        "lag_max": lag[1],
        "collector_cpu": col_cpu1 - col_cpu0,
        "pg_cpu": pg_cpu1 - pg_cpu0,
        "db_time": db_time,
        "sender_cpu": done["cpu_seconds"],
        "peak_rss_mib": (peak_rss or 0) / 1024,
        "wal_bytes": wal1 - wal0,
        "heap_bytes": heap,
        "index_bytes": indexes,
        "transactions": transactions,
        "autovacuum": f"{autovacuums} autovacuum(s), {autoanalyzes} autoanalyze(s)",
        "rows_per_tx_p50": rows_p50,
        "rows_per_tx_max": rows_max,
        "requests_stored": requests_stored,
        "rows_per_request": rows_per_request,
        "collector_rc": rc,
        # CPU of user-space processes other than the collector, PostgreSQL, the load generator and us.
        "other_cpu_share": other_share,
        "others_top": other_top,
        "metrics_otelstore": metric_lines(metrics, r"otelstore_(?!write_duration_bucket)"),
        "metrics_pipeline": pipeline_metrics(metrics, pushed),
        "otelstore_memory_held_max_mib": pushed.held_max / 2**20,  # sampled every 2 s
        "otelstore_writes": metric_sum(metrics, "otelstore_write_duration_count"),
        "otelstore_write_seconds_avg": metric_sum(metrics, "otelstore_write_duration_sum")
        / max(1.0, metric_sum(metrics, "otelstore_write_duration_count")),
    }
    if count != SPANS:
        raise BenchError(f"{shape}: {count} rows in {table}, expected {SPANS} (duplicates from retried calls?)")
    print_shape(result)
    return result


def print_shape(r: dict) -> None:
    per = 100_000 / r["spans"]
    log(f"""
{r['shape']}: {r['spans']} spans
  stored spans/s      {r['stored_per_s']:,.0f}  (spans / (last commit - load start) = {r['elapsed']:.2f}s)
  steady spans/s      {r['steady_per_s']:,.0f}  (spans / (last commit - first commit))
  sent spans/s        {r['sent_per_s']:,.0f}  (load generator: {r['send_elapsed']:.2f}s, {r['retries']} retried calls, {r['sender_cpu']:.1f} CPU s)
  lag p50/p99/max     {r['lag_p50']:.3f} / {r['lag_p99']:.3f} / {r['lag_max']:.3f} s; tail {r['tail']:.3f} s
  collector CPU       {r['collector_cpu'] * per:.2f} s per 100k spans ({r['collector_cpu']:.1f} s)
  PostgreSQL CPU      {r['pg_cpu'] * per:.2f} s per 100k spans ({r['pg_cpu']:.1f} s)
  collector peak RSS  {r['peak_rss_mib']:.0f} MiB
  WAL                 {r['wal_bytes'] / r['spans']:.0f} bytes per span; table {r['heap_bytes'] / r['spans']:.0f} + indexes {r['index_bytes'] / r['spans']:.0f} bytes per span
  autovacuum          {r['autovacuum']} of the table during the run
  COPY transactions   {r['transactions']} (rows per transaction p50 {r['rows_per_tx_p50']}, max {r['rows_per_tx_max']}); {r['requests_stored']} exporter requests of {r['rows_per_request']:.0f} rows on average
  exporter writes     {r['otelstore_writes']:.0f} (otelstore_write_duration: {r['otelstore_write_seconds_avg']:.3f} s on average); core memory held max {r['otelstore_memory_held_max_mib']:.0f} MiB
  pipeline            {r['metrics_pipeline']}
  other processes     {100 * r['other_cpu_share']:.1f} % of the machine's CPU during the run{NOISY if r['other_cpu_share'] > NOISE_LIMIT else ''}; most: {r['others_top']}""")
    if r["metrics_otelstore"]:
        log("  otelstore metrics:\n    " + "\n    ".join(r["metrics_otelstore"]))
    else:
        log("  otelstore metrics: none on the collector's metrics endpoint")


# --------------------------------------------------------------------------- the ceiling


def run_ceiling(shape: str, pg: Postgres) -> list[dict]:
    source = f'"bench_{shape}".spans'
    out = []
    dumps = {}
    for fmt in ("binary", "text"):
        path = RUN_DIR / f"dump-{shape}.{fmt}"
        pg.psql(f"\\copy (SELECT * FROM {source}) TO '{path}' WITH (FORMAT {fmt})", timeout=COPY_TIMEOUT)
        dumps[fmt] = path
    for fmt, path in dumps.items():
        schema = f"ceiling_{shape}_{fmt}"
        pg.conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        pg.conn.execute(f'CREATE SCHEMA "{schema}"')
        pg.conn.execute(f'CREATE TABLE "{schema}".spans (LIKE {source} INCLUDING ALL)')
        pg.conn.execute("CHECKPOINT")
        pg_cpu0, wal0 = pg.cpu(), pg.wal_lsn()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        procs0 = process_cpu()
        t0 = time.monotonic()
        pg.psql(f"\\copy \"{schema}\".spans FROM '{path}' WITH (FORMAT {fmt})", timeout=COPY_TIMEOUT)
        elapsed = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        time.sleep(0.5)
        pg_cpu1, wal1 = pg.cpu(), pg.wal_lsn()
        procs1 = process_cpu()
        wall = time.monotonic() - t0
        rows = pg.scalar(f'SELECT count(*) FROM "{schema}".spans')
        if rows != SPANS:
            raise BenchError(f"ceiling {shape} {fmt}: {rows} rows loaded, expected {SPANS}")
        r = {
            "shape": shape,
            "format": fmt,
            "rows_per_s": rows / elapsed,
            "elapsed": elapsed,
            "file_bytes": path.stat().st_size,
            "pg_cpu": pg_cpu1 - pg_cpu0,
            "psql_cpu": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
            "wal_bytes": wal1 - wal0,
        }
        r["other_cpu_share"], r["others_top"] = others(procs0, procs1, {os.getpid(), pg.postmaster()}, wall)
        log(f"ceiling {shape} {fmt}: {r['rows_per_s']:,.0f} rows/s ({elapsed:.2f}s; file {r['file_bytes'] / 2**20:.0f} MiB; "
            f"PostgreSQL CPU {r['pg_cpu'] * 100_000 / SPANS:.2f} s per 100k rows; psql CPU {r['psql_cpu']:.1f} s; "
            f"WAL {r['wal_bytes'] / SPANS:.0f} bytes per row; other processes {100 * r['other_cpu_share']:.1f} % of the CPU"
            f"{NOISY if r['other_cpu_share'] > NOISE_LIMIT else ''}, most: {r['others_top']})")
        pg.conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        pg.conn.execute("CHECKPOINT")
        out.append(r)
    for path in dumps.values():
        path.unlink(missing_ok=True)
    return out


# --------------------------------------------------------------------------- ClickHouse


class Front:
    """tests/clickhouse/chdb_front.py (ClickHouse's HTTP interface over one chdb session) on a data
    directory of its own, in a process of its own: that process's CPU is the engine's."""

    def __init__(self, name: str) -> None:
        self.data = RUN_DIR / f"chdb-{name}"
        self.log_path = RUN_DIR / f"chdb-{name}.log"
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> None:
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, str(CHDB_FRONT), "--port", "0", "--data", str(self.data)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logf, text=True, start_new_session=True,
            )
        readable, _, _ = select.select([self.proc.stdout], [], [], FRONT_READY_TIMEOUT)
        port = self.proc.stdout.readline().strip() if readable else ""
        if not port.isdigit():
            raise BenchError(f"chdb_front printed no port (exit {self.proc.poll()}):\n{tail(self.log_path)}")
        self.url = f"http://127.0.0.1:{port}"

    def post(self, sql: str, timeout: float = 60) -> bytes:
        request = urllib.request.Request(self.url, data=sql.encode(), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            raise BenchError(f"chdb_front: {sql[:200]}: {e.read().decode(errors='replace')}") from None
        except OSError as e:
            raise BenchError(f"chdb_front did not answer {sql[:200]!r} within {timeout:.0f}s: {e}") from None

    def rows(self, sql: str) -> list[list]:
        out = self.post(sql + " FORMAT JSONCompact SETTINGS output_format_json_quote_64bit_integers = 0")
        return json.loads(out)["data"]

    def count(self) -> int:
        return self.rows("SELECT count() FROM otel.otel_traces")[0][0]

    def storage(self) -> dict:
        """otel_traces on disk: its active parts (system.parts) and its largest columns (system.columns,
        which knows column sizes only in Wide parts, not in Compact ones)."""
        parts, compact, on_disk, compressed, uncompressed = self.rows(
            "SELECT count(), countIf(part_type != 'Wide'), sum(bytes_on_disk), sum(data_compressed_bytes), "
            "sum(data_uncompressed_bytes) FROM system.parts WHERE database = 'otel' AND table = 'otel_traces' AND active"
        )[0]
        columns = self.rows(
            "SELECT name, data_compressed_bytes FROM system.columns WHERE database = 'otel' AND table = 'otel_traces' "
            "ORDER BY data_compressed_bytes DESC LIMIT 3"
        )
        return {"parts": parts, "compact_parts": compact, "on_disk": on_disk, "compressed": compressed,
                "uncompressed": uncompressed, "columns": columns}

    def migrations(self) -> str:
        """The schema versions applied (by bench/chdb_load.py)."""
        return self.rows("SELECT arrayStringConcat(arraySort(groupArray(toString(version))), ', ') "
                         "FROM otel.otelstore_schema_migrations FINAL")[0][0]

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        stop_process(self.proc)


def chdb_load(*args) -> str:
    """bench/chdb_load.py: chdb in-process, in a process of its own."""
    return run([sys.executable, str(CHDB_LOAD), *map(str, args)], timeout=COPY_TIMEOUT).stdout


# The ClickHouse path's collectors: binary, and what the report calls them.
CLICKHOUSE_COLLECTORS = {
    "otelstore": (COLLECTOR, "otelstore exporter"),
    "contrib": (CONTRIB_COLLECTOR, "contrib clickhouseexporter"),
}


def clickhouse_collector_config(kind: str, url: str, grpc: int | str, health: int | str, metrics: int | str) -> dict:
    """The PostgreSQL bench's pipeline and sending queue, into the engine at `url` (database otel,
    LZ4-compressed inserts), with our exporter or the contrib one. Neither creates tables: both write
    into the schema bench/chdb_load.py applied, so that they are measured on the same tables."""
    if kind == "otelstore":
        settings = otelstore_exporter({
            "clickhouse": {"endpoint": url, "database": "otel", "create_schema": False, "compression": "lz4",
                           "parallel_inserts": 4},
            "max_batch_rows": 20000,
            "memory_limit_mib": 256,
            "retention": {"raw": "720h"},
        })
        return collector_config("otelstore", settings, grpc, health, metrics)
    settings = {
        "endpoint": url,  # http://: clickhouse-go's HTTP transport
        "database": "otel",
        "create_schema": False,
        "traces_table_name": "otel_traces",
        "compress": "lz4",
        "async_insert": False,  # its default is true; ours inserts synchronously
        "sending_queue": SENDING_QUEUE,
    }
    return collector_config("clickhouse", settings, grpc, health, metrics)


def run_clickhouse(kind: str, shape: str, load: dict, stack: ExitStack, dump: Path | None) -> dict:
    """One shape through one collector into a fresh engine; `dump`: write the rows stored there."""
    name = f"clickhouse-{kind}-{shape}"
    front = Front(name)
    chdb_load("migrate", front.data)
    stack.callback(front.stop)
    front.start()
    col, sender = start_collector(
        name, lambda *ports: clickhouse_collector_config(kind, front.url, *ports), load, stack,
        CLICKHOUSE_COLLECTORS[kind][0]
    )
    col_cpu0, engine_cpu0, procs0 = cpu_seconds(col.proc.pid), front.cpu(), process_cpu()
    pushed = push(name, col, sender, front.count)
    time.sleep(0.5)  # as for PostgreSQL
    col_cpu1, engine_cpu1 = cpu_seconds(col.proc.pid), front.cpu()
    t_end, procs1 = time.time(), process_cpu()
    other_share, other_top = others(
        procs0, procs1, {os.getpid(), col.proc.pid, sender.proc.pid, front.proc.pid}, t_end - pushed.t_go
    )
    peak_rss, engine_rss = status_kib(col.proc.pid, "VmHWM"), status_kib(front.proc.pid, "VmHWM")
    metrics = final_metrics(name, col)
    rc = col.stop()
    count = front.count()
    log(f"{name}: {count} spans stored; collector stopped (rc={rc})")
    if count != SPANS:
        raise BenchError(f"{name}: {count} rows in otel.otel_traces, expected {SPANS} (duplicates from retried calls?)")
    storage, migrations = front.storage(), front.migrations()
    if dump is not None:
        front.post(f"SELECT * FROM otel.otel_traces INTO OUTFILE '{dump}' FORMAT Native", timeout=COPY_TIMEOUT)
    front.stop()
    done = pushed.done
    result = {
        "collector": kind,
        "shape": shape,
        "spans": SPANS,
        "stored_per_s": SPANS / (pushed.t_stored - pushed.t_go),
        "elapsed": pushed.t_stored - pushed.t_go,
        "sent_per_s": SPANS / (done["end"] - done["start"]),
        "send_elapsed": done["end"] - done["start"],
        "retries": done["retries"],
        "tail": pushed.t_stored - done["end"],
        "collector_cpu": col_cpu1 - col_cpu0,
        "engine_cpu": engine_cpu1 - engine_cpu0,
        "sender_cpu": done["cpu_seconds"],
        "peak_rss_mib": (peak_rss or 0) / 1024,
        "engine_peak_rss_mib": (engine_rss or 0) / 1024,
        "storage": storage,
        "migrations": migrations,
        "collector_rc": rc,
        "other_cpu_share": other_share,
        "others_top": other_top,
        "metrics_otelstore": metric_lines(metrics, r"otelstore_(?!write_duration_bucket)"),
        "metrics_pipeline": pipeline_metrics(metrics, pushed),
    }
    per = 100_000 / SPANS
    log(f"""
{name}: {SPANS} spans
  stored spans/s      {result['stored_per_s']:,.0f}  (spans / (all counted - load start) = {result['elapsed']:.2f}s)
  sent spans/s        {result['sent_per_s']:,.0f}  (load generator: {result['send_elapsed']:.2f}s, {result['retries']} retried calls, {result['sender_cpu']:.1f} CPU s); tail {result['tail']:.2f} s
  collector CPU       {result['collector_cpu']:.1f} s = {SPANS / result['collector_cpu']:,.0f} spans per CPU second ({result['collector_cpu'] * per:.2f} s per 100k spans)
  engine CPU          {result['engine_cpu'] * per:.2f} s per 100k spans ({result['engine_cpu']:.1f} s)
  peak RSS            collector {result['peak_rss_mib']:.0f} MiB, engine {result['engine_peak_rss_mib']:.0f} MiB
  otel_traces         {describe_storage(storage)}; schema migrations {migrations}
  pipeline            {result['metrics_pipeline']}
  other processes     {100 * other_share:.1f} % of the machine's CPU during the run{NOISY if other_share > NOISE_LIMIT else ''}; most: {other_top}""")
    return result


def describe_storage(s: dict) -> str:
    return (f"{s['on_disk'] / SPANS:.0f} bytes per span on disk ({s['compressed'] / SPANS:.0f} compressed, "
            f"{s['uncompressed'] / SPANS:.0f} uncompressed) in {s['parts']} active parts; largest columns "
            f"(compressed bytes per span): {columns_cell(s)}")


def columns_cell(s: dict) -> str:
    if s["compact_parts"]:
        return f"unknown ({s['compact_parts']} of the parts are Compact)"
    return ", ".join(f"{name} {size / SPANS:.0f}" for name, size in s["columns"])


def run_clickhouse_ceiling(shape: str, dump: Path, source: str, stack: ExitStack) -> dict:
    """The rows `source` stored, from the Native file `dump`, into a fresh engine by chdb in-process."""
    front = Front(f"clickhouse-ceiling-{shape}")
    procs0, t0 = process_cpu(), time.monotonic()
    timing = json.loads(chdb_load("load", front.data, dump).splitlines()[-1])
    other_share, other_top = others(procs0, process_cpu(), {os.getpid()}, time.monotonic() - t0)
    stack.callback(front.stop)
    front.start()  # to read what the load stored, as for the collectors
    count, storage, migrations = front.count(), front.storage(), front.migrations()
    version = front.rows("SELECT version()")[0][0]
    front.stop()
    if count != SPANS:
        raise BenchError(f"ceiling {shape}: {count} rows loaded, expected {SPANS}")
    c = {
        "shape": shape,
        "source": source,
        "rows_per_s": SPANS / timing["seconds"],
        "elapsed": timing["seconds"],
        "engine_cpu": timing["cpu_seconds"],
        "file_bytes": dump.stat().st_size,
        "storage": storage,
        "migrations": migrations,
        "engine_version": version,
        "other_cpu_share": other_share,
        "others_top": other_top,
    }
    dump.unlink()
    log(f"ceiling {shape}: {c['rows_per_s']:,.0f} rows/s ({c['elapsed']:.2f}s; Native file {c['file_bytes'] / 2**20:.0f} MiB "
        f"from the {source} run; engine CPU {c['engine_cpu'] * 100_000 / SPANS:.2f} s per 100k rows); otel_traces "
        f"{describe_storage(storage)}; other processes {100 * other_share:.1f} % of the CPU"
        f"{NOISY if other_share > NOISE_LIMIT else ''}, most: {other_top}")
    return c


def bench_clickhouse(loads: dict, m: dict) -> tuple[str, str]:
    """The ClickHouse path; everything it started is stopped when it returns."""
    started, t_start = dt.datetime.now(dt.timezone.utc), time.monotonic()
    results, ceilings = [], {}
    with ExitStack() as stack:
        for shape in SHAPES:
            dump = RUN_DIR / f"dump-{shape}.native"  # written by the shape's first run
            for kind in CH_COLLECTORS:
                results.append(run_clickhouse(kind, shape, loads[shape], stack, None if dump.exists() else dump))
        for shape in SHAPES:
            log("")
            ceilings[shape] = run_clickhouse_ceiling(shape, RUN_DIR / f"dump-{shape}.native", CH_COLLECTORS[0], stack)
    elapsed = time.monotonic() - t_start
    log("\n=== summary: ClickHouse")
    for r in results:
        c = ceilings[r["shape"]]
        log(f"{r['shape']} {r['collector']}: {r['stored_per_s']:,.0f} spans/s stored = {100 * r['stored_per_s'] / c['rows_per_s']:.0f} % "
            f"of the ceiling ({c['rows_per_s']:,.0f} rows/s); {SPANS / r['collector_cpu']:,.0f} spans per collector CPU second; "
            f"engine {r['engine_cpu'] * 100_000 / SPANS:.2f} CPU s per 100k spans")
    log(f"ClickHouse part: {elapsed / 60:.1f} min")
    return run_key(started, m, " clickhouse"), clickhouse_markdown(started, m, loads, results, ceilings, elapsed)


# --------------------------------------------------------------------------- report


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=ROOT).returncode != 0
    return {
        "cpu": model.group(1).strip() if model else platform.processor() or "?",
        "nproc": os.cpu_count(),
        "mem_gib": int(mem.group(1)) / 2**20 if mem else 0,
        "kernel": platform.release(),
        "commit": commit + ("-dirty" if dirty else ""),
        "python": platform.python_version(),
    }


def binary_version(binary: Path) -> str:
    return subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30).stdout.strip()


def binary_file(path: Path) -> str:
    """Where a binary is and when it was built: our builds carry no version control information."""
    built = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    return f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}, built {built} UTC"


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def run_key(started: dt.datetime, m: dict, backend: str = "") -> str:
    """The marker of a section: a run on the same day, commit, span count and backend replaces it."""
    return f"{started.strftime('%Y-%m-%d')} {m['commit']} {SPANS}{backend}"


def section_head(key: str, title: str, started: dt.datetime, m: dict, software: str,
                 measured: list[tuple[str, dict]], elapsed: float) -> list[str]:
    """A section's marker, title, machine and software, and the CPU other processes used during each
    measurement (label, result)."""
    return [
        f"<!-- bench-run: {key} -->",
        f"## {started.strftime('%Y-%m-%d %H:%M')} UTC, commit {m['commit']}, {SPANS:,} spans per shape{title}",
        "",
        f"- machine: {m['cpu']}, {m['nproc']} CPUs, {m['mem_gib']:.0f} GiB, Linux {m['kernel']}",
        f"- {software}; Python {m['python']}",
        f"- load average (1 min) before the run: {m['load_before']:.2f}; CPU used by other processes during the "
        "measurements (share of the machine): "
        + ", ".join(f"{label} {100 * x['other_cpu_share']:.1f} %" for label, x in measured)
        + (" -- **noisy: other work ran on the machine**" if any(x["other_cpu_share"] > NOISE_LIMIT for _, x in measured) else ""),
        f"- the run took {elapsed / 60:.1f} min",
    ]


def loads_table(loads: dict) -> list[str]:
    lines = [
        "Loads:",
        "",
        "| shape | made by | spans per request | OTLP bytes per span | span / resource attributes | spans with events |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for shape, d in loads.items():
        lines.append(
            f"| {shape} | {d['made_by']} | {d['spans_per_request']:.0f} | {d['otlp_bytes_per_span']:.0f} | "
            f"{d['span_attributes']:.1f} / {d['resource_attributes']:.1f} | {100 * d['spans_with_events']:.1f} % |"
        )
    return lines + [""]


def otelstore_metrics_details(r: dict) -> list[str]:
    if not r["metrics_otelstore"]:
        return []
    return ["<details><summary>otelstore metrics at the end</summary>", "", "```", *r["metrics_otelstore"],
            "```", "", "</details>", ""]


def markdown(started: dt.datetime, m: dict, pg_version: str, settings: list[tuple[str, str]], loads: dict,
             configs: dict, results: list[dict], ceilings: dict[str, list[dict]], elapsed: float) -> str:
    key = run_key(started, m)
    measured = [(r["shape"], r) for r in results] + [
        (f"ceiling {c['shape']} {c['format']}", c) for cs in ceilings.values() for c in cs
    ]
    lines = section_head(key, "", started, m, f"{pg_version.split(',')[0]}; collector: {binary_version(COLLECTOR)}",
                         measured, elapsed)
    lines += [
        "- PostgreSQL settings (defaults, except `track_commit_timestamp = on` to read each row's commit time): "
        + ", ".join(f"`{k}={v}`" for k, v in settings),
        "",
        *loads_table(loads),
        "Collector configuration (the same for every shape but the ports and the schema):", "", "```yaml",
        next(iter(configs.values())), "```", "",
    ]
    for r in results:
        per = 100_000 / r["spans"]
        best = max(ceilings.get(r["shape"], []), key=lambda c: c["rows_per_s"], default=None)
        lines += [
            f"### {r['shape']}",
            "",
            "| metric | value |",
            "|---|---:|",
            f"| stored spans/s | **{fmt_rate(r['stored_per_s'])}** ({r['elapsed']:.1f} s) |",
            f"| steady spans/s (first to last commit) | {fmt_rate(r['steady_per_s'])} |",
            f"| sent spans/s (load generator, {SENDERS} concurrent calls) | {fmt_rate(r['sent_per_s'])} |",
            f"| lag p50 / p99 / max | {r['lag_p50']:.2f} / {r['lag_p99']:.2f} / {r['lag_max']:.2f} s |",
            f"| tail (last request sent to last row committed) | {r['tail']:.2f} s |",
            f"| collector CPU per 100k spans | {r['collector_cpu'] * per:.2f} s |",
            f"| PostgreSQL CPU per 100k spans | {r['pg_cpu'] * per:.2f} s |",
            f"| statement time in PostgreSQL (its log) | {describe_db_time(r['db_time'])} |",
            f"| load generator CPU per 100k spans | {r['sender_cpu'] * per:.2f} s |",
            f"| collector peak RSS | {r['peak_rss_mib']:.0f} MiB |",
            f"| WAL per span | {r['wal_bytes'] / r['spans']:.0f} bytes |",
            f"| table + indexes per span | {r['heap_bytes'] / r['spans']:.0f} + {r['index_bytes'] / r['spans']:.0f} bytes |",
            f"| COPY transactions (rows per transaction p50 / max) | {r['transactions']} ({r['rows_per_tx_p50']} / {r['rows_per_tx_max']}) |",
            f"| exporter writes, average duration (otelstore_write_duration) | {r['otelstore_writes']:.0f}, {r['otelstore_write_seconds_avg']:.2f} s |",
            f"| sending queue, most spans queued (sampled every 2 s) | {r['metrics_pipeline']['exporter_queue_size_max']:.0f} |",
            f"| autovacuum of the table during the run (its CPU is in PostgreSQL's) | {r['autovacuum']} |",
            f"| calls retried by the load generator | {r['retries']} |",
            f"| CPU used by other processes meanwhile | {100 * r['other_cpu_share']:.1f} % of the machine (most: {r['others_top']}) |",
        ]
        for c in ceilings.get(r["shape"], []):
            lines.append(
                f"| ceiling: psql `\\copy` {c['format']} | {fmt_rate(c['rows_per_s'])} rows/s "
                f"({c['elapsed']:.1f} s, PostgreSQL CPU {c['pg_cpu'] * 100_000 / SPANS:.2f} s per 100k, "
                f"WAL {c['wal_bytes'] / SPANS:.0f} bytes per row) |"
            )
        if best:
            lines.append(f"| stored spans/s of the best ceiling | **{100 * r['stored_per_s'] / best['rows_per_s']:.0f} %** |")
        lines += ["", *otelstore_metrics_details(r)]
    lines.append(f"<!-- /bench-run: {key} -->")
    return "\n".join(lines) + "\n"


def clickhouse_markdown(started: dt.datetime, m: dict, loads: dict, results: list[dict], ceilings: dict[str, dict],
                        elapsed: float) -> str:
    key = run_key(started, m, " clickhouse")
    per = 100_000 / SPANS
    measured = [(f"{r['shape']} {r['collector']}", r) for r in results] + [
        (f"ceiling {c['shape']}", c) for c in ceilings.values()
    ]
    software = "; ".join(
        [f"ClickHouse {ceilings[SHAPES[0]]['engine_version']} (chdb-core {importlib.metadata.version('chdb-core')}) behind "
         "tests/clickhouse/chdb_front.py"]
        + [f"{kind}: {binary_version(CLICKHOUSE_COLLECTORS[kind][0])} ({binary_file(CLICKHOUSE_COLLECTORS[kind][0])})"
           for kind in CH_COLLECTORS]
    )
    lines = section_head(key, ", ClickHouse", started, m, software, measured, elapsed)
    lines += ["", *loads_table(loads)]
    for kind in CH_COLLECTORS:
        config = clickhouse_collector_config(kind, "http://127.0.0.1:PORT", "PORT", "PORT", "PORT")
        if kind == CH_COLLECTORS[0]:
            lines += [f"Collector configuration of the {CLICKHOUSE_COLLECTORS[kind][1]} (every run: the same but the ports):",
                      "", "```yaml", to_yaml(config), "```", ""]
        else:
            lines += [f"The {CLICKHOUSE_COLLECTORS[kind][1]}: the same pipeline, with this exporter:",
                      "", "```yaml", to_yaml({"exporters": config["exporters"]}), "```", ""]
    rows = [
        ("stored spans/s", lambda r, c: f"**{fmt_rate(r['stored_per_s'])}** ({r['elapsed']:.1f} s)"),
        ("of the ceiling", lambda r, c: f"**{100 * r['stored_per_s'] / c['rows_per_s']:.0f} %**"),
        ("spans/s per CPU core of the collector (spans / its CPU s)",
         lambda r, c: f"**{fmt_rate(SPANS / r['collector_cpu'])}**"),
        ("collector CPU", lambda r, c: f"{r['collector_cpu']:.1f} s ({r['collector_cpu'] * per:.2f} s per 100k spans)"),
        ("engine CPU (the front's process) per 100k spans", lambda r, c: f"{r['engine_cpu'] * per:.2f} s"),
        ("load generator CPU per 100k spans", lambda r, c: f"{r['sender_cpu'] * per:.2f} s"),
        (f"sent spans/s (load generator, {SENDERS} concurrent calls)", lambda r, c: fmt_rate(r["sent_per_s"])),
        ("tail (last request acknowledged to every row counted)", lambda r, c: f"{r['tail']:.2f} s"),
        ("collector peak RSS", lambda r, c: f"{r['peak_rss_mib']:.0f} MiB"),
        ("engine peak RSS", lambda r, c: f"{r['engine_peak_rss_mib']:.0f} MiB"),
        ("otel_traces on disk per span (compressed / uncompressed columns)", lambda r, c: storage_cell(r["storage"])),
        ("active parts of otel_traces at the end", lambda r, c: str(r["storage"]["parts"])),
        ("largest columns, compressed bytes per span", lambda r, c: columns_cell(r["storage"])),
        ("schema migrations in the engine", lambda r, c: r["migrations"]),
        ("sending queue, most spans queued (sampled every 2 s)",
         lambda r, c: f"{r['metrics_pipeline']['exporter_queue_size_max']:.0f}"),
        ("calls retried by the load generator", lambda r, c: str(r["retries"])),
        ("CPU used by other processes meanwhile",
         lambda r, c: f"{100 * r['other_cpu_share']:.1f} % of the machine (most: {r['others_top']})"),
    ]
    for shape in SHAPES:
        c = ceilings[shape]
        runs = [r for r in results if r["shape"] == shape]
        lines += [
            f"### {shape}",
            "",
            "| metric | " + " | ".join(CLICKHOUSE_COLLECTORS[r["collector"]][1] for r in runs) + " |",
            "|---|" + "---:|" * len(runs),
            *(f"| {label} | " + " | ".join(cell(r, c) for r in runs) + " |" for label, cell in rows),
            "",
            f"Ceiling: **{fmt_rate(c['rows_per_s'])} rows/s**: the {c['source']} run's rows as a Native file "
            f"({c['file_bytes'] / SPANS:.0f} bytes per row) loaded by chdb in-process with one `INSERT INTO "
            f"otel.otel_traces FROM INFILE ... FORMAT Native` into a fresh engine, {c['elapsed']:.1f} s; engine CPU "
            f"{c['engine_cpu'] * per:.2f} s per 100k rows; otel_traces on disk {storage_cell(c['storage'])} per row "
            f"in {c['storage']['parts']} active parts; schema migrations {c['migrations']}; other processes {100 * c['other_cpu_share']:.1f} % of the machine.",
            "",
        ]
        for r in runs:
            lines += otelstore_metrics_details(r)
    lines.append(f"<!-- /bench-run: {key} -->")
    return "\n".join(lines) + "\n"


def storage_cell(s: dict) -> str:
    return f"{s['on_disk'] / SPANS:.0f} bytes ({s['compressed'] / SPANS:.0f} / {s['uncompressed'] / SPANS:.0f})"


DOC_HEADER = f"""# Benchmarks

Ingest throughput of the otelstore exporter, written by `make bench` (bench/run.py). Each run adds a
dated section at the end; a run on the same day, commit and span count replaces its section.
`BENCH_SPANS=100000 make bench` is a quick run. Numbers are only comparable on the same machine and
only when nothing else runs on it (the CPU other processes used is noted).

How it measures: a fresh PostgreSQL (scripts/pg.sh, default settings except
`track_commit_timestamp`), then for each load shape a fresh collector (OTLP/gRPC receiver,
memory_limiter, otelstore with the example's sending-queue batching) writing to a schema of its own; the load is a
fixed number of spans sent as fast as the collector accepts them.

{DEFINITIONS}

{CLICKHOUSE_DEFINITIONS}

"""


def write_doc(section: str, key: str) -> None:
    text = DOC.read_text() if DOC.exists() else DOC_HEADER
    pattern = re.compile(
        rf"<!-- bench-run: {re.escape(key)} -->.*?<!-- /bench-run: {re.escape(key)} -->\n?", re.S
    )
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


# --------------------------------------------------------------------------- main


def check_prerequisites(backends: list[str]) -> None:
    needed = [TELEMETRYGEN]
    if "postgres" in backends:
        needed += [COLLECTOR, PSQL, PG_SH]
    if "clickhouse" in backends:
        unknown = set(CH_COLLECTORS) - set(CLICKHOUSE_COLLECTORS)
        if unknown or not CH_COLLECTORS:
            raise BenchError(f"BENCH_CLICKHOUSE_COLLECTORS: {', '.join(sorted(unknown)) or 'empty'} "
                             f"(known: {', '.join(CLICKHOUSE_COLLECTORS)})")
        needed += [CLICKHOUSE_COLLECTORS[kind][0] for kind in CH_COLLECTORS] + [CHDB_FRONT, CHDB_LOAD]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise BenchError(f"missing: {', '.join(missing)} (run `make build tools` and, for the contrib "
                         "collector, `bench/contrib/build.sh`)")


def bench_postgres(loads: dict, m: dict) -> tuple[str, str]:
    """The PostgreSQL path; everything it started is stopped when it returns."""
    started, t_start = dt.datetime.now(dt.timezone.utc), time.monotonic()
    pg = Postgres(RUN_DIR)
    results, ceilings, configs = [], {}, {}
    with ExitStack() as stack:
        stack.callback(lambda: pg.stop())
        pg.start()
        pg.configure(PG_CHANGED)
        pg_version = pg.scalar("SELECT version()")
        settings = [
            (name, f"{setting}{unit or ''}")
            for name, setting, unit in pg.rows(
                "SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s) ORDER BY name", (PG_SHOWN,)
            )
        ]
        log(f"PostgreSQL {pg.dsn}: {pg_version}")
        log("settings: " + ", ".join(f"{k}={v}" for k, v in settings))
        log(f"changed from the defaults: {PG_CHANGED} (commit time of every row, for the lag)")

        for shape in SHAPES:
            r = run_shape(shape, loads[shape], pg, stack)
            results.append(r)
            cfg = postgres_collector_config("postgres://postgres@127.0.0.1:PORT/otelstore", f"bench_{shape}", "PORT", "PORT", "PORT")
            configs[shape] = to_yaml(cfg)
        for shape in SHAPES:
            log("")
            ceilings[shape] = run_ceiling(shape, pg)

    elapsed = time.monotonic() - t_start
    log("\n=== summary: PostgreSQL")
    for r in results:
        best = max(ceilings[r["shape"]], key=lambda c: c["rows_per_s"])
        log(f"{r['shape']}: {r['stored_per_s']:,.0f} spans/s stored = {100 * r['stored_per_s'] / best['rows_per_s']:.0f} % "
            f"of the best ceiling ({best['format']} COPY, {best['rows_per_s']:,.0f} rows/s); "
            f"collector {r['collector_cpu'] * 100_000 / SPANS:.2f} CPU s per 100k spans, "
            f"PostgreSQL {r['pg_cpu'] * 100_000 / SPANS:.2f}; lag p50 {r['lag_p50']:.2f} s, p99 {r['lag_p99']:.2f} s; "
            f"statement time {describe_db_time(r['db_time'])}")
    log(f"PostgreSQL part: {elapsed / 60:.1f} min")
    return run_key(started, m), markdown(started, m, pg_version, settings, loads, configs, results, ceilings, elapsed)


BENCHES = {"postgres": bench_postgres, "clickhouse": bench_clickhouse}


def main() -> int:
    global SPANS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=[*BENCHES, "all"], default="all",
                    help="the PostgreSQL path, the ClickHouse path, or both (default)")
    ap.add_argument("--spans", type=int, default=SPANS, help=f"spans per shape (default {SPANS})")
    args = ap.parse_args()
    SPANS = args.spans
    backends = list(BENCHES) if args.backend == "all" else [args.backend]

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGINT too: a shell starts background jobs with SIGINT ignored, and `kill -INT` should still stop us.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    for var in ("NO_PROXY", "no_proxy"):  # everything is on 127.0.0.1
        os.environ[var] = ",".join(filter(None, [os.environ.get(var, ""), "127.0.0.1", "localhost"]))

    ok = False
    try:
        check_prerequisites(backends)
        m = machine()
        m["load_before"] = os.getloadavg()[0]
        log(f"otelstore benchmark ({', '.join(backends)}), {SPANS} spans per shape, shapes {', '.join(SHAPES)}; "
            f"commit {m['commit']}")
        log(f"machine: {m['cpu']}, {m['nproc']} CPUs, {m['mem_gib']:.0f} GiB; load average {m['load_before']:.2f}")
        if m["load_before"] >= 1.0:
            log("warning: the load average is 1 or more: something else is running, the numbers will be noisy")
        # A fresh directory: stop a cluster a killed run may have left, then start from nothing.
        if RUN_DIR.exists():
            Postgres(RUN_DIR).pg_sh("stop")
            shutil.rmtree(RUN_DIR)
        RUN_DIR.mkdir(parents=True)
        RUN_DIR.chmod(0o755)  # pg.sh may run the server as another user, who must reach it

        loads = make_loads()
        for backend in backends:
            key, section = BENCHES[backend](loads, m)
            if WRITE_DOC:
                write_doc(section, key)
                log(f"results written to {DOC.relative_to(ROOT)}")
            else:
                log("BENCH_WRITE=0: not writing docs/BENCHMARKS.md; the section would be:\n\n" + section)
        ok = True
    except BenchError as e:
        log(f"\nbench: FAILED: {e}")
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        log("\nbench: interrupted; stopping everything")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Everything is stopped now (each backend's ExitStack ran): collectors, load generators, PostgreSQL, engines.
    if ok and not KEEP:
        server_log = RUN_DIR / "pgrun/server.log"
        if server_log.exists():
            shutil.copy(server_log, RUN_DIR / "postgres.log")
        for p in RUN_DIR.iterdir():
            if p.name in ("pgdata", "pgrun") or p.suffix in (".bin", ".binary", ".text") or (
                p.name.startswith("chdb-") and p.is_dir()
            ):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        log(f"logs and configurations are in {RUN_DIR.relative_to(ROOT)}")
    elif not ok:
        log(f"logs, the databases and the loads are kept in {RUN_DIR.relative_to(ROOT)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
