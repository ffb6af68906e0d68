//! Analyses of the stored traces: `/api/v1/analysis/n-plus-one` finds N+1 queries
//! ([`crate::analysis::n_plus_one`]) in the most recent traces of a window.
//!
//! `start` and `end` are RFC 3339 times (`2023-11-14T22:13:20Z`) or, given as digits only,
//! milliseconds since the epoch; `end` is now and `start` an hour before `end` when absent. Errors are
//! in Jaeger's v1 envelope, as the other `/api/` routes'.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::jaeger::now_unix_nano;
use super::params::{bad, Params};
use super::{json, search_traces, time, ApiError, AppState};
use crate::analysis::n_plus_one::{self, Finding, Thresholds};
use crate::config::AnalysisSettings;
use crate::store::TraceQuery;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/analysis/n-plus-one", get(n_plus_one))
}

const DEFAULT_WINDOW_NS: i64 = 3600 * 1_000_000_000;

/// `start` or `end`, in nanoseconds since the epoch.
fn time(params: &Params, param: &'static str) -> Result<Option<i64>, ApiError> {
    params
        .get(param)
        .map(|value| {
            if value.bytes().all(|b| b.is_ascii_digit()) {
                value
                    .parse::<i64>()
                    .ok()
                    .and_then(|millis| millis.checked_mul(1_000_000))
                    .ok_or_else(|| bad(param, format!("{value} is out of range")))
            } else {
                time::rfc3339(value).ok_or_else(|| {
                    bad(
                        param,
                        format!("{value:?} is neither an RFC 3339 time such as 2006-01-02T15:04:05Z nor milliseconds since the epoch"),
                    )
                })
            }
        })
        .transpose()
}

/// The service (any when absent) and the window [start, end] the parameters ask for.
fn scope(params: &Params, now_unix_nano: i64) -> Result<(Option<String>, i64, i64), ApiError> {
    let end = time(params, "end")?.unwrap_or(now_unix_nano);
    let start = time(params, "start")?.unwrap_or(end.saturating_sub(DEFAULT_WINDOW_NS));
    if start > end {
        return Err(ApiError::BadRequest(
            "'start' must not be after 'end'".to_owned(),
        ));
    }
    Ok((params.get("service").map(str::to_owned), start, end))
}

fn thresholds(settings: &AnalysisSettings) -> Thresholds {
    let n_plus_one = &settings.n_plus_one;
    Thresholds {
        min_repeats: n_plus_one.min_repeats,
        min_total_ns: i64::try_from(n_plus_one.min_total.0.as_nanos()).unwrap_or(i64::MAX),
    }
}

fn millis(nanos: i64) -> f64 {
    nanos as f64 / 1e6
}

#[derive(Serialize)]
struct Report {
    findings: Vec<FindingJson>,
    /// The traces read: the most recent of the window, at most `analysis.max_traces`.
    traces_examined: usize,
    thresholds: ThresholdsJson,
}

#[derive(Serialize)]
struct ThresholdsJson {
    min_repeats: usize,
    min_total_ms: f64,
}

#[derive(Serialize)]
struct FindingJson {
    service: String,
    /// `null` when the parent span is not stored.
    parent_operation: Option<String>,
    statement: String,
    /// The repeated calls, over every occurrence.
    count: usize,
    /// The parent spans that made them.
    occurrences: usize,
    total_ms: f64,
    traces: Vec<String>,
    example: ExampleJson,
}

/// The occurrence with the most time.
#[derive(Serialize)]
struct ExampleJson {
    trace_id: String,
    parent_span_id: String,
    count: usize,
    total_ms: f64,
}

