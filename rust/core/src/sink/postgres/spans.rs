//! The `spans` table: one COPY row per OTLP span, written straight from the decoded request.

use std::collections::HashMap;

use super::copy::CopyRows;
use super::rollup::Rollups;
use crate::json;
use crate::sink::envelope::{self, Group};
use crate::sink::span_fields::SpanFields;
use crate::wire::{Fields, WireError};

/// Column order of every row, as named in the COPY statement.
pub const COLUMNS: &[&str] = &[
    "trace_id",
    "span_id",
    "parent_span_id",
    "trace_state",
    "flags",
    "name",
    "kind",
    "start_time",
    "start_time_unix_nano",
    "duration_ns",
    "status_code",
    "status_message",
    "service_name",
    "resource_attributes",
    "resource_schema_url",
    "scope_name",
    "scope_version",
    "scope_attributes",
    "scope_schema_url",
    "span_attributes",
    "events",
    "links",
    "dropped_attributes_count",
    "dropped_events_count",
    "dropped_links_count",
];

/// PostgreSQL refuses a field over 1 GB; a row that large could only fail the whole COPY.
pub(crate) const MAX_ROW_BYTES: usize = 1 << 30;

/// Columns of `otelstore_pending_dependencies`: a server or consumer span whose parent is not in
/// its request.
pub const PENDING_DEPENDENCY_COLUMNS: &[&str] = &[
    "trace_id",
    "parent_span_id",
    "child_service",
    "child_start_time",
    "child_error",
];

/// OTLP span kinds that call another service, and those that serve a call.
const CALLER_KINDS: [i16; 2] = [3, 4];
const CALLEE_KINDS: [i16; 2] = [2, 5];
const STATUS_ERROR: i16 = 2;

/// The rows of one request, and the spans that could not become rows.
pub struct EncodedSpans {
    pub rows: CopyRows,
    pub pending_dependencies: CopyRows,
    pub rollups: Rollups,
    pub rejected: u64,
    pub first_rejection: Option<String>,
}

/// Encodes every span of a serialized `ExportTraceServiceRequest` as a row, reading the protobuf
/// bytes in place. A request that is not valid protobuf, or holds a string that is not UTF-8, is an
/// error as a whole; a span whose values do not fit the table is left out and counted.
pub fn encode(otlp: &[u8]) -> Result<EncodedSpans, WireError> {
    let mut encoder = Encoder {
        // Rows take up to about twice the bytes of the protobuf they come from (jsonb spells out
        // keys and quotes); reserving that once saves copying a large buffer as it grows.
        rows: CopyRows::new(COLUMNS.len() as i16, otlp.len() * 2),
        rejected: 0,
        first_rejection: None,
        rollups: Rollups::default(),
        callers: HashMap::new(),
        callees: Vec::new(),
    };
    envelope::for_each_item(otlp, &envelope::TRACES, |group, span| {
        let fields = SpanFields::read(span)?;
        match encoder.row(group, span, &fields)? {
            Ok(values) => encoder.summarize(group.service_name, &fields, &values),
            Err(reason) => {
                encoder.rejected += 1;
                encoder.first_rejection.get_or_insert_with(|| {
                    format!(
                        "span {} of trace {}: {reason}",
                        hex(fields.span_id),
                        hex(fields.trace_id)
                    )
                });
            }
        }
        Ok(())
    })?;
    let pending_dependencies = encoder.dependencies();
    Ok(EncodedSpans {
        rows: encoder.rows,
        pending_dependencies,
        rollups: encoder.rollups,
        rejected: encoder.rejected,
        first_rejection: encoder.first_rejection,
    })
}

/// The values of a written span that the rollups take.
#[derive(Clone, Copy)]
struct SpanValues {
    start_nanos: i64,
    duration_ns: i64,
    kind: i16,
    status_code: i16,
}

