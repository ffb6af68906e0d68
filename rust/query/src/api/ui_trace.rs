//! A [`Trace`] as the Jaeger UI's JSON (the `data` items of Jaeger's v1 `/api/traces` answers),
//! mapped from OTLP the way the collector's Jaeger translator does:
//!
//! - the resource becomes the span's process: `serviceName` and the other resource attributes as
//!   tags; processes are keyed `p1`, `p2`, … in the order spans first use them;
//! - span tags are `otel.scope.name` and `otel.scope.version`, the attributes sorted by key,
//!   `span.kind`, `otel.status_code`, `error=true`, `otel.status_description` and
//!   `w3c.tracestate`, each only when it has something to say;
//! - the parent is the first reference (`CHILD_OF`), then links (`FOLLOWS_FROM`, unless the link's
//!   `opentracing.ref_type` says `child_of`); a link to the parent only retypes that reference;
//! - events become logs, the event name as an `event` field first;
//! - times and durations are integer microseconds.

use base64::Engine;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value as Json;

use crate::model::{Attribute, Event, Link, Span, SpanId, StatusCode, Trace, TraceId, Value};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UiTrace {
    #[serde(rename = "traceID")]
    trace_id: String,
    spans: Vec<UiSpan>,
    processes: Processes,
    warnings: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct UiSpan {
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
    /// The W3C sampled flag, omitted when 0.
    #[serde(skip_serializing_if = "is_zero")]
    flags: u32,
    operation_name: String,
    references: Vec<Reference>,
    start_time: i64,
    duration: i64,
    tags: Vec<KeyValue>,
    logs: Vec<Log>,
    #[serde(rename = "processID")]
    process_id: String,
    warnings: Option<Vec<String>>,
}

fn is_zero(flags: &u32) -> bool {
    *flags == 0
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Reference {
    #[serde(rename = "refType")]
    ref_type: &'static str,
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
}

const CHILD_OF: &str = "CHILD_OF";
const FOLLOWS_FROM: &str = "FOLLOWS_FROM";

#[derive(Debug, Clone, PartialEq, Serialize)]
struct KeyValue {
    key: String,
    #[serde(rename = "type")]
    kind: &'static str,
    value: Json,
}

impl KeyValue {
    fn string(key: &str, value: impl Into<String>) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            kind: "string",
            value: Json::String(value.into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Log {
    timestamp: i64,
    fields: Vec<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct Process {
    service_name: String,
    tags: Vec<KeyValue>,
}

/// The distinct processes of a trace, serialized as an object keyed `p1`, `p2`, … in this order.
#[derive(Debug, Clone, PartialEq, Default)]
struct Processes(Vec<Process>);

impl Processes {
    /// The key of this process, added if it is new.
    fn key_of(&mut self, process: Process) -> String {
        let index = match self.0.iter().position(|known| *known == process) {
            Some(index) => index,
            None => {
                self.0.push(process);
                self.0.len() - 1
            }
        };
        format!("p{}", index + 1)
    }
}

impl Serialize for Processes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (i, process) in self.0.iter().enumerate() {
            map.serialize_entry(&format!("p{}", i + 1), process)?;
        }
        map.end()
    }
}

/// The largest integer a JavaScript number holds exactly; larger ones are sent as strings.
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// A typed tag: `string`, `bool`, `int64`, `float64` or `binary`. Arrays and maps are sent as
/// their JSON text, an empty value as `""`.
fn tag(key: &str, value: &Value) -> KeyValue {
    let (kind, value) = match value {
        Value::Str(text) => ("string", Json::String(text.clone())),
        Value::Bool(flag) => ("bool", Json::Bool(*flag)),
        Value::Int(number) if number.unsigned_abs() > MAX_SAFE_INTEGER.unsigned_abs() => {
            ("int64", Json::String(number.to_string()))
        }
        Value::Int(number) => ("int64", Json::from(*number)),
        Value::Double(number) => ("float64", double(*number)),
        Value::Bytes(bytes) => ("binary", Json::String(base64(bytes))),
        Value::Array(_) | Value::Map(_) => ("string", Json::String(raw(value).to_string())),
        Value::Empty => ("string", Json::String(String::new())),
    };
    KeyValue {
        key: key.to_owned(),
        kind,
        value,
    }
}

/// A double as a JSON number; NaN and the infinities, which JSON has no number for, as strings.
pub(super) fn double(number: f64) -> Json {
    serde_json::Number::from_f64(number).map_or_else(
        || {
            Json::String(
                if number.is_nan() {
                    "NaN"
                } else if number > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                }
                .to_owned(),
            )
        },
        Json::Number,
    )
}

pub(super) fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A value as plain JSON (for the text of arrays and maps): maps with their keys sorted, bytes in
/// base64, an empty value as null.
fn raw(value: &Value) -> Json {
    match value {
        Value::Str(text) => Json::String(text.clone()),
        Value::Bool(flag) => Json::Bool(*flag),
        Value::Int(number) => Json::from(*number),
        Value::Double(number) => double(*number),
        Value::Bytes(bytes) => Json::String(base64(bytes)),
        Value::Array(values) => Json::Array(values.iter().map(raw).collect()),
        Value::Map(attributes) => Json::Object(
            sorted(attributes)
                .into_iter()
                .map(|attribute| (attribute.key.clone(), raw(&attribute.value)))
                .collect(),
        ),
        Value::Empty => Json::Null,
    }
}

/// The attributes sorted by key (stably, so that duplicates keep their order).
fn sorted(attributes: &[Attribute]) -> Vec<&Attribute> {
    let mut sorted: Vec<&Attribute> = attributes.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    sorted
}

fn tags(attributes: &[Attribute]) -> impl Iterator<Item = KeyValue> + '_ {
    sorted(attributes)
        .into_iter()
        .map(|attribute| tag(&attribute.key, &attribute.value))
}

fn span_tags(span: &Span) -> Vec<KeyValue> {
    let mut out = Vec::with_capacity(span.attributes.len() + 6);
    if !span.scope_name.is_empty() {
        out.push(KeyValue::string("otel.scope.name", &span.scope_name));
    }
    if !span.scope_version.is_empty() {
        out.push(KeyValue::string("otel.scope.version", &span.scope_version));
    }
    out.extend(tags(&span.attributes));
    if let Some(kind) = span.kind.jaeger() {
        out.push(KeyValue::string("span.kind", kind));
    }
    match span.status_code {
        StatusCode::Unset => {}
        StatusCode::Ok => out.push(KeyValue::string("otel.status_code", "OK")),
        StatusCode::Error => {
            out.push(KeyValue::string("otel.status_code", "ERROR"));
            out.push(tag("error", &Value::Bool(true)));
        }
    }
    if !span.status_message.is_empty() {
        out.push(KeyValue::string(
            "otel.status_description",
            &span.status_message,
        ));
    }
    if !span.trace_state.is_empty() {
        out.push(KeyValue::string("w3c.tracestate", &span.trace_state));
    }
    out
}

fn reference(ref_type: &'static str, trace_id: TraceId, span_id: SpanId) -> Reference {
    Reference {
        ref_type,
        trace_id: trace_id.to_string(),
        span_id: span_id.to_string(),
    }
}

fn link_type(link: &Link) -> &'static str {
    let child_of = link.attributes.iter().any(|attribute| {
        attribute.key == "opentracing.ref_type" && attribute.value == Value::Str("child_of".into())
    });
    if child_of {
        CHILD_OF
    } else {
        FOLLOWS_FROM
    }
}

