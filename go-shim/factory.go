// Package otelstoreexporter is the OpenTelemetry Collector exporter whose engine is the otelstore
// Rust core: this package adapts the collector's component model to the core's C ABI.
package otelstoreexporter // import "github.com/otelstore/otelstore/go-shim"

import (
	"context"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/config/configretry"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
)

var componentType = component.MustNewType("otelstore")

// stability is that of every signal: the three take the same path through this package and the core.
const stability = component.StabilityLevelAlpha

// NewFactory returns the factory of the otelstore exporter.
func NewFactory() exporter.Factory {
	return exporter.NewFactory(
		componentType,
		createDefaultConfig,
		exporter.WithTraces(createTraces, stability),
		exporter.WithLogs(createLogs, stability),
		exporter.WithMetrics(createMetrics, stability),
	)
}

func createDefaultConfig() component.Config {
	core, err := defaultCoreConfig()
	if err != nil {
		// The defaults are compiled into the core that is linked into this binary; not getting
		// them means the build is broken, which no configuration can fix.
		panic(err)
	}
	return &Config{
		TimeoutConfig: exporterhelper.NewDefaultTimeoutConfig(),
		QueueConfig:   configoptional.Some(exporterhelper.NewDefaultQueueConfig()),
		BackOffConfig: configretry.NewDefaultBackOffConfig(),
		CoreConfig:    core,
	}
}

// Each signal exporter gets a coreExporter of its own, wrapped by exporterhelper with the same
// options; the coreExporters of one configuration share its core (see shared.go).

func createTraces(ctx context.Context, set exporter.Settings, cfg component.Config) (exporter.Traces, error) {
	exp, options, err := newSignalExporter(cfg, set)
	if err != nil {
		return nil, err
	}
	return exporterhelper.NewTraces(ctx, set, cfg, exp.pushTraces, options...)
}

func createLogs(ctx context.Context, set exporter.Settings, cfg component.Config) (exporter.Logs, error) {
	exp, options, err := newSignalExporter(cfg, set)
	if err != nil {
		return nil, err
	}
	return exporterhelper.NewLogs(ctx, set, cfg, exp.pushLogs, options...)
}

func createMetrics(ctx context.Context, set exporter.Settings, cfg component.Config) (exporter.Metrics, error) {
	exp, options, err := newSignalExporter(cfg, set)
	if err != nil {
		return nil, err
	}
	return exporterhelper.NewMetrics(ctx, set, cfg, exp.pushMetrics, options...)
}

// newSignalExporter is the core exporter of one signal exporter and the exporterhelper options that
// run it: timeout, queue and retries from the configuration, the shared core's acquisition and release.
func newSignalExporter(cfg component.Config, set exporter.Settings) (*coreExporter, []exporterhelper.Option, error) {
	c := cfg.(*Config)
	exp, err := newCoreExporter(c, set)
	if err != nil {
		return nil, nil, err
	}
	return exp, []exporterhelper.Option{
		exporterhelper.WithTimeout(c.TimeoutConfig),
		exporterhelper.WithRetry(c.BackOffConfig),
		exporterhelper.WithQueue(c.QueueConfig),
		exporterhelper.WithStart(exp.start),
		exporterhelper.WithShutdown(exp.shutdown),
		exporterhelper.WithCapabilities(consumer.Capabilities{MutatesData: false}),
	}, nil
}
