//! The scalar fields of an OTLP `LogRecord`, read in place for the logs encoders of both sinks;
//! its attributes are read from the record's bytes by each.

use crate::wire::{Fields, WireError};

#[derive(Default)]
pub struct LogRecordFields<'a> {
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    pub severity_number: i32,
    pub severity_text: &'a str,
    /// The AnyValue's message bytes; `None` when the record has no body or one without a value
    /// (the collector's pdata sends an absent body as an empty one).
    pub body: Option<&'a [u8]>,
    pub dropped_attributes_count: u32,
    pub flags: u32,
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub event_name: &'a str,
}

impl<'a> LogRecordFields<'a> {
    pub fn read(record: &'a [u8]) -> Result<Self, WireError> {
        let mut fields = LogRecordFields::default();
        for entry in Fields::new(record, "LogRecord") {
            match entry? {
                (1, v) => fields.time_unix_nano = v.fixed64("LogRecord.time_unix_nano")?,
                (2, v) => fields.severity_number = v.int32("LogRecord.severity_number")?,
                (3, v) => fields.severity_text = v.string("LogRecord.severity_text")?,
                // Senders write one body; were there several, the last is kept rather than merged.
                (5, v) => {
                    let body = v.bytes("LogRecord.body")?;
                    fields.body = if has_value(body)? { Some(body) } else { None };
                }
                (7, v) => {
                    fields.dropped_attributes_count =
                        v.uint32("LogRecord.dropped_attributes_count")?
                }
                (8, v) => fields.flags = v.fixed32("LogRecord.flags")?,
                (9, v) => fields.trace_id = v.bytes("LogRecord.trace_id")?,
                (10, v) => fields.span_id = v.bytes("LogRecord.span_id")?,
                (11, v) => {
                    fields.observed_time_unix_nano =
                        v.fixed64("LogRecord.observed_time_unix_nano")?
                }
                (12, v) => fields.event_name = v.string("LogRecord.event_name")?,
                _ => {}
            }
        }
        Ok(fields)
    }
}

/// Whether an AnyValue sets one of its value variants.
fn has_value(any_value: &[u8]) -> Result<bool, WireError> {
    for entry in Fields::new(any_value, "AnyValue") {
        if let (1..=8, _) = entry? {
            return Ok(true);
        }
    }
    Ok(false)
}
