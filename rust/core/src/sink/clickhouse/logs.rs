//! `otel_logs`: one Native block per export request, one row per log record, written column by
//! column straight from the protobuf bytes.
//!
//! Values follow the contrib clickhouseexporter (exporter_logs.go), so that dashboards and queries
//! written for its tables read these the same way:
//!
//! * `Timestamp` is the record's `time_unix_nano`, or its `observed_time_unix_nano` when that is 0
//!   (1970-01-01 when both are); `TimestampTime` is not sent: the table's default,
//!   `toDateTime(Timestamp)`, fills it, as for contrib;
//! * `TraceId` and `SpanId` are lower-case hex, and `""` for an id that is empty or all zeros;
//! * `TraceFlags` is the low byte of `flags` (the W3C trace flags; OTLP reserves the rest);
//! * `SeverityNumber` is the number as sent, `SeverityText` the text as sent;
//! * `ServiceName` is `AsString()` of the first `service.name` resource attribute, whatever its
//!   type;
//! * `Body` is `AsString()` of the body (see gostring.rs): `""` when there is none, JSON for a map
//!   or array;
//! * the attribute maps hold every key/value pair, duplicates included, sorted by key (pairs of one
//!   key as sent), each value as `AsString()`; the schema URLs, scope name and version and
//!   `EventName` are the strings sent.
//!
//! Where we differ: a record whose `Timestamp` would be past 2262-04-11 (beyond DateTime64(9)'s
//! Int64) is rejected and counted, as in PostgreSQL (contrib wraps it to a date before 1970); so is
//! a record whose `severity_number` is outside 0 to 255, which the UInt8 column cannot hold
//! (contrib keeps the low byte: -1 becomes 255 and counts as an error in the rollups, 273 becomes
//! 17). `observed_time_unix_nano` is checked only when it is the time stored. Ids of the wrong
//! length are written as hex of the bytes sent (contrib's decoder refuses the whole request).
//!
//! As with contrib, a `Timestamp` after 2106-02-07 is kept, but ClickHouse's `toDateTime` wraps it
//! around in `TimestampTime` and in the table's TTL expression (DateTime is 32-bit).

use super::columns::{push_hex, too_late, CachedAttributes, SortedPairs, Tally};
use super::gostring::write_as_string;
use super::native::{Block, Data, Fixed64, Fixed8, StringMap, Strings};
use super::{Blocks, Table};
use crate::sink::envelope::{self, Group};
use crate::sink::log_record::LogRecordFields;
use crate::sink::Encoded;
use crate::wire::WireError;

/// The columns of the INSERT, in block order, with the types their data is sent as. The server
/// converts `String` to the table's `LowCardinality(String)` and the map key likewise.
pub const COLUMNS: &[(&str, &str)] = &[
    ("Timestamp", "DateTime64(9)"),
    ("TraceId", "String"),
    ("SpanId", "String"),
    ("TraceFlags", "UInt8"),
    ("SeverityText", "String"),
    ("SeverityNumber", "UInt8"),
    ("ServiceName", "String"),
    ("Body", "String"),
    ("ResourceSchemaUrl", "String"),
    ("ResourceAttributes", "Map(String, String)"),
    ("ScopeSchemaUrl", "String"),
    ("ScopeName", "String"),
    ("ScopeVersion", "String"),
    ("ScopeAttributes", "Map(String, String)"),
    ("LogAttributes", "Map(String, String)"),
    ("EventName", "String"),
];

/// Encodes every log record of a serialized `ExportLogsServiceRequest`. A request that is not
/// valid protobuf, or holds a string that is not UTF-8, is an error as a whole; a record whose
/// values do not fit the table is left out and counted.
pub fn encode(otlp: &[u8]) -> Result<Encoded<Blocks>, WireError> {
    let mut columns = Columns::default();
    let mut resource = CachedAttributes::default();
    let mut scope = CachedAttributes::default();
    let mut pairs = SortedPairs::default();
    let mut tally = Tally::default();
    envelope::for_each_item_raw(otlp, &envelope::LOGS, |group, record| {
        let fields = LogRecordFields::read(record)?;
        // Log records have no id, so a rejection names the record's position in the request.
        let index = tally.items();
        resource.update(group.resource, &mut pairs)?;
        match column_values(&fields) {
            Ok(values) => {
                scope.update_scope(group.scope, &mut pairs)?;
                columns.row(
                    group, &resource, &scope, &mut pairs, record, &fields, values,
                )?;
                tally.keep();
            }
            Err(reason) => tally.reject(|| {
                format!(
                    "log record {index} of the request (service {:?}): {reason}",
                    String::from_utf8_lossy(&resource.service_name)
                )
            }),
        }
        Ok(())
    })?;
    Ok(tally.finish(Table::Logs, |rows| columns.block(rows)))
}

