//! otelstore's own API, for clients that want neither Jaeger's shapes nor its parameters:
//!
//! * `GET /api/v1/services/stats?service=&start=&end=`: per service, over a window, the spans
//!   counted, the errors among them, the error rate and the p50/p95/p99 durations.
//!
//! Times are RFC 3339 (`2023-11-14T22:13:20Z`, fractions to the nanosecond, any offset), as in
//! Jaeger's v3 API; the answers give them in UTC. Errors are answered as v3 answers them:
//! `{"error":{"httpCode":400,"message":"malformed parameter start: …"}}`, 503 when the database is
//! unavailable. Answers are cached like every other (config `cache`).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::jaeger::now_unix_nano;
use super::params::{self, Params};
use super::time::format_rfc3339;
use super::v3::{reply, V3Error};
use super::{ApiError, AppState};
use crate::config::StatsSettings;
use crate::model::{ServiceStats, StatsQuery, StatsSource};

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/services/stats", get(service_stats))
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
