//! otelstore's own API, for clients that want neither Jaeger's shapes nor its parameters:
//!
//! * `POST /api/v1/traces` with a JSON body: a trace by id, or a trace search ([`traces`]);
//! * `GET /api/v1/services/stats?service=&start=&end=`: per service, over a window, the spans
//!   counted, the errors among them, the error rate and the p50/p95/p99 durations
//!   ([`service_stats`]).
//!
//! Times are RFC 3339 (`2023-11-14T22:13:20Z`, fractions to the nanosecond, any offset), as in
//! Jaeger's v3 API, rather than Unix milliseconds: one format in the query string and in JSON, that
//! says its time zone, reads as a time, and carries nanoseconds; the answers give them in UTC.
//! Durations are Go durations (`250ms`, `1.5s`, `1h30m`). Errors are answered as v3 answers them:
//! `{"error":{"httpCode":400,"message":"malformed parameter start: …"}}`, 503 when the database is
//! unavailable. Answers are cached like every other (config `cache`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use serde_json::Value as Json;

use super::jaeger::now_unix_nano;
use super::otlp_json::{Text, TracesData};
use super::params::{self, bad, Params, SearchNames};
use super::time::format_rfc3339;
use super::v3::{reply, V3Error};
use super::{search_traces, trace_by_id, ApiError, AppState};
use crate::config::{SearchSettings, StatsSettings};
use crate::model::{ServiceStats, StatsQuery, StatsSource, Trace, TraceId};
use crate::store::TraceQuery;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/traces", post(traces))
        .route("/api/v1/services/stats", get(service_stats))
}

/// The fields of `POST /api/v1/traces`' body.
const TRACES_FIELDS: [&str; 7] = [
    "trace_id",
    "service_name",
    "start",
    "end",
    "min_duration",
    "max_duration",
    "limit",
];

/// What a search reads under which field.
const TRACES_SEARCH: SearchNames = SearchNames {
    service: &["service_name"],
    operation: &[],
    duration_min: &["min_duration"],
    duration_max: &["max_duration"],
    limit: &["limit"],
};

/// The fields of a JSON object as parameters of the same names, their values as text: a string
/// as it is, a number as written; `null`, like `""`, is left out. An empty body is `{}`.
fn body_params(body: &[u8]) -> Result<Params, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Params::default());
    }
    let object: serde_json::Map<String, Json> = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not a JSON object: {e}")))?;
    let mut pairs = Vec::with_capacity(object.len());
    for (name, value) in object {
        let Some(param) = TRACES_FIELDS.into_iter().find(|field| *field == name) else {
            return Err(ApiError::BadRequest(format!(
                "unknown field {name:?} in the body; the fields are {}",
                TRACES_FIELDS.join(", ")
            )));
        };
        let text = match value {
            Json::Null => continue,
            Json::String(text) => text,
            Json::Number(number) => number.to_string(),
            other => return Err(bad(param, format!("{other} is not a string or a number"))),
        };
        pairs.push((name, text));
    }
    Ok(Params::from(pairs))
}

/// What `POST /api/v1/traces` asks for.
#[derive(Debug, Clone, PartialEq)]
enum TracesRequest {
    /// A trace, looked for first within the window, if any.
    Id(TraceId, Option<(i64, i64)>),
    Search(TraceQuery),
}

/// A trace by `trace_id` (with `start` and `end` only hints), or else a search of traces with a
/// span of `service_name` (any when absent) that lasted from `min_duration` to `max_duration`
/// and started within [`start`, `end`] (without `end`, now; without `start`, the configured
/// `search.default_lookback` before the end), at most `limit` (default 100, at most
/// `search.max_limit`), the most recent first.
fn traces_request(
    params: &Params,
    now_unix_nano: i64,
    settings: &SearchSettings,
) -> Result<TracesRequest, ApiError> {
    let start = params::time(params, &["start"])?;
    let end = params::time(params, &["end"])?;
    if let Some(id) = params.get("trace_id") {
        let id = params::trace_id("trace_id", id)?;
        let searched: Vec<&str> = ["service_name", "min_duration", "max_duration", "limit"]
            .into_iter()
            .filter(|name| params.get(name).is_some())
            .collect();
        if !searched.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "a trace_id is looked up, not searched for: leave out {}",
                searched.join(", ")
            )));
        }
        return Ok(TracesRequest::Id(id, params::lookup_window(start, end)));
    }
    let end = end.unwrap_or(now_unix_nano);
    let start = start.unwrap_or_else(|| {
        end.saturating_sub(params::nanos(settings.default_lookback.0).unwrap_or(i64::MAX))
    });
    if start > end {
        return Err(ApiError::BadRequest(format!(
            "'start' ({}) must not be after 'end' ({})",
            format_rfc3339(start),
            format_rfc3339(end)
        )));
    }
    params::trace_query(params, &TRACES_SEARCH, Vec::new(), (start, end), settings)
        .map(TracesRequest::Search)
}

