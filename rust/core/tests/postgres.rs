//! The exporter against a real PostgreSQL: started by scripts/pg.sh in a temporary directory
//! unless OTELSTORE_TEST_PG_DSN names a database to use.

mod pg_cluster;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::Link, ResourceSpans, ScopeSpans, Span};
use otelstore::signal::Signal;
use otelstore::{Config, Error, ErrorKind, Exporter};
use pg_cluster::{repo_root, Cluster};
use prost::Message;

/// How long a test's export call waits for its commit.
const WAIT: Option<Duration> = Some(Duration::from_secs(20));

fn exporter(dsn: &str, schema: &str, create_schema: bool) -> Exporter {
    exporter_with(
        serde_json::json!({"postgres": {"dsn": dsn, "schema": schema, "create_schema": create_schema}}),
    )
}

fn exporter_with(mut config: serde_json::Value) -> Exporter {
    // Most test spans are from 2023: keep them, and their rollups, past the default retentions
    // (30 days raw, a year hourly), or the maintenance, which runs as the exporter starts, may
    // delete them while a test reads them.
    if config.get("retention").is_none() {
        config["retention"] =
            serde_json::json!({"raw": "87840h", "rollup_5m": "87840h", "rollup_1h": "87840h"});
    }
    Exporter::new(Config::from_json(config.to_string().as_bytes()).expect("valid config"))
        .expect("exporter")
}

/// The counters of a telemetry drain, as "name/table" -> delta.
fn counters(exporter: &Exporter) -> std::collections::BTreeMap<String, u64> {
    let drained: serde_json::Value =
        serde_json::from_str(&exporter.drain_telemetry()).expect("JSON");
    drained["counters"]
        .as_array()
        .expect("counters")
        .iter()
        .map(|c| {
            (
                format!(
                    "{}/{}",
                    c["name"].as_str().expect("name"),
                    c["table"].as_str().expect("table")
                ),
                c["delta"].as_u64().expect("delta"),
            )
        })
        .collect()
}

/// Runs one query and returns the first column of every row as text.
fn query(dsn: &str, sql: &str) -> Vec<Option<String>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        client
            .query(sql, &[])
            .await
            .expect(sql)
            .iter()
            .map(|row| row.get::<_, Option<String>>(0))
            .collect()
    })
}

/// Runs statements that return nothing, such as DDL, several at once.
fn execute(dsn: &str, sql: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        client.batch_execute(sql).await.expect(sql);
    })
}

