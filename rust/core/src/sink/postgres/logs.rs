//! The `logs` table: one COPY row per OTLP log record, written straight from the decoded request.

use super::copy::CopyRows;
use super::rollup::Rollups;
use super::spans::{saturating_count, small_int, unix_nanos, MAX_ROW_BYTES};
use crate::json;
use crate::sink::envelope::{self, Group};
use crate::sink::log_record::LogRecordFields;
use crate::wire::WireError;

/// Column order of every row, as named in the COPY statement.
pub const COLUMNS: &[&str] = &[
    "time",
    "time_unix_nano",
    "observed_time_unix_nano",
    "severity_number",
    "severity_text",
    "body",
    "attributes",
    "dropped_attributes_count",
    "flags",
    "trace_id",
    "span_id",
    "event_name",
    "service_name",
    "resource_attributes",
    "resource_schema_url",
    "scope_name",
    "scope_version",
    "scope_attributes",
    "scope_schema_url",
];

/// The rows of one request, and the log records that could not become rows.
pub struct EncodedLogs {
    pub rows: CopyRows,
    pub rollups: Rollups,
    pub rejected: u64,
    pub first_rejection: Option<String>,
}

/// Encodes every log record of a serialized `ExportLogsServiceRequest` as a row, reading the
/// protobuf bytes in place. A request that is not valid protobuf, or holds a string that is not
/// UTF-8, is an error as a whole; a record whose values do not fit the table is left out and counted.
pub fn encode(otlp: &[u8]) -> Result<EncodedLogs, WireError> {
    let mut encoder = Encoder {
        // As for spans: rows take up to about twice the bytes of the protobuf they come from.
        rows: CopyRows::new(COLUMNS.len() as i16, otlp.len() * 2),
        rollups: Rollups::default(),
        rejected: 0,
        first_rejection: None,
        records: 0,
    };
    envelope::for_each_item(otlp, &envelope::LOGS, |group, record| {
        let fields = LogRecordFields::read(record)?;
        let index = encoder.records;
        encoder.records += 1;
        if let Err(reason) = encoder.row(group, record, &fields)? {
            encoder.rejected += 1;
            encoder.first_rejection.get_or_insert_with(|| {
                format!(
                    "log record {index} of the request (service {:?}): {reason}",
                    group.service_name
                )
            });
        }
        Ok(())
    })?;
    Ok(EncodedLogs {
        rows: encoder.rows,
        rollups: encoder.rollups,
        rejected: encoder.rejected,
        first_rejection: encoder.first_rejection,
    })
}

struct Encoder {
    rows: CopyRows,
    rollups: Rollups,
    rejected: u64,
    first_rejection: Option<String>,
    /// Records seen so far in the request: log records have no id, so a rejection names its position.
    records: u64,
}

impl Encoder {
    /// Writes one row. The outer error is a malformed request; the inner one a record whose values
    /// do not fit the table, of which nothing is written.
    fn row(
        &mut self,
        group: &Group<'_, '_>,
        record: &[u8],
        fields: &LogRecordFields<'_>,
    ) -> Result<Result<(), String>, WireError> {
        let (time_unix_nano, observed_time_unix_nano, severity_number) = match column_values(fields)
        {
            Ok(values) => values,
            Err(reason) => return Ok(Err(reason)),
        };
        // The time a record is filed under: when it happened, or else when the collector saw it.
        let time = if time_unix_nano != 0 {
            time_unix_nano
        } else {
            observed_time_unix_nano
        };
        let rows = &mut self.rows;
        let row = rows.start_row();
        rows.timestamptz_from_unix_nanos(time);
        rows.int8(time_unix_nano);
        rows.int8(observed_time_unix_nano);
        rows.int2(severity_number);
        rows.text(fields.severity_text);
        match fields.body {
            Some(body) => rows.jsonb(|out| json::write_any_value(out, body))?,
            None => rows.null(),
        }
        rows.jsonb(|out| json::write_attributes(out, record, 6, "LogRecord.attributes"))?;
        rows.int4(saturating_count(fields.dropped_attributes_count));
        // fixed32 flags keep their bit pattern in a signed integer column.
        rows.int4(fields.flags as i32);
        nullable_bytea(rows, fields.trace_id);
        nullable_bytea(rows, fields.span_id);
        rows.text(fields.event_name);
        group.write_columns(rows);

        let row_len = rows.row_len(row);
        if row_len > MAX_ROW_BYTES {
            rows.discard_row(row);
            return Ok(Err(format!(
                "its row of {row_len} bytes exceeds PostgreSQL's 1 GB field limit"
            )));
        }
        self.rollups
            .log(group.service_name, time, i32::from(severity_number));
        Ok(Ok(()))
    }
}

