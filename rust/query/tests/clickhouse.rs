//! The ClickHouse store against ClickHouse 26.9 (chdb, behind tests/clickhouse/chdb_front.py),
//! with spans written by the real exporter (the core's `Exporter`, which also creates the schema):
//! what a user of the Jaeger APIs would check.

#[path = "../../test-support/chdb_front.rs"]
mod chdb_front;
#[path = "../../test-support/otlp.rs"]
mod otlp;
#[path = "support/stats.rs"]
mod stats;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chdb_front::Front;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, ArrayValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::trace::v1::{span, Span as OtlpSpan, Status};
use otelstore::signal::Signal;
use otelstore::{Config, Exporter};
use otelstore_query::config::ClickHouseSettings;
use otelstore_query::model::{
    Attribute, DependencyLink, Event, Link, Operation, Span, SpanId, SpanKind, StatusCode, TraceId,
    Value,
};
use otelstore_query::store::clickhouse::ClickHouseStore;
use otelstore_query::store::{Store, StoreError, TagFilter, TraceQuery};
use otlp::{any, kv, resource_spans, text};
use prost::Message;

/// The store's query timeout (max_execution_time), as the API's request_timeout would set it.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
const MS: u64 = 1_000_000;
const MINUTE: u64 = 60_000 * MS;
const HOUR: u64 = 60 * MINUTE;

fn int(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

/// A span of trace `[trace; 16]` with id `[id; 8]` and parent `[parent; 8]` (0: none).
#[allow(clippy::too_many_arguments)]
fn span(
    trace: u8,
    id: u8,
    parent: u8,
    name: &str,
    kind: i32,
    start: u64,
    duration: u64,
    status: i32,
    attributes: Vec<KeyValue>,
) -> OtlpSpan {
    OtlpSpan {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: if parent == 0 { vec![] } else { vec![parent; 8] },
        name: name.into(),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start + duration,
        attributes,
        status: Some(Status {
            message: String::new(),
            code: status,
        }),
        ..Default::default()
    }
}

fn svc_a() -> Vec<KeyValue> {
    // service.name twice: both pairs are stored, ServiceName is the first.
    vec![
        text("service.name", "svc-a"),
        text("host.name", "h1"),
        text("service.name", "second"),
    ]
}

const A: u8 = 0x0a;
const B: u8 = 0x0b;
const C: u8 = 0x0c;
const D: u8 = 0x0d;
const E: u8 = 0x0e;

/// Trace A at t0: svc-a's client span calls svc-b's server span (a dependency), with every kind
/// of attribute value, events and a link.
fn trace_a(t0: u64) -> ExportTraceServiceRequest {
    let mut client = span(
        A,
        0xaa,
        0x11,
        "GET items",
        3,
        t0,
        3 * MS,
        1,
        vec![
            text("http.method", "GET"),
            int("n", -3),
            kv("ok", any_value::Value::BoolValue(true)),
            kv("ratio", any_value::Value::DoubleValue(0.25)),
            kv("tiny", any_value::Value::DoubleValue(1e-7)),
            kv("raw", any_value::Value::BytesValue(vec![1, 2, 3])),
            kv(
                "list",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![
                        any(any_value::Value::IntValue(1)),
                        any(any_value::Value::StringValue("<a>".into())),
                    ],
                }),
            ),
            kv(
                "map",
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![text("z", "1"), kv("a", any_value::Value::DoubleValue(2.0))],
                }),
            ),
        ],
    );
    client.trace_state = "vendor=x".into();
    client.events = vec![
        span::Event {
            time_unix_nano: t0 + 1,
            name: "sent".into(),
            attributes: vec![text("size", "10")],
            dropped_attributes_count: 0,
        },
        span::Event {
            time_unix_nano: t0 + 2,
            name: "acked".into(),
            attributes: vec![],
            dropped_attributes_count: 0,
        },
    ];
    client.links = vec![span::Link {
        trace_id: vec![0x0b; 16],
        span_id: vec![0xbb; 8],
        trace_state: "k=v".into(),
        attributes: vec![int("link.n", 7)],
        ..Default::default()
    }];
    let mut server = span(A, 0xcc, 0xaa, "GET /items", 2, t0 + MS, MS, 2, vec![]);
    server.status = Some(Status {
        message: "boom".into(),
        code: 2,
    });
    ExportTraceServiceRequest {
        resource_spans: vec![
            resource_spans(svc_a(), vec![client]),
            resource_spans(
                vec![text("service.name", "svc-b"), int("pod.n", 2)],
                vec![server],
            ),
        ],
    }
}

