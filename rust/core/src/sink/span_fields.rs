//! The scalar fields of an OTLP `Span`, read in place for the traces encoders of both sinks.

use std::ops::Range;

use crate::wire::{Fields, WireError};

/// The scalar fields of a span. Attributes, events and links are read from the span's bytes when
/// their columns are written, within the range from the first to the last field of each, so those
/// passes skip the rest of the span.
#[derive(Default)]
pub struct SpanFields<'a> {
    pub attributes: Range<usize>,
    pub events: Range<usize>,
    pub links: Range<usize>,
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub trace_state: &'a str,
    pub parent_span_id: &'a [u8],
    pub flags: u32,
    pub name: &'a str,
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub dropped_attributes_count: u32,
    pub dropped_events_count: u32,
    pub dropped_links_count: u32,
    pub status_message: &'a str,
    pub status_code: i32,
}

impl<'a> SpanFields<'a> {
    pub fn read(span: &'a [u8]) -> Result<Self, WireError> {
        let mut fields = SpanFields::default();
        let mut reader = Fields::new(span, "Span");
        loop {
            let start = reader.offset();
            let Some(entry) = reader.next() else { break };
            let field = start..reader.offset();
            match entry? {
                (9, _) => cover(&mut fields.attributes, field),
                (11, _) => cover(&mut fields.events, field),
                (13, _) => cover(&mut fields.links, field),
                (1, v) => fields.trace_id = v.bytes("Span.trace_id")?,
                (2, v) => fields.span_id = v.bytes("Span.span_id")?,
                (3, v) => fields.trace_state = v.string("Span.trace_state")?,
                (4, v) => fields.parent_span_id = v.bytes("Span.parent_span_id")?,
                (5, v) => fields.name = v.string("Span.name")?,
                (6, v) => fields.kind = v.int32("Span.kind")?,
                (7, v) => fields.start_time_unix_nano = v.fixed64("Span.start_time_unix_nano")?,
                (8, v) => fields.end_time_unix_nano = v.fixed64("Span.end_time_unix_nano")?,
                (10, v) => {
                    fields.dropped_attributes_count = v.uint32("Span.dropped_attributes_count")?
                }
                (12, v) => fields.dropped_events_count = v.uint32("Span.dropped_events_count")?,
                (14, v) => fields.dropped_links_count = v.uint32("Span.dropped_links_count")?,
                (15, v) => {
                    for entry in Fields::new(v.bytes("Span.status")?, "Status") {
                        match entry? {
                            (2, v) => fields.status_message = v.string("Status.message")?,
                            (3, v) => fields.status_code = v.int32("Status.code")?,
                            _ => {}
                        }
                    }
                }
                (16, v) => fields.flags = v.fixed32("Span.flags")?,
                _ => {}
            }
        }
        Ok(fields)
    }
}

/// Grows `range` to take in `field`; an empty range is replaced.
fn cover(range: &mut Range<usize>, field: Range<usize>) {
    *range = if range.start == range.end {
        field
    } else {
        range.start..field.end
    };
}
