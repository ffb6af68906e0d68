//! The C ABI under misuse: every mistake a caller can make returns a status and a message instead
//! of crashing. No database is needed: exporters here point at a closed port.

use std::ffi::{c_char, CStr};
use std::ptr;

use otelstore::ffi::*;

/// Takes ownership of a message returned by the library.
fn take(message: *mut c_char) -> String {
    assert!(!message.is_null(), "expected a message");
    // SAFETY: a non-null message comes from the library and is freed right after reading.
    let text = unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    unsafe { otelstore_message_free(message) };
    text
}

const CLOSED_PORT_CONFIG: &str =
    r#"{"postgres":{"dsn":"postgres://otel@127.0.0.1:1/otel","connect_timeout":"1s"}}"#;

/// Exports `otlp` as traces through the C ABI: the status and the message it set (`""` when none).
fn export_traces(handle: u64, otlp: &[u8], timeout_ms: u64) -> (OtelstoreStatus, String) {
    let mut message = ptr::null_mut();
    let status = unsafe {
        otelstore_exporter_export(
            handle,
            OtelstoreSignal::Traces as u32,
            otlp.as_ptr(),
            otlp.len(),
            timeout_ms,
            &mut message,
        )
    };
    let message = if message.is_null() {
        String::new()
    } else {
        take(message)
    };
    (status, message)
}

fn new_exporter() -> u64 {
    let mut handle = 0;
    let mut message = ptr::null_mut();
    let status = unsafe {
        otelstore_exporter_new(
            CLOSED_PORT_CONFIG.as_ptr(),
            CLOSED_PORT_CONFIG.len(),
            &mut handle,
            &mut message,
        )
    };
    assert_eq!(status, OtelstoreStatus::Ok);
    assert!(message.is_null());
    assert_ne!(handle, 0);
    handle
}

#[test]
fn defaults_are_valid_json_without_a_dsn() {
    let mut json = ptr::null_mut();
    assert_eq!(
        unsafe { otelstore_config_defaults(&mut json) },
        OtelstoreStatus::Ok
    );
    let defaults: serde_json::Value = serde_json::from_str(&take(json)).expect("JSON");
    assert_eq!(defaults["postgres"]["schema"], "otel");
    assert_eq!(defaults["postgres"]["connect_timeout"], "10s");
    assert_eq!(
        unsafe { otelstore_config_defaults(ptr::null_mut()) },
        OtelstoreStatus::InvalidArgument
    );
}

#[test]
fn invalid_config_names_the_field() {
    let json = br#"{"postgres":{"dsn":"postgres://u@h/db","pool_size":0}}"#;
    let mut message = ptr::null_mut();
    let status = unsafe { otelstore_config_validate(json.as_ptr(), json.len(), &mut message) };
    assert_eq!(status, OtelstoreStatus::InvalidConfig);
    assert_eq!(
        take(message),
        "invalid configuration: postgres.pool_size: must be between 1 and 64, got 0"
    );

    let mut handle = 0;
    let mut message = ptr::null_mut();
    let status =
        unsafe { otelstore_exporter_new(json.as_ptr(), json.len(), &mut handle, &mut message) };
    assert_eq!(status, OtelstoreStatus::InvalidConfig);
    assert_eq!(
        take(message),
        "invalid configuration: postgres.pool_size: must be between 1 and 64, got 0"
    );
    assert_eq!(handle, 0);
}

#[test]
fn null_pointers_and_zero_lengths_are_errors_not_crashes() {
    let mut message = ptr::null_mut();
    assert_eq!(
        unsafe { otelstore_config_validate(ptr::null(), 10, &mut message) },
        OtelstoreStatus::InvalidArgument
    );
    assert_eq!(take(message), "config_json is null but its length is 10");

    // A null message_out is allowed: the caller just gets no text.
    assert_eq!(
        unsafe { otelstore_config_validate(ptr::null(), 0, ptr::null_mut()) },
        OtelstoreStatus::InvalidConfig
    );

    let mut message = ptr::null_mut();
    let json = CLOSED_PORT_CONFIG.as_bytes();
    let status =
        unsafe { otelstore_exporter_new(json.as_ptr(), json.len(), ptr::null_mut(), &mut message) };
    assert_eq!(status, OtelstoreStatus::InvalidArgument);
    assert_eq!(take(message), "handle_out is null");

    let handle = new_exporter();
    let mut message = ptr::null_mut();
    let status = unsafe {
        otelstore_exporter_export(
            handle,
            OtelstoreSignal::Traces as u32,
            ptr::null(),
            5,
            2000,
            &mut message,
        )
    };
    assert_eq!(status, OtelstoreStatus::InvalidArgument);
    assert_eq!(take(message), "otlp is null but its length is 5");
    // An empty request holds no spans: nothing to write, so it succeeds without touching the database.
    let status = unsafe {
        otelstore_exporter_export(
            handle,
            OtelstoreSignal::Traces as u32,
            ptr::null(),
            0,
            2000,
            ptr::null_mut(),
        )
    };
    assert_eq!(status, OtelstoreStatus::Ok);
    assert_eq!(otelstore_exporter_free(handle), OtelstoreStatus::Ok);
    unsafe { otelstore_message_free(ptr::null_mut()) };
}