const INVALID_LINK: &str = "Invalid span link removed";

/// The references of a span, and a warning when a link had no trace id.
fn references(span: &Span) -> (Vec<Reference>, Option<Vec<String>>) {
    let mut out = Vec::with_capacity(span.links.len() + 1);
    let mut warnings = None;
    if let Some(parent) = span.parent_span_id {
        out.push(reference(CHILD_OF, span.trace_id, parent));
    }
    for link in &span.links {
        if link.trace_id.0 == [0; 16] {
            warnings = Some(vec![INVALID_LINK.to_owned()]);
            continue;
        }
        let ref_type = link_type(link);
        match span.parent_span_id {
            Some(parent) if link.trace_id == span.trace_id && link.span_id == parent => {
                out[0].ref_type = ref_type;
            }
            _ => out.push(reference(ref_type, link.trace_id, link.span_id)),
        }
    }
    (out, warnings)
}

fn log(event: &Event) -> Log {
    let mut fields = Vec::with_capacity(event.attributes.len() + 1);
    if !event.name.is_empty() && !event.attributes.iter().any(|a| a.key == "event") {
        fields.push(KeyValue::string("event", &event.name));
    }
    fields.extend(tags(&event.attributes));
    Log {
        timestamp: micros(event.time_unix_nano),
        fields,
    }
}

