//! Attribute values as the contrib clickhouseexporter stores them in `Map(String, String)` columns:
//! pdata's `Value.AsString()` (go.opentelemetry.io/collector/pdata/pcommon/value.go, as of pdata
//! v1.62, which collector v0.156 and every later contrib release bring), so that queries written
//! against that exporter's tables match the same strings here.
//!
//! * string: as is; bool: `true`/`false`; int: decimal; empty: `""`;
//! * double: Go's encoding/json number form (ES6: shortest digits, `'f'` notation unless the
//!   magnitude is below 1e-6 or at least 1e21, then `1e-7`, `1.5e+21`); NaN and the infinities
//!   become `NaN`, `Infinity` and `-Infinity`;
//! * bytes: standard base64 with padding;
//! * map and array: encoding/json of the raw value without HTML escaping: map keys sorted, a
//!   duplicate key's last value kept, bytes as base64 strings, empty values as `null`, strings
//!   escaped the way encoding/json does (U+2028 and U+2029 included; `<`, `>` and `&` as they
//!   are). A NaN or infinity anywhere inside makes the encoding fail, and Go then stores `""` for
//!   the whole value; so do we.

use base64::Engine;

use crate::wire::{Fields, Value, WireError};

/// Arrays and maps nest at most this deep inside one attribute value, as for PostgreSQL.
const MAX_DEPTH: usize = 64;

/// The value oneof of an `AnyValue`: the last variant on the wire wins. `None` for an empty value.
fn variant<'a>(value: &'a [u8]) -> Result<Option<(u32, Value<'a>)>, WireError> {
    let mut variant = None;
    for entry in Fields::new(value, "AnyValue") {
        let (number, v) = entry?;
        if (1..=8).contains(&number) {
            variant = Some((number, v));
        }
    }
    Ok(variant)
}

/// A bool (`true`/`false`) or an int (decimal): written alike at the top level and inside JSON.
fn write_bool_or_int(out: &mut Vec<u8>, number: u32, v: Value<'_>) -> Result<(), WireError> {
    if number == 2 {
        out.extend_from_slice(if v.varint("AnyValue.bool_value")? != 0 {
            b"true"
        } else {
            b"false"
        });
    } else {
        out.extend_from_slice(
            itoa::Buffer::new()
                .format(v.varint("AnyValue.int_value")? as i64)
                .as_bytes(),
        );
    }
    Ok(())
}

/// Appends `AsString()` of an `AnyValue` (its message bytes).
pub fn write_as_string(out: &mut Vec<u8>, value: &[u8]) -> Result<(), WireError> {
    let Some((number, v)) = variant(value)? else {
        return Ok(());
    };
    match number {
        1 => out.extend_from_slice(v.string("AnyValue.string_value")?.as_bytes()),
        2 | 3 => write_bool_or_int(out, number, v)?,
        4 => {
            let double = v.double("AnyValue.double_value")?;
            if double.is_finite() {
                write_go_float(out, double);
            } else {
                out.extend_from_slice(if double.is_nan() {
                    b"NaN"
                } else if double > 0.0 {
                    b"Infinity"
                } else {
                    b"-Infinity"
                });
            }
        }
        5 | 6 => {
            let start = out.len();
            if !write_json(out, number, v, 0)? {
                // encoding/json refused a NaN or an infinity: Go keeps the empty string.
                out.truncate(start);
            }
        }
        7 => write_base64(out, v.bytes("AnyValue.bytes_value")?),
        // string_value_strindex only means something inside a profile; pdata has no such value.
        _ => {}
    }
    Ok(())
}

/// JSON of an array (5) or kvlist (6) value as encoding/json writes AsRaw() of it. Returns false if
/// a non-finite double makes encoding/json fail.
fn write_json(
    out: &mut Vec<u8>,
    number: u32,
    v: Value<'_>,
    depth: usize,
) -> Result<bool, WireError> {
    if depth >= MAX_DEPTH {
        return Err(WireError {
            path: "AnyValue",
            reason: "arrays and maps nest deeper than 64 levels",
        });
    }
    if number == 5 {
        out.push(b'[');
        let mut first = true;
        for entry in Fields::new(v.bytes("AnyValue.array_value")?, "ArrayValue") {
            let (1, element) = entry? else { continue };
            if !first {
                out.push(b',');
            }
            first = false;
            if !write_json_value(out, element.bytes("ArrayValue.values")?, depth + 1)? {
                return Ok(false);
            }
        }
        out.push(b']');
        return Ok(true);
    }
    // A Go map: keys sorted byte-wise, the last of duplicate keys wins (AsRaw assigns in order).
    let mut pairs: Vec<(&str, &[u8])> = Vec::new();
    for entry in Fields::new(v.bytes("AnyValue.kvlist_value")?, "KeyValueList") {
        let (1, pair) = entry? else { continue };
        let (mut key, mut value): (&str, &[u8]) = ("", &[]);
        for entry in Fields::new(pair.bytes("KeyValueList.values")?, "KeyValue") {
            match entry? {
                (1, v) => key = v.string("KeyValue.key")?,
                (2, v) => value = v.bytes("KeyValue.value")?,
                _ => {}
            }
        }
        pairs.push((key, value));
    }
    // A stable sort keeps duplicates in wire order; the last of each run is the one kept.
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    let mut first = true;
    for (i, (key, value)) in pairs.iter().enumerate() {
        if pairs.get(i + 1).is_some_and(|next| next.0 == *key) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_json_string(out, key);
        out.push(b':');
        if !write_json_value(out, value, depth + 1)? {
            return Ok(false);
        }
    }
    out.push(b'}');
    Ok(true)
}