#[test]
fn unknown_signal_and_malformed_data_are_reported() {
    let handle = new_exporter();
    let mut message = ptr::null_mut();
    let status =
        unsafe { otelstore_exporter_export(handle, 42, b"x".as_ptr(), 1, 2000, &mut message) };
    assert_eq!(status, OtelstoreStatus::InvalidArgument);
    assert_eq!(
        take(message),
        "unknown signal 42 (expected an OtelstoreSignal)"
    );

    let garbage = [0xffu8; 16];
    let (status, message) = export_traces(handle, &garbage, 2000);
    assert_eq!(status, OtelstoreStatus::Permanent);
    assert!(message.starts_with("malformed OTLP traces request (16 bytes)"));
    assert_eq!(otelstore_exporter_free(handle), OtelstoreStatus::Ok);
}

#[test]
fn use_after_shutdown_and_double_free_are_errors() {
    let handle = new_exporter();
    let mut message = ptr::null_mut();
    assert_eq!(
        unsafe { otelstore_exporter_shutdown(handle, 1000, &mut message) },
        OtelstoreStatus::Ok
    );
    assert!(message.is_null());
    // A second shutdown is harmless.
    assert_eq!(
        unsafe { otelstore_exporter_shutdown(handle, 1000, ptr::null_mut()) },
        OtelstoreStatus::Ok
    );

    let (status, message) = export_traces(handle, b"", 2000);
    assert_eq!(status, OtelstoreStatus::InvalidArgument);
    assert_eq!(message, "the exporter is shut down");

    assert_eq!(otelstore_exporter_free(handle), OtelstoreStatus::Ok);
    assert_eq!(
        otelstore_exporter_free(handle),
        OtelstoreStatus::InvalidArgument
    );
    let (status, message) = export_traces(handle, b"", 2000);
    assert_eq!(status, OtelstoreStatus::InvalidArgument);
    assert_eq!(
        message,
        format!("unknown exporter handle {handle} (never created, or freed)")
    );
    assert_eq!(otelstore_exporter_free(0), OtelstoreStatus::InvalidArgument);
}

#[test]
fn an_unreachable_database_is_retryable() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![1; 8],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let handle = new_exporter();
    let (status, message) = export_traces(handle, &request, 2000);
    assert_eq!(status, OtelstoreStatus::Retryable);
    assert!(message.starts_with("not written before the export deadline; last error: PostgreSQL: no connection available"), "{message}");
    assert!(message.contains("Connection refused"), "{message}");
    assert_eq!(otelstore_exporter_free(handle), OtelstoreStatus::Ok);
}

/// A request of `spans` spans with distinct ids, each carrying a `filler`-byte attribute.
fn spans_request(first_id: u64, spans: u64, filler: usize) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    let attribute = KeyValue {
        key: "filler".into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue("x".repeat(filler))),
        }),
        ..Default::default()
    };
    let spans = (first_id..first_id + spans)
        .map(|id| Span {
            trace_id: vec![1; 16],
            span_id: id.to_be_bytes().to_vec(),
            attributes: vec![attribute.clone()],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn exporter_with(config: &str) -> u64 {
    let mut handle = 0;
    let mut message = ptr::null_mut();
    let status =
        unsafe { otelstore_exporter_new(config.as_ptr(), config.len(), &mut handle, &mut message) };
    assert_eq!(
        status,
        OtelstoreStatus::Ok,
        "{}",
        if message.is_null() {
            String::new()
        } else {
            take(message)
        }
    );
    handle
}

#[test]
fn the_memory_limit_refuses_with_a_retryable_error_and_shutdown_counts_what_was_left() {
    // Fire and forget against a database that is down: accepted rows pile up in the core.
    let handle = exporter_with(
        r#"{"acknowledge":"accepted","memory_limit_mib":8,"postgres":{"dsn":"postgres://otel@127.0.0.1:1/otel","connect_timeout":"1s"}}"#,
    );
    let mut accepted_rows = 0;
    let refusal = (0..100u64).find_map(|i| {
        let request = spans_request(i * 100, 100, 10_000);
        let (status, message) = export_traces(handle, &request, 0);
        if status == OtelstoreStatus::Ok {
            accepted_rows += 100;
            None
        } else {
            Some((status, message))
        }
    });
    let (status, message) = refusal.expect("8 MiB fill up within 100 requests of 1 MB");
    assert_eq!(status, OtelstoreStatus::Retryable);
    assert!(message.starts_with("memory limit reached: "), "{message}");
    assert!(message.ends_with("(limit 8388608 bytes)"), "{message}");
    assert!(
        (500..=800).contains(&accepted_rows),
        "{accepted_rows} rows of ~10 KB should fit in 8 MiB"
    );

    let mut message = ptr::null_mut();
    assert_eq!(
        unsafe { otelstore_exporter_shutdown(handle, 500, &mut message) },
        OtelstoreStatus::Retryable
    );
    assert_eq!(
        take(message),
        format!("shutdown timed out: {accepted_rows} rows were not written")
    );
    assert_eq!(otelstore_exporter_free(handle), OtelstoreStatus::Ok);
}

#[test]
fn a_request_larger_than_the_whole_memory_limit_is_still_written() {
    let handle = exporter_with(
        r#"{"memory_limit_mib":8,"postgres":{"dsn":"postgres://otel@127.0.0.1:1/otel","connect_timeout":"1s"}}"#,
    );
    let request = spans_request(0, 10, 1 << 20);
    let (status, message) = export_traces(handle, &request, 1000);
    // Admitted (nothing else was held), then not written because the database is down: retryable.
    assert_eq!(status, OtelstoreStatus::Retryable);
    assert!(message.contains("Connection refused"), "{message}");
    assert_eq!(otelstore_exporter_free(handle), OtelstoreStatus::Ok);
}
