"""The collector under test as a process: free ports, its configuration, start, stop and logs; and
otelstore-query, the query binary, the same way (QueryServer).

Shared by the end-to-end tests of both backends (tests/e2e/conftest.py for PostgreSQL,
tests/clickhouse/conftest.py for ClickHouse): a test builds the otelstore exporter's section for its
backend and starts collectors through `Collectors`, which stops them all at the end of the test.

Everything listens on 127.0.0.1 on ports picked at run time, and every wait is bounded.

Environment overrides (all optional):
  OTELSTORE_COLLECTOR     collector binary (default build/otelcol-otelstore/otelcol-otelstore)
  OTELSTORE_TELEMETRYGEN  telemetrygen binary (default .tools/bin/telemetrygen)
  OTELSTORE_QUERY         otelstore-query binary (default target/release/otelstore-query)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parents[2]
COLLECTOR_BIN = Path(
    os.environ.get("OTELSTORE_COLLECTOR", ROOT / "build/otelcol-otelstore/otelcol-otelstore")
)
TELEMETRYGEN_BIN = Path(
    os.environ.get("OTELSTORE_TELEMETRYGEN", ROOT / ".tools/bin/telemetrygen")
)
QUERY_BIN = Path(os.environ.get("OTELSTORE_QUERY", ROOT / "target/release/otelstore-query"))
EXPORTER_TYPE = "otelstore"
# The pipelines every collector gets (otlp receiver -> processors -> otelstore exporter).
SIGNALS = ("traces", "logs", "metrics")

COLLECTOR_READY_TIMEOUT = 60
COLLECTOR_STOP_TIMEOUT = 30
QUERY_READY_TIMEOUT = 30
QUERY_STOP_TIMEOUT = 15

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


def wait_until(check: Callable[[], Any], timeout: float, what: str, on_fail: Callable[[], str] | None = None) -> Any:
    """Polls `check` until it returns something truthy (returned), failing after `timeout` seconds
    with the last value it returned."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout}s (last: {got!r})\n{on_fail() if on_fail else ''}")
        time.sleep(0.2)


def settle_count(
    count: Callable[[], int],
    expected: int,
    what: str,
    timeout: float = 30.0,
    settle: float = 1.0,
    on_fail: Callable[[], str] | None = None,
) -> int:
    """Polls `count` until it returns `expected`, then checks it stays there for `settle` seconds.

    Fails at once if the count goes above `expected` (duplicates), and after `timeout` seconds if it
    never reaches it. `what` names the count in the message (the query), `on_fail` supplies extra
    context (e.g. the collector log).
    """
    deadline = time.monotonic() + timeout
    history: list[int] = []
    got = -1

    def fail(why: str) -> None:
        extra = on_fail() if on_fail else ""
        pytest.fail(f"{why}\n{what}\ncounts seen: {history[-20:]}\n{extra}")

    while True:
        got = count()
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
        got = count()
        if got != expected:
            history.append(got)
            fail(f"count changed from {expected} to {got} after reaching it")
    return got