fn one(dsn: &str, sql: &str) -> String {
    query(dsn, sql).remove(0).expect("not null")
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn request(service: &str, spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue(service.into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "scope".into(),
                    version: "9".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

fn span(id: u8) -> Span {
    Span {
        trace_id: vec![0xa0, id, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        span_id: vec![0xb0, id, 0, 0, 0, 0, 0, 1],
        name: format!("op-{id}"),
        kind: 3,
        start_time_unix_nano: 1_700_000_000_123_456_789,
        end_time_unix_nano: 1_700_000_000_123_457_790,
        ..Default::default()
    }
}

#[test]
fn postgres_sink() {
    let cluster = Cluster::start();
    let dsn = cluster.dsn.as_str();
    every_value_kind_survives_jsonb(dsn);
    timestamps_and_columns_are_exact(dsn);
    migrations_apply_once_for_concurrent_exporters(dsn);
    a_missing_table_without_create_schema_is_retryable(dsn);
    rejected_spans_do_not_stop_the_others(dsn);
    export_after_shutdown_is_refused(dsn);
    concurrent_exports_share_writes(dsn);
    a_retried_request_is_stored_once(dsn);
    rows_the_database_refuses_are_isolated(dsn);
    partitions_are_made_ahead_and_dropped_after_retention(dsn);
    an_unpartitioned_spans_table_is_upgraded_in_place(dsn);
    every_spans_partition_gets_the_brin_index(dsn);
    span_statistics_agree_with_the_spans(dsn);
    dependencies_are_found_across_requests(dsn);
    logs_and_metrics_roll_up(dsn);
    match &cluster.dir {
        Some(dir) => tls_follows_sslmode_and_verifies_with_a_ca_file(dsn, dir),
        None => eprintln!(
            "TLS scenario not run: OTELSTORE_TEST_PG_DSN names a server this test cannot configure"
        ),
    }
}

/// Makes a CA and a server certificate for 127.0.0.1 in `dir`, installs the server's into the
/// cluster's data directory and turns TLS on.
fn enable_server_tls(dsn: &str, dir: &Path) -> PathBuf {
    let script = r#"set -e
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj "/CN=otelstore test CA" 2>/dev/null
        openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other-ca.pem -days 1 -subj "/CN=someone else" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\n' > san.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.crt -days 1 -extfile san.ext 2>/dev/null
        owner=$(stat -c %u:%g pgdata)
        install -o "${owner%:*}" -g "${owner#*:}" -m 600 server.key server.crt pgdata/"#;
    let status = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .expect("run openssl");
    assert!(status.success(), "making test certificates failed");
    query(dsn, "ALTER SYSTEM SET ssl = on");
    query(dsn, "SELECT pg_reload_conf()::text");
    // The reload is asynchronous; wait until new connections see it.
    for _ in 0..50 {
        if one(dsn, "SHOW ssl") == "on" {
            return dir.to_path_buf();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("PostgreSQL did not turn TLS on");
}

fn tls_follows_sslmode_and_verifies_with_a_ca_file(dsn: &str, dir: &Path) {
    let certs = enable_server_tls(dsn, dir);
    let tls_dsn = format!("{dsn}?sslmode=require");
    let ssl_sessions = "SELECT count(*)::text FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE ssl AND application_name = 'otelstore'";

    let verified = exporter_with(
        serde_json::json!({"postgres": {"dsn": tls_dsn, "schema": "tls", "ca_file": certs.join("ca.pem")}}),
    );
    verified
        .export(Signal::Traces, &request("tls", vec![span(110)]), WAIT)
        .expect("export over verified TLS");
    assert_ne!(
        one(dsn, ssl_sessions),
        "0",
        "the exporter's connection should use TLS"
    );

    let encrypted =
        exporter_with(serde_json::json!({"postgres": {"dsn": tls_dsn, "schema": "tls"}}));
    encrypted
        .export(Signal::Traces, &request("tls", vec![span(111)]), WAIT)
        .expect("export over unverified TLS");
    assert_eq!(one(dsn, "SELECT count(*)::text FROM tls.spans"), "2");

    let wrong_ca = exporter_with(
        serde_json::json!({"postgres": {"dsn": tls_dsn, "schema": "tls", "ca_file": certs.join("other-ca.pem")}}),
    );
    let error = wrong_ca
        .export(
            Signal::Traces,
            &request("tls", vec![span(112)]),
            Some(Duration::from_secs(1)),
        )
        .expect_err("unknown issuer");
    assert_eq!(error.kind(), ErrorKind::Retryable);
    assert!(
        error.to_string().contains("invalid peer certificate"),
        "{error}"
    );
    assert_eq!(one(dsn, "SELECT count(*)::text FROM tls.spans"), "2");
}

fn concurrent_exports_share_writes(dsn: &str) {
    let exporter = std::sync::Arc::new(exporter_with(
        serde_json::json!({"postgres": {"dsn": dsn, "schema": "merged", "pool_size": 1}}),
    ));
    exporter
        .export(Signal::Traces, &request("warm", vec![span(60)]), WAIT)
        .expect("schema and connection ready");
    let threads: Vec<_> = (0..16u8)
        .map(|i| {
            let exporter = std::sync::Arc::clone(&exporter);
            std::thread::spawn(move || {
                exporter.export(
                    Signal::Traces,
                    &request(
                        "m",
                        (0..50u8)
                            .map(|j| span(j.wrapping_mul(16).wrapping_add(i)))
                            .collect(),
                    ),
                    WAIT,
                )
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().expect("thread").expect("export").rows, 50);
    }
    assert_eq!(
        one(
            dsn,
            "SELECT count(*)::text FROM merged.spans WHERE service_name = 'm'"
        ),
        "800"
    );
    let counters = counters(&exporter);
    assert_eq!(counters["rows_written/spans"], 801);
    // With one connection, calls that arrive while a COPY runs wait and go out together.
    assert!(counters["batches_written/spans"] < 17, "{counters:?}");
}

fn a_retried_request_is_stored_once(dsn: &str) {
    let exporter = exporter(dsn, "dedupe", true);
    let body = request("d", vec![span(70), span(71)]);
    assert_eq!(
        exporter
            .export(Signal::Traces, &body, WAIT)
            .expect("first")
            .rows,
        2
    );
    assert_eq!(
        exporter
            .export(Signal::Traces, &body, WAIT)
            .expect("retry")
            .rows,
        0
    );
    // A new exporter (a restarted collector replaying its persistent queue) recognizes it too.
    assert_eq!(
        self::exporter(dsn, "dedupe", true)
            .export(Signal::Traces, &body, WAIT)
            .expect("replay")
            .rows,
        0
    );
    assert_eq!(one(dsn, "SELECT count(*)::text FROM dedupe.spans"), "2");
    assert_eq!(
        one(
            dsn,
            "SELECT string_agg(rows::text, ',') FROM dedupe.otelstore_batches"
        ),
        "2"
    );
    assert_eq!(counters(&exporter)["duplicate_requests_skipped/spans"], 1);
}

fn rows_the_database_refuses_are_isolated(dsn: &str) {
    let exporter = exporter(dsn, "refuse", true);
    exporter
        .export(Signal::Traces, &request("r", vec![span(80)]), WAIT)
        .expect("create the table");
    query(
        dsn,
        "ALTER TABLE refuse.spans ADD CONSTRAINT no_poison CHECK (name NOT LIKE 'poison%')",
    );
    let mut spans: Vec<Span> = (81..=100).map(span).collect();
    spans[3].name = "poison-a".into();
    spans[17].name = "poison-b".into();
    let error = exporter
        .export(Signal::Traces, &request("r", spans), WAIT)
        .expect_err("two refused");
    assert_eq!(error.kind(), ErrorKind::Permanent);
    assert!(
        matches!(
            error,
            Error::RowsRejected {
                written: 18,
                rejected: 2,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("no_poison"), "{error}");
    assert_eq!(one(dsn, "SELECT count(*)::text FROM refuse.spans"), "19");
    assert_eq!(
        one(
            dsn,
            "SELECT count(*)::text FROM refuse.spans WHERE name LIKE 'poison%'"
        ),
        "0"
    );
    assert_eq!(counters(&exporter)["rows_rejected/spans"], 2);
}

fn every_value_kind_survives_jsonb(dsn: &str) {
    let mut all_kinds = span(1);
    all_kinds.attributes = vec![
        kv("s", Value::StringValue("quote\" back\\ nul\0 é".into())),
        kv("b", Value::BoolValue(false)),
        kv("i", Value::IntValue(i64::MAX)),
        kv("d", Value::DoubleValue(1.0)),
        kv("nan", Value::DoubleValue(f64::NAN)),
        kv("bytes", Value::BytesValue(vec![0, 255])),
        kv(
            "arr",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(Value::IntValue(1)),
                    },
                    AnyValue {
                        value: Some(Value::DoubleValue(2.5)),
                    },
                ],
            }),
        ),
        kv(
            "map",
            Value::KvlistValue(KeyValueList {
                values: vec![kv("$x", Value::BoolValue(true))],
            }),
        ),
        kv("", Value::StringValue("empty key".into())),
        kv("dup", Value::IntValue(1)),
        kv("dup", Value::IntValue(2)),
    ];
    let mut big_double = span(3);
    big_double.attributes = vec![
        kv("big", Value::DoubleValue(1e16)),
        kv("int", Value::IntValue(10_000_000_000_000_000)),
    ];
    all_kinds.links = vec![Link {
        trace_id: vec![0xff; 16],
        span_id: vec![0xee; 8],
        attributes: vec![kv("l", Value::IntValue(1))],
        ..Default::default()
    }];
    let exporter = exporter(dsn, "kinds", true);
    exporter
        .export(
            Signal::Traces,
            &request("kinds-svc", vec![all_kinds, big_double]),
            WAIT,
        )
        .expect("export");
    // jsonb expands exponents: a large double must still read back with a fraction.
    assert_eq!(
        one(
            dsn,
            "SELECT span_attributes::text FROM kinds.spans WHERE name = 'op-3'"
        ),
        r#"{"big": 10000000000000000.0, "int": 10000000000000000}"#
    );
    let attributes = one(
        dsn,
        "SELECT span_attributes::text FROM kinds.spans WHERE name = 'op-1'",
    );
    assert_eq!(
        attributes,
        r#"{"": "empty key", "b": false, "d": 1.0, "i": 9223372036854775807, "s": "quote\" back\\ nul� é", "arr": [1, 2.5], "dup": 2, "map": {"$$x": true}, "nan": {"$double": "NaN"}, "bytes": {"$bytes": "AP8="}}"#
    );
    assert_eq!(
        one(
            dsn,
            "SELECT span_attributes->>'s' FROM kinds.spans WHERE name = 'op-1'"
        ),
        "quote\" back\\ nul\u{fffd} é"
    );
    assert_eq!(one(dsn, "SELECT (span_attributes @> '{\"i\": 9223372036854775807}')::text FROM kinds.spans WHERE name = 'op-1'"), "true");
    assert_eq!(
        one(
            dsn,
            "SELECT links::text FROM kinds.spans WHERE name = 'op-1'"
        ),
        r#"[{"flags": 0, "span_id": "eeeeeeeeeeeeeeee", "trace_id": "ffffffffffffffffffffffffffffffff", "attributes": {"l": 1}, "trace_state": "", "dropped_attributes_count": 0}]"#
    );
}

fn timestamps_and_columns_are_exact(dsn: &str) {
    let exporter = exporter(dsn, "exact", true);
    exporter
        .export(Signal::Traces, &request("exact-svc", vec![span(2)]), WAIT)
        .expect("export");
    let row = one(
        dsn,
        "SELECT concat_ws('|', encode(trace_id, 'hex'), encode(span_id, 'hex'), parent_span_id IS NULL, name, kind,
                start_time AT TIME ZONE 'UTC', start_time_unix_nano, duration_ns, status_code, service_name,
                scope_name, scope_version, scope_schema_url, resource_attributes::text)
         FROM exact.spans",
    );
    assert_eq!(
        row,
        "a0020000000000000000000000000001|b002000000000001|t|op-2|3|2023-11-14 22:13:20.123456|1700000000123456789|1001|0|exact-svc|scope|9|https://opentelemetry.io/schemas/1.21.0|{\"service.name\": \"exact-svc\"}"
    );
}

fn migrations_apply_once_for_concurrent_exporters(dsn: &str) {
    let threads: Vec<_> = (0..4u8)
        .map(|i| {
            let dsn = dsn.to_owned();
            std::thread::spawn(move || {
                exporter(&dsn, "Concurrent_Schema", true).export(
                    Signal::Traces,
                    &request("c", vec![span(10 + i)]),
                    WAIT,
                )
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread").expect("export");
    }
    assert_eq!(
        one(
            dsn,
            "SELECT count(*)::text FROM \"Concurrent_Schema\".spans"
        ),
        "4"
    );
    assert_eq!(one(dsn, "SELECT string_agg(version::text || ':' || name, ',' ORDER BY version) FROM \"Concurrent_Schema\".otelstore_schema_migrations"), "1:spans,2:request_ids,3:partitioned_spans,4:logs,5:metrics,6:rollups,7:spans_start_time_brin");
    // A restart re-applies nothing and keeps the data.
    exporter(dsn, "Concurrent_Schema", true)
        .export(Signal::Traces, &request("c", vec![span(20)]), WAIT)
        .expect("export after restart");
    assert_eq!(
        one(
            dsn,
            "SELECT count(*)::text FROM \"Concurrent_Schema\".otelstore_schema_migrations"
        ),
        "7"
    );
    assert_eq!(
        one(
            dsn,
            "SELECT count(*)::text FROM \"Concurrent_Schema\".spans"
        ),
        "5"
    );
}

fn a_missing_table_without_create_schema_is_retryable(dsn: &str) {
    let started = std::time::Instant::now();
    let error = exporter(dsn, "nobody_made_this", false)
        .export(
            Signal::Traces,
            &request("m", vec![span(30)]),
            Some(Duration::from_secs(1)),
        )
        .expect_err("no table");
    assert_eq!(error.kind(), ErrorKind::Retryable);
    let message = error.to_string();
    assert!(message.starts_with("not written before the export deadline; last error: PostgreSQL: look up stored request ids:"), "{message}");
    assert!(message.contains("does not exist"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the call returned {:?} after its 1 s deadline",
        started.elapsed()
    );
}

fn rejected_spans_do_not_stop_the_others(dsn: &str) {
    let mut too_late = span(40);
    too_late.start_time_unix_nano = u64::MAX;
    let exporter = exporter(dsn, "partial", true);
    let error = exporter
        .export(
            Signal::Traces,
            &request("p", vec![span(41), too_late, span(42)]),
            WAIT,
        )
        .expect_err("one rejected");
    assert_eq!(error.kind(), ErrorKind::Permanent);
    assert!(
        matches!(
            error,
            Error::RowsRejected {
                written: 2,
                rejected: 1,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(
        one(
            dsn,
            "SELECT string_agg(name, ',' ORDER BY name) FROM partial.spans"
        ),
        "op-41,op-42"
    );
    assert_eq!(counters(&exporter)["rows_rejected/spans"], 1);
}

fn export_after_shutdown_is_refused(dsn: &str) {
    let exporter = exporter(dsn, "shut", true);
    exporter
        .export(Signal::Traces, &request("s", vec![span(50)]), WAIT)
        .expect("export");
    exporter.shutdown(Duration::from_secs(5)).expect("shutdown");
    let error = exporter
        .export(Signal::Traces, &request("s", vec![span(51)]), WAIT)
        .expect_err("after shutdown");
    assert_eq!(error.kind(), ErrorKind::ShutDown);
    assert_eq!(one(dsn, "SELECT count(*)::text FROM shut.spans"), "1");
}

/// Unix nanoseconds `days` days from now.
fn days_from_now(days: i64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as i64;
    (now + days * 86_400_000_000_000) as u64
}

/// Polls `sql` until it returns `expected`, for up to 20 s (maintenance runs every second here).
fn eventually(dsn: &str, sql: &str, expected: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = one(dsn, sql);
        if got == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{sql}: got {got:?}, expected {expected:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn span_at(id: u8, days: i64) -> Span {
    let start = days_from_now(days);
    Span {
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000,
        ..span(id)
    }
}

fn partitions_are_made_ahead_and_dropped_after_retention(dsn: &str) {
    let exporter = exporter_with(serde_json::json!({
        "retention": {"raw": "720h"},
        "postgres": {"dsn": dsn, "schema": "parts", "maintenance_interval": "1s"},
    }));
    exporter
        .export(
            Signal::Traces,
            &request(
                "p",
                vec![
                    span_at(1, 0),
                    span_at(2, -10),
                    span_at(3, -40),
                    span_at(4, 30),
                ],
            ),
            WAIT,
        )
        .expect("export");
    let day = |offset: i64| {
        one(
            dsn,
            &format!(
                "SELECT to_char((now() + interval '{offset} days') AT TIME ZONE 'UTC', 'YYYYMMDD')"
            ),
        )
    };
    // Today's partitions and the next two days' exist before any data needs them.
    for offset in [0, 1, 2] {
        eventually(
            dsn,
            &format!(
                "SELECT (to_regclass('parts.spans_p{}') IS NOT NULL)::text",
                day(offset)
            ),
            "true",
        );
        eventually(
            dsn,
            &format!(
                "SELECT (to_regclass('parts.logs_p{}') IS NOT NULL)::text",
                day(offset)
            ),
            "true",
        );
    }
    // The span from ten days ago gets a partition of its own; the one from 40 days ago is past
    // the retention; the one 30 days ahead waits in the default partition.
    eventually(dsn, "SELECT string_agg(name || '@' || tableoid::regclass::text, ',' ORDER BY name) FROM parts.spans",
        &format!("op-1@parts.spans_p{},op-2@parts.spans_p{},op-4@parts.spans_default", day(0), day(-10)));
    // An expired partition is dropped whole.
    let old = day(-45);
    execute(dsn, &format!("CREATE TABLE parts.spans_p{old} PARTITION OF parts.spans FOR VALUES FROM ('{old}') TO ('{old}'::date + 1)"));
    eventually(
        dsn,
        &format!("SELECT (to_regclass('parts.spans_p{old}') IS NULL)::text"),
        "true",
    );
    assert_eq!(one(dsn, "SELECT count(*)::text FROM parts.spans"), "3");
    // Hourly rollups are partitioned by week.
    eventually(dsn, "SELECT (count(*) > 0)::text FROM pg_inherits WHERE inhparent = 'parts.span_stats_1h'::regclass", "true");
    exporter.shutdown(Duration::from_secs(5)).expect("shutdown");
}

/// Runs schema/postgres/`files` in `schema` (created if missing), as an older exporter would have.
fn apply_migrations(dsn: &str, schema: &str, files: &[&str]) {
    let root = repo_root();
    for file in files {
        let sql =
            std::fs::read_to_string(root.join("schema/postgres").join(file)).expect("schema file");
        execute(
            dsn,
            &format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}; {}",
                sql.replace("{schema}", schema)
            ),
        );
    }
}

fn an_unpartitioned_spans_table_is_upgraded_in_place(dsn: &str) {
    apply_migrations(dsn, "legacy", &["0001_spans.sql", "0002_request_ids.sql"]);
    execute(dsn, "CREATE TABLE legacy.otelstore_schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
                INSERT INTO legacy.otelstore_schema_migrations (version, name) VALUES (1, 'spans'), (2, 'request_ids')");
    // A span as the version-2 exporter stored it.
    execute(dsn, "INSERT INTO legacy.spans VALUES ('\\x01', '\\x02', NULL, '', 0, 'op', 2, now(), 0, 1, 0, '', 'old',
                  '{}', '', '', '', '{}', '', '{}', '[]', '[]', 0, 0, 0)");

    let exporter = exporter(dsn, "legacy", true);
    exporter
        .export(Signal::Traces, &request("new", vec![span_at(6, 0)]), WAIT)
        .expect("export after the upgrade");
    let today = one(dsn, "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')");
    eventually(dsn, "SELECT string_agg(service_name || '@' || tableoid::regclass::text, ',' ORDER BY service_name) FROM legacy.spans",
        &format!("new@legacy.spans_p{today},old@legacy.spans_p{today}"));
    assert_eq!(
        one(
            dsn,
            "SELECT max(version)::text FROM legacy.otelstore_schema_migrations"
        ),
        "7"
    );
}

/// A version-6 database, with partitions and rows already in it, gets the BRIN index of migration 7
/// on every partition of `spans`: those it had, the ones maintenance creates ahead of the data, and
/// one made for rows moved out of the default partition (created apart, then attached).
fn every_spans_partition_gets_the_brin_index(dsn: &str) {
    apply_migrations(
        dsn,
        "v6",
        &[
            "0001_spans.sql",
            "0002_request_ids.sql",
            "0003_partitioned_spans.sql",
            "0004_logs.sql",
            "0005_metrics.sql",
            "0006_rollups.sql",
        ],
    );
    let day = |offset: i64| {
        one(
            dsn,
            &format!(
                "SELECT to_char((now() + interval '{offset} days') AT TIME ZONE 'UTC', 'YYYYMMDD')"
            ),
        )
    };
    let (old, today) = (day(-10), day(0));
    // What a version-6 exporter left: migrations 1 to 6, a partition of its own, a row waiting in
    // the default partition for one.
    execute(dsn, &format!("CREATE TABLE v6.otelstore_schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
                INSERT INTO v6.otelstore_schema_migrations (version, name)
                    VALUES (1, 'spans'), (2, 'request_ids'), (3, 'partitioned_spans'), (4, 'logs'), (5, 'metrics'), (6, 'rollups');
                CREATE TABLE v6.spans_p{old} PARTITION OF v6.spans FOR VALUES FROM ('{old}') TO ('{old}'::date + 1);
                INSERT INTO v6.spans VALUES ('\\x01', '\\x02', NULL, '', 0, 'op', 2, now() - interval '5 days', 0, 1, 0, '', 'old',
                    '{{}}', '', '', '', '{{}}', '', '{{}}', '[]', '[]', 0, 0, 0)"));

    let exporter = exporter_with(serde_json::json!({
        "retention": {"raw": "720h"},
        "postgres": {"dsn": dsn, "schema": "v6", "maintenance_interval": "1s"},
    }));
    exporter
        .export(Signal::Traces, &request("new", vec![span_at(7, 0)]), WAIT)
        .expect("export after the upgrade");
    eventually(
        dsn,
        "SELECT (to_regclass('v6.spans_default') IS NOT NULL AND NOT EXISTS (SELECT FROM v6.spans_default))::text",
        "true",
    );
    let mut expected: Vec<String> = [-10, -5, -1, 0, 1, 2]
        .iter()
        .map(|offset| format!("spans_p{}:brin", day(*offset)))
        .chain(["spans_default:brin".to_owned()])
        .collect();
    expected.sort();
    // Each partition with the access method of its index on (start_time) alone, if it has one.
    eventually(
        dsn,
        "SELECT string_agg(c.relname || ':' || coalesce(am.amname, 'none'), ',' ORDER BY c.relname)
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         LEFT JOIN pg_index x ON x.indrelid = c.oid
             AND x.indkey::text = (SELECT attnum::text FROM pg_attribute WHERE attrelid = c.oid AND attname = 'start_time')
         LEFT JOIN pg_class ic ON ic.oid = x.indexrelid
         LEFT JOIN pg_am am ON am.oid = ic.relam
         WHERE i.inhparent = 'v6.spans'::regclass",
        &expected.join(","),
    );
    assert_eq!(
        one(dsn, "SELECT string_agg(service_name || '@' || tableoid::regclass::text, ',' ORDER BY service_name) FROM v6.spans"),
        format!("new@v6.spans_p{today},old@v6.spans_p{}", day(-5))
    );
    assert_eq!(
        one(
            dsn,
            "SELECT max(version)::text FROM v6.otelstore_schema_migrations"
        ),
        "7"
    );
    exporter.shutdown(Duration::from_secs(5)).expect("shutdown");
}

fn span_statistics_agree_with_the_spans(dsn: &str) {
    let exporter = exporter(dsn, "stats", true);
    let mut spans: Vec<Span> = (0..60u8)
        .map(|i| {
            let mut s = span(i);
            s.name = format!("op-{}", i % 3);
            s.kind = 2;
            s.end_time_unix_nano = s.start_time_unix_nano + 1_000_000 * (u64::from(i) + 1);
            if i % 7 == 0 {
                s.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
                    code: 2,
                    ..Default::default()
                });
            }
            s
        })
        .collect();
    let second = spans.split_off(25);
    let first = request("stats-svc", spans);
    exporter
        .export(Signal::Traces, &first, WAIT)
        .expect("first");
    exporter
        .export(Signal::Traces, &request("stats-svc", second), WAIT)
        .expect("second");
    assert_eq!(
        exporter
            .export(Signal::Traces, &first, WAIT)
            .expect("retry")
            .rows,
        0
    );
    let from_spans = one(
        dsn,
        "SELECT string_agg(concat_ws(':', name, n, e, s, mn, mx), ',' ORDER BY name) FROM (
             SELECT name, count(*) n, count(*) FILTER (WHERE status_code = 2) e, sum(duration_ns) s, min(duration_ns) mn, max(duration_ns) mx
             FROM stats.spans GROUP BY name) x",
    );
    let from_rollup = one(
        dsn,
        "SELECT string_agg(concat_ws(':', span_name, spans, errors, duration_sum_ns, duration_min_ns, duration_max_ns), ',' ORDER BY span_name)
         FROM stats.span_stats_1h",
    );
    assert_eq!(from_rollup, from_spans);
    // The p50 from the buckets is within 10 % of the exact median (op-0: 1, 4, 7, ... 58 ms).
    let estimate: f64 = one(dsn, "SELECT stats.otelstore_duration_quantile(duration_buckets, 0.5)::text FROM stats.span_stats_1h WHERE span_name = 'op-0'").parse().expect("number");
    let exact: f64 = one(dsn, "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_ns)::text FROM stats.spans WHERE name = 'op-0'").parse().expect("number");
    assert!(
        (estimate / exact - 1.0).abs() < 0.1,
        "p50 estimate {estimate} vs exact {exact}"
    );
}

fn dependencies_are_found_across_requests(dsn: &str) {
    let exporter = exporter_with(
        serde_json::json!({"postgres": {"dsn": dsn, "schema": "deps", "maintenance_interval": "1s"}}),
    );
    let trace = vec![7u8; 16];
    let client = |id: u8| Span {
        trace_id: trace.clone(),
        span_id: vec![id; 8],
        kind: 3,
        ..span_at(id, 0)
    };
    let server = |id: u8, parent: u8| Span {
        trace_id: trace.clone(),
        span_id: vec![id; 8],
        parent_span_id: vec![parent; 8],
        kind: 2,
        ..span_at(id, 0)
    };
    // front -> back in one request; front -> db with the server span first, in another request.
    exporter
        .export(
            Signal::Traces,
            &request("front", vec![client(1), client(2)]),
            WAIT,
        )
        .expect("front");
    exporter
        .export(Signal::Traces, &request("back", vec![server(3, 1)]), WAIT)
        .expect("back");
    let mut failing = server(4, 2);
    failing.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
        code: 2,
        ..Default::default()
    });
    exporter
        .export(Signal::Traces, &request("db", vec![failing]), WAIT)
        .expect("db");
    // A server span whose parent never arrives, and a call within one service, count nothing.
    exporter
        .export(
            Signal::Traces,
            &request("back", vec![server(5, 99), client(6)]),
            WAIT,
        )
        .expect("orphan");
    exporter
        .export(Signal::Traces, &request("same", vec![client(7)]), WAIT)
        .expect("same-service caller");
    exporter
        .export(Signal::Traces, &request("same", vec![server(8, 7)]), WAIT)
        .expect("same-service callee");
    eventually(dsn, "SELECT coalesce(string_agg(concat_ws(':', parent_service, child_service, calls, errors), ',' ORDER BY child_service), '') FROM deps.service_dependencies_1h",
        "front:back:1:0,front:db:1:1");
    eventually(
        dsn,
        "SELECT count(*)::text FROM deps.otelstore_pending_dependencies",
        "1",
    );
    exporter.shutdown(Duration::from_secs(5)).expect("shutdown");
}

fn logs_and_metrics_roll_up(dsn: &str) {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        metric::Data, number_data_point, Gauge, Histogram, HistogramDataPoint, Metric,
        NumberDataPoint, ResourceMetrics, ScopeMetrics,
    };

    let exporter = exporter(dsn, "rolled", true);
    let resource = Some(Resource {
        attributes: vec![kv("service.name", Value::StringValue("r".into()))],
        ..Default::default()
    });
    let now = days_from_now(0);
    let records = (0..30u64)
        .map(|i| LogRecord {
            time_unix_nano: now + i,
            severity_number: (i % 24 + 1) as i32,
            ..Default::default()
        })
        .collect();
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource.clone(),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    assert_eq!(
        exporter
            .export(Signal::Logs, &logs.encode_to_vec(), WAIT)
            .expect("logs")
            .rows,
        30
    );
    assert_eq!(
        one(dsn, "SELECT error_logs::text FROM rolled.error_logs_1h"),
        one(
            dsn,
            "SELECT count(*)::text FROM rolled.logs WHERE severity_number >= 17"
        )
    );

    let gauge_point = |i: u64, value: f64| NumberDataPoint {
        time_unix_nano: now + i * 1_000_000_000,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    };
    let histogram_point = |i: u64, counts: Vec<u64>| HistogramDataPoint {
        time_unix_nano: now + i * 1_000_000_000,
        count: counts.iter().sum(),
        sum: Some(counts.iter().sum::<u64>() as f64),
        bucket_counts: counts,
        explicit_bounds: vec![10.0],
        ..Default::default()
    };
    let metrics = |points: Vec<NumberDataPoint>, histogram: Vec<HistogramDataPoint>| {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource.clone(),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        Metric {
                            name: "g".into(),
                            data: Some(Data::Gauge(Gauge {
                                data_points: points,
                            })),
                            ..Default::default()
                        },
                        Metric {
                            name: "h".into(),
                            data: Some(Data::Histogram(Histogram {
                                data_points: histogram,
                                aggregation_temporality: 1,
                            })),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    };
    exporter
        .export(
            Signal::Metrics,
            &metrics(
                vec![gauge_point(0, 3.0), gauge_point(1, -2.0)],
                vec![histogram_point(0, vec![1, 2])],
            ),
            WAIT,
        )
        .expect("metrics");
    exporter
        .export(
            Signal::Metrics,
            &metrics(
                vec![gauge_point(2, 10.0)],
                vec![histogram_point(1, vec![0, 5])],
            ),
            WAIT,
        )
        .expect("more metrics");
    for table in ["metrics_rollup_5m", "metrics_rollup_1h"] {
        let gauge = one(dsn, &format!("SELECT sum(points)::text || ':' || sum(sum) || ':' || min(min) || ':' || max(max) FROM rolled.{table} WHERE metric_name = 'g'"));
        assert_eq!(gauge, one(dsn, "SELECT count(*)::text || ':' || sum(value_double) || ':' || min(value_double) || ':' || max(value_double) FROM rolled.metrics_gauge"), "{table}");
        // Two delta histogram points in the same 5-minute bucket unless a boundary falls between them.
        let histogram = one(dsn, &format!("SELECT sum(count)::text || ':' || sum(sum) FROM rolled.{table} WHERE metric_name = 'h'"));
        assert_eq!(
            histogram,
            one(
                dsn,
                "SELECT sum(count)::text || ':' || sum(sum) FROM rolled.metrics_histogram"
            ),
            "{table}"
        );
    }
    let buckets = one(dsn, "SELECT bucket_counts::text FROM rolled.metrics_rollup_1h WHERE metric_name = 'h' ORDER BY bucket_start LIMIT 1");
    assert!(buckets == "{1,7}" || buckets == "{1,2}", "{buckets}");
}
