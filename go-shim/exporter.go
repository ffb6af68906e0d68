package otelstoreexporter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// defaultShutdownTimeout bounds the final flush when the collector gives Shutdown no deadline.
const defaultShutdownTimeout = 30 * time.Second

// tracesExporter owns one core exporter handle between Start and Shutdown.
type tracesExporter struct {
	config *Config
	handle uint64
	open   bool
}

func newTracesExporter(cfg *Config) *tracesExporter {
	return &tracesExporter{config: cfg}
}

func (e *tracesExporter) start(context.Context, component.Host) error {
	configJSON, err := e.config.coreJSON()
	if err != nil {
		return err
	}
	handle, err := coreNew(configJSON)
	if err != nil {
		return err
	}
	e.handle, e.open = handle, true
	return nil
}

func (e *tracesExporter) pushTraces(ctx context.Context, td ptrace.Traces) error {
	// An empty request would cost a round trip to the core for nothing to write.
	if td.SpanCount() == 0 {
		return nil
	}
	otlp, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		return consumererror.NewPermanent(fmt.Errorf("encoding traces as OTLP protobuf: %w", err))
	}
	return exportError(coreExportTraces(e.handle, otlp, exportTimeout(ctx)))
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

func (e *tracesExporter) shutdown(ctx context.Context) error {
	if !e.open {
		return nil
	}
	e.open = false
	return errors.Join(coreShutdown(e.handle, shutdownTimeout(ctx)), coreFree(e.handle))
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