/// An empty id means the record is not tied to a trace or span.
fn nullable_bytea(rows: &mut CopyRows, id: &[u8]) {
    if id.is_empty() {
        rows.null();
    } else {
        rows.bytea(id);
    }
}

/// Time and observed time nanoseconds and severity number as their columns take them, or why they
/// don't fit.
fn column_values(fields: &LogRecordFields<'_>) -> Result<(i64, i64, i16), String> {
    Ok((
        unix_nanos("time_unix_nano", fields.time_unix_nano)?,
        unix_nanos("observed_time_unix_nano", fields.observed_time_unix_nano)?,
        small_int("severity_number", fields.severity_number)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::postgres::copy::parse;
    use crate::testdata::{
        kv, log_record as record, logs_request_with as request_with, string_kv, value, TIME,
    };
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;

    use parse::Row;

    /// `TIME` as a timestamptz: microseconds since 2000-01-01.
    const TIME_MICROS: i64 = 1_700_000_000_123_456 - 946_684_800_000_000;

    fn encode_rows(request: &ExportLogsServiceRequest) -> (Vec<Row>, EncodedLogs) {
        let otlp = request.encode_to_vec();
        let rows = parse::rows(&encode(&otlp).expect("valid request").rows.finish().data);
        (rows, encode(&otlp).expect("valid request"))
    }

    parse::readers_for!(COLUMNS);

    /// The body column of a request with one record whose body is `body`, as JSON text.
    fn body_json(body: Option<AnyValue>) -> Option<String> {
        let mut with_body = record(1);
        with_body.body = body;
        let (rows, _) = encode_rows(&request_with(vec![with_body]));
        column(&rows[0], "body").as_ref().map(|bytes| {
            assert_eq!(bytes[0], 1, "jsonb version byte");
            String::from_utf8(bytes[1..].to_vec()).expect("UTF-8")
        })
    }

    #[test]
    fn the_columns_are_those_of_the_schema_in_its_order() {
        let schema = include_str!("../../../../../schema/postgres/0004_logs.sql");
        let table = schema
            .split("CREATE TABLE {schema}.logs (")
            .nth(1)
            .expect("logs table");
        let table = table
            .split(") PARTITION BY")
            .next()
            .expect("end of the column list");
        let names: Vec<_> = table
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .collect();
        assert_eq!(names, COLUMNS);
    }

    #[test]
    fn a_log_record_becomes_a_row_field_for_field() {
        let mut full = record(7);
        full.attributes = vec![
            string_kv("http.method", "GET"),
            kv("n", value(Value::IntValue(3))),
        ];
        full.dropped_attributes_count = 2;
        full.flags = 0x8000_0101;
        full.event_name = "app.started".into();
        let (rows, encoded) = encode_rows(&request_with(vec![full]));
        assert_eq!(
            (
                encoded.rejected,
                encoded.first_rejection.as_deref(),
                rows.len()
            ),
            (0, None, 1)
        );
        let row = &rows[0];
        assert_eq!(row.len(), COLUMNS.len());
        assert_eq!(int8(row, "time"), TIME_MICROS);
        assert_eq!(int8(row, "time_unix_nano"), TIME as i64);
        assert_eq!(int8(row, "observed_time_unix_nano"), TIME as i64 + 1_000);
        assert_eq!(int2(row, "severity_number"), 9);
        assert_eq!(text(row, "severity_text"), "INFO");
        assert_eq!(json(row, "body"), serde_json::json!("message 7"));
        assert_eq!(
            json(row, "attributes"),
            serde_json::json!({"http.method": "GET", "n": 3})
        );
        assert_eq!(int4(row, "dropped_attributes_count"), 2);
        assert_eq!(
            column(row, "flags"),
            &Some(0x8000_0101u32.to_be_bytes().to_vec())
        );
        assert_eq!(int4(row, "flags"), 0x8000_0101u32 as i32);
        assert_eq!(column(row, "trace_id"), &Some(vec![7; 16]));
        assert_eq!(column(row, "span_id"), &Some(vec![7; 8]));
        assert_eq!(text(row, "event_name"), "app.started");
        assert_eq!(text(row, "service_name"), "svc");
        assert_eq!(
            json(row, "resource_attributes"),
            serde_json::json!({"service.name": "svc"})
        );
        assert_eq!(text(row, "resource_schema_url"), "https://resource");
        assert_eq!(text(row, "scope_name"), "lib");
        assert_eq!(text(row, "scope_version"), "1.2");
        assert_eq!(
            json(row, "scope_attributes"),
            serde_json::json!({"scope.k": "v"})
        );
        assert_eq!(text(row, "scope_schema_url"), "https://scope");
    }

    #[test]
    fn every_body_kind_is_encoded_like_an_attribute_value() {
        let body = |v| body_json(value(v));
        assert_eq!(
            body(Value::StringValue("a \"quoted\"\0 line".into())).as_deref(),
            Some(r#""a \"quoted\"\ufffd line""#)
        );
        assert_eq!(body(Value::BoolValue(true)).as_deref(), Some("true"));
        assert_eq!(
            body(Value::IntValue(i64::MIN)).as_deref(),
            Some("-9223372036854775808")
        );
        assert_eq!(body(Value::DoubleValue(1.0)).as_deref(), Some("1.0"));
        assert_eq!(
            body(Value::DoubleValue(f64::NAN)).as_deref(),
            Some(r#"{"$double":"NaN"}"#)
        );
        assert_eq!(
            body(Value::BytesValue(vec![0, 1, 0xfe, 0xff])).as_deref(),
            Some(r#"{"$bytes":"AAH+/w=="}"#)
        );
        let array = Value::ArrayValue(ArrayValue {
            values: vec![
                AnyValue {
                    value: Some(Value::IntValue(1)),
                },
                AnyValue { value: None },
            ],
        });
        assert_eq!(body(array).as_deref(), Some("[1,null]"));
        let map = Value::KvlistValue(KeyValueList {
            values: vec![
                string_kv("$bytes", "not bytes"),
                kv("k", value(Value::BoolValue(false))),
                kv("unset", None),
            ],
        });
        assert_eq!(
            body(map).as_deref(),
            Some(r#"{"$$bytes":"not bytes","k":false,"unset":null}"#)
        );
    }

    #[test]
    fn an_empty_or_absent_body_is_sql_null() {
        assert_eq!(body_json(Some(AnyValue { value: None })), None);
        assert_eq!(body_json(None), None);
    }

    #[test]
    fn time_falls_back_to_the_observed_time() {
        let mut observed_only = record(1);
        observed_only.time_unix_nano = 0;
        let mut neither = record(2);
        neither.time_unix_nano = 0;
        neither.observed_time_unix_nano = 0;
        let mut time_only = record(3);
        time_only.observed_time_unix_nano = 0;
        let (rows, encoded) = encode_rows(&request_with(vec![observed_only, neither, time_only]));
        assert_eq!(encoded.rejected, 0);
        assert_eq!(int8(&rows[0], "time"), TIME_MICROS + 1);
        assert_eq!(int8(&rows[0], "time_unix_nano"), 0);
        assert_eq!(
            int8(&rows[0], "observed_time_unix_nano"),
            TIME as i64 + 1_000
        );
        assert_eq!(
            int8(&rows[1], "time"),
            -946_684_800_000_000,
            "the Unix epoch"
        );
        assert_eq!(int8(&rows[1], "observed_time_unix_nano"), 0);
        assert_eq!(int8(&rows[2], "time"), TIME_MICROS);
        assert_eq!(int8(&rows[2], "observed_time_unix_nano"), 0);
    }

    #[test]
    fn records_without_trace_context_have_null_ids() {
        let mut untraced = record(1);
        untraced.trace_id = Vec::new();
        untraced.span_id = Vec::new();
        let mut trace_only = record(2);
        trace_only.span_id = Vec::new();
        let (rows, _) = encode_rows(&request_with(vec![untraced, trace_only]));
        assert_eq!(
            (column(&rows[0], "trace_id"), column(&rows[0], "span_id")),
            (&None, &None)
        );
        assert_eq!(
            (column(&rows[1], "trace_id"), column(&rows[1], "span_id")),
            (&Some(vec![2; 16]), &None)
        );
    }

    #[test]
    fn a_bare_record_has_defaults_and_no_resource_or_scope() {
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: None,
                scope_logs: vec![ScopeLogs {
                    scope: None,
                    log_records: vec![LogRecord::default()],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let (rows, encoded) = encode_rows(&request);
        assert_eq!((encoded.rejected, rows.len()), (0, 1));
        let row = &rows[0];
        assert_eq!(int2(row, "severity_number"), 0);
        assert_eq!(text(row, "severity_text"), "");
        assert_eq!(column(row, "body"), &None);
        assert_eq!(json(row, "attributes"), serde_json::json!({}));
        assert_eq!(
            (int4(row, "dropped_attributes_count"), int4(row, "flags")),
            (0, 0)
        );
        assert_eq!(text(row, "event_name"), "");
        assert_eq!(text(row, "service_name"), "");
        assert_eq!(json(row, "resource_attributes"), serde_json::json!({}));
        assert_eq!(text(row, "scope_name"), "");
        assert_eq!(json(row, "scope_attributes"), serde_json::json!({}));
    }

    #[test]
    fn dropped_attribute_counts_saturate() {
        let mut many = record(1);
        many.dropped_attributes_count = u32::MAX;
        let (rows, _) = encode_rows(&request_with(vec![many]));
        assert_eq!(int4(&rows[0], "dropped_attributes_count"), i32::MAX);
    }

    #[test]
    fn records_that_do_not_fit_are_rejected_and_their_neighbours_kept() {
        let mut late = record(1);
        late.time_unix_nano = i64::MAX as u64 + 1;
        let mut late_observed = record(3);
        late_observed.observed_time_unix_nano = u64::MAX;
        let mut odd_severity = record(4);
        odd_severity.severity_number = 40_000;
        let mut last_instant = record(5);
        last_instant.time_unix_nano = i64::MAX as u64;
        let (rows, encoded) = encode_rows(&request_with(vec![
            record(0),
            late,
            record(2),
            late_observed,
            odd_severity,
            last_instant,
        ]));
        assert_eq!(rows.len(), 3);
        assert_eq!(encoded.rows.rows(), 3);
        assert_eq!(column(&rows[0], "span_id"), &Some(vec![0; 8]));
        assert_eq!(column(&rows[1], "span_id"), &Some(vec![2; 8]));
        assert_eq!(int8(&rows[2], "time_unix_nano"), i64::MAX);
        assert_eq!(encoded.rejected, 3);
        assert_eq!(
            encoded.first_rejection.as_deref(),
            Some(
                r#"log record 1 of the request (service "svc"): time_unix_nano 9223372036854775808 is after 2262-04-11, the last instant a bigint of nanoseconds holds"#
            )
        );

        let mut odd_severity = record(1);
        odd_severity.severity_number = -40_000;
        let (_, encoded) = encode_rows(&request_with(vec![odd_severity]));
        assert_eq!(
            encoded.first_rejection.as_deref(),
            Some(
                r#"log record 0 of the request (service "svc"): severity_number -40000 is not a valid OTLP value"#
            )
        );
    }

    #[test]
    fn records_are_numbered_across_groups() {
        let mut request = request_with(vec![record(0), record(1)]);
        let mut late = record(2);
        late.observed_time_unix_nano = u64::MAX;
        request.resource_logs.push(ResourceLogs {
            resource: Some(Resource {
                attributes: vec![string_kv("service.name", "other")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: None,
                log_records: vec![late],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        });
        let (rows, encoded) = encode_rows(&request);
        assert_eq!((rows.len(), encoded.rejected), (2, 1));
        let message = encoded.first_rejection.expect("a rejection");
        assert!(message.starts_with(r#"log record 2 of the request (service "other"): observed_time_unix_nano 18446744073709551615"#), "{message}");
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
            Some("ExportLogsServiceRequest: truncated varint".into())
        );
        let otlp = request_with(vec![record(1)]).encode_to_vec();
        let error = encode(&otlp[..otlp.len() - 3]).err().expect("truncated");
        assert_eq!(error.reason, "field runs past the end of its message");
        // LogRecord.flags (8) as a varint instead of fixed32.
        let record = [0x40, 0x01];
        let scope_logs = [&[0x12, record.len() as u8][..], &record].concat();
        let resource_logs = [&[0x12, scope_logs.len() as u8][..], &scope_logs].concat();
        let request = [&[0x0a, resource_logs.len() as u8][..], &resource_logs].concat();
        assert_eq!(
            encode(&request).err().map(|e| e.to_string()),
            Some("LogRecord.flags: wrong wire type, expected fixed32".into())
        );
    }

    #[test]
    fn invalid_utf8_names_the_field() {
        for (field, set) in [
            (
                "LogRecord.severity_text",
                (|r: &mut LogRecord| r.severity_text = "MARKER".into()) as fn(&mut LogRecord),
            ),
            ("LogRecord.event_name", |r| r.event_name = "MARKER".into()),
            ("AnyValue.string_value", |r| {
                r.body = value(Value::StringValue("MARKER".into()))
            }),
        ] {
            let mut bad = record(1);
            set(&mut bad);
            let mut otlp = request_with(vec![bad]).encode_to_vec();
            let at = otlp
                .windows(6)
                .position(|w| w == b"MARKER")
                .expect("marker present");
            otlp[at] = 0xff;
            assert_eq!(
                encode(&otlp).err().map(|e| e.to_string()),
                Some(format!("{field}: string is not valid UTF-8"))
            );
        }
    }

    #[test]
    fn ten_thousand_records_in_one_request() {
        let records = (0..10_000u32)
            .map(|i| {
                let mut r = record(0);
                r.span_id = u64::from(i).to_be_bytes().to_vec();
                r
            })
            .collect();
        let (rows, encoded) = encode_rows(&request_with(records));
        assert_eq!(encoded.rows.rows(), 10_000);
        assert_eq!(rows.len(), 10_000);
        assert_eq!(
            column(&rows[9_999], "span_id"),
            &Some(9_999u64.to_be_bytes().to_vec())
        );
    }
}