/// Traces B, C, D (svc-a) and E (svc-c), for the searches.
fn others(t0: u64) -> ExportTraceServiceRequest {
    let b = span(
        B,
        0xb1,
        0,
        "POST items",
        2,
        t0 + 10 * MINUTE,
        50 * MS,
        2,
        vec![int("http.status_code", 500)],
    );
    let c = span(
        C,
        0xc1,
        0,
        "GET items",
        2,
        t0 + 20 * MINUTE,
        5 * MS,
        0,
        vec![int("http.status_code", 200)],
    );
    let c_db = span(
        C,
        0xc2,
        0xc1,
        "db",
        1,
        t0 + 20 * MINUTE + MS,
        2 * MS,
        0,
        vec![],
    );
    // A day before the others.
    let d = span(
        D,
        0xd1,
        0,
        "GET items",
        2,
        t0 - 24 * HOUR,
        7 * MS,
        0,
        vec![],
    );
    let e = span(
        E,
        0xe1,
        0,
        "publish",
        4,
        t0 + 30 * MINUTE,
        MS,
        0,
        vec![text("note", "")],
    );
    let e_tick = span(E, 0xe2, 0xe1, "tick", 0, t0 + 30 * MINUTE, MS, 0, vec![]);
    ExportTraceServiceRequest {
        resource_spans: vec![
            resource_spans(svc_a(), vec![b, c, c_db, d]),
            resource_spans(vec![text("service.name", "svc-c")], vec![e, e_tick]),
        ],
    }
}

fn id(byte: u8) -> TraceId {
    TraceId([byte; 16])
}

fn sid(byte: u8) -> SpanId {
    SpanId([byte; 8])
}

fn str_attributes(pairs: &[(&str, &str)]) -> Vec<Attribute> {
    pairs
        .iter()
        .map(|(key, value)| Attribute {
            key: (*key).into(),
            value: Value::Str((*value).into()),
        })
        .collect()
}

/// The two spans of trace A as they should read back: attribute maps sorted by key (the
/// exporter sorts them, keeping repeated keys in the order sent), every value pdata's AsString.
fn expected_a(t0: u64) -> Vec<Span> {
    let t0 = t0 as i64;
    let client = Span {
        trace_id: id(A),
        span_id: sid(0xaa),
        parent_span_id: Some(sid(0x11)),
        trace_state: "vendor=x".into(),
        flags: 0,
        name: "GET items".into(),
        kind: SpanKind::Client,
        start_unix_nano: t0,
        duration_ns: 3_000_000,
        status_code: StatusCode::Ok,
        status_message: String::new(),
        service_name: "svc-a".into(),
        resource_attributes: str_attributes(&[
            ("host.name", "h1"),
            ("service.name", "svc-a"),
            ("service.name", "second"),
        ]),
        scope_name: "io.test".into(),
        scope_version: "1.0.0".into(),
        attributes: str_attributes(&[
            ("http.method", "GET"),
            ("list", "[1,\"<a>\"]"),
            ("map", "{\"a\":2,\"z\":\"1\"}"),
            ("n", "-3"),
            ("ok", "true"),
            ("ratio", "0.25"),
            ("raw", "AQID"),
            ("tiny", "1e-7"),
        ]),
        events: vec![
            Event {
                time_unix_nano: t0 + 1,
                name: "sent".into(),
                attributes: str_attributes(&[("size", "10")]),
            },
            Event {
                time_unix_nano: t0 + 2,
                name: "acked".into(),
                attributes: vec![],
            },
        ],
        links: vec![Link {
            trace_id: id(0x0b),
            span_id: sid(0xbb),
            trace_state: "k=v".into(),
            attributes: str_attributes(&[("link.n", "7")]),
        }],
    };
    let server = Span {
        trace_id: id(A),
        span_id: sid(0xcc),
        parent_span_id: Some(sid(0xaa)),
        trace_state: String::new(),
        flags: 0,
        name: "GET /items".into(),
        kind: SpanKind::Server,
        start_unix_nano: t0 + 1_000_000,
        duration_ns: 1_000_000,
        status_code: StatusCode::Error,
        status_message: "boom".into(),
        service_name: "svc-b".into(),
        resource_attributes: str_attributes(&[("pod.n", "2"), ("service.name", "svc-b")]),
        scope_name: "io.test".into(),
        scope_version: "1.0.0".into(),
        attributes: vec![],
        events: vec![],
        links: vec![],
    };
    vec![client, server]
}

