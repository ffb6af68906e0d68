"""Applies schema/clickhouse/ to a real ClickHouse (chdb, the embedded engine, same version as the
server we target) and checks every materialized view. Run:
    .venv/bin/pytest -v tests/clickhouse/test_schema.py
"""
import json
import pathlib
import re
import tempfile

import pytest

chdb_session = pytest.importorskip("chdb.session")

SCHEMA = pathlib.Path(__file__).resolve().parents[2] / "schema" / "clickhouse"
PLACEHOLDER = re.compile(r"\{(database|database_literal|cluster_literal|on_cluster|engine|aggregating_engine|replacing_engine|ttl_raw|ttl_5m|ttl_1h)\}")
SINGLE_NODE = {
    "database": '"otel"',
    "database_literal": "'otel'",
    "cluster_literal": "''",
    "on_cluster": "",
    "engine": "MergeTree()",
    "aggregating_engine": "AggregatingMergeTree()",
    "replacing_engine": "ReplacingMergeTree()",
    "ttl_raw": "toIntervalDay(30)",
    "ttl_5m": "toIntervalDay(90)",
    "ttl_1h": "toIntervalDay(365)",
}
CLUSTER = dict(
    SINGLE_NODE,
    on_cluster=' ON CLUSTER "otel_cluster"',
    cluster_literal="'otel_cluster'",
    engine="ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')",
    aggregating_engine="ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')",
    replacing_engine="ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')",
)


def render(text, values):
    """Single pass: substituted values are not scanned again, so ClickHouse macros such as {shard}
    or {table} inside an engine clause survive. An unknown {name} is left alone."""
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def statements(text):
    """Split rule: a statement ends at a line that holds only ';'. Chunks that are only comments
    or blank are skipped."""
    out = []
    for chunk in re.split(r"(?m)^[ \t]*;[ \t]*$", text):
        body = "\n".join(l for l in chunk.splitlines() if not l.strip().startswith("--")).strip()
        if body:
            out.append(chunk.strip())
    return out


def first_line(st):
    return next(l for l in st.splitlines() if l.strip() and not l.strip().startswith("--"))


