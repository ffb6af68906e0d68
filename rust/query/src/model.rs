//! Traces as the query binary reads them from either backend, before any API shapes them.
//!
//! Times are nanoseconds since the Unix epoch. Attribute values keep the OTLP types where the
//! backend keeps them (PostgreSQL's jsonb does); ClickHouse stores every value as its string form,
//! so its attributes are all [`Value::Str`].

use std::fmt;

/// A 16-byte trace id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub [u8; 8]);

/// Why an id given as text is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a {digits}-digit hex id")]
pub struct BadId {
    pub text: String,
    pub digits: usize,
}

fn parse_hex<const N: usize>(text: &str) -> Result<[u8; N], BadId> {
    let bad = || BadId {
        text: text.to_owned(),
        digits: N * 2,
    };
    // Shorter ids are left-padded with zeros, as Jaeger prints a trace id whose high half is zero.
    if text.is_empty() || text.len() > N * 2 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let padded = format!("{text:0>width$}", width = N * 2);
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&padded[i * 2..i * 2 + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

impl TraceId {
    pub fn parse(text: &str) -> Result<Self, BadId> {
        parse_hex(text).map(TraceId)
    }
}

impl SpanId {
    pub fn parse(text: &str) -> Result<Self, BadId> {
        parse_hex(text).map(SpanId)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<Attribute>),
    Empty,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    pub key: String,
    pub value: Value,
}

/// OTLP's span kinds, numbered as in OTLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanKind {
    Unspecified = 0,
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

impl SpanKind {
    pub fn from_otlp(number: i64) -> SpanKind {
        match number {
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }

    /// The contrib ClickHouse exporter's names (`Server`, ...).
    pub fn from_name(name: &str) -> SpanKind {
        match name {
            "Internal" => SpanKind::Internal,
            "Server" => SpanKind::Server,
            "Client" => SpanKind::Client,
            "Producer" => SpanKind::Producer,
            "Consumer" => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }

    /// Jaeger's `span.kind` tag value; none for an unspecified kind.
    pub fn jaeger(self) -> Option<&'static str> {
        match self {
            SpanKind::Unspecified => None,
            SpanKind::Internal => Some("internal"),
            SpanKind::Server => Some("server"),
            SpanKind::Client => Some("client"),
            SpanKind::Producer => Some("producer"),
            SpanKind::Consumer => Some("consumer"),
        }
    }

    /// Parses Jaeger's `spanKind` query parameter.
    pub fn from_jaeger(name: &str) -> Option<SpanKind> {
        [
            SpanKind::Internal,
            SpanKind::Server,
            SpanKind::Client,
            SpanKind::Producer,
            SpanKind::Consumer,
        ]
        .into_iter()
        .find(|kind| kind.jaeger() == Some(name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    Unset = 0,
    Ok = 1,
    Error = 2,
}

impl StatusCode {
    pub fn from_otlp(number: i64) -> StatusCode {
        match number {
            1 => StatusCode::Ok,
            2 => StatusCode::Error,
            _ => StatusCode::Unset,
        }
    }

    /// The contrib ClickHouse exporter's names.
    pub fn from_name(name: &str) -> StatusCode {
        match name {
            "Ok" => StatusCode::Ok,
            "Error" => StatusCode::Error,
            _ => StatusCode::Unset,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time_unix_nano: i64,
    pub name: String,
    pub attributes: Vec<Attribute>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub trace_state: String,
    pub attributes: Vec<Attribute>,
}

/// One stored span with its resource and scope.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub trace_state: String,
    pub flags: u32,
    pub name: String,
    pub kind: SpanKind,
    pub start_unix_nano: i64,
    pub duration_ns: i64,
    pub status_code: StatusCode,
    pub status_message: String,
    pub service_name: String,
    pub resource_attributes: Vec<Attribute>,
    pub scope_name: String,
    pub scope_version: String,
    pub attributes: Vec<Attribute>,
    pub events: Vec<Event>,
    pub links: Vec<Link>,
}

/// The spans of one trace that were found, in no particular order.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub trace_id: TraceId,
    pub spans: Vec<Span>,
}

/// An operation of a service: a span name with the kind it was seen with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Operation {
    pub name: String,
    /// Jaeger's name of the kind (`server`, ...), or `""` when unspecified.
    pub span_kind: String,
}

/// Calls from one service to another over a time range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyLink {
    pub parent: String,
    pub child: String,
    pub call_count: u64,
}

const HOUR_NS: i64 = 3600 * 1_000_000_000;

/// Where service statistics are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsSource {
    /// The spans: exact, over exactly the range asked for.
    Raw,
    /// The hourly span statistics the exporter keeps (PostgreSQL's `span_stats_1h`, ClickHouse's
    /// `otel_span_stats_1h`): one row per service, span name, kind and hour, however many spans,
    /// and kept longer than the spans; but only whole hours, and percentiles estimated.
    Hourly,
}

impl StatsSource {
    /// `raw` or `hourly`.
    pub fn name(self) -> &'static str {
        match self {
            StatsSource::Raw => "raw",
            StatsSource::Hourly => "hourly",
        }
    }
}

/// What service statistics are asked for: of the spans of one service, or of every service,
/// that started in [start, end) (nanoseconds since the epoch), read from `source`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsQuery {
    pub service: Option<String>,
    pub start_unix_nano: i64,
    pub end_unix_nano: i64,
    pub source: StatsSource,
}

impl StatsQuery {
    /// The window the statistics describe, [start, end). From raw spans, the range asked for.
    /// The hourly statistics count each span in the hour it started, and an hour only whole: every
    /// hour the range overlaps counts, so the window grows to the hours' edges (by less than an
    /// hour on each side); a range that starts and ends on whole hours is read as it
    /// is. Hours are UTC hours (ClickHouse: the hours of the server's time zone, the same unless
    /// its offset is not whole hours).
    pub fn covered(&self) -> (i64, i64) {
        let (start, end) = (self.start_unix_nano, self.end_unix_nano);
        match self.source {
            StatsSource::Raw => (start, end),
            StatsSource::Hourly => (
                start.div_euclid(HOUR_NS) * HOUR_NS,
                end.saturating_add(HOUR_NS - 1).div_euclid(HOUR_NS) * HOUR_NS,
            ),
        }
    }
}

/// The levels of [`ServiceStats`]' percentiles, in their order.
pub const STATS_QUANTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// What a service's spans over a window add up to.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceStats {
    pub service: String,
    pub spans: u64,
    /// Spans whose status is Error.
    pub errors: u64,
    /// `errors / spans`, 0 without spans.
    pub error_rate: f64,
    /// Percentiles of the spans' durations in nanoseconds (a span that ends before it starts
    /// counts as 0), none when the store has none to give.
    pub p50_ns: Option<f64>,
    pub p95_ns: Option<f64>,
    pub p99_ns: Option<f64>,
}