fn write_json_value(out: &mut Vec<u8>, value: &[u8], depth: usize) -> Result<bool, WireError> {
    let Some((number, v)) = variant(value)? else {
        out.extend_from_slice(b"null");
        return Ok(true);
    };
    match number {
        1 => write_json_string(out, v.string("AnyValue.string_value")?),
        2 | 3 => write_bool_or_int(out, number, v)?,
        4 => {
            let double = v.double("AnyValue.double_value")?;
            if !double.is_finite() {
                return Ok(false);
            }
            write_go_float(out, double);
        }
        5 | 6 => return write_json(out, number, v, depth),
        7 => {
            out.push(b'"');
            write_base64(out, v.bytes("AnyValue.bytes_value")?);
            out.push(b'"');
        }
        // pdata has no such value: AsRaw gives nil.
        _ => out.extend_from_slice(b"null"),
    }
    Ok(true)
}

/// A finite double as Go's encoding/json writes it (and pdata's float64AsString).
pub fn write_go_float(out: &mut Vec<u8>, value: f64) {
    use std::io::Write as _;
    let abs = value.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Rust's shortest exponent form is "1e-7" / "1.5e21"; Go's, after its clean-up, "1e-7" /
        // "1.5e+21".
        let start = out.len();
        let _ = write!(out, "{value:e}");
        if let Some(e) = out[start..].iter().position(|&b| b == b'e') {
            if out.get(start + e + 1) != Some(&b'-') {
                out.insert(start + e + 1, b'+');
            }
        }
    } else {
        // Display is the shortest round-trip digits in plain notation, as Go's 'f' with precision -1.
        let _ = write!(out, "{value}");
    }
}

fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    out.resize(
        start + base64::encoded_len(bytes.len(), true).unwrap_or(0),
        0,
    );
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
}

/// A JSON string as encoding/json writes it with HTML escaping on (json.Marshal's default).
fn write_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let escape: Option<&[u8]> = match byte {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            _ => None,
        };
        // U+2028 and U+2029 (E2 80 A8 / E2 80 A9).
        let line_separator = byte == 0xe2
            && bytes.get(i + 1) == Some(&0x80)
            && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9));
        if escape.is_some() || byte < 0x20 || line_separator {
            out.extend_from_slice(&bytes[copied..i]);
            if let Some(escape) = escape {
                out.extend_from_slice(escape);
                i += 1;
            } else if line_separator {
                out.extend_from_slice(if bytes[i + 2] == 0xa8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                });
                i += 3;
            } else {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0x0f)]);
                i += 1;
            }
            copied = i;
        } else {
            i += 1;
        }
    }
    out.extend_from_slice(&bytes[copied..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};
    use prost::Message;

    fn any(value: V) -> AnyValue {
        AnyValue { value: Some(value) }
    }

    fn as_string(value: V) -> String {
        let mut out = Vec::new();
        write_as_string(&mut out, &any(value).encode_to_vec()).expect("valid");
        String::from_utf8(out).expect("UTF-8")
    }

    fn kv(key: &str, value: V) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(any(value)),
            ..Default::default()
        }
    }

    #[test]
    fn scalars() {
        assert_eq!(as_string(V::StringValue("a<b".into())), "a<b");
        assert_eq!(as_string(V::BoolValue(true)), "true");
        assert_eq!(as_string(V::IntValue(-42)), "-42");
        assert_eq!(as_string(V::BytesValue(vec![1, 2, 3, 4])), "AQIDBA==");
        let mut out = Vec::new();
        write_as_string(&mut out, &AnyValue { value: None }.encode_to_vec()).expect("valid");
        assert!(out.is_empty());
    }

    #[test]
    fn doubles_as_go_writes_them() {
        for (value, want) in [
            (1.0, "1"),
            (-0.0, "-0"),
            (0.0, "0"),
            (1.5, "1.5"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e300, "1.5e+300"),
            (0.000001, "0.000001"),
            (1e-7, "1e-7"),
            (-2.5e-10, "-2.5e-10"),
            (123456789.125, "123456789.125"),
        ] {
            assert_eq!(as_string(V::DoubleValue(value)), want, "{value:?}");
        }
        assert_eq!(as_string(V::DoubleValue(f64::NAN)), "NaN");
        assert_eq!(as_string(V::DoubleValue(f64::INFINITY)), "Infinity");
        assert_eq!(as_string(V::DoubleValue(f64::NEG_INFINITY)), "-Infinity");
    }

    #[test]
    fn maps_and_arrays_as_json() {
        let array = V::ArrayValue(ArrayValue {
            values: vec![
                any(V::IntValue(1)),
                any(V::StringValue("x\"<&>\u{2028}\n\u{1}".into())),
                AnyValue { value: None },
                any(V::BytesValue(vec![255])),
                any(V::DoubleValue(2.5)),
                any(V::BoolValue(false)),
            ],
        });
        assert_eq!(
            as_string(array),
            r#"[1,"x\"<&>\u2028\n\u0001",null,"/w==",2.5,false]"#
        );
        let map = V::KvlistValue(KeyValueList {
            values: vec![
                kv("b", V::IntValue(1)),
                kv("a", V::ArrayValue(ArrayValue { values: vec![] })),
                kv("b", V::IntValue(2)),
                kv(
                    "c",
                    V::KvlistValue(KeyValueList {
                        values: vec![kv("z", V::StringValue("y".into()))],
                    }),
                ),
            ],
        });
        assert_eq!(as_string(map), r#"{"a":[],"b":2,"c":{"z":"y"}}"#);
    }

    #[test]
    fn a_nan_inside_makes_the_whole_value_empty() {
        let array = V::ArrayValue(ArrayValue {
            values: vec![any(V::IntValue(1)), any(V::DoubleValue(f64::NAN))],
        });
        assert_eq!(as_string(array), "");
    }
}
