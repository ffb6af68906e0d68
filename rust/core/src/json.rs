//! JSON text for jsonb columns, written straight from the protobuf bytes of a request into the
//! COPY buffer: attribute lists, events, links. The encoding keeps every OTLP value kind apart;
//! schema/README.md documents it.

use std::io::Write as _;

use base64::Engine;

use crate::wire::{Fields, WireError};

/// Arrays and maps nest at most this deep inside one attribute value.
const MAX_DEPTH: usize = 64;

/// `{"key": value, ...}` for the attribute list in field `field` of `message`. Duplicate keys are
/// written as sent; PostgreSQL keeps the last one.
pub fn write_attributes(
    out: &mut Vec<u8>,
    message: &[u8],
    field: u32,
    path: &'static str,
) -> Result<(), WireError> {
    out.push(b'{');
    let mut first = true;
    for entry in Fields::new(message, path) {
        let (number, value) = entry?;
        if number == field {
            if !first {
                out.push(b',');
            }
            first = false;
            write_key_value(out, value.bytes(path)?, false, 0)?;
        }
    }
    out.push(b'}');
    Ok(())
}

/// The key and value of one KeyValue. Inside a map value (`nested`), a key starting with '$' gets
/// one more, so `{"$bytes": ...}` and the other tagged forms can only ever mean a tagged value.
fn write_key_value(
    out: &mut Vec<u8>,
    key_value: &[u8],
    nested: bool,
    depth: usize,
) -> Result<(), WireError> {
    let mut key = "";
    let mut value = None;
    for entry in Fields::new(key_value, "KeyValue") {
        match entry? {
            (1, v) => key = v.string("KeyValue.key")?,
            (2, v) => value = Some(v.bytes("KeyValue.value")?),
            _ => {}
        }
    }
    if nested && key.starts_with('$') {
        write_string_parts(out, "$", key);
    } else {
        write_string(out, key);
    }
    out.push(b':');
    write_value(out, value, depth)
}

/// One AnyValue (its message bytes) as a JSON value, encoded as attribute values are.
pub fn write_any_value(out: &mut Vec<u8>, value: &[u8]) -> Result<(), WireError> {
    write_value(out, Some(value), 0)
}

fn write_value(out: &mut Vec<u8>, value: Option<&[u8]>, depth: usize) -> Result<(), WireError> {
    // AnyValue is a oneof: the last variant on the wire wins.
    let mut variant = None;
    if let Some(bytes) = value {
        for entry in Fields::new(bytes, "AnyValue") {
            let (number, v) = entry?;
            if (1..=8).contains(&number) {
                variant = Some((number, v));
            }
        }
    }
    let Some((number, v)) = variant else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    match number {
        1 => write_string(out, v.string("AnyValue.string_value")?),
        2 => out.extend_from_slice(if v.varint("AnyValue.bool_value")? != 0 {
            b"true"
        } else {
            b"false"
        }),
        3 => write_int(out, v.varint("AnyValue.int_value")? as i64),
        4 => {
            let double = f64::from_bits(v.fixed64("AnyValue.double_value")?);
            if double.is_finite() {
                write_double(out, double);
            } else {
                // JSON has no such numbers.
                let name = if double.is_nan() {
                    "NaN"
                } else if double > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                };
                out.extend_from_slice(b"{\"$double\":\"");
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"\"}");
            }
        }
        5 | 6 => {
            if depth >= MAX_DEPTH {
                return Err(WireError {
                    path: "AnyValue",
                    reason: "arrays and maps nest deeper than 64 levels",
                });
            }
            let map = number == 6;
            let path = if map {
                "AnyValue.kvlist_value"
            } else {
                "AnyValue.array_value"
            };
            out.push(if map { b'{' } else { b'[' });
            let mut first = true;
            for entry in Fields::new(v.bytes(path)?, path) {
                let (element_number, element) = entry?;
                if element_number != 1 {
                    continue;
                }
                if !first {
                    out.push(b',');
                }
                first = false;
                let element = element.bytes(path)?;
                if map {
                    write_key_value(out, element, true, depth + 1)?;
                } else {
                    write_value(out, Some(element), depth + 1)?;
                }
            }
            out.push(if map { b'}' } else { b']' });
        }
        7 => {
            let bytes = v.bytes("AnyValue.bytes_value")?;
            out.extend_from_slice(b"{\"$bytes\":\"");
            let start = out.len();
            out.resize(
                start + base64::encoded_len(bytes.len(), true).unwrap_or(0),
                0,
            );
            let written = base64::engine::general_purpose::STANDARD
                .encode_slice(bytes, &mut out[start..])
                .unwrap_or(0);
            out.truncate(start + written);
            out.extend_from_slice(b"\"}");
        }
        // Only meaningful inside a profile's string table; kept as the index it is.
        _ => {
            out.extend_from_slice(b"{\"$strindex\":");
            write_int(out, i64::from(v.int32("AnyValue.string_value_strindex")?));
            out.push(b'}');
        }
    }
    Ok(())
}

