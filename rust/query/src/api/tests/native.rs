//! otelstore's own API over HTTP, against the same in-memory store.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value as Json};

use super::{
    app, assert_api_error, get, id, post, span, store, store_of, Call, Mode, TestStore, SECOND, T0,
};
use crate::api::otlp_json::tests::layout;
use crate::api::Api;
use crate::model::{Span, StatsQuery, StatsSource, StatusCode as SpanStatus};
use crate::store::TraceQuery;

const TRACES: &str = "/api/v1/traces";

/// The ids of each trace of a `{"traces": […]}` answer, and the layout of its spans.
fn traces_of(body: &Json) -> Vec<(Json, crate::api::otlp_json::tests::Layout)> {
    body["traces"]
        .as_array()
        .expect("traces")
        .iter()
        .map(|trace| {
            let keys: Vec<&String> = trace.as_object().expect("object").keys().collect();
            assert_eq!(keys, ["resourceSpans", "traceId"]);
            (trace["traceId"].clone(), layout(trace))
        })
        .collect()
}

/// A resource of only a service name, with one scope (none) of these spans.
fn resource(service: &str, spans: &[&str]) -> (Json, Vec<(Json, Vec<String>)>) {
    (
        json!([{"key": "service.name", "value": {"stringValue": service}}]),
        vec![(json!({}), spans.iter().map(|s| (*s).to_owned()).collect())],
    )
}

