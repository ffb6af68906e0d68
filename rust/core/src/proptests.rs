//! Property tests of decoding and row building on hostile input.

use std::fmt::Debug;
use std::str::FromStr;

use base64::Engine;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::TestCaseError;
use prost::Message;

use crate::error::{Error, ErrorKind};
use crate::signal::Signal;
use crate::sink::postgres::spans::{encode, EncodedSpans, COLUMNS};

// ---- Strategies ----

/// Strings with what JSON and PostgreSQL text treat specially, mixed with any other character.
fn hostile_string() -> impl Strategy<Value = String> {
    let special = select(vec![
        '\0', '"', '\\', '/', '\n', '\r', '\t', '\u{1}', '\u{1f}', '\u{7f}', '$', 'é', '\u{2028}',
        '\u{fffd}', '😀',
    ]);
    vec(prop_oneof![special, any::<char>()], 0..8).prop_map(String::from_iter)
}

/// Keys that collide (duplicates, `service.name`) or look like the tags of the jsonb encoding.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        hostile_string(),
        select(vec![
            "service.name",
            "$bytes",
            "$double",
            "$strindex",
            "$",
            "$$",
            "k"
        ])
        .prop_map(str::to_owned),
    ]
}

fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        proptest::num::f64::ANY,
        // Every bit pattern: signalling NaNs, NaN payloads, subnormals.
        any::<u64>().prop_map(f64::from_bits),
        select(vec![
            f64::NAN,
            -f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            1.0,
            1e-7,
            1e15,
            1e16,
            9007199254740994.0
        ]),
        select(vec![f64::MAX, f64::MIN_POSITIVE, 5e-324]),
    ]
}

fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        Just(None),
        hostile_string().prop_map(|s| Some(Value::StringValue(s))),
        any::<bool>().prop_map(|b| Some(Value::BoolValue(b))),
        prop_oneof![any::<i64>(), select(vec![i64::MIN, i64::MAX, -1, 0, 1])]
            .prop_map(|i| Some(Value::IntValue(i))),
        double().prop_map(|d| Some(Value::DoubleValue(d))),
        vec(any::<u8>(), 0..12).prop_map(|b| Some(Value::BytesValue(b))),
        any::<i32>().prop_map(|i| Some(Value::StringValueStrindex(i))),
    ]
    .prop_map(|value| AnyValue { value });
    leaf.prop_recursive(4, 48, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                value: Some(Value::ArrayValue(ArrayValue { values }))
            }),
            vec(key_value(inner), 0..4).prop_map(|values| AnyValue {
                value: Some(Value::KvlistValue(KeyValueList { values }))
            }),
        ]
    })
}

fn key_value(value: impl Strategy<Value = AnyValue>) -> impl Strategy<Value = KeyValue> {
    (key(), option::of(value)).prop_map(|(key, value)| KeyValue {
        key,
        value,
        ..Default::default()
    })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    vec(key_value(any_value()), 0..4)
}

/// Ids of any length, mostly the valid 16 and 8 bytes.
fn id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 16),
        vec(any::<u8>(), 8),
        vec(any::<u8>(), 0..=20)
    ]
}

/// Times mostly in a bigint's range, so that most spans become rows.
fn time() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 0..=i64::MAX as u64,
        1 => any::<u64>(),
        1 => select(vec![0, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX]),
    ]
}

/// A span kind or status code: mostly valid, sometimes any i32, often at a smallint's edges.
fn enum_value() -> impl Strategy<Value = i32> {
    prop_oneof![
        8 => -1..4,
        1 => any::<i32>(),
        1 => select(vec![i32::from(i16::MIN) - 1, i32::from(i16::MIN), i32::from(i16::MAX), i32::from(i16::MAX) + 1]),
    ]
}

fn count() -> impl Strategy<Value = u32> {
    prop_oneof![0..4u32, any::<u32>()]
}

fn event() -> impl Strategy<Value = Event> {
    (time(), hostile_string(), attributes(), count()).prop_map(
        |(time_unix_nano, name, attributes, dropped_attributes_count)| Event {
            time_unix_nano,
            name,
            attributes,
            dropped_attributes_count,
        },
    )
}

fn link() -> impl Strategy<Value = Link> {
    (
        id(),
        id(),
        hostile_string(),
        any::<u32>(),
        attributes(),
        count(),
    )
        .prop_map(
            |(trace_id, span_id, trace_state, flags, attributes, dropped_attributes_count)| Link {
                trace_id,
                span_id,
                trace_state,
                attributes,
                dropped_attributes_count,
                flags,
            },
        )
}

fn span() -> impl Strategy<Value = Span> {
    (
        (
            id(),
            id(),
            prop_oneof![Just(Vec::new()), id()],
            hostile_string(),
            any::<u32>(),
            hostile_string(),
        ),
        (
            enum_value(),
            time(),
            time(),
            option::of((hostile_string(), enum_value())),
        ),
        (
            attributes(),
            vec(event(), 0..3),
            vec(link(), 0..3),
            count(),
            count(),
            count(),
        ),
    )
        .prop_map(
            |(
                (trace_id, span_id, parent_span_id, trace_state, flags, name),
                (kind, start_time_unix_nano, end_time_unix_nano, status),
                (
                    attributes,
                    events,
                    links,
                    dropped_attributes_count,
                    dropped_events_count,
                    dropped_links_count,
                ),
            )| Span {
                trace_id,
                span_id,
                trace_state,
                parent_span_id,
                flags,
                name,
                kind,
                start_time_unix_nano,
                end_time_unix_nano,
                attributes,
                dropped_attributes_count,
                events,
                dropped_events_count,
                links,
                dropped_links_count,
                status: status.map(|(message, code)| Status { message, code }),
            },
        )
}

/// A resource, often with a string `service.name` somewhere among its attributes, since the generic
/// attributes rarely hit that key with a string value.
fn resource() -> impl Strategy<Value = Resource> {
    (attributes(), option::of(hostile_string()), any::<Index>()).prop_map(
        |(mut attributes, service_name, at)| {
            if let Some(name) = service_name {
                let value = Some(AnyValue {
                    value: Some(Value::StringValue(name)),
                });
                attributes.insert(
                    at.index(attributes.len() + 1),
                    KeyValue {
                        key: "service.name".into(),
                        value,
                        ..Default::default()
                    },
                );
            }
            Resource {
                attributes,
                ..Default::default()
            }
        },
    )
}

/// An instrumentation scope, for the requests of every signal.
fn scope() -> impl Strategy<Value = InstrumentationScope> {
    (hostile_string(), hostile_string(), attributes()).prop_map(|(name, version, attributes)| {
        InstrumentationScope {
            name,
            version,
            attributes,
            ..Default::default()
        }
    })
}

fn scope_spans() -> impl Strategy<Value = ScopeSpans> {
    (option::of(scope()), vec(span(), 0..6), hostile_string()).prop_map(
        |(scope, spans, schema_url)| ScopeSpans {
            scope,
            spans,
            schema_url,
        },
    )
}

fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let resource_spans = (
        option::of(resource()),
        vec(scope_spans(), 1..4),
        hostile_string(),
    )
        .prop_map(|(resource, scope_spans, schema_url)| ResourceSpans {
            resource,
            scope_spans,
            schema_url,
        });
    vec(resource_spans, 1..4)
        .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0..8u8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation) {
    match mutation {
        Mutation::FlipBit(at, bit) if !bytes.is_empty() => {
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
        }
        Mutation::FlipBit(..) => {}
        Mutation::Truncate(at) => bytes.truncate(at.index(bytes.len() + 1)),
        Mutation::Insert(at, inserted) => {
            let at = at.index(bytes.len() + 1);
            bytes.splice(at..at, inserted.iter().copied());
        }
    }
}

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A field of the protobuf wire format; its wire type is its position.
#[derive(Debug, Clone)]
enum Wire {
    Varint(u64),
    Fixed64(u64),
    Delimited(Vec<u8>),
    Group(Vec<u8>),
    Fixed32(u32),
}

