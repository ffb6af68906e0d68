//! Builders of OTLP messages for unit tests.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

/// The time of the test spans and log records: 2023-11-14 22:13:20.123456789 UTC.
pub const TIME: u64 = 1_700_000_000_123_456_789;

pub fn value(value: Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(value) })
}

pub fn kv(key: &str, value: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value,
        ..Default::default()
    }
}

pub fn string_kv(key: &str, text: &str) -> KeyValue {
    kv(key, value(Value::StringValue(text.to_owned())))
}

/// A plausible span whose ids derive from `n`.
pub fn span(n: u8) -> Span {
    Span {
        trace_id: vec![n; 16],
        span_id: vec![n; 8],
        name: format!("span-{n}"),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_123_456_789,
        end_time_unix_nano: 1_700_000_000_223_456_789,
        ..Default::default()
    }
}

/// One resource (service "svc") with one scope holding `spans`.
pub fn request_with(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_kv("service.name", "svc")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    version: "1.2".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// A plausible INFO record whose body and ids derive from `n`.
pub fn log_record(n: u8) -> LogRecord {
    LogRecord {
        time_unix_nano: TIME,
        observed_time_unix_nano: TIME + 1_000,
        severity_number: 9,
        severity_text: "INFO".into(),
        body: value(Value::StringValue(format!("message {n}"))),
        trace_id: vec![n; 16],
        span_id: vec![n; 8],
        ..Default::default()
    }
}

/// One resource (service "svc") with one scope (with an attribute, and both with schema URLs)
/// holding `records`.
pub fn logs_request_with(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![string_kv("service.name", "svc")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    version: "1.2".into(),
                    attributes: vec![string_kv("scope.k", "v")],
                    ..Default::default()
                }),
                log_records: records,
                schema_url: "https://scope".into(),
            }],
            schema_url: "https://resource".into(),
        }],
    }
}
