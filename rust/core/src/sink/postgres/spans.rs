//! The `spans` table: one COPY row per OTLP span, written straight from the decoded request.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;

use super::copy::CopyRows;
use crate::json;

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
const MAX_ROW_BYTES: usize = 1 << 30;

/// The rows of one request, and the spans that could not become rows.
pub struct EncodedSpans {
    pub rows: CopyRows,
    pub rejected: u64,
    pub first_rejection: Option<String>,
}

pub fn encode(request: &ExportTraceServiceRequest) -> EncodedSpans {
    let mut rows = CopyRows::new(COLUMNS.len() as i16);
    let mut rejected = 0;
    let mut first_rejection = None;
    // Resource and scope JSON is built once per group and copied into each of its spans' rows.
    let mut resource_json = Vec::new();
    let mut scope_json = Vec::new();

    for resource_spans in &request.resource_spans {
        let resource = resource_spans.resource.as_ref();
        let resource_attributes = resource.map_or(&[][..], |r| &r.attributes[..]);
        resource_json.clear();
        json::write_attributes(&mut resource_json, resource_attributes);
        let service_name = service_name(resource_attributes);

        for scope_spans in &resource_spans.scope_spans {
            let scope = scope_spans.scope.as_ref();
            scope_json.clear();
            json::write_attributes(&mut scope_json, scope.map_or(&[][..], |s| &s.attributes[..]));
            let group = Group {
                service_name,
                resource_json: &resource_json,
                resource_schema_url: &resource_spans.schema_url,
                scope_name: scope.map_or("", |s| &s.name),
                scope_version: scope.map_or("", |s| &s.version),
                scope_json: &scope_json,
                scope_schema_url: &scope_spans.schema_url,
            };
            for span in &scope_spans.spans {
                if let Err(reason) = write_row(&mut rows, &group, span) {
                    rejected += 1;
                    first_rejection.get_or_insert_with(|| {
                        format!("span {} of trace {}: {reason}", hex(&span.span_id), hex(&span.trace_id))
                    });
                }
            }
        }
    }
    EncodedSpans { rows, rejected, first_rejection }
}

/// What the spans of one resource and scope share.
struct Group<'a> {
    service_name: &'a str,
    resource_json: &'a [u8],
    resource_schema_url: &'a str,
    scope_name: &'a str,
    scope_version: &'a str,
    scope_json: &'a [u8],
    scope_schema_url: &'a str,
}

/// Writes one row, or nothing and the reason when a value does not fit its column.
fn write_row(rows: &mut CopyRows, group: &Group<'_>, span: &Span) -> Result<(), String> {
    let start_nanos = unix_nanos("start_time_unix_nano", span.start_time_unix_nano)?;
    let end_nanos = unix_nanos("end_time_unix_nano", span.end_time_unix_nano)?;
    let kind = small_int("kind", span.kind)?;
    let status = span.status.as_ref();
    let status_code = small_int("status.code", status.map_or(0, |s| s.code))?;

    let row = rows.start_row();
    rows.bytea(&span.trace_id);
    rows.bytea(&span.span_id);
    if span.parent_span_id.is_empty() {
        rows.null();
    } else {
        rows.bytea(&span.parent_span_id);
    }
    rows.text(&span.trace_state);
    // fixed32 flags keep their bit pattern in a signed integer column.
    rows.int4(span.flags as i32);
    rows.text(&span.name);
    rows.int2(kind);
    rows.timestamptz_from_unix_nanos(start_nanos);
    rows.int8(start_nanos);
    // Both are in 0..=i64::MAX, so the difference cannot overflow.
    rows.int8(end_nanos - start_nanos);
    rows.int2(status_code);
    rows.text(status.map_or("", |s| &s.message));
    rows.text(group.service_name);
    rows.jsonb(|out| out.extend_from_slice(group.resource_json));
    rows.text(group.resource_schema_url);
    rows.text(group.scope_name);
    rows.text(group.scope_version);
    rows.jsonb(|out| out.extend_from_slice(group.scope_json));
    rows.text(group.scope_schema_url);
    rows.jsonb(|out| json::write_attributes(out, &span.attributes));
    rows.jsonb(|out| json::write_events(out, &span.events));
    rows.jsonb(|out| json::write_links(out, &span.links));
    rows.int4(saturating_count(span.dropped_attributes_count));
    rows.int4(saturating_count(span.dropped_events_count));
    rows.int4(saturating_count(span.dropped_links_count));

    let row_len = rows.row_len(row);
    if row_len > MAX_ROW_BYTES {
        rows.discard_row(row);
        return Err(format!("its row of {row_len} bytes exceeds PostgreSQL's 1 GB field limit"));
    }
    Ok(())
}

/// `service.name` from the resource; the last one wins, as it does in the jsonb column.
fn service_name(attributes: &[KeyValue]) -> &str {
    attributes
        .iter()
        .rev()
        .find(|a| a.key == "service.name")
        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
        .unwrap_or("")
}

fn unix_nanos(field: &str, value: u64) -> Result<i64, String> {
    i64::try_from(value).map_err(|_| format!("{field} {value} is after 2262-04-11, the last instant a bigint of nanoseconds holds"))
}