fn micros(nanos: i64) -> i64 {
    nanos.div_euclid(1000)
}

fn process(span: &Span) -> Process {
    let resource: Vec<Attribute> = span
        .resource_attributes
        .iter()
        .filter(|attribute| attribute.key != "service.name")
        .cloned()
        .collect();
    Process {
        service_name: span.service_name.clone(),
        tags: tags(&resource).collect(),
    }
}

impl UiTrace {
    /// The trace with its spans in the order they started (then by id), so that one trace always
    /// gives the same JSON.
    pub fn from_trace(trace: &Trace) -> UiTrace {
        let mut spans: Vec<&Span> = trace.spans.iter().collect();
        spans.sort_by_key(|span| (span.start_unix_nano, span.span_id));
        let mut processes = Processes::default();
        let spans = spans
            .into_iter()
            .map(|span| {
                let (references, warnings) = references(span);
                UiSpan {
                    trace_id: span.trace_id.to_string(),
                    span_id: span.span_id.to_string(),
                    flags: span.flags & 1,
                    operation_name: span.name.clone(),
                    references,
                    start_time: micros(span.start_unix_nano),
                    duration: span.duration_ns.max(0) / 1000,
                    tags: span_tags(span),
                    logs: span.events.iter().map(log).collect(),
                    process_id: processes.key_of(process(span)),
                    warnings,
                }
            })
            .collect();
        UiTrace {
            trace_id: trace.trace_id.to_string(),
            spans,
            processes,
            warnings: None,
        }
    }
}

