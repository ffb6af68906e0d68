//! `otel_traces`: one Native block per export request, one row per span, written column by column
//! straight from the protobuf bytes.
//!
//! Values follow the contrib clickhouseexporter (exporter_traces.go), so that dashboards and
//! queries written for its tables read these the same way:
//!
//! * `Timestamp` is the span's start; `Duration` is end minus start in nanoseconds;
//! * `TraceId`, `SpanId`, `ParentSpanId` and the link ids are lower-case hex, and `""` for an id
//!   that is empty or all zeros (traceutil.*ToHexOrEmptyString);
//! * `SpanKind` and `StatusCode` are pdata's names: `Unspecified`, `Internal`, `Server`, `Client`,
//!   `Producer`, `Consumer`; `Unset`, `Ok`, `Error` (`""` for a number OTLP does not define);
//! * `ServiceName` is `AsString()` of the first `service.name` resource attribute, whatever its
//!   type (pdata's `Map.Get` returns the first);
//! * attribute maps hold every key/value pair, duplicates included, sorted by key as contrib's
//!   ClickHouse client sorts them (pairs of one key as sent), each value as `AsString()` (see
//!   gostring.rs); scope name and version have their own columns.
//!
//! Where we differ: a span that ends before it starts gets `Duration` 0 (contrib subtracts unsigned
//! numbers and stores about 1.8e19, which would wreck `max(Duration)` and the span stats); a span
//! whose start, end or event time is past 2262-04-11 (beyond DateTime64(9)'s Int64) is rejected
//! and counted, as in PostgreSQL (contrib wraps it to a date before 1970); ids of the wrong length
//! are written as hex of the bytes sent (contrib's decoder refuses the whole request).

use super::columns::{push_hex, too_late, CachedAttributes as ResourceCache, SortedPairs, Tally};
use super::native::{Block, Data, Fixed64, Offsets, StringMap, Strings};
use super::{Blocks, Table};
use crate::sink::envelope::{self, Group};
use crate::sink::span_fields::SpanFields;
use crate::sink::Encoded;
use crate::wire::{Fields, WireError};

/// The columns of the INSERT, in block order, with the types their data is sent as. The server
/// converts `String` to the table's `LowCardinality(String)` and the map key likewise.
pub const COLUMNS: &[(&str, &str)] = &[
    ("Timestamp", "DateTime64(9)"),
    ("TraceId", "String"),
    ("SpanId", "String"),
    ("ParentSpanId", "String"),
    ("TraceState", "String"),
    ("SpanName", "String"),
    ("SpanKind", "String"),
    ("ServiceName", "String"),
    ("ResourceAttributes", "Map(String, String)"),
    ("ScopeName", "String"),
    ("ScopeVersion", "String"),
    ("SpanAttributes", "Map(String, String)"),
    ("Duration", "UInt64"),
    ("StatusCode", "String"),
    ("StatusMessage", "String"),
    ("Events.Timestamp", "Array(DateTime64(9))"),
    ("Events.Name", "Array(String)"),
    ("Events.Attributes", "Array(Map(String, String))"),
    ("Links.TraceId", "Array(String)"),
    ("Links.SpanId", "Array(String)"),
    ("Links.TraceState", "Array(String)"),
    ("Links.Attributes", "Array(Map(String, String))"),
];

/// Encodes every span of a serialized `ExportTraceServiceRequest`. A request that is not valid
/// protobuf, or holds a string that is not UTF-8, is an error as a whole; a span whose times do not
/// fit DateTime64(9) is left out and counted.
pub fn encode(otlp: &[u8]) -> Result<Encoded<Blocks>, WireError> {
    let mut columns = Columns::default();
    let mut resource = ResourceCache::default();
    let mut pairs = SortedPairs::default();
    let mut tally = Tally::default();
    envelope::for_each_item_raw(otlp, &envelope::TRACES, |group, span| {
        let fields = SpanFields::read(span)?;
        match fields.check(span)? {
            Ok(()) => {
                resource.update(group.resource, &mut pairs)?;
                columns.row(group, &resource, &mut pairs, span, &fields)?;
                tally.keep();
            }
            Err(reason) => tally.reject(|| {
                format!(
                    "span {} of trace {}: {reason}",
                    hex_string(fields.span_id),
                    hex_string(fields.trace_id)
                )
            }),
        }
        Ok(())
    })?;
    Ok(tally.finish(Table::Traces, |rows| columns.block(rows)))
}

