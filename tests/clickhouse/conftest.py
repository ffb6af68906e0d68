"""Fixtures of the ClickHouse tests: the test engine (chdb_front.py, ClickHouse 26.9 behind an HTTP
front, run as a process) and otelstore collectors writing to it.

The collector process itself (ports, configuration, start and stop) is tests/e2e/harness.py's,
shared with the PostgreSQL tests, and so are the payloads (tests/e2e/payloads.py): tests/e2e is put
on sys.path here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))
sys.path.insert(0, str(HERE))

# The checks shared by both backends' test_query.py: pytest rewrites their asserts to explain failures.
pytest.register_assert_rewrite("query_api", "n_plus_one")

from harness import (  # noqa: E402,F401 (pytest_runtest_makereport: the hook, for this directory too)
    ROOT,
    SIGNALS,
    Collector,
    Collectors,
    exporter_section,
    free_port,
    pytest_runtest_makereport,
    settle_count,
    unique_name,
)

FRONT = HERE / "chdb_front.py"
# ClickHouse's error codes for a table or database that does not exist (yet).
UNKNOWN_TABLE, UNKNOWN_DATABASE = 60, 81


def start_front(data_dir: Path, port: int = 0) -> tuple[subprocess.Popen, int]:
    """Starts chdb_front.py on `port` (0: a free one) with its data in `data_dir`; returns the
    process and the port it listens on."""
    proc = subprocess.Popen([sys.executable, str(FRONT), "--port", str(port), "--data", str(data_dir)],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        pytest.fail(f"chdb_front did not print its port: {line!r}, exit {proc.wait()}")
    return proc, int(line)


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, a bounded wait, then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Front:
    """SQL over the front's HTTP interface, as a user would query ClickHouse."""

    def __init__(self, url: str) -> None:
        self.url = url

    def post(self, sql: str) -> requests.Response:
        return requests.post(self.url, data=sql.encode(), timeout=60)

    def run(self, sql: str) -> str:
        r = self.post(sql)
        assert r.status_code == 200, f"{sql[:300]}...: {r.text}"
        return r.text

    def rows(self, sql: str) -> list[list]:
        out = self.run(sql + " FORMAT JSONCompact SETTINGS output_format_json_quote_64bit_integers = 0")
        return json.loads(out)["data"]

    def value(self, sql: str):
        return self.rows(sql)[0][0]

    def count(self, sql: str) -> int:
        """A count query's result; 0 while the exporter has not created the database or table yet."""
        r = self.post(sql)
        if r.headers.get("X-ClickHouse-Exception-Code") in (str(UNKNOWN_TABLE), str(UNKNOWN_DATABASE)):
            return 0
        assert r.status_code == 200, f"{sql[:300]}...: {r.text}"
        return int(r.text)

    def wait_for_count(self, sql: str, expected: int, timeout: float = 30.0, settle: float = 0.5,
                       on_fail: Callable[[], str] | None = None) -> int:
        """Polls a count query until it equals `expected` and stays there (harness.settle_count)."""
        return settle_count(lambda: self.count(sql), expected, f"query: {sql}", timeout=timeout, settle=settle,
                            on_fail=on_fail)


@pytest.fixture(scope="module")
def front(tmp_path_factory) -> Front:
    """A test engine of the module's own, empty."""
    proc, port = start_front(tmp_path_factory.mktemp("chdb"))
    try:
        yield Front(f"http://127.0.0.1:{port}")
    finally:
        stop_process(proc)


def clickhouse_exporter(endpoint: str, database: str, overrides: dict | None = None) -> dict:
    """The otelstore exporter's section for ClickHouse (see harness.exporter_section)."""
    backend = {
        "clickhouse": {
            "endpoint": endpoint,
            "database": database,
            "compression": "lz4",
            "parallel_inserts": 4,
            "create_schema": True,
        },
    }
    return exporter_section(backend, overrides)


@pytest.fixture
def start_collector(request: pytest.FixtureRequest, tmp_path: Path, front: Front):
    """Factory: start_collector(database=None, exporter_overrides=None, ...) -> a healthy Collector
    writing to the module's front (or `endpoint`), in a database of its own unless given. All are
    stopped with SIGTERM at the end of the test; one that does not exit cleanly fails the teardown.
    `processors`, `signals` and `configure` as for harness.Collectors.start."""
    collectors = Collectors(request, tmp_path)

    def start(database: str | None = None, exporter_overrides: dict | None = None, *, endpoint: str | None = None,
              processors: list[str] | None = None, signals: tuple[str, ...] = SIGNALS,
              configure: Callable[[dict, Path], None] | None = None) -> Collector:
        database = database or unique_name(f"ch_{request.node.originalname}"[:40])
        exporter = clickhouse_exporter(endpoint or front.url, database, exporter_overrides)
        return collectors.start(exporter, schema=database, processors=processors, signals=signals,
                                configure=configure)

    yield start
    problems = collectors.stop_all()
    if problems:
        pytest.fail("\n\n".join(problems))
