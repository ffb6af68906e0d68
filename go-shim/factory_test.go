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

// The signal exporters of one configuration share its core: shutting one down leaves the others
// exporting.
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

// sharedCoreOf is the core the signal exporters of cfg share: its handle and how many of them use
// it; ok is false when none does.
func sharedCoreOf(cfg *Config) (handle uint64, users int, ok bool) {
	sharedCores.mu.Lock()
	defer sharedCores.mu.Unlock()
	core, ok := sharedCores.cores[cfg]
	if !ok {
		return 0, 0, false
	}
	return core.handle, core.users, true
}

// The three signal exporters of one configuration use one core, created by the first Start and
// shut down by the last Shutdown; another configuration, even an equal one, has a core of its own.
func TestSignalExportersOfOneConfigurationShareOneCore(t *testing.T) {
	ctx, cfg := context.Background(), synchronousConfig(func(*Config) {})
	exporters := make([]component.Component, len(allSignals))
	for i, sig := range allSignals {
		exporters[i], _ = signalExporter(t, sig, cfg)
	}
	_, _, ok := sharedCoreOf(cfg)
	require.False(t, ok, "creating the exporters creates no core")

	var handle uint64
	for i, exp := range exporters {
		require.NoError(t, exp.Start(ctx, componenttest.NewNopHost()))
		h, users, ok := sharedCoreOf(cfg)
		require.True(t, ok)
		assert.Equal(t, i+1, users)
		if i == 0 {
			handle = h
		}
		assert.Equal(t, handle, h, "%s: one core per configuration", allSignals[i])
	}

	other := synchronousConfig(func(*Config) {})
	otherExp, _ := signalExporter(t, signalTraces, other)
	require.NoError(t, otherExp.Start(ctx, componenttest.NewNopHost()))
	t.Cleanup(func() { assert.NoError(t, otherExp.Shutdown(ctx)) })
	otherHandle, _, _ := sharedCoreOf(other)
	assert.NotEqual(t, handle, otherHandle)

	for i, exp := range exporters {
		require.NoError(t, exp.Shutdown(ctx))
		if left := len(exporters) - 1 - i; left > 0 {
			_, users, ok := sharedCoreOf(cfg)
			require.True(t, ok)
			assert.Equal(t, left, users)
			_, err := coreDrain(handle)
			require.NoError(t, err, "the core serves the exporters left")
		}
	}
	_, _, ok = sharedCoreOf(cfg)
	assert.False(t, ok, "the last Shutdown forgets the core")
	var core *coreError
	require.ErrorAs(t, coreFree(handle), &core, "the last Shutdown should have freed the core")
	assert.Equal(t, statusInvalidArgument, core.status)

	// Started again, as after a configuration reload, the configuration gets a fresh core.
	again, _ := signalExporter(t, signalLogs, cfg)
	require.NoError(t, again.Start(ctx, componenttest.NewNopHost()))
	t.Cleanup(func() { assert.NoError(t, again.Shutdown(ctx)) })
	fresh, users, ok := sharedCoreOf(cfg)
	require.True(t, ok)
	assert.Equal(t, 1, users)
	assert.NotEqual(t, handle, fresh)
}