/// Protobuf wire format with arbitrary field numbers, wire types and nesting: it gets past the
/// framing into prost's checks of each field, which random bytes almost never do.
fn wire_message() -> impl Strategy<Value = Vec<u8>> {
    let payload = prop_oneof![
        vec(any::<u8>(), 0..8),
        hostile_string().prop_map(String::into_bytes)
    ];
    payload.prop_recursive(8, 128, 4, |inner| {
        let value = prop_oneof![
            any::<u64>().prop_map(Wire::Varint),
            any::<u64>().prop_map(Wire::Fixed64),
            inner.clone().prop_map(Wire::Delimited),
            inner.prop_map(Wire::Group),
            any::<u32>().prop_map(Wire::Fixed32),
        ];
        // 0 is no valid field number; 17 is past every OTLP message's last field.
        vec((0..=17u64, value), 0..6).prop_map(|fields| {
            let mut out = Vec::new();
            for (number, value) in fields {
                let key = |wire_type: u64, out: &mut Vec<u8>| varint(number << 3 | wire_type, out);
                match value {
                    Wire::Varint(v) => {
                        key(0, &mut out);
                        varint(v, &mut out);
                    }
                    Wire::Fixed64(v) => {
                        key(1, &mut out);
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                    Wire::Delimited(payload) => {
                        key(2, &mut out);
                        varint(payload.len() as u64, &mut out);
                        out.extend_from_slice(&payload);
                    }
                    Wire::Group(payload) => {
                        key(3, &mut out);
                        out.extend_from_slice(&payload);
                        key(4, &mut out);
                    }
                    Wire::Fixed32(v) => {
                        key(5, &mut out);
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                }
            }
            out
        })
    })
}

/// The bytes of a request whose one span has one attribute nested `depth` arrays deep. Built by hand
/// because building the message would recurse as deep as the decoder is being asked to.
fn nested_request(depth: usize) -> Vec<u8> {
    fn field(number: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(number << 3 | 2, &mut out);
        varint(payload.len() as u64, &mut out);
        out.extend_from_slice(payload);
        out
    }
    let mut value = Vec::new();
    for _ in 0..depth {
        // AnyValue.array_value (5) holding ArrayValue.values (1) = [value].
        value = field(5, &field(1, &value));
    }
    let key_value = [field(1, b"k"), field(2, &value)].concat();
    // request.resource_spans (1) → scope_spans (2) → spans (2) → attributes (9).
    field(1, &field(2, &field(2, &field(9, &key_value))))
}

// ---- Checks ----

/// prost, reading the same bytes into opentelemetry-proto messages, is the reference: whatever it
/// accepts, the zero-copy encoder accepts too, with rows that hold every property below. Where prost
/// refuses, the encoder may accept (it does not check fields it does not store) but its rows must
/// still be well framed; when it refuses, the error is one a caller must not retry.
fn check_decode(bytes: &[u8]) -> Result<(), TestCaseError> {
    match (ExportTraceServiceRequest::decode(bytes), encode(bytes)) {
        (Ok(request), Ok(_)) => check_rows(&request),
        (Ok(_), Err(error)) => Err(TestCaseError::fail(format!(
            "prost accepts what the encoder refuses: {error}"
        ))),
        (Err(_), Ok(encoded)) => {
            let chunk = encoded.rows.finish();
            prop_assert_eq!(copy_rows(&chunk.data).len() as u64, chunk.rows);
            Ok(())
        }
        (Err(_), Err(error)) => {
            let error = Error::Decode {
                signal: Signal::Traces,
                len: bytes.len(),
                source: error,
            };
            prop_assert_eq!(error.kind(), ErrorKind::Permanent);
            prop_assert!(
                error
                    .to_string()
                    .starts_with("malformed OTLP traces request"),
                "{}",
                error
            );
            Ok(())
        }
    }
}

type Row = Vec<Option<Vec<u8>>>;

/// Whether a span fits its row: times in a bigint, kind and status code in a smallint.
fn fits(span: &Span) -> bool {
    i64::try_from(span.start_time_unix_nano).is_ok()
        && i64::try_from(span.end_time_unix_nano).is_ok()
        && i16::try_from(span.kind).is_ok()
        && i16::try_from(span.status.as_ref().map_or(0, |s| s.code)).is_ok()
}

/// Every span becomes exactly one row, in order, holding what the span holds; or it does not fit
/// and is counted as rejected.
fn check_rows(request: &ExportTraceServiceRequest) -> Result<(), TestCaseError> {
    let otlp = request.encode_to_vec();
    let EncodedSpans {
        rows,
        rejected,
        first_rejection,
        ..
    } = encode(&otlp).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let chunk = rows.finish();
    let parsed = copy_rows(&chunk.data);
    let spans: Vec<_> = request
        .resource_spans
        .iter()
        .flat_map(|r| {
            r.scope_spans
                .iter()
                .flat_map(move |s| s.spans.iter().map(move |span| (r, s, span)))
        })
        .collect();
    let kept: Vec<_> = spans.iter().filter(|(_, _, span)| fits(span)).collect();

    prop_assert_eq!(chunk.rows + rejected, spans.len() as u64);
    prop_assert_eq!(parsed.len() as u64, chunk.rows);
    prop_assert_eq!(parsed.len(), kept.len());
    // The sink isolates rows that PostgreSQL refuses by these ranges, so they must split the chunk
    // exactly into its rows.
    let ranges = chunk.row_ranges();
    prop_assert_eq!(ranges.len(), parsed.len());
    let mut at = 0;
    for (range, row) in ranges.into_iter().zip(&parsed) {
        prop_assert_eq!(range.start, at);
        at = range.end;
        prop_assert_eq!(copy_rows(&chunk.data[range]), vec![row.clone()]);
    }
    prop_assert_eq!(at, chunk.data.len());
    match spans.iter().find(|(_, _, span)| !fits(span)) {
        Some((_, _, span)) => {
            let named = format!(
                "span {} of trace {}: ",
                hex(&span.span_id),
                hex(&span.trace_id)
            );
            let message = first_rejection.unwrap_or_default();
            prop_assert!(
                message.starts_with(&named),
                "{:?} does not name the first rejected span",
                message
            );
        }
        None => prop_assert_eq!(first_rejection, None),
    }
    for (row, (resource_spans, scope_spans, span)) in parsed.iter().zip(kept) {
        check_row(row, resource_spans, scope_spans, span)?;
    }
    Ok(())
}

const TEXT_COLUMNS: &[&str] = &[
    "trace_state",
    "name",
    "status_message",
    "service_name",
    "resource_schema_url",
    "scope_name",
    "scope_version",
    "scope_schema_url",
];

/// Microseconds from the Unix epoch to PostgreSQL's epoch, 2000-01-01.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

fn check_row(
    row: &Row,
    resource_spans: &ResourceSpans,
    scope_spans: &ScopeSpans,
    span: &Span,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(row.len(), COLUMNS.len());
    let column = |name: &str| {
        &row[COLUMNS
            .iter()
            .position(|c| *c == name)
            .expect("a known column")]
    };
    let resource_attributes = resource_spans
        .resource
        .as_ref()
        .map_or(&[][..], |r| &r.attributes[..]);
    let scope = scope_spans.scope.clone().unwrap_or_default();
    let status = span.status.clone().unwrap_or_default();
    // `fits` held, so these casts are exact.
    let (start, end) = (
        span.start_time_unix_nano as i64,
        span.end_time_unix_nano as i64,
    );
    // The last `service.name` decides, as the last duplicate key does in jsonb.
    let last_service_name = resource_attributes
        .iter()
        .rev()
        .find(|a| a.key == "service.name");
    let service_name = match last_service_name.and_then(|a| a.value.as_ref()?.value.as_ref()) {
        Some(Value::StringValue(name)) => name.as_str(),
        _ => "",
    };
    let text = |s: &str| Some(without_nul(s).into_bytes());
    let int = |bytes: &[u8]| Some(bytes.to_vec());
    let saturated = |count: u32| int(&i32::try_from(count).unwrap_or(i32::MAX).to_be_bytes());

    let expected = [
        ("trace_id", Some(span.trace_id.clone())),
        ("span_id", Some(span.span_id.clone())),
        (
            "parent_span_id",
            (!span.parent_span_id.is_empty()).then(|| span.parent_span_id.clone()),
        ),
        ("trace_state", text(&span.trace_state)),
        ("flags", int(&span.flags.to_be_bytes())),
        ("name", text(&span.name)),
        ("kind", int(&(span.kind as i16).to_be_bytes())),
        // Non-negative, so integer division truncates to the microsecond as PostgreSQL does.
        (
            "start_time",
            int(&(start / 1000 - POSTGRES_EPOCH_MICROS).to_be_bytes()),
        ),
        ("start_time_unix_nano", int(&start.to_be_bytes())),
        ("duration_ns", int(&(end - start).to_be_bytes())),
        ("status_code", int(&(status.code as i16).to_be_bytes())),
        ("status_message", text(&status.message)),
        ("service_name", text(service_name)),
        ("resource_schema_url", text(&resource_spans.schema_url)),
        ("scope_name", text(&scope.name)),
        ("scope_version", text(&scope.version)),
        ("scope_schema_url", text(&scope_spans.schema_url)),
        (
            "dropped_attributes_count",
            saturated(span.dropped_attributes_count),
        ),
        ("dropped_events_count", saturated(span.dropped_events_count)),
        ("dropped_links_count", saturated(span.dropped_links_count)),
    ];
    for (name, value) in &expected {
        prop_assert_eq!(column(name), value, "column {}", name);
    }
    for name in TEXT_COLUMNS {
        let bytes = column(name)
            .as_deref()
            .expect("text columns are never NULL");
        prop_assert!(
            std::str::from_utf8(bytes).is_ok() && !bytes.contains(&0),
            "{} is not text: {:?}",
            name,
            bytes
        );
    }

    for (name, attributes) in [
        ("resource_attributes", resource_attributes),
        ("scope_attributes", &scope.attributes[..]),
        ("span_attributes", &span.attributes[..]),
    ] {
        same(
            decode_attributes(jsonb(column(name))),
            stored_attributes(attributes),
        )?;
    }
    let Json::Array(events) = jsonb(column("events")) else {
        return Err(TestCaseError::fail("events are not an array"));
    };
    same(
        events.into_iter().map(decode_event).collect::<Vec<_>>(),
        span.events.iter().map(stored_event).collect::<Vec<_>>(),
    )?;
    let Json::Array(links) = jsonb(column("links")) else {
        return Err(TestCaseError::fail("links are not an array"));
    };
    same(
        links.into_iter().map(decode_link).collect::<Vec<_>>(),
        span.links.iter().map(stored_link).collect::<Vec<_>>(),
    )
}

/// Compares by Debug text: a double prints in its shortest round-trip form, so this is bit-exact for
/// every double except NaN, which prints as `NaN` whatever its sign and payload, as JSON keeps it.
fn same<T: Debug>(decoded: T, stored: T) -> Result<(), TestCaseError> {
    prop_assert_eq!(format!("{decoded:?}"), format!("{stored:?}"));
    Ok(())
}

fn without_nul(s: &str) -> String {
    s.replace('\0', "\u{fffd}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---- What schema/README.md promises a reader gets back ----

/// Attributes as stored: NUL in any string or key reads as U+FFFD, and an unset value as null. The
/// profiles-only `key_strindex` is not stored.
fn stored_attributes(attributes: &[KeyValue]) -> Vec<KeyValue> {
    attributes
        .iter()
        .map(|a| KeyValue {
            key: without_nul(&a.key),
            value: Some(stored_value(a.value.as_ref())),
            ..Default::default()
        })
        .collect()
}

fn stored_value(value: Option<&AnyValue>) -> AnyValue {
    let value = value
        .and_then(|v| v.value.as_ref())
        .map(|value| match value {
            Value::StringValue(s) => Value::StringValue(without_nul(s)),
            Value::ArrayValue(array) => Value::ArrayValue(ArrayValue {
                values: array.values.iter().map(|v| stored_value(Some(v))).collect(),
            }),
            Value::KvlistValue(map) => Value::KvlistValue(KeyValueList {
                values: stored_attributes(&map.values),
            }),
            other => other.clone(),
        });
    AnyValue { value }
}

fn stored_event(event: &Event) -> Event {
    Event {
        name: without_nul(&event.name),
        attributes: stored_attributes(&event.attributes),
        ..event.clone()
    }
}

fn stored_link(link: &Link) -> Link {
    Link {
        trace_state: without_nul(&link.trace_state),
        attributes: stored_attributes(&link.attributes),
        ..link.clone()
    }
}

// ---- Reading the jsonb columns back ----

/// JSON as written. serde_json's Value would sort keys, keep only the last duplicate, and (without
/// its float_roundtrip feature) may read a double one ulp off, so this keeps order, duplicates and
/// the text of numbers.
#[derive(Debug)]
enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

/// A jsonb field: the version byte 1, then JSON that serde_json accepts.
fn jsonb(field: &Option<Vec<u8>>) -> Json {
    let bytes = field.as_deref().expect("jsonb columns are never NULL");
    assert_eq!(bytes.first(), Some(&1), "jsonb version byte");
    let text = std::str::from_utf8(&bytes[1..]).expect("JSON is UTF-8");
    if let Err(error) = serde_json::from_str::<serde_json::Value>(text) {
        panic!("invalid JSON ({error}): {text}");
    }
    let mut reader = JsonReader { text, at: 0 };
    let json = reader.value();
    assert_eq!(reader.at, text.len(), "trailing text in {text}");
    json
}

/// Reads JSON that serde_json has accepted and that has no whitespace, as the core writes it.
struct JsonReader<'a> {
    text: &'a str,
    at: usize,
}

impl JsonReader<'_> {
    fn value(&mut self) -> Json {
        let rest = &self.text[self.at..];
        let (json, len) = match rest.as_bytes()[0] {
            b'"' => return Json::String(self.string()),
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                while !self.eat(b']') {
                    self.eat(b',');
                    items.push(self.value());
                }
                return Json::Array(items);
            }
            b'{' => {
                self.at += 1;
                let mut entries = Vec::new();
                while !self.eat(b'}') {
                    self.eat(b',');
                    let key = self.string();
                    self.eat(b':');
                    entries.push((key, self.value()));
                }
                return Json::Object(entries);
            }
            b'n' => (Json::Null, 4),
            b't' => (Json::Bool(true), 4),
            b'f' => (Json::Bool(false), 5),
            _ => {
                let len = rest
                    .find(|c: char| !matches!(c, '-' | '+' | '.' | 'e' | 'E' | '0'..='9'))
                    .unwrap_or(rest.len());
                (Json::Number(rest[..len].to_owned()), len)
            }
        };
        self.at += len;
        json
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.text.as_bytes().get(self.at) == Some(&byte);
        self.at += usize::from(found);
        found
    }

    /// The escapes are serde_json's to decode; this only finds where the string ends.
    fn string(&mut self) -> String {
        let start = self.at;
        self.at += 1;
        loop {
            match self.text.as_bytes()[self.at] {
                b'\\' => self.at += 2,
                b'"' => break,
                _ => self.at += 1,
            }
        }
        self.at += 1;
        serde_json::from_str(&self.text[start..self.at]).expect("a JSON string")
    }
}

/// An attribute object back to its list, duplicates and order kept; top-level keys are not escaped.
fn decode_attributes(json: Json) -> Vec<KeyValue> {
    let Json::Object(entries) = json else {
        panic!("attributes are not an object: {json:?}")
    };
    entries
        .into_iter()
        .map(|(key, value)| KeyValue {
            key,
            value: Some(decode_value(value)),
            ..Default::default()
        })
        .collect()
}

/// The encoding table of schema/README.md, read backwards.
fn decode_value(json: Json) -> AnyValue {
    let value = match json {
        Json::Null => None,
        Json::Bool(b) => Some(Value::BoolValue(b)),
        Json::String(s) => Some(Value::StringValue(s)),
        Json::Number(n) if n.contains(['.', 'e', 'E']) => Some(Value::DoubleValue(parse(&n))),
        Json::Number(n) => Some(Value::IntValue(parse(&n))),
        Json::Array(items) => Some(Value::ArrayValue(ArrayValue {
            values: items.into_iter().map(decode_value).collect(),
        })),
        Json::Object(entries) => Some(match &entries[..] {
            [(tag, Json::String(name))] if tag == "$double" => {
                Value::DoubleValue(match name.as_str() {
                    "NaN" => f64::NAN,
                    "Infinity" => f64::INFINITY,
                    "-Infinity" => f64::NEG_INFINITY,
                    other => panic!("unknown $double {other:?}"),
                })
            }
            [(tag, Json::String(base64))] if tag == "$bytes" => Value::BytesValue(
                base64::engine::general_purpose::STANDARD
                    .decode(base64)
                    .expect("$bytes is base64"),
            ),
            [(tag, Json::Number(index))] if tag == "$strindex" => {
                Value::StringValueStrindex(parse(index))
            }
            _ => Value::KvlistValue(KeyValueList {
                values: entries
                    .into_iter()
                    .map(|(key, value)| {
                        let key = match key.strip_prefix('$') {
                            Some(unescaped) => {
                                assert!(
                                    unescaped.starts_with('$'),
                                    "map key {key:?} is neither a tag nor an escaped '$' key"
                                );
                                unescaped.to_owned()
                            }
                            None => key,
                        };
                        KeyValue {
                            key,
                            value: Some(decode_value(value)),
                            ..Default::default()
                        }
                    })
                    .collect(),
            }),
        }),
    };
    AnyValue { value }
}

fn decode_event(json: Json) -> Event {
    let [time_unix_nano, name, attributes, dropped_attributes_count] = fields(
        json,
        [
            "time_unix_nano",
            "name",
            "attributes",
            "dropped_attributes_count",
        ],
    );
    Event {
        time_unix_nano: number(time_unix_nano),
        name: string(name),
        attributes: decode_attributes(attributes),
        dropped_attributes_count: number(dropped_attributes_count),
    }
}

fn decode_link(json: Json) -> Link {
    let [trace_id, span_id, trace_state, flags, attributes, dropped_attributes_count] = fields(
        json,
        [
            "trace_id",
            "span_id",
            "trace_state",
            "flags",
            "attributes",
            "dropped_attributes_count",
        ],
    );
    Link {
        trace_id: hex_bytes(trace_id),
        span_id: hex_bytes(span_id),
        trace_state: string(trace_state),
        attributes: decode_attributes(attributes),
        dropped_attributes_count: number(dropped_attributes_count),
        flags: number(flags),
    }
}

/// The values of an object that has exactly these keys.
fn fields<const N: usize>(json: Json, names: [&str; N]) -> [Json; N] {
    let Json::Object(mut entries) = json else {
        panic!("not an object: {json:?}")
    };
    assert_eq!(entries.len(), N, "fields of {entries:?}");
    names.map(|name| {
        let at = entries
            .iter()
            .position(|(key, _)| key == name)
            .unwrap_or_else(|| panic!("no {name} in {entries:?}"));
        entries.swap_remove(at).1
    })
}

fn number<T: FromStr<Err: Debug>>(json: Json) -> T {
    let Json::Number(text) = json else {
        panic!("not a number: {json:?}")
    };
    parse(&text)
}

/// Rust's float parsing is correctly rounded, so a double comes back bit-exact if its text is exact.
fn parse<T: FromStr<Err: Debug>>(text: &str) -> T {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e:?}"))
}

