package otelstoreexporter

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exportertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// statusHost records the status events a component reports, as the collector's host would take them.
type statusHost struct {
	component.Host
	mu     sync.Mutex
	events []*componentstatus.Event
}

var _ componentstatus.Reporter = (*statusHost)(nil)

func newStatusHost() *statusHost {
	return &statusHost{Host: componenttest.NewNopHost()}
}

func (h *statusHost) Report(event *componentstatus.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, event)
}

func (h *statusHost) reported() []*componentstatus.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*componentstatus.Event(nil), h.events...)
}

func (h *statusHost) statuses() []componentstatus.Status {
	var statuses []componentstatus.Status
	for _, ev := range h.reported() {
		statuses = append(statuses, ev.Status())
	}
	return statuses
}

// observed is an exporter's telemetry as a test sees it: metrics through an SDK ManualReader,
// log lines through a zap observer, status events through a statusHost.
type observed struct {
	metrics *componenttest.Telemetry
	logCore zapcore.Core
	logs    *observer.ObservedLogs
	host    *statusHost
}

func newObserved(t *testing.T) *observed {
	t.Helper()
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { assert.NoError(t, tel.Shutdown(context.Background())) })
	logCore, logs := observer.New(zapcore.DebugLevel)
	return &observed{metrics: tel, logCore: logCore, logs: logs, host: newStatusHost()}
}

// testExporterID is the id of every observed exporter: its metrics carry exporter="otelstore/test".
var testExporterID = component.NewIDWithName(componentType, "test")

func (o *observed) settings() exporter.Settings {
	set := exportertest.NewNopSettings(componentType)
	set.ID = testExporterID
	set.TelemetrySettings = o.metrics.NewTelemetrySettings()
	set.Logger = zap.New(o.logCore)
	return set
}

// exporter is a synchronousExporter (no queue, no collector retries) whose telemetry goes to o.
func (o *observed) exporter(t *testing.T, modify func(*Config)) exporter.Traces {
	t.Helper()
	return synchronousExporterWith(t, o.settings(), modify)
}

// sum is the value of a counter's point with the given table attribute ("" for none), 0 when the
// counter has no such point or was never recorded.
func (o *observed) sum(t *testing.T, name, table string) int64 {
	t.Helper()
	m, err := o.metrics.GetMetric(name)
	if err != nil {
		return 0
	}
	data, ok := m.Data.(metricdata.Sum[int64])
	require.Truef(t, ok, "%s is a %T, not an int64 sum", name, m.Data)
	require.True(t, data.IsMonotonic, name)
	for _, p := range data.DataPoints {
		if p.Attributes.Equivalent() == tableSet(table).Equivalent() {
			return p.Value
		}
	}
	return 0
}

func (o *observed) gauge(t *testing.T, name string) int64 {
	t.Helper()
	m, err := o.metrics.GetMetric(name)
	require.NoError(t, err)
	data, ok := m.Data.(metricdata.Gauge[int64])
	require.Truef(t, ok, "%s is a %T, not an int64 gauge", name, m.Data)
	require.Len(t, data.DataPoints, 1)
	assert.Equal(t, tableSet("").Equivalent(), data.DataPoints[0].Attributes.Equivalent())
	return data.DataPoints[0].Value
}

// writes is the write-duration histogram's point for table.
func (o *observed) writes(t *testing.T, table string) metricdata.HistogramDataPoint[float64] {
	t.Helper()
	m, err := o.metrics.GetMetric("otelstore.write.duration")
	require.NoError(t, err)
	assert.Equal(t, "s", m.Unit)
	data, ok := m.Data.(metricdata.Histogram[float64])
	require.Truef(t, ok, "otelstore.write.duration is a %T", m.Data)
	for _, p := range data.DataPoints {
		if p.Attributes.Equivalent() == tableSet(table).Equivalent() {
			return p
		}
	}
	t.Fatalf("no otelstore.write.duration point for table %q: %+v", table, data.DataPoints)
	return metricdata.HistogramDataPoint[float64]{}
}

// tableSet is the attributes of an observed exporter's points for table ("" for none).
func tableSet(table string) *attribute.Set {
	set := attribute.NewSet(attribute.String("exporter", testExporterID.String()))
	if table != "" {
		set = attribute.NewSet(attribute.String("exporter", testExporterID.String()), attribute.String("table", table))
	}
	return &set
}

// allLogText is every observed log line with its fields, for checks that a secret never appears.
func (o *observed) allLogText() string {
	var b strings.Builder
	for _, entry := range o.logs.All() {
		fmt.Fprintf(&b, "%s %s %v\n", entry.Level, entry.Message, entry.ContextMap())
	}
	return b.String()
}

