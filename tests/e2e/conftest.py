"""End-to-end fixtures: a throwaway PostgreSQL cluster, otelstore collectors writing to it, and
otelstore-query reading it.

The collector and otelstore-query processes themselves (ports, configuration, start and stop) are
harness.py's, shared with the ClickHouse tests.

Environment overrides (all optional):
  OTELSTORE_PG_DSN        use this database instead of starting a cluster with scripts/pg.sh
  OTELSTORE_COLLECTOR     collector binary (default build/otelcol-otelstore/otelcol-otelstore)
  OTELSTORE_TELEMETRYGEN  telemetrygen binary (default .tools/bin/telemetrygen)
  OTELSTORE_QUERY         otelstore-query binary (default target/release/otelstore-query)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import psycopg
import pytest

# The checks shared by both backends' test_query.py: pytest rewrites their asserts to explain failures.
pytest.register_assert_rewrite("query_api", "n_plus_one")

from harness import (  # noqa: F401 (some only re-exported: the tests import them from here)
    ROOT,
    SIGNALS,
    TELEMETRYGEN_BIN,
    Collector,
    Collectors,
    QueryServer,
    QueryServers,
    exporter_section,
    free_port,
    http_post,
    pytest_runtest_makereport,
    settle_count,
    unique_name,
    wait_until,
)

PG_SH = ROOT / "scripts/pg.sh"
PG_START_TIMEOUT = 120  # initdb + start on a slow 2-core box
PG_STOP_TIMEOUT = 60


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


@pytest.fixture(scope="module")
def own_pg(request: pytest.FixtureRequest) -> PgCluster:
    """A PostgreSQL cluster of the test module's own (even when OTELSTORE_PG_DSN is set), for tests
    that stop or freeze it."""
    cluster = PgCluster(prefix=f"otelstore-{request.module.__name__}-")
    try:
        cluster.start()
        yield cluster
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
    """Poll a count query until it equals `expected`, then check it stays there for `settle` seconds
    (harness.settle_count)."""
    return settle_count(lambda: count_or_zero(conn, sql, params), expected, f"query: {sql} {params!r}",
                        timeout=timeout, settle=settle, on_fail=on_fail)


# --------------------------------------------------------------------------- collector


def postgres_exporter(dsn: str, schema: str, overrides: dict | None = None) -> dict:
    """The otelstore exporter's section for PostgreSQL (see harness.exporter_section)."""
    backend = {
        "postgres": {
            "dsn": dsn,
            "schema": schema,
            "create_schema": True,
            "pool_size": 2,
            "connect_timeout": "10s",
        },
    }
    return exporter_section(backend, overrides)


@pytest.fixture
def start_collector(request: pytest.FixtureRequest, tmp_path: Path):
    """Factory: start_collector(schema=None, exporter_overrides=None, ...) -> a healthy Collector.

    Each collector gets free ports and (unless given) a fresh schema. All are stopped with SIGTERM at
    the end of the test, and a collector that did not exit cleanly fails the test's teardown.
    Optional: `dsn` (another database than pg_dsn's), `processors` and `signals` (the pipelines; see
    harness.collector_config) and `configure`, called with the config dict and the collector's
    working directory before the start, to change anything else (extensions, receiver settings).
    """
    collectors = Collectors(request, tmp_path)
    on_pg_dsn: set[str] = set()  # schemas written to pg_dsn's database

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
        if dsn is None:
            # Asked for only here, so that tests with a database of their own start no other.
            dsn = request.getfixturevalue("pg_dsn")
            on_pg_dsn.add(schema)
        return collectors.start(postgres_exporter(dsn, schema, exporter_overrides), schema=schema,
                                processors=processors, signals=signals, configure=configure)

    yield start

    problems = collectors.stop_all()
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


# --------------------------------------------------------------------------- otelstore-query


@pytest.fixture(scope="module")
def start_query(tmp_path_factory: pytest.TempPathFactory):
    """Factory: start_query(dsn, schema, **settings) -> an otelstore-query that answers, reading the
    otelstore tables of `schema` in the database `dsn`, on a free port.

    `settings` are more keys of its configuration file (README.md, "Query: otelstore-query"), such
    as request_timeout="5s" or cache={"ttl": "0s"}. Module-scoped, so that one server can answer
    all of a module's tests; each is stopped with SIGTERM at the end of the module, and one that
    does not exit with 0 fails the teardown.
    """
    servers = QueryServers(tmp_path_factory)

    def start(dsn: str, schema: str, **settings: Any) -> QueryServer:
        postgres = {"dsn": dsn, "schema": schema, "pool_size": 2, "connect_timeout": "5s"}
        return servers.start({"postgres": postgres, **settings})

    yield start

    problems = servers.stop_all()
    if problems:
        pytest.fail("\n\n".join(problems))


# --------------------------------------------------------------------------- figures

# One-line summaries that tests want in the run's output even when pytest captures stdout (the
# fault tests' "[reliability] ..." lines): repeated in a section at the end of the run.
SUMMARY_LINES: list[str] = []


def pytest_terminal_summary(terminalreporter) -> None:
    if SUMMARY_LINES:
        terminalreporter.section("reliability figures")
        for line in SUMMARY_LINES:
            terminalreporter.write_line(line)