fn string(json: Json) -> String {
    let Json::String(s) = json else {
        panic!("not a string: {json:?}")
    };
    s
}

fn hex_bytes(json: Json) -> Vec<u8> {
    let text = string(json);
    assert!(
        text.len().is_multiple_of(2)
            && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "not lower-case hex: {text:?}"
    );
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

// ---- Reading the COPY data back ----

/// The rows of a chunk (COPY data without its header and trailer) of a table with `columns`, each
/// field `None` for NULL. The sink's own test reader is private to its module, so this is a second,
/// independent one; it insists on the full column count.
fn copy_rows_of(columns: &[&str], mut data: &[u8]) -> Vec<Row> {
    fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
        assert!(data.len() >= n, "COPY data ends inside a field");
        let (taken, rest) = data.split_at(n);
        *data = rest;
        taken
    }
    let mut rows = Vec::new();
    while !data.is_empty() {
        let count = i16::from_be_bytes(take(&mut data, 2).try_into().expect("2 bytes"));
        assert_eq!(
            usize::try_from(count).ok(),
            Some(columns.len()),
            "field count"
        );
        let row = (0..count)
            .map(|_| {
                let len = i32::from_be_bytes(take(&mut data, 4).try_into().expect("4 bytes"));
                assert!(len >= -1, "field length {len}");
                usize::try_from(len)
                    .ok()
                    .map(|len| take(&mut data, len).to_vec())
            })
            .collect();
        rows.push(row);
    }
    rows
}

