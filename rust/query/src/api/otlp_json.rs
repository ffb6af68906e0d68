//! Traces as OTLP JSON (`TracesData`), as Jaeger's v3 API answers them: the protobuf JSON mapping
//! the OTLP specification asks for.
//!
//! - field names are lowerCamelCase; fields that hold their zero value (0, `""`, an empty list)
//!   are left out, but `resource`, `scope` and `status` are always written, as Jaeger does, and
//!   so are the `values` of an array or a map;
//! - trace and span ids are lowercase hex; 64-bit integers (`startTimeUnixNano`, `intValue`) are
//!   decimal strings; enums (`kind`, `status.code`) are numbers;
//! - a double is a JSON number, or `"NaN"`, `"Infinity"`, `"-Infinity"`; bytes are base64;
//! - each trace's spans are grouped by resource (the service and the resource attributes), then
//!   by scope (name and version), in the order the spans started; the groups of one trace are
//!   never merged with another's.

use std::borrow::Cow;
use std::fmt::Display;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::ui_trace::{base64, double};
use crate::model::{Attribute, Event, Link, Span, SpanId, StatusCode, Trace, TraceId, Value};

/// `{"resourceSpans":[…]}`: the spans of these traces.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TracesData<'a> {
    resource_spans: Vec<ResourceSpans<'a>>,
}

impl<'a> TracesData<'a> {
    pub fn new(traces: &'a [Trace]) -> TracesData<'a> {
        TracesData {
            resource_spans: traces.iter().flat_map(resource_spans).collect(),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans<'a> {
    resource: Resource<'a>,
    scope_spans: Vec<ScopeSpans<'a>>,
    /// The span the resource was taken from.
    #[serde(skip)]
    first: &'a Span,
}

#[derive(Debug, Serialize)]
struct Resource<'a> {
    #[serde(
        skip_serializing_if = "<[Attribute]>::is_empty",
        serialize_with = "key_values"
    )]
    attributes: Cow<'a, [Attribute]>,
}

#[derive(Debug, Serialize)]
struct ScopeSpans<'a> {
    scope: Scope<'a>,
    spans: Vec<OtlpSpan<'a>>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
struct Scope<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    version: &'a str,
}

/// A span's fields, in the order of OTLP's `Span` message.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OtlpSpan<'a> {
    trace_id: Text<TraceId>,
    span_id: Text<SpanId>,
    #[serde(skip_serializing_if = "str::is_empty")]
    trace_state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_span_id: Option<Text<SpanId>>,
    #[serde(skip_serializing_if = "is_zero")]
    flags: u32,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    kind: u32,
    #[serde(skip_serializing_if = "Text::is_zero")]
    start_time_unix_nano: Text<u64>,
    #[serde(skip_serializing_if = "Text::is_zero")]
    end_time_unix_nano: Text<u64>,
    #[serde(skip_serializing_if = "KeyValues::is_empty")]
    attributes: KeyValues<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    events: Vec<OtlpEvent<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    links: Vec<OtlpLink<'a>>,
    status: Status<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OtlpEvent<'a> {
    #[serde(skip_serializing_if = "Text::is_zero")]
    time_unix_nano: Text<u64>,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "KeyValues::is_empty")]
    attributes: KeyValues<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OtlpLink<'a> {
    trace_id: Text<TraceId>,
    span_id: Text<SpanId>,
    #[serde(skip_serializing_if = "str::is_empty")]
    trace_state: &'a str,
    #[serde(skip_serializing_if = "KeyValues::is_empty")]
    attributes: KeyValues<'a>,
}

#[derive(Debug, Serialize)]
struct Status<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    code: u32,
}

fn is_zero(number: &u32) -> bool {
    *number == 0
}

/// A value written as the JSON string of its text: ids in hex, 64-bit integers in decimal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Text<T>(pub T);

impl<T: Display> Serialize for Text<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl Text<u64> {
    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }
}

/// Nanoseconds since the epoch as OTLP's unsigned `fixed64`: a time before 1970 becomes 0.
pub(super) fn unix_nano(nanos: i64) -> Text<u64> {
    Text(u64::try_from(nanos).unwrap_or(0))
}