#[derive(Default)]
struct Columns {
    timestamp: Fixed64,
    trace_id: Strings,
    span_id: Strings,
    trace_flags: Fixed8,
    severity_text: Strings,
    severity_number: Fixed8,
    service_name: Strings,
    body: Strings,
    resource_schema_url: Strings,
    resource_attributes: StringMap,
    scope_schema_url: Strings,
    scope_name: Strings,
    scope_version: Strings,
    scope_attributes: StringMap,
    log_attributes: StringMap,
    event_name: Strings,
}

impl Columns {
    /// Writes one record, whose `Timestamp` and `SeverityNumber` were checked. Only a malformed
    /// request can fail here, and that fails the whole request: a half-written row is never kept.
    #[allow(clippy::too_many_arguments)]
    fn row<'a>(
        &mut self,
        group: &Group<'_, '_>,
        resource: &CachedAttributes,
        scope: &CachedAttributes,
        pairs: &mut SortedPairs<'a>,
        record: &'a [u8],
        fields: &LogRecordFields<'_>,
        (timestamp, severity_number): (i64, u8),
    ) -> Result<(), WireError> {
        self.timestamp.push_i64(timestamp);
        push_hex(&mut self.trace_id, fields.trace_id);
        push_hex(&mut self.span_id, fields.span_id);
        // The low byte: the W3C trace flags.
        self.trace_flags.push(fields.flags as u8);
        self.severity_text.push(fields.severity_text.as_bytes());
        self.severity_number.push(severity_number);
        self.service_name.push(&resource.service_name);
        self.body
            .push_with(|out| write_as_string(out, fields.body.unwrap_or_default()))?;
        self.resource_schema_url
            .push(group.resource_schema_url.as_bytes());
        resource.write_row(&mut self.resource_attributes);
        self.scope_schema_url
            .push(group.scope_schema_url.as_bytes());
        self.scope_name.push(group.scope_name.as_bytes());
        self.scope_version.push(group.scope_version.as_bytes());
        scope.write_row(&mut self.scope_attributes);
        pairs.read_into(&mut self.log_attributes, record, 6, "LogRecord.attributes")?;
        self.event_name.push(fields.event_name.as_bytes());
        Ok(())
    }

    fn block(&self, rows: u64) -> Vec<u8> {
        let data: [Data<'_>; 16] = [
            Data::Fixed64(&self.timestamp),
            Data::Strings(&self.trace_id),
            Data::Strings(&self.span_id),
            Data::Fixed8(&self.trace_flags),
            Data::Strings(&self.severity_text),
            Data::Fixed8(&self.severity_number),
            Data::Strings(&self.service_name),
            Data::Strings(&self.body),
            Data::Strings(&self.resource_schema_url),
            Data::StringMap(&self.resource_attributes),
            Data::Strings(&self.scope_schema_url),
            Data::Strings(&self.scope_name),
            Data::Strings(&self.scope_version),
            Data::StringMap(&self.scope_attributes),
            Data::StringMap(&self.log_attributes),
            Data::Strings(&self.event_name),
        ];
        Block::of(COLUMNS, &data, rows)
    }
}