/// A server or consumer span, waiting to be matched with its parent.
struct Callee<'a> {
    trace_id: &'a [u8],
    parent_span_id: &'a [u8],
    service_name: &'a str,
    start_nanos: i64,
    error: bool,
}

struct Encoder<'a> {
    rows: CopyRows,
    rejected: u64,
    first_rejection: Option<String>,
    rollups: Rollups,
    /// Client and producer spans of the request by (trace id, span id): their service.
    callers: HashMap<(&'a [u8], &'a [u8]), &'a str>,
    callees: Vec<Callee<'a>>,
}

impl<'a> Encoder<'a> {
    /// Adds a written span to the rollups, and remembers what service dependencies need of it.
    fn summarize(&mut self, service_name: &'a str, fields: &SpanFields<'a>, values: &SpanValues) {
        let SpanValues {
            start_nanos,
            duration_ns,
            kind,
            status_code,
        } = *values;
        let error = status_code == STATUS_ERROR;
        self.rollups.span(
            service_name,
            fields.name,
            kind,
            start_nanos,
            duration_ns,
            error,
        );
        if CALLER_KINDS.contains(&kind) {
            self.callers
                .insert((fields.trace_id, fields.span_id), service_name);
        } else if CALLEE_KINDS.contains(&kind) && !fields.parent_span_id.is_empty() {
            self.callees.push(Callee {
                trace_id: fields.trace_id,
                parent_span_id: fields.parent_span_id,
                service_name,
                start_nanos,
                error,
            });
        }
    }

    /// Counts the dependencies whose caller is in this request; the rows returned are callees whose
    /// parent is not, for the maintenance to look up once it has arrived.
    fn dependencies(&mut self) -> CopyRows {
        let mut pending = CopyRows::new(PENDING_DEPENDENCY_COLUMNS.len() as i16, 0);
        for callee in &self.callees {
            match self.callers.get(&(callee.trace_id, callee.parent_span_id)) {
                Some(caller) if *caller != callee.service_name => {
                    self.rollups.dependency(
                        caller,
                        callee.service_name,
                        callee.start_nanos,
                        callee.error,
                    );
                }
                Some(_) => {}
                None => {
                    pending.start_row();
                    pending.bytea(callee.trace_id);
                    pending.bytea(callee.parent_span_id);
                    pending.text(callee.service_name);
                    pending.timestamptz_from_unix_nanos(callee.start_nanos);
                    pending.bool(callee.error);
                }
            }
        }
        pending
    }

    /// Writes one row, and returns the values the rollups take from it. The outer error is a
    /// malformed request; the inner one a span whose values do not fit the table, of which nothing
    /// is written.
    fn row(
        &mut self,
        group: &Group<'_, '_>,
        span: &[u8],
        fields: &SpanFields<'_>,
    ) -> Result<Result<SpanValues, String>, WireError> {
        let (start_nanos, end_nanos, kind, status_code) = match fields.column_values() {
            Ok(values) => values,
            Err(reason) => return Ok(Err(reason)),
        };
        let rows = &mut self.rows;
        let row = rows.start_row();
        rows.bytea(fields.trace_id);
        rows.bytea(fields.span_id);
        if fields.parent_span_id.is_empty() {
            rows.null();
        } else {
            rows.bytea(fields.parent_span_id);
        }
        rows.text(fields.trace_state);
        // fixed32 flags keep their bit pattern in a signed integer column.
        rows.int4(fields.flags as i32);
        rows.text(fields.name);
        rows.int2(kind);
        rows.timestamptz_from_unix_nanos(start_nanos);
        rows.int8(start_nanos);
        // Both are in 0..=i64::MAX, so the difference cannot overflow.
        rows.int8(end_nanos - start_nanos);
        rows.int2(status_code);
        rows.text(fields.status_message);
        group.write_columns(rows);
        rows.jsonb(|out| {
            json::write_attributes(out, &span[fields.attributes.clone()], 9, "Span.attributes")
        })?;
        rows.jsonb(|out| json::write_events(out, &span[fields.events.clone()], 11))?;
        rows.jsonb(|out| json::write_links(out, &span[fields.links.clone()], 13))?;
        rows.int4(saturating_count(fields.dropped_attributes_count));
        rows.int4(saturating_count(fields.dropped_events_count));
        rows.int4(saturating_count(fields.dropped_links_count));

        let row_len = rows.row_len(row);
        if row_len > MAX_ROW_BYTES {
            rows.discard_row(row);
            return Ok(Err(format!(
                "its row of {row_len} bytes exceeds PostgreSQL's 1 GB field limit"
            )));
        }
        Ok(Ok(SpanValues {
            start_nanos,
            duration_ns: end_nanos - start_nanos,
            kind,
            status_code,
        }))
    }
}

