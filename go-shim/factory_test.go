package otelstoreexporter

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/exporter/exportertest"
	"go.opentelemetry.io/collector/pipeline"
)

func TestFactoryTypeAndStability(t *testing.T) {
	factory := NewFactory()
	assert.Equal(t, "otelstore", factory.Type().String())
	assert.Equal(t, component.StabilityLevelAlpha, factory.TracesStability())
	assert.Equal(t, component.StabilityLevelUndefined, factory.LogsStability())
	assert.Equal(t, component.StabilityLevelUndefined, factory.MetricsStability())

	settings := exportertest.NewNopSettings(factory.Type())
	_, err := factory.CreateLogs(context.Background(), settings, factory.CreateDefaultConfig())
	require.ErrorIs(t, err, pipeline.ErrSignalNotSupported)
	_, err = factory.CreateMetrics(context.Background(), settings, factory.CreateDefaultConfig())
	require.ErrorIs(t, err, pipeline.ErrSignalNotSupported)
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

func TestCreateTracesExporter(t *testing.T) {
	factory := NewFactory()
	cfg := factory.CreateDefaultConfig().(*Config)
	cfg.Postgres.DSN = "postgres://u@127.0.0.1:1/db"

	exp, err := factory.CreateTraces(context.Background(), exportertest.NewNopSettings(factory.Type()), cfg)
	require.NoError(t, err)
	assert.False(t, exp.Capabilities().MutatesData)
}
