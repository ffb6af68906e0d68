//! CPU cost of the core's hot path per span: reading the OTLP protobuf and writing PGCOPY rows.
//! `cargo bench -p otelstore --bench encode` (part of `make bench`) prints ns per span for two span
//! shapes: telemetrygen's (few attributes) and a realistic one (10 span attributes, 8 resource
//! attributes, an event on 10 % of spans).

use std::hint::black_box;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::Event, ResourceSpans, ScopeSpans, Span, Status};
use otelstore::sink::postgres::spans;
use prost::Message;

const SPANS_PER_REQUEST: usize = 1000;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    kv(key, Value::StringValue(value.into()))
}

fn request(realistic: bool) -> Vec<u8> {
    let mut resource = vec![text("service.name", "checkout")];
    if realistic {
        resource.extend([
            text("service.version", "1.4.2"),
            text("host.name", "host-17"),
            text("os.type", "linux"),
            kv("process.pid", Value::IntValue(4242)),
            text("telemetry.sdk.name", "opentelemetry"),
            text("telemetry.sdk.language", "python"),
            text("deployment.environment", "production"),
        ]);
    }
    let spans = (0..SPANS_PER_REQUEST)
        .map(|i| {
            let attributes = if realistic {
                vec![
                    text("http.method", "GET"),
                    text("http.route", "/api/v1/orders/{id}"),
                    kv("http.status_code", Value::IntValue(200)),
                    text("net.peer.name", "orders.internal"),
                    kv("net.peer.port", Value::IntValue(8080)),
                    text("db.system", "postgresql"),
                    text("db.statement", "SELECT id, customer_id, total FROM orders WHERE id = $1 AND tenant = $2 LIMIT 10"),
                    kv("user.id", Value::IntValue(i as i64)),
                    text("http.user_agent", "Mozilla/5.0 (X11; Linux x86_64) otelstore-bench"),
                    kv("retry", Value::BoolValue(false)),
                ]
            } else {
                vec![text("span.kind", "client"), text("net.peer.ip", "1.2.3.4"), text("peer.service", "telemetrygen-server")]
            };
            let events = if realistic && i % 10 == 0 {
                vec![Event {
                    time_unix_nano: 1_700_000_000_000_000_500,
                    name: "exception".into(),
                    attributes: vec![text("exception.type", "ValueError"), text("exception.message", "bad input")],
                    dropped_attributes_count: 0,
                }]
            } else {
                vec![]
            };
            Span {
                trace_id: (i as u128).to_be_bytes().to_vec(),
                span_id: (i as u64).to_be_bytes().to_vec(),
                parent_span_id: if i % 8 == 0 { vec![] } else { (i as u64 - 1).to_be_bytes().to_vec() },
                name: "GET /api/v1/orders/{id}".into(),
                kind: 2,
                start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64 * 1_000_000,
                end_time_unix_nano: 1_700_000_000_005_000_000 + i as u64 * 1_000_000,
                attributes,
                events,
                status: Some(Status { message: String::new(), code: 0 }),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "opentelemetry.instrumentation.flask".into(),
                    version: "0.45b0".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

/// Nanoseconds per span of `work`, the best of several one-second rounds.
fn per_span(work: impl Fn()) -> f64 {
    (0..5)
        .map(|_| {
            let started = Instant::now();
            let mut rounds = 0u32;
            while started.elapsed() < Duration::from_secs(1) {
                work();
                rounds += 1;
            }
            started.elapsed().as_nanos() as f64 / f64::from(rounds) / SPANS_PER_REQUEST as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    println!(
        "{:<14} {:>12} {:>12} {:>16}",
        "span shape", "OTLP B/span", "COPY B/span", "ns/span (core)"
    );
    for (name, realistic) in [("telemetrygen", false), ("realistic", true)] {
        let otlp = request(realistic);
        let copy_bytes = spans::encode(&otlp)
            .expect("valid request")
            .rows
            .finish()
            .data
            .len();
        let ns = per_span(|| {
            drop(black_box(
                spans::encode(black_box(&otlp)).map(|e| e.rows.finish()),
            ))
        });
        println!(
            "{:<14} {:>12} {:>12} {:>16.0}",
            name,
            otlp.len() / SPANS_PER_REQUEST,
            copy_bytes / SPANS_PER_REQUEST,
            ns
        );
    }
}