fn copy_rows(data: &[u8]) -> Vec<Row> {
    copy_rows_of(COLUMNS, data)
}

// ---- Properties ----

proptest! {
    #[test]
    fn arbitrary_bytes_decode_or_fail_permanently(bytes in prop_oneof![vec(any::<u8>(), 0..1024), wire_message()]) {
        check_decode(&bytes)?;
    }

    #[test]
    fn mutated_requests_decode_or_fail_permanently(request in request(), mutations in vec(mutation(), 1..4)) {
        let mut bytes = request.encode_to_vec();
        for mutation in &mutations {
            mutate(&mut bytes, mutation);
        }
        check_decode(&bytes)?;
    }

    #[test]
    fn every_span_becomes_a_faithful_row_or_a_rejection(request in request()) {
        check_rows(&request)?;
    }

    #[test]
    fn deeply_nested_values_are_written_or_refused_at_the_limit(depth in prop_oneof![56..72usize, 0..2000usize]) {
        let bytes = nested_request(depth);
        // The encoder bounds its own recursion at 64 nested arrays or maps, deeper than prost's
        // recursion limit lets opentelemetry-proto go (47 arrays here).
        prop_assert_eq!(encode(&bytes).is_ok(), depth <= 64, "depth {}", depth);
        check_decode(&bytes)?;
    }
}

// ---- Logs ----

/// The same properties for the `logs` table, with the strategies and readers above, and for
/// ClickHouse's `otel_logs`.
mod logs {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    use super::*;
    use crate::sink::postgres::logs::{encode, EncodedLogs, COLUMNS};

    fn log_record() -> impl Strategy<Value = LogRecord> {
        let optional_id = || prop_oneof![Just(Vec::new()), id()];
        (
            (
                prop_oneof![1 => Just(0), 4 => time()],
                time(),
                enum_value(),
                hostile_string(),
                option::of(any_value()),
            ),
            (
                attributes(),
                count(),
                any::<u32>(),
                optional_id(),
                optional_id(),
                hostile_string(),
            ),
        )
            .prop_map(
                |(
                    (time_unix_nano, observed_time_unix_nano, severity_number, severity_text, body),
                    (attributes, dropped_attributes_count, flags, trace_id, span_id, event_name),
                )| LogRecord {
                    time_unix_nano,
                    observed_time_unix_nano,
                    severity_number,
                    severity_text,
                    body,
                    attributes,
                    dropped_attributes_count,
                    flags,
                    trace_id,
                    span_id,
                    event_name,
                },
            )
    }

    fn request() -> impl Strategy<Value = ExportLogsServiceRequest> {
        let scope_logs = (
            option::of(scope()),
            vec(log_record(), 0..6),
            hostile_string(),
        )
            .prop_map(|(scope, log_records, schema_url)| ScopeLogs {
                scope,
                log_records,
                schema_url,
            });
        let resource_logs = (
            option::of(resource()),
            vec(scope_logs, 1..4),
            hostile_string(),
        )
            .prop_map(|(resource, scope_logs, schema_url)| ResourceLogs {
                resource,
                scope_logs,
                schema_url,
            });
        vec(resource_logs, 1..4)
            .prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
    }

    /// Every record of a request with its resource and scope group, in order.
    fn records(request: &ExportLogsServiceRequest) -> Vec<(&ResourceLogs, &ScopeLogs, &LogRecord)> {
        request
            .resource_logs
            .iter()
            .flat_map(|r| {
                r.scope_logs
                    .iter()
                    .flat_map(move |s| s.log_records.iter().map(move |record| (r, s, record)))
            })
            .collect()
    }

    /// As for spans: what prost accepts the encoder accepts, with faithful rows; anything else it
    /// refuses or writes as well-framed rows. The same for the ClickHouse encoder.
    fn check_decode(bytes: &[u8]) -> Result<(), TestCaseError> {
        clickhouse::check_decode(bytes)?;
        match (ExportLogsServiceRequest::decode(bytes), encode(bytes)) {
            (Ok(request), Ok(_)) => check_rows(&request),
            (Ok(_), Err(error)) => Err(TestCaseError::fail(format!(
                "prost accepts what the encoder refuses: {error}"
            ))),
            (Err(_), Ok(encoded)) => {
                let chunk = encoded.rows.finish();
                prop_assert_eq!(log_rows(&chunk.data).len() as u64, chunk.rows);
                Ok(())
            }
            (Err(_), Err(_)) => Ok(()),
        }
    }

