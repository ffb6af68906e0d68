package otelstoreexporter

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"
	"go.opentelemetry.io/collector/confmap/xconfmap"
)

const testDSN = "postgres://otel:secret@127.0.0.1:5432/otel"

func loadConfig(t *testing.T, name string) (*Config, error) {
	t.Helper()
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config.yaml"))
	require.NoError(t, err)
	sub, err := cm.Sub(component.NewIDWithName(componentType, name).String())
	require.NoError(t, err)
	cfg := NewFactory().CreateDefaultConfig().(*Config)
	return cfg, sub.Unmarshal(cfg)
}

func TestLoadConfig(t *testing.T) {
	cfg, err := loadConfig(t, "")
	require.NoError(t, err)
	require.NoError(t, xconfmap.Validate(cfg))
	assert.Equal(t, PostgresConfig{
		DSN:            testDSN,
		Schema:         "otel",
		CreateSchema:   true,
		PoolSize:       4,
		ConnectTimeout: Duration(10 * time.Second),
	}, cfg.Postgres)

	cfg, err = loadConfig(t, "custom")
	require.NoError(t, err)
	require.NoError(t, xconfmap.Validate(cfg))
	assert.Equal(t, PostgresConfig{
		DSN:            "postgres://otel:secret@db.example:5432/otel?sslmode=disable",
		Schema:         "telemetry",
		CreateSchema:   false,
		PoolSize:       16,
		ConnectTimeout: Duration(90 * time.Second),
	}, cfg.Postgres)
	assert.Equal(t, 7*time.Second, cfg.TimeoutConfig.Timeout)
	require.True(t, cfg.QueueConfig.HasValue())
	assert.Equal(t, int64(50), cfg.QueueConfig.Get().QueueSize)
	assert.False(t, cfg.BackOffConfig.Enabled)
}

func TestLoadConfigErrorsNameTheField(t *testing.T) {
	_, err := loadConfig(t, "bad_duration")
	require.ErrorContains(t, err, "connect_timeout")
	require.ErrorContains(t, err, `invalid duration "ten seconds"`)

	_, err = loadConfig(t, "unknown_key")
	require.ErrorContains(t, err, "poolsize")
}

func TestMarshalRedactsDSNAndWritesGoDurations(t *testing.T) {
	cfg, err := loadConfig(t, "custom")
	require.NoError(t, err)

	conf := confmap.New()
	require.NoError(t, conf.Marshal(cfg))
	assert.Equal(t, "[REDACTED]", fmt.Sprint(conf.Get("postgres::dsn")))
	assert.Equal(t, "1m30s", conf.Get("postgres::connect_timeout"))

	// What the collector prints can be read back, apart from the redacted secret.
	again := NewFactory().CreateDefaultConfig().(*Config)
	require.NoError(t, conf.Unmarshal(again))
	again.Postgres.DSN = cfg.Postgres.DSN
	assert.Equal(t, cfg.Postgres, again.Postgres)
}

func TestCoreJSONCarriesExactlyTheCoreKeys(t *testing.T) {
	cfg := NewFactory().CreateDefaultConfig().(*Config)
	cfg.Postgres.DSN = testDSN
	cfg.Postgres.ConnectTimeout = Duration(1500 * time.Millisecond)

	configJSON, err := cfg.coreJSON()
	require.NoError(t, err)
	var doc map[string]map[string]any
	require.NoError(t, json.Unmarshal(configJSON, &doc))
	assert.Equal(t, map[string]map[string]any{"postgres": {
		"dsn":             testDSN,
		"schema":          "otel",
		"create_schema":   true,
		"pool_size":       float64(4),
		"connect_timeout": "1.5s",
	}}, doc)
}

func TestValidate(t *testing.T) {
	// want is part of the core's message: enough to show the field and value are named, without
	// tying these tests to the core's wording around them.
	tests := []struct {
		name   string
		modify func(*PostgresConfig)
		want   string
	}{
		{name: "defaults with a dsn", modify: func(*PostgresConfig) {}},
		{
			name:   "pool size zero",
			modify: func(p *PostgresConfig) { p.PoolSize = 0 },
			want:   "postgres.pool_size: must be between 1 and 64, got 0",
		},
		{
			name:   "negative pool size",
			modify: func(p *PostgresConfig) { p.PoolSize = -1 },
			want:   "postgres.pool_size: invalid value: integer `-1`",
		},
		{
			name:   "schema that is not a plain name",
			modify: func(p *PostgresConfig) { p.Schema = "bad;name" },
			want:   `postgres.schema: must be a plain SQL name matching [A-Za-z_][A-Za-z0-9_]{0,62}, got "bad;name"`,
		},
		{
			name:   "empty dsn",
			modify: func(p *PostgresConfig) { p.DSN = "" },
			want:   "postgres.dsn: must be set",
		},
		{
			name:   "zero connect timeout",
			modify: func(p *PostgresConfig) { p.ConnectTimeout = 0 },
			want:   "postgres.connect_timeout: must be more than 0s and at most 10m, got 0s",
		},
		{
			name:   "negative connect timeout",
			modify: func(p *PostgresConfig) { p.ConnectTimeout = Duration(-time.Second) },
			want:   `postgres.connect_timeout: invalid duration "-1s"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := NewFactory().CreateDefaultConfig().(*Config)
			cfg.Postgres.DSN = testDSN
			tt.modify(&cfg.Postgres)
			err := cfg.Validate()
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.want)
			// The collector validates every component through xconfmap; the message must survive it.
			require.ErrorContains(t, xconfmap.Validate(cfg), tt.want)
		})
	}
}

func TestValidateKeepsThePasswordOutOfErrors(t *testing.T) {
	cfg := NewFactory().CreateDefaultConfig().(*Config)
	cfg.Postgres.DSN = "postgres://otel:hunter2@127.0.0.1:notaport/db"
	err := cfg.Validate()
	require.ErrorContains(t, err, "postgres.dsn: ")
	assert.NotContains(t, err.Error(), "hunter2")
}

func TestDurationText(t *testing.T) {
	var d Duration
	require.NoError(t, d.UnmarshalText([]byte("1m30s")))
	assert.Equal(t, Duration(90*time.Second), d)
	text, err := Duration(500 * time.Millisecond).MarshalText()
	require.NoError(t, err)
	assert.Equal(t, "500ms", string(text))
	assert.EqualError(t, d.UnmarshalText([]byte("10")), `invalid duration "10" (use a Go duration such as "10s", "1m30s", "500ms")`)
}
