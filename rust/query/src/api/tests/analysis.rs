//! The N+1 analysis over HTTP, against the same in-memory store.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use otelstore::config::GoDuration;
use serde_json::json;

use super::{
    app, assert_error, config, get, id, span, store, store_of, Call, Mode, TestStore, SECOND, T0,
};
use crate::config::{AnalysisSettings, NPlusOneSettings};
use crate::model::{Attribute, Span, SpanId, SpanKind, Value};
use crate::store::TraceQuery;

const MS: i64 = 1_000_000;
const BOOKS: &str = "SELECT id, title FROM books WHERE author_id = ?";

/// A database call under span `parent` of the same trace, `duration_ms` long.
fn db_call(trace: u8, id: u8, parent: u8, text: &str, start: i64, duration_ms: i64) -> Span {
    let attribute = |key: &str, value: &str| Attribute {
        key: key.into(),
        value: Value::Str(value.into()),
    };
    Span {
        parent_span_id: Some(SpanId([parent; 8])),
        kind: SpanKind::Client,
        duration_ns: duration_ms * MS,
        attributes: vec![
            attribute("db.system.name", "sqlite"),
            attribute("db.query.text", text),
        ],
        ..span(trace, id, "library", "SELECT", start)
    }
}

/// A request of `service` at `start` that reads the authors, then the books of each of `authors`
/// (`duration_ms` apiece) with one query each (`lazy`) or one for all.
fn request(trace: u8, service: &str, lazy: bool, authors: u8, duration_ms: i64) -> Vec<Span> {
    let start = T0 + i64::from(trace) * SECOND;
    let name = if lazy {
        "GET /authors-lazy"
    } else {
        "GET /authors-eager"
    };
    let mut spans = vec![
        span(trace, 1, service, name, start),
        db_call(trace, 2, 1, "SELECT id, name FROM authors", start, 2),
    ];
    if lazy {
        for author in 1..=authors {
            let text = format!("SELECT id, title FROM books WHERE author_id = {author}");
            let at = start + i64::from(author) * 20 * MS;
            spans.push(db_call(trace, 2 + author, 1, &text, at, duration_ms));
        }
    } else {
        let ids: Vec<String> = (1..=authors).map(|author| author.to_string()).collect();
        let text = format!(
            "SELECT id, title, author_id FROM books WHERE author_id IN ({})",
            ids.join(", ")
        );
        spans.push(db_call(trace, 3, 1, &text, start + 20 * MS, 80));
    }
    for span in &mut spans {
        span.service_name = service.into();
    }
    spans
}

/// Trace 10: library's lazy request, six calls of 12 ms; 11: its eager one; 12: shelf's lazy one,
/// five calls of 20 ms.
fn library() -> Arc<TestStore> {
    let mut spans = request(10, "library", true, 6, 12);
    spans.extend(request(11, "library", false, 6, 12));
    spans.extend(request(12, "shelf", true, 5, 20));
    store_of(spans)
}

const PATH: &str = "/api/v1/analysis/n-plus-one";

fn window_ms() -> (i64, i64) {
    (T0 / MS - 1000, T0 / MS + 120_000)
}

fn search(service: Option<&str>, (start, end): (i64, i64), limit: usize) -> TraceQuery {
    TraceQuery {
        service: service.map(str::to_owned),
        operation: None,
        tags: vec![],
        start_min_unix_nano: start,
        start_max_unix_nano: end,
        duration_min_ns: None,
        duration_max_ns: None,
        limit,
    }
}

