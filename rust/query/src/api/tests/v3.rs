//! The v3 API over HTTP, against the same in-memory store.

use axum::http::StatusCode;
use serde_json::{json, Value as Json};

use super::{
    app, assert_api_error, get, id, span, store, store_of, Answer, Call, Mode, SECOND, T0,
    V3_WINDOW,
};
use crate::api::otlp_json::tests::{layout, Layout};
use crate::api::v3::summary;
use crate::api::Api;
use crate::model::{Span, SpanKind, Trace};

fn assert_error(answer: &Answer, status: StatusCode, message: &str) {
    assert_api_error(Api::V3, answer, status, message);
}

const WINDOW_NS: (i64, i64) = (T0 - SECOND, T0 + 120 * SECOND);

/// The layout of spans (the last two hex digits of their ids) in resources that hold only a
/// service name, and no scope, as the test store's spans have.
fn by_service(services_and_spans: &[(&str, &[&str])]) -> Layout {
    services_and_spans
        .iter()
        .map(|(service, spans)| {
            let ids = spans.iter().map(|id| (*id).to_owned()).collect();
            (
                json!([{"key": "service.name", "value": {"stringValue": service}}]),
                vec![(json!({}), ids)],
            )
        })
        .collect()
}

#[tokio::test]
async fn services_always_as_a_list() {
    let answer = get(&app(&store(Mode::Answer), false), "/api/v3/services").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type, "application/json");
    assert_eq!(answer.text, r#"{"services":["cart","checkout"]}"#);
    let answer = get(&app(&store_of(vec![]), false), "/api/v3/services").await;
    assert_eq!(answer.text, r#"{"services":[]}"#);
}

#[tokio::test]
async fn operations_with_their_kinds_unspecified_as_internal() {
    let store = store(Mode::Answer);
    let app = app(&store, false);
    let answer = get(&app, "/api/v3/operations?service=checkout").await;
    assert_eq!(
        answer.text,
        concat!(
            r#"{"operations":[{"name":"GET /cart","spanKind":"client"},"#,
            r#"{"name":"GET /cart","spanKind":"server"},{"name":"POST /pay","spanKind":"server"}]}"#
        )
    );
    for kind in ["spanKind=client", "span_kind=client"] {
        let answer = get(&app, &format!("/api/v3/operations?service=checkout&{kind}")).await;
        assert_eq!(
            answer.json(),
            json!({"operations": [{"name": "GET /cart", "spanKind": "client"}]})
        );
    }
    let answer = get(&app, "/api/v3/operations?service=nobody").await;
    assert_eq!(answer.text, r#"{"operations":[]}"#);
    assert_error(
        &get(&app, "/api/v3/operations?spanKind=client").await,
        StatusCode::BAD_REQUEST,
        "parameter 'service' is required",
    );
    assert_error(
        &get(&app, "/api/v3/operations?service=checkout&span_kind=up").await,
        StatusCode::BAD_REQUEST,
        "malformed parameter span_kind: \"up\" is not one of server, client, producer, consumer, internal",
    );

    // A span without a kind is listed as internal, once with the internal spans of its name.
    let jobs = store_of(vec![
        Span {
            kind: SpanKind::Unspecified,
            ..span(1, 1, "jobs", "tick", T0)
        },
        Span {
            kind: SpanKind::Internal,
            ..span(1, 2, "jobs", "tick", T0)
        },
        span(1, 3, "jobs", "serve", T0),
    ]);
    let answer = get(&super::app(&jobs, false), "/api/v3/operations?service=jobs").await;
    assert_eq!(
        answer.json(),
        json!({"operations": [
            {"name": "serve", "spanKind": "server"},
            {"name": "tick", "spanKind": "internal"},
        ]})
    );
}

#[tokio::test]
async fn search_answers_the_traces_as_otlp_newest_first() {
    let store = store(Mode::Answer);
    let app = app(&store, false);
    let answer = get(
        &app,
        &format!(
            "/api/v3/traces?query.service_name=checkout&query.operation_name=GET%20%2Fcart&{V3_WINDOW}\
             &query.duration_min=1ms&query.duration_max=1s&query.search_depth=10\
             &query.attributes=%7B%22error%22%3A%22true%22%7D"
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.content_type, "application/json");
    let body = answer.json();
    assert_eq!(
        body.as_object().expect("object").keys().collect::<Vec<_>>(),
        ["result"]
    );
    // Trace 2, then trace 1 with its checkout spans and its cart span.
    assert_eq!(
        layout(&body["result"]),
        by_service(&[
            ("checkout", &["04"]),
            ("checkout", &["01", "03"]),
            ("cart", &["02"]),
        ])
    );
    let cart = &body["result"]["resourceSpans"][2]["scopeSpans"][0]["spans"][0];
    assert_eq!(cart["traceId"], json!(id(1).to_string()));
    assert_eq!(cart["parentSpanId"], json!("0101010101010101"));
    assert_eq!(cart["kind"], json!(3));
    assert_eq!(cart["startTimeUnixNano"], json!((T0 + SECOND).to_string()));
    // One search, then one read of the traces found, as for the same search in v1.
    let v1 = super::store(Mode::Answer);
    get(
        &super::app(&v1, false),
        &format!(
            "/api/traces?service=checkout&operation=GET%20%2Fcart&start={}&end={}&limit=10\
             &minDuration=1ms&maxDuration=1s&tags=%7B%22error%22%3A%22true%22%7D",
            WINDOW_NS.0 / 1000,
            WINDOW_NS.1 / 1000
        ),
    )
    .await;
    assert!(matches!(
        &store.calls()[..],
        [Call::Find(_), Call::Traces(..)]
    ));
    assert_eq!(store.calls(), v1.calls());
}

#[tokio::test]
async fn search_takes_camel_case_names_and_grafanas_unescaped_offsets() {
    let store = store(Mode::Answer);
    let app = app(&store, false);
    // The `+` of the offsets, sent unescaped, arrives as a space.
    for uri in [
        "/api/v3/traces?query.serviceName=cart&query.startTimeMin=2023-11-14T23:13:19%2B01:00\
         &query.startTimeMax=2023-11-14T23:15:20%2B01:00",
        "/api/v3/traces?query.service_name=cart&query.start_time_min=2023-11-14T23:13:19+01:00\
         &query.start_time_max=2023-11-14T23:15:20+01:00",
    ] {
        let answer = get(&app, uri).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(
            layout(&answer.json()["result"]),
            by_service(&[("checkout", &["01", "03"]), ("cart", &["02"])])
        );
    }
    let calls = store.calls();
    assert_eq!(calls[0], calls[2]);
    assert!(matches!(&calls[0], Call::Find(query)
        if query.service.as_deref() == Some("cart")
            && (query.start_min_unix_nano, query.start_max_unix_nano) == WINDOW_NS));
}

#[tokio::test]
async fn a_search_that_finds_nothing_is_404() {
    let store = store(Mode::Answer);
    let answer = get(
        &app(&store, true),
        &format!("/api/v3/traces?query.service_name=nobody&{V3_WINDOW}"),
    )
    .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "No traces found");
    assert!(
        matches!(store.calls()[..], [Call::Find(_)]),
        "no trace is read"
    );
}

#[tokio::test]
async fn a_trace_by_id_as_otlp() {
    let store = store(Mode::Answer);
    let app = app(&store, false);
    let answer = get(&app, &format!("/api/v3/traces/{}", id(1))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        layout(&answer.json()["result"]),
        by_service(&[("checkout", &["01", "03"]), ("cart", &["02"])])
    );
    assert_eq!(store.calls(), vec![Call::Traces(vec![id(1)], None)]);
    assert_error(
        &get(&app, &format!("/api/v3/traces/{}?rawTraces=maybe", id(1))).await,
        StatusCode::BAD_REQUEST,
        "malformed parameter rawTraces: \"maybe\" is not a boolean (true or false)",
    );
}

#[tokio::test]
async fn trace_summaries_for_the_jaeger_ui() {
    let store = store(Mode::Answer);
    let app = app(&store, false);
    let answer = get(
        &app,
        &format!("/api/v3/trace-summaries?{V3_WINDOW}&query.searchDepth=5"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    // The traces found, newest first, each summarized whole (the counts are tested with summary).
    let whole = |n: u8| Trace {
        trace_id: id(n),
        spans: store
            .spans
            .iter()
            .filter(|span| span.trace_id == id(n))
            .cloned()
            .collect(),
    };
    let expected: Vec<Json> = [whole(2), whole(1)]
        .iter()
        .map(|trace| serde_json::to_value(summary(trace)).expect("encodes"))
        .collect();
    let body = answer.json();
    assert_eq!(body, json!({ "summaries": expected }));
    assert_eq!(
        (
            &body["summaries"][1]["traceId"],
            &body["summaries"][1]["rootOperationName"],
            &body["summaries"][1]["spanCount"]
        ),
        (&json!(id(1).to_string()), &json!("GET /cart"), &json!(3))
    );
    assert!(matches!(&store.calls()[0], Call::Find(query) if query.limit == 5));
    // Nothing found is an empty list, not a 404.
    let answer = get(
        &app,
        &format!("/api/v3/trace-summaries?{V3_WINDOW}&query.serviceName=nobody"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text, r#"{"summaries":[]}"#);
}
