//! JSON text for jsonb columns, written straight into the COPY buffer: attribute lists, events,
//! links. The encoding keeps every OTLP value kind apart; schema/README.md documents it.

use std::io::Write as _;

use base64::Engine;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};

/// `{"key": value, ...}` for a top-level attribute list. Duplicate keys are written as sent;
/// PostgreSQL keeps the last one.
pub fn write_attributes(out: &mut Vec<u8>, attributes: &[KeyValue]) {
    out.push(b'{');
    for (i, attribute) in attributes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, &attribute.key);
        out.push(b':');
        write_value(out, attribute.value.as_ref());
    }
    out.push(b'}');
}

fn write_value(out: &mut Vec<u8>, value: Option<&AnyValue>) {
    match value.and_then(|v| v.value.as_ref()) {
        None => out.extend_from_slice(b"null"),
        Some(Value::StringValue(s)) => write_string(out, s),
        Some(Value::BoolValue(b)) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Some(Value::IntValue(i)) => write_int(out, *i),
        Some(Value::DoubleValue(d)) if d.is_finite() => write_double(out, *d),
        Some(Value::DoubleValue(d)) => {
            let name = if d.is_nan() { "NaN" } else if *d > 0.0 { "Infinity" } else { "-Infinity" };
            out.extend_from_slice(b"{\"$double\":\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\"}");
        }
        // Only meaningful inside a profile's string table; kept as the index it is.
        Some(Value::StringValueStrindex(index)) => {
            out.extend_from_slice(b"{\"$strindex\":");
            write_int(out, i64::from(*index));
            out.push(b'}');
        }
        Some(Value::BytesValue(bytes)) => {
            out.extend_from_slice(b"{\"$bytes\":\"");
            let start = out.len();
            out.resize(start + base64::encoded_len(bytes.len(), true).unwrap_or(0), 0);
            let written = base64::engine::general_purpose::STANDARD.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
            out.truncate(start + written);
            out.extend_from_slice(b"\"}");
        }
        Some(Value::ArrayValue(array)) => {
            out.push(b'[');
            for (i, element) in array.values.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, Some(element));
            }
            out.push(b']');
        }
        Some(Value::KvlistValue(map)) => {
            out.push(b'{');
            for (i, entry) in map.values.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // A map key starting with '$' gets one more, so `{"$bytes": ...}` and the other
                // tagged forms can only ever mean a tagged value.
                if entry.key.starts_with('$') {
                    write_string_parts(out, "$", &entry.key);
                } else {
                    write_string(out, &entry.key);
                }
                out.push(b':');
                write_value(out, entry.value.as_ref());
            }
            out.push(b'}');
        }
    }
}

pub fn write_events(out: &mut Vec<u8>, events: &[Event]) {
    out.push(b'[');
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"time_unix_nano\":");
        write_uint(out, event.time_unix_nano);
        out.extend_from_slice(b",\"name\":");
        write_string(out, &event.name);
        out.extend_from_slice(b",\"attributes\":");
        write_attributes(out, &event.attributes);
        out.extend_from_slice(b",\"dropped_attributes_count\":");
        write_uint(out, u64::from(event.dropped_attributes_count));
        out.push(b'}');
    }
    out.push(b']');
}

pub fn write_links(out: &mut Vec<u8>, links: &[Link]) {
    out.push(b'[');
    for (i, link) in links.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"trace_id\":");
        write_hex(out, &link.trace_id);
        out.extend_from_slice(b",\"span_id\":");
        write_hex(out, &link.span_id);
        out.extend_from_slice(b",\"trace_state\":");
        write_string(out, &link.trace_state);
        out.extend_from_slice(b",\"flags\":");
        write_uint(out, u64::from(link.flags));
        out.extend_from_slice(b",\"attributes\":");
        write_attributes(out, &link.attributes);
        out.extend_from_slice(b",\"dropped_attributes_count\":");
        write_uint(out, u64::from(link.dropped_attributes_count));
        out.push(b'}');
    }
    out.push(b']');
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
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn attributes_json(attributes: &[KeyValue]) -> String {
        let mut out = Vec::new();
        write_attributes(&mut out, attributes);
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
            kv("arr", value(Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(Value::IntValue(1)) }, AnyValue { value: None }] }))),
            kv(
                "map",
                value(Value::KvlistValue(KeyValueList {
                    values: vec![kv("$bytes", value(Value::StringValue("not bytes".into()))), kv("k", value(Value::BoolValue(false)))],
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
    fn large_doubles_keep_a_fraction() {
        let json = attributes_json(&[
            kv("big", value(Value::DoubleValue(1e16))),
            kv("max", value(Value::DoubleValue(f64::MAX))),
            kv("small", value(Value::DoubleValue(-1.5e-7))),
        ]);
        assert!(json.starts_with(r#"{"big":10000000000000000.0,"max":17976931348623157"#), "{json}");
        assert!(json.ends_with(r#".0,"small":-1.5e-7}"#), "{json}");
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(parsed["max"].as_f64(), Some(f64::MAX));
    }

    #[test]
    fn strings_are_escaped_and_nul_is_replaced() {
        let json = attributes_json(&[kv("q\"\\", value(Value::StringValue("a\nb\tc\u{1}\0é😀".into())))]);
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
        let mut out = Vec::new();
        write_events(
            &mut out,
            &[Event { time_unix_nano: u64::MAX, name: "ev".into(), attributes: vec![kv("a", value(Value::IntValue(1)))], dropped_attributes_count: 3 }],
        );
        assert_eq!(
            String::from_utf8(out).expect("UTF-8"),
            r#"[{"time_unix_nano":18446744073709551615,"name":"ev","attributes":{"a":1},"dropped_attributes_count":3}]"#
        );
        let mut out = Vec::new();
        write_links(
            &mut out,
            &[Link {
                trace_id: vec![0xab; 16],
                span_id: vec![0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef],
                trace_state: "k=v".into(),
                attributes: vec![],
                dropped_attributes_count: 0,
                flags: 257,
            }],
        );
        assert_eq!(
            String::from_utf8(out).expect("UTF-8"),
            r#"[{"trace_id":"abababababababababababababababab","span_id":"0123456789abcdef","trace_state":"k=v","flags":257,"attributes":{},"dropped_attributes_count":0}]"#
        );
    }
}