// manySpans are n spans of service that ended now: the core deletes rows older than
// retention.raw, such as those of spans without a time.
func manySpans(n int, service string) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", service)
	spans := rs.ScopeSpans().AppendEmpty().Spans()
	now := time.Now()
	for i := range n {
		span := spans.AppendEmpty()
		span.SetName("op")
		span.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(-time.Millisecond)))
		span.SetEndTimestamp(pcommon.NewTimestampFromTime(now))
		span.SetTraceID([16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, byte(i >> 8), byte(i)})
		span.SetSpanID([8]byte{1, 2, 3, 4, 5, 6, byte(i >> 8), byte(i)})
	}
	return td
}

// A document as the core writes it (rust/core/src/telemetry.rs), recorded without the C ABI.
func TestRecordTranslatesTheCoreDocument(t *testing.T) {
	o := newObserved(t)
	tel, err := newTelemetry(o.settings())
	require.NoError(t, err)
	exp := &coreExporter{}
	tel.addHost(exp, o.host)

	tel.record([]byte(`{
		"counters": [
			{"name": "rows_written", "table": "spans", "delta": 7},
			{"name": "bytes_written", "table": "spans", "delta": 700},
			{"name": "batches_written", "table": "spans", "delta": 2},
			{"name": "rows_rejected", "table": "spans", "delta": 1},
			{"name": "write_retries", "table": "spans", "delta": 3},
			{"name": "duplicate_requests_skipped", "table": "spans", "delta": 1},
			{"name": "requests_refused", "table": "", "delta": 4},
			{"name": "log_records_dropped", "table": "", "delta": 5},
			{"name": "a_counter_from_a_newer_core", "table": "", "delta": 1}
		],
		"gauges": [{"name": "bytes_held", "value": 10}, {"name": "memory_limit_bytes", "value": 268435456}],
		"writes": [{"table": "spans", "seconds": 0.25, "rows": 4}, {"table": "spans", "seconds": 0.5, "rows": 3}],
		"logs": [
			{"level": "warn", "message": "write failed, retrying", "fields": {"table": "spans", "error": "connection refused"}},
			{"level": "error", "message": "write failed permanently", "fields": {}},
			{"level": "info", "message": "schema ready", "fields": {"schema": "otel"}},
			{"level": "debug", "message": "fine detail", "fields": {}},
			{"level": "fatal", "message": "must not exit the collector", "fields": {}}
		],
		"database": {"reachable": false, "error": "connection refused"}
	}`))

	assert.Equal(t, int64(7), o.sum(t, "otelstore.rows.written", "spans"))
	assert.Equal(t, int64(700), o.sum(t, "otelstore.bytes.written", "spans"))
	assert.Equal(t, int64(2), o.sum(t, "otelstore.batches.written", "spans"))
	assert.Equal(t, int64(1), o.sum(t, "otelstore.rows.rejected", "spans"))
	assert.Equal(t, int64(3), o.sum(t, "otelstore.write.retries", "spans"))
	assert.Equal(t, int64(1), o.sum(t, "otelstore.requests.duplicate_skipped", "spans"))
	assert.Equal(t, int64(4), o.sum(t, "otelstore.requests.refused", ""))
	assert.Equal(t, int64(5), o.sum(t, "otelstore.log_records.dropped", ""))
	assert.Equal(t, int64(10), o.gauge(t, "otelstore.memory.held"))
	assert.Equal(t, int64(256<<20), o.gauge(t, "otelstore.memory.limit"))
	writes := o.writes(t, "spans")
	assert.Equal(t, uint64(2), writes.Count)
	assert.InDelta(t, 0.75, writes.Sum, 1e-9)

	units := map[string]string{}
	for _, name := range []string{"otelstore.rows.written", "otelstore.bytes.written", "otelstore.memory.held", "otelstore.memory.limit"} {
		m, err := o.metrics.GetMetric(name)
		require.NoError(t, err)
		units[name] = m.Unit
	}
	assert.Equal(t, map[string]string{
		"otelstore.rows.written": "{row}", "otelstore.bytes.written": "By",
		"otelstore.memory.held": "By", "otelstore.memory.limit": "By",
	}, units)

	type line struct {
		level   zapcore.Level
		message string
		fields  map[string]any
	}
	var lines []line
	for _, entry := range o.logs.All() {
		if entry.Message == "otelstore core reported an unknown counter" {
			continue
		}
		lines = append(lines, line{entry.Level, entry.Message, entry.ContextMap()})
	}
	assert.Equal(t, []line{
		{zapcore.WarnLevel, "write failed, retrying", map[string]any{"table": "spans", "error": "connection refused"}},
		{zapcore.ErrorLevel, "write failed permanently", map[string]any{}},
		{zapcore.InfoLevel, "schema ready", map[string]any{"schema": "otel"}},
		{zapcore.DebugLevel, "fine detail", map[string]any{}},
		{zapcore.ErrorLevel, "must not exit the collector", map[string]any{}},
	}, lines)

	// Status is reported on transitions only, and not at all once the exporter's Shutdown has begun.
	unreachable := []byte(`{"database": {"reachable": false, "error": "connection refused"}}`)
	reachable := []byte(`{"database": {"reachable": true, "error": ""}}`)
	tel.record(unreachable)
	tel.record(reachable)
	tel.record(reachable)
	tel.removeHost(exp)
	tel.record(unreachable)
	assert.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError, componentstatus.StatusOK}, o.host.statuses())
	assert.EqualError(t, o.host.reported()[0].Err(), "connection refused")

	// A signal exporter that starts while the database is unreachable hears of it at once.
	late := newStatusHost()
	tel.addHost(&coreExporter{}, late)
	assert.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError}, late.statuses())
	assert.EqualError(t, late.reported()[0].Err(), "connection refused")

	// Nothing that does not decode reaches the metrics.
	tel.record([]byte("not json"))
	assert.Equal(t, int64(7), o.sum(t, "otelstore.rows.written", "spans"))
	assert.Equal(t, "otelstore core telemetry does not decode", o.logs.All()[o.logs.Len()-1].Message)
}