impl<'a> SpanFields<'a> {
    /// Start and end nanoseconds, kind and status code as their columns take them, or why they don't fit.
    fn column_values(&self) -> Result<(i64, i64, i16, i16), String> {
        Ok((
            unix_nanos("start_time_unix_nano", self.start_time_unix_nano)?,
            unix_nanos("end_time_unix_nano", self.end_time_unix_nano)?,
            small_int("kind", self.kind)?,
            small_int("status.code", self.status_code)?,
        ))
    }
}

/// `service.name` from the resource; the last one wins, as it does in the jsonb column. A value
/// that is not a string is no name.
pub(crate) fn service_name(resource: &[u8]) -> Result<&str, WireError> {
    let mut name = "";
    for entry in Fields::new(resource, "Resource") {
        let (1, attribute) = entry? else { continue };
        let mut key = "";
        let mut value: &[u8] = &[];
        for entry in Fields::new(attribute.bytes("Resource.attributes")?, "KeyValue") {
            match entry? {
                (1, v) => key = v.string("KeyValue.key")?,
                (2, v) => value = v.bytes("KeyValue.value")?,
                _ => {}
            }
        }
        if key != "service.name" {
            continue;
        }
        name = "";
        for entry in Fields::new(value, "AnyValue") {
            match entry? {
                (1, v) => name = v.string("AnyValue.string_value")?,
                (2..=8, _) => name = "",
                _ => {}
            }
        }
    }
    Ok(name)
}

pub(crate) fn unix_nanos(field: &str, value: u64) -> Result<i64, String> {
    i64::try_from(value).map_err(|_| {
        format!(
            "{field} {value} is after 2262-04-11, the last instant a bigint of nanoseconds holds"
        )
    })
}

pub(crate) fn small_int(field: &str, value: i32) -> Result<i16, String> {
    i16::try_from(value).map_err(|_| format!("{field} {value} is not a valid OTLP value"))
}

