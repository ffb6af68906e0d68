"""End-to-end fixtures: a throwaway PostgreSQL cluster and otelstore collectors.

Everything listens on 127.0.0.1 on ports picked at run time, and every wait is bounded.

Environment overrides (all optional):
  OTELSTORE_PG_DSN        use this database instead of starting a cluster with scripts/pg.sh
  OTELSTORE_COLLECTOR     collector binary (default build/otelcol-otelstore/otelcol-otelstore)
  OTELSTORE_TELEMETRYGEN  telemetrygen binary (default .tools/bin/telemetrygen)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
COLLECTOR_BIN = Path(
    os.environ.get("OTELSTORE_COLLECTOR", ROOT / "build/otelcol-otelstore/otelcol-otelstore")
)
TELEMETRYGEN_BIN = Path(
    os.environ.get("OTELSTORE_TELEMETRYGEN", ROOT / ".tools/bin/telemetrygen")
)
PG_SH = ROOT / "scripts/pg.sh"
EXPORTER_TYPE = "otelstore"
# The pipelines every collector gets (otlp receiver -> processors -> otelstore exporter).
SIGNALS = ("traces", "logs", "metrics")

PG_START_TIMEOUT = 120  # initdb + start on a slow 2-core box
PG_STOP_TIMEOUT = 60
COLLECTOR_READY_TIMEOUT = 60
COLLECTOR_STOP_TIMEOUT = 30

# Everything is on loopback: never send it through a proxy from the environment (this process,
# the SDK exporters, and the telemetrygen / collector subprocesses all honour NO_PROXY).
for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(filter(None, [os.environ.get(_var, ""), "127.0.0.1", "localhost"]))

_SCHEMA_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_LOG_TAIL_CHARS = 20_000


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """n distinct free ports (all sockets held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def unique_name(prefix: str) -> str:
    """A name that is unique per call, valid as a schema name and a service name."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    name = re.sub(r"[^A-Za-z0-9_]", "_", name)[:63]
    assert _SCHEMA_RE.fullmatch(name), name
    return name


def tail(path: Path, chars: int = _LOG_TAIL_CHARS) -> str:
    try:
        data = path.read_text(errors="replace")
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return data if len(data) <= chars else "...\n" + data[-chars:]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_post(url: str, body: bytes, content_type: str, timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# --------------------------------------------------------------------------- PostgreSQL


class PgCluster:
    """A throwaway PostgreSQL cluster run by scripts/pg.sh in a directory of its own.

    pg.sh records the port on the first start, so the DSN stays valid across stop() and start(),
    which is what the fault tests need to take the database away and bring it back.
    """

    def __init__(self, prefix: str = "otelstore-e2e-pg-") -> None:
        # Directly under /tmp (not pytest's 0700 per-user tmp tree): pg.sh may hand the directory to
        # an unprivileged user because initdb refuses to run as root.
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.dir.chmod(0o755)  # searchable by the cluster's owner
        self.dsn: str | None = None
        self._paused: list[int] = []

    def _pg_sh(self, command: str, timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                ["bash", str(PG_SH), command, str(self.dir)],
                capture_output=True, text=True, timeout=timeout, cwd=ROOT,
            )
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"pg.sh {command} timed out after {timeout}s\nstdout:\n{e.stdout}\nstderr:\n{e.stderr}")

    def start(self) -> str:
        """Starts (creating it on first use) the cluster, waits until it answers, returns the DSN."""
        r = self._pg_sh("start", PG_START_TIMEOUT)
        lines = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
        if r.returncode != 0 or not lines:
            pytest.fail(f"pg.sh start failed (rc={r.returncode})\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
        dsn = lines[-1]
        if self.dsn is not None and dsn != self.dsn:
            pytest.fail(f"pg.sh restarted the cluster in {self.dir} on a new address: {self.dsn} -> {dsn}")
        self.dsn = dsn
        # Bounded readiness check, whatever pg.sh already waited for.
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(dsn, connect_timeout=5) as c:
                    c.execute("SELECT 1")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return dsn

    def stop(self) -> None:
        """Fast shutdown (pg.sh stop): open connections are terminated."""
        self.resume()  # a SIGSTOPped server cannot shut down
        r = self._pg_sh("stop", PG_STOP_TIMEOUT)
        if r.returncode != 0:
            pytest.fail(f"pg.sh stop failed (rc={r.returncode})\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.dir / "pgdata/postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def pids(self) -> list[int]:
        """The postmaster and every process it forked (the backends hold the client connections)."""
        pm = self.postmaster_pid()
        if pm is None:
            return []
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pm:
                    children.append(int(stat.parent.name))
            except (OSError, IndexError, ValueError):
                continue
        return [pm, *sorted(children)]

    def pause(self) -> list[int]:
        """SIGSTOP the postmaster first (so that it forks nothing new), then all its children.
        Connections stay open; every query on them hangs. Returns the pids stopped."""
        pm = self.postmaster_pid()
        assert pm is not None, f"no postmaster.pid in {self.dir}: is the cluster running?"
        os.kill(pm, signal.SIGSTOP)
        self._paused = [pm]
        for pid in self.pids()[1:]:
            try:
                os.kill(pid, signal.SIGSTOP)
                self._paused.append(pid)
            except ProcessLookupError:
                pass
        return list(self._paused)

    def resume(self) -> None:
        """SIGCONT everything pause() stopped; a no-op when nothing is paused."""
        paused, self._paused = self._paused, []
        for pid in reversed(paused):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def destroy(self) -> None:
        """Stops the cluster (whatever state it is in) and deletes its directory."""
        try:
            self.stop()
        except BaseException:  # pytest.fail raises a BaseException; go on and remove the directory
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """DSN of a PostgreSQL database the tests may create schemas in.

    Starts a cluster in a fresh temporary directory with `scripts/pg.sh start <dir>` (which prints the
    DSN as the last line of its output) and stops it with `scripts/pg.sh stop <dir>` at the end.
    """
    env_dsn = os.environ.get("OTELSTORE_PG_DSN")
    if env_dsn:
        yield env_dsn
        return
    if not PG_SH.exists():
        pytest.fail(f"{PG_SH} is missing; it starts the test cluster (or set OTELSTORE_PG_DSN)")
    cluster = PgCluster()
    try:
        yield cluster.start()
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def db(pg_dsn: str) -> psycopg.Connection:
    """An autocommit connection for assertions (each query sees every committed row)."""
    with psycopg.connect(pg_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute("SET statement_timeout = '20s'")
        yield conn


def query(conn: psycopg.Connection, sql: str, params: Any = None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def scalar(conn: psycopg.Connection, sql: str, params: Any = None) -> Any:
    rows = query(conn, sql, params)
    assert len(rows) == 1 and len(rows[0]) == 1, rows
    return rows[0][0]


def count_or_zero(conn: psycopg.Connection, sql: str, params: Any = None) -> int:
    """A count query's result; 0 while the exporter has not created the schema/table yet."""
    try:
        return int(scalar(conn, sql, params))
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return 0


def wait_for_count(
    conn: psycopg.Connection,
    sql: str,
    expected: int,
    params: Any = None,
    timeout: float = 30.0,
    settle: float = 1.0,
    on_fail: Callable[[], str] | None = None,
) -> int:
    """Poll a count query until it equals `expected`, then check it stays there for `settle` seconds.

    Fails at once if the count goes above `expected` (duplicates), and after `timeout` seconds if it
    never reaches it. `on_fail` supplies extra context (e.g. the collector log) for the message.
    """
    deadline = time.monotonic() + timeout
    history: list[int] = []
    got = -1

    def fail(why: str) -> None:
        extra = on_fail() if on_fail else ""
        pytest.fail(f"{why}\nquery: {sql} {params!r}\ncounts seen: {history[-20:]}\n{extra}")

    while True:
        got = count_or_zero(conn, sql, params)
        if not history or history[-1] != got:
            history.append(got)
        if got > expected:
            fail(f"count {got} exceeds the expected {expected}")
        if got == expected:
            break
        if time.monotonic() > deadline:
            fail(f"count reached {got}, expected {expected} within {timeout}s")
        time.sleep(0.1)
    settle_end = time.monotonic() + settle
    while time.monotonic() < settle_end:
        time.sleep(0.1)
        got = count_or_zero(conn, sql, params)
        if got != expected:
            history.append(got)
            fail(f"count changed from {expected} to {got} after reaching it")
    return got


# --------------------------------------------------------------------------- collector


@dataclass
class Collector:
    """A running collector with its own ports, schema and log file."""

    name: str
    schema: str
    grpc_port: int
    http_port: int
    health_port: int
    workdir: Path
    config: dict
    proc: subprocess.Popen | None = None
    log_path: Path = field(init=False)
    returncode: int | None = None
    failed_to_start: bool = False  # the test has already failed with the reason
    metrics_port: int | None = None  # the collector's own metrics (Prometheus text)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "collector.log"

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def traces_url(self) -> str:
        return f"{self.http_base}/v1/traces"

    @property
    def logs_url(self) -> str:
        return f"{self.http_base}/v1/logs"

    @property
    def metrics_url(self) -> str:
        return f"{self.http_base}/v1/metrics"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/"

    @property
    def spans_table(self) -> str:
        return f'"{self.schema}".spans'

    @property
    def logs_table(self) -> str:
        return f'"{self.schema}".logs'

    def table(self, name: str) -> str:
        """A table of this collector's schema, quoted: table("metrics_sum")."""
        assert _SCHEMA_RE.fullmatch(name), name
        return f'"{self.schema}".{name}'

    def log(self) -> str:
        return tail(self.log_path)

    def metrics(self) -> dict[str, float]:
        """The collector's own metrics, each name summed over its label sets ({} if unreachable)."""
        if self.metrics_port is None:
            return {}
        try:
            status, body = http_get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)
        except OSError:
            return {}
        if status != 200:
            return {}
        totals: dict[str, float] = {}
        for line in body.decode(errors="replace").splitlines():
            if not line or line.startswith("#"):
                continue
            name_labels, _, value = line.rpartition(" ")
            name = name_labels.split("{", 1)[0]
            try:
                totals[name] = totals.get(name, 0.0) + float(value)
            except ValueError:
                continue
        return totals

    def describe(self) -> str:
        return f"--- collector {self.name} log ({self.log_path}) ---\n{self.log()}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        try:
            status, _ = http_get(self.health_url, timeout=2)
        except OSError:
            return False
        return status == 200

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def rss_kib(self) -> int | None:
        """The collector's resident set size (VmRSS), or None once it has exited."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except (OSError, ValueError, TypeError):
            pass
        return None

    def start(self) -> None:
        """Starts the collector with self.config (again, after stop() or kill(): same ports, same
        working directory, the log appended to) and waits until it is healthy."""
        self.failed_to_start = False
        config_path = self.workdir / "config.yaml"
        # JSON is YAML, so no YAML library is needed.
        config_path.write_text(json.dumps(self.config, indent=2))
        logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [str(COLLECTOR_BIN), "--config", str(config_path),
                 "--feature-gates=+extension.healthcheck.useComponentStatus"],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                cwd=self.workdir, start_new_session=True,
            )
        finally:
            logf.close()
        deadline = time.monotonic() + COLLECTOR_READY_TIMEOUT
        while not self.healthy():
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                self.failed_to_start = True
                pytest.fail(
                    f"collector exited with {self.proc.returncode} before becoming healthy\n"
                    f"config:\n{config_path.read_text()}\n{self.describe()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(
                    f"collector not healthy on {self.health_url} within {COLLECTOR_READY_TIMEOUT}s\n"
                    f"config:\n{config_path.read_text()}\n{self.describe()}"
                )
            time.sleep(0.1)

    def kill(self) -> int | None:
        """SIGKILL, as a crash would: nothing is flushed. Returns the exit code (-9)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.returncode = self.proc.returncode
        return self.returncode

    def stop(self) -> int | None:
        """SIGTERM, bounded wait, then SIGKILL. Returns the exit code (negative: killed by signal)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=COLLECTOR_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                self.returncode = self.proc.returncode
                raise AssertionError(
                    f"collector ignored SIGTERM for {COLLECTOR_STOP_TIMEOUT}s and was killed\n{self.describe()}"
                )
        self.returncode = self.proc.returncode
        return self.returncode


def collector_config(
    dsn: str,
    schema: str,
    grpc_port: int,
    http_port: int,
    health_port: int,
    metrics_port: int,
    exporter_overrides: dict | None = None,
    processors: list[str] | None = None,
    signals: tuple[str, ...] = SIGNALS,
) -> dict:
    """The shape of examples/postgres.yaml, on the given ports and schema.

    One pipeline per signal in `signals` (default: traces, logs and metrics), each otlp -> processors
    -> otelstore. `processors` replaces every pipeline's processors (default: memory_limiter, as the
    example).
    """
    unknown = set(signals) - set(SIGNALS)
    assert signals and not unknown, f"signals must be some of {SIGNALS}, got {signals!r}"
    exporter: dict[str, Any] = {
        "postgres": {
            "dsn": dsn,
            "schema": schema,
            "create_schema": True,
            "pool_size": 2,
            "connect_timeout": "10s",
        },
        "timeout": "30s",
        "retry_on_failure": {
            "enabled": True,
            "initial_interval": "200ms",
            "max_interval": "1s",
            "max_elapsed_time": "30s",
        },
        # sending_queue: the exporterhelper default (a queue in front of the exporter), as a user
        # gets it; tests poll the database until rows arrive.
    }
    for k, v in (exporter_overrides or {}).items():
        if isinstance(v, dict) and isinstance(exporter.get(k), dict):
            exporter[k] = {**exporter[k], **v}
        else:
            exporter[k] = v
    return {
        # As examples/postgres.yaml: component status (the feature gate on the command line), so the
        # health endpoint turns 500 once the database has been unreachable for recovery_duration.
        "extensions": {"health_check": {
            "http": {"endpoint": f"127.0.0.1:{health_port}", "status": {"enabled": True, "path": "/"}},
            "component_health": {"include_recoverable_errors": True, "recovery_duration": "5s"},
        }},
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
                    "http": {"endpoint": f"127.0.0.1:{http_port}"},
                }
            }
        },
        "processors": {
            "memory_limiter": {"check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 20},
        },
        "exporters": {EXPORTER_TYPE: exporter},
        "service": {
            "extensions": ["health_check"],
            "telemetry": {
                # The collector's own metrics on a free port: the default :8888 would clash.
                "metrics": {
                    "readers": [
                        {"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": metrics_port}}}}
                    ]
                },
                "logs": {"level": "info"},
            },
            "pipelines": {
                signal: {
                    "receivers": ["otlp"],
                    "processors": ["memory_limiter"] if processors is None else list(processors),
                    "exporters": [EXPORTER_TYPE],
                }
                for signal in signals
            },
        },
    }


@pytest.fixture
def start_collector(request: pytest.FixtureRequest, tmp_path: Path):
    """Factory: start_collector(schema=None, exporter_overrides=None, ...) -> a healthy Collector.

    Each collector gets free ports and (unless given) a fresh schema. All are stopped with SIGTERM at
    the end of the test, and a collector that did not exit cleanly fails the test's teardown.
    Optional: `dsn` (another database than pg_dsn's), `processors` and `signals` (the pipelines; see
    collector_config) and `configure`, called with the config dict and the collector's working
    directory before the start, to change anything else (extensions, receiver settings).
    """
    if not COLLECTOR_BIN.exists():
        pytest.fail(f"collector binary {COLLECTOR_BIN} is missing; run `make build`")
    started: list[Collector] = []
    on_pg_dsn: set[str] = set()  # schemas written to pg_dsn's database
    request.node.stash[_COLLECTORS_KEY] = started

    def start(
        schema: str | None = None,
        exporter_overrides: dict | None = None,
        *,
        dsn: str | None = None,
        processors: list[str] | None = None,
        signals: tuple[str, ...] = SIGNALS,
        configure: Callable[[dict, Path], None] | None = None,
    ) -> Collector:
        schema = schema or unique_name(f"e2e_{request.node.originalname}"[:40])
        grpc_port, http_port, health_port, metrics_port = free_ports(4)
        workdir = tmp_path / f"collector{len(started)}"
        workdir.mkdir()
        if dsn is None:
            # Asked for only here, so that tests with a database of their own start no other.
            dsn = request.getfixturevalue("pg_dsn")
            on_pg_dsn.add(schema)
        config = collector_config(
            dsn, schema, grpc_port, http_port, health_port, metrics_port, exporter_overrides,
            processors=processors, signals=signals,
        )
        if configure is not None:
            configure(config, workdir)
        c = Collector(
            name=f"{request.node.name}#{len(started)}",
            schema=schema,
            grpc_port=grpc_port,
            http_port=http_port,
            health_port=health_port,
            workdir=workdir,
            config=config,
            metrics_port=metrics_port,
        )
        started.append(c)
        c.start()
        return c

    yield start

    problems = []
    for c in started:
        try:
            rc = c.stop()
        except AssertionError as e:
            problems.append(str(e))
            continue
        if rc not in (0, None) and not c.failed_to_start:
            problems.append(f"collector {c.name} exited with {rc} after SIGTERM\n{c.describe()}")
    if os.environ.get("OTELSTORE_PG_DSN") and on_pg_dsn:
        # A database someone else owns: leave no test schemas behind. (The throwaway cluster is
        # deleted whole at the end of the session.)
        with psycopg.connect(request.getfixturevalue("pg_dsn"), autocommit=True, connect_timeout=10) as conn:
            for schema in sorted(on_pg_dsn):
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    if problems:
        pytest.fail("\n\n".join(problems))


@pytest.fixture
def collector(start_collector) -> Collector:
    """One healthy collector with a schema of its own."""
    return start_collector()


_COLLECTORS_KEY = pytest.StashKey[list]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for c in item.stash.get(_COLLECTORS_KEY, []):
            report.sections.append((f"collector {c.name} log", c.log()))


# --------------------------------------------------------------------------- figures

# One-line summaries that tests want in the run's output even when pytest captures stdout (the
# fault tests' "[reliability] ..." lines): repeated in a section at the end of the run.
SUMMARY_LINES: list[str] = []


def pytest_terminal_summary(terminalreporter) -> None:
    if SUMMARY_LINES:
        terminalreporter.section("reliability figures")
        for line in SUMMARY_LINES:
            terminalreporter.write_line(line)