/// A trace: its id, and its spans as OTLP JSON's `TracesData`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TraceJson<'a> {
    trace_id: Text<TraceId>,
    #[serde(flatten)]
    otlp: TracesData<'a>,
}

#[derive(Debug, Serialize)]
struct TracesJson<'a> {
    traces: Vec<TraceJson<'a>>,
}

/// `POST /api/v1/traces` with a JSON object (an empty body is `{}`):
///
/// ```json
/// {"trace_id": "0af7651916cd43dd8448eb211c80319c",
///  "service_name": "checkout", "start": "2023-11-14T21:13:20Z", "end": "2023-11-14T22:13:20Z",
///  "min_duration": "10ms", "max_duration": "2s", "limit": 20}
/// ```
///
/// Every field may be left out (or `null`); an unknown field is a 400. With `trace_id`, that
/// trace (`start` and `end` only narrow where it is looked for first; the search fields are a
/// 400), 404 when no span of it is stored; without, a search ([`traces_request`]), `[]` when it
/// finds nothing. The answer:
///
/// ```json
/// {"traces": [{"traceId": "0af7651916cd43dd8448eb211c80319c", "resourceSpans": [...]}]}
/// ```
///
/// Each trace is its id and its spans as OTLP JSON `TracesData` (`resourceSpans`, as v3's
/// `result` and otlp_json.rs write them): spans grouped by resource (`service.name` among its
/// attributes) and scope; ids in hex; times (`startTimeUnixNano`, `endTimeUnixNano`) and 64-bit
/// integers as decimal strings; kind and status code as OTLP's numbers; attributes typed
/// (`{"key": "http.status_code", "value": {"intValue": "500"}}`). That is OTLP's own shape,
/// which any OTLP library decodes, loses nothing the store holds, and is written by the encoder
/// v3 already has; the traces are kept apart and in order, the most recent first.
async fn traces(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, V3Error> {
    let params = body_params(&body)?;
    let store = state.store.as_ref();
    let found: Vec<Trace> = match traces_request(&params, now_unix_nano(), &state.search)? {
        TracesRequest::Id(id, window) => vec![trace_by_id(store, id, window)
            .await?
            .ok_or(ApiError::TraceNotFound)?],
        TracesRequest::Search(query) => search_traces(store, &query).await?,
    };
    reply(&TracesJson {
        traces: found
            .iter()
            .map(|trace| TraceJson {
                trace_id: Text(trace.trace_id),
                otlp: TracesData::new(std::slice::from_ref(trace)),
            })
            .collect(),
    })
}

/// The window of statistics asked for without `start`: the hour before `end`.
const DEFAULT_STATS_WINDOW_NS: i64 = 3600 * 1_000_000_000;

/// Where statistics over a range this long (ns) are read from: the hourly statistics from
/// `stats.hourly_from` on, the spans below it.
fn stats_source(range_ns: i64, settings: &StatsSettings) -> StatsSource {
    let hourly_from = params::nanos(settings.hourly_from.0);
    if hourly_from.is_some_and(|hourly_from| range_ns >= hourly_from) {
        StatsSource::Hourly
    } else {
        StatsSource::Raw
    }
}

/// `service` (every service when absent), and the window [`start`, `end`): without `end` it ends
/// now, without `start` it starts an hour before its end.
fn stats_query(
    params: &Params,
    now_unix_nano: i64,
    settings: &StatsSettings,
) -> Result<StatsQuery, ApiError> {
    let end = params::time(params, &["end"])?.unwrap_or(now_unix_nano);
    let start = params::time(params, &["start"])?
        .unwrap_or_else(|| end.saturating_sub(DEFAULT_STATS_WINDOW_NS));
    if start >= end {
        return Err(ApiError::BadRequest(format!(
            "'start' ({}) must be before 'end' ({})",
            format_rfc3339(start),
            format_rfc3339(end)
        )));
    }
    Ok(StatsQuery {
        service: params.get("service").map(str::to_owned),
        start_unix_nano: start,
        end_unix_nano: end,
        source: stats_source(end - start, settings),
    })
}

/// One service's statistics; durations in milliseconds.
#[derive(Debug, Serialize)]
struct ServiceStatsJson<'a> {
    service: &'a str,
    spans: u64,
    errors: u64,
    error_rate: f64,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
}

