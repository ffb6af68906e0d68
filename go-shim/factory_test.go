package otelstoreexporter

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumererror"
)

func TestFactoryTypeAndStability(t *testing.T) {
	factory := NewFactory()
	assert.Equal(t, "otelstore", factory.Type().String())
	assert.Equal(t, component.StabilityLevelAlpha, factory.TracesStability())
	assert.Equal(t, component.StabilityLevelAlpha, factory.LogsStability())
	assert.Equal(t, component.StabilityLevelAlpha, factory.MetricsStability())
}

func TestDefaultConfigComesFromTheCore(t *testing.T) {
	cfg := NewFactory().CreateDefaultConfig().(*Config)
	require.NoError(t, componenttest.CheckConfigStruct(cfg))

	// These are the Rust core's defaults (rust/core/src/config.rs); Go writes none of them itself.
	assert.Equal(t, defaultCore(""), cfg.CoreConfig)

	assert.Equal(t, 5*time.Second, cfg.TimeoutConfig.Timeout)
	assert.True(t, cfg.QueueConfig.HasValue(), "the sending queue is on by default")
	assert.True(t, cfg.BackOffConfig.Enabled, "retries are on by default")
}

func TestCreateEverySignalExporter(t *testing.T) {
	for _, sig := range allSignals {
		t.Run(sig.String(), func(t *testing.T) {
			exp, _ := signalExporter(t, sig, synchronousConfig(func(*Config) {}))
			assert.False(t, exp.(interface{ Capabilities() consumer.Capabilities }).Capabilities().MutatesData)
		})
	}
}

// Each signal exporter owns a core of its own, as upstream database exporters own a client each:
// shutting one down leaves the others of the same configuration exporting.
func TestShuttingOneSignalExporterDownLeavesTheOthers(t *testing.T) {
	cfg := synchronousConfig(func(*Config) {})
	exporters := make(map[signal]component.Component, len(allSignals))
	sends := make(map[signal]func(context.Context, string) error, len(allSignals))
	for _, sig := range allSignals {
		exporters[sig], sends[sig] = signalExporter(t, sig, cfg)
		require.NoError(t, exporters[sig].Start(context.Background(), componenttest.NewNopHost()))
		if sig != signalTraces {
			t.Cleanup(func() { assert.NoError(t, exporters[sig].Shutdown(context.Background())) })
		}
	}
	require.NoError(t, exporters[signalTraces].Shutdown(context.Background()))

	for _, sig := range []signal{signalLogs, signalMetrics} {
		// A core that was shut down would refuse the request as misuse (permanent); this one tries
		// the unreachable database (retryable).
		err := sends[sig](context.Background(), "otelstore-test")
		require.Error(t, err, sig)
		assert.False(t, consumererror.IsPermanent(err), "%s: %v", sig, err)
	}
}