fn settings(front: &Front) -> ClickHouseSettings {
    ClickHouseSettings {
        endpoint: front.url().to_owned(),
        database: "otel_test".into(),
        ..Default::default()
    }
}

/// Writes the requests through the core's exporter (which migrates the schema first).
fn export(front: &Front, requests: &[ExportTraceServiceRequest]) {
    let config =
        serde_json::json!({"clickhouse": {"endpoint": front.url(), "database": "otel_test"}});
    let exporter = Exporter::new(Config::from_json(config.to_string().as_bytes()).expect("config"))
        .expect("exporter");
    for request in requests {
        exporter
            .export(
                Signal::Traces,
                &request.encode_to_vec(),
                Some(Duration::from_secs(60)),
            )
            .expect("export");
    }
    exporter
        .shutdown(Duration::from_secs(10))
        .expect("shutdown");
}

/// A whole hour, three hours ago, plus some nanoseconds: every span of the test (up to half an
/// hour later) falls in one hour of the hourly rollups.
fn base_time() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    (now - 3 * 3600) / 3600 * 3600 * 1_000_000_000 + 123_456_789
}

#[test]
fn reads_what_the_exporter_wrote() {
    let Some(front) = Front::start() else {
        return;
    };
    let t0 = base_time();
    export(&front, &[trace_a(t0), others(t0)]);
    let store = ClickHouseStore::new(&settings(&front), QUERY_TIMEOUT).expect("settings");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        check_traces(&store, t0).await;
        check_search(&store, t0).await;
        check_services_and_operations(&store).await;
        check_dependencies(&store, t0).await;
        check_errors(&front).await;
    });
    // From otel_traces and otel_span_stats_1h: see support/stats.rs. Sent last, not to be
    // among the services above.
    let hour = stats::first_hour();
    export(&front, &[stats::request(&stats::spans(hour))]);
    stats::service_statistics(
        &|query| {
            runtime
                .block_on(store.service_stats(query))
                .expect("statistics")
        },
        hour,
        stats::Estimate::TDigest,
    );
    // Nobody listening: unavailable, so the API answers 503.
    drop(front);
    let error = runtime
        .block_on(store.services())
        .expect_err("the front is gone");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    eprintln!("as expected: {error}");
}

async fn check_traces(store: &ClickHouseStore, t0: u64) {
    // By id alone: the lookup table bounds the read in time.
    let mut traces = store.traces(&[id(A)], None).await.expect("trace A");
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0].trace_id, id(A));
    traces[0].spans.sort_by_key(|s| s.span_id);
    assert_eq!(traces[0].spans, expected_a(t0));

    // Several ids, one unknown: the known ones, in the order asked.
    let traces = store
        .traces(&[id(C), id(0x77), id(A), id(D)], None)
        .await
        .expect("traces");
    let found: Vec<(TraceId, usize)> = traces.iter().map(|t| (t.trace_id, t.spans.len())).collect();
    assert_eq!(found, vec![(id(C), 2), (id(A), 2), (id(D), 1)]);
    assert_eq!(traces[2].spans[0].start_unix_nano, (t0 - 24 * HOUR) as i64);

    // Unknown trace, and no ids at all: nothing.
    assert!(store
        .traces(&[id(0x77)], None)
        .await
        .expect("unknown")
        .is_empty());
    assert!(store.traces(&[], None).await.expect("none").is_empty());

    // With a window, only spans that start in it: D is a day older.
    let window = Some(((t0 - HOUR) as i64, (t0 + HOUR) as i64));
    let traces = store.traces(&[id(A), id(D)], window).await.expect("window");
    let found: Vec<TraceId> = traces.iter().map(|t| t.trace_id).collect();
    assert_eq!(found, vec![id(A)]);
    // The window's ends are inclusive: C's server span starts exactly at t0 + 20 minutes.
    let at = (t0 + 20 * MINUTE) as i64;
    let traces = store.traces(&[id(C)], Some((at, at))).await.expect("edge");
    assert_eq!(traces[0].spans.len(), 1);
    assert_eq!(traces[0].spans[0].span_id, sid(0xc1));
}