#[tokio::test]
async fn a_trace_by_id_as_otlp() {
    let store = store(Mode::Answer);
    let app = app(&store, false);
    let answer = post(&app, TRACES, &format!(r#"{{"trace_id": "{}"}}"#, id(1))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.content_type, "application/json");
    let body = answer.json();
    assert_eq!(
        traces_of(&body),
        [(
            json!(id(1).to_string()),
            vec![
                resource("checkout", &["01", "03"]),
                resource("cart", &["02"])
            ]
        )]
    );
    let cart = &body["traces"][0]["resourceSpans"][1]["scopeSpans"][0]["spans"][0];
    assert_eq!(cart["parentSpanId"], json!("0101010101010101"));
    assert_eq!(cart["kind"], json!(3));
    assert_eq!(cart["startTimeUnixNano"], json!((T0 + SECOND).to_string()));
    // Times narrow the first look; an unknown trace is 404, and not cached.
    let app = super::app(&store, true);
    let missing = format!(
        r#"{{"trace_id": "{}", "start": "2023-11-14T22:13:20Z", "end": "2023-11-14T22:13:21Z"}}"#,
        id(9)
    );
    for _ in 0..2 {
        assert_api_error(
            Api::V3,
            &post(&app, TRACES, &missing).await,
            StatusCode::NOT_FOUND,
            "trace not found",
        );
    }
    let hour = 3600 * SECOND;
    let window = Some((T0 - hour, T0 + SECOND + hour));
    assert_eq!(
        store.calls(),
        [
            Call::Traces(vec![id(1)], None),
            Call::Traces(vec![id(9)], window),
            Call::Traces(vec![id(9)], None),
            Call::Traces(vec![id(9)], window),
            Call::Traces(vec![id(9)], None),
        ]
    );
}

#[tokio::test]
async fn a_search_answers_whole_traces_newest_first() {
    let store = store(Mode::Answer);
    let app = app(&store, true);
    let body = r#"{"service_name": "checkout", "start": "2023-11-14T22:13:19Z",
                   "end": "2023-11-14T22:15:20Z", "min_duration": "1ms", "max_duration": null,
                   "limit": 10}"#;
    let answer = post(&app, TRACES, body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        traces_of(&answer.json()),
        [
            (
                json!(id(2).to_string()),
                vec![resource("checkout", &["04"])]
            ),
            (
                json!(id(1).to_string()),
                vec![
                    resource("checkout", &["01", "03"]),
                    resource("cart", &["02"])
                ]
            ),
        ]
    );
    let query = TraceQuery {
        service: Some("checkout".into()),
        operation: None,
        tags: vec![],
        start_min_unix_nano: T0 - SECOND,
        start_max_unix_nano: T0 + 120 * SECOND,
        duration_min_ns: Some(1_000_000),
        duration_max_ns: None,
        limit: 10,
    };
    let hour = 3600 * SECOND;
    let read = Call::Traces(
        vec![id(2), id(1)],
        Some((T0 - SECOND - hour, T0 + 120 * SECOND + hour)),
    );
    assert_eq!(store.calls(), [Call::Find(query.clone()), read.clone()]);
    // The same body again: from the cache. Another body: asked again.
    assert_eq!(post(&app, TRACES, body).await.text, answer.text);
    assert_eq!(store.calls().len(), 2);
    let nobody = post(&app, TRACES, r#"{"service_name": "nobody"}"#).await;
    assert_eq!(nobody.text, r#"{"traces":[]}"#);
    assert_eq!(store.calls().len(), 3);
}

#[tokio::test]
async fn bad_bodies_are_400_naming_the_field() {
    let store = store(Mode::Answer);
    let app = app(&store, true);
    for (body, message) in [
        ("{", "the body is not a JSON object: EOF while parsing an object at line 1 column 1"),
        (r#"{"limit": "ten"}"#, "malformed parameter limit: \"ten\" is not a number of traces"),
        (r#"{"trace_id": "12", "min_duration": "1s"}"#, "a trace_id is looked up, not searched for: leave out min_duration"),
        (r#"{"operation": "GET"}"#, "unknown field \"operation\" in the body; the fields are trace_id, service_name, start, end, min_duration, max_duration, limit"),
    ] {
        assert_api_error(
            Api::V3,
            &post(&app, TRACES, body).await,
            StatusCode::BAD_REQUEST,
            message,
        );
    }
    assert!(store.calls().is_empty());
    // A body larger than any request needs is refused before the handler.
    let large = format!(r#"{{"service_name": "{}"}}"#, "x".repeat(70_000));
    let answer = post(&app, TRACES, &large).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    assert!(answer
        .text
        .contains("cannot read the request body (at most 65536 bytes)"));
    assert!(store.calls().is_empty());
}

#[tokio::test]
async fn native_store_failures_are_503_and_500() {
    for (mode, status, message) in [
        (
            Mode::Unavailable,
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is unavailable: connection refused",
        ),
        (
            Mode::Fail,
            StatusCode::INTERNAL_SERVER_ERROR,
            "read spans: relation \"spans\" does not exist",
        ),
    ] {
        let app = app(&store(mode), true);
        for body in ["{}", &format!(r#"{{"trace_id": "{}"}}"#, id(1))] {
            assert_api_error(Api::V3, &post(&app, TRACES, body).await, status, message);
        }
    }
}

const HOUR: i64 = 3600 * SECOND;

/// checkout: 1 ms at T0, 3 ms (failed) at T0 + 2 s, 5 ms at T0 + 60 s, 10 ms three hours
/// before; cart: 2 ms at T0 + 1 s.
fn stats_store() -> Arc<TestStore> {
    let lasting = |ms: i64, span: Span| Span {
        duration_ns: ms * 1_000_000,
        ..span
    };
    store_of(vec![
        lasting(1, span(1, 1, "checkout", "GET /cart", T0)),
        lasting(2, span(1, 2, "cart", "SELECT", T0 + SECOND)),
        Span {
            status_code: SpanStatus::Error,
            ..lasting(3, span(1, 3, "checkout", "GET /cart", T0 + 2 * SECOND))
        },
        lasting(5, span(2, 4, "checkout", "POST /pay", T0 + 60 * SECOND)),
        lasting(10, span(3, 5, "checkout", "GET /cart", T0 - 3 * HOUR)),
    ])
}

fn stats_query(service: Option<&str>, (start, end): (i64, i64), source: StatsSource) -> Call {
    Call::Stats(StatsQuery {
        service: service.map(str::to_owned),
        start_unix_nano: start,
        end_unix_nano: end,
        source,
    })
}

#[tokio::test]
async fn service_stats_of_a_short_window_come_from_the_spans() {
    let store = stats_store();
    let app = app(&store, false);
    let answer = get(
        &app,
        "/api/v1/services/stats?start=2023-11-14T22:13:20Z&end=2023-11-14T23:15:20%2B01:00",
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.content_type, "application/json");
    assert_eq!(
        answer.json(),
        json!({
            "services": [
                {"service": "cart", "spans": 1, "errors": 0, "error_rate": 0.0,
                 "p50_ms": 2.0, "p95_ms": 2.0, "p99_ms": 2.0},
                {"service": "checkout", "spans": 3, "errors": 1, "error_rate": 1.0 / 3.0,
                 "p50_ms": 3.0, "p95_ms": 5.0, "p99_ms": 5.0},
            ],
            "source": "raw",
            "start": "2023-11-14T22:13:20Z",
            "end": "2023-11-14T22:15:20Z",
        })
    );
    let answer = get(
        &app,
        "/api/v1/services/stats?service=cart&start=2023-11-14T22:13:20.5Z&end=2023-11-14T22:15:20Z",
    )
    .await;
    assert_eq!(
        answer.json()["services"],
        json!([{"service": "cart", "spans": 1, "errors": 0, "error_rate": 0.0,
                "p50_ms": 2.0, "p95_ms": 2.0, "p99_ms": 2.0}])
    );
    assert_eq!(answer.json()["start"], json!("2023-11-14T22:13:20.5Z"));
    let answer = get(&app, "/api/v1/services/stats?service=nobody").await;
    assert_eq!(answer.json()["services"], json!([]));
    let calls = store.calls();
    assert_eq!(
        calls[..2],
        [
            stats_query(None, (T0, T0 + 120 * SECOND), StatsSource::Raw),
            stats_query(
                Some("cart"),
                (T0 + SECOND / 2, T0 + 120 * SECOND),
                StatsSource::Raw
            ),
        ]
    );
    // Without times: the last hour.
    let Call::Stats(last_hour) = &calls[2] else {
        panic!("{calls:?}")
    };
    assert_eq!(
        (
            last_hour.service.as_deref(),
            last_hour.end_unix_nano - last_hour.start_unix_nano,
            last_hour.source
        ),
        (Some("nobody"), HOUR, StatsSource::Raw)
    );
}

#[tokio::test]
async fn service_stats_of_six_hours_or_more_come_from_the_hourly_statistics() {
    let store = stats_store();
    let app = app(&store, false);
    // 16:13:20 to 22:13:20: six hours, read as the seven whole hours they touch.
    let answer = get(
        &app,
        "/api/v1/services/stats?start=2023-11-14T16:13:20Z&end=2023-11-14T22:13:20Z",
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let body = answer.json();
    assert_eq!(
        (&body["source"], &body["start"], &body["end"]),
        (
            &json!("hourly"),
            &json!("2023-11-14T16:00:00Z"),
            &json!("2023-11-14T23:00:00Z")
        )
    );
    // The whole hour of T0 counts: every span of the store.
    assert_eq!(
        body["services"],
        json!([
            {"service": "cart", "spans": 1, "errors": 0, "error_rate": 0.0,
             "p50_ms": 2.0, "p95_ms": 2.0, "p99_ms": 2.0},
            {"service": "checkout", "spans": 4, "errors": 1, "error_rate": 0.25,
             "p50_ms": 3.0, "p95_ms": 10.0, "p99_ms": 10.0},
        ])
    );
    assert_eq!(
        store.calls(),
        [stats_query(None, (T0 - 6 * HOUR, T0), StatsSource::Hourly)]
    );
}

#[tokio::test]
async fn bad_stats_parameters_are_400_naming_the_parameter() {
    let store = stats_store();
    let app = app(&store, true);
    let not_rfc3339 = "is not an RFC 3339 time such as 2006-01-02T15:04:05.999999999Z07:00 (within the years 1678 to 2261)";
    for (query, message) in [
        (
            "start=yesterday",
            format!("malformed parameter start: \"yesterday\" {not_rfc3339}"),
        ),
        (
            "end=1700000000000",
            format!("malformed parameter end: \"1700000000000\" {not_rfc3339}"),
        ),
        (
            "start=2023-11-14T22:13:20Z&end=2023-11-14T22:13:20Z",
            "'start' (2023-11-14T22:13:20Z) must be before 'end' (2023-11-14T22:13:20Z)".to_owned(),
        ),
    ] {
        assert_api_error(
            Api::V3,
            &get(&app, &format!("/api/v1/services/stats?{query}")).await,
            StatusCode::BAD_REQUEST,
            &message,
        );
    }
    assert!(store.calls().is_empty());
}
