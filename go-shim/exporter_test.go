package otelstoreexporter

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exportertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// unreachableDSN points at a port nothing listens on; the password must never surface in errors.
const unreachableDSN = "postgres://u:hunter2@127.0.0.1:1/db"

func oneSpan() ptrace.Traces {
	return manySpans(1, "otelstore-test")
}

// allSignals are the signals the exporter takes, in the order of the C ABI.
var allSignals = []signal{signalTraces, signalLogs, signalMetrics}

// oneLog is one log record of service.
func oneLog(service string) plog.Logs {
	ld := plog.NewLogs()
	rl := ld.ResourceLogs().AppendEmpty()
	rl.Resource().Attributes().PutStr("service.name", service)
	record := rl.ScopeLogs().AppendEmpty().LogRecords().AppendEmpty()
	record.SetTimestamp(pcommon.NewTimestampFromTime(time.Now()))
	record.SetSeverityNumber(plog.SeverityNumberInfo)
	record.SetSeverityText("INFO")
	record.Body().SetStr("order placed")
	record.Attributes().PutInt("order.items", 3)
	return ld
}

// metricsOfEveryType is one data point of each metric type of service: a row in each metrics table.
func metricsOfEveryType(service string) pmetric.Metrics {
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", service)
	metrics := rm.ScopeMetrics().AppendEmpty().Metrics()
	metric := func(name string) pmetric.Metric {
		m := metrics.AppendEmpty()
		m.SetName(name)
		return m
	}

	gauge := metric("queue.length").SetEmptyGauge().DataPoints().AppendEmpty()
	lastMinute(gauge)
	gauge.SetIntValue(7)

	sum := metric("requests").SetEmptySum()
	sum.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	sum.SetIsMonotonic(true)
	sumPoint := sum.DataPoints().AppendEmpty()
	lastMinute(sumPoint)
	sumPoint.SetDoubleValue(42.5)
	sumPoint.Attributes().PutStr("http.route", "/orders")

	histogram := metric("latency").SetEmptyHistogram()
	histogram.SetAggregationTemporality(pmetric.AggregationTemporalityDelta)
	histogramPoint := histogram.DataPoints().AppendEmpty()
	counted(histogramPoint, 3, 0.6)
	histogramPoint.ExplicitBounds().FromRaw([]float64{0.1, 0.5})
	histogramPoint.BucketCounts().FromRaw([]uint64{1, 1, 1})

	exponential := metric("payload.size").SetEmptyExponentialHistogram()
	exponential.SetAggregationTemporality(pmetric.AggregationTemporalityDelta)
	exponentialPoint := exponential.DataPoints().AppendEmpty()
	counted(exponentialPoint, 3, 700)
	exponentialPoint.SetScale(2)
	exponentialPoint.SetZeroCount(1)
	exponentialPoint.Positive().SetOffset(30)
	exponentialPoint.Positive().BucketCounts().FromRaw([]uint64{1, 1})

	summaryPoint := metric("gc.pause").SetEmptySummary().DataPoints().AppendEmpty()
	counted(summaryPoint, 4, 0.02)
	quantile := summaryPoint.QuantileValues().AppendEmpty()
	quantile.SetQuantile(0.5)
	quantile.SetValue(0.004)
	return md
}

// timedPoint is what every kind of metric data point has.
type timedPoint interface {
	SetStartTimestamp(pcommon.Timestamp)
	SetTimestamp(pcommon.Timestamp)
}

// lastMinute makes a data point cover the minute up to now.
func lastMinute(point timedPoint) {
	now := time.Now()
	point.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(-time.Minute)))
	point.SetTimestamp(pcommon.NewTimestampFromTime(now))
}

// countedPoint is a histogram, exponential histogram or summary data point.
type countedPoint interface {
	timedPoint
	SetCount(uint64)
	SetSum(float64)
}

// counted is lastMinute with the point's count and sum.
func counted(point countedPoint, count uint64, sum float64) {
	lastMinute(point)
	point.SetCount(count)
	point.SetSum(sum)
}

// synchronousConfig has exporters return errors from Consume* directly: no queue, no collector
// retries. Its database is unreachable until modify says otherwise.
func synchronousConfig(modify func(*Config)) *Config {
	cfg := NewFactory().CreateDefaultConfig().(*Config)
	cfg.Postgres.DSN = unreachableDSN
	cfg.Postgres.ConnectTimeout = Duration(time.Second)
	cfg.QueueConfig = configoptional.None[exporterhelper.QueueBatchConfig]()
	cfg.BackOffConfig.Enabled = false
	// The core retries within this deadline, then reports its last error.
	cfg.TimeoutConfig.Timeout = 2 * time.Second
	modify(cfg)
	return cfg
}