/// `[{"time_unix_nano", "name", "attributes", "dropped_attributes_count"}, ...]` for the events in
/// field `field` of a span.
pub fn write_events(out: &mut Vec<u8>, span: &[u8], field: u32) -> Result<(), WireError> {
    out.push(b'[');
    let mut first = true;
    for entry in Fields::new(span, "Span") {
        let (number, value) = entry?;
        if number != field {
            continue;
        }
        let event = value.bytes("Span.events")?;
        let (mut time, mut name, mut dropped) = (0, "", 0);
        for entry in Fields::new(event, "Event") {
            match entry? {
                (1, v) => time = v.fixed64("Event.time_unix_nano")?,
                (2, v) => name = v.string("Event.name")?,
                (4, v) => dropped = v.uint32("Event.dropped_attributes_count")?,
                _ => {}
            }
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b"{\"time_unix_nano\":");
        write_uint(out, time);
        out.extend_from_slice(b",\"name\":");
        write_string(out, name);
        out.extend_from_slice(b",\"attributes\":");
        write_attributes(out, event, 3, "Event.attributes")?;
        out.extend_from_slice(b",\"dropped_attributes_count\":");
        write_uint(out, u64::from(dropped));
        out.push(b'}');
    }
    out.push(b']');
    Ok(())
}

/// `[{"trace_id", "span_id", "trace_state", "flags", "attributes", "dropped_attributes_count"}, ...]`
/// for the links in field `field` of a span.
pub fn write_links(out: &mut Vec<u8>, span: &[u8], field: u32) -> Result<(), WireError> {
    out.push(b'[');
    let mut first = true;
    for entry in Fields::new(span, "Span") {
        let (number, value) = entry?;
        if number != field {
            continue;
        }
        let link = value.bytes("Span.links")?;
        let (mut trace_id, mut span_id, mut trace_state, mut dropped, mut flags) =
            (&[][..], &[][..], "", 0, 0);
        for entry in Fields::new(link, "Link") {
            match entry? {
                (1, v) => trace_id = v.bytes("Link.trace_id")?,
                (2, v) => span_id = v.bytes("Link.span_id")?,
                (3, v) => trace_state = v.string("Link.trace_state")?,
                (5, v) => dropped = v.uint32("Link.dropped_attributes_count")?,
                (6, v) => flags = v.fixed32("Link.flags")?,
                _ => {}
            }
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b"{\"trace_id\":");
        write_hex(out, trace_id);
        out.extend_from_slice(b",\"span_id\":");
        write_hex(out, span_id);
        out.extend_from_slice(b",\"trace_state\":");
        write_string(out, trace_state);
        out.extend_from_slice(b",\"flags\":");
        write_uint(out, u64::from(flags));
        out.extend_from_slice(b",\"attributes\":");
        write_attributes(out, link, 4, "Link.attributes")?;
        out.extend_from_slice(b",\"dropped_attributes_count\":");
        write_uint(out, u64::from(dropped));
        out.push(b'}');
    }
    out.push(b']');
    Ok(())
}