#[tokio::test]
async fn the_lazy_request_is_found_and_the_eager_one_is_not() {
    let store = library();
    let (start, end) = window_ms();
    let answer = get(
        &app(&store, false),
        &format!("{PATH}?service=library&start={start}&end={end}"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.content_type, "application/json");
    let lazy = id(10).to_string();
    assert_eq!(
        answer.json(),
        json!({
            "findings": [{
                "service": "library",
                "parent_operation": "GET /authors-lazy",
                "statement": BOOKS,
                "count": 6,
                "occurrences": 1,
                "total_ms": 72.0,
                "traces": [lazy],
                "example": {"trace_id": lazy, "parent_span_id": "0101010101010101", "count": 6, "total_ms": 72.0},
            }],
            "traces_examined": 2,
            "thresholds": {"min_repeats": 5, "min_total_ms": 50.0},
        })
    );
    let hour = 3600 * SECOND;
    assert_eq!(
        store.calls(),
        vec![
            Call::Find(search(Some("library"), (start * MS, end * MS), 500)),
            Call::Traces(
                vec![id(11), id(10)],
                Some((start * MS - hour, end * MS + hour))
            ),
        ]
    );
}

#[tokio::test]
async fn every_service_the_worst_first_with_rfc3339_times() {
    let store = library();
    let answer = get(
        &app(&store, false),
        &format!("{PATH}?start=2023-11-14T22:13:19Z&end=2023-11-14T23:15:20%2B01:00"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let body = answer.json();
    let findings = body["findings"].as_array().expect("findings");
    let summary: Vec<_> = findings
        .iter()
        .map(|f| {
            (
                f["service"].clone(),
                f["count"].clone(),
                f["total_ms"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (json!("shelf"), json!(5), json!(100.0)),
            (json!("library"), json!(6), json!(72.0)),
        ]
    );
    assert_eq!(body["traces_examined"], json!(3));
    assert_eq!(
        store.calls()[0],
        Call::Find(search(None, (T0 - SECOND, T0 + 120 * SECOND), 500))
    );
}

#[tokio::test]
async fn the_thresholds_and_the_number_of_traces_are_configured() {
    let store = library();
    let mut config = config(Duration::from_secs(5), Duration::ZERO);
    config.analysis = AnalysisSettings {
        max_traces: 1,
        n_plus_one: NPlusOneSettings {
            min_repeats: 7,
            min_total: GoDuration(Duration::from_millis(1)),
        },
    };
    let app = super::super::router(store.clone(), &config);
    let (start, end) = window_ms();
    let answer = get(&app, &format!("{PATH}?start={start}&end={end}")).await;
    assert_eq!(
        answer.json(),
        json!({"findings": [], "traces_examined": 1, "thresholds": {"min_repeats": 7, "min_total_ms": 1.0}})
    );
    assert_eq!(
        store.calls()[0],
        Call::Find(search(None, (start * MS, end * MS), 1))
    );
}

#[tokio::test]
async fn the_window_is_the_last_hour_by_default() {
    let store = library();
    let answer = get(&app(&store, false), PATH).await;
    assert_eq!(
        answer.json(),
        json!({"findings": [], "traces_examined": 0, "thresholds": {"min_repeats": 5, "min_total_ms": 50.0}})
    );
    let calls = store.calls();
    let [Call::Find(query)] = &calls[..] else {
        panic!("one search and no trace read: {calls:?}");
    };
    assert_eq!(
        query.start_max_unix_nano - query.start_min_unix_nano,
        3600 * SECOND
    );
    assert!(query.start_max_unix_nano > T0);
}

#[tokio::test]
async fn bad_parameters_are_400_and_store_failures_503_or_500() {
    let library = library();
    let app = app(&library, false);
    for (query, msg) in [
        ("start=soon", "unable to parse param 'start': \"soon\" is neither an RFC 3339 time such as 2006-01-02T15:04:05Z nor milliseconds since the epoch"),
        ("end=2023-11-14", "unable to parse param 'end': \"2023-11-14\" is neither an RFC 3339 time such as 2006-01-02T15:04:05Z nor milliseconds since the epoch"),
        ("start=2000&end=1000", "'start' must not be after 'end'"),
    ] {
        assert_error(
            &get(&app, &format!("{PATH}?{query}")).await,
            StatusCode::BAD_REQUEST,
            msg,
        );
    }
    assert!(library.calls().is_empty());
    for (mode, status, msg) in [
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
        let answer = get(&super::app(&store(mode), false), PATH).await;
        assert_error(&answer, status, msg);
    }
}
