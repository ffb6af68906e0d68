//! otelstore's own API over HTTP, against the same in-memory store.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::json;

use super::{app, assert_api_error, get, span, store_of, Call, TestStore, SECOND, T0};
use crate::api::Api;
use crate::model::{Span, StatsQuery, StatsSource, StatusCode as SpanStatus};

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
