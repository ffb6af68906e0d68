//! Jaeger's API v3 over HTTP, the one the Jaeger UI calls: services, operations, trace search, a
//! trace by id (both as OTLP JSON), and trace summaries for the UI's search page.
//!
//! Parameters go by Jaeger's camelCase names or by the older snake_case aliases Jaeger still reads
//! (`query.serviceName` or `query.service_name`, …). Times are RFC 3339 (`2023-11-14T22:13:20Z`,
//! fractions to the nanosecond, any offset); durations are Go durations (`10ms`, `1.5s`). Errors are
//! `{"error":{"httpCode":400,"message":"malformed parameter query.durationMin: …"}}`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::jaeger::{operation_list, path_value, OperationJson};
use super::otlp_json::{unix_nano, Text, TracesData};
use super::params::{self, bad, Params, SearchNames};
use super::{json, search_traces, trace_by_id, Api, ApiError, AppState};
use crate::config::SearchSettings;
use crate::model::{Span, SpanId, StatusCode as SpanStatus, Trace, TraceId};
use crate::store::TraceQuery;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v3/services", get(services))
        .route("/api/v3/operations", get(operations))
        .route("/api/v3/traces", get(find_traces))
        .route("/api/v3/traces/{trace_id}", get(trace))
        .route("/api/v3/trace-summaries", get(trace_summaries))
}

/// An error answered in the v3 shape (the native API's too).
#[derive(Debug)]
pub(super) struct V3Error(ApiError);

impl<E> From<E> for V3Error
where
    ApiError: From<E>,
{
    fn from(error: E) -> Self {
        V3Error(ApiError::from(error))
    }
}

