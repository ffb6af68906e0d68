//! The router over HTTP, against an in-memory store: every endpoint, the envelope, the error
//! statuses, the timeout and the cache.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use otelstore::config::GoDuration;
use serde_json::{json, Value as Json};
use tower::ServiceExt;

use super::Api;
use crate::config::{
    AnalysisSettings, Backend, CacheSettings, Config, PostgresSettings, SearchSettings,
    StatsSettings,
};
use crate::model::{
    Attribute, DependencyLink, Operation, ServiceStats, Span, SpanId, SpanKind, StatsQuery,
    StatusCode as SpanStatus, Trace, TraceId, Value, STATS_QUANTILES,
};
use crate::store::{BoxFuture, Store, StoreError, TagFilter, TraceQuery};

/// How the test store answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Answer,
    Unavailable,
    Fail,
    /// The database stopped the query at its timeout.
    Stopped,
    Hang,
}

/// What the store was asked, in order.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Services,
    Operations(String, Option<SpanKind>),
    Find(TraceQuery),
    Traces(Vec<TraceId>, Option<(i64, i64)>),
    Dependencies(i64, i64),
    Stats(StatsQuery),
}

struct TestStore {
    mode: Mode,
    spans: Vec<Span>,
    links: Vec<DependencyLink>,
    calls: Mutex<Vec<Call>>,
}

impl TestStore {
    fn answer<'a, T: Send + 'a>(
        &'a self,
        call: Call,
        value: T,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        self.calls.lock().expect("calls").push(call);
        let mode = self.mode;
        Box::pin(async move {
            match mode {
                Mode::Answer => Ok(value),
                Mode::Unavailable => Err(StoreError::Unavailable("connection refused".into())),
                Mode::Fail => Err(StoreError::Query {
                    action: "read spans",
                    message: "relation \"spans\" does not exist".into(),
                }),
                Mode::Stopped => Err(StoreError::Timeout {
                    action: "read spans",
                    message: "canceling statement due to statement timeout".into(),
                }),
                Mode::Hang => std::future::pending().await,
            }
        })
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls").clone()
    }
}

impl Store for TestStore {
    fn services(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        let mut names: Vec<String> = self.spans.iter().map(|s| s.service_name.clone()).collect();
        names.sort();
        names.dedup();
        self.answer(Call::Services, names)
    }