/// Dropped counts above 2^31-1 cannot mean anything but "very many".
pub(crate) fn saturating_count(count: u32) -> i32 {
    i32::try_from(count).unwrap_or(i32::MAX)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::postgres::copy::parse;
    use crate::testdata::{kv, request_with, span, string_kv, value};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::trace::v1::{span::Event, ResourceSpans, ScopeSpans, Status};
    use prost::Message;

    use parse::Row;

    fn encode_rows(request: &ExportTraceServiceRequest) -> (Vec<Row>, EncodedSpans) {
        let otlp = request.encode_to_vec();
        let rows = parse::rows(&encode(&otlp).expect("valid request").rows.finish().data);
        (rows, encode(&otlp).expect("valid request"))
    }

    parse::readers_for!(COLUMNS);

    #[test]
    fn a_span_becomes_a_row_field_for_field() {
        let mut full = span(7);
        full.parent_span_id = vec![9; 8];
        full.trace_state = "a=b".into();
        full.flags = 0x8000_0101;
        full.status = Some(Status {
            message: "boom".into(),
            code: 2,
        });
        full.attributes = vec![
            string_kv("http.method", "GET"),
            kv("n", value(Value::IntValue(3))),
        ];
        full.events = vec![Event {
            time_unix_nano: 5,
            name: "e".into(),
            attributes: vec![],
            dropped_attributes_count: 0,
        }];
        full.dropped_attributes_count = 1;
        full.dropped_events_count = 2;
        full.dropped_links_count = u32::MAX;
        let (rows, encoded) = encode_rows(&request_with(vec![full]));
        assert_eq!((encoded.rejected, rows.len()), (0, 1));
        let row = &rows[0];
        assert_eq!(row.len(), COLUMNS.len());
        assert_eq!(column(row, "trace_id"), &Some(vec![7; 16]));
        assert_eq!(column(row, "span_id"), &Some(vec![7; 8]));
        assert_eq!(column(row, "parent_span_id"), &Some(vec![9; 8]));
        assert_eq!(text(row, "trace_state"), "a=b");
        assert_eq!(
            column(row, "flags"),
            &Some(0x8000_0101u32.to_be_bytes().to_vec())
        );
        assert_eq!(text(row, "name"), "span-7");
        assert_eq!(int2(row, "kind"), 2);
        assert_eq!(int8(row, "start_time_unix_nano"), 1_700_000_000_123_456_789);
        // 2023-11-14T22:13:20.123456Z in microseconds since 2000-01-01.
        assert_eq!(
            int8(row, "start_time"),
            1_700_000_000_123_456 - 946_684_800_000_000
        );
        assert_eq!(int8(row, "duration_ns"), 100_000_000);
        assert_eq!(int2(row, "status_code"), 2);
        assert_eq!(text(row, "status_message"), "boom");
        assert_eq!(text(row, "service_name"), "svc");
        assert_eq!(
            json(row, "resource_attributes"),
            serde_json::json!({"service.name": "svc"})
        );
        assert_eq!(text(row, "scope_name"), "lib");
        assert_eq!(text(row, "scope_version"), "1.2");
        assert_eq!(json(row, "scope_attributes"), serde_json::json!({}));
        assert_eq!(
            json(row, "span_attributes"),
            serde_json::json!({"http.method": "GET", "n": 3})
        );
        assert_eq!(json(row, "events")[0]["name"], "e");
        assert_eq!(json(row, "links"), serde_json::json!([]));
        assert_eq!(
            column(row, "dropped_attributes_count"),
            &Some(1i32.to_be_bytes().to_vec())
        );
        assert_eq!(
            column(row, "dropped_links_count"),
            &Some(i32::MAX.to_be_bytes().to_vec())
        );
    }

    #[test]
    fn a_root_span_has_a_null_parent() {
        let (rows, _) = encode_rows(&request_with(vec![span(1)]));
        assert_eq!(column(&rows[0], "parent_span_id"), &None);
    }

    #[test]
    fn no_resource_and_no_scope_give_empty_values() {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: None,
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans: vec![span(1)],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let (rows, _) = encode_rows(&request);
        assert_eq!(text(&rows[0], "service_name"), "");
        assert_eq!(json(&rows[0], "resource_attributes"), serde_json::json!({}));
        assert_eq!(text(&rows[0], "scope_name"), "");
    }

    #[test]
    fn service_name_is_the_last_value_like_in_jsonb() {
        let mut request = request_with(vec![span(1)]);
        let resource = request.resource_spans[0]
            .resource
            .as_mut()
            .expect("resource");
        resource
            .attributes
            .push(string_kv("service.name", "second"));
        let (rows, _) = encode_rows(&request);
        assert_eq!(text(&rows[0], "service_name"), "second");

        let resource = request.resource_spans[0]
            .resource
            .as_mut()
            .expect("resource");
        resource
            .attributes
            .push(kv("service.name", value(Value::IntValue(5))));
        let (rows, _) = encode_rows(&request);
        assert_eq!(
            text(&rows[0], "service_name"),
            "",
            "a non-string service.name is no name"
        );
    }

    #[test]
    fn zero_and_negative_durations_are_kept() {
        let mut zero = span(1);
        zero.start_time_unix_nano = 0;
        zero.end_time_unix_nano = 0;
        let mut negative = span(2);
        negative.end_time_unix_nano = negative.start_time_unix_nano - 5;
        let (rows, encoded) = encode_rows(&request_with(vec![zero, negative]));
        assert_eq!(encoded.rejected, 0);
        assert_eq!(int8(&rows[0], "duration_ns"), 0);
        assert_eq!(int8(&rows[0], "start_time"), -946_684_800_000_000);
        assert_eq!(int8(&rows[1], "duration_ns"), -5);
    }

    #[test]
    fn spans_that_do_not_fit_are_rejected_and_the_rest_kept() {
        let mut late = span(1);
        late.end_time_unix_nano = u64::MAX;
        let mut odd_kind = span(2);
        odd_kind.kind = 70_000;
        let (rows, encoded) = encode_rows(&request_with(vec![late, span(3), odd_kind]));
        assert_eq!(rows.len(), 1);
        assert_eq!(column(&rows[0], "span_id"), &Some(vec![3; 8]));
        assert_eq!(encoded.rejected, 2);
        assert_eq!(
            encoded.first_rejection.as_deref(),
            Some("span 0101010101010101 of trace 01010101010101010101010101010101: end_time_unix_nano 18446744073709551615 is after 2262-04-11, the last instant a bigint of nanoseconds holds")
        );
    }

    #[test]
    fn a_one_megabyte_attribute_is_stored_whole() {
        let big = "x".repeat(1 << 20);
        let mut with_big = span(1);
        with_big.attributes = vec![string_kv("big", &big)];
        let (rows, _) = encode_rows(&request_with(vec![with_big]));
        assert_eq!(
            json(&rows[0], "span_attributes")["big"]
                .as_str()
                .map(str::len),
            Some(1 << 20)
        );
    }

    #[test]
    fn nul_in_text_columns_is_replaced() {
        let mut with_nul = span(1);
        with_nul.name = "a\0b".into();
        let (rows, _) = encode_rows(&request_with(vec![with_nul]));
        assert_eq!(text(&rows[0], "name"), "a\u{fffd}b");
    }

    #[test]
    fn an_empty_request_has_no_rows() {
        let encoded = encode(&[]).expect("empty is valid");
        assert_eq!((encoded.rows.rows(), encoded.rejected), (0, 0));
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert_eq!(
            encode(&[0xff, 0xff, 0xff]).err().map(|e| e.to_string()),
            Some("ExportTraceServiceRequest: truncated varint".into())
        );
        let otlp = request_with(vec![span(1)]).encode_to_vec();
        let error = encode(&otlp[..otlp.len() - 3]).err().expect("truncated");
        assert_eq!(error.reason, "field runs past the end of its message");
    }

    #[test]
    fn invalid_utf8_names_the_field() {
        let mut bad = span(1);
        bad.name = "MARKER".to_owned();
        let mut otlp = request_with(vec![bad]).encode_to_vec();
        let at = otlp
            .windows(6)
            .position(|w| w == b"MARKER")
            .expect("marker present");
        otlp[at] = 0xff;
        assert_eq!(
            encode(&otlp).err().map(|e| e.to_string()),
            Some("Span.name: string is not valid UTF-8".into())
        );
    }

    #[test]
    fn ten_thousand_spans_in_one_request() {
        let spans = (0..10_000u32)
            .map(|i| {
                let mut s = span(0);
                s.span_id = u64::from(i).to_be_bytes().to_vec();
                s
            })
            .collect();
        let (rows, encoded) = encode_rows(&request_with(spans));
        assert_eq!(encoded.rows.rows(), 10_000);
        assert_eq!(rows.len(), 10_000);
        assert_eq!(
            column(&rows[9_999], "span_id"),
            &Some(9_999u64.to_be_bytes().to_vec())
        );
    }
}
