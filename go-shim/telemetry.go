package otelstoreexporter

// The core's self-observability, translated for the collector: what otelstore_exporter_drain
// returns (rust/core/src/telemetry.rs) becomes the component's metrics, log lines and status.

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

const scopeName = "github.com/otelstore/otelstore/go-shim"

// drained is one otelstore_exporter_drain document.
type drained struct {
	Counters []struct {
		Name  string `json:"name"`
		Table string `json:"table"`
		Delta int64  `json:"delta"`
	} `json:"counters"`
	Gauges []struct {
		Name  string `json:"name"`
		Value int64  `json:"value"`
	} `json:"gauges"`
	Writes []struct {
		Table   string  `json:"table"`
		Seconds float64 `json:"seconds"`
	} `json:"writes"`
	Logs []struct {
		Level   string            `json:"level"`
		Message string            `json:"message"`
		Fields  map[string]string `json:"fields"`
	} `json:"logs"`
	Database struct {
		Reachable bool   `json:"reachable"`
		Error     string `json:"error"`
	} `json:"database"`
}

// The core's counter and gauge names, and the collector metrics they become.
var (
	counterMetrics = map[string]struct{ name, unit, description string }{
		"rows_written":               {"otelstore.rows.written", "{row}", "Rows committed to the database."},
		"bytes_written":              {"otelstore.bytes.written", "By", "Bytes of encoded rows committed to the database."},
		"batches_written":            {"otelstore.batches.written", "{batch}", "Writes (one COPY and its commit) that succeeded."},
		"rows_rejected":              {"otelstore.rows.rejected", "{row}", "Rows a write rejected with a permanent error."},
		"write_retries":              {"otelstore.write.retries", "{retry}", "Write attempts that failed and were retried."},
		"duplicate_requests_skipped": {"otelstore.requests.duplicate_skipped", "{request}", "Requests already written, skipped instead of written twice."},
		"requests_refused":           {"otelstore.requests.refused", "{request}", "Requests refused because the core held memory_limit_mib of data."},
		"log_records_dropped":        {"otelstore.log_records.dropped", "{record}", "Core log records dropped because too many arrived between two reads."},
	}
	gaugeMetrics = map[string]struct{ name, description string }{
		"bytes_held":         {"otelstore.memory.held", "Bytes of encoded rows the core holds, queued or being written."},
		"memory_limit_bytes": {"otelstore.memory.limit", "memory_limit_mib in bytes: above it, the core refuses new data."},
	}
	// Seconds, from a fast local COPY to the longest write_timeout.
	writeDurationBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
)

// telemetry records drained documents, one at a time; the hosts change under mu meanwhile.
type telemetry struct {
	logger        *zap.Logger
	coreLogger    *zap.Logger        // the core's records: a Go caller would point here, not at their source
	exporterID    attribute.KeyValue // on every point, as on exporterhelper's own metrics
	counters      map[string]metric.Int64Counter
	gauges        map[string]metric.Int64Gauge
	writeDuration metric.Float64Histogram

	mu          sync.Mutex
	hosts       map[*coreExporter]component.Host // of the started signal exporters: where status events go
	unreachable error                            // the database's error while it is unreachable, as last drained
}

// signalAttribute is the attribute the collector adds to the logger and meters of each signal's
// exporter. What a core reports is of every signal its configuration exports, so its telemetry goes
// without it, as that of upstream's shared OTLP receiver does.
const signalAttribute = "otelcol.signal"

// The collector's logger core and meter provider that can drop an attribute they add (the
// collector's internal telemetry.DropInjectedAttributes, which components cannot import).
type (
	attributeDroppingCore interface {
		DropInjectedAttributes(droppedAttrs ...string) zapcore.Core
	}
	attributeDroppingMeterProvider interface {
		DropInjectedAttributes(droppedAttrs ...string) metric.MeterProvider
	}
)