    fn operations<'a>(
        &'a self,
        service: &'a str,
        kind: Option<SpanKind>,
    ) -> BoxFuture<'a, Result<Vec<Operation>, StoreError>> {
        let mut operations: Vec<Operation> = self
            .spans
            .iter()
            .filter(|s| s.service_name == service && kind.is_none_or(|k| k == s.kind))
            .map(|s| Operation {
                name: s.name.clone(),
                span_kind: s.kind.jaeger().unwrap_or_default().to_owned(),
            })
            .collect();
        operations.sort();
        operations.dedup();
        self.answer(Call::Operations(service.to_owned(), kind), operations)
    }

    fn find_trace_ids<'a>(
        &'a self,
        query: &'a TraceQuery,
    ) -> BoxFuture<'a, Result<Vec<TraceId>, StoreError>> {
        let mut matching: Vec<&Span> = self
            .spans
            .iter()
            .filter(|s| {
                query
                    .service
                    .as_ref()
                    .is_none_or(|name| *name == s.service_name)
            })
            .filter(|s| {
                (query.start_min_unix_nano..=query.start_max_unix_nano).contains(&s.start_unix_nano)
            })
            .collect();
        matching.sort_by_key(|s| std::cmp::Reverse(s.start_unix_nano));
        let mut ids: Vec<TraceId> = Vec::new();
        for span in matching {
            if !ids.contains(&span.trace_id) && ids.len() < query.limit {
                ids.push(span.trace_id);
            }
        }
        self.answer(Call::Find(query.clone()), ids)
    }

    fn traces<'a>(
        &'a self,
        ids: &'a [TraceId],
        window: Option<(i64, i64)>,
    ) -> BoxFuture<'a, Result<Vec<Trace>, StoreError>> {
        // Unordered, as a store may answer, and with an empty trace a store should not send.
        let mut traces: Vec<Trace> = ids
            .iter()
            .rev()
            .map(|id| Trace {
                trace_id: *id,
                spans: self
                    .spans
                    .iter()
                    .filter(|s| s.trace_id == *id)
                    .filter(|s| {
                        window.is_none_or(|(from, to)| (from..=to).contains(&s.start_unix_nano))
                    })
                    .cloned()
                    .collect(),
            })
            .collect();
        traces.push(Trace {
            trace_id: TraceId([0xee; 16]),
            spans: vec![],
        });
        self.answer(Call::Traces(ids.to_vec(), window), traces)
    }

    fn dependencies(
        &self,
        start_unix_nano: i64,
        end_unix_nano: i64,
    ) -> BoxFuture<'_, Result<Vec<DependencyLink>, StoreError>> {
        self.answer(
            Call::Dependencies(start_unix_nano, end_unix_nano),
            self.links.clone(),
        )
    }

    /// Counted from the spans in the window (hourly: the whole hours), with nearest-rank
    /// percentiles.
    fn service_stats<'a>(
        &'a self,
        query: &'a StatsQuery,
    ) -> BoxFuture<'a, Result<Vec<ServiceStats>, StoreError>> {
        let (start, end) = query.covered();
        let mut by_service: std::collections::BTreeMap<&str, Vec<&Span>> = Default::default();
        for span in &self.spans {
            let wanted = query
                .service
                .as_ref()
                .is_none_or(|name| *name == span.service_name);
            if wanted && (start..end).contains(&span.start_unix_nano) {
                by_service.entry(&span.service_name).or_default().push(span);
            }
        }
        let stats = by_service
            .into_iter()
            .map(|(service, spans)| {
                let mut durations: Vec<i64> = spans.iter().map(|s| s.duration_ns).collect();
                durations.sort_unstable();
                let quantiles: Vec<Option<f64>> = STATS_QUANTILES
                    .iter()
                    .map(|q| {
                        let rank = (q * durations.len() as f64).ceil() as usize;
                        Some(durations[rank.max(1) - 1] as f64)
                    })
                    .collect();
                let errors = spans
                    .iter()
                    .filter(|s| s.status_code == SpanStatus::Error)
                    .count();
                ServiceStats::new(
                    service.to_owned(),
                    spans.len() as u64,
                    errors as u64,
                    &quantiles,
                )
            })
            .collect();
        self.answer(Call::Stats(query.clone()), stats)
    }
}

const SECOND: i64 = 1_000_000_000;
/// 2023-11-14T22:13:20Z, in nanoseconds.
const T0: i64 = 1_700_000_000 * SECOND;
/// The v3 search window of the test store's traces: T0 − 1s to T0 + 2min, as the Jaeger UI sends
/// it.
const V3_WINDOW: &str =
    "query.start_time_min=2023-11-14T22:13:19Z&query.start_time_max=2023-11-14T22:15:20.000000000Z";

fn id(n: u8) -> TraceId {
    TraceId([n; 16])
}

fn span(trace: u8, span: u8, service: &str, name: &str, start: i64) -> Span {
    Span {
        trace_id: id(trace),
        span_id: SpanId([span; 8]),
        parent_span_id: None,
        trace_state: String::new(),
        flags: 0,
        name: name.into(),
        kind: SpanKind::Server,
        start_unix_nano: start,
        duration_ns: 1_000_000,
        status_code: SpanStatus::Unset,
        status_message: String::new(),
        service_name: service.into(),
        resource_attributes: vec![Attribute {
            key: "service.name".into(),
            value: Value::Str(service.into()),
        }],
        scope_name: String::new(),
        scope_version: String::new(),
        attributes: vec![],
        events: vec![],
        links: vec![],
    }
}

/// Two traces: 1 (checkout then cart, at T0) and 2 (checkout, a minute later).
fn store(mode: Mode) -> Arc<TestStore> {
    Arc::new(TestStore {
        mode,
        spans: vec![
            span(1, 1, "checkout", "GET /cart", T0),
            Span {
                parent_span_id: Some(SpanId([1; 8])),
                kind: SpanKind::Client,
                ..span(1, 2, "cart", "SELECT", T0 + SECOND)
            },
            Span {
                kind: SpanKind::Client,
                ..span(1, 3, "checkout", "GET /cart", T0 + 2 * SECOND)
            },
            span(2, 4, "checkout", "POST /pay", T0 + 60 * SECOND),
        ],
        links: vec![
            DependencyLink {
                parent: "checkout".into(),
                child: "cart".into(),
                call_count: 3,
            },
            DependencyLink {
                parent: "cart".into(),
                child: "db".into(),
                call_count: 1,
            },
            DependencyLink {
                parent: "checkout".into(),
                child: "cart".into(),
                call_count: 2,
            },
        ],
        calls: Mutex::new(Vec::new()),
    })
}

