//! The service statistics test both stores run (included with `#[path]` by postgres.rs and
//! clickhouse.rs): spans over three whole hours, sent through the real exporter by the caller, then
//! read back from the spans and from the hourly statistics and compared with what was sent.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use otelstore_query::model::{ServiceStats, StatsQuery, StatsSource, STATS_QUANTILES};

const MS: i64 = 1_000_000;
const MINUTE: i64 = 60_000 * MS;
const HOUR: i64 = 60 * MINUTE;

/// A span as sent: its service, start and duration (ns; negative: it ends before it starts).
#[derive(Debug, Clone)]
pub struct Sent {
    pub service: &'static str,
    pub start: i64,
    pub duration: i64,
    pub error: bool,
}

/// The start of the test's first hour: a whole hour seven hours ago, so that its three hours end
/// before anything else the tests send (three hours ago and later, or a day before).
pub fn first_hour() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as i64;
    (now / HOUR - 7) * HOUR
}

/// The spans, from `hour` on for three hours:
/// * `stats-front`: 300 spans 36 s apart, lasting 1 to 300 ms (each once, shuffled), every
///   tenth failed;
/// * `stats-db`: 40 spans 4 min apart from half an hour in, lasting 50 µs × 1.2^i, every eighth
///   failed, and one more that ends 5 ms before it starts (counted as lasting 0).
pub fn spans(hour: i64) -> Vec<Sent> {
    let front = (0..300).map(|i| Sent {
        service: "stats-front",
        start: hour + i * 36_000 * MS,
        duration: (1 + (i * 7) % 300) * MS,
        error: i % 10 == 3,
    });
    let db = (0..40).map(|i| Sent {
        service: "stats-db",
        start: hour + 30 * MINUTE + i * 4 * MINUTE,
        duration: (50_000.0 * 1.2_f64.powi(i as i32)) as i64,
        error: i % 8 == 0,
    });
    let backwards = Sent {
        service: "stats-db",
        start: hour + 35 * MINUTE,
        duration: -5 * MS,
        error: false,
    };
    front.chain(db).chain([backwards]).collect()
}

