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
}