/// A store of these spans, and no dependencies.
fn store_of(spans: Vec<Span>) -> Arc<TestStore> {
    Arc::new(TestStore {
        mode: Mode::Answer,
        spans,
        links: vec![],
        calls: Mutex::new(Vec::new()),
    })
}

fn config(request_timeout: Duration, cache_ttl: Duration) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        backend: Backend::Postgres(PostgresSettings::default()),
        request_timeout,
        cache: CacheSettings {
            ttl: GoDuration(cache_ttl),
            max_bytes: 1 << 20,
        },
        search: SearchSettings::default(),
        stats: StatsSettings::default(),
        analysis: AnalysisSettings::default(),
    }
}

/// The router over `store`, without a cache unless `cached`.
fn app(store: &Arc<TestStore>, cached: bool) -> Router {
    let ttl = if cached {
        Duration::from_secs(60)
    } else {
        Duration::ZERO
    };
    super::router(store.clone(), &config(Duration::from_secs(5), ttl))
}

struct Answer {
    status: StatusCode,
    content_type: String,
    text: String,
}

impl Answer {
    fn json(&self) -> Json {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
}

async fn get(app: &Router, uri: &str) -> Answer {
    send(app, Request::get(uri).body(Body::empty()).expect("request")).await
}

async fn post(app: &Router, uri: &str, body: &str) -> Answer {
    let request = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request");
    send(app, request).await
}

async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    Answer {
        status,
        content_type,
        text: String::from_utf8(body.to_vec()).expect("UTF-8"),
    }
}

/// Asserts an error of `api`, in its shape, with this status and message.
fn assert_api_error(api: Api, answer: &Answer, status: StatusCode, msg: &str) {
    assert_eq!(answer.status, status, "{}", answer.text);
    assert_eq!(answer.content_type, "application/json");
    let code = status.as_u16();
    let expected = match api {
        Api::V1 => json!({"data": null, "total": 0, "limit": 0, "offset": 0,
                          "errors": [{"code": code, "msg": msg}]}),
        Api::V3 => json!({"error": {"httpCode": code, "message": msg}}),
    };
    assert_eq!(answer.json(), expected);
}

/// Asserts a Jaeger error envelope with this status and message.
fn assert_error(answer: &Answer, status: StatusCode, msg: &str) {
    assert_api_error(Api::V1, answer, status, msg);
}

#[tokio::test]
async fn services_in_the_envelope() {
    let store = store(Mode::Answer);
    let answer = get(&app(&store, false), "/api/services").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type, "application/json");
    assert_eq!(
        answer.text,
        r#"{"data":["cart","checkout"],"total":2,"limit":0,"offset":0,"errors":null}"#
    );
}

#[tokio::test]
async fn pretty_print_indents_by_four_spaces() {
    let store = store(Mode::Answer);
    let answer = get(&app(&store, false), "/api/services?prettyPrint=true").await;
    assert_eq!(
        answer.text,
        "{\n    \"data\": [\n        \"cart\",\n        \"checkout\"\n    ],\n    \"total\": 2,\n    \
         \"limit\": 0,\n    \"offset\": 0,\n    \"errors\": null\n}"
    );
}

#[tokio::test]
async fn operation_names_of_a_service() {
    let store = store(Mode::Answer);
    let app = app(&store, false);
    let answer = get(&app, "/api/services/checkout/operations").await;
    assert_eq!(
        answer.text,
        r#"{"data":["GET /cart","POST /pay"],"total":2,"limit":0,"offset":0,"errors":null}"#
    );
    // Escaped once or twice, the name is the same; an unknown service has no operations.
    get(&app, "/api/services/check%6Fut/operations").await;
    get(&app, "/api/services/check%256Fut/operations").await;
    let answer = get(&app, "/api/services/nobody/operations").await;
    assert_eq!(answer.json()["data"], json!([]));
    assert_eq!(
        store.calls(),
        vec![
            Call::Operations("checkout".into(), None),
            Call::Operations("checkout".into(), None),
            Call::Operations("checkout".into(), None),
            Call::Operations("nobody".into(), None),
        ]
    );
}