/// One export request of the spans, a resource per service, each span a trace of its own.
pub fn request(spans: &[Sent]) -> ExportTraceServiceRequest {
    let mut services: Vec<&str> = spans.iter().map(|s| s.service).collect();
    services.sort_unstable();
    services.dedup();
    let resource_spans = services
        .into_iter()
        .map(|service| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: spans
                    .iter()
                    .enumerate()
                    .filter(|(_, sent)| sent.service == service)
                    .map(|(n, sent)| otlp_span(n as u32, sent))
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

fn otlp_span(n: u32, sent: &Sent) -> Span {
    let mut trace_id = vec![0x57; 16];
    trace_id[12..].copy_from_slice(&n.to_be_bytes());
    Span {
        trace_id,
        span_id: [[0x57; 4], n.to_be_bytes()].concat(),
        name: "work".into(),
        kind: 2,
        start_time_unix_nano: sent.start as u64,
        end_time_unix_nano: (sent.start + sent.duration) as u64,
        status: sent.error.then(|| Status {
            code: 2,
            message: String::new(),
        }),
        ..Default::default()
    }
}

/// What a service's statistics must say.
#[derive(Debug)]
struct Expected {
    service: &'static str,
    errors: u64,
    /// Sorted, a negative one as 0.
    durations: Vec<i64>,
}

impl Expected {
    /// The exact percentile as PostgreSQL's `percentile_cont` and ClickHouse's
    /// `quantileExactInclusive` compute it: interpolated at rank q·(n−1) from 0.
    fn interpolated(&self, q: f64) -> f64 {
        let at = q * (self.durations.len() - 1) as f64;
        let (below, above) = (at.floor() as usize, at.ceil() as usize);
        let (low, high) = (self.durations[below] as f64, self.durations[above] as f64);
        low + (high - low) * (at - below as f64)
    }

    /// The duration at rank `rank` from 1, within the list.
    fn at_rank(&self, rank: f64) -> f64 {
        let index = (rank.max(1.0) as usize).min(self.durations.len()) - 1;
        self.durations[index] as f64
    }

    /// The duration at rank ⌈q·n⌉, the one `otelstore_duration_quantile` finds the bucket of.
    fn nearest_rank(&self, q: f64) -> f64 {
        self.at_rank((q * self.durations.len() as f64).ceil())
    }
}

/// The statistics the spans that started in [start, end) add up to, per service, sorted.
fn expected(sent: &[Sent], service: Option<&str>, (start, end): (i64, i64)) -> Vec<Expected> {
    let mut out: Vec<Expected> = Vec::new();
    let mut wanted: Vec<&Sent> = sent
        .iter()
        .filter(|s| service.is_none_or(|name| name == s.service))
        .filter(|s| (start..end).contains(&s.start))
        .collect();
    wanted.sort_by_key(|s| s.service);
    for s in wanted {
        if out.last().is_none_or(|last| last.service != s.service) {
            out.push(Expected {
                service: s.service,
                errors: 0,
                durations: Vec::new(),
            });
        }
        let last = out.last_mut().expect("pushed");
        last.errors += u64::from(s.error);
        last.durations.push(s.duration.max(0));
    }
    for one in &mut out {
        one.durations.sort_unstable();
    }
    out
}

/// How the hourly statistics estimate percentiles, and so how close they must be.
#[derive(Debug, Clone, Copy)]
#[allow(dead_code)] // each store's test names its own
pub enum Estimate {
    /// PostgreSQL's duration buckets: within 10 % of the duration at rank ⌈q·n⌉.
    Buckets,
    /// ClickHouse's t-digest: its error is in rank, not in value (ClickHouse documents 1 %);
    /// within the durations 2 % of the spans on either side of the exact rank, give or take
    /// Float32's rounding.
    TDigest,
}

impl Estimate {
    fn close(self, expected: &Expected, q: f64, estimate: f64) -> bool {
        match self {
            Estimate::Buckets => {
                let truth = expected.nearest_rank(q);
                (estimate - truth).abs() <= 0.1 * truth
            }
            Estimate::TDigest => {
                let n = expected.durations.len() as f64;
                let low = expected.at_rank(((q - 0.02) * n).floor());
                let high = expected.at_rank(((q + 0.02) * n).ceil() + 1.0);
                (low * (1.0 - 1e-6)..=high * (1.0 + 1e-6)).contains(&estimate)
            }
        }
    }
}

/// Statistics as the store gives them, or the panic of its error.
pub type Read<'a> = &'a dyn Fn(&StatsQuery) -> Vec<ServiceStats>;

fn query(service: Option<&str>, (start, end): (i64, i64), source: StatsSource) -> StatsQuery {
    StatsQuery {
        service: service.map(str::to_owned),
        start_unix_nano: start,
        end_unix_nano: end,
        source,
    }
}

/// Counts are exact from either source; percentiles exact from the spans, and as close as
/// `estimate` allows from the hourly statistics.
fn check(read: Read, sent: &[Sent], query: &StatsQuery, estimate: Estimate) {
    let got = read(query);
    let expected = expected(sent, query.service.as_deref(), query.covered());
    let what = format!("{query:?}: {got:#?}");
    assert_eq!(
        got.iter().map(|s| s.service.as_str()).collect::<Vec<_>>(),
        expected.iter().map(|e| e.service).collect::<Vec<_>>(),
        "{what}"
    );
    for (got, expected) in got.iter().zip(&expected) {
        let spans = expected.durations.len() as u64;
        assert_eq!((got.spans, got.errors), (spans, expected.errors), "{what}");
        assert_eq!(got.error_rate, expected.errors as f64 / spans as f64);
        let percentiles = [got.p50_ns, got.p95_ns, got.p99_ns];
        for (q, value) in STATS_QUANTILES.into_iter().zip(percentiles) {
            let value = value.expect("a percentile");
            let close = match query.source {
                StatsSource::Raw => {
                    let exact = expected.interpolated(q);
                    (value - exact).abs() <= exact * 1e-12
                }
                StatsSource::Hourly => estimate.close(expected, q, value),
            };
            assert!(
                close,
                "{} p{}: {value} from {expected:?}",
                expected.service,
                q * 100.0
            );
        }
    }
}

/// The whole test, after the caller sent [`request`]`(&`[`spans`]`(hour))`.
pub fn service_statistics(read: Read, hour: i64, estimate: Estimate) {
    let sent = spans(hour);
    let three_hours = (hour, hour + 3 * HOUR);
    for source in [StatsSource::Raw, StatsSource::Hourly] {
        check(read, &sent, &query(None, three_hours, source), estimate);
        check(
            read,
            &sent,
            &query(Some("stats-db"), three_hours, source),
            estimate,
        );
        // Partial hours: exact from the spans, whole from the hourly statistics.
        let partial = (hour + 30 * MINUTE, hour + 90 * MINUTE);
        check(read, &sent, &query(None, partial, source), estimate);
        // No spans: no services.
        let before = (hour - 2 * HOUR, hour - HOUR);
        assert_eq!(read(&query(None, before, source)), []);
        assert_eq!(read(&query(Some("nobody"), three_hours, source)), []);
    }
    // Read whole, the partial range is its two hours.
    let partial = query(
        None,
        (hour + 30 * MINUTE, hour + 90 * MINUTE),
        StatsSource::Hourly,
    );
    let counts = |stats: Vec<ServiceStats>| {
        stats
            .into_iter()
            .map(|s| (s.service, s.spans, s.errors))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        counts(read(&partial)),
        counts(read(&query(
            None,
            (hour, hour + 2 * HOUR),
            StatsSource::Raw
        )))
    );
}
