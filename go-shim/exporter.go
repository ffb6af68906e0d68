package otelstoreexporter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// defaultShutdownTimeout bounds the final flush when the collector gives Shutdown no deadline.
const defaultShutdownTimeout = 30 * time.Second

// drainInterval is how often a core's telemetry is read (see shared.go and telemetry.go).
const drainInterval = time.Second

// coreExporter is what the factory makes for each signal exporter. Between Start and Shutdown it
// holds the core that the exporters of its configuration share (see shared.go): the first of them
// to start creates it, with that exporter's telemetry; the last to shut down shuts it down.
type coreExporter struct {
	config    *Config
	telemetry *telemetry
	core      *sharedCore
	handle    uint64 // core.handle, for the push functions; 0, which the core never issues, before Start
	open      bool
}

func newCoreExporter(cfg *Config, set exporter.Settings) (*coreExporter, error) {
	tel, err := newTelemetry(set)
	if err != nil {
		return nil, err
	}
	return &coreExporter{config: cfg, telemetry: tel}, nil
}

func (e *coreExporter) start(_ context.Context, host component.Host) error {
	core, err := sharedCores.acquire(e.config, e.telemetry)
	if err != nil {
		return err
	}
	e.core, e.handle, e.open = core, core.handle, true
	// Status goes to every signal's host: each is a component instance of its own to the collector.
	core.telemetry.addHost(e, host)
	return nil
}

// The push functions hand the core the request as OTLP protobuf (TracesData, LogsData and
// MetricsData encode exactly like the matching Export*ServiceRequest), in one call per request. An
// empty request would cost a round trip to the core for nothing to write.

func (e *coreExporter) pushTraces(ctx context.Context, td ptrace.Traces) error {
	if td.SpanCount() == 0 {
		return nil
	}
	otlp, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	return e.export(ctx, signalTraces, otlp, err)
}

func (e *coreExporter) pushLogs(ctx context.Context, ld plog.Logs) error {
	if ld.LogRecordCount() == 0 {
		return nil
	}
	otlp, err := (&plog.ProtoMarshaler{}).MarshalLogs(ld)
	return e.export(ctx, signalLogs, otlp, err)
}

func (e *coreExporter) pushMetrics(ctx context.Context, md pmetric.Metrics) error {
	if md.DataPointCount() == 0 {
		return nil
	}
	otlp, err := (&pmetric.ProtoMarshaler{}).MarshalMetrics(md)
	return e.export(ctx, signalMetrics, otlp, err)
}

// export sends what a push function marshaled (or fails with its marshaling error) to the core.
func (e *coreExporter) export(ctx context.Context, sig signal, otlp []byte, marshalErr error) error {
	if marshalErr != nil {
		return consumererror.NewPermanent(fmt.Errorf("encoding %s as OTLP protobuf: %w", sig, marshalErr))
	}
	return exportError(coreExport(e.handle, sig, otlp, exportTimeout(ctx)))
}

// exportError tells exporterhelper which failures to retry: only those the core calls retryable
// (the database is unreachable, say). Everything else would fail the same way again.
func exportError(err error) error {
	var core *coreError
	if err == nil || errors.As(err, &core) && core.status == statusRetryable {
		return err
	}
	return consumererror.NewPermanent(err)
}

func (e *coreExporter) shutdown(ctx context.Context) error {
	if !e.open {
		return nil
	}
	e.open = false
	e.core.telemetry.removeHost(e)
	if !sharedCores.release(e.config, e.core) {
		return nil
	}
	return e.core.shutdown(ctx)
}

// exportTimeout is the time left before exporterhelper's timeout, so the core stops retrying when
// the collector stops waiting; 0 (no deadline) when the timeout is disabled. An expired deadline
// still gets a millisecond: 0 would mean "wait forever".
func exportTimeout(ctx context.Context) time.Duration {
	deadline, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	return max(time.Until(deadline), time.Millisecond)
}

// shutdownTimeout is the time left before ctx's deadline, so the core's final flush ends when the
// collector stops waiting.
func shutdownTimeout(ctx context.Context) time.Duration {
	deadline, ok := ctx.Deadline()
	if !ok {
		return defaultShutdownTimeout
	}
	return max(time.Until(deadline), 0)
}