    /// Whether a record fits its row: both times in a bigint, severity in a smallint.
    fn fits(record: &LogRecord) -> bool {
        i64::try_from(record.time_unix_nano).is_ok()
            && i64::try_from(record.observed_time_unix_nano).is_ok()
            && i16::try_from(record.severity_number).is_ok()
    }

    fn check_rows(request: &ExportLogsServiceRequest) -> Result<(), TestCaseError> {
        let otlp = request.encode_to_vec();
        let EncodedLogs {
            rows,
            rejected,
            first_rejection,
            ..
        } = encode(&otlp).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let chunk = rows.finish();
        let parsed = log_rows(&chunk.data);
        let records = records(request);
        let kept: Vec<_> = records
            .iter()
            .filter(|(_, _, record)| fits(record))
            .collect();

        prop_assert_eq!(chunk.rows + rejected, records.len() as u64);
        prop_assert_eq!(parsed.len() as u64, chunk.rows);
        prop_assert_eq!(parsed.len(), kept.len());
        prop_assert_eq!(chunk.row_ranges().len(), parsed.len());
        match records.iter().position(|(_, _, record)| !fits(record)) {
            Some(index) => {
                let message = first_rejection.unwrap_or_default();
                let named = format!("log record {index} of the request");
                prop_assert!(
                    message.starts_with(&named),
                    "{:?} does not name the first rejected record",
                    message
                );
            }
            None => prop_assert_eq!(first_rejection, None),
        }
        for (row, (resource_logs, scope_logs, record)) in parsed.iter().zip(kept) {
            check_row(row, resource_logs, scope_logs, record)?;
        }
        Ok(())
    }

    fn check_row(
        row: &Row,
        resource_logs: &ResourceLogs,
        scope_logs: &ScopeLogs,
        record: &LogRecord,
    ) -> Result<(), TestCaseError> {
        let column = |name: &str| {
            &row[COLUMNS
                .iter()
                .position(|c| *c == name)
                .expect("a known column")]
        };
        let resource_attributes = resource_logs
            .resource
            .as_ref()
            .map_or(&[][..], |r| &r.attributes[..]);
        let scope = scope_logs.scope.clone().unwrap_or_default();
        // `fits` held, so these casts are exact.
        let (time, observed) = (
            record.time_unix_nano as i64,
            record.observed_time_unix_nano as i64,
        );
        let filed = if time != 0 { time } else { observed };
        let last_service_name = resource_attributes
            .iter()
            .rev()
            .find(|a| a.key == "service.name");
        let service_name = match last_service_name.and_then(|a| a.value.as_ref()?.value.as_ref()) {
            Some(Value::StringValue(name)) => name.as_str(),
            _ => "",
        };
        let text = |s: &str| Some(without_nul(s).into_bytes());
        let int = |bytes: &[u8]| Some(bytes.to_vec());
        let id = |id: &[u8]| (!id.is_empty()).then(|| id.to_vec());

        let expected = [
            (
                "time",
                int(&(filed / 1000 - POSTGRES_EPOCH_MICROS).to_be_bytes()),
            ),
            ("time_unix_nano", int(&time.to_be_bytes())),
            ("observed_time_unix_nano", int(&observed.to_be_bytes())),
            (
                "severity_number",
                int(&(record.severity_number as i16).to_be_bytes()),
            ),
            ("severity_text", text(&record.severity_text)),
            (
                "dropped_attributes_count",
                int(&i32::try_from(record.dropped_attributes_count)
                    .unwrap_or(i32::MAX)
                    .to_be_bytes()),
            ),
            ("flags", int(&record.flags.to_be_bytes())),
            ("trace_id", id(&record.trace_id)),
            ("span_id", id(&record.span_id)),
            ("event_name", text(&record.event_name)),
            ("service_name", text(service_name)),
            ("resource_schema_url", text(&resource_logs.schema_url)),
            ("scope_name", text(&scope.name)),
            ("scope_version", text(&scope.version)),
            ("scope_schema_url", text(&scope_logs.schema_url)),
        ];
        for (name, value) in &expected {
            prop_assert_eq!(column(name), value, "column {}", name);
        }
        for (name, attributes) in [
            ("resource_attributes", resource_attributes),
            ("scope_attributes", &scope.attributes[..]),
            ("attributes", &record.attributes[..]),
        ] {
            same(
                decode_attributes(jsonb(column(name))),
                stored_attributes(attributes),
            )?;
        }
        // A body without a value is stored as no body: the collector's pdata sends an absent body
        // as an empty one, so the two cannot be told apart.
        match record.body.as_ref().filter(|body| body.value.is_some()) {
            Some(body) => same(
                decode_value(jsonb(column("body"))),
                stored_value(Some(body)),
            ),
            None => {
                prop_assert_eq!(column("body"), &None);
                Ok(())
            }
        }
    }

    /// The rows of a chunk of the logs table, each field `None` for NULL.
    fn log_rows(data: &[u8]) -> Vec<Row> {
        super::copy_rows_of(COLUMNS, data)
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_decode_or_fail(bytes in prop_oneof![vec(any::<u8>(), 0..1024), wire_message()]) {
            check_decode(&bytes)?;
        }

        #[test]
        fn mutated_requests_decode_or_fail(request in request(), mutations in vec(mutation(), 1..4)) {
            let mut bytes = request.encode_to_vec();
            for mutation in &mutations {
                mutate(&mut bytes, mutation);
            }
            check_decode(&bytes)?;
        }

        #[test]
        fn every_log_record_becomes_a_faithful_row_or_a_rejection(request in request()) {
            check_rows(&request)?;
            clickhouse::check_block(&request)?;
        }
    }

    /// The same requests through the ClickHouse encoder (the properties above call these), its
    /// Native block read back. Values that
    /// are `AsString()` of a non-string AnyValue are gostring.rs's to test; here a string is
    /// compared whole and every other value only by its presence.
    mod clickhouse {
        use super::*;
        use crate::sink::clickhouse::logs::{encode, COLUMNS};
        use crate::sink::clickhouse::native::read::{self, Cell};
        use crate::sink::clickhouse::Table;
        use crate::sink::Rows;

        pub(super) fn check_decode(bytes: &[u8]) -> Result<(), TestCaseError> {
            match (ExportLogsServiceRequest::decode(bytes), encode(bytes)) {
                (Ok(request), Ok(_)) => check_block(&request),
                (Ok(_), Err(error)) => Err(TestCaseError::fail(format!(
                    "prost accepts what the encoder refuses: {error}"
                ))),
                (Err(_), Ok(encoded)) => {
                    // Well framed: the block reads back whole, a row per record kept.
                    if let Some(block) = encoded.rows.block(Table::Logs) {
                        let columns = read::block(block);
                        prop_assert_eq!(columns[0].cells.len() as u64, encoded.rows.rows());
                    }
                    Ok(())
                }
                (Err(_), Err(_)) => Ok(()),
            }
        }

        /// The time a record is stored under: its own, or else when it was observed.
        fn timestamp(record: &LogRecord) -> u64 {
            if record.time_unix_nano != 0 {
                record.time_unix_nano
            } else {
                record.observed_time_unix_nano
            }
        }

        /// Whether a record fits its row: the time stored in DateTime64(9), severity in UInt8.
        fn fits(record: &LogRecord) -> bool {
            i64::try_from(timestamp(record)).is_ok() && u8::try_from(record.severity_number).is_ok()
        }