/// `[{"time_unix_nano", "value", "trace_id", "span_id", "filtered_attributes"}, ...]` for the
/// exemplars in field `field` of a metric data point. The value is an int or a double as in
/// attributes, null when unset; the ids are lower-case hex as in links.
pub(crate) fn write_exemplars(
    out: &mut Vec<u8>,
    point: &[u8],
    field: u32,
    path: &'static str,
) -> Result<(), WireError> {
    out.push(b'[');
    let mut first = true;
    for entry in Fields::new(point, path) {
        let (number, value) = entry?;
        if number != field {
            continue;
        }
        let exemplar = value.bytes(path)?;
        let (mut time, mut trace_id, mut span_id) = (0, &[][..], &[][..]);
        // A oneof: the last variant on the wire wins.
        let mut int_or_double = None;
        for entry in Fields::new(exemplar, "Exemplar") {
            match entry? {
                (2, v) => time = v.fixed64("Exemplar.time_unix_nano")?,
                (3, v) => int_or_double = Some(Err(v.double("Exemplar.as_double")?)),
                (4, v) => span_id = v.bytes("Exemplar.span_id")?,
                (5, v) => trace_id = v.bytes("Exemplar.trace_id")?,
                (6, v) => int_or_double = Some(Ok(v.sfixed64("Exemplar.as_int")?)),
                _ => {}
            }
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b"{\"time_unix_nano\":");
        write_uint(out, time);
        out.extend_from_slice(b",\"value\":");
        match int_or_double {
            Some(Ok(int)) => write_int(out, int),
            Some(Err(double)) => write_any_double(out, double),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"trace_id\":");
        write_hex(out, trace_id);
        out.extend_from_slice(b",\"span_id\":");
        write_hex(out, span_id);
        out.extend_from_slice(b",\"filtered_attributes\":");
        write_attributes(out, exemplar, 7, "Exemplar.filtered_attributes")?;
        out.push(b'}');
    }
    out.push(b']');
    Ok(())
}

/// A double as an attribute's double_value is written: a number, or `{"$double": "NaN"}` and the
/// infinities, which JSON has no numbers for.
fn write_any_double(out: &mut Vec<u8>, value: f64) {
    if value.is_finite() {
        write_double(out, value);
    } else {
        let name = if value.is_nan() {
            "NaN"
        } else if value > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        };
        out.extend_from_slice(b"{\"$double\":\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\"}");
    }
}

/// A double always keeps a fraction in jsonb, so it never reads back as an int: ryu's shortest form
/// ("1.0", "2.5e-7") does, except with a positive exponent ("1e16"), which jsonb expands to the
/// integer digits; those doubles are integral and get their exact digits and ".0" instead.
fn write_double(out: &mut Vec<u8>, value: f64) {
    let mut buffer = ryu::Buffer::new();
    let shortest = buffer.format_finite(value);
    if shortest.contains('e') && !shortest.contains("e-") {
        let _ = write!(out, "{value:.1}");
    } else {
        out.extend_from_slice(shortest.as_bytes());
    }
}

fn write_int(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

fn write_uint(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Lower-case hex as a JSON string.
fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 0x0f)]);
    }
    out.push(b'"');
}

pub fn write_string(out: &mut Vec<u8>, s: &str) {
    write_string_parts(out, "", s);
}

