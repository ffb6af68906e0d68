"""End to end: what our collector stored in ClickHouse (the test engine, chdb_front.py), read back
over otelstore-query's HTTP APIs; the ClickHouse counterpart of tests/e2e/test_query.py.

One collector with the clickhouse exporter stores, in a database of its own, the Python SDK's spans
of payloads.make_sdk_spans and downstream_spans and telemetrygen's traces (query_api.send). Then the
real otelstore-query binary reads that database through the front, and its answers are compared
with what was sent: the checks are query_api.py's, shared with the PostgreSQL test, with
ClickHouse's storage (the contrib clickhouseexporter's tables; rust/query/src/store/clickhouse.rs):
every attribute value is pdata's AsString (ch_rows.as_string), so every attribute comes back as a
string, and span flags are not kept.

The module has a front of its own: its last test stops it and starts it again on the same port
with the same data.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from ch_rows import as_string
from conftest import Front, clickhouse_exporter, start_front, stop_process
from harness import Collectors, QueryServers, unique_name
from query_api import TGEN_TRACES, QueryApiChecks, Storage, Stored, send

CLICKHOUSE = Storage(
    value=lambda value: AnyValue(string_value=as_string(value)),
    flags=False,
    root_tags={"int": ("string", "42"), "int.max": ("string", str(2**63 - 1)),
               "float.nan": ("string", "NaN"), "bytes": ("string", "AAH+/w==")},
)


class OwnFront(Front):
    """A test engine of the module's own, that stop() and start() take away and bring back at the
    same address with the same data."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.proc, self.port = start_front(data_dir)
        super().__init__(f"http://127.0.0.1:{self.port}")

    def stop(self) -> None:
        stop_process(self.proc)

    def start(self) -> None:
        self.proc, _ = start_front(self.data_dir, self.port)


@pytest.fixture(scope="module")
def stored(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stored:
    front = OwnFront(tmp_path_factory.mktemp("chdb"))
    collectors = Collectors(request, tmp_path_factory.mktemp("collectors"))
    servers = QueryServers(tmp_path_factory)
    try:
        database = unique_name("ch_query")
        collector = collectors.start(clickhouse_exporter(front.url, database), schema=database, signals=("traces",))
        sent = send(collector)
        traces = f"`{database}`.otel_traces"
        front.wait_for_count(f"SELECT count() FROM {traces}", sent.spans, on_fail=collector.describe)
        rows = front.rows(f"SELECT TraceId, intDiv(max(toUnixTimestamp64Nano(Timestamp)), 1000) FROM {traces} "
                          f"WHERE ServiceName = '{sent.tgen_service}' GROUP BY TraceId")
        assert len(rows) == TGEN_TRACES, rows

        # Started once the spans are stored: its answers are cached (cache.ttl, 15 minutes by default).
        query = servers.start({"clickhouse": {"endpoint": front.url, "database": database}})
        yield Stored(query=query, storage=CLICKHOUSE, what=sent,
                     tgen_latest={trace_id: int(latest) for trace_id, latest in rows},
                     stop_database=front.stop, start_database=front.start)
    finally:
        problems = servers.stop_all() + collectors.stop_all()
        front.stop()
        if problems:
            pytest.fail("\n\n".join(problems))


class TestQuery(QueryApiChecks):
    """Every check of query_api.py over ClickHouse (the last one stops the front and starts it
    again)."""