        pub(super) fn check_block(request: &ExportLogsServiceRequest) -> Result<(), TestCaseError> {
            let encoded =
                encode(&request.encode_to_vec()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let records = records(request);
            let kept: Vec<_> = records
                .iter()
                .filter(|(_, _, record)| fits(record))
                .collect();
            prop_assert_eq!(encoded.rows.rows(), kept.len() as u64);
            prop_assert_eq!(encoded.rejected, (records.len() - kept.len()) as u64);
            match records.iter().position(|(_, _, record)| !fits(record)) {
                Some(index) => {
                    let message = encoded.first_rejection.unwrap_or_default();
                    let named = format!("log record {index} of the request");
                    prop_assert!(message.starts_with(&named), "{:?}", message);
                }
                None => prop_assert_eq!(encoded.first_rejection, None),
            }
            let Some(block) = encoded.rows.block(Table::Logs) else {
                prop_assert!(kept.is_empty());
                return Ok(());
            };
            let columns = read::block(block);
            let names: Vec<_> = columns.iter().map(|c| c.name.as_str()).collect();
            let want: Vec<_> = COLUMNS.iter().map(|(name, _)| *name).collect();
            prop_assert_eq!(names, want);
            for (row, (resource_logs, scope_logs, record)) in kept.into_iter().enumerate() {
                let got = |name: &str| {
                    let column = columns.iter().find(|c| c.name == name).expect("a column");
                    &column.cells[row]
                };
                let resource = resource_logs.resource.clone().unwrap_or_default();
                let scope = scope_logs.scope.clone().unwrap_or_default();
                let text = |s: &str| Cell::Str(s.to_owned());
                let id = |id: &[u8]| {
                    text(&if id.iter().all(|&b| b == 0) {
                        String::new()
                    } else {
                        hex(id)
                    })
                };
                let expected = [
                    ("Timestamp", Cell::Int(timestamp(record) as i64)),
                    ("TraceId", id(&record.trace_id)),
                    ("SpanId", id(&record.span_id)),
                    ("TraceFlags", Cell::UInt(u64::from(record.flags & 0xff))),
                    ("SeverityText", text(&record.severity_text)),
                    ("SeverityNumber", Cell::UInt(record.severity_number as u64)),
                    ("ResourceSchemaUrl", text(&resource_logs.schema_url)),
                    ("ScopeSchemaUrl", text(&scope_logs.schema_url)),
                    ("ScopeName", text(&scope.name)),
                    ("ScopeVersion", text(&scope.version)),
                    ("EventName", text(&record.event_name)),
                ];
                for (name, value) in &expected {
                    prop_assert_eq!(got(name), value, "column {}", name);
                }
                let service = resource.attributes.iter().find(|a| a.key == "service.name");
                same_string(got("ServiceName"), service.and_then(|a| a.value.as_ref()))?;
                same_string(got("Body"), record.body.as_ref())?;
                for (name, attributes) in [
                    ("ResourceAttributes", &resource.attributes),
                    ("ScopeAttributes", &scope.attributes),
                    ("LogAttributes", &record.attributes),
                ] {
                    let Cell::Map(pairs) = got(name) else {
                        return Err(TestCaseError::fail(format!("{name} is not a map")));
                    };
                    prop_assert_eq!(pairs.len(), attributes.len(), "{}", name);
                    // Sorted by key bytes; pairs of one key in the order sent.
                    let mut attributes: Vec<&KeyValue> = attributes.iter().collect();
                    attributes.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
                    for ((key, stored), attribute) in pairs.iter().zip(attributes) {
                        prop_assert_eq!(key, &attribute.key);
                        same_string(&Cell::Str(stored.clone()), attribute.value.as_ref())?;
                    }
                }
            }
            Ok(())
        }

        /// A string value is stored as it is and no value as `""`; any other is `AsString()`, which
        /// gostring.rs writes and tests.
        fn same_string(stored: &Cell, value: Option<&AnyValue>) -> Result<(), TestCaseError> {
            let Cell::Str(stored) = stored else {
                return Err(TestCaseError::fail(format!("{stored:?} is not a string")));
            };
            match value.and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => prop_assert_eq!(stored, s),
                None => prop_assert_eq!(stored, ""),
                Some(_) => {}
            }
            Ok(())
        }
    }
}

// ---- Metrics ----

/// The same properties for the metric tables: every data point becomes a faithful row of its
/// point type's table, or a rejection.
mod metrics {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    use opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile;
    use opentelemetry_proto::tonic::metrics::v1::{
        exemplar, number_data_point, Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint,
        Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics, Sum, Summary, SummaryDataPoint,
    };

    use super::*;
    use crate::sink::postgres::metrics::{
        encode, EncodedMetrics, EXPONENTIAL_HISTOGRAM_COLUMNS, GAUGE_COLUMNS, HISTOGRAM_COLUMNS,
        SUMMARY_COLUMNS, SUM_COLUMNS,
    };

    const TABLES: [&[&str]; 5] = [
        GAUGE_COLUMNS,
        SUM_COLUMNS,
        HISTOGRAM_COLUMNS,
        EXPONENTIAL_HISTOGRAM_COLUMNS,
        SUMMARY_COLUMNS,
    ];

    /// Counts mostly in a bigint's range, sometimes just past it.
    fn point_count() -> impl Strategy<Value = u64> {
        prop_oneof![
            8 => 0..1000u64,
            1 => any::<u64>(),
            1 => select(vec![i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX]),
        ]
    }

    fn exemplar() -> impl Strategy<Value = Exemplar> {
        let value = prop_oneof![
            double().prop_map(exemplar::Value::AsDouble),
            any::<i64>().prop_map(exemplar::Value::AsInt)
        ];
        (attributes(), time(), id(), id(), option::of(value)).prop_map(
            |(filtered_attributes, time_unix_nano, span_id, trace_id, value)| Exemplar {
                filtered_attributes,
                time_unix_nano,
                span_id,
                trace_id,
                value,
            },
        )
    }

    /// Start, time, attributes, flags and exemplars, which (but for a summary's exemplars) every point has.
    type Common = (u64, u64, Vec<KeyValue>, u32, Vec<Exemplar>);

    fn common() -> impl Strategy<Value = Common> {
        (
            prop_oneof![1 => Just(0), 4 => time()],
            time(),
            attributes(),
            any::<u32>(),
            vec(exemplar(), 0..3),
        )
    }

    fn number_point() -> impl Strategy<Value = NumberDataPoint> {
        let value = prop_oneof![
            double().prop_map(number_data_point::Value::AsDouble),
            any::<i64>().prop_map(number_data_point::Value::AsInt)
        ];
        (common(), option::of(value)).prop_map(
            |((start_time_unix_nano, time_unix_nano, attributes, flags, exemplars), value)| {
                NumberDataPoint {
                    attributes,
                    start_time_unix_nano,
                    time_unix_nano,
                    exemplars,
                    flags,
                    value,
                }
            },
        )
    }

    fn histogram_point() -> impl Strategy<Value = HistogramDataPoint> {
        (
            common(),
            point_count(),
            [
                option::of(double()),
                option::of(double()),
                option::of(double()),
            ],
            vec(point_count(), 0..5),
            vec(double(), 0..5),
        )
            .prop_map(
                |(
                    (start_time_unix_nano, time_unix_nano, attributes, flags, exemplars),
                    count,
                    [sum, min, max],
                    bucket_counts,
                    explicit_bounds,
                )| {
                    HistogramDataPoint {
                        attributes,
                        start_time_unix_nano,
                        time_unix_nano,
                        count,
                        sum,
                        bucket_counts,
                        explicit_bounds,
                        exemplars,
                        flags,
                        min,
                        max,
                    }
                },
            )
    }

    fn buckets() -> impl Strategy<Value = Buckets> {
        (any::<i32>(), vec(point_count(), 0..5)).prop_map(|(offset, bucket_counts)| Buckets {
            offset,
            bucket_counts,
        })
    }

    fn exponential_point() -> impl Strategy<Value = ExponentialHistogramDataPoint> {
        (
            common(),
            (
                point_count(),
                [
                    option::of(double()),
                    option::of(double()),
                    option::of(double()),
                ],
            ),
            (
                any::<i32>(),
                point_count(),
                double(),
                option::of(buckets()),
                option::of(buckets()),
            ),
        )
            .prop_map(
                |(
                    (start_time_unix_nano, time_unix_nano, attributes, flags, exemplars),
                    (count, [sum, min, max]),
                    (scale, zero_count, zero_threshold, positive, negative),
                )| ExponentialHistogramDataPoint {
                    attributes,
                    start_time_unix_nano,
                    time_unix_nano,
                    count,
                    sum,
                    scale,
                    zero_count,
                    positive,
                    negative,
                    flags,
                    exemplars,
                    min,
                    max,
                    zero_threshold,
                },
            )
    }