/// A search of the two hours around t0, at most 20 traces, for spans of `service` and
/// `operation` (`""`: any) with the Jaeger tags `tags`.
fn search(t0: u64, service: &str, operation: &str, tags: &[(&str, &str)]) -> TraceQuery {
    let given = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    TraceQuery {
        service: given(service),
        operation: given(operation),
        tags: tags
            .iter()
            .map(|(key, value)| TagFilter::from_jaeger(key, value))
            .collect(),
        start_min_unix_nano: (t0 - HOUR) as i64,
        start_max_unix_nano: (t0 + HOUR) as i64,
        duration_min_ns: None,
        duration_max_ns: None,
        limit: 20,
    }
}

async fn check_search(store: &ClickHouseStore, t0: u64) {
    let day_before = (t0 - 24 * HOUR) as i64;
    let ms = |n: i64| Some(n * 1_000_000);
    let cases: Vec<(&str, TraceQuery, Vec<u8>)> = vec![
        (
            "a service, the most recent first",
            search(t0, "svc-a", "", &[]),
            vec![C, B, A],
        ),
        (
            "a wider time range takes D too",
            TraceQuery {
                start_min_unix_nano: day_before - HOUR as i64,
                ..search(t0, "svc-a", "", &[])
            },
            vec![C, B, A, D],
        ),
        (
            "a range of only D's start, ends included",
            TraceQuery {
                start_min_unix_nano: day_before,
                start_max_unix_nano: day_before,
                ..search(t0, "", "", &[])
            },
            vec![D],
        ),
        (
            "the limit keeps the most recent",
            TraceQuery {
                limit: 2,
                ..search(t0, "svc-a", "", &[])
            },
            vec![C, B],
        ),
        (
            "an operation",
            search(t0, "svc-a", "GET items", &[]),
            vec![C, A],
        ),
        (
            "span.kind=server",
            search(t0, "svc-a", "", &[("span.kind", "server")]),
            vec![C, B],
        ),
        (
            "a span attribute (an int, matched as its string)",
            search(t0, "", "", &[("http.status_code", "500")]),
            vec![B],
        ),
        (
            "a resource attribute",
            search(t0, "", "", &[("host.name", "h1")]),
            vec![C, B, A],
        ),
        (
            "an attribute whose value is empty, not one that is missing",
            search(t0, "", "", &[("note", "")]),
            vec![E],
        ),
        (
            "a value nobody has",
            search(t0, "", "", &[("http.status_code", "404")]),
            vec![],
        ),
        (
            "error=true, any service",
            search(t0, "", "", &[("error", "true")]),
            vec![B, A],
        ),
        (
            "error=true on a span of svc-a",
            search(t0, "svc-a", "", &[("error", "true")]),
            vec![B],
        ),
        (
            "error=false: svc-b's only span failed",
            search(t0, "svc-b", "", &[("error", "false")]),
            vec![],
        ),
        (
            "otel.status_code=OK",
            search(t0, "", "", &[("otel.status_code", "OK")]),
            vec![A],
        ),
        (
            "every condition on one span",
            search(
                t0,
                "svc-a",
                "GET items",
                &[("http.status_code", "200"), ("host.name", "h1")],
            ),
            vec![C],
        ),
        (
            "conditions met by different spans only",
            search(t0, "", "db", &[("http.status_code", "200")]),
            vec![],
        ),
        (
            "at least 4 ms",
            TraceQuery {
                duration_min_ns: ms(4),
                ..search(t0, "svc-a", "", &[])
            },
            vec![C, B],
        ),
        (
            "at most 4 ms",
            TraceQuery {
                duration_max_ns: ms(4),
                ..search(t0, "svc-a", "", &[])
            },
            vec![C, A],
        ),
        (
            "between 3 and 5 ms, ends included",
            TraceQuery {
                duration_min_ns: ms(3),
                duration_max_ns: ms(5),
                ..search(t0, "", "", &[])
            },
            vec![C, A],
        ),
        (
            "a service that has no spans",
            search(t0, "nobody", "", &[]),
            vec![],
        ),
    ];
    for (what, query, expected) in cases {
        let got = store.find_trace_ids(&query).await.expect(what);
        let expected: Vec<TraceId> = expected.into_iter().map(id).collect();
        assert_eq!(got, expected, "{what}");
    }
}