/// The spans the tests of both APIs encode.
#[cfg(test)]
pub(super) mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::SpanKind;

    pub(in crate::api) fn attribute(key: &str, value: Value) -> Attribute {
        Attribute {
            key: key.to_owned(),
            value,
        }
    }

    pub(in crate::api) fn trace_id(hex: &str) -> TraceId {
        TraceId::parse(hex).expect("trace id")
    }

    pub(in crate::api) fn span_id(hex: &str) -> SpanId {
        SpanId::parse(hex).expect("span id")
    }

    pub(in crate::api) const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

    /// A span with nothing optional set.
    pub(in crate::api) fn bare_span(id: &str, start_unix_nano: i64) -> Span {
        Span {
            trace_id: trace_id(TRACE),
            span_id: span_id(id),
            parent_span_id: None,
            trace_state: String::new(),
            flags: 0,
            name: "work".into(),
            kind: SpanKind::Unspecified,
            start_unix_nano,
            duration_ns: 0,
            status_code: StatusCode::Unset,
            status_message: String::new(),
            service_name: "checkout".into(),
            resource_attributes: vec![attribute("service.name", Value::Str("checkout".into()))],
            scope_name: String::new(),
            scope_version: String::new(),
            attributes: vec![],
            events: vec![],
            links: vec![],
        }
    }

    /// A span with every feature: parent, links of each kind, events, every attribute type, a
    /// kind, an error status with a message, a trace state, a scope and resource attributes.
    pub(in crate::api) fn full_span() -> Span {
        Span {
            parent_span_id: Some(span_id("00f067aa0ba902b7")),
            trace_state: "vendor=abc".into(),
            // The sampled bit, and a bit Jaeger has no place for.
            flags: 0x101,
            name: "GET /cart".into(),
            kind: SpanKind::Server,
            duration_ns: 2_500_999,
            status_code: StatusCode::Error,
            status_message: "boom".into(),
            resource_attributes: vec![
                attribute("service.name", Value::Str("checkout".into())),
                attribute("process.pid", Value::Int(4242)),
                attribute("host.name", Value::Str("h1".into())),
            ],
            scope_name: "io.opentelemetry.http".into(),
            scope_version: "1.2.0".into(),
            attributes: vec![
                attribute("z.empty", Value::Empty),
                attribute("http.method", Value::Str("GET".into())),
                attribute("cache.hit", Value::Bool(false)),
                attribute("http.status_code", Value::Int(500)),
                attribute("big", Value::Int(1 << 60)),
                attribute("ratio", Value::Double(0.25)),
                attribute("nan", Value::Double(f64::NAN)),
                attribute("blob", Value::Bytes(vec![0, 0, 0x30, 0x39])),
                attribute(
                    "list",
                    Value::Array(vec![Value::Str("a".into()), Value::Int(2), Value::Empty]),
                ),
                attribute(
                    "map",
                    Value::Map(vec![
                        attribute("z", Value::Bytes(vec![1])),
                        attribute("a", Value::Double(1.5)),
                    ]),
                ),
            ],
            events: vec![
                Event {
                    time_unix_nano: 1_700_000_000_124_000_999,
                    name: "exception".into(),
                    attributes: vec![
                        attribute("exception.type", Value::Str("IOError".into())),
                        attribute("exception.message", Value::Str("disk".into())),
                    ],
                },
                Event {
                    time_unix_nano: 1_700_000_000_125_000_000,
                    name: "named".into(),
                    attributes: vec![attribute("event", Value::Str("own".into()))],
                },
                Event {
                    time_unix_nano: 1_700_000_000_126_000_000,
                    name: String::new(),
                    attributes: vec![attribute("n", Value::Int(1))],
                },
            ],
            links: vec![
                Link {
                    trace_id: trace_id("11111111111111111111111111111111"),
                    span_id: span_id("2222222222222222"),
                    trace_state: String::new(),
                    attributes: vec![],
                },
                Link {
                    trace_id: trace_id("33333333333333333333333333333333"),
                    span_id: span_id("4444444444444444"),
                    trace_state: String::new(),
                    attributes: vec![attribute(
                        "opentracing.ref_type",
                        Value::Str("child_of".into()),
                    )],
                },
            ],
            ..bare_span("b7ad6b7169203331", 1_700_000_000_123_456_789)
        }
    }

    fn ui_json(spans: Vec<Span>) -> Json {
        let trace = Trace {
            trace_id: trace_id(TRACE),
            spans,
        };
        serde_json::to_value(UiTrace::from_trace(&trace)).expect("encodes")
    }

    #[test]
    fn a_span_with_every_feature() {
        let expected = json!({
            "traceID": TRACE,
            "spans": [{
                "traceID": TRACE,
                "spanID": "b7ad6b7169203331",
                "flags": 1,
                "operationName": "GET /cart",
                "references": [
                    {"refType": "CHILD_OF", "traceID": TRACE, "spanID": "00f067aa0ba902b7"},
                    {"refType": "FOLLOWS_FROM", "traceID": "11111111111111111111111111111111", "spanID": "2222222222222222"},
                    {"refType": "CHILD_OF", "traceID": "33333333333333333333333333333333", "spanID": "4444444444444444"},
                ],
                "startTime": 1_700_000_000_123_456_i64,
                "duration": 2500,
                "tags": [
                    {"key": "otel.scope.name", "type": "string", "value": "io.opentelemetry.http"},
                    {"key": "otel.scope.version", "type": "string", "value": "1.2.0"},
                    {"key": "big", "type": "int64", "value": "1152921504606846976"},
                    {"key": "blob", "type": "binary", "value": "AAAwOQ=="},
                    {"key": "cache.hit", "type": "bool", "value": false},
                    {"key": "http.method", "type": "string", "value": "GET"},
                    {"key": "http.status_code", "type": "int64", "value": 500},
                    {"key": "list", "type": "string", "value": "[\"a\",2,null]"},
                    {"key": "map", "type": "string", "value": "{\"a\":1.5,\"z\":\"AQ==\"}"},
                    {"key": "nan", "type": "float64", "value": "NaN"},
                    {"key": "ratio", "type": "float64", "value": 0.25},
                    {"key": "z.empty", "type": "string", "value": ""},
                    {"key": "span.kind", "type": "string", "value": "server"},
                    {"key": "otel.status_code", "type": "string", "value": "ERROR"},
                    {"key": "error", "type": "bool", "value": true},
                    {"key": "otel.status_description", "type": "string", "value": "boom"},
                    {"key": "w3c.tracestate", "type": "string", "value": "vendor=abc"},
                ],
                "logs": [
                    {"timestamp": 1_700_000_000_124_000_i64, "fields": [
                        {"key": "event", "type": "string", "value": "exception"},
                        {"key": "exception.message", "type": "string", "value": "disk"},
                        {"key": "exception.type", "type": "string", "value": "IOError"},
                    ]},
                    {"timestamp": 1_700_000_000_125_000_i64, "fields": [
                        {"key": "event", "type": "string", "value": "own"},
                    ]},
                    {"timestamp": 1_700_000_000_126_000_i64, "fields": [
                        {"key": "n", "type": "int64", "value": 1},
                    ]},
                ],
                "processID": "p1",
                "warnings": null,
            }],
            "processes": {
                "p1": {"serviceName": "checkout", "tags": [
                    {"key": "host.name", "type": "string", "value": "h1"},
                    {"key": "process.pid", "type": "int64", "value": 4242},
                ]},
            },
            "warnings": null,
        });
        let actual = ui_json(vec![full_span()]);
        assert_eq!(actual, expected, "{actual:#}");
        assert_shape(&actual);
    }

    #[test]
    fn fields_come_in_jaegers_order() {
        let text = serde_json::to_string(&UiTrace::from_trace(&Trace {
            trace_id: trace_id(TRACE),
            spans: vec![bare_span("0000000000000001", 1_000_999)],
        }))
        .expect("encodes");
        assert_eq!(
            text,
            format!(
                concat!(
                    r#"{{"traceID":"{t}","spans":[{{"traceID":"{t}","spanID":"0000000000000001","#,
                    r#""operationName":"work","references":[],"startTime":1000,"duration":0,"tags":[],"logs":[],"#,
                    r#""processID":"p1","warnings":null}}],"processes":{{"p1":{{"serviceName":"checkout","tags":[]}}}},"#,
                    r#""warnings":null}}"#
                ),
                t = TRACE
            )
        );
    }

    #[test]
    fn each_kind_and_status_gives_its_tags() {
        let tags_of = |kind: SpanKind, status: StatusCode, message: &str| -> Vec<(String, Json)> {
            let span = Span {
                kind,
                status_code: status,
                status_message: message.into(),
                ..bare_span("0000000000000001", 0)
            };
            span_tags(&span)
                .into_iter()
                .map(|tag| (tag.key, tag.value))
                .collect()
        };
        let kind = |name: &str| ("span.kind".to_owned(), json!(name));
        for (span_kind, name) in [
            (SpanKind::Internal, "internal"),
            (SpanKind::Server, "server"),
            (SpanKind::Client, "client"),
            (SpanKind::Producer, "producer"),
            (SpanKind::Consumer, "consumer"),
        ] {
            assert_eq!(tags_of(span_kind, StatusCode::Unset, ""), vec![kind(name)]);
        }
        assert_eq!(
            tags_of(SpanKind::Unspecified, StatusCode::Unset, ""),
            vec![]
        );
        assert_eq!(
            tags_of(SpanKind::Unspecified, StatusCode::Ok, "fine"),
            vec![
                ("otel.status_code".to_owned(), json!("OK")),
                ("otel.status_description".to_owned(), json!("fine")),
            ]
        );
        assert_eq!(
            tags_of(SpanKind::Client, StatusCode::Error, ""),
            vec![
                kind("client"),
                ("otel.status_code".to_owned(), json!("ERROR")),
                ("error".to_owned(), json!(true)),
            ]
        );
        // A message without a status is still shown.
        assert_eq!(
            tags_of(SpanKind::Unspecified, StatusCode::Unset, "odd"),
            vec![("otel.status_description".to_owned(), json!("odd"))]
        );
    }

    #[test]
    fn values_of_every_type() {
        let typed = |value: Value| {
            let kv = tag("k", &value);
            (kv.kind, kv.value)
        };
        assert_eq!(
            typed(Value::Int(MAX_SAFE_INTEGER)),
            ("int64", json!(MAX_SAFE_INTEGER))
        );
        assert_eq!(
            typed(Value::Int(-MAX_SAFE_INTEGER - 1)),
            ("int64", json!("-9007199254740992"))
        );
        assert_eq!(
            typed(Value::Double(f64::INFINITY)),
            ("float64", json!("Infinity"))
        );
        assert_eq!(
            typed(Value::Double(f64::NEG_INFINITY)),
            ("float64", json!("-Infinity"))
        );
        assert_eq!(typed(Value::Bytes(vec![])), ("binary", json!("")));
        assert_eq!(typed(Value::Array(vec![])), ("string", json!("[]")));
        assert_eq!(
            typed(Value::Map(vec![attribute(
                "nested",
                Value::Array(vec![Value::Bool(true), Value::Double(f64::NAN)])
            )])),
            ("string", json!("{\"nested\":[true,\"NaN\"]}"))
        );
    }

    #[test]
    fn processes_are_numbered_in_order_of_first_use_and_spans_by_start() {
        let other = |id: &str, start: i64| Span {
            service_name: "cart".into(),
            resource_attributes: vec![attribute("service.name", Value::Str("cart".into()))],
            ..bare_span(id, start)
        };
        // Given out of order: the spans are sorted by start time, then id.
        let actual = ui_json(vec![
            bare_span("0000000000000004", 30),
            other("0000000000000003", 20),
            bare_span("0000000000000002", 10),
            bare_span("0000000000000001", 10),
        ]);
        let spans: Vec<(&str, &str)> = actual["spans"]
            .as_array()
            .expect("spans")
            .iter()
            .map(|span| {
                (
                    span["spanID"].as_str().expect("id"),
                    span["processID"].as_str().expect("process"),
                )
            })
            .collect();
        assert_eq!(
            spans,
            vec![
                ("0000000000000001", "p1"),
                ("0000000000000002", "p1"),
                ("0000000000000003", "p2"),
                ("0000000000000004", "p1"),
            ]
        );
        assert_eq!(
            actual["processes"],
            json!({"p1": {"serviceName": "checkout", "tags": []}, "p2": {"serviceName": "cart", "tags": []}})
        );
        assert_shape(&actual);
    }

    #[test]
    fn a_link_to_the_parent_retypes_it_and_an_empty_link_is_dropped() {
        let parent = span_id("00f067aa0ba902b7");
        let span = Span {
            parent_span_id: Some(parent),
            links: vec![
                Link {
                    trace_id: trace_id(TRACE),
                    span_id: parent,
                    trace_state: String::new(),
                    attributes: vec![],
                },
                Link {
                    trace_id: TraceId([0; 16]),
                    span_id: span_id("1"),
                    trace_state: String::new(),
                    attributes: vec![],
                },
            ],
            ..bare_span("0000000000000001", 0)
        };
        let actual = ui_json(vec![span]);
        assert_eq!(
            actual["spans"][0]["references"],
            json!([{"refType": "FOLLOWS_FROM", "traceID": TRACE, "spanID": "00f067aa0ba902b7"}])
        );
        assert_eq!(
            actual["spans"][0]["warnings"],
            json!(["Invalid span link removed"])
        );
        assert_shape(&actual);
    }

    fn keys(value: &Json) -> Vec<&str> {
        let mut keys: Vec<&str> = value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        keys
    }

    fn assert_key_value(tag: &Json) {
        assert_eq!(keys(tag), ["key", "type", "value"], "{tag}");
        assert!(tag["key"].is_string(), "{tag}");
        let value = &tag["value"];
        let typed = match tag["type"].as_str().expect("type") {
            "string" | "binary" => value.is_string(),
            "bool" => value.is_boolean(),
            // Beyond 2^53 an int64 is sent as its decimal text.
            "int64" => value.is_i64() || value.as_str().is_some_and(|s| s.parse::<i64>().is_ok()),
            // NaN and the infinities are sent as text.
            "float64" => value.is_number() || value.is_string(),
            other => panic!("unknown tag type {other:?}"),
        };
        assert!(typed, "{tag}");
    }

    /// Checks a UI trace against the shape of Jaeger's own v1 output (its `otlp2jaeger-out.json`
    /// and `ui_01.json` fixtures): the same keys, and values of the same JSON types.
    fn assert_shape(trace: &Json) {
        assert_eq!(keys(trace), ["processes", "spans", "traceID", "warnings"]);
        assert!(trace["warnings"].is_null());
        let hex = |value: &Json, digits: usize| {
            let text = value.as_str().expect("an id");
            assert!(
                text.len() == digits
                    && text
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{text}"
            );
        };
        hex(&trace["traceID"], 32);
        let processes = trace["processes"].as_object().expect("processes");
        for (key, process) in processes {
            assert!(
                key.starts_with('p') && key[1..].parse::<usize>().is_ok(),
                "{key}"
            );
            assert_eq!(keys(process), ["serviceName", "tags"]);
            assert!(process["serviceName"].is_string());
            process["tags"]
                .as_array()
                .expect("tags")
                .iter()
                .for_each(assert_key_value);
        }
        for span in trace["spans"].as_array().expect("spans") {
            let mut expected = vec![
                "duration",
                "logs",
                "operationName",
                "processID",
                "references",
                "spanID",
                "startTime",
                "tags",
                "traceID",
                "warnings",
            ];
            if span.get("flags").is_some() {
                assert!(span["flags"].is_u64());
                expected.insert(1, "flags");
            }
            assert_eq!(keys(span), expected);
            hex(&span["traceID"], 32);
            hex(&span["spanID"], 16);
            assert!(span["operationName"].is_string());
            assert!(span["startTime"].is_i64() && span["duration"].is_i64());
            assert!(processes.contains_key(span["processID"].as_str().expect("process id")));
            for reference in span["references"].as_array().expect("references") {
                assert_eq!(keys(reference), ["refType", "spanID", "traceID"]);
                assert!(matches!(
                    reference["refType"].as_str(),
                    Some("CHILD_OF" | "FOLLOWS_FROM")
                ));
                hex(&reference["traceID"], 32);
                hex(&reference["spanID"], 16);
            }
            span["tags"]
                .as_array()
                .expect("tags")
                .iter()
                .for_each(assert_key_value);
            for log in span["logs"].as_array().expect("logs") {
                assert_eq!(keys(log), ["fields", "timestamp"]);
                assert!(log["timestamp"].is_i64());
                log["fields"]
                    .as_array()
                    .expect("fields")
                    .iter()
                    .for_each(assert_key_value);
            }
            let warnings = &span["warnings"];
            assert!(
                warnings.is_null()
                    || warnings
                        .as_array()
                        .is_some_and(|w| w.iter().all(Json::is_string)),
                "{warnings}"
            );
        }
    }
}
