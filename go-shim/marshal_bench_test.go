package otelstoreexporter

import (
	"testing"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// realisticTraces has the span shape of the benchmark: 8 resource attributes, 10 span attributes,
// an event on 10 % of the spans.
func realisticTraces(spans int) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	res := rs.Resource().Attributes()
	res.PutStr("service.name", "checkout")
	res.PutStr("service.version", "1.4.2")
	res.PutStr("host.name", "host-17")
	res.PutStr("os.type", "linux")
	res.PutInt("process.pid", 4242)
	res.PutStr("telemetry.sdk.name", "opentelemetry")
	res.PutStr("telemetry.sdk.language", "python")
	res.PutStr("deployment.environment", "production")
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName("opentelemetry.instrumentation.flask")
	for i := range spans {
		span := ss.Spans().AppendEmpty()
		span.SetTraceID(pcommon.TraceID([16]byte{byte(i >> 8), byte(i), 1}))
		span.SetSpanID(pcommon.SpanID([8]byte{byte(i >> 8), byte(i), 2}))
		span.SetName("GET /api/v1/orders/{id}")
		span.SetKind(ptrace.SpanKindServer)
		span.SetStartTimestamp(pcommon.Timestamp(1_700_000_000_000_000_000 + uint64(i)))
		span.SetEndTimestamp(pcommon.Timestamp(1_700_000_000_005_000_000 + uint64(i)))
		attrs := span.Attributes()
		attrs.PutStr("http.method", "GET")
		attrs.PutStr("http.route", "/api/v1/orders/{id}")
		attrs.PutInt("http.status_code", 200)
		attrs.PutStr("net.peer.name", "orders.internal")
		attrs.PutInt("net.peer.port", 8080)
		attrs.PutStr("db.system", "postgresql")
		attrs.PutStr("db.statement", "SELECT id, customer_id, total FROM orders WHERE id = $1 AND tenant = $2 LIMIT 10")
		attrs.PutInt("user.id", int64(i))
		attrs.PutStr("http.user_agent", "Mozilla/5.0 (X11; Linux x86_64) otelstore-bench")
		attrs.PutBool("retry", false)
		if i%10 == 0 {
			event := span.Events().AppendEmpty()
			event.SetName("exception")
			event.Attributes().PutStr("exception.type", "ValueError")
		}
	}
	return td
}

// BenchmarkMarshalTraces is the Go share of the exporter's CPU per request: pdata to OTLP bytes.
// Divide ns/op by 1000 for ns per span.
func BenchmarkMarshalTraces(b *testing.B) {
	td := realisticTraces(1000)
	marshaler := ptrace.ProtoMarshaler{}
	for b.Loop() {
		if _, err := marshaler.MarshalTraces(td); err != nil {
			b.Fatal(err)
		}
	}
}