/// Attributes as OTLP's `KeyValue` list, in their order.
#[derive(Debug, Clone, Copy)]
struct KeyValues<'a>(&'a [Attribute]);

impl KeyValues<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for KeyValues<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(KeyValue))
    }
}

fn key_values<S: Serializer>(attributes: &[Attribute], serializer: S) -> Result<S::Ok, S::Error> {
    KeyValues(attributes).serialize(serializer)
}

struct KeyValue<'a>(&'a Attribute);

impl Serialize for KeyValue<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("key", &self.0.key)?;
        map.serialize_entry("value", &AnyValue(&self.0.value))?;
        map.end()
    }
}

/// `{"values":[…]}` of an `arrayValue` or a `kvlistValue`, each item written as `W`. An empty
/// list is written too (`{"values":[]}`), though protobuf JSON may leave it out: some OTLP
/// decoders require it.
struct Values<'a, T, W>(&'a [T], fn(&'a T) -> W);

impl<'a, T, W: Serialize> Serialize for Values<'a, T, W> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        let values: Vec<W> = self.0.iter().map(self.1).collect();
        map.serialize_entry("values", &values)?;
        map.end()
    }
}

/// OTLP's `AnyValue`: an object with the one field its type uses, `{}` for an empty value.
struct AnyValue<'a>(&'a Value);

impl Serialize for AnyValue<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match self.0 {
            Value::Str(text) => map.serialize_entry("stringValue", text)?,
            Value::Bool(flag) => map.serialize_entry("boolValue", flag)?,
            Value::Int(number) => map.serialize_entry("intValue", &Text(number))?,
            Value::Double(number) => map.serialize_entry("doubleValue", &double(*number))?,
            Value::Bytes(bytes) => map.serialize_entry("bytesValue", &base64(bytes))?,
            Value::Array(values) => map.serialize_entry("arrayValue", &Values(values, AnyValue))?,
            Value::Map(attributes) => {
                map.serialize_entry("kvlistValue", &Values(attributes, KeyValue))?;
            }
            Value::Empty => {}
        }
        map.end()
    }
}

const SERVICE_NAME: &str = "service.name";

/// A span's resource attributes, with `service.name` first when they lack it.
fn resource(span: &Span) -> Resource<'_> {
    let named = span
        .resource_attributes
        .iter()
        .any(|attribute| attribute.key == SERVICE_NAME);
    let attributes = if named || span.service_name.is_empty() {
        Cow::Borrowed(span.resource_attributes.as_slice())
    } else {
        let mut attributes = Vec::with_capacity(span.resource_attributes.len() + 1);
        attributes.push(Attribute {
            key: SERVICE_NAME.to_owned(),
            value: Value::Str(span.service_name.clone()),
        });
        attributes.extend_from_slice(&span.resource_attributes);
        Cow::Owned(attributes)
    };
    Resource { attributes }
}

fn same_resource(a: &Span, b: &Span) -> bool {
    a.service_name == b.service_name && a.resource_attributes == b.resource_attributes
}

fn event(event: &Event) -> OtlpEvent<'_> {
    OtlpEvent {
        time_unix_nano: unix_nano(event.time_unix_nano),
        name: &event.name,
        attributes: KeyValues(&event.attributes),
    }
}

fn link(link: &Link) -> OtlpLink<'_> {
    OtlpLink {
        trace_id: Text(link.trace_id),
        span_id: Text(link.span_id),
        trace_state: &link.trace_state,
        attributes: KeyValues(&link.attributes),
    }
}

