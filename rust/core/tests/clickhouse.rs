//! The ClickHouse sink against ClickHouse itself, over the chdb front (see common/mod.rs): spans,
//! the views fed from otel_traces, compression, and how errors are classified.

mod common;

use bytes::Bytes;
use common::{any, base_time, kv, resource_spans, rows, text, Front};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, ArrayValue, KeyValueList};
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use otelstore::config::{ClickHouseConfig, Compression, Retention};
use otelstore::signal::Signal;
use otelstore::sink::clickhouse::{ClickHouseSink, Table};
use otelstore::sink::{Rows, Sink};
use otelstore::ErrorKind;
use prost::Message;
use serde_json::json;

fn request(t0: u64) -> ExportTraceServiceRequest {
    let trace = vec![0x0a; 16];
    // svc-a's client span calls svc-b's server span (another resource): a dependency with an error.
    let client = Span {
        trace_id: trace.clone(),
        span_id: vec![0xaa; 8],
        parent_span_id: vec![0x11; 8],
        trace_state: "vendor=x".into(),
        name: "GET items".into(),
        kind: 3,
        start_time_unix_nano: t0,
        end_time_unix_nano: t0 + 3_000_000,
        attributes: vec![
            text("http.method", "GET"),
            kv("n", Value::IntValue(-3)),
            kv("ok", Value::BoolValue(true)),
            kv("ratio", Value::DoubleValue(0.25)),
            kv("tiny", Value::DoubleValue(1e-7)),
            kv("raw", Value::BytesValue(vec![1, 2, 3])),
            kv(
                "list",
                Value::ArrayValue(ArrayValue {
                    values: vec![
                        any(Value::IntValue(1)),
                        any(Value::StringValue("<a>".into())),
                    ],
                }),
            ),
            kv(
                "map",
                Value::KvlistValue(KeyValueList {
                    values: vec![text("z", "1"), kv("a", Value::DoubleValue(2.0))],
                }),
            ),
        ],
        events: vec![
            Event {
                time_unix_nano: t0 + 1,
                name: "sent".into(),
                attributes: vec![text("size", "10")],
                dropped_attributes_count: 0,
            },
            Event {
                time_unix_nano: t0 + 2,
                name: "acked".into(),
                attributes: vec![],
                dropped_attributes_count: 0,
            },
        ],
        links: vec![Link {
            trace_id: vec![0x0b; 16],
            span_id: vec![0xbb; 8],
            trace_state: "k=v".into(),
            attributes: vec![kv("link.n", Value::IntValue(7))],
            ..Default::default()
        }],
        status: Some(Status {
            message: String::new(),
            code: 1,
        }),
        ..Default::default()
    };
    let server = Span {
        trace_id: trace.clone(),
        span_id: vec![0xcc; 8],
        parent_span_id: vec![0xaa; 8],
        name: "GET /items".into(),
        kind: 2,
        start_time_unix_nano: t0 + 1_000_000,
        end_time_unix_nano: t0 + 2_000_000,
        status: Some(Status {
            message: "boom".into(),
            code: 2,
        }),
        ..Default::default()
    };
    // Unspecified kind, no parent (all zeros), ends before it starts: Duration 0.
    let backwards = Span {
        trace_id: trace.clone(),
        span_id: vec![0xdd; 8],
        parent_span_id: vec![0; 8],
        name: "odd".into(),
        kind: 0,
        start_time_unix_nano: t0 + 10,
        end_time_unix_nano: t0 + 5,
        ..Default::default()
    };
    // Past 2262: rejected, the others still written.
    let late = Span {
        trace_id: trace,
        span_id: vec![0xee; 8],
        name: "late".into(),
        start_time_unix_nano: t0,
        end_time_unix_nano: u64::MAX,
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            resource_spans(
                vec![
                    text("service.name", "svc-a"),
                    text("host.name", "h1"),
                    text("service.name", "second"),
                ],
                vec![client, backwards, late],
            ),
            resource_spans(
                vec![
                    kv("service.name", Value::StringValue("svc-b".into())),
                    kv("pod.n", Value::IntValue(2)),
                ],
                vec![server],
            ),
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_round_trip_through_clickhouse() {
    let Some(front) = Front::start() else {
        return;
    };
    let sink = front.sink();
    assert_eq!(
        sink.migrate().await.expect("first migration pass"),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(
        sink.migrate().await.expect("second migration pass"),
        Vec::<u32>::new()
    );

    let t0 = base_time();
    let encoded = ClickHouseSink::encode(Signal::Traces, &request(t0).encode_to_vec())
        .expect("valid request");
    assert_eq!((encoded.rows.rows(), encoded.rejected), (3, 1));
    let block = encoded.rows.block(Table::Traces).expect("a block");
    assert!(
        encoded
            .first_rejection
            .as_deref()
            .is_some_and(|r| r.starts_with("span eeeeeeeeeeeeeeee")),
        "{:?}",
        encoded.first_rejection
    );
    sink.insert(Table::Traces, &[block], "first")
        .await
        .expect("insert");

    let got = rows(
        &sink,
        "SELECT toUnixTimestamp64Nano(Timestamp) AS ts, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, \
         ServiceName, ResourceAttributes, CAST(ResourceAttributes, 'Array(Tuple(String, String))') AS ResourcePairs, \
         ResourceAttributes['service.name'] AS ResourceService, \
         ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, StatusMessage, \
         arrayMap(t -> toUnixTimestamp64Nano(t), Events.Timestamp) AS EventTimes, Events.Name, Events.Attributes, \
         Links.TraceId, Links.SpanId, Links.TraceState, Links.Attributes \
         FROM otel_test.otel_traces ORDER BY SpanId",
    )
    .await;
    assert_eq!(got.len(), 3, "{got:#?}");
    let trace = "0a".repeat(16);
    // Sorted by key, as contrib's client sorts maps; the two service.name pairs as sent.
    let a_pairs = json!([
        ["host.name", "h1"],
        ["service.name", "svc-a"],
        ["service.name", "second"]
    ]);
    assert_eq!(
        got[0],
        json!({
            "ts": t0, "TraceId": trace, "SpanId": "aaaaaaaaaaaaaaaa", "ParentSpanId": "1111111111111111",
            "TraceState": "vendor=x", "SpanName": "GET items", "SpanKind": "Client", "ServiceName": "svc-a",
            // The map keeps both service.name pairs (JSON readers, serde_json here, keep the last);
            // m['service.name'] and ServiceName give the first, as contrib's Map.Get does.
            "ResourceAttributes": {"service.name": "second", "host.name": "h1"}, "ResourcePairs": a_pairs,
            "ResourceService": "svc-a",
            "ScopeName": "io.test", "ScopeVersion": "1.0.0",
            "SpanAttributes": {
                "http.method": "GET", "n": "-3", "ok": "true", "ratio": "0.25", "tiny": "1e-7", "raw": "AQID",
                "list": "[1,\"<a>\"]", "map": "{\"a\":2,\"z\":\"1\"}"
            },
            "Duration": 3_000_000, "StatusCode": "Ok", "StatusMessage": "",
            "EventTimes": [t0 + 1, t0 + 2], "Events.Name": ["sent", "acked"], "Events.Attributes": [{"size": "10"}, {}],
            "Links.TraceId": ["0b".repeat(16)], "Links.SpanId": ["bbbbbbbbbbbbbbbb"], "Links.TraceState": ["k=v"],
            "Links.Attributes": [{"link.n": "7"}]
        })
    );
    assert_eq!(
        got[1],
        json!({
            "ts": t0 + 1_000_000, "TraceId": trace, "SpanId": "cccccccccccccccc", "ParentSpanId": "aaaaaaaaaaaaaaaa",
            "TraceState": "", "SpanName": "GET /items", "SpanKind": "Server", "ServiceName": "svc-b",
            "ResourceAttributes": {"service.name": "svc-b", "pod.n": "2"}, "ResourcePairs": [["pod.n", "2"], ["service.name", "svc-b"]],
            "ResourceService": "svc-b",
            "ScopeName": "io.test", "ScopeVersion": "1.0.0", "SpanAttributes": {},
            "Duration": 1_000_000, "StatusCode": "Error", "StatusMessage": "boom",
            "EventTimes": [], "Events.Name": [], "Events.Attributes": [],
            "Links.TraceId": [], "Links.SpanId": [], "Links.TraceState": [], "Links.Attributes": []
        })
    );
    assert_eq!(
        (
            &got[2]["SpanId"],
            &got[2]["ParentSpanId"],
            &got[2]["SpanKind"],
            &got[2]["Duration"],
            &got[2]["StatusCode"],
            &got[2]["ts"]
        ),
        (
            &json!("dddddddddddddddd"),
            &json!(""),
            &json!("Unspecified"),
            &json!(0),
            &json!("Unset"),
            &json!(t0 + 10)
        )
    );

    // The schema's materialized views saw the block.
    let ids = rows(&sink, "SELECT TraceId, toUnixTimestamp(min(Start)) AS s, toUnixTimestamp(max(End)) AS e FROM otel_test.otel_traces_trace_id_ts GROUP BY TraceId").await;
    let second = (t0 / 1_000_000_000) as i64;
    assert_eq!(
        ids,
        vec![json!({"TraceId": trace, "s": second, "e": second})]
    );
    let stats = rows(
        &sink,
        "SELECT ServiceName, SpanName, SpanKind, countMerge(Spans) AS n, sumMerge(Errors) AS errors, maxMerge(DurationMax) AS max \
         FROM otel_test.otel_span_stats_1h GROUP BY ServiceName, SpanName, SpanKind ORDER BY ServiceName, SpanName",
    )
    .await;
    assert_eq!(
        stats,
        vec![
            json!({"ServiceName": "svc-a", "SpanName": "GET items", "SpanKind": "Client", "n": 1, "errors": 0, "max": 3_000_000}),
            json!({"ServiceName": "svc-a", "SpanName": "odd", "SpanKind": "Unspecified", "n": 1, "errors": 0, "max": 0}),
            json!({"ServiceName": "svc-b", "SpanName": "GET /items", "SpanKind": "Server", "n": 1, "errors": 1, "max": 1_000_000}),
        ]
    );
    let deps = rows(
        &sink,
        "SELECT ParentService, ChildService, uniqCombined64Merge(Calls) AS calls, uniqCombined64Merge(Errors) AS errors \
         FROM otel_test.otel_service_dependencies_1h GROUP BY ParentService, ChildService",
    )
    .await;
    assert_eq!(
        deps,
        vec![json!({"ParentService": "svc-a", "ChildService": "svc-b", "calls": 1, "errors": 1})]
    );

    // Two requests' blocks in one INSERT.
    let more = ClickHouseSink::encode(
        Signal::Traces,
        &request(t0 + 60_000_000_000).encode_to_vec(),
    )
    .expect("valid request");
    let more = more.rows.block(Table::Traces).expect("a block");
    sink.insert(Table::Traces, &[block, more], "second")
        .await
        .expect("insert two blocks");
    assert_eq!(
        rows(&sink, "SELECT count() AS n FROM otel_test.otel_traces").await,
        vec![json!({"n": 9})]
    );

    // The same INSERT again, as after a lost answer: the server recognizes its token and skips
    // it, in the table and in the views.
    sink.insert(Table::Traces, &[block, more], "second")
        .await
        .expect("insert retried");
    assert_eq!(
        rows(&sink, "SELECT count() AS n FROM otel_test.otel_traces").await,
        vec![json!({"n": 9})]
    );
    assert_eq!(
        rows(
            &sink,
            "SELECT countMerge(Spans) AS n FROM otel_test.otel_span_stats_1h"
        )
        .await,
        vec![json!({"n": 9})]
    );

    // Without LZ4, the same bytes go as they are.
    let plain = ClickHouseSink::new(
        &ClickHouseConfig {
            compression: Compression::None,
            ..front.config()
        },
        &Retention::default(),
    )
    .expect("settings");
    plain
        .insert(Table::Traces, &[more], "third")
        .await
        .expect("insert uncompressed");
    assert_eq!(
        rows(&sink, "SELECT count() AS n FROM otel_test.otel_traces").await,
        vec![json!({"n": 12})]
    );

    // Bytes that are not a Native block: ClickHouse refuses them as bad data, which is permanent.
    let error = sink
        .insert(
            Table::Traces,
            &[&Bytes::from_static(b"\x16\x01\x05bogus\x06String")],
            "bogus",
        )
        .await
        .expect_err("garbage");
    eprintln!("refused as expected: {error}");
    assert_eq!(error.kind(), ErrorKind::Permanent, "{error}");
    assert!(
        error.to_string().starts_with("ClickHouse: insert spans: "),
        "{error}"
    );

    // Nobody listening: retryable.
    drop(front);
    let error = sink
        .insert(Table::Traces, &[block], "gone")
        .await
        .expect_err("server gone");
    assert_eq!(error.kind(), ErrorKind::Retryable, "{error}");
}

/// A CA and a certificate it signs for 127.0.0.1, made with the openssl command in `dir`:
/// (ca.pem, server.pem, server.key).
fn certificates(dir: &std::path::Path) -> (String, String, String) {
    let path = |name: &str| dir.join(name).display().to_string();
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write san.ext");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=otelstore test CA",
        "-keyout",
        &path("ca.key"),
        "-out",
        &path("ca.pem"),
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &path("server.key"),
        "-out",
        &path("server.csr"),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &path("server.csr"),
        "-CA",
        &path("ca.pem"),
        "-CAkey",
        &path("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &path("san.ext"),
        "-out",
        &path("server.pem"),
    ]);
    (path("ca.pem"), path("server.pem"), path("server.key"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_ca_file_and_a_password() {
    let dir = std::env::temp_dir().join(format!("otelstore-ch-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("certificate dir");
    let (ca, certificate, key) = certificates(&dir);
    let Some(front) = Front::start_with(&[
        "--password",
        "s3cret",
        "--tls-cert",
        &certificate,
        "--tls-key",
        &key,
    ]) else {
        return;
    };
    let config = ClickHouseConfig {
        ca_file: ca,
        password: "s3cret".into(),
        ..front.config()
    };
    assert!(
        config.endpoint.starts_with("https://"),
        "{}",
        config.endpoint
    );

    // The CA file makes the server's certificate trusted; the password is accepted.
    let sink = ClickHouseSink::new(&config, &Retention::default()).expect("settings");
    assert_eq!(sink.migrate().await.expect("migrate over https").len(), 5);
    let encoded = ClickHouseSink::encode(Signal::Traces, &request(base_time()).encode_to_vec())
        .expect("valid");
    let block = encoded.rows.block(Table::Traces).expect("a block");
    sink.insert(Table::Traces, &[block], "tls")
        .await
        .expect("insert over https");
    assert_eq!(
        rows(&sink, "SELECT count() AS n FROM otel_test.otel_traces").await,
        vec![json!({"n": 3})]
    );

    // A wrong password: refused, retryable (the data waits for a fixed config), never echoed.
    let wrong = ClickHouseSink::new(
        &ClickHouseConfig {
            password: "hunter2".into(),
            ..config.clone()
        },
        &Retention::default(),
    )
    .expect("settings");
    let error = wrong
        .insert(Table::Traces, &[block], "wrong")
        .await
        .expect_err("wrong password");
    assert_eq!(error.kind(), ErrorKind::Retryable, "{error}");
    assert!(
        error.to_string().contains("Authentication failed"),
        "{error}"
    );
    assert!(!error.to_string().contains("hunter2"), "{error}");

    // Without the CA file the system's roots do not know the test CA: refused, retryable.
    let untrusted = ClickHouseSink::new(
        &ClickHouseConfig {
            ca_file: String::new(),
            ..config
        },
        &Retention::default(),
    )
    .expect("settings");
    let error = untrusted
        .insert(Table::Traces, &[block], "untrusted")
        .await
        .expect_err("unknown CA");
    assert_eq!(error.kind(), ErrorKind::Retryable, "{error}");
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