async fn check_services_and_operations(store: &ClickHouseStore) {
    assert_eq!(
        store.services().await.expect("services"),
        vec!["svc-a", "svc-b", "svc-c"]
    );
    let op = |name: &str, kind: &str| Operation {
        name: name.into(),
        span_kind: kind.into(),
    };
    assert_eq!(
        store.operations("svc-a", None).await.expect("operations"),
        vec![
            op("GET items", "client"),
            op("GET items", "server"),
            op("POST items", "server"),
            op("db", "internal"),
        ]
    );
    assert_eq!(
        store
            .operations("svc-a", Some(SpanKind::Server))
            .await
            .expect("server operations"),
        vec![op("GET items", "server"), op("POST items", "server")]
    );
    // An unspecified kind is "".
    assert_eq!(
        store.operations("svc-c", None).await.expect("svc-c"),
        vec![op("publish", "producer"), op("tick", "")]
    );
    assert_eq!(
        store
            .operations("svc-c", Some(SpanKind::Unspecified))
            .await
            .expect("unspecified"),
        vec![op("tick", "")]
    );
    assert!(store
        .operations("nobody", None)
        .await
        .expect("unknown service")
        .is_empty());
}

async fn check_dependencies(store: &ClickHouseStore, t0: u64) {
    assert_eq!(
        store
            .dependencies(t0 as i64, (t0 + HOUR) as i64)
            .await
            .expect("dependencies"),
        vec![DependencyLink {
            parent: "svc-a".into(),
            child: "svc-b".into(),
            call_count: 1,
        }]
    );
    // Two hours later: no calls.
    assert!(store
        .dependencies((t0 + 2 * HOUR) as i64, (t0 + 3 * HOUR) as i64)
        .await
        .expect("later")
        .is_empty());
}

async fn check_errors(front: &Front) {
    // A database that is not there: an error of the query, naming what was being done.
    let missing = ClickHouseStore::new(
        &ClickHouseSettings {
            database: "nowhere".into(),
            ..settings(front)
        },
        QUERY_TIMEOUT,
    )
    .expect("settings");
    match missing.services().await {
        Err(StoreError::Query { action, message }) => {
            assert_eq!(action, "list services");
            assert!(message.contains("nowhere"), "{message}");
        }
        other => panic!("expected a query error, got {other:?}"),
    }
    // Settings the exporter would refuse too.
    let error = ClickHouseStore::new(
        &ClickHouseSettings {
            database: "otel; DROP".into(),
            ..settings(front)
        },
        QUERY_TIMEOUT,
    )
    .err()
    .expect("a bad database name");
    assert_eq!(error.field, "clickhouse.database");
    let error = ClickHouseStore::new(
        &ClickHouseSettings {
            endpoint: "localhost:8123".into(),
            ..settings(front)
        },
        QUERY_TIMEOUT,
    )
    .err()
    .expect("no scheme");
    assert_eq!(error.field, "clickhouse.endpoint");
}