func TestTelemetryOfAnUnreachableDatabase(t *testing.T) {
	o := newObserved(t)
	exp := o.exporter(t, func(*Config) {})
	require.NoError(t, exp.Start(context.Background(), o.host))

	require.Error(t, exp.ConsumeTraces(context.Background(), oneSpan()))
	require.Eventually(t, func() bool { return len(o.host.reported()) > 0 }, 5*time.Second, 50*time.Millisecond,
		"the failed write should be reported as a status event within a drain or two")
	events := o.host.reported()
	require.Len(t, events, 1)
	assert.Equal(t, componentstatus.StatusRecoverableError, events[0].Status())
	assert.Contains(t, events[0].Err().Error(), "Connection refused")
	assert.NotContains(t, events[0].Err().Error(), "hunter2")

	require.NoError(t, exp.Shutdown(context.Background()))
	assert.Equal(t, int64(0), o.sum(t, "otelstore.rows.written", "spans"))
	assert.Positive(t, o.sum(t, "otelstore.write.retries", "spans"))
	assert.Equal(t, int64(256<<20), o.gauge(t, "otelstore.memory.limit"))
	assert.Positive(t, o.logs.FilterLevelExact(zapcore.WarnLevel).FilterMessage("write failed, retrying").Len(),
		"the core's retries should be logged:\n%s", o.allLogText())
	assert.NotContains(t, o.allLogText(), "hunter2")
	assert.Len(t, o.host.reported(), 1, "nothing is reported once Shutdown has begun")
}

func pgSh(t *testing.T, command string) {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", ".run", "go-test"))
	require.NoError(t, err)
	cmd := exec.Command(filepath.Join("..", "scripts", "pg.sh"), command, dir)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Run(), "scripts/pg.sh %s %s", command, dir)
}

// Against a real PostgreSQL: rows_written counts what was committed, and the status follows the
// database as it goes away and comes back.
func TestTelemetryOfPostgres(t *testing.T) {
	dsn := startPostgres(t)
	service := fmt.Sprintf("go-shim-telemetry-%d", time.Now().UnixNano())
	o := newObserved(t)
	exp := o.exporter(t, func(cfg *Config) {
		cfg.Postgres.DSN = configopaque.String(dsn)
		cfg.Postgres.ConnectTimeout = Duration(2 * time.Second)
	})
	require.NoError(t, exp.Start(context.Background(), o.host))
	t.Cleanup(func() { _ = exp.Shutdown(context.Background()) })

	exported := 0
	for _, n := range []int{1, 10, 100} {
		require.NoError(t, exp.ConsumeTraces(context.Background(), manySpans(n, service)))
		exported += n
	}
	require.Eventually(t, func() bool { return o.sum(t, "otelstore.rows.written", "spans") == int64(exported) },
		5*time.Second, 50*time.Millisecond, "rows_written should reach %d within a drain or two", exported)
	assert.Empty(t, o.host.reported(), "a reachable database is not news")

	pgSh(t, "stop")
	require.Error(t, exp.ConsumeTraces(context.Background(), manySpans(5, service)))
	require.Eventually(t, func() bool { return len(o.host.reported()) == 1 }, 5*time.Second, 50*time.Millisecond)
	down := o.host.reported()[0]
	assert.Equal(t, componentstatus.StatusRecoverableError, down.Status())
	require.Error(t, down.Err())
	assert.NotContains(t, down.Err().Error(), "secret")

	// Another failure while down is no new status event.
	require.Error(t, exp.ConsumeTraces(context.Background(), manySpans(5, service)))
	time.Sleep(2 * drainInterval)
	assert.Len(t, o.host.reported(), 1)

	pgSh(t, "start")
	require.NoError(t, exp.ConsumeTraces(context.Background(), manySpans(7, service)))
	exported += 7
	require.Eventually(t, func() bool { return len(o.host.reported()) == 2 }, 5*time.Second, 50*time.Millisecond)
	assert.Equal(t, componentstatus.StatusOK, o.host.reported()[1].Status())

	require.NoError(t, exp.Shutdown(context.Background()))
	assert.Equal(t, int64(exported), o.sum(t, "otelstore.rows.written", "spans"))
	assert.Equal(t, fmt.Sprint(exported), psql(t, dsn, fmt.Sprintf("SELECT count(*) FROM otel.spans WHERE service_name = '%s'", service)))
	assert.Positive(t, o.sum(t, "otelstore.bytes.written", "spans"))
	assert.Positive(t, o.sum(t, "otelstore.batches.written", "spans"))
	assert.Positive(t, o.sum(t, "otelstore.write.retries", "spans"))
	writes := o.writes(t, "spans")
	assert.Equal(t, uint64(o.sum(t, "otelstore.batches.written", "spans")), writes.Count)
	assert.Equal(t, int64(0), o.gauge(t, "otelstore.memory.held"))
	assert.NotContains(t, o.allLogText(), dsn)
}