fn span(span: &Span) -> OtlpSpan<'_> {
    OtlpSpan {
        trace_id: Text(span.trace_id),
        span_id: Text(span.span_id),
        trace_state: &span.trace_state,
        parent_span_id: span.parent_span_id.map(Text),
        flags: span.flags,
        name: &span.name,
        kind: span.kind as u32,
        start_time_unix_nano: unix_nano(span.start_unix_nano),
        end_time_unix_nano: unix_nano(span.start_unix_nano.saturating_add(span.duration_ns.max(0))),
        attributes: KeyValues(&span.attributes),
        events: span.events.iter().map(event).collect(),
        links: span.links.iter().map(link).collect(),
        status: Status {
            message: &span.status_message,
            code: match span.status_code {
                StatusCode::Unset => 0,
                StatusCode::Ok => 1,
                StatusCode::Error => 2,
            },
        },
    }
}

/// The group that `matches`, or a `new` one added at the end.
fn group<T>(groups: &mut Vec<T>, matches: impl Fn(&T) -> bool, new: impl FnOnce() -> T) -> &mut T {
    let index = match groups.iter().position(matches) {
        Some(index) => index,
        None => {
            groups.push(new());
            groups.len() - 1
        }
    };
    &mut groups[index]
}

/// The spans of one trace grouped by resource, then scope, each group where its first span (by
/// start time, then id) puts it.
fn resource_spans(trace: &Trace) -> Vec<ResourceSpans<'_>> {
    let mut spans: Vec<&Span> = trace.spans.iter().collect();
    spans.sort_by_key(|span| (span.start_unix_nano, span.span_id));
    let mut out: Vec<ResourceSpans> = Vec::new();
    for one in spans {
        let resource_spans = group(
            &mut out,
            |group| same_resource(group.first, one),
            || ResourceSpans {
                resource: resource(one),
                scope_spans: Vec::new(),
                first: one,
            },
        );
        let scope = Scope {
            name: &one.scope_name,
            version: &one.scope_version,
        };
        let scope_spans = group(
            &mut resource_spans.scope_spans,
            |group| group.scope == scope,
            || ScopeSpans {
                scope,
                spans: Vec::new(),
            },
        );
        scope_spans.spans.push(span(one));
    }
    out
}

/// The encoder's tests, and what the v3 API's tests share of them.
#[cfg(test)]
pub(super) mod tests {
    use opentelemetry_proto::tonic::common::v1 as proto_common;
    use opentelemetry_proto::tonic::resource::v1 as proto_resource;
    use opentelemetry_proto::tonic::trace::v1 as proto;
    use serde_json::{json, Value as Json};

    use super::*;
    use crate::api::ui_trace::tests::{attribute, bare_span, full_span, trace_id, TRACE};
    use crate::model::SpanKind;

    fn otlp_json(traces: &[Trace]) -> Json {
        serde_json::to_value(TracesData::new(traces)).expect("encodes")
    }

    fn one_trace(spans: Vec<Span>) -> Vec<Trace> {
        vec![Trace {
            trace_id: trace_id(TRACE),
            spans,
        }]
    }

    /// The fixture of the v1 tests, with what OTLP has and Jaeger's UI model has not: a link's
    /// trace state, the infinities, an empty list and map, nesting.
    fn every_feature() -> Span {
        let mut span = full_span();
        span.links[0].trace_state = "k=v".into();
        span.attributes.extend([
            attribute("inf", Value::Double(f64::INFINITY)),
            attribute("-inf", Value::Double(f64::NEG_INFINITY)),
            attribute("negative", Value::Int(i64::MIN)),
            attribute("none", Value::Array(vec![])),
            attribute(
                "nested",
                Value::Map(vec![
                    attribute("empty", Value::Map(vec![])),
                    attribute("list", Value::Array(vec![Value::Bool(true)])),
                ]),
            ),
        ]);
        span
    }

