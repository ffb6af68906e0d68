package otelstoreexporter

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exportertest"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// unreachableDSN points at a port nothing listens on; the password must never surface in errors.
const unreachableDSN = "postgres://u:hunter2@127.0.0.1:1/db"

func oneSpan() ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "otelstore-test")
	span := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	span.SetName("op")
	span.SetTraceID([16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	span.SetSpanID([8]byte{1, 2, 3, 4, 5, 6, 7, 8})
	return td
}

// synchronousExporter returns errors from ConsumeTraces directly: no queue, no collector retries.
func synchronousExporter(t *testing.T, modify func(*Config)) exporter.Traces {
	t.Helper()
	return synchronousExporterWith(t, exportertest.NewNopSettings(componentType), modify)
}

// synchronousExporterWith is synchronousExporter reporting its telemetry through set.
func synchronousExporterWith(t *testing.T, set exporter.Settings, modify func(*Config)) exporter.Traces {
	t.Helper()
	factory := NewFactory()
	cfg := factory.CreateDefaultConfig().(*Config)
	cfg.Postgres.DSN = unreachableDSN
	cfg.Postgres.ConnectTimeout = Duration(time.Second)
	cfg.QueueConfig = configoptional.None[exporterhelper.QueueBatchConfig]()
	cfg.BackOffConfig.Enabled = false
	// The core retries within this deadline, then reports its last error.
	cfg.TimeoutConfig.Timeout = 2 * time.Second
	modify(cfg)
	exp, err := factory.CreateTraces(context.Background(), set, cfg)
	require.NoError(t, err)
	return exp
}

func TestExportToUnreachableDatabaseIsRetryable(t *testing.T) {
	exp := synchronousExporter(t, func(*Config) {})
	// Connections open lazily: a database that is down must not stop the collector from starting.
	require.NoError(t, exp.Start(context.Background(), componenttest.NewNopHost()))
	t.Cleanup(func() { assert.NoError(t, exp.Shutdown(context.Background())) })

	started := time.Now()
	err := exp.ConsumeTraces(context.Background(), oneSpan())
	require.Error(t, err)
	assert.False(t, consumererror.IsPermanent(err), "an unreachable database is worth retrying: %v", err)
	assert.NotContains(t, err.Error(), "hunter2")
	assert.Contains(t, err.Error(), "Connection refused")
	assert.Less(t, time.Since(started), 10*time.Second, "the 2s export timeout should bound the call")
}

func TestStartRejectsInvalidConfig(t *testing.T) {
	exp := synchronousExporter(t, func(cfg *Config) { cfg.Postgres.PoolSize = 0 })
	require.ErrorContains(t, exp.Start(context.Background(), componenttest.NewNopHost()),
		"postgres.pool_size: must be between 1 and 64, got 0")
	require.NoError(t, exp.Shutdown(context.Background()))
}

func TestShutdownWithoutStartIsANoOp(t *testing.T) {
	exp := nopExporter(t, &Config{})
	// Freeing a handle the core never issued would fail, so an error here means the core was called.
	require.NoError(t, exp.shutdown(context.Background()))
}

func TestShutdownReleasesTheHandleOnce(t *testing.T) {
	cfg := NewFactory().CreateDefaultConfig().(*Config)
	cfg.Postgres.DSN = unreachableDSN
	exp := nopExporter(t, cfg)
	require.NoError(t, exp.start(context.Background(), componenttest.NewNopHost()))
	handle := exp.handle

	require.NoError(t, exp.shutdown(context.Background()))
	require.NoError(t, exp.shutdown(context.Background()))

	var core *coreError
	require.ErrorAs(t, coreFree(handle), &core, "the handle should already be freed")
	assert.Equal(t, statusInvalidArgument, core.status)
}

func TestEmptyRequestsNeverReachTheCore(t *testing.T) {
	// A never-started exporter holds no valid handle: any call into the core fails.
	exp := nopExporter(t, &Config{})

	require.NoError(t, exp.pushTraces(context.Background(), ptrace.NewTraces()))
	noSpans := ptrace.NewTraces()
	noSpans.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty()
	require.NoError(t, exp.pushTraces(context.Background(), noSpans))

	err := exp.pushTraces(context.Background(), oneSpan())
	require.Error(t, err)
	assert.True(t, consumererror.IsPermanent(err), "misuse of a handle is not worth retrying: %v", err)
}

func TestExportErrorMapping(t *testing.T) {
	assert.NoError(t, exportError(nil))
	for _, st := range []status{statusInvalidConfig, statusPermanent, statusInvalidArgument, statusInternal} {
		err := exportError(&coreError{status: st, message: "boom"})
		assert.Truef(t, consumererror.IsPermanent(err), "status %d should be permanent", st)
		assert.ErrorContains(t, err, "boom")
	}
	err := exportError(&coreError{status: statusRetryable, message: "database unreachable"})
	assert.False(t, consumererror.IsPermanent(err))
	assert.EqualError(t, err, "database unreachable")
	assert.True(t, consumererror.IsPermanent(exportError(errors.New("not from the core"))))
}

func TestShutdownTimeout(t *testing.T) {
	assert.Equal(t, defaultShutdownTimeout, shutdownTimeout(context.Background()))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	remaining := shutdownTimeout(ctx)
	assert.Greater(t, remaining, time.Second)
	assert.LessOrEqual(t, remaining, 2*time.Second)

	expired, cancelExpired := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancelExpired()
	assert.Equal(t, time.Duration(0), shutdownTimeout(expired))
}

// nopExporter is a tracesExporter outside exporterhelper, whose telemetry goes nowhere.
func nopExporter(t *testing.T, cfg *Config) *tracesExporter {
	t.Helper()
	exp, err := newTracesExporter(cfg, exportertest.NewNopSettings(componentType))
	require.NoError(t, err)
	return exp
}