#[tokio::test]
async fn operations_with_their_kinds() {
    let store = store(Mode::Answer);
    let app = app(&store, false);
    let answer = get(&app, "/api/operations?service=checkout").await;
    assert_eq!(
        answer.json(),
        json!({"data": [
            {"name": "GET /cart", "spanKind": "client"},
            {"name": "GET /cart", "spanKind": "server"},
            {"name": "POST /pay", "spanKind": "server"},
        ], "total": 3, "limit": 0, "offset": 0, "errors": null})
    );
    let answer = get(&app, "/api/operations?service=checkout&spanKind=client").await;
    assert_eq!(
        answer.json()["data"],
        json!([{"name": "GET /cart", "spanKind": "client"}])
    );
    assert_error(
        &get(&app, "/api/operations?spanKind=client").await,
        StatusCode::BAD_REQUEST,
        "parameter 'service' is required",
    );
    assert_error(
        &get(&app, "/api/operations?service=checkout&spanKind=up").await,
        StatusCode::BAD_REQUEST,
        "unable to parse param 'spanKind': \"up\" is not one of server, client, producer, consumer, internal",
    );
}

fn span_ids(trace: &Json) -> Vec<&str> {
    trace["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|span| span["spanID"].as_str().expect("span id"))
        .collect()
}

#[tokio::test]
async fn search_finds_ids_then_reads_the_traces_newest_first() {
    let store = store(Mode::Answer);
    let app = app(&store, false);
    let start = T0 / 1000 - 1_000_000;
    let end = T0 / 1000 + 120_000_000;
    let answer = get(
        &app,
        &format!(
            "/api/traces?service=checkout&operation=GET%20%2Fcart&start={start}&end={end}&limit=10\
             &minDuration=1ms&maxDuration=1s&tag=http.method:GET&tags=%7B%22error%22%3A%22true%22%7D"
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let body = answer.json();
    assert_eq!(
        (
            &body["total"],
            &body["limit"],
            &body["offset"],
            &body["errors"]
        ),
        (&json!(0), &json!(0), &json!(0), &Json::Null)
    );
    let traces = body["data"].as_array().expect("traces");
    assert_eq!(traces.len(), 2, "the store's empty trace is left out");
    assert_eq!(traces[0]["traceID"], json!(id(2).to_string()));
    assert_eq!(traces[1]["traceID"], json!(id(1).to_string()));
    assert_eq!(
        span_ids(&traces[1]),
        vec!["0101010101010101", "0202020202020202", "0303030303030303"]
    );
    assert_eq!(traces[1]["processes"]["p2"]["serviceName"], json!("cart"));
    let query = TraceQuery {
        service: Some("checkout".into()),
        operation: Some("GET /cart".into()),
        tags: vec![
            TagFilter::Error(true),
            TagFilter::Attribute {
                key: "http.method".into(),
                value: "GET".into(),
            },
        ],
        start_min_unix_nano: start * 1000,
        start_max_unix_nano: end * 1000,
        duration_min_ns: Some(1_000_000),
        duration_max_ns: Some(1_000_000_000),
        limit: 10,
    };
    let hour = 3600 * SECOND;
    assert_eq!(
        store.calls(),
        vec![
            Call::Find(query),
            Call::Traces(
                vec![id(2), id(1)],
                Some((start * 1000 - hour, end * 1000 + hour))
            ),
        ]
    );
}

#[tokio::test]
async fn a_search_that_finds_nothing_answers_an_empty_list() {
    let store = store(Mode::Answer);
    let answer = get(&app(&store, false), "/api/traces?service=nobody").await;
    assert_eq!(
        answer.text,
        r#"{"data":[],"total":0,"limit":0,"offset":0,"errors":null}"#
    );
    assert!(
        matches!(store.calls()[..], [Call::Find(_)]),
        "no trace is read"
    );
}

#[tokio::test]
async fn bad_search_parameters_are_400_naming_the_parameter() {
    let store = store(Mode::Answer);
    let app = app(&store, false);
    let not_rfc3339 = "is not an RFC 3339 time such as 2006-01-02T15:04:05.999999999Z07:00 (within the years 1678 to 2261)";
    let mut cases = vec![
        (Api::V1, "/api/traces?start=soon".to_owned(), "unable to parse param 'start': \"soon\" is not an integer number of microseconds since the epoch".to_owned()),
        (Api::V1, "/api/traces?minDuration=1x".to_owned(), "unable to parse param 'minDuration': invalid duration \"1x\" (use a Go duration such as \"10s\", \"1m30s\", \"500ms\")".to_owned()),
        (Api::V1, "/api/traces?limit=many".to_owned(), "unable to parse param 'limit': \"many\" is not a number of traces".to_owned()),
        (Api::V1, "/api/traces?tag=plain".to_owned(), "unable to parse param 'tag': expecting key:value, got \"plain\"".to_owned()),
    ];
    for path in ["/api/v3/traces", "/api/v3/trace-summaries"] {
        cases.extend([
            (Api::V3, format!("{path}?query.service_name=checkout"), "query.startTimeMin and query.startTimeMax are required".to_owned()),
            (Api::V3, format!("{path}?{V3_WINDOW}&query.durationMax=fast"), "malformed parameter query.durationMax: invalid duration \"fast\" (use a Go duration such as \"10s\", \"1m30s\", \"500ms\")".to_owned()),
            (Api::V3, format!("{path}?query.startTimeMin=1700000000&query.startTimeMax=1700000001"), format!("malformed parameter query.startTimeMin: \"1700000000\" {not_rfc3339}")),
        ]);
    }
    for (api, uri, msg) in cases {
        assert_api_error(api, &get(&app, &uri).await, StatusCode::BAD_REQUEST, &msg);
    }
    assert!(store.calls().is_empty());
}

#[tokio::test]
async fn search_by_trace_ids_names_the_missing_ones() {
    let store = store(Mode::Answer);
    let missing = id(9).to_string();
    let answer = get(
        &app(&store, false),
        &format!("/api/traces?traceID={}&traceID={missing}", id(2)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let body = answer.json();
    assert_eq!(body["data"].as_array().expect("traces").len(), 1);
    assert_eq!(body["data"][0]["traceID"], json!(id(2).to_string()));
    assert_eq!(
        body["errors"],
        json!([{"msg": "trace not found", "traceID": missing}])
    );
    assert_eq!(store.calls(), vec![Call::Traces(vec![id(2), id(9)], None)]);
}

#[tokio::test]
async fn a_trace_by_id() {
    let store = store(Mode::Answer);
    let app = app(&store, false);
    let answer = get(&app, &format!("/api/traces/{}", id(1))).await;
    assert_eq!(answer.status, StatusCode::OK);
    let body = answer.json();
    assert_eq!(body["errors"], Json::Null);
    assert_eq!(body["total"], json!(0));
    let traces = body["data"].as_array().expect("traces");
    assert_eq!(traces.len(), 1);
    assert_eq!(
        traces[0]["spans"][1]["references"],
        json!([{"refType": "CHILD_OF", "traceID": id(1).to_string(), "spanID": "0101010101010101"}])
    );
    assert_eq!(store.calls(), vec![Call::Traces(vec![id(1)], None)]);
}

#[tokio::test]
async fn trace_lookup_times_narrow_the_first_look() {
    let hour = 3600 * SECOND;
    let (from, to) = (T0 - 10 * SECOND, T0 + 10 * SECOND);
    let (us, ms) = (1000, 1_000_000);
    let v1 = |(start, end): (i64, i64), unit: i64| {
        format!(
            "/api/traces/{}?start={}&end={}",
            id(1),
            start / unit,
            end / unit
        )
    };
    let v3 = |times: &str| format!("/api/v3/traces/{}?{times}", id(1));
    for (uris, elsewhere) in [
        // Grafana's backend sends milliseconds, its frontend and the Jaeger UI microseconds.
        (
            [v1((from, to), ms), v1((from, to), us)],
            v1((T0 + 10 * hour, T0 + 11 * hour), ms),
        ),
        (
            [
                v3("startTime=2023-11-14T22:13:10Z&endTime=2023-11-14T22:13:30Z"),
                v3("start_time=2023-11-14T22:13:10Z&end_time=2023-11-14T22:13:30Z&raw_traces=true"),
            ],
            v3("startTime=2023-11-15T22:13:20Z"),
        ),
    ] {
        let store = store(Mode::Answer);
        let app = app(&store, false);
        for uri in uris {
            assert_eq!(get(&app, &uri).await.status, StatusCode::OK, "{uri}");
        }
        let window = Some((from - hour, to + hour));
        assert_eq!(
            store.calls(),
            vec![
                Call::Traces(vec![id(1)], window),
                Call::Traces(vec![id(1)], window),
            ]
        );
        // Not there: looked for everywhere.
        assert_eq!(get(&app, &elsewhere).await.status, StatusCode::OK);
        assert_eq!(store.calls()[3], Call::Traces(vec![id(1)], None));
    }
}

#[tokio::test]
async fn an_unknown_trace_is_404_and_a_bad_id_400() {
    for (api, traces, not_found, id_param, bad_start, bad_start_msg) in [
        (
            Api::V1,
            "/api/traces",
            "trace not found",
            "unable to parse param 'traceID'",
            "start=today",
            "unable to parse param 'start': \"today\" is not an integer number of microseconds (or milliseconds) since the epoch",
        ),
        (
            Api::V3,
            "/api/v3/traces",
            "No traces found",
            "malformed parameter trace_id",
            "start_time=today",
            "malformed parameter start_time: \"today\" is not an RFC 3339 time such as 2006-01-02T15:04:05.999999999Z07:00 (within the years 1678 to 2261)",
        ),
    ] {
        let store = store(Mode::Answer);
        let app = app(&store, true);
        for _ in 0..2 {
            assert_api_error(
                api,
                &get(&app, &format!("{traces}/{}", id(7))).await,
                StatusCode::NOT_FOUND,
                not_found,
            );
        }
        assert_eq!(store.calls().len(), 2, "a 404 is not cached");
        assert_api_error(
            api,
            &get(&app, &format!("{traces}/not-an-id")).await,
            StatusCode::BAD_REQUEST,
            &format!("{id_param}: \"not-an-id\" is not a 32-digit hex id"),
        );
        assert_api_error(
            api,
            &get(&app, &format!("{traces}/{}?{bad_start}", id(1))).await,
            StatusCode::BAD_REQUEST,
            bad_start_msg,
        );
    }
}

#[tokio::test]
async fn dependencies_are_merged_filtered_and_sorted() {
    let store = store(Mode::Answer);
    let app = app(&store, false);
    let end_ms = T0 / 1_000_000;
    let answer = get(
        &app,
        &format!("/api/dependencies?endTs={end_ms}&lookback=3600000"),
    )
    .await;
    assert_eq!(
        answer.text,
        concat!(
            r#"{"data":[{"parent":"cart","child":"db","callCount":1},"#,
            r#"{"parent":"checkout","child":"cart","callCount":5}],"total":0,"limit":0,"offset":0,"errors":null}"#
        )
    );
    let answer = get(
        &app,
        &format!("/api/dependencies?endTs={end_ms}&service=db"),
    )
    .await;
    assert_eq!(
        answer.json()["data"],
        json!([{"parent": "cart", "child": "db", "callCount": 1}])
    );
    assert_eq!(
        store.calls(),
        vec![
            Call::Dependencies(T0 - 3600 * SECOND, T0),
            Call::Dependencies(T0 - 86_400 * SECOND, T0),
        ]
    );
    assert_error(
        &get(&app, "/api/dependencies?endTs=yesterday").await,
        StatusCode::BAD_REQUEST,
        "unable to parse param 'endTs': \"yesterday\" is not an integer number of milliseconds since the epoch",
    );
}

#[tokio::test]
async fn store_failures_are_503_504_and_500() {
    let unavailable = store(Mode::Unavailable);
    let failing = store(Mode::Fail);
    let stopped = store(Mode::Stopped);
    let id = id(1).to_string();
    for (api, uri) in [
        (Api::V1, "/api/services".to_owned()),
        (Api::V1, "/api/services/checkout/operations".to_owned()),
        (Api::V1, "/api/operations?service=checkout".to_owned()),
        (Api::V1, "/api/traces?service=checkout".to_owned()),
        (Api::V1, format!("/api/traces/{id}")),
        (Api::V1, "/api/dependencies".to_owned()),
        (Api::V3, "/api/v3/services".to_owned()),
        (Api::V3, "/api/v3/operations?service=checkout".to_owned()),
        (Api::V3, format!("/api/v3/traces?{V3_WINDOW}")),
        (Api::V3, format!("/api/v3/traces/{id}")),
        (Api::V3, format!("/api/v3/trace-summaries?{V3_WINDOW}")),
        (Api::V3, "/api/v1/services/stats".to_owned()),
    ] {
        assert_api_error(
            api,
            &get(&app(&unavailable, true), &uri).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is unavailable: connection refused",
        );
        assert_api_error(
            api,
            &get(&app(&failing, true), &uri).await,
            StatusCode::INTERNAL_SERVER_ERROR,
            "read spans: relation \"spans\" does not exist",
        );
        assert_api_error(
            api,
            &get(&app(&stopped, true), &uri).await,
            StatusCode::GATEWAY_TIMEOUT,
            "read spans: the database stopped the query at the time allowed: \
             canceling statement due to statement timeout",
        );
    }
}

#[tokio::test]
async fn a_request_that_takes_too_long_is_504() {
    let store = store(Mode::Hang);
    let app = super::router(
        store.clone(),
        &config(Duration::from_millis(50), Duration::from_secs(60)),
    );
    let timeout = "the request did not finish within 50ms (request_timeout); the database may be overloaded, or the query too broad";
    for (api, uri) in [(Api::V1, "/api/services"), (Api::V3, "/api/v3/services")] {
        assert_api_error(
            api,
            &get(&app, uri).await,
            StatusCode::GATEWAY_TIMEOUT,
            timeout,
        );
    }
    // A body that never ends is waited for as long, no longer.
    let stalled = futures_util::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
    let request = Request::post("/api/v1/traces")
        .body(Body::from_stream(stalled))
        .expect("request");
    assert_api_error(
        Api::V3,
        &send(&app, request).await,
        StatusCode::GATEWAY_TIMEOUT,
        timeout,
    );
    assert_eq!(store.calls(), [Call::Services, Call::Services]);
}

#[tokio::test]
async fn answers_are_cached_by_path_and_parameters() {
    let store = store(Mode::Answer);
    let app = app(&store, true);
    let first = get(&app, "/api/operations?service=checkout&spanKind=server").await;
    let again = get(&app, "/api/operations?spanKind=server&service=checkout").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.content_type, "application/json");
    assert_eq!(again.text, first.text);
    assert_eq!(
        store.calls().len(),
        1,
        "the second answer came from the cache"
    );
    get(&app, "/api/operations?service=checkout&spanKind=client").await;
    get(&app, "/api/services").await;
    get(&app, "/api/services").await;
    assert_eq!(store.calls().len(), 3);
    // v3 answers too: one search and one read, once.
    let v3 = format!("/api/v3/traces?{V3_WINDOW}");
    let first = get(&app, &v3).await;
    let again = get(&app, &v3).await;
    assert_eq!(
        (first.status, again.status),
        (StatusCode::OK, StatusCode::OK)
    );
    assert_eq!(again.text, first.text);
    assert_eq!(store.calls().len(), 5);
    // And the native API's.
    let stats = "/api/v1/services/stats?start=2023-11-14T22:13:20Z&service=cart";
    let first = get(&app, stats).await;
    let again = get(&app, stats).await;
    assert_eq!(
        (first.status, again.status),
        (StatusCode::OK, StatusCode::OK)
    );
    assert_eq!(again.text, first.text);
    assert_eq!(store.calls().len(), 6);
}

#[tokio::test]
async fn an_unknown_path_is_404_in_the_shape_of_its_api() {
    let store = store(Mode::Answer);
    for (api, uri) in [
        (Api::V1, "/api/nothing?x=1"),
        (Api::V3, "/api/v3/dependencies"),
        (Api::V3, "/api/v1/nothing"),
        (Api::V1, "/api/v10/services"),
    ] {
        assert_api_error(
            api,
            &get(&app(&store, true), uri).await,
            StatusCode::NOT_FOUND,
            &format!("no such API: {uri}"),
        );
    }
}

mod analysis;
mod native;
mod v3;