#[derive(Default)]
struct Columns {
    timestamp: Fixed64,
    trace_id: Strings,
    span_id: Strings,
    parent_span_id: Strings,
    trace_state: Strings,
    span_name: Strings,
    span_kind: Strings,
    service_name: Strings,
    resource_attributes: StringMap,
    scope_name: Strings,
    scope_version: Strings,
    span_attributes: StringMap,
    duration: Fixed64,
    status_code: Strings,
    status_message: Strings,
    /// The offsets of the three Events columns, alike for each.
    events: Offsets,
    events_timestamp: Fixed64,
    events_name: Strings,
    events_attributes: StringMap,
    links: Offsets,
    links_trace_id: Strings,
    links_span_id: Strings,
    links_trace_state: Strings,
    links_attributes: StringMap,
}

impl Columns {
    /// Writes one span. Its values were checked, so only a malformed request can fail here, and
    /// that fails the whole request: a half-written row is never kept.
    fn row<'a>(
        &mut self,
        group: &Group<'_, '_>,
        resource: &ResourceCache,
        pairs: &mut SortedPairs<'a>,
        span: &'a [u8],
        fields: &SpanFields<'_>,
    ) -> Result<(), WireError> {
        self.timestamp.push_i64(fields.start_time_unix_nano as i64);
        push_hex(&mut self.trace_id, fields.trace_id);
        push_hex(&mut self.span_id, fields.span_id);
        push_hex(&mut self.parent_span_id, fields.parent_span_id);
        self.trace_state.push(fields.trace_state.as_bytes());
        self.span_name.push(fields.name.as_bytes());
        self.span_kind.push(span_kind(fields.kind).as_bytes());
        self.service_name.push(&resource.service_name);
        self.resource_attributes
            .keys
            .data
            .extend_from_slice(&resource.keys);
        self.resource_attributes
            .values
            .data
            .extend_from_slice(&resource.values);
        self.resource_attributes.offsets.end_row(resource.count);
        self.scope_name.push(group.scope_name.as_bytes());
        self.scope_version.push(group.scope_version.as_bytes());
        pairs.read_into(
            &mut self.span_attributes,
            &span[fields.attributes.clone()],
            9,
            "Span.attributes",
        )?;
        self.duration.push_u64(
            fields
                .end_time_unix_nano
                .saturating_sub(fields.start_time_unix_nano),
        );
        self.status_code
            .push(status_code(fields.status_code).as_bytes());
        self.status_message.push(fields.status_message.as_bytes());

        let mut events = 0;
        for entry in Fields::new(&span[fields.events.clone()], "Span") {
            let (11, event) = entry? else { continue };
            let event = event.bytes("Span.events")?;
            let (mut time, mut name) = (0u64, "");
            for entry in Fields::new(event, "Span.Event") {
                match entry? {
                    (1, v) => time = v.fixed64("Span.Event.time_unix_nano")?,
                    (2, v) => name = v.string("Span.Event.name")?,
                    _ => {}
                }
            }
            self.events_timestamp.push_i64(time as i64);
            self.events_name.push(name.as_bytes());
            pairs.read_into(
                &mut self.events_attributes,
                event,
                3,
                "Span.Event.attributes",
            )?;
            events += 1;
        }
        self.events.end_row(events);

        let mut links = 0;
        for entry in Fields::new(&span[fields.links.clone()], "Span") {
            let (13, link) = entry? else { continue };
            let link = link.bytes("Span.links")?;
            let (mut trace_id, mut span_id, mut trace_state): (&[u8], &[u8], &str) = (&[], &[], "");
            for entry in Fields::new(link, "Span.Link") {
                match entry? {
                    (1, v) => trace_id = v.bytes("Span.Link.trace_id")?,
                    (2, v) => span_id = v.bytes("Span.Link.span_id")?,
                    (3, v) => trace_state = v.string("Span.Link.trace_state")?,
                    _ => {}
                }
            }
            push_hex(&mut self.links_trace_id, trace_id);
            push_hex(&mut self.links_span_id, span_id);
            self.links_trace_state.push(trace_state.as_bytes());
            pairs.read_into(&mut self.links_attributes, link, 4, "Span.Link.attributes")?;
            links += 1;
        }
        self.links.end_row(links);
        Ok(())
    }

    fn block(&self, rows: u64) -> Vec<u8> {
        let map = |m| Data::StringMap(m);
        let data: [Data<'_>; 22] = [
            Data::Fixed64(&self.timestamp),
            Data::Strings(&self.trace_id),
            Data::Strings(&self.span_id),
            Data::Strings(&self.parent_span_id),
            Data::Strings(&self.trace_state),
            Data::Strings(&self.span_name),
            Data::Strings(&self.span_kind),
            Data::Strings(&self.service_name),
            map(&self.resource_attributes),
            Data::Strings(&self.scope_name),
            Data::Strings(&self.scope_version),
            map(&self.span_attributes),
            Data::Fixed64(&self.duration),
            Data::Strings(&self.status_code),
            Data::Strings(&self.status_message),
            Data::Array(
                &self.events,
                Box::new(Data::Fixed64(&self.events_timestamp)),
            ),
            Data::Array(&self.events, Box::new(Data::Strings(&self.events_name))),
            Data::Array(&self.events, Box::new(map(&self.events_attributes))),
            Data::Array(&self.links, Box::new(Data::Strings(&self.links_trace_id))),
            Data::Array(&self.links, Box::new(Data::Strings(&self.links_span_id))),
            Data::Array(
                &self.links,
                Box::new(Data::Strings(&self.links_trace_state)),
            ),
            Data::Array(&self.links, Box::new(map(&self.links_attributes))),
        ];
        Block::of(COLUMNS, &data, rows)
    }
}