    #[test]
    fn a_span_with_every_feature() {
        let string = |text: &str| json!({"stringValue": text});
        let attributes = json!([
            {"key": "z.empty", "value": {}},
            {"key": "http.method", "value": string("GET")},
            {"key": "cache.hit", "value": {"boolValue": false}},
            {"key": "http.status_code", "value": {"intValue": "500"}},
            {"key": "big", "value": {"intValue": "1152921504606846976"}},
            {"key": "ratio", "value": {"doubleValue": 0.25}},
            {"key": "nan", "value": {"doubleValue": "NaN"}},
            {"key": "blob", "value": {"bytesValue": "AAAwOQ=="}},
            {"key": "list", "value": {"arrayValue": {"values": [
                string("a"), {"intValue": "2"}, {},
            ]}}},
            {"key": "map", "value": {"kvlistValue": {"values": [
                {"key": "z", "value": {"bytesValue": "AQ=="}},
                {"key": "a", "value": {"doubleValue": 1.5}},
            ]}}},
            {"key": "inf", "value": {"doubleValue": "Infinity"}},
            {"key": "-inf", "value": {"doubleValue": "-Infinity"}},
            {"key": "negative", "value": {"intValue": "-9223372036854775808"}},
            {"key": "none", "value": {"arrayValue": {"values": []}}},
            {"key": "nested", "value": {"kvlistValue": {"values": [
                {"key": "empty", "value": {"kvlistValue": {"values": []}}},
                {"key": "list", "value": {"arrayValue": {"values": [{"boolValue": true}]}}},
            ]}}},
        ]);
        let events = json!([
            {"timeUnixNano": "1700000000124000999", "name": "exception", "attributes": [
                {"key": "exception.type", "value": string("IOError")},
                {"key": "exception.message", "value": string("disk")},
            ]},
            {"timeUnixNano": "1700000000125000000", "name": "named", "attributes": [
                {"key": "event", "value": string("own")},
            ]},
            {"timeUnixNano": "1700000000126000000", "attributes": [
                {"key": "n", "value": {"intValue": "1"}},
            ]},
        ]);
        let links = json!([
            {"traceId": "11111111111111111111111111111111", "spanId": "2222222222222222",
             "traceState": "k=v"},
            {"traceId": "33333333333333333333333333333333", "spanId": "4444444444444444",
             "attributes": [{"key": "opentracing.ref_type", "value": string("child_of")}]},
        ]);
        let span = json!({
            "traceId": TRACE,
            "spanId": "b7ad6b7169203331",
            "traceState": "vendor=abc",
            "parentSpanId": "00f067aa0ba902b7",
            "flags": 257,
            "name": "GET /cart",
            "kind": 2,
            "startTimeUnixNano": "1700000000123456789",
            "endTimeUnixNano": "1700000000125957788",
            "attributes": attributes,
            "events": events,
            "links": links,
            "status": {"message": "boom", "code": 2},
        });
        let expected = json!({"resourceSpans": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": string("checkout")},
                {"key": "process.pid", "value": {"intValue": "4242"}},
                {"key": "host.name", "value": string("h1")},
            ]},
            "scopeSpans": [{
                "scope": {"name": "io.opentelemetry.http", "version": "1.2.0"},
                "spans": [span],
            }],
        }]});
        let actual = otlp_json(&one_trace(vec![every_feature()]));
        assert_eq!(actual, expected, "{actual:#}");
    }

    #[test]
    fn fields_come_in_otlp_order_and_zero_values_are_left_out() {
        let text = serde_json::to_string(&TracesData::new(&one_trace(vec![bare_span(
            "0000000000000001",
            1_000_999,
        )])))
        .expect("encodes");
        assert_eq!(
            text,
            format!(
                concat!(
                    r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"checkout"}}}}]}},"#,
                    r#""scopeSpans":[{{"scope":{{}},"spans":[{{"traceId":"{t}","spanId":"0000000000000001","name":"work","#,
                    r#""startTimeUnixNano":"1000999","endTimeUnixNano":"1000999","status":{{}}}}]}}]}}]}}"#
                ),
                t = TRACE
            )
        );
        // No name, no service, no time: nothing but the ids and the always-present objects.
        let empty = Span {
            name: String::new(),
            service_name: String::new(),
            resource_attributes: vec![],
            ..bare_span("0000000000000001", -5)
        };
        assert_eq!(
            otlp_json(&one_trace(vec![empty])),
            json!({"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {}, "spans": [
                {"traceId": TRACE, "spanId": "0000000000000001", "status": {}}
            ]}]}]})
        );
    }

    #[test]
    fn a_resource_without_its_service_name_is_given_it() {
        let span = Span {
            service_name: "cart".into(),
            resource_attributes: vec![attribute("host.name", Value::Str("h1".into()))],
            ..bare_span("0000000000000001", 0)
        };
        assert_eq!(
            otlp_json(&one_trace(vec![span]))["resourceSpans"][0]["resource"],
            json!({"attributes": [
                {"key": "service.name", "value": {"stringValue": "cart"}},
                {"key": "host.name", "value": {"stringValue": "h1"}},
            ]})
        );
    }

    /// Each resource's attributes, with each of its scopes and the ids of their spans (the last
    /// two hex digits).
    pub(in crate::api) type Layout = Vec<(Json, Vec<(Json, Vec<String>)>)>;

    /// The layout of `TracesData` JSON.
    pub(in crate::api) fn layout(json: &Json) -> Layout {
        let list = |value: &Json| value.as_array().expect("a list").clone();
        list(&json["resourceSpans"])
            .iter()
            .map(|resource| {
                let scopes = list(&resource["scopeSpans"])
                    .iter()
                    .map(|scope| {
                        let ids = list(&scope["spans"])
                            .iter()
                            .map(|span| span["spanId"].as_str().expect("id")[14..].to_owned())
                            .collect();
                        (scope["scope"].clone(), ids)
                    })
                    .collect();
                (resource["resource"]["attributes"].clone(), scopes)
            })
            .collect()
    }

    #[test]
    fn spans_are_grouped_by_resource_then_scope_in_the_order_they_started() {
        let scoped = |id: &str, start: i64, scope: &str| Span {
            scope_name: scope.into(),
            scope_version: "1".into(),
            ..bare_span(id, start)
        };
        let cart = |id: &str, start: i64| Span {
            service_name: "cart".into(),
            resource_attributes: vec![attribute("service.name", Value::Str("cart".into()))],
            ..bare_span(id, start)
        };
        let other_host = |id: &str, start: i64| {
            let mut span = bare_span(id, start);
            span.resource_attributes
                .push(attribute("host.name", Value::Str("h2".into())));
            span
        };
        let first = one_trace(vec![
            scoped("0000000000000005", 50, "b"),
            other_host("0000000000000004", 40),
            scoped("0000000000000003", 30, "a"),
            cart("0000000000000002", 20),
            scoped("0000000000000001", 10, "a"),
            bare_span("0000000000000006", 60),
        ]);
        let second = Trace {
            trace_id: trace_id("22222222222222222222222222222222"),
            spans: vec![scoped("0000000000000007", 5, "a")],
        };
        let traces = [first, vec![second]].concat();
        let service = |name: &str| json!([{"key": "service.name", "value": {"stringValue": name}}]);
        let scope = |name: &str| json!({"name": name, "version": "1"});
        let ids = |ids: &[&str]| ids.iter().map(|id| (*id).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            layout(&otlp_json(&traces)),
            vec![
                (
                    service("checkout"),
                    vec![
                        (scope("a"), ids(&["01", "03"])),
                        (scope("b"), ids(&["05"])),
                        (json!({}), ids(&["06"])),
                    ]
                ),
                (service("cart"), vec![(json!({}), ids(&["02"]))]),
                (
                    json!([
                        {"key": "service.name", "value": {"stringValue": "checkout"}},
                        {"key": "host.name", "value": {"stringValue": "h2"}},
                    ]),
                    vec![(json!({}), ids(&["04"]))]
                ),
                // Another trace's spans are not merged into the first trace's groups.
                (service("checkout"), vec![(scope("a"), ids(&["07"]))]),
            ]
        );
    }

    fn any_value(value: &Value) -> proto_common::AnyValue {
        use proto_common::any_value::Value as V;
        let value = match value {
            Value::Str(text) => Some(V::StringValue(text.clone())),
            Value::Bool(flag) => Some(V::BoolValue(*flag)),
            Value::Int(number) => Some(V::IntValue(*number)),
            Value::Double(number) => Some(V::DoubleValue(*number)),
            Value::Bytes(bytes) => Some(V::BytesValue(bytes.clone())),
            Value::Array(values) => Some(V::ArrayValue(proto_common::ArrayValue {
                values: values.iter().map(any_value).collect(),
            })),
            Value::Map(attributes) => Some(V::KvlistValue(proto_common::KeyValueList {
                values: key_values(attributes),
            })),
            Value::Empty => None,
        };
        proto_common::AnyValue { value }
    }

    fn key_values(attributes: &[Attribute]) -> Vec<proto_common::KeyValue> {
        attributes
            .iter()
            .map(|attribute| proto_common::KeyValue {
                key: attribute.key.clone(),
                value: Some(any_value(&attribute.value)),
                ..Default::default()
            })
            .collect()
    }

    /// The span as OTLP's protobuf message, built from the model directly.
    fn proto_span(span: &Span) -> proto::Span {
        proto::Span {
            trace_id: span.trace_id.0.to_vec(),
            span_id: span.span_id.0.to_vec(),
            trace_state: span.trace_state.clone(),
            parent_span_id: span.parent_span_id.map_or(vec![], |id| id.0.to_vec()),
            flags: span.flags,
            name: span.name.clone(),
            kind: span.kind as i32,
            start_time_unix_nano: u64::try_from(span.start_unix_nano).expect("after 1970"),
            end_time_unix_nano: u64::try_from(span.start_unix_nano + span.duration_ns)
                .expect("after 1970"),
            attributes: key_values(&span.attributes),
            events: span
                .events
                .iter()
                .map(|event| proto::span::Event {
                    time_unix_nano: u64::try_from(event.time_unix_nano).expect("after 1970"),
                    name: event.name.clone(),
                    attributes: key_values(&event.attributes),
                    ..Default::default()
                })
                .collect(),
            links: span
                .links
                .iter()
                .map(|link| proto::span::Link {
                    trace_id: link.trace_id.0.to_vec(),
                    span_id: link.span_id.0.to_vec(),
                    trace_state: link.trace_state.clone(),
                    attributes: key_values(&link.attributes),
                    ..Default::default()
                })
                .collect(),
            status: Some(proto::Status {
                message: span.status_message.clone(),
                code: span.status_code as i32,
            }),
            ..Default::default()
        }
    }

    /// What we write is OTLP JSON as opentelemetry-proto's serde support reads it: every field is
    /// found under its name and decodes to the value the model holds.
    #[test]
    fn opentelemetry_proto_decodes_what_we_write() {
        let mut span = every_feature();
        // That decoder reads a double only as a JSON number, though protobuf JSON also writes
        // NaN and the infinities as strings (checked above).
        span.attributes
            .retain(|attribute| !matches!(attribute.value, Value::Double(d) if !d.is_finite()));
        let child = Span {
            parent_span_id: Some(span.span_id),
            kind: SpanKind::Client,
            status_code: StatusCode::Ok,
            resource_attributes: span.resource_attributes.clone(),
            ..bare_span("0000000000000002", span.start_unix_nano + 1)
        };
        let spans = vec![span, child];
        let text =
            serde_json::to_string(&TracesData::new(&one_trace(spans.clone()))).expect("encodes");
        let decoded: proto::TracesData = serde_json::from_str(&text).expect("OTLP JSON");
        let resource = |span: &Span| proto_resource::Resource {
            attributes: key_values(&span.resource_attributes),
            ..Default::default()
        };
        let scope = |span: &Span| proto_common::InstrumentationScope {
            name: span.scope_name.clone(),
            version: span.scope_version.clone(),
            ..Default::default()
        };
        let expected = proto::TracesData {
            resource_spans: vec![proto::ResourceSpans {
                resource: Some(resource(&spans[0])),
                scope_spans: vec![
                    proto::ScopeSpans {
                        scope: Some(scope(&spans[0])),
                        spans: vec![proto_span(&spans[0])],
                        ..Default::default()
                    },
                    proto::ScopeSpans {
                        scope: Some(scope(&spans[1])),
                        spans: vec![proto_span(&spans[1])],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
        };
        assert_eq!(decoded, expected);
    }
}