impl IntoResponse for V3Error {
    fn into_response(self) -> Response {
        self.0.response(Api::V3)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorDetails {
    http_code: u16,
    message: String,
}

#[derive(Serialize)]
struct ErrorJson {
    error: ErrorDetails,
}

/// `{"error":{"httpCode":404,"message":"No traces found"}}`; a bad parameter is
/// `malformed parameter <name>: <why>`, as Jaeger words it.
pub(super) fn error_body(status: StatusCode, error: &ApiError) -> Result<Bytes, serde_json::Error> {
    let message = match error {
        ApiError::Param { param, reason } => format!("malformed parameter {param}: {reason}"),
        other => other.to_string(),
    };
    let body = ErrorJson {
        error: ErrorDetails {
            http_code: status.as_u16(),
            message,
        },
    };
    Ok(serde_json::to_vec(&body)?.into())
}

pub(super) fn reply<T: Serialize>(body: &T) -> Result<Response, V3Error> {
    Ok(json(StatusCode::OK, serde_json::to_vec(body)?.into()))
}

// Each parameter's names: Jaeger's canonical one first, then the aliases it still reads.
const SPAN_KIND: &[&str] = &["spanKind", "span_kind"];
const START_TIME: &[&str] = &["startTime", "start_time"];
const END_TIME: &[&str] = &["endTime", "end_time"];
const RAW_TRACES: &[&str] = &["rawTraces", "raw_traces"];
const START_TIME_MIN: &[&str] = &["query.startTimeMin", "query.start_time_min"];
const START_TIME_MAX: &[&str] = &["query.startTimeMax", "query.start_time_max"];
const QUERY_RAW_TRACES: &[&str] = &["query.rawTraces", "query.raw_traces"];
const ATTRIBUTES: &str = "query.attributes";
const SEARCH: SearchNames = SearchNames {
    service: &["query.serviceName", "query.service_name"],
    operation: &["query.operationName", "query.operation_name"],
    duration_min: &["query.durationMin", "query.duration_min"],
    duration_max: &["query.durationMax", "query.duration_max"],
    limit: &[
        "query.searchDepth",
        "query.search_depth",
        "query.num_traces",
    ],
};

/// A boolean parameter, read as Go's `strconv.ParseBool` reads it. Raw traces are what this server
/// always answers (it adjusts nothing), so `rawTraces` is only checked.
fn boolean(params: &Params, names: &[&'static str]) -> Result<Option<bool>, ApiError> {
    params
        .first_of(names)
        .map(|(param, value)| match value {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
            _ => Err(bad(
                param,
                format!("{value:?} is not a boolean (true or false)"),
            )),
        })
        .transpose()
}

/// The search of `/api/v3/traces` and `/api/v3/trace-summaries`.
fn search(params: &Params, settings: &SearchSettings) -> Result<TraceQuery, ApiError> {
    let (Some(start), Some(end)) = (
        params::time(params, START_TIME_MIN)?,
        params::time(params, START_TIME_MAX)?,
    ) else {
        return Err(ApiError::BadRequest(format!(
            "{} and {} are required",
            START_TIME_MIN[0], START_TIME_MAX[0]
        )));
    };
    if start >= end {
        return Err(ApiError::BadRequest(format!(
            "{} must be before {}",
            START_TIME_MIN[0], START_TIME_MAX[0]
        )));
    }
    boolean(params, QUERY_RAW_TRACES)?;
    let tags = match params.get(ATTRIBUTES) {
        Some(value) => params::tag_filters(&params::tag_map(ATTRIBUTES, value)?),
        None => Vec::new(),
    };
    params::trace_query(params, &SEARCH, tags, (start, end), settings)
}

#[derive(Serialize)]
struct Services {
    services: Vec<String>,
}

/// `{"services":["cart","checkout"]}`, `{"services":[]}` when there are none.
async fn services(State(state): State<Arc<AppState>>) -> Result<Response, V3Error> {
    let services = state.store.services().await?;
    reply(&Services { services })
}

#[derive(Serialize)]
struct Operations {
    operations: Vec<OperationJson>,
}

/// `/api/v3/operations?service=S[&spanKind=K]`:
/// `{"operations":[{"name":"GET /","spanKind":"server"}]}`. Spans without a kind count as
/// `internal`, as in Jaeger.
async fn operations(
    State(state): State<Arc<AppState>>,
    params: Params,
) -> Result<Response, V3Error> {
    let mut operations = operation_list(&state, &params, SPAN_KIND).await?;
    for operation in &mut operations {
        if operation.span_kind.is_empty() {
            "internal".clone_into(&mut operation.span_kind);
        }
    }
    operations.sort();
    operations.dedup();
    reply(&Operations { operations })
}

#[derive(Serialize)]
struct OtlpResult<'a> {
    result: TracesData<'a>,
}

/// `{"result":{"resourceSpans":[…]}}`, or 404 when there is no trace.
fn traces_reply(traces: &[Trace]) -> Result<Response, V3Error> {
    if traces.is_empty() {
        return Err(ApiError::NoTraces.into());
    }
    reply(&OtlpResult {
        result: TracesData::new(traces),
    })
}

/// The traces a search finds, whole, as OTLP JSON; 404 when it finds none.
async fn find_traces(
    State(state): State<Arc<AppState>>,
    params: Params,
) -> Result<Response, V3Error> {
    let query = search(&params, &state.search)?;
    traces_reply(&search_traces(state.store.as_ref(), &query).await?)
}

/// `/api/v3/traces/{trace_id}[?startTime=&endTime=]`: the trace as OTLP JSON, or 404. The times
/// only narrow where its spans are looked for first.
async fn trace(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    params: Params,
) -> Result<Response, V3Error> {
    let id = params::trace_id("trace_id", &path_value(id)?)?;
    let window = params::lookup_window(
        params::time(&params, START_TIME)?,
        params::time(&params, END_TIME)?,
    );
    boolean(&params, RAW_TRACES)?;
    let trace = trace_by_id(state.store.as_ref(), id, window).await?;
    traces_reply(trace.as_slice())
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct ServiceSummary<'a> {
    name: &'a str,
    span_count: usize,
    error_span_count: usize,
}

/// What the Jaeger UI lists for a trace it found (the shape of Jaeger's `FindTraceSummaries`).
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(super) struct TraceSummary<'a> {
    trace_id: Text<TraceId>,
    root_service_name: &'a str,
    root_operation_name: &'a str,
    #[serde(skip_serializing_if = "Text::is_zero")]
    min_start_time_unix_nano: Text<u64>,
    #[serde(skip_serializing_if = "Text::is_zero")]
    max_end_time_unix_nano: Text<u64>,
    span_count: usize,
    error_span_count: usize,
    orphan_span_count: usize,
    /// Sorted by name.
    services: Vec<ServiceSummary<'a>>,
}

/// A trace's summary, counted as Jaeger counts it: the root is the earliest span without a parent
/// (none, and the root names are empty, when every span has one); an orphan is a span whose
/// parent is not in the trace; an error span has the status Error.
pub(super) fn summary(trace: &Trace) -> TraceSummary<'_> {
    let ids: HashSet<SpanId> = trace.spans.iter().map(|span| span.span_id).collect();
    let mut services: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut root: Option<&Span> = None;
    let (mut errors, mut orphans) = (0, 0);
    let (mut start, mut end) = (i64::MAX, i64::MIN);
    for span in &trace.spans {
        let error = usize::from(span.status_code == SpanStatus::Error);
        let counts = services.entry(&span.service_name).or_default();
        counts.0 += 1;
        counts.1 += error;
        errors += error;
        start = start.min(span.start_unix_nano);
        end = end.max(span.start_unix_nano.saturating_add(span.duration_ns.max(0)));
        match span.parent_span_id {
            None => {
                let earlier = |root: &Span| {
                    (span.start_unix_nano, span.span_id) < (root.start_unix_nano, root.span_id)
                };
                if root.is_none_or(earlier) {
                    root = Some(span);
                }
            }
            Some(parent) if !ids.contains(&parent) => orphans += 1,
            Some(_) => {}
        }
    }
    TraceSummary {
        trace_id: Text(trace.trace_id),
        root_service_name: root.map_or("", |span| &span.service_name),
        root_operation_name: root.map_or("", |span| &span.name),
        min_start_time_unix_nano: unix_nano(start),
        max_end_time_unix_nano: unix_nano(end),
        span_count: trace.spans.len(),
        error_span_count: errors,
        orphan_span_count: orphans,
        services: services
            .into_iter()
            .map(|(name, (span_count, error_span_count))| ServiceSummary {
                name,
                span_count,
                error_span_count,
            })
            .collect(),
    }
}