impl<'a> From<&'a ServiceStats> for ServiceStatsJson<'a> {
    fn from(stats: &'a ServiceStats) -> Self {
        let ms = |ns: Option<f64>| ns.map(|ns| ns / 1e6);
        ServiceStatsJson {
            service: &stats.service,
            spans: stats.spans,
            errors: stats.errors,
            error_rate: stats.error_rate,
            p50_ms: ms(stats.p50_ns),
            p95_ms: ms(stats.p95_ns),
            p99_ms: ms(stats.p99_ns),
        }
    }
}

#[derive(Debug, Serialize)]
struct StatsJson<'a> {
    services: Vec<ServiceStatsJson<'a>>,
    source: &'static str,
    start: String,
    end: String,
}

/// `GET /api/v1/services/stats[?service=S][&start=T][&end=T]`:
///
/// ```json
/// {"services": [{"service": "checkout", "spans": 1200, "errors": 12, "error_rate": 0.01,
///                "p50_ms": 4.2, "p95_ms": 31.5, "p99_ms": 88.0}],
///  "source": "raw", "start": "2023-11-14T21:13:20Z", "end": "2023-11-14T22:13:20Z"}
/// ```
///
/// Services are sorted by name; only those with spans in the window are listed (`[]` when none).
/// The spans counted are those that started in [`start`, `end`). `error_rate` is `errors /
/// spans`; an error is a span whose status is Error. Percentiles are of the spans' durations (a
/// span that ends before it starts counts as 0 ms).
///
/// `source` says where the numbers come from, chosen by the window's length:
/// * `raw` below `stats.hourly_from` (default 6h): the spans themselves, exact, over exactly
///   the window asked for (percentiles interpolated between the two nearest durations);
/// * `hourly` from `stats.hourly_from` on: the hourly statistics the exporter keeps, which read
///   one row per service, span name, kind and hour however many spans there are, and outlive
///   the spans. They count whole hours only: an hour the window only partly covers counts
///   whole, so the window grows to the hours around it, and `start` and `end` in the answer say
///   the window the numbers are of. Counts are exact; percentiles estimated (PostgreSQL: within
///   10 %; ClickHouse: t-digest).
async fn service_stats(
    State(state): State<Arc<AppState>>,
    params: Params,
) -> Result<Response, V3Error> {
    let query = stats_query(&params, now_unix_nano(), &state.stats)?;
    let stats = state.store.service_stats(&query).await?;
    let (start, end) = query.covered();
    reply(&StatsJson {
        services: stats.iter().map(ServiceStatsJson::from).collect(),
        source: query.source.name(),
        start: format_rfc3339(start),
        end: format_rfc3339(end),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use otelstore::config::GoDuration;

    use super::*;

    const SECOND: i64 = 1_000_000_000;
    const HOUR: i64 = 3600 * SECOND;
    /// 2023-11-14T22:13:20Z.
    const NOW: i64 = 1_700_000_000 * SECOND;

    fn params(query: &str) -> Params {
        Params::from_uri(&format!("/x?{query}").parse().expect("uri")).expect("query")
    }

    fn settings(hourly_from: Duration) -> StatsSettings {
        StatsSettings {
            hourly_from: GoDuration(hourly_from),
        }
    }

    fn stats(query: &str) -> Result<StatsQuery, String> {
        stats_query(&params(query), NOW, &StatsSettings::default()).map_err(|e| e.to_string())
    }

    fn traces(body: &str) -> Result<TracesRequest, String> {
        body_params(body.as_bytes())
            .and_then(|params| traces_request(&params, NOW, &SearchSettings::default()))
            .map_err(|e| e.to_string())
    }

    fn search(body: &str) -> TraceQuery {
        match traces(body).expect("valid") {
            TracesRequest::Search(query) => query,
            other => panic!("expected a search, got {other:?}"),
        }
    }

    #[test]
    fn a_body_with_a_trace_id_asks_for_that_trace() {
        let id = TraceId::parse("0af7651916cd43dd8448eb211c80319c").expect("id");
        assert_eq!(
            traces(r#"{"trace_id": "0af7651916cd43dd8448eb211c80319c"}"#),
            Ok(TracesRequest::Id(id, None))
        );
        assert_eq!(
            traces(
                r#"{"trace_id": "0AF7651916CD43DD8448EB211C80319C", "start": "2023-11-14T22:13:20Z",
                    "end": null, "service_name": ""}"#
            ),
            Ok(TracesRequest::Id(
                id,
                params::lookup_window(Some(NOW), None)
            ))
        );
        assert_eq!(
            traces(r#"{"trace_id": "xyz"}"#),
            Err("unable to parse param 'trace_id': \"xyz\" is not a 32-digit hex id".into())
        );
        assert_eq!(
            traces(r#"{"trace_id": "ff", "limit": 3, "service_name": "a"}"#),
            Err("a trace_id is looked up, not searched for: leave out service_name, limit".into())
        );
    }

    #[test]
    fn a_body_without_a_trace_id_is_a_search() {
        let defaults = TraceQuery {
            service: None,
            operation: None,
            tags: vec![],
            start_min_unix_nano: NOW - 48 * HOUR,
            start_max_unix_nano: NOW,
            duration_min_ns: None,
            duration_max_ns: None,
            limit: 100,
        };
        assert_eq!(search(""), defaults);
        assert_eq!(search(" {} "), defaults);
        assert_eq!(
            search(
                r#"{"service_name": "checkout", "start": "2023-11-14T21:13:20Z",
                    "end": "2023-11-14T23:13:20+01:00", "min_duration": "1.5ms",
                    "max_duration": "2s", "limit": 20}"#
            ),
            TraceQuery {
                service: Some("checkout".into()),
                start_min_unix_nano: NOW - HOUR,
                duration_min_ns: Some(1_500_000),
                duration_max_ns: Some(2 * SECOND),
                limit: 20,
                ..defaults.clone()
            }
        );
        // Only an end: the default lookback before it. A limit as text, or above the maximum.
        assert_eq!(
            search(r#"{"end": "2023-11-13T22:13:20Z", "limit": "5000"}"#),
            TraceQuery {
                start_min_unix_nano: NOW - 72 * HOUR,
                start_max_unix_nano: NOW - 24 * HOUR,
                limit: 1000,
                ..defaults
            }
        );
    }

    #[test]
    fn bad_bodies_name_the_field() {
        let not_rfc3339 = "is not an RFC 3339 time such as 2006-01-02T15:04:05.999999999Z07:00 (within the years 1678 to 2261)";
        for (body, message) in [
            ("[1]".to_owned(), "the body is not a JSON object: invalid type: sequence, expected a map at line 1 column 0".to_owned()),
            ("{\"limit\": 1".to_owned(), "the body is not a JSON object: EOF while parsing an object at line 1 column 11".to_owned()),
            (r#"{"service": "a"}"#.to_owned(), "unknown field \"service\" in the body; the fields are trace_id, service_name, start, end, min_duration, max_duration, limit".to_owned()),
            (r#"{"limit": true}"#.to_owned(), "unable to parse param 'limit': true is not a string or a number".to_owned()),
            (r#"{"service_name": ["a"]}"#.to_owned(), "unable to parse param 'service_name': [\"a\"] is not a string or a number".to_owned()),
            (r#"{"limit": -1}"#.to_owned(), "unable to parse param 'limit': \"-1\" is not a number of traces".to_owned()),
            (r#"{"limit": 2.5}"#.to_owned(), "unable to parse param 'limit': \"2.5\" is not a number of traces".to_owned()),
            (r#"{"start": 1700000000000}"#.to_owned(), format!("unable to parse param 'start': \"1700000000000\" {not_rfc3339}")),
            (r#"{"min_duration": "fast"}"#.to_owned(), "unable to parse param 'min_duration': invalid duration \"fast\" (use a Go duration such as \"10s\", \"1m30s\", \"500ms\")".to_owned()),
            (r#"{"min_duration": "2s", "max_duration": "1s"}"#.to_owned(), "'max_duration' must not be shorter than 'min_duration'".to_owned()),
            (r#"{"start": "2023-11-14T22:13:21Z"}"#.to_owned(), "'start' (2023-11-14T22:13:21Z) must not be after 'end' (2023-11-14T22:13:20Z)".to_owned()),
        ] {
            assert_eq!(traces(&body).expect_err("bad"), message, "{body}");
        }
    }

    #[test]
    fn the_table_is_chosen_by_the_length_of_the_range() {
        let six_hours = settings(Duration::from_secs(6 * 3600));
        assert_eq!(stats_source(6 * HOUR - 1, &six_hours), StatsSource::Raw);
        assert_eq!(stats_source(6 * HOUR, &six_hours), StatsSource::Hourly);
        assert_eq!(
            stats_source(400 * 24 * HOUR, &six_hours),
            StatsSource::Hourly
        );
        assert_eq!(
            stats_source(1, &settings(Duration::ZERO)),
            StatsSource::Hourly
        );
        assert_eq!(
            stats_source(i64::MAX, &settings(Duration::MAX)),
            StatsSource::Raw,
            "beyond any range (config.rs refuses it)"
        );
    }

    #[test]
    fn the_window_is_the_last_hour_unless_given() {
        let window = |query: &str| {
            let stats = stats(query).expect("valid");
            (
                stats.service,
                stats.start_unix_nano,
                stats.end_unix_nano,
                stats.source,
            )
        };
        assert_eq!(window(""), (None, NOW - HOUR, NOW, StatsSource::Raw));
        assert_eq!(
            window("service=checkout&start=2023-11-14T20:00:00Z"),
            (
                Some("checkout".into()),
                NOW - 2 * HOUR - 13 * 60 * SECOND - 20 * SECOND,
                NOW,
                StatsSource::Raw
            )
        );
        assert_eq!(
            window("service=&end=2023-11-14T23:13:20%2B01:00"),
            (None, NOW - HOUR, NOW, StatsSource::Raw)
        );
        assert_eq!(
            window("start=2023-11-13T22:13:20Z&end=2023-11-14T22:13:20.5Z"),
            (None, NOW - 24 * HOUR, NOW + SECOND / 2, StatsSource::Hourly)
        );
        assert_eq!(
            window("start=2023-11-14T16:13:20Z").3,
            StatsSource::Hourly,
            "six hours"
        );
    }

    #[test]
    fn bad_stats_parameters_are_named() {
        for (query, message) in [
            ("start=yesterday", "unable to parse param 'start': \"yesterday\" is not an RFC 3339 time such as 2006-01-02T15:04:05.999999999Z07:00 (within the years 1678 to 2261)"),
            ("end=1700000000000", "unable to parse param 'end': \"1700000000000\" is not an RFC 3339 time such as 2006-01-02T15:04:05.999999999Z07:00 (within the years 1678 to 2261)"),
            ("start=2023-11-14T22:13:20Z", "'start' (2023-11-14T22:13:20Z) must be before 'end' (2023-11-14T22:13:20Z)"),
            ("start=2023-11-14T22:13:21Z&end=2023-11-14T22:13:20.5Z", "'start' (2023-11-14T22:13:21Z) must be before 'end' (2023-11-14T22:13:20.5Z)"),
        ] {
            assert_eq!(stats(query).expect_err("bad"), message, "{query}");
        }
    }
}