def migrations():
    files = sorted(p for p in SCHEMA.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    return [(int(p.name[:4]), p.stem[5:], p.read_text()) for p in files]


def migrate(query, values, upto=None):
    """What the core does: bootstrap, then every numbered file not yet recorded (up to version
    `upto`, if given), then record it. `query(sql)` runs one statement and returns its output as
    text (CSV or TabSeparated): session_query(sess) for a chdb session, Front.run for the test
    engine. Returns the versions applied in this pass."""
    db = values["database"]
    for st in statements(render((SCHEMA / "bootstrap.sql").read_text(), values)):
        query(st)
    done = {int(v) for v in query(f"SELECT version FROM {db}.otelstore_schema_migrations FINAL").split()}
    applied = []
    for version, name, text in migrations():
        if version in done or (upto is not None and version > upto):
            continue
        for st in statements(render(text, values)):
            query(st)
        query(f"INSERT INTO {db}.otelstore_schema_migrations (version, name) VALUES ({version}, '{name}')")
        applied.append(version)
    return applied


def session_query(sess):
    return lambda sql: sess.query(sql, "CSV").data()


def rows(sess, sql):
    """Rows as JSON values; 64-bit integers come back as ints whether or not the server quotes them."""
    res = sess.query(sql + " SETTINGS output_format_json_quote_64bit_integers = 0", "JSONCompact")
    return json.loads(res.data())["data"]


@pytest.fixture(scope="module")
def sess():
    with tempfile.TemporaryDirectory() as d:
        s = chdb_session.Session(d)
        yield s
        s.close()


def test_files_and_placeholders():
    names = [p.name for p in sorted(SCHEMA.glob("*.sql"))]
    assert names == ["0001_traces.sql", "0002_logs.sql", "0003_metrics.sql", "0004_rollups.sql",
                     "0005_insert_deduplication.sql", "bootstrap.sql", "distributed.sql"]
    for p in SCHEMA.glob("*.sql"):
        rendered = render(p.read_text(), SINGLE_NODE)
        assert not re.search(r"\{[a-z_0-9]+\}", rendered), p.name
        for st in statements(rendered):
            first = first_line(st)
            # Every statement can run again: created only if missing, or a setting set again.
            assert "IF NOT EXISTS" in first or " MODIFY SETTING " in first, (p.name, first)


def test_migrate_twice_and_idempotent(sess):
    assert migrate(session_query(sess), SINGLE_NODE) == [1, 2, 3, 4, 5]
    assert migrate(session_query(sess), SINGLE_NODE) == []
    # Every statement is IF NOT EXISTS, so re-running a file whole is harmless too.
    for _, _, text in migrations():
        for st in statements(render(text, SINGLE_NODE)):
            sess.query(st)
    assert rows(sess, "SELECT count(), groupArray(name) FROM (SELECT * FROM otel.otelstore_schema_migrations FINAL ORDER BY version)") == [
        [5, ["traces", "logs", "metrics", "rollups", "insert_deduplication"]]
    ]
    tables = {r[0] for r in rows(sess, "SELECT name FROM system.tables WHERE database = 'otel'")}
    for t in ["otel_traces", "otel_traces_trace_id_ts", "otel_traces_trace_id_ts_mv", "otel_logs",
              "otel_metrics_gauge", "otel_metrics_sum", "otel_metrics_histogram",
              "otel_metrics_exponential_histogram", "otel_metrics_summary",
              "otel_metrics_rollup_5m", "otel_metrics_rollup_1h", "otel_span_stats_1h",
              "otel_service_dependencies_1h", "otel_error_logs_1h", "otel_rpc_spans"]:
        assert t in tables
    # Every table that stores rows deduplicates retried inserts (0005).
    engines = rows(sess, "SELECT name, engine_full FROM system.tables WHERE database = 'otel' AND engine LIKE '%MergeTree' "
                         "AND name != 'otelstore_schema_migrations'")
    assert len(engines) == 14
    for name, engine in engines:
        assert "non_replicated_deduplication_window = 1000" in engine, name


CONTRIB_TYPES = {
    "otel_traces": {"Timestamp": "DateTime64(9)", "TraceId": "String", "SpanKind": "LowCardinality(String)",
                    "ResourceAttributes": "Map(LowCardinality(String), String)", "Duration": "UInt64",
                    "Events.Timestamp": "Array(DateTime64(9))", "Links.TraceId": "Array(String)"},
    "otel_logs": {"Timestamp": "DateTime64(9)", "Body": "String", "SeverityNumber": "UInt8",
                  "LogAttributes": "Map(LowCardinality(String), String)", "TimestampTime": "DateTime"},
    "otel_metrics_sum": {"TimeUnix": "DateTime64(9)", "Value": "Float64", "IsMonotonic": "Bool",
                         "AggregationTemporality": "Int32", "Exemplars.TraceId": "Array(String)"},
    "otel_metrics_histogram": {"BucketCounts": "Array(UInt64)", "ExplicitBounds": "Array(Float64)"},
    "otel_metrics_summary": {"ValueAtQuantiles.Quantile": "Array(Float64)"},
}


def test_column_types(sess):
    for table, want in CONTRIB_TYPES.items():
        got = dict(rows(sess, f"SELECT name, type FROM system.columns WHERE database = 'otel' AND table = '{table}'"))
        for col, typ in want.items():
            assert got.get(col) == typ, (table, col, got.get(col))
    idx = {r[0] for r in rows(sess, "SELECT name FROM system.data_skipping_indices WHERE database='otel' AND table='otel_traces'")}
    assert {"idx_trace_id", "idx_span_attr_key", "idx_span_attr_value", "idx_res_attr_key"} <= idx


T0 = "2026-11-23 10:07:00"


def insert_spans(sess):
    cols = ("Timestamp, TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, "
            "ResourceAttributes, SpanAttributes, Duration, StatusCode")
    tid = "0af7651916cd43dd8448eb211c80319c"
    # Insert 1: B's server span (child) arrives first, alone; its parent is not there yet.
    sess.query(f"INSERT INTO otel.otel_traces ({cols}) VALUES "
               f"('{T0}.000000100', '{tid}', 'bbbbbbbbbbbbbbbb', 'aaaaaaaaaaaaaaaa', 'GET /items', 'Server', 'svc-b', "
               f"{{'service.name':'svc-b'}}, {{'http.route':'/items'}}, 2000000, 'Error')")
    # Insert 2: A's client span (the parent), an internal span of A, and a second pair that
    # arrives within one block (client C -> server B) plus a same-service pair that is no edge.
    sess.query(f"INSERT INTO otel.otel_traces ({cols}) VALUES "
               f"('{T0}.000000000', '{tid}', 'aaaaaaaaaaaaaaaa', 'rrrrrrrrrrrrrrrr', 'GET items', 'Client', 'svc-a', "
               f"{{'service.name':'svc-a'}}, {{}}, 3000000, 'Unset'), "
               f"('{T0}.000000000', '{tid}', 'rrrrrrrrrrrrrrrr', '', 'handler', 'Internal', 'svc-a', "
               f"{{'service.name':'svc-a'}}, {{}}, 5000000, 'Unset'), "
               f"('{T0}.5', 'ffff0000ffff0000ffff0000ffff0000', 'cccccccccccccccc', '', 'call', 'Client', 'svc-c', "
               f"{{}}, {{}}, 1000, 'Unset'), "
               f"('{T0}.6', 'ffff0000ffff0000ffff0000ffff0000', 'dddddddddddddddd', 'cccccccccccccccc', 'GET /items', 'Server', 'svc-b', "
               f"{{}}, {{}}, 900, 'Ok'), "
               f"('{T0}.7', 'ffff0000ffff0000ffff0000ffff0000', 'eeeeeeeeeeeeeeee', 'dddddddddddddddd', 'db', 'Client', 'svc-b', "
               f"{{}}, {{}}, 100, 'Unset'), "
               f"('{T0}.8', 'ffff0000ffff0000ffff0000ffff0000', '1111111111111111', 'eeeeeeeeeeeeeeee', 'db', 'Server', 'svc-b', "
               f"{{}}, {{}}, 50, 'Unset')")
    # Insert 3: the same client span again (a retried export) must not count a second call.
    sess.query(f"INSERT INTO otel.otel_traces ({cols}) VALUES "
               f"('{T0}.000000000', '{tid}', 'aaaaaaaaaaaaaaaa', 'rrrrrrrrrrrrrrrr', 'GET items', 'Client', 'svc-a', "
               f"{{'service.name':'svc-a'}}, {{}}, 3000000, 'Unset')")


def test_traces_views(sess):
    insert_spans(sess)
    assert rows(sess, "SELECT TraceId, min(Start), max(End) FROM otel.otel_traces_trace_id_ts "
                      "WHERE TraceId = '0af7651916cd43dd8448eb211c80319c' GROUP BY TraceId") == [
        ["0af7651916cd43dd8448eb211c80319c", "2026-11-23 10:07:00", "2026-11-23 10:07:00"]]
    stats = rows(sess, "SELECT ServiceName, SpanName, SpanKind, countMerge(Spans), sumMerge(Errors), "
                       "minMerge(DurationMin), maxMerge(DurationMax), round(quantileTDigestMerge(0.5)(DurationQuantiles)) "
                       "FROM otel.otel_span_stats_1h WHERE Hour = '2026-11-23 10:00:00' "
                       "GROUP BY ServiceName, SpanName, SpanKind ORDER BY ServiceName, SpanName, SpanKind")
    by_key = {tuple(r[:3]): r[3:] for r in stats}
    # B's server span: one in each trace, one of them an error; the retried client span counts twice
    # here (span stats count rows as inserted), but only once as a dependency call below.
    assert by_key[("svc-b", "GET /items", "Server")][:4] == [2, 1, 900, 2000000]
    assert by_key[("svc-a", "GET items", "Client")] == [2, 0, 3000000, 3000000, 3000000]
    assert by_key[("svc-a", "handler", "Internal")][0] == 1
    deps = rows(sess, "SELECT ParentService, ChildService, uniqCombined64Merge(Calls), uniqCombined64Merge(Errors) "
                      "FROM otel.otel_service_dependencies_1h WHERE Hour = '2026-11-23 10:00:00' "
                      "GROUP BY ParentService, ChildService ORDER BY ParentService, ChildService")
    assert deps == [["svc-a", "svc-b", 1, 1], ["svc-c", "svc-b", 1, 0]]


def test_error_logs_view(sess):
    sess.query("INSERT INTO otel.otel_logs (Timestamp, ServiceName, SeverityText, SeverityNumber, Body, ResourceAttributes) VALUES "
               f"('{T0}', 'svc-a', 'INFO', 9, 'started', {{'k8s.pod.name':'a-1'}}), "
               f"('{T0}', 'svc-a', 'ERROR', 17, 'connection refused', {{'k8s.pod.name':'a-1'}}), "
               f"('{T0}', 'svc-b', 'WARN', 13, 'slow', {{}})")
    assert rows(sess, "SELECT ServiceName, countMerge(Records) FROM otel.otel_error_logs_1h GROUP BY ServiceName") == [["svc-a", 1]]
    assert rows(sess, "SELECT count() FROM otel.otel_logs WHERE hasToken(lower(Body), 'refused') "
                      "AND `__otel_materialized_k8s.pod.name` = 'a-1' AND TimestampTime = '2026-11-23 10:07:00'") == [[1]]


def test_metric_rollups(sess):
    base = "ResourceAttributes, ServiceName, MetricName, MetricUnit, Attributes, StartTimeUnix, TimeUnix"
    res = "{'service.name':'svc-a'}, 'svc-a'"
    sess.query(f"INSERT INTO otel.otel_metrics_gauge ({base}, Value) VALUES "
               f"({res}, 'cpu', '1', {{'cpu':'0'}}, '{T0}', '2026-11-23 10:07:00', 1.5), "
               f"({res}, 'cpu', '1', {{'cpu':'0'}}, '{T0}', '2026-11-23 10:08:00', 0.5), "
               f"({res}, 'cpu', '1', {{'cpu':'0'}}, '{T0}', '2026-11-23 10:12:00', 2.5)")
    sess.query(f"INSERT INTO otel.otel_metrics_sum ({base}, Value, AggregationTemporality, IsMonotonic) VALUES "
               f"({res}, 'requests', '1', {{}}, '{T0}', '2026-11-23 10:07:00', 10, 1, true), "
               f"({res}, 'requests', '1', {{}}, '{T0}', '2026-11-23 10:08:00', 5, 1, true)")
    sess.query(f"INSERT INTO otel.otel_metrics_histogram ({base}, Count, Sum, BucketCounts, ExplicitBounds, Min, Max, AggregationTemporality) VALUES "
               f"({res}, 'latency', 'ms', {{}}, '{T0}', '2026-11-23 10:07:00', 3, 30, [1,2,0], [10,100], 5, 15, 1), "
               f"({res}, 'latency', 'ms', {{}}, '{T0}', '2026-11-23 10:09:00', 2, 300, [0,1,1], [10,100], 50, 200, 1)")
    sess.query(f"INSERT INTO otel.otel_metrics_exponential_histogram ({base}, Count, Sum, Scale, ZeroCount, "
               "PositiveOffset, PositiveBucketCounts, NegativeOffset, NegativeBucketCounts, Min, Max, AggregationTemporality) VALUES "
               f"({res}, 'size', 'By', {{}}, '{T0}', '2026-11-23 10:07:00', 4, 40, 2, 1, 3, [1,2], 0, [], 1, 20, 1), "
               f"({res}, 'size', 'By', {{}}, '{T0}', '2026-11-23 10:08:00', 2, 20, 2, 0, 4, [1,1], 0, [], 2, 10, 1)")
    sess.query(f"INSERT INTO otel.otel_metrics_summary ({base}, Count, Sum, `ValueAtQuantiles.Quantile`, `ValueAtQuantiles.Value`) VALUES "
               f"({res}, 'gc', 's', {{}}, '{T0}', '2026-11-23 10:07:00', 3, 0.3, [0.5, 0.99], [0.1, 0.2])")

    q5 = ("SELECT MetricName, MetricType, toString(Bucket), countMerge(Points), sumMerge(Sum), minMerge(Min), maxMerge(Max), "
          "argMaxMerge(Last), sumMerge(Count), sumForEachMerge(BucketCounts), sumMapMerge(PositiveBuckets) "
          "FROM otel.otel_metrics_rollup_{r} GROUP BY MetricName, MetricType, Bucket, SeriesHash ORDER BY MetricName, Bucket")
    five = rows(sess, q5.format(r="5m"))
    assert five == [
        ["cpu", "gauge", "2026-11-23 10:05:00", 2, 2, 0.5, 1.5, 0.5, 0, [], [[], []]],
        ["cpu", "gauge", "2026-11-23 10:10:00", 1, 2.5, 2.5, 2.5, 2.5, 0, [], [[], []]],
        ["latency", "histogram", "2026-11-23 10:05:00", 2, 330, 5, 200, 300, 5, [1, 3, 1], [[], []]],
        ["requests", "sum", "2026-11-23 10:05:00", 2, 15, 5, 10, 5, 0, [], [[], []]],
        ["size", "exponential_histogram", "2026-11-23 10:05:00", 2, 60, 1, 20, 20, 6, [], [[3, 4, 5], [1, 3, 1]]],
    ]
    hour = rows(sess, q5.format(r="1h"))
    assert hour[0] == ["cpu", "gauge", "2026-11-23 10:00:00", 3, 4.5, 0.5, 2.5, 2.5, 0, [], [[], []]]
    assert [r[0] for r in hour] == ["cpu", "latency", "requests", "size"]  # summaries are not rolled up
    attrs = rows(sess, "SELECT any(Attributes), any(MetricUnit), any(ExplicitBounds) FROM otel.otel_metrics_rollup_1h "
                       "WHERE MetricName IN ('cpu', 'latency') GROUP BY MetricName ORDER BY MetricName")
    assert attrs == [[{"cpu": "0"}, "1", []], [{}, "ms", [10, 100]]]


def test_cluster_variant_renders_on_cluster_and_replicated():
    creates = 0
    for p in sorted(SCHEMA.glob("*.sql")):
        for st in statements(render(p.read_text(), CLUSTER)):
            head = first_line(st)
            assert head.startswith(("CREATE ", "ALTER TABLE ")), (p.name, head)
            assert ' ON CLUSTER "otel_cluster"' in head, (p.name, head)
            creates += 1
            engines = re.findall(r"ENGINE = (\w+)\(", st)
            if p.name == "distributed.sql":
                # AS the local table, over the local table of the same name on every shard.
                local = re.search(r"\.(\w+)_dist ON CLUSTER", head).group(1)
                assert f' AS "otel".{local}\n' in st, st
                assert f"ENGINE = Distributed('otel_cluster', 'otel', '{local}', " in st, st
                continue
            for e in engines:
                assert e.startswith("Replicated"), (p.name, e)
            if "CREATE TABLE" in head:
                assert engines, (p.name, head)
                # ClickHouse macros in the engine path survive the single-pass substitution.
                assert "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'" in st
    assert creates >= 25


def test_distributed_tables_parse_and_name_their_cluster(sess):
    """chdb has no cluster, so a Distributed table cannot be created here; the server checks the
    statement and the table it is AS, and refuses only for want of the cluster."""
    migrate(session_query(sess), SINGLE_NODE)
    values = dict(SINGLE_NODE, cluster_literal="'otel_cluster'")
    for st in statements(render((SCHEMA / "distributed.sql").read_text(), values)):
        with pytest.raises(Exception, match=r"Requested cluster 'otel_cluster' not found"):
            sess.query(st)
        broken = st.replace(" AS \"otel\".otel_", " AS \"otel\".no_such_")
        with pytest.raises(Exception, match=r"UNKNOWN_TABLE|doesn't exist|does not exist"):
            sess.query(broken)