#[derive(Serialize)]
struct Summaries<'a> {
    summaries: Vec<TraceSummary<'a>>,
}

/// The summaries of the traces a search finds, the most recent first: `{"summaries":[…]}`, with
/// `[]` (and 200) when it finds none.
async fn trace_summaries(
    State(state): State<Arc<AppState>>,
    params: Params,
) -> Result<Response, V3Error> {
    let query = search(&params, &state.search)?;
    let traces = search_traces(state.store.as_ref(), &query).await?;
    reply(&Summaries {
        summaries: traces.iter().map(summary).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ui_trace::tests::{bare_span, span_id, trace_id, TRACE};
    use crate::model::SpanKind;

    const SECOND: i64 = 1_000_000_000;
    /// 2023-11-14T22:13:20Z.
    const T0: i64 = 1_700_000_000 * SECOND;

    fn params(query: &str) -> Params {
        Params::from_uri(&format!("/x?{query}").parse().expect("uri")).expect("query")
    }

    fn query(text: &str) -> TraceQuery {
        search(&params(text), &SearchSettings::default()).expect("valid")
    }

    fn search_error(text: &str) -> String {
        let error = search(&params(text), &SearchSettings::default()).expect_err("rejected");
        String::from_utf8(
            error_body(error.status(), &error)
                .expect("encodes")
                .to_vec(),
        )
        .expect("UTF-8")
    }

    const WINDOW: &str =
        "query.startTimeMin=2023-11-14T22:13:20Z&query.startTimeMax=2023-11-14T23:13:20Z";

    /// What the v1 API's search parameters ask for.
    fn v1_query(text: &str) -> TraceQuery {
        match params::search(&params(text), 0, &SearchSettings::default()).expect("valid") {
            params::Search::Query(query) => query,
            other => panic!("expected a query, got {other:?}"),
        }
    }

    #[test]
    fn search_parameters_go_by_either_name() {
        let attributes = "%7B%22http.method%22%3A%22GET%22%2C%22error%22%3A%22true%22%7D";
        let expected = v1_query(&format!(
            "service=checkout&operation=GET%20%2Fcart&start={}&end={}&minDuration=1ms\
             &maxDuration=1.5s&limit=20&tags={attributes}",
            T0 / 1000,
            (T0 + 3600 * SECOND) / 1000
        ));
        assert_eq!(expected.tags.len(), 2);
        assert_eq!(
            query(&format!(
                "query.serviceName=checkout&query.operationName=GET%20%2Fcart&{WINDOW}\
                 &query.durationMin=1ms&query.durationMax=1.5s&query.searchDepth=20\
                 &query.rawTraces=true&query.attributes={attributes}"
            )),
            expected
        );
        assert_eq!(
            query(&format!(
                "query.service_name=checkout&query.operation_name=GET%20%2Fcart\
                 &query.start_time_min=2023-11-14T22:13:20Z&query.start_time_max=2023-11-14T23:13:20Z\
                 &query.duration_min=1ms&query.duration_max=1.5s&query.search_depth=20\
                 &query.raw_traces=1&query.attributes={attributes}"
            )),
            expected
        );
        // Defaults: any service, the default depth, no tags.
        let defaults = query(WINDOW);
        assert_eq!(
            defaults,
            v1_query(&format!(
                "start={}&end={}",
                T0 / 1000,
                (T0 + 3600 * SECOND) / 1000
            ))
        );
        // The oldest alias of the depth, and the canonical name first when both are given.
        assert_eq!(query(&format!("{WINDOW}&query.num_traces=7")).limit, 7);
        assert_eq!(
            query(&format!(
                "{WINDOW}&query.service_name=old&query.serviceName=new&query.search_depth=3&query.searchDepth=4"
            )),
            TraceQuery {
                service: Some("new".into()),
                limit: 4,
                ..defaults
            }
        );
    }

    #[test]
    fn bad_search_parameters_are_named_as_given() {
        let error = |code: u16, message: &str| {
            format!(
                r#"{{"error":{{"httpCode":{code},"message":{}}}}}"#,
                serde_json::to_string(message).expect("text")
            )
        };
        let required = error(
            400,
            "query.startTimeMin and query.startTimeMax are required",
        );
        assert_eq!(search_error(""), required);
        assert_eq!(
            search_error("query.startTimeMin=2023-11-14T22:13:20Z"),
            required
        );
        assert_eq!(
            search_error("query.start_time_min=yesterday&query.startTimeMax=2023-11-14T22:13:20Z"),
            error(400, "malformed parameter query.start_time_min: \"yesterday\" is not an RFC 3339 time such as 2006-01-02T15:04:05.999999999Z07:00 (within the years 1678 to 2261)")
        );
        assert_eq!(
            search_error(
                "query.startTimeMin=2023-11-14T22:13:20Z&query.startTimeMax=2023-11-14T22:13:20Z"
            ),
            error(400, "query.startTimeMin must be before query.startTimeMax")
        );
        for (extra, message) in [
            ("query.duration_min=1x", "malformed parameter query.duration_min: invalid duration \"1x\" (use a Go duration such as \"10s\", \"1m30s\", \"500ms\")"),
            ("query.durationMin=2s&query.durationMax=1s", "'query.durationMax' must not be shorter than 'query.durationMin'"),
            ("query.searchDepth=-1", "malformed parameter query.searchDepth: \"-1\" is not a number of traces"),
            ("query.num_traces=many", "malformed parameter query.num_traces: \"many\" is not a number of traces"),
            ("query.raw_traces=yes", "malformed parameter query.raw_traces: \"yes\" is not a boolean (true or false)"),
        ] {
            assert_eq!(search_error(&format!("{WINDOW}&{extra}")), error(400, message), "{extra}");
        }
        let bad_attributes = search_error(&format!("{WINDOW}&query.attributes=%7B%22a%22%3A1%7D"));
        assert!(
            bad_attributes.starts_with(r#"{"error":{"httpCode":400,"message":"malformed parameter query.attributes: \"{\\\"a\\\":1}\" is not a JSON object of string values"#),
            "{bad_attributes}"
        );
    }

    #[test]
    fn summaries_count_as_jaeger_counts() {
        let span = |id: &str, start: i64, service: &str, parent: Option<&str>| Span {
            service_name: service.into(),
            parent_span_id: parent.map(span_id),
            duration_ns: 10,
            name: format!("op{id}"),
            ..bare_span(id, start)
        };
        let trace = Trace {
            trace_id: trace_id(TRACE),
            spans: vec![
                Span {
                    status_code: SpanStatus::Error,
                    ..span("0000000000000003", 300, "cart", Some("0000000000000001"))
                },
                // A later root, and an orphan (its parent is not stored).
                span("0000000000000002", 200, "checkout", None),
                span("0000000000000001", 100, "checkout", None),
                Span {
                    status_code: SpanStatus::Error,
                    kind: SpanKind::Client,
                    duration_ns: 1000,
                    ..span("0000000000000004", 150, "cart", Some("00000000000000ff"))
                },
            ],
        };
        assert_eq!(
            serde_json::to_value(summary(&trace)).expect("encodes"),
            serde_json::json!({
                "traceId": TRACE,
                "rootServiceName": "checkout",
                "rootOperationName": "op0000000000000001",
                "minStartTimeUnixNano": "100",
                "maxEndTimeUnixNano": "1150",
                "spanCount": 4,
                "errorSpanCount": 2,
                "orphanSpanCount": 1,
                "services": [
                    {"name": "cart", "spanCount": 2, "errorSpanCount": 2},
                    {"name": "checkout", "spanCount": 2, "errorSpanCount": 0},
                ],
            })
        );
        // Without a span that has no parent, there is no root.
        let orphans = Trace {
            trace_id: trace_id(TRACE),
            spans: vec![span(
                "0000000000000005",
                100,
                "cart",
                Some("00000000000000ff"),
            )],
        };
        let summary = summary(&orphans);
        assert_eq!(
            (
                summary.root_service_name,
                summary.root_operation_name,
                summary.orphan_span_count
            ),
            ("", "", 1)
        );
    }
}