impl ServiceStats {
    /// The statistics of `spans` spans, `errors` of them failed, with the percentiles at
    /// [`STATS_QUANTILES`] in `quantiles` (missing ones are none).
    pub fn new(service: String, spans: u64, errors: u64, quantiles: &[Option<f64>]) -> Self {
        let quantile = |i: usize| quantiles.get(i).copied().flatten();
        ServiceStats {
            service,
            spans,
            errors,
            error_rate: if spans == 0 {
                0.0
            } else {
                errors as f64 / spans as f64
            },
            p50_ns: quantile(0),
            p95_ns: quantile(1),
            p99_ns: quantile(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_print_as_lower_case_hex() {
        let id = TraceId::parse("0AF7651916CD43DD8448EB211C80319C").expect("valid");
        assert_eq!(id.to_string(), "0af7651916cd43dd8448eb211c80319c");
        // Jaeger prints a trace id whose high half is zero in 16 digits.
        assert_eq!(
            TraceId::parse("8448eb211c80319c")
                .expect("valid")
                .to_string(),
            "00000000000000008448eb211c80319c"
        );
        assert_eq!(
            SpanId::parse("b7ad6b7169203331")
                .expect("valid")
                .to_string(),
            "b7ad6b7169203331"
        );
        for bad in ["", "xyz", "0af7651916cd43dd8448eb211c80319c00"] {
            assert!(TraceId::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            SpanId::parse("g").expect_err("not hex").to_string(),
            "\"g\" is not a 16-digit hex id"
        );
    }

    #[test]
    fn hourly_statistics_cover_every_hour_the_range_overlaps() {
        const HOUR: i64 = HOUR_NS;
        let query = |start, end, source| StatsQuery {
            service: None,
            start_unix_nano: start,
            end_unix_nano: end,
            source,
        };
        let t = 1_700_000_000 * 1_000_000_000 / HOUR * HOUR;
        for (start, end, covered) in [
            // Whole hours stay as they are.
            (t, t + 6 * HOUR, (t, t + 6 * HOUR)),
            // Partial hours at either edge count whole.
            (t + 1, t + 6 * HOUR + 1, (t, t + 7 * HOUR)),
            (t + HOUR - 1, t + HOUR, (t, t + HOUR)),
            (t - 1, t + 1, (t - HOUR, t + HOUR)),
            // Before 1970, and at the end of time.
            (-HOUR - 1, -1, (-2 * HOUR, 0)),
            (
                i64::MAX - 1,
                i64::MAX,
                (i64::MAX / HOUR * HOUR, i64::MAX / HOUR * HOUR),
            ),
        ] {
            assert_eq!(
                query(start, end, StatsSource::Hourly).covered(),
                covered,
                "{start}..{end}"
            );
            assert_eq!(query(start, end, StatsSource::Raw).covered(), (start, end));
        }
    }

    #[test]
    fn the_error_rate_is_of_the_spans_counted() {
        let stats = ServiceStats::new("a".into(), 8, 2, &[Some(1.0), None, Some(3.0)]);
        assert_eq!(stats.error_rate, 0.25);
        assert_eq!(
            (stats.p50_ns, stats.p95_ns, stats.p99_ns),
            (Some(1.0), None, Some(3.0))
        );
        let none = ServiceStats::new("b".into(), 0, 0, &[]);
        assert_eq!((none.error_rate, none.p99_ns), (0.0, None));
    }
}