/// pdata's `SpanKind.String()`.
fn span_kind(kind: i32) -> &'static str {
    match kind {
        0 => "Unspecified",
        1 => "Internal",
        2 => "Server",
        3 => "Client",
        4 => "Producer",
        5 => "Consumer",
        _ => "",
    }
}

/// pdata's `StatusCode.String()`.
fn status_code(code: i32) -> &'static str {
    match code {
        0 => "Unset",
        1 => "Ok",
        2 => "Error",
        _ => "",
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl<'a> SpanFields<'a> {
    /// Whether the span's times fit DateTime64(9), before any of its columns is written.
    fn check(&self, span: &[u8]) -> Result<Result<(), String>, WireError> {
        for (name, value) in [
            ("start_time_unix_nano", self.start_time_unix_nano),
            ("end_time_unix_nano", self.end_time_unix_nano),
        ] {
            if i64::try_from(value).is_err() {
                return Ok(Err(too_late(name, value)));
            }
        }
        for entry in Fields::new(&span[self.events.clone()], "Span") {
            let (11, event) = entry? else { continue };
            for entry in Fields::new(event.bytes("Span.events")?, "Span.Event") {
                if let (1, v) = entry? {
                    let time = v.fixed64("Span.Event.time_unix_nano")?;
                    if i64::try_from(time).is_err() {
                        return Ok(Err(too_late("an event's time_unix_nano", time)));
                    }
                }
            }
        }
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Rows;
    use crate::testdata::{request_with, span};
    use prost::Message;

    #[test]
    fn an_empty_request_has_no_block() {
        let encoded = encode(&[]).expect("valid");
        assert_eq!(
            (
                encoded.rows.rows(),
                encoded.rejected,
                encoded.rows.block(Table::Traces)
            ),
            (0, 0, None)
        );
    }

    #[test]
    fn a_block_starts_with_its_column_and_row_counts() {
        let encoded = encode(&request_with(vec![span(1), span(2)]).encode_to_vec()).expect("valid");
        assert_eq!(encoded.rows.rows(), 2);
        let block = encoded.rows.block(Table::Traces).expect("a block");
        assert_eq!(&block[..2], &[22, 2]);
        assert_eq!(&block[2..13], b"\x09Timestamp\x0d");
    }

    #[test]
    fn spans_past_2262_are_rejected_and_the_rest_kept() {
        let mut late = span(1);
        late.end_time_unix_nano = u64::MAX;
        let mut late_event = span(2);
        late_event.events = vec![opentelemetry_proto::tonic::trace::v1::span::Event {
            time_unix_nano: u64::MAX,
            ..Default::default()
        }];
        let encoded =
            encode(&request_with(vec![late, span(3), late_event]).encode_to_vec()).expect("valid");
        assert_eq!((encoded.rows.rows(), encoded.rejected), (1, 2));
        assert_eq!(
            encoded.first_rejection.as_deref(),
            Some("span 0101010101010101 of trace 01010101010101010101010101010101: end_time_unix_nano 18446744073709551615 is after 2262-04-11, the last instant DateTime64(9) holds")
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(encode(&[0xff, 0xff, 0xff]).is_err());
    }
}