/// `Timestamp` (nanoseconds) and `SeverityNumber` as their columns take them, or why the record
/// does not fit.
fn column_values(fields: &LogRecordFields<'_>) -> Result<(i64, u8), String> {
    let (field, time) = if fields.time_unix_nano != 0 {
        ("time_unix_nano", fields.time_unix_nano)
    } else {
        ("observed_time_unix_nano", fields.observed_time_unix_nano)
    };
    let timestamp = i64::try_from(time).map_err(|_| too_late(field, time))?;
    let severity_number = u8::try_from(fields.severity_number).map_err(|_| {
        format!(
            "severity_number {} is outside 0 to 255, what the UInt8 column holds",
            fields.severity_number
        )
    })?;
    Ok((timestamp, severity_number))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::clickhouse::native::read::{self, Cell};
    use crate::sink::Rows;
    use crate::testdata::{kv, log_record, logs_request_with, string_kv, value, TIME};
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::KeyValueList;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;

    fn logs(records: Vec<LogRecord>) -> Vec<u8> {
        logs_request_with(records).encode_to_vec()
    }

    /// The cells of every column of the request's block, by column name.
    fn columns(otlp: &[u8]) -> Vec<(String, Vec<Cell>)> {
        let encoded = encode(otlp).expect("valid");
        let block = encoded.rows.block(Table::Logs).expect("a block");
        let columns = read::block(block);
        let types: Vec<_> = columns
            .iter()
            .map(|c| (c.name.as_str(), c.data_type.as_str()))
            .collect();
        assert_eq!(types, COLUMNS);
        columns.into_iter().map(|c| (c.name, c.cells)).collect()
    }

    fn str(s: &str) -> Cell {
        Cell::Str(s.into())
    }

    fn map(pairs: &[(&str, &str)]) -> Cell {
        Cell::Map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn an_empty_request_has_no_block() {
        let encoded = encode(&[]).expect("valid");
        assert_eq!(
            (
                encoded.rows.rows(),
                encoded.rejected,
                encoded.rows.block(Table::Logs)
            ),
            (0, 0, None)
        );
        let encoded = encode(&logs(vec![])).expect("valid");
        assert_eq!(encoded.rows.block(Table::Logs), None);
    }

    #[test]
    fn a_block_starts_with_its_column_and_row_counts() {
        let encoded = encode(&logs(vec![log_record(1), log_record(2)])).expect("valid");
        assert_eq!(encoded.rows.rows(), 2);
        let block = encoded.rows.block(Table::Logs).expect("a block");
        assert_eq!(&block[..2], &[16, 2]);
        assert_eq!(&block[2..26], b"\x09Timestamp\x0dDateTime64(9)");
    }

    #[test]
    fn records_that_do_not_fit_are_rejected_and_the_rest_kept() {
        let mut late = log_record(1);
        late.time_unix_nano = u64::MAX;
        let mut late_observed = log_record(2);
        late_observed.time_unix_nano = 0;
        late_observed.observed_time_unix_nano = i64::MAX as u64 + 1;
        // Not stored, so not checked.
        let mut observed_unused = log_record(3);
        observed_unused.observed_time_unix_nano = u64::MAX;
        let mut negative = log_record(4);
        negative.severity_number = -1;
        let mut too_severe = log_record(5);
        too_severe.severity_number = 256;
        let mut last_instant = log_record(6);
        last_instant.time_unix_nano = i64::MAX as u64;
        last_instant.severity_number = 255;
        let otlp = logs(vec![
            log_record(0),
            late,
            late_observed,
            observed_unused,
            negative,
            too_severe,
            last_instant,
        ]);
        let encoded = encode(&otlp).expect("valid");
        assert_eq!((encoded.rows.rows(), encoded.rejected), (3, 4));
        assert_eq!(
            encoded.first_rejection.as_deref(),
            Some(
                r#"log record 1 of the request (service "svc"): time_unix_nano 18446744073709551615 is after 2262-04-11, the last instant DateTime64(9) holds"#
            )
        );
        let columns = columns(&otlp);
        assert_eq!(
            columns[2],
            (
                "SpanId".into(),
                vec![str(""), str(&"03".repeat(8)), str(&"06".repeat(8))]
            )
        );
        assert_eq!(
            columns[0].1,
            vec![
                Cell::Int(TIME as i64),
                Cell::Int(TIME as i64),
                Cell::Int(i64::MAX)
            ]
        );
        assert_eq!(
            columns[5].1,
            vec![Cell::UInt(9), Cell::UInt(9), Cell::UInt(255)]
        );

        for (record, reason) in [
            (
                2,
                "observed_time_unix_nano 9223372036854775808 is after 2262-04-11, the last instant DateTime64(9) holds",
            ),
            (
                4,
                "severity_number -1 is outside 0 to 255, what the UInt8 column holds",
            ),
            (
                5,
                "severity_number 256 is outside 0 to 255, what the UInt8 column holds",
            ),
        ] {
            let mut request = ExportLogsServiceRequest::decode(otlp.as_slice()).expect("valid");
            request.resource_logs[0].scope_logs[0]
                .log_records
                .drain(..record);
            let encoded = encode(&request.encode_to_vec()).expect("valid");
            assert_eq!(
                encoded.first_rejection,
                Some(format!(
                    "log record 0 of the request (service \"svc\"): {reason}"
                ))
            );
        }
    }

    #[test]
    fn values_follow_contrib() {
        let full = LogRecord {
            time_unix_nano: 0,
            observed_time_unix_nano: TIME,
            severity_number: 17,
            severity_text: "ERROR".into(),
            body: value(Value::KvlistValue(KeyValueList {
                values: vec![
                    string_kv("z", "<1>"),
                    kv("a", value(Value::DoubleValue(1e21))),
                ],
            })),
            attributes: vec![
                kv("n", value(Value::IntValue(-3))),
                kv("ok", value(Value::BoolValue(true))),
                kv("none", None),
                kv("n", value(Value::BytesValue(vec![1, 2, 3]))),
            ],
            flags: 0x1ff,
            trace_id: vec![0xab; 16],
            span_id: vec![0; 8],
            event_name: "login".into(),
            ..Default::default()
        };
        // The service name is the first one's, whatever its type; a second scope has no
        // attributes, name or schema URL, and a record without any field gets the zero values.
        let mut request = logs_request_with(vec![full]);
        let group = &mut request.resource_logs[0];
        group.resource = Some(Resource {
            attributes: vec![
                kv("service.name", value(Value::IntValue(42))),
                string_kv("host.name", "h"),
                string_kv("service.name", "second"),
            ],
            ..Default::default()
        });
        group.scope_logs.push(ScopeLogs {
            log_records: vec![LogRecord::default()],
            ..Default::default()
        });
        let otlp = request.encode_to_vec();
        // Keys sorted, as contrib's client sorts them; the two service.name pairs as sent.
        let resource = map(&[
            ("host.name", "h"),
            ("service.name", "42"),
            ("service.name", "second"),
        ]);
        let want = [
            ("Timestamp", [Cell::Int(TIME as i64), Cell::Int(0)]),
            ("TraceId", [str(&"ab".repeat(16)), str("")]),
            ("SpanId", [str(""), str("")]),
            ("TraceFlags", [Cell::UInt(0xff), Cell::UInt(0)]),
            ("SeverityText", [str("ERROR"), str("")]),
            ("SeverityNumber", [Cell::UInt(17), Cell::UInt(0)]),
            ("ServiceName", [str("42"), str("42")]),
            ("Body", [str(r#"{"a":1e+21,"z":"<1>"}"#), str("")]),
            (
                "ResourceSchemaUrl",
                [str("https://resource"), str("https://resource")],
            ),
            ("ResourceAttributes", [resource.clone(), resource]),
            ("ScopeSchemaUrl", [str("https://scope"), str("")]),
            ("ScopeName", [str("lib"), str("")]),
            ("ScopeVersion", [str("1.2"), str("")]),
            ("ScopeAttributes", [map(&[("scope.k", "v")]), map(&[])]),
            (
                "LogAttributes",
                [
                    map(&[("n", "-3"), ("n", "AQID"), ("none", ""), ("ok", "true")]),
                    map(&[]),
                ],
            ),
            ("EventName", [str("login"), str("")]),
        ];
        let got = columns(&otlp);
        assert_eq!(got.len(), want.len());
        for ((name, cells), (want_name, want_cells)) in got.iter().zip(want) {
            assert_eq!(
                (name.as_str(), cells.as_slice()),
                (want_name, &want_cells[..])
            );
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(encode(&[0xff, 0xff, 0xff]).is_err());
        // A body that is not an AnyValue.
        let mut otlp = logs(vec![log_record(1)]);
        let at = otlp
            .windows(9)
            .position(|w| w == b"message 1")
            .expect("the body");
        otlp[at - 1] = 0xff;
        assert!(encode(&otlp).is_err());
    }
}