/// A JSON string of `prefix` followed by `s`. jsonb cannot hold U+0000, so NUL becomes U+FFFD, the
/// same replacement text columns get.
fn write_string_parts(out: &mut Vec<u8>, prefix: &str, s: &str) {
    out.push(b'"');
    out.extend_from_slice(prefix.as_bytes());
    let bytes = s.as_bytes();
    // Most strings need no escape. This scan has no early exit so that it vectorizes; the loop
    // below does not.
    if !bytes.iter().fold(false, |special, &b| {
        special | (b < 0x20) | (b == b'"') | (b == b'\\')
    }) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut copied = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0 => b"\\ufffd",
            0x01..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[copied..i]);
        if escape.is_empty() {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(DIGITS[usize::from(byte >> 4)]);
            out.push(DIGITS[usize::from(byte & 0x0f)]);
        } else {
            out.extend_from_slice(escape);
        }
        copied = i + 1;
    }
    out.extend_from_slice(&bytes[copied..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{kv, value};
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;

    fn attributes_json(attributes: &[KeyValue]) -> String {
        let span = Span {
            attributes: attributes.to_vec(),
            ..Default::default()
        }
        .encode_to_vec();
        let mut out = Vec::new();
        write_attributes(&mut out, &span, 9, "Span.attributes").expect("valid");
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn every_value_kind_is_encoded_distinctly() {
        let json = attributes_json(&[
            kv("s", value(Value::StringValue("text".into()))),
            kv("b", value(Value::BoolValue(true))),
            kv("i", value(Value::IntValue(i64::MIN))),
            kv("d", value(Value::DoubleValue(1.0))),
            kv("e", value(Value::DoubleValue(2.5e-300))),
            kv("nan", value(Value::DoubleValue(f64::NAN))),
            kv("inf", value(Value::DoubleValue(f64::NEG_INFINITY))),
            kv("bytes", value(Value::BytesValue(vec![0, 1, 254, 255]))),
            kv(
                "arr",
                value(Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(Value::IntValue(1)),
                        },
                        AnyValue { value: None },
                    ],
                })),
            ),
            kv(
                "map",
                value(Value::KvlistValue(KeyValueList {
                    values: vec![
                        kv("$bytes", value(Value::StringValue("not bytes".into()))),
                        kv("k", value(Value::BoolValue(false))),
                    ],
                })),
            ),
            kv("unset", None),
        ]);
        assert_eq!(
            json,
            r#"{"s":"text","b":true,"i":-9223372036854775808,"d":1.0,"e":2.5e-300,"nan":{"$double":"NaN"},"inf":{"$double":"-Infinity"},"bytes":{"$bytes":"AAH+/w=="},"arr":[1,null],"map":{"$$bytes":"not bytes","k":false},"unset":null}"#
        );
        serde_json::from_str::<serde_json::Value>(&json).expect("valid JSON");
    }

    #[test]
    fn nesting_is_bounded() {
        let mut nested = AnyValue {
            value: Some(Value::IntValue(1)),
        };
        for _ in 0..MAX_DEPTH {
            nested = AnyValue {
                value: Some(Value::ArrayValue(ArrayValue {
                    values: vec![nested],
                })),
            };
        }
        let json = attributes_json(&[kv("deep", Some(nested.clone()))]);
        assert!(
            json.ends_with(&format!("1{}}}", "]".repeat(MAX_DEPTH))),
            "{json}"
        );

        let deeper = AnyValue {
            value: Some(Value::ArrayValue(ArrayValue {
                values: vec![nested],
            })),
        };
        let span = Span {
            attributes: vec![kv("deep", Some(deeper))],
            ..Default::default()
        }
        .encode_to_vec();
        let error =
            write_attributes(&mut Vec::new(), &span, 9, "Span.attributes").expect_err("too deep");
        assert_eq!(
            error.to_string(),
            "AnyValue: arrays and maps nest deeper than 64 levels"
        );
    }

    #[test]
    fn the_last_variant_of_a_oneof_wins() {
        // AnyValue{string_value: "a", int_value: 7} as two fields on the wire.
        let key_value = [0x0a, 0x01, b'k', 0x12, 0x05, 0x0a, 0x01, b'a', 0x18, 0x07];
        let mut span = vec![0x4a, key_value.len() as u8];
        span.extend_from_slice(&key_value);
        let mut out = Vec::new();
        write_attributes(&mut out, &span, 9, "Span.attributes").expect("valid");
        assert_eq!(String::from_utf8(out).expect("UTF-8"), r#"{"k":7}"#);
    }

    #[test]
    fn large_doubles_keep_a_fraction() {
        let json = attributes_json(&[
            kv("big", value(Value::DoubleValue(1e16))),
            kv("max", value(Value::DoubleValue(f64::MAX))),
            kv("small", value(Value::DoubleValue(-1.5e-7))),
        ]);
        assert!(
            json.starts_with(r#"{"big":10000000000000000.0,"max":17976931348623157"#),
            "{json}"
        );
        assert!(json.ends_with(r#".0,"small":-1.5e-7}"#), "{json}");
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(parsed["max"].as_f64(), Some(f64::MAX));
    }

    #[test]
    fn strings_are_escaped_and_nul_is_replaced() {
        let json = attributes_json(&[kv(
            "q\"\\",
            value(Value::StringValue("a\nb\tc\u{1}\0é😀".into())),
        )]);
        assert_eq!(json, "{\"q\\\"\\\\\":\"a\\nb\\tc\\u0001\\ufffdé😀\"}");
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(parsed["q\"\\"], "a\nb\tc\u{1}\u{fffd}é😀");
    }

    #[test]
    fn empty_and_duplicate_keys_are_kept_as_sent() {
        let json = attributes_json(&[
            kv("", value(Value::IntValue(1))),
            kv("dup", value(Value::IntValue(1))),
            kv("dup", value(Value::IntValue(2))),
        ]);
        assert_eq!(json, r#"{"":1,"dup":1,"dup":2}"#);
        assert_eq!(attributes_json(&[]), "{}");
    }

    #[test]
    fn events_and_links_carry_every_field() {
        let span = Span {
            events: vec![Event {
                time_unix_nano: u64::MAX,
                name: "ev".into(),
                attributes: vec![kv("a", value(Value::IntValue(1)))],
                dropped_attributes_count: 3,
            }],
            ..Default::default()
        }
        .encode_to_vec();
        let mut out = Vec::new();
        write_events(&mut out, &span, 11).expect("valid");
        assert_eq!(
            String::from_utf8(out).expect("UTF-8"),
            r#"[{"time_unix_nano":18446744073709551615,"name":"ev","attributes":{"a":1},"dropped_attributes_count":3}]"#
        );
        let span = Span {
            links: vec![Link {
                trace_id: vec![0xab; 16],
                span_id: vec![0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef],
                trace_state: "k=v".into(),
                attributes: vec![],
                dropped_attributes_count: 0,
                flags: 257,
            }],
            ..Default::default()
        }
        .encode_to_vec();
        let mut out = Vec::new();
        write_links(&mut out, &span, 13).expect("valid");
        assert_eq!(
            String::from_utf8(out).expect("UTF-8"),
            r#"[{"trace_id":"abababababababababababababababab","span_id":"0123456789abcdef","trace_state":"k=v","flags":257,"attributes":{},"dropped_attributes_count":0}]"#
        );
    }

    #[test]
    fn exemplars_keep_int_and_double_apart() {
        use opentelemetry_proto::tonic::metrics::v1::{exemplar, Exemplar, NumberDataPoint};
        let exemplar = |value, filtered_attributes| Exemplar {
            filtered_attributes,
            time_unix_nano: u64::MAX,
            span_id: vec![0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef],
            trace_id: vec![0xab; 16],
            value,
        };
        let point = NumberDataPoint {
            exemplars: vec![
                exemplar(
                    Some(exemplar::Value::AsInt(-3)),
                    vec![kv("a", value(Value::IntValue(1)))],
                ),
                exemplar(Some(exemplar::Value::AsDouble(2.0)), vec![]),
                exemplar(Some(exemplar::Value::AsDouble(f64::NEG_INFINITY)), vec![]),
                Exemplar::default(),
            ],
            ..Default::default()
        }
        .encode_to_vec();
        let mut out = Vec::new();
        write_exemplars(&mut out, &point, 5, "NumberDataPoint.exemplars").expect("valid");
        let ids = r#""trace_id":"abababababababababababababababab","span_id":"0123456789abcdef""#;
        assert_eq!(
            String::from_utf8(out).expect("UTF-8"),
            format!(
                r#"[{{"time_unix_nano":18446744073709551615,"value":-3,{ids},"filtered_attributes":{{"a":1}}}},{{"time_unix_nano":18446744073709551615,"value":2.0,{ids},"filtered_attributes":{{}}}},{{"time_unix_nano":18446744073709551615,"value":{{"$double":"-Infinity"}},{ids},"filtered_attributes":{{}}}},{{"time_unix_nano":0,"value":null,"trace_id":"","span_id":"","filtered_attributes":{{}}}}]"#
            )
        );
    }
}
