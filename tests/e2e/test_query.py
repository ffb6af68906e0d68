"""End to end: what the collector stored in PostgreSQL, read back over otelstore-query's HTTP APIs.

One collector stores, in a schema of its own, the Python SDK's spans of payloads.make_sdk_spans (every
attribute type, events, links, span kinds, errors, a remote parent, a trace state, a resource without
service.name), the spans of two more services continuing its trace (payloads.downstream_spans: a call
from a client to a server, and a message from a producer to a consumer), and telemetrygen's traces
(query_api.send). Then the real otelstore-query binary reads that schema, and its answers are
compared with what was sent: the checks are query_api.py's, shared with
tests/clickhouse/test_query.py, with PostgreSQL's storage: every attribute value typed as sent, the
span flags kept.

The module has a PostgreSQL cluster of its own (conftest's own_pg): its last test stops it.
"""

from __future__ import annotations

import psycopg
import pytest

from conftest import PgCluster, postgres_exporter, wait_for_count
from harness import Collectors, unique_name
from query_api import TGEN_TRACES, QueryApiChecks, Storage, Stored, send

# Every value as sent: integers beyond 2^53 as strings, doubles JSON has no number for by name,
# bytes in base64.
POSTGRES = Storage(root_tags={"int": ("int64", 42), "int.max": ("int64", str(2**63 - 1)),
                              "float.nan": ("float64", "NaN"), "bytes": ("binary", "AAH+/w==")})


@pytest.fixture(scope="module")
def stored(own_pg: PgCluster, start_query, request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Stored:
    collectors = Collectors(request, tmp_path_factory.mktemp("collectors"))
    schema = unique_name("e2e_query")
    collector = collectors.start(postgres_exporter(own_pg.dsn, schema), schema=schema, signals=("traces",))
    try:
        sent = send(collector)
        with psycopg.connect(own_pg.dsn, autocommit=True, connect_timeout=10) as db:
            wait_for_count(db, f"SELECT count(*) FROM {collector.spans_table}", sent.spans, on_fail=collector.describe)
            rows = db.execute(f"SELECT encode(trace_id, 'hex'), max(start_time_unix_nano) / 1000 "
                              f"FROM {collector.spans_table} WHERE service_name = %s GROUP BY 1",
                              (sent.tgen_service,)).fetchall()
        assert len(rows) == TGEN_TRACES, rows

        # Started once the spans are stored: its answers are cached (cache.ttl, 15 minutes by default).
        yield Stored(query=start_query(own_pg.dsn, schema), storage=POSTGRES, what=sent,
                     tgen_latest={trace_id: int(latest) for trace_id, latest in rows},
                     stop_database=own_pg.stop, start_database=own_pg.start)
    finally:
        problems = collectors.stop_all()
        if problems:
            pytest.fail("\n\n".join(problems))


class TestQuery(QueryApiChecks):
    """Every check of query_api.py over PostgreSQL (the last one stops own_pg and starts it again)."""