impl From<Finding> for FindingJson {
    fn from(finding: Finding) -> Self {
        FindingJson {
            service: finding.service,
            parent_operation: finding.parent_operation,
            statement: finding.statement,
            count: finding.count,
            occurrences: finding.occurrences,
            total_ms: millis(finding.total_ns),
            traces: finding.traces.iter().map(ToString::to_string).collect(),
            example: ExampleJson {
                trace_id: finding.example.trace_id.to_string(),
                parent_span_id: finding.example.parent_span_id.to_string(),
                count: finding.example.count,
                total_ms: millis(finding.example.total_ns),
            },
        }
    }
}

/// `/api/v1/analysis/n-plus-one[?service=&start=&end=]`: the N+1 findings of the service's (or
/// every service's) most recent traces in the window, the worst first:
/// `{"findings":[{"service":…,"parent_operation":…,"statement":…,"count":…,"occurrences":…,
/// "total_ms":…,"traces":[…],"example":{"trace_id":…,"parent_span_id":…,"count":…,"total_ms":…}}],
/// "traces_examined":…,"thresholds":{"min_repeats":…,"min_total_ms":…}}`. With `service`, only that
/// service's database calls are findings.
async fn n_plus_one(
    State(state): State<Arc<AppState>>,
    params: Params,
) -> Result<Response, ApiError> {
    let (service, start, end) = scope(&params, now_unix_nano())?;
    let query = TraceQuery {
        service: service.clone(),
        operation: None,
        tags: Vec::new(),
        start_min_unix_nano: start,
        start_max_unix_nano: end,
        duration_min_ns: None,
        duration_max_ns: None,
        limit: state.analysis.max_traces,
    };
    let traces = search_traces(state.store.as_ref(), &query).await?;
    let thresholds = thresholds(&state.analysis);
    let findings = n_plus_one::find(&traces, &thresholds)
        .into_iter()
        .filter(|finding| service.as_ref().is_none_or(|name| *name == finding.service))
        .map(FindingJson::from)
        .collect();
    let report = Report {
        findings,
        traces_examined: traces.len(),
        thresholds: ThresholdsJson {
            min_repeats: thresholds.min_repeats,
            min_total_ms: millis(thresholds.min_total_ns),
        },
    };
    Ok(json(StatusCode::OK, serde_json::to_vec(&report)?.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000_000_000;

    fn params(query: &str) -> Params {
        Params::from_uri(&format!("/x?{query}").parse().expect("uri")).expect("query")
    }

    #[test]
    fn the_window_is_the_last_hour_unless_given() {
        assert_eq!(
            scope(&params(""), NOW).expect("valid"),
            (None, NOW - DEFAULT_WINDOW_NS, NOW)
        );
        assert_eq!(
            scope(&params("service=a&end=1700000000000"), NOW).expect("valid"),
            (Some("a".into()), NOW - DEFAULT_WINDOW_NS, NOW)
        );
        assert_eq!(
            scope(
                &params("start=2023-11-14T22:13:20Z&end=2023-11-14T23:13:20.5%2B01:00"),
                0
            )
            .expect("valid"),
            (None, NOW, NOW + 500_000_000)
        );
        assert_eq!(
            scope(&params("start=1699999999000&end=&service="), NOW).expect("valid"),
            (None, NOW - 1_000_000_000, NOW)
        );
    }

    #[test]
    fn bad_times_name_the_parameter() {
        for (query, expected) in [
            ("start=yesterday", "unable to parse param 'start': \"yesterday\" is neither an RFC 3339 time such as 2006-01-02T15:04:05Z nor milliseconds since the epoch"),
            ("end=-5", "unable to parse param 'end': \"-5\" is neither an RFC 3339 time such as 2006-01-02T15:04:05Z nor milliseconds since the epoch"),
            ("end=99999999999999999999", "unable to parse param 'end': 99999999999999999999 is out of range"),
            ("start=1700000000001&end=1700000000000", "'start' must not be after 'end'"),
        ] {
            assert_eq!(
                scope(&params(query), NOW).expect_err("bad").to_string(),
                expected,
                "{query}"
            );
        }
    }
}