fn small_int(field: &str, value: i32) -> Result<i16, String> {
    i16::try_from(value).map_err(|_| format!("{field} {value} is not a valid OTLP value"))
}

/// Dropped counts above 2^31-1 cannot mean anything but "very many".
fn saturating_count(count: u32) -> i32 {
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
    use opentelemetry_proto::tonic::trace::v1::{span::Event, ResourceSpans, ScopeSpans, Status};

    type Row = Vec<Option<Vec<u8>>>;

    fn encode_rows(request: &ExportTraceServiceRequest) -> (Vec<Row>, EncodedSpans) {
        let encoded = encode(request);
        let rows = parse::rows(&encode(request).rows.finish().data);
        (rows, encoded)
    }

    fn column<'r>(row: &'r Row, name: &str) -> &'r Option<Vec<u8>> {
        &row[COLUMNS.iter().position(|c| *c == name).expect("known column")]
    }

    fn text(row: &Row, name: &str) -> String {
        String::from_utf8(column(row, name).clone().expect("not null")).expect("UTF-8")
    }

    fn int8(row: &Row, name: &str) -> i64 {
        i64::from_be_bytes(column(row, name).clone().expect("not null").try_into().expect("8 bytes"))
    }

    fn int2(row: &Row, name: &str) -> i16 {
        i16::from_be_bytes(column(row, name).clone().expect("not null").try_into().expect("2 bytes"))
    }

    fn json(row: &Row, name: &str) -> serde_json::Value {
        let bytes = column(row, name).clone().expect("not null");
        assert_eq!(bytes[0], 1, "jsonb version byte");
        serde_json::from_slice(&bytes[1..]).expect("valid JSON")
    }

    #[test]
    fn a_span_becomes_a_row_field_for_field() {
        let mut full = span(7);
        full.parent_span_id = vec![9; 8];
        full.trace_state = "a=b".into();
        full.flags = 0x8000_0101;
        full.status = Some(Status { message: "boom".into(), code: 2 });
        full.attributes = vec![string_kv("http.method", "GET"), kv("n", value(Value::IntValue(3)))];
        full.events = vec![Event { time_unix_nano: 5, name: "e".into(), attributes: vec![], dropped_attributes_count: 0 }];
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
        assert_eq!(column(row, "flags"), &Some(0x8000_0101u32.to_be_bytes().to_vec()));
        assert_eq!(text(row, "name"), "span-7");
        assert_eq!(int2(row, "kind"), 2);
        assert_eq!(int8(row, "start_time_unix_nano"), 1_700_000_000_123_456_789);
        // 2023-11-14T22:13:20.123456Z in microseconds since 2000-01-01.
        assert_eq!(int8(row, "start_time"), 1_700_000_000_123_456 - 946_684_800_000_000);
        assert_eq!(int8(row, "duration_ns"), 100_000_000);
        assert_eq!(int2(row, "status_code"), 2);
        assert_eq!(text(row, "status_message"), "boom");
        assert_eq!(text(row, "service_name"), "svc");
        assert_eq!(json(row, "resource_attributes"), serde_json::json!({"service.name": "svc"}));
        assert_eq!(text(row, "scope_name"), "lib");
        assert_eq!(text(row, "scope_version"), "1.2");
        assert_eq!(json(row, "scope_attributes"), serde_json::json!({}));
        assert_eq!(json(row, "span_attributes"), serde_json::json!({"http.method": "GET", "n": 3}));
        assert_eq!(json(row, "events")[0]["name"], "e");
        assert_eq!(json(row, "links"), serde_json::json!([]));
        assert_eq!(column(row, "dropped_attributes_count"), &Some(1i32.to_be_bytes().to_vec()));
        assert_eq!(column(row, "dropped_links_count"), &Some(i32::MAX.to_be_bytes().to_vec()));
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
                scope_spans: vec![ScopeSpans { scope: None, spans: vec![span(1)], schema_url: String::new() }],
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
        let resource = request.resource_spans[0].resource.as_mut().expect("resource");
        resource.attributes.push(string_kv("service.name", "second"));
        let (rows, _) = encode_rows(&request);
        assert_eq!(text(&rows[0], "service_name"), "second");

        let resource = request.resource_spans[0].resource.as_mut().expect("resource");
        resource.attributes.push(kv("service.name", value(Value::IntValue(5))));
        let (rows, _) = encode_rows(&request);
        assert_eq!(text(&rows[0], "service_name"), "", "a non-string service.name is no name");
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
        assert_eq!(json(&rows[0], "span_attributes")["big"].as_str().map(str::len), Some(1 << 20));
    }

    #[test]
    fn nul_in_text_columns_is_replaced() {
        let mut with_nul = span(1);
        with_nul.name = "a\0b".into();
        let (rows, _) = encode_rows(&request_with(vec![with_nul]));
        assert_eq!(text(&rows[0], "name"), "a\u{fffd}b");
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
        assert_eq!(column(&rows[9_999], "span_id"), &Some(9_999u64.to_be_bytes().to_vec()));
    }
}