func newTelemetry(set exporter.Settings) (*telemetry, error) {
	logger := set.Logger.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		if d, ok := c.(attributeDroppingCore); ok {
			return d.DropInjectedAttributes(signalAttribute)
		}
		return c
	}))
	meterProvider := set.MeterProvider
	if d, ok := meterProvider.(attributeDroppingMeterProvider); ok {
		meterProvider = d.DropInjectedAttributes(signalAttribute)
	}
	meter := meterProvider.Meter(scopeName)
	t := &telemetry{
		logger:     logger,
		coreLogger: logger.WithOptions(zap.WithCaller(false)),
		exporterID: attribute.String("exporter", set.ID.String()),
		counters:   make(map[string]metric.Int64Counter, len(counterMetrics)),
		gauges:     make(map[string]metric.Int64Gauge, len(gaugeMetrics)),
		hosts:      map[*coreExporter]component.Host{},
	}
	var errs []error
	for core, m := range counterMetrics {
		counter, err := meter.Int64Counter(m.name, metric.WithUnit(m.unit), metric.WithDescription(m.description))
		t.counters[core] = counter
		errs = append(errs, err)
	}
	for core, m := range gaugeMetrics {
		gauge, err := meter.Int64Gauge(m.name, metric.WithUnit("By"), metric.WithDescription(m.description))
		t.gauges[core] = gauge
		errs = append(errs, err)
	}
	var err error
	t.writeDuration, err = meter.Float64Histogram("otelstore.write.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of each write (one COPY and its commit) that succeeded."),
		metric.WithExplicitBucketBoundaries(writeDurationBuckets...))
	errs = append(errs, err)
	return t, errors.Join(errs...)
}

// attributes are the exporter's id and, for what belongs to a table, the table.
func (t *telemetry) attributes(table string) metric.MeasurementOption {
	if table == "" {
		return metric.WithAttributes(t.exporterID)
	}
	return metric.WithAttributes(t.exporterID, attribute.String("table", table))
}

// record turns one drained document into metrics and log lines and, if the database became
// unreachable or reachable again, a status event to each host.
func (t *telemetry) record(document []byte) {
	var d drained
	if err := json.Unmarshal(document, &d); err != nil {
		t.logger.Warn("otelstore core telemetry does not decode", zap.Error(err))
		return
	}
	ctx := context.Background()
	for _, c := range d.Counters {
		if counter, ok := t.counters[c.Name]; ok {
			counter.Add(ctx, c.Delta, t.attributes(c.Table))
		} else {
			t.logger.Debug("otelstore core reported an unknown counter", zap.String("counter", c.Name))
		}
	}
	for _, g := range d.Gauges {
		if gauge, ok := t.gauges[g.Name]; ok {
			gauge.Record(ctx, g.Value, t.attributes(""))
		}
	}
	for _, w := range d.Writes {
		t.writeDuration.Record(ctx, w.Seconds, t.attributes(w.Table))
	}
	for _, l := range d.Logs {
		t.log(l.Level, l.Message, l.Fields)
	}
	t.reportDatabase(d.Database.Reachable, d.Database.Error)
}

func (t *telemetry) log(level, message string, fields map[string]string) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		lvl = zapcore.InfoLevel
	}
	// The core sends debug to error; nothing it says may panic or exit the collector.
	lvl = min(lvl, zapcore.ErrorLevel)
	entry := t.coreLogger.Check(lvl, message)
	if entry == nil {
		return
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	zapFields := make([]zap.Field, 0, len(keys))
	for _, k := range keys {
		zapFields = append(zapFields, zap.String(k, fields[k]))
	}
	entry.Write(zapFields...)
}

func (t *telemetry) reportDatabase(reachable bool, message string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if reachable == (t.unreachable == nil) {
		return
	}
	event := componentstatus.NewEvent(componentstatus.StatusOK)
	t.unreachable = nil
	if !reachable {
		if message == "" {
			message = "the database is unreachable"
		}
		t.unreachable = errors.New(message)
		event = componentstatus.NewRecoverableErrorEvent(t.unreachable)
	}
	for _, host := range t.hosts {
		componentstatus.ReportStatus(host, event)
	}
}

// addHost has status events go to the host of a signal exporter that Start gave it, beginning with
// the database being unreachable if it is: the exporters that started before saw that event.
func (t *telemetry) addHost(exp *coreExporter, host component.Host) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.hosts[exp] = host
	if t.unreachable != nil {
		componentstatus.ReportStatus(host, componentstatus.NewRecoverableErrorEvent(t.unreachable))
	}
}

// removeHost stops status events to a signal exporter's host: a component may no longer report
// status once its Shutdown has begun.
func (t *telemetry) removeHost(exp *coreExporter) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.hosts, exp)
}