// The signal exporters of one configuration share a core (see shared.go): its telemetry is drained
// once, through the exporter that started it, and its status reaches every signal's host.
func TestTelemetryOfASharedCore(t *testing.T) {
	ctx, cfg := context.Background(), synchronousConfig(func(*Config) {})
	observers := make(map[signal]*observed, len(allSignals))
	start := func(sig signal) func(context.Context, string) error {
		observers[sig] = newObserved(t)
		exp, send := signalExporterWith(t, sig, observers[sig].settings(), cfg)
		require.NoError(t, exp.Start(ctx, observers[sig].host))
		t.Cleanup(func() { assert.NoError(t, exp.Shutdown(ctx)) })
		return send
	}
	start(signalTraces)
	sendLogs := start(signalLogs)

	require.Error(t, sendLogs(ctx, "otelstore-test"))
	for _, sig := range []signal{signalTraces, signalLogs} {
		require.Eventually(t, func() bool { return len(observers[sig].host.reported()) > 0 }, 5*time.Second, 50*time.Millisecond, sig)
	}
	// Started later, the metrics exporter hears at once that the database is unreachable.
	start(signalMetrics)
	for _, sig := range allSignals {
		assert.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError}, observers[sig].host.statuses(), sig)
	}

	require.Eventually(t, func() bool { return observers[signalTraces].sum(t, "otelstore.write.retries", "logs") > 0 },
		5*time.Second, 50*time.Millisecond, "the logs exporter's retries are the core's, drained through the traces exporter")
	for _, sig := range []signal{signalLogs, signalMetrics} {
		_, err := observers[sig].metrics.GetMetric("otelstore.memory.limit")
		assert.Error(t, err, "%s: the core is drained once, not once per signal", sig)
		assert.Zero(t, observers[sig].logs.FilterMessage("write failed, retrying").Len(), sig)
	}
}

// droppingMeterProvider and droppingCore are a meter provider and a logger core like the collector's, which add attributes
// such as otelcol.signal to a component's telemetry and can drop them again.
type (
	droppingMeterProvider struct {
		metric.MeterProvider
		dropped *[]string
	}
	droppingCore struct {
		zapcore.Core
		dropped *[]string
	}
)

func (p droppingMeterProvider) DropInjectedAttributes(attrs ...string) metric.MeterProvider {
	*p.dropped = append(*p.dropped, attrs...)
	return p.MeterProvider
}

func (c droppingCore) DropInjectedAttributes(attrs ...string) zapcore.Core {
	*c.dropped = append(*c.dropped, attrs...)
	return c.Core
}

// A core serves every signal of its configuration, so its telemetry goes without the signal that
// the collector adds to the telemetry of each signal's exporter.
func TestTelemetryDropsTheSignalAttribute(t *testing.T) {
	var fromMeters, fromLogs []string
	set := exportertest.NewNopSettings(componentType)
	set.MeterProvider = droppingMeterProvider{MeterProvider: set.MeterProvider, dropped: &fromMeters}
	set.Logger = zap.New(droppingCore{Core: zapcore.NewNopCore(), dropped: &fromLogs})
	_, err := newTelemetry(set)
	require.NoError(t, err)
	assert.Equal(t, []string{"otelcol.signal"}, fromMeters)
	assert.Equal(t, []string{"otelcol.signal"}, fromLogs)
}
