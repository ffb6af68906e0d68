"""End to end: the demo application's requests (examples/orm-demo) traced with the OpenTelemetry
SDK, stored in ClickHouse (the test engine) by our collector, and analysed by otelstore-query: its
N+1 detector finds the lazy endpoint, and not the eager one, from the spans as ClickHouse keeps them
(attribute values as strings). The demo and the checks are tests/e2e/n_plus_one.py's, shared with
the PostgreSQL test.
"""

from __future__ import annotations

import pytest

from conftest import Front
from harness import QueryServers
from n_plus_one import check_findings, run_demo


def test_the_lazy_endpoint_is_an_n_plus_one_and_the_eager_one_is_not(
    start_collector, front: Front, tmp_path_factory: pytest.TempPathFactory
):
    collector = start_collector(signals=("traces",))
    run = run_demo(collector.http_base)
    front.wait_for_count(f"SELECT count() FROM `{collector.schema}`.otel_traces WHERE ServiceName = '{run.service}'",
                         len(run.spans), on_fail=collector.describe)
    servers = QueryServers(tmp_path_factory)
    try:
        query = servers.start({"clickhouse": {"endpoint": front.url, "database": collector.schema},
                               "cache": {"ttl": "0s"}})
        check_findings(query, run)
    finally:
        problems = servers.stop_all()
        if problems:
            pytest.fail("\n\n".join(problems))