def terminate(proc: subprocess.Popen, timeout: float, what: str, describe: Callable[[], str]) -> int:
    """SIGTERM, then at most `timeout` seconds of waiting; a process still running then is killed
    and the AssertionError names `what` and adds describe(). Returns the exit code (negative: killed
    by a signal)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            raise AssertionError(f"{what} ignored SIGTERM for {timeout}s and was killed\n{describe()}")
    return proc.returncode


def stop_each(started: list, unclean: Callable[[Any, int | None], str | None]) -> list[str]:
    """Stops each process wrapper of `started` (its stop(): SIGTERM and a bounded wait, an
    AssertionError for one that had to be killed); returns what went wrong: those, and
    unclean(item, exit code) of the others when it says something."""
    problems = []
    for item in started:
        try:
            rc = item.stop()
        except AssertionError as e:
            problems.append(str(e))
            continue
        problem = unclean(item, rc)
        if problem:
            problems.append(problem)
    return problems


def telemetrygen(c: Collector, *args: str) -> None:
    """Runs telemetrygen with `args` (its signal first: "traces", ...), sending to the collector `c`
    over OTLP/gRPC as fast as it can (--rate 0: its default is one item per second per worker)."""
    if not TELEMETRYGEN_BIN.exists():
        pytest.fail(f"{TELEMETRYGEN_BIN} is missing; run `make tools`")
    cmd = [str(TELEMETRYGEN_BIN), *args, "--otlp-insecure", "--otlp-endpoint", c.grpc_endpoint, "--rate", "0"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{' '.join(cmd)}: {r.stderr[-2000:]}\n{c.describe()}"


# --------------------------------------------------------------------------- collector



@dataclass
class Collector:
    """A running collector with its own ports, schema (PostgreSQL) or database (ClickHouse) and log
    file."""

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
        try:
            return terminate(self.proc, COLLECTOR_STOP_TIMEOUT, "collector", self.describe)
        finally:
            self.returncode = self.proc.returncode


def exporter_section(backend: dict, overrides: dict | None = None) -> dict:
    """The otelstore exporter's section: `backend` ({"postgres": {...}} or {"clickhouse": {...}}),
    the exporterhelper settings every test collector has, then `overrides`, a dict value merged into
    the section's dict of that key (one level deep), anything else replacing it."""
    exporter: dict[str, Any] = {
        **backend,
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
    for k, v in (overrides or {}).items():
        if isinstance(v, dict) and isinstance(exporter.get(k), dict):
            exporter[k] = {**exporter[k], **v}
        else:
            exporter[k] = v
    return exporter


def collector_config(
    exporter: dict,
    grpc_port: int,
    http_port: int,
    health_port: int,
    metrics_port: int,
    processors: list[str] | None = None,
    signals: tuple[str, ...] = SIGNALS,
) -> dict:
    """The shape of examples/postgres.yaml, on the given ports, with `exporter` as the otelstore
    exporter's section (see exporter_section).

    One pipeline per signal in `signals` (default: traces, logs and metrics), each otlp -> processors
    -> otelstore. `processors` replaces every pipeline's processors (default: memory_limiter, as the
    example).
    """
    unknown = set(signals) - set(SIGNALS)
    assert signals and not unknown, f"signals must be some of {SIGNALS}, got {signals!r}"
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


COLLECTORS_KEY = pytest.StashKey[list]()


class Collectors:
    """The collectors one test starts, each on free ports in a working directory of its own.

    stop_all() (the fixture's teardown) stops them with SIGTERM and says which did not exit cleanly;
    a failed test's report gets each collector's log (pytest_runtest_makereport below, which each
    suite's conftest.py imports).
    """

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        if not COLLECTOR_BIN.exists():
            pytest.fail(f"collector binary {COLLECTOR_BIN} is missing; run `make build`")
        self.request = request
        self.tmp_path = tmp_path
        self.started: list[Collector] = []
        request.node.stash[COLLECTORS_KEY] = self.started

    def start(
        self,
        exporter: dict,
        *,
        schema: str,
        processors: list[str] | None = None,
        signals: tuple[str, ...] = SIGNALS,
        configure: Callable[[dict, Path], None] | None = None,
    ) -> Collector:
        """Starts a collector with `exporter` as its otelstore section and waits until it is healthy.
        `configure`, if given, is called with the config dict and the working directory before the
        start, to change anything else (extensions, receiver settings)."""
        grpc_port, http_port, health_port, metrics_port = free_ports(4)
        workdir = self.tmp_path / f"collector{len(self.started)}"
        workdir.mkdir()
        config = collector_config(exporter, grpc_port, http_port, health_port, metrics_port,
                                  processors=processors, signals=signals)
        if configure is not None:
            configure(config, workdir)
        c = Collector(
            name=f"{self.request.node.name}#{len(self.started)}",
            schema=schema,
            grpc_port=grpc_port,
            http_port=http_port,
            health_port=health_port,
            workdir=workdir,
            config=config,
            metrics_port=metrics_port,
        )
        self.started.append(c)
        c.start()
        return c

    def stop_all(self) -> list[str]:
        """Stops every collector started; returns what went wrong (none ignoring SIGTERM, every one
        that had started exiting with 0)."""
        def unclean(c: Collector, rc: int | None) -> str | None:
            if rc in (0, None) or c.failed_to_start:
                return None
            return f"collector {c.name} exited with {rc} after SIGTERM\n{c.describe()}"

        return stop_each(self.started, unclean)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for c in item.stash.get(COLLECTORS_KEY, []):
            report.sections.append((f"collector {c.name} log", c.log()))


# --------------------------------------------------------------------------- otelstore-query


@dataclass
class QueryServer:
    """otelstore-query on a free port, with `config` (its file's keys; `listen` is set here) written
    to a file in `workdir`, and its output in a log file there."""

    workdir: Path
    config: dict
    port: int
    proc: subprocess.Popen | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "otelstore-query.log"
        self.config = {**self.config, "listen": f"127.0.0.1:{self.port}"}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return tail(self.log_path)

    def describe(self) -> str:
        return f"--- otelstore-query log ({self.log_path}) ---\n{self.log()}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def answers(self) -> bool:
        """Whether it answers HTTP at all: / is a 404 that reads no database and is never cached."""
        try:
            http_get(self.base_url + "/", timeout=2)
        except OSError:
            return False
        return True

    def start(self) -> None:
        """Starts it (again, after stop(): same port, the log appended to) and waits until it answers."""
        if not QUERY_BIN.exists():
            pytest.fail(f"{QUERY_BIN} is missing; run `make build`")
        config_path = self.workdir / "query.yaml"
        config_path.write_text(json.dumps(self.config, indent=2))  # JSON is YAML
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                [str(QUERY_BIN), "--config", str(config_path)],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                cwd=self.workdir, start_new_session=True,
            )
        deadline = time.monotonic() + QUERY_READY_TIMEOUT
        while not self.answers():
            if self.proc.poll() is not None:
                pytest.fail(f"otelstore-query exited with {self.proc.returncode} before answering\n"
                            f"config:\n{config_path.read_text()}\n{self.describe()}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"otelstore-query does not answer on {self.base_url} within {QUERY_READY_TIMEOUT}s\n"
                            f"{self.describe()}")
            time.sleep(0.1)

    def stop(self) -> int | None:
        """SIGTERM, bounded wait, then SIGKILL. Returns the exit code (negative: killed by signal)."""
        if self.proc is None:
            return None
        return terminate(self.proc, QUERY_STOP_TIMEOUT, "otelstore-query", self.describe)


class QueryServers:
    """The otelstore-query servers a fixture starts, each on a free port in a working directory of
    its own; stop_all() (the fixture's teardown) stops them with SIGTERM and says which did not
    exit with 0."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.started: list[QueryServer] = []

    def start(self, config: dict) -> QueryServer:
        """Starts one with `config` (its file's keys, README.md "Query: otelstore-query") and waits
        until it answers."""
        server = QueryServer(workdir=self.tmp_path_factory.mktemp("otelstore-query"), config=config,
                             port=free_port())
        self.started.append(server)
        server.start()
        return server

    def stop_all(self) -> list[str]:
        def unclean(server: QueryServer, rc: int | None) -> str | None:
            return None if rc == 0 else f"otelstore-query exited with {rc} after SIGTERM\n{server.describe()}"

        return stop_each(self.started, unclean)
