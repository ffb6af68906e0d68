//! Log records through the ClickHouse sink into otel_logs of ClickHouse itself, over the chdb
//! front (see common/mod.rs): every column read back, and the error-log rollup.

mod common;

use common::{any, base_time, kv, rows, text, Front};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, ArrayValue, InstrumentationScope, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use otelstore::signal::Signal;
use otelstore::sink::clickhouse::{ClickHouseSink, Table};
use otelstore::sink::{Rows, Sink};
use prost::Message;
use serde_json::json;

fn request(t0: u64) -> ExportLogsServiceRequest {
    let error = LogRecord {
        time_unix_nano: t0,
        observed_time_unix_nano: t0 + 5_000,
        severity_number: 17,
        severity_text: "ERROR".into(),
        body: Some(any(Value::StringValue(
            "payment failed: <card declined>".into(),
        ))),
        attributes: vec![
            text("http.method", "POST"),
            kv("retries", Value::IntValue(-3)),
            kv("ok", Value::BoolValue(false)),
            kv("ratio", Value::DoubleValue(0.25)),
            kv("raw", Value::BytesValue(vec![1, 2, 3])),
            kv(
                "list",
                Value::ArrayValue(ArrayValue {
                    values: vec![any(Value::IntValue(1)), any(Value::StringValue("a".into()))],
                }),
            ),
            text("retries", "again"),
        ],
        flags: 0x101,
        trace_id: vec![0x0a; 16],
        span_id: vec![0xaa; 8],
        event_name: "payment.failed".into(),
        ..Default::default()
    };
    // No time of its own: filed under when the collector saw it. A map body becomes JSON, an
    // all-zero trace id and no span id become "".
    let observed = LogRecord {
        observed_time_unix_nano: t0 + 1_000,
        severity_number: 9,
        severity_text: "INFO".into(),
        body: Some(any(Value::KvlistValue(KeyValueList {
            values: vec![text("z", "1"), kv("a", Value::DoubleValue(1e21))],
        }))),
        trace_id: vec![0; 16],
        ..Default::default()
    };
    // No body, no text: only a severity number (FATAL).
    let fatal = LogRecord {
        time_unix_nano: t0 + 2,
        severity_number: 21,
        ..Default::default()
    };
    // Past 2262, and a severity number UInt8 cannot hold: both rejected, the others written.
    let late = LogRecord {
        time_unix_nano: u64::MAX,
        severity_number: 17,
        ..Default::default()
    };
    let negative = LogRecord {
        time_unix_nano: t0 + 4,
        severity_number: -1,
        ..Default::default()
    };
    let other_service = LogRecord {
        time_unix_nano: t0 + 3,
        severity_number: 18,
        severity_text: "ERROR2".into(),
        body: Some(any(Value::IntValue(42))),
        ..Default::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![
            ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        text("service.name", "svc-a"),
                        text("k8s.namespace.name", "shop"),
                        text("service.name", "second"),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "io.test".into(),
                        version: "1.0.0".into(),
                        attributes: vec![kv("scope.n", Value::IntValue(7))],
                        ..Default::default()
                    }),
                    log_records: vec![error, observed, fatal, late, negative],
                    schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.27.0".into(),
            },
            // service.name of another type is its AsString; a scope group without a scope.
            ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", Value::IntValue(7))],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: None,
                    log_records: vec![other_service],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            },
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_round_trip_through_clickhouse() {
    let Some(front) = Front::start() else {
        return;
    };
    let sink = front.sink();
    assert_eq!(
        sink.migrate().await.expect("migrations"),
        vec![1, 2, 3, 4, 5]
    );

    let t0 = base_time();
    let encoded =
        ClickHouseSink::encode(Signal::Logs, &request(t0).encode_to_vec()).expect("valid request");
    assert_eq!((encoded.rows.rows(), encoded.rejected), (4, 2));
    assert_eq!(
        encoded.first_rejection.as_deref(),
        Some(
            r#"log record 3 of the request (service "svc-a"): time_unix_nano 18446744073709551615 is after 2262-04-11, the last instant DateTime64(9) holds"#
        )
    );
    let block = encoded.rows.block(Table::Logs).expect("a block");
    sink.insert(Table::Logs, &[block], "logs")
        .await
        .expect("insert");

    let got = rows(
        &sink,
        "SELECT toUnixTimestamp64Nano(Timestamp) AS ts, toUnixTimestamp(TimestampTime) AS tt, TraceId, SpanId, \
         TraceFlags, SeverityText, SeverityNumber, ServiceName, Body, ResourceSchemaUrl, \
         CAST(ResourceAttributes, 'Array(Tuple(String, String))') AS ResourcePairs, \
         ResourceAttributes['service.name'] AS ResourceService, ScopeSchemaUrl, ScopeName, ScopeVersion, \
         ScopeAttributes, CAST(LogAttributes, 'Array(Tuple(String, String))') AS LogPairs, \
         LogAttributes['retries'] AS Retries, EventName, \
         `__otel_materialized_k8s.namespace.name` AS Namespace \
         FROM otel_test.otel_logs ORDER BY Timestamp",
    )
    .await;
    let second = t0 / 1_000_000_000;
    // Maps sorted by key, as contrib's client sorts them; pairs of one key as sent.
    let a_resource = json!([
        ["k8s.namespace.name", "shop"],
        ["service.name", "svc-a"],
        ["service.name", "second"]
    ]);
    let (resource_url, scope_url) = (
        "https://opentelemetry.io/schemas/1.27.0",
        "https://opentelemetry.io/schemas/1.26.0",
    );
    assert_eq!(
        got,
        vec![
            json!({
                "ts": t0, "tt": second, "TraceId": "0a".repeat(16), "SpanId": "aa".repeat(8),
                "TraceFlags": 1, "SeverityText": "ERROR", "SeverityNumber": 17, "ServiceName": "svc-a",
                "Body": "payment failed: <card declined>", "ResourceSchemaUrl": resource_url,
                // Both service.name pairs are kept; m['service.name'] and ServiceName give the first.
                "ResourcePairs": a_resource, "ResourceService": "svc-a",
                "ScopeSchemaUrl": scope_url, "ScopeName": "io.test", "ScopeVersion": "1.0.0",
                "ScopeAttributes": {"scope.n": "7"},
                "LogPairs": [
                    ["http.method", "POST"], ["list", "[1,\"a\"]"], ["ok", "false"], ["ratio", "0.25"],
                    ["raw", "AQID"], ["retries", "-3"], ["retries", "again"]
                ],
                "Retries": "-3", "EventName": "payment.failed", "Namespace": "shop"
            }),
            json!({
                "ts": t0 + 2, "tt": second, "TraceId": "", "SpanId": "",
                "TraceFlags": 0, "SeverityText": "", "SeverityNumber": 21, "ServiceName": "svc-a",
                "Body": "", "ResourceSchemaUrl": resource_url,
                "ResourcePairs": a_resource, "ResourceService": "svc-a",
                "ScopeSchemaUrl": scope_url, "ScopeName": "io.test", "ScopeVersion": "1.0.0",
                "ScopeAttributes": {"scope.n": "7"}, "LogPairs": [],
                "Retries": "", "EventName": "", "Namespace": "shop"
            }),
            json!({
                "ts": t0 + 3, "tt": second, "TraceId": "", "SpanId": "",
                "TraceFlags": 0, "SeverityText": "ERROR2", "SeverityNumber": 18, "ServiceName": "7",
                "Body": "42", "ResourceSchemaUrl": "",
                "ResourcePairs": [["service.name", "7"]], "ResourceService": "7",
                "ScopeSchemaUrl": "", "ScopeName": "", "ScopeVersion": "",
                "ScopeAttributes": {}, "LogPairs": [],
                "Retries": "", "EventName": "", "Namespace": ""
            }),
            json!({
                "ts": t0 + 1_000, "tt": second, "TraceId": "", "SpanId": "",
                "TraceFlags": 0, "SeverityText": "INFO", "SeverityNumber": 9, "ServiceName": "svc-a",
                "Body": "{\"a\":1e+21,\"z\":\"1\"}", "ResourceSchemaUrl": resource_url,
                "ResourcePairs": a_resource, "ResourceService": "svc-a",
                "ScopeSchemaUrl": scope_url, "ScopeName": "io.test", "ScopeVersion": "1.0.0",
                "ScopeAttributes": {"scope.n": "7"}, "LogPairs": [],
                "Retries": "", "EventName": "", "Namespace": "shop"
            }),
        ]
    );

    // The hourly error rollup counts the records of severity 17 (ERROR) and above per service.
    let hour = second / 3600 * 3600;
    let errors = rows(
        &sink,
        "SELECT toUnixTimestamp(Hour) AS hour, ServiceName, countMerge(Records) AS records \
         FROM otel_test.otel_error_logs_1h GROUP BY Hour, ServiceName ORDER BY ServiceName",
    )
    .await;
    assert_eq!(
        errors,
        vec![
            json!({"hour": hour, "ServiceName": "7", "records": 1}),
            json!({"hour": hour, "ServiceName": "svc-a", "records": 2}),
        ]
    );
}