    fn summary_point() -> impl Strategy<Value = SummaryDataPoint> {
        let quantile =
            (double(), double()).prop_map(|(quantile, value)| ValueAtQuantile { quantile, value });
        (common(), point_count(), double(), vec(quantile, 0..4)).prop_map(
            |(
                (start_time_unix_nano, time_unix_nano, attributes, flags, _),
                count,
                sum,
                quantile_values,
            )| SummaryDataPoint {
                attributes,
                start_time_unix_nano,
                time_unix_nano,
                count,
                sum,
                quantile_values,
                flags,
            },
        )
    }

    fn data() -> impl Strategy<Value = Data> {
        prop_oneof![
            vec(number_point(), 0..4).prop_map(|data_points| Data::Gauge(Gauge { data_points })),
            (vec(number_point(), 0..4), enum_value(), any::<bool>()).prop_map(
                |(data_points, aggregation_temporality, is_monotonic)| {
                    Data::Sum(Sum {
                        data_points,
                        aggregation_temporality,
                        is_monotonic,
                    })
                }
            ),
            (vec(histogram_point(), 0..4), enum_value()).prop_map(
                |(data_points, aggregation_temporality)| Data::Histogram(Histogram {
                    data_points,
                    aggregation_temporality
                })
            ),
            (vec(exponential_point(), 0..4), enum_value()).prop_map(
                |(data_points, aggregation_temporality)| {
                    Data::ExponentialHistogram(ExponentialHistogram {
                        data_points,
                        aggregation_temporality,
                    })
                }
            ),
            vec(summary_point(), 0..4)
                .prop_map(|data_points| Data::Summary(Summary { data_points })),
        ]
    }

    fn metric() -> impl Strategy<Value = Metric> {
        (
            hostile_string(),
            hostile_string(),
            hostile_string(),
            attributes(),
            option::of(data()),
        )
            .prop_map(|(name, description, unit, metadata, data)| Metric {
                name,
                description,
                unit,
                metadata,
                data,
            })
    }

    fn request() -> impl Strategy<Value = ExportMetricsServiceRequest> {
        let scope_metrics = (option::of(scope()), vec(metric(), 0..4), hostile_string()).prop_map(
            |(scope, metrics, schema_url)| ScopeMetrics {
                scope,
                metrics,
                schema_url,
            },
        );
        let resource_metrics = (
            option::of(resource()),
            vec(scope_metrics, 1..3),
            hostile_string(),
        )
            .prop_map(|(resource, scope_metrics, schema_url)| ResourceMetrics {
                resource,
                scope_metrics,
                schema_url,
            });
        vec(resource_metrics, 1..3)
            .prop_map(|resource_metrics| ExportMetricsServiceRequest { resource_metrics })
    }

    /// As for spans: what prost accepts the encoder accepts, with faithful rows; anything else it
    /// refuses or writes as well-framed rows.
    fn check_decode(bytes: &[u8]) -> Result<(), TestCaseError> {
        match (ExportMetricsServiceRequest::decode(bytes), encode(bytes)) {
            (Ok(request), Ok(_)) => check_rows(&request),
            (Ok(_), Err(error)) => Err(TestCaseError::fail(format!(
                "prost accepts what the encoder refuses: {error}"
            ))),
            (Err(_), Ok(encoded)) => {
                for (rows, columns) in tables(encoded).0.into_iter().zip(TABLES) {
                    let chunk = rows.finish();
                    prop_assert_eq!(
                        super::copy_rows_of(columns, &chunk.data).len() as u64,
                        chunk.rows
                    );
                }
                Ok(())
            }
            (Err(_), Err(_)) => Ok(()),
        }
    }

    fn tables(
        encoded: EncodedMetrics,
    ) -> ([crate::sink::postgres::CopyRows; 5], u64, Option<String>) {
        let rows = [
            encoded.gauge,
            encoded.sum,
            encoded.histogram,
            encoded.exponential_histogram,
            encoded.summary,
        ];
        (rows, encoded.rejected, encoded.first_rejection)
    }

    /// A column's expected content.
    enum Expected<'a> {
        Field(Option<Vec<u8>>),
        Attributes(&'a [KeyValue]),
        Exemplars(&'a [Exemplar]),
    }

    /// One data point with what it shares with its metric, resource and scope.
    struct Point<'a> {
        resource: &'a ResourceMetrics,
        scope: &'a ScopeMetrics,
        metric: &'a Metric,
        /// Index into TABLES.
        table: usize,
        kind: &'static str,
        common: (u64, u64, &'a [KeyValue], u32, &'a [Exemplar]),
        /// The columns after the common ones, or None when a value does not fit.
        specific: Option<Vec<Option<Vec<u8>>>>,
    }

    fn int8(value: i64) -> Option<Vec<u8>> {
        Some(value.to_be_bytes().to_vec())
    }

    fn float8(value: f64) -> Option<Vec<u8>> {
        Some(value.to_bits().to_be_bytes().to_vec())
    }

    fn count(value: u64) -> Option<Option<Vec<u8>>> {
        i64::try_from(value).ok().map(int8)
    }

    fn temporality(value: i32) -> Option<Option<Vec<u8>>> {
        i16::try_from(value)
            .ok()
            .map(|t| Some(t.to_be_bytes().to_vec()))
    }

    /// PostgreSQL's binary array of 8-byte elements, spelled out independently of the encoder.
    fn array(oid: u32, elements: &[[u8; 8]]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        out.extend_from_slice(&i32::from(!elements.is_empty()).to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&oid.to_be_bytes());
        if !elements.is_empty() {
            out.extend_from_slice(&(elements.len() as i32).to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
        }
        for element in elements {
            out.extend_from_slice(&8i32.to_be_bytes());
            out.extend_from_slice(element);
        }
        Some(out)
    }

    fn counts(values: &[u64]) -> Option<Option<Vec<u8>>> {
        let elements: Option<Vec<[u8; 8]>> = values
            .iter()
            .map(|&v| i64::try_from(v).ok().map(i64::to_be_bytes))
            .collect();
        Some(array(20, &elements?))
    }

    fn doubles(values: impl Iterator<Item = f64>) -> Option<Vec<u8>> {
        array(
            701,
            &values
                .map(|v| v.to_bits().to_be_bytes())
                .collect::<Vec<_>>(),
        )
    }

    fn optional(value: Option<f64>) -> Option<Vec<u8>> {
        value.and_then(float8)
    }

    fn int4(value: i32) -> Option<Vec<u8>> {
        Some(value.to_be_bytes().to_vec())
    }

    fn number_columns(point: &NumberDataPoint) -> Vec<Option<Vec<u8>>> {
        match point.value {
            Some(number_data_point::Value::AsDouble(d)) => vec![float8(d), None],
            Some(number_data_point::Value::AsInt(i)) => vec![None, int8(i)],
            None => vec![None, None],
        }
    }

    /// Every data point of the request, in order.
    fn points(request: &ExportMetricsServiceRequest) -> Vec<Point<'_>> {
        let mut points = Vec::new();
        for resource in &request.resource_metrics {
            for scope in &resource.scope_metrics {
                for metric in &scope.metrics {
                    let mut push = |table, kind, common, specific| {
                        points.push(Point {
                            resource,
                            scope,
                            metric,
                            table,
                            kind,
                            common,
                            specific,
                        })
                    };
                    match &metric.data {
                        Some(Data::Gauge(gauge)) => {
                            for p in &gauge.data_points {
                                let common = (
                                    p.start_time_unix_nano,
                                    p.time_unix_nano,
                                    &p.attributes[..],
                                    p.flags,
                                    &p.exemplars[..],
                                );
                                push(0, "gauge", common, Some(number_columns(p)));
                            }
                        }
                        Some(Data::Sum(sum)) => {
                            for p in &sum.data_points {
                                let common = (
                                    p.start_time_unix_nano,
                                    p.time_unix_nano,
                                    &p.attributes[..],
                                    p.flags,
                                    &p.exemplars[..],
                                );
                                let specific = temporality(sum.aggregation_temporality).map(|t| {
                                    [
                                        number_columns(p),
                                        vec![t, Some(vec![u8::from(sum.is_monotonic)])],
                                    ]
                                    .concat()
                                });
                                push(1, "sum", common, specific);
                            }
                        }
                        Some(Data::Histogram(histogram)) => {
                            for p in &histogram.data_points {
                                let common = (
                                    p.start_time_unix_nano,
                                    p.time_unix_nano,
                                    &p.attributes[..],
                                    p.flags,
                                    &p.exemplars[..],
                                );
                                let specific = (|| {
                                    Some(vec![
                                        count(p.count)?,
                                        optional(p.sum),
                                        optional(p.min),
                                        optional(p.max),
                                        counts(&p.bucket_counts)?,
                                        doubles(p.explicit_bounds.iter().copied()),
                                        temporality(histogram.aggregation_temporality)?,
                                    ])
                                })();
                                push(2, "histogram", common, specific);
                            }
                        }
                        Some(Data::ExponentialHistogram(histogram)) => {
                            for p in &histogram.data_points {
                                let common = (
                                    p.start_time_unix_nano,
                                    p.time_unix_nano,
                                    &p.attributes[..],
                                    p.flags,
                                    &p.exemplars[..],
                                );
                                let (positive, negative) = (
                                    p.positive.clone().unwrap_or_default(),
                                    p.negative.clone().unwrap_or_default(),
                                );
                                let specific = (|| {
                                    Some(vec![
                                        count(p.count)?,
                                        optional(p.sum),
                                        optional(p.min),
                                        optional(p.max),
                                        int4(p.scale),
                                        count(p.zero_count)?,
                                        float8(p.zero_threshold),
                                        int4(positive.offset),
                                        counts(&positive.bucket_counts)?,
                                        int4(negative.offset),
                                        counts(&negative.bucket_counts)?,
                                        temporality(histogram.aggregation_temporality)?,
                                    ])
                                })();
                                push(3, "exponential histogram", common, specific);
                            }
                        }
                        Some(Data::Summary(summary)) => {
                            for p in &summary.data_points {
                                let common = (
                                    p.start_time_unix_nano,
                                    p.time_unix_nano,
                                    &p.attributes[..],
                                    p.flags,
                                    &[][..],
                                );
                                let specific = count(p.count).map(|count| {
                                    vec![
                                        count,
                                        float8(p.sum),
                                        doubles(p.quantile_values.iter().map(|q| q.quantile)),
                                        doubles(p.quantile_values.iter().map(|q| q.value)),
                                    ]
                                });
                                push(4, "summary", common, specific);
                            }
                        }
                        None => {}
                    }
                }
            }
        }
        points
    }

