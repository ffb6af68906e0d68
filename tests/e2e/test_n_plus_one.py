"""End-to-end: the demo application's requests (examples/orm-demo) traced with the OpenTelemetry
SDK, stored in PostgreSQL by the collector, and analysed by otelstore-query: its N+1 detector finds
the lazy endpoint, and not the eager one (n_plus_one.py, shared with tests/clickhouse).

otelstore-query is conftest's (OTELSTORE_QUERY, default target/release/otelstore-query, which
`make build` builds).
"""

from __future__ import annotations

import psycopg

from conftest import Collector, wait_for_count
from n_plus_one import check_findings, run_demo


def test_the_lazy_endpoint_is_an_n_plus_one_and_the_eager_one_is_not(
    collector: Collector, db: psycopg.Connection, pg_dsn: str, start_query
):
    run = run_demo(collector.http_base)
    wait_for_count(db, f"SELECT count(*) FROM {collector.spans_table} WHERE service_name = %s",
                   len(run.spans), params=(run.service,), on_fail=collector.describe)
    check_findings(start_query(pg_dsn, collector.schema, cache={"ttl": "0s"}), run)