// synchronousExporter is the traces exporter of a synchronousConfig.
func synchronousExporter(t *testing.T, modify func(*Config)) exporter.Traces {
	t.Helper()
	return synchronousExporterWith(t, exportertest.NewNopSettings(componentType), modify)
}

// synchronousExporterWith is synchronousExporter reporting its telemetry through set.
func synchronousExporterWith(t *testing.T, set exporter.Settings, modify func(*Config)) exporter.Traces {
	t.Helper()
	exp, err := NewFactory().CreateTraces(context.Background(), set, synchronousConfig(modify))
	require.NoError(t, err)
	return exp
}

// signalExporter is the exporter the factory creates for sig from cfg, and a function that sends it
// one request of service: a span, a log record, or a point of every metric type.
func signalExporter(t *testing.T, sig signal, cfg *Config) (component.Component, func(context.Context, string) error) {
	t.Helper()
	return signalExporterWith(t, sig, exportertest.NewNopSettings(componentType), cfg)
}

// signalExporterWith is signalExporter reporting its telemetry through set.
func signalExporterWith(t *testing.T, sig signal, set exporter.Settings, cfg *Config) (component.Component, func(context.Context, string) error) {
	t.Helper()
	factory, ctx := NewFactory(), context.Background()
	switch sig {
	case signalLogs:
		exp, err := factory.CreateLogs(ctx, set, cfg)
		require.NoError(t, err)
		return exp, func(ctx context.Context, service string) error {
			return exp.ConsumeLogs(ctx, oneLog(service))
		}
	case signalMetrics:
		exp, err := factory.CreateMetrics(ctx, set, cfg)
		require.NoError(t, err)
		return exp, func(ctx context.Context, service string) error {
			return exp.ConsumeMetrics(ctx, metricsOfEveryType(service))
		}
	}
	exp, err := factory.CreateTraces(ctx, set, cfg)
	require.NoError(t, err)
	return exp, func(ctx context.Context, service string) error {
		td := oneSpan()
		td.ResourceSpans().At(0).Resource().Attributes().PutStr("service.name", service)
		return exp.ConsumeTraces(ctx, td)
	}
}

func TestExportToUnreachableDatabaseIsRetryable(t *testing.T) {
	for _, sig := range allSignals {
		t.Run(sig.String(), func(t *testing.T) {
			exp, send := signalExporter(t, sig, synchronousConfig(func(*Config) {}))
			// Connections open lazily: a database that is down must not stop the collector from starting.
			require.NoError(t, exp.Start(context.Background(), componenttest.NewNopHost()))
			t.Cleanup(func() { assert.NoError(t, exp.Shutdown(context.Background())) })

			started := time.Now()
			err := send(context.Background(), "otelstore-test")
			require.Error(t, err)
			assert.False(t, consumererror.IsPermanent(err), "an unreachable database is worth retrying: %v", err)
			assert.NotContains(t, err.Error(), "hunter2")
			assert.Contains(t, err.Error(), "Connection refused")
			assert.Less(t, time.Since(started), 10*time.Second, "the 2s export timeout should bound the call")
		})
	}
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
	ctx := context.Background()

	require.NoError(t, exp.pushTraces(ctx, ptrace.NewTraces()))
	noSpans := ptrace.NewTraces()
	noSpans.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty()
	require.NoError(t, exp.pushTraces(ctx, noSpans))

	require.NoError(t, exp.pushLogs(ctx, plog.NewLogs()))
	noRecords := plog.NewLogs()
	noRecords.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty()
	require.NoError(t, exp.pushLogs(ctx, noRecords))

	require.NoError(t, exp.pushMetrics(ctx, pmetric.NewMetrics()))
	noPoints := pmetric.NewMetrics()
	noPoints.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty().SetEmptyGauge()
	require.NoError(t, exp.pushMetrics(ctx, noPoints))

	for sig, err := range map[signal]error{
		signalTraces:  exp.pushTraces(ctx, oneSpan()),
		signalLogs:    exp.pushLogs(ctx, oneLog("otelstore-test")),
		signalMetrics: exp.pushMetrics(ctx, metricsOfEveryType("otelstore-test")),
	} {
		require.Error(t, err, sig)
		assert.True(t, consumererror.IsPermanent(err), "%s: misuse of a handle is not worth retrying: %v", sig, err)
	}
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

// nopExporter is a coreExporter outside exporterhelper, whose telemetry goes nowhere.
func nopExporter(t *testing.T, cfg *Config) *coreExporter {
	t.Helper()
	exp, err := newCoreExporter(cfg, exportertest.NewNopSettings(componentType))
	require.NoError(t, err)
	return exp
}