    fn fits(point: &Point<'_>) -> bool {
        point.specific.is_some()
            && i64::try_from(point.common.0).is_ok()
            && i64::try_from(point.common.1).is_ok()
    }

    fn check_rows(request: &ExportMetricsServiceRequest) -> Result<(), TestCaseError> {
        let otlp = request.encode_to_vec();
        let (tables, rejected, first_rejection) =
            tables(encode(&otlp).map_err(|e| TestCaseError::fail(e.to_string()))?);
        // prost leaves out a double field of -0.0, equal to its default, so the reference is what
        // it reads back.
        let request = ExportMetricsServiceRequest::decode(&otlp[..])
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let points = points(&request);
        prop_assert_eq!(rejected, points.iter().filter(|p| !fits(p)).count() as u64);
        match points.iter().find(|p| !fits(p)) {
            Some(point) => {
                let named = format!("{} point of metric {:?}: ", point.kind, point.metric.name);
                let message = first_rejection.unwrap_or_default();
                prop_assert!(
                    message.starts_with(&named),
                    "{:?} does not name the first rejected point",
                    message
                );
            }
            None => prop_assert_eq!(first_rejection, None),
        }
        for (table, (rows, columns)) in tables.into_iter().zip(TABLES).enumerate() {
            let chunk = rows.finish();
            let parsed = super::copy_rows_of(columns, &chunk.data);
            let kept: Vec<_> = points
                .iter()
                .filter(|p| p.table == table && fits(p))
                .collect();
            prop_assert_eq!(parsed.len() as u64, chunk.rows);
            prop_assert_eq!(parsed.len(), kept.len());
            prop_assert_eq!(chunk.row_ranges().len(), parsed.len());
            for (row, point) in parsed.iter().zip(kept) {
                check_row(row, columns, point)?;
            }
        }
        Ok(())
    }

    fn check_row(row: &Row, columns: &[&str], point: &Point<'_>) -> Result<(), TestCaseError> {
        let resource_attributes = point
            .resource
            .resource
            .as_ref()
            .map_or(&[][..], |r| &r.attributes[..]);
        let scope = point.scope.scope.clone().unwrap_or_default();
        let service_name = match resource_attributes
            .iter()
            .rev()
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref()?.value.as_ref())
        {
            Some(Value::StringValue(name)) => name.as_str(),
            _ => "",
        };
        let text = |s: &str| Expected::Field(Some(without_nul(s).into_bytes()));
        let (start, time, attributes, flags, exemplars) = point.common;
        // `fits` held, so these casts are exact.
        let (start, time) = (start as i64, time as i64);
        let mut expected = vec![
            text(&point.metric.name),
            text(&point.metric.description),
            text(&point.metric.unit),
            Expected::Attributes(&point.metric.metadata),
            text(service_name),
            Expected::Attributes(resource_attributes),
            text(&point.resource.schema_url),
            text(&scope.name),
            text(&scope.version),
            Expected::Attributes(&scope.attributes),
            text(&point.scope.schema_url),
            Expected::Attributes(attributes),
            Expected::Field(int8(start)),
            Expected::Field(int8(time / 1000 - POSTGRES_EPOCH_MICROS)),
            Expected::Field(int8(time)),
            Expected::Field(Some(flags.to_be_bytes().to_vec())),
            Expected::Exemplars(exemplars),
        ];
        expected.extend(
            point
                .specific
                .iter()
                .flatten()
                .cloned()
                .map(Expected::Field),
        );
        prop_assert_eq!(expected.len(), columns.len());
        for ((name, field), expected) in columns.iter().zip(row).zip(expected) {
            match expected {
                Expected::Field(value) => prop_assert_eq!(field, &value, "column {}", name),
                Expected::Attributes(attributes) => same(
                    decode_attributes(jsonb(field)),
                    stored_attributes(attributes),
                )?,
                Expected::Exemplars(exemplars) => {
                    let Json::Array(decoded) = jsonb(field) else {
                        return Err(TestCaseError::fail("exemplars are not an array"));
                    };
                    let stored: Vec<Exemplar> = exemplars
                        .iter()
                        .map(|e| Exemplar {
                            filtered_attributes: stored_attributes(&e.filtered_attributes),
                            ..e.clone()
                        })
                        .collect();
                    same(
                        decoded.into_iter().map(decode_exemplar).collect::<Vec<_>>(),
                        stored,
                    )?;
                }
            }
        }
        Ok(())
    }

    fn decode_exemplar(json: Json) -> Exemplar {
        let [time_unix_nano, value, trace_id, span_id, filtered_attributes] = fields(
            json,
            [
                "time_unix_nano",
                "value",
                "trace_id",
                "span_id",
                "filtered_attributes",
            ],
        );
        let value = match decode_value(value).value {
            None => None,
            Some(Value::IntValue(int)) => Some(exemplar::Value::AsInt(int)),
            Some(Value::DoubleValue(double)) => Some(exemplar::Value::AsDouble(double)),
            Some(other) => panic!("an exemplar value is an int or a double, not {other:?}"),
        };
        Exemplar {
            filtered_attributes: decode_attributes(filtered_attributes),
            time_unix_nano: number(time_unix_nano),
            span_id: hex_bytes(span_id),
            trace_id: hex_bytes(trace_id),
            value,
        }
    }

    proptest! {
        #[test]
        fn every_metric_point_becomes_a_faithful_row_or_a_rejection(request in request()) {
            check_rows(&request)?;
        }

        #[test]
        fn mutated_metric_requests_decode_or_fail(request in request(), mutations in vec(mutation(), 1..4)) {
            let mut bytes = request.encode_to_vec();
            for mutation in &mutations {
                mutate(&mut bytes, mutation);
            }
            check_decode(&bytes)?;
        }

        #[test]
        fn arbitrary_bytes_decode_as_metrics_or_fail(bytes in prop_oneof![vec(any::<u8>(), 0..1024), wire_message()]) {
            check_decode(&bytes)?;
        }
    }
}
