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
	"go.opentelemetry.io/collector/config/configopaque"
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

// defaultCore is the core's defaults (rust/core/src/config.rs) with a DSN: Go writes none of them.
func defaultCore(dsn configopaque.String) CoreConfig {
	return CoreConfig{
		Acknowledge:    "committed",
		MemoryLimitMiB: 256,
		MaxBatchRows:   20000,
		WriteTimeout:   Duration(30 * time.Second),
		Retention: Retention{
			Raw:      Duration(720 * time.Hour),
			Rollup5m: Duration(2160 * time.Hour),
			Rollup1h: Duration(8760 * time.Hour),
		},
		Postgres: PostgresConfig{
			DSN:                 dsn,
			Schema:              "otel",
			CreateSchema:        true,
			PoolSize:            4,
			ConnectTimeout:      Duration(10 * time.Second),
			CAFile:              "",
			MaintenanceInterval: Duration(time.Minute),
		},
		ClickHouse: defaultClickHouse(),
	}
}

func defaultClickHouse() ClickHouseConfig {
	return ClickHouseConfig{
		Database:        "otel",
		Username:        "default",
		Compression:     "lz4",
		CreateSchema:    true,
		ParallelInserts: 4,
	}
}

func TestLoadConfig(t *testing.T) {
	cfg, err := loadConfig(t, "")
	require.NoError(t, err)
	require.NoError(t, xconfmap.Validate(cfg))
	assert.Equal(t, defaultCore(testDSN), cfg.CoreConfig)

	cfg, err = loadConfig(t, "custom")
	require.NoError(t, err)
	require.NoError(t, xconfmap.Validate(cfg))
	assert.Equal(t, CoreConfig{
		Acknowledge:    "accepted",
		MemoryLimitMiB: 64,
		MaxBatchRows:   1000,
		WriteTimeout:   Duration(45 * time.Second),
		Retention: Retention{
			Raw:      Duration(168 * time.Hour),
			Rollup5m: Duration(720 * time.Hour),
			Rollup1h: Duration(17520 * time.Hour),
		},
		Postgres: PostgresConfig{
			DSN:                 "postgres://otel:secret@db.example:5432/otel?sslmode=require",
			Schema:              "telemetry",
			CreateSchema:        false,
			PoolSize:            16,
			ConnectTimeout:      Duration(90 * time.Second),
			CAFile:              "testdata/ca.pem",
			MaintenanceInterval: Duration(5 * time.Minute),
		},
		ClickHouse: defaultClickHouse(),
	}, cfg.CoreConfig)
	assert.Equal(t, 7*time.Second, cfg.TimeoutConfig.Timeout)
	require.True(t, cfg.QueueConfig.HasValue())
	assert.Equal(t, int64(50), cfg.QueueConfig.Get().QueueSize)
	assert.False(t, cfg.BackOffConfig.Enabled)
}

func TestLoadConfigErrorsNameTheField(t *testing.T) {
	_, err := loadConfig(t, "bad_duration")
	require.ErrorContains(t, err, "connect_timeout")
	require.ErrorContains(t, err, `invalid duration "ten seconds"`)

	_, err = loadConfig(t, "bad_write_timeout")
	require.ErrorContains(t, err, "write_timeout")
	require.ErrorContains(t, err, `invalid duration "half a minute"`)

	_, err = loadConfig(t, "bad_retention")
	require.ErrorContains(t, err, "retention")
	require.ErrorContains(t, err, "raw")
	require.ErrorContains(t, err, `invalid duration "a month"`)

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
	assert.Equal(t, "45s", conf.Get("write_timeout"))
	assert.Equal(t, "accepted", conf.Get("acknowledge"))
	assert.Equal(t, "testdata/ca.pem", conf.Get("postgres::ca_file"))
	assert.Equal(t, "5m0s", conf.Get("postgres::maintenance_interval"))
	assert.Equal(t, "168h0m0s", conf.Get("retention::raw"))
	assert.Equal(t, "720h0m0s", conf.Get("retention::rollup_5m"))
	assert.Equal(t, "17520h0m0s", conf.Get("retention::rollup_1h"))

	// What the collector prints can be read back, apart from the redacted secrets.
	again := NewFactory().CreateDefaultConfig().(*Config)
	require.NoError(t, conf.Unmarshal(again))
	again.Postgres.DSN = cfg.Postgres.DSN
	again.ClickHouse.Password = cfg.ClickHouse.Password
	assert.Equal(t, cfg.CoreConfig, again.CoreConfig)
}

func TestCoreJSONCarriesExactlyTheCoreKeys(t *testing.T) {
	cfg, err := loadConfig(t, "custom")
	require.NoError(t, err)

	configJSON, err := cfg.coreJSON()
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, json.Unmarshal(configJSON, &doc))
	assert.Equal(t, map[string]any{
		"acknowledge":      "accepted",
		"memory_limit_mib": float64(64),
		"max_batch_rows":   float64(1000),
		"write_timeout":    "45s",
		"retention": map[string]any{
			"raw":       "168h0m0s",
			"rollup_5m": "720h0m0s",
			"rollup_1h": "17520h0m0s",
		},
		"postgres": map[string]any{
			"dsn":                  "postgres://otel:secret@db.example:5432/otel?sslmode=require",
			"schema":               "telemetry",
			"create_schema":        false,
			"pool_size":            float64(16),
			"connect_timeout":      "1m30s",
			"ca_file":              "testdata/ca.pem",
			"maintenance_interval": "5m0s",
		},
		"clickhouse": map[string]any{
			"endpoint":         "",
			"database":         "otel",
			"username":         "default",
			"password":         "",
			"compression":      "lz4",
			"create_schema":    true,
			"parallel_inserts": float64(4),
			"cluster_name":     "",
			"table_engine":     nil,
			"ca_file":          "",
		},
	}, doc)
}

func TestLoadClickHouseConfig(t *testing.T) {
	cfg, err := loadConfig(t, "clickhouse")
	require.NoError(t, err)
	require.NoError(t, xconfmap.Validate(cfg))
	engine := "ReplicatedMergeTree"
	assert.Equal(t, ClickHouseConfig{
		Endpoint:        "https://ch.example:8443",
		Database:        "telemetry",
		Username:        "writer",
		Password:        "hunter2",
		Compression:     "none",
		CreateSchema:    false,
		ParallelInserts: 8,
		ClusterName:     "main",
		TableEngine:     &engine,
		CAFile:          "testdata/ca.pem",
	}, cfg.ClickHouse)
	assert.Empty(t, cfg.Postgres.DSN)

	// The collector prints the password redacted; the core gets the real one.
	conf := confmap.New()
	require.NoError(t, conf.Marshal(cfg))
	assert.Equal(t, "[REDACTED]", fmt.Sprint(conf.Get("clickhouse::password")))
	configJSON, err := cfg.coreJSON()
	require.NoError(t, err)
	assert.Contains(t, string(configJSON), `"password":"hunter2"`)
}

// Go must mirror every key of the core: one the core added and Go lacks would silently keep its
// default, whatever the user wrote. The core writes durations its own way ("1m" where Go writes
// "1m0s"), so only the keys are compared here; TestDefaultConfigComesFromTheCore compares the values.
func TestGoMirrorsEveryCoreKey(t *testing.T) {
	defaults, err := coreDefaults()
	require.NoError(t, err)
	configJSON, err := NewFactory().CreateDefaultConfig().(*Config).coreJSON()
	require.NoError(t, err)
	assert.ElementsMatch(t, keyPaths(t, defaults), keyPaths(t, configJSON))
}

// keyPaths are the leaves of a JSON object as dotted paths ("postgres.dsn").
func keyPaths(t *testing.T, document []byte) []string {
	t.Helper()
	var object map[string]any
	require.NoError(t, json.Unmarshal(document, &object))
	var paths []string
	var walk func(prefix string, object map[string]any)
	walk = func(prefix string, object map[string]any) {
		for key, value := range object {
			if inner, ok := value.(map[string]any); ok {
				walk(prefix+key+".", inner)
			} else {
				paths = append(paths, prefix+key)
			}
		}
	}
	walk("", object)
	return paths
}

func TestValidate(t *testing.T) {
	// want is part of the core's message: enough to show the field and value are named, without
	// tying these tests to the core's wording around them.
	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{name: "defaults with a dsn", modify: func(*Config) {}},
		{
			name:   "pool size zero",
			modify: func(c *Config) { c.Postgres.PoolSize = 0 },
			want:   "postgres.pool_size: must be between 1 and 64, got 0",
		},
		{
			name:   "negative pool size",
			modify: func(c *Config) { c.Postgres.PoolSize = -1 },
			want:   "postgres.pool_size: invalid value: integer `-1`",
		},
		{
			name:   "schema that is not a plain name",
			modify: func(c *Config) { c.Postgres.Schema = "bad;name" },
			want:   `postgres.schema: must be a plain SQL name matching [A-Za-z_][A-Za-z0-9_]{0,62}, got "bad;name"`,
		},
		{
			name:   "no backend",
			modify: func(c *Config) { c.Postgres.DSN = "" },
			want:   "postgres.dsn: must be set (for example postgres://user@127.0.0.1:5432/db), or clickhouse.endpoint instead",
		},
		{
			name:   "zero connect timeout",
			modify: func(c *Config) { c.Postgres.ConnectTimeout = 0 },
			want:   "postgres.connect_timeout: must be more than 0s and at most 10m, got 0s",
		},
		{
			name:   "negative connect timeout",
			modify: func(c *Config) { c.Postgres.ConnectTimeout = Duration(-time.Second) },
			want:   `postgres.connect_timeout: invalid duration "-1s"`,
		},
		{
			name:   "a ca_file that does not exist",
			modify: func(c *Config) { c.Postgres.CAFile = "/nonexistent/ca.pem" },
			want:   `postgres.ca_file: cannot read "/nonexistent/ca.pem": No such file or directory`,
		},
		{
			name:   "a ca_file without a certificate",
			modify: func(c *Config) { c.Postgres.CAFile = "testdata/config.yaml" },
			want:   `postgres.ca_file: "testdata/config.yaml" holds no PEM certificate`,
		},
		{name: "a ca_file with a certificate", modify: func(c *Config) { c.Postgres.CAFile = "testdata/ca.pem" }},
		{name: "acknowledge accepted", modify: func(c *Config) { c.Acknowledge = "accepted" }},
		{
			name:   "unknown acknowledge",
			modify: func(c *Config) { c.Acknowledge = "maybe" },
			want:   "acknowledge: unknown variant `maybe`, expected `committed` or `accepted`",
		},
		{
			name:   "memory limit too small",
			modify: func(c *Config) { c.MemoryLimitMiB = 4 },
			want:   "memory_limit_mib: must be between 8 and 1048576, got 4",
		},
		{
			name:   "negative memory limit",
			modify: func(c *Config) { c.MemoryLimitMiB = -1 },
			want:   "memory_limit_mib: invalid value: integer `-1`",
		},
		{
			name:   "zero max batch rows",
			modify: func(c *Config) { c.MaxBatchRows = 0 },
			want:   "max_batch_rows: must be between 1 and 1000000, got 0",
		},
		{
			name:   "too many max batch rows",
			modify: func(c *Config) { c.MaxBatchRows = 1000001 },
			want:   "max_batch_rows: must be between 1 and 1000000, got 1000001",
		},
		{
			name:   "zero write timeout",
			modify: func(c *Config) { c.WriteTimeout = 0 },
			want:   "write_timeout: must be more than 0s and at most 10m, got 0s",
		},
		{
			name:   "write timeout above 10m",
			modify: func(c *Config) { c.WriteTimeout = Duration(11 * time.Minute) },
			want:   "write_timeout: must be more than 0s and at most 10m, got 11m",
		},
		{
			name:   "raw retention under a day",
			modify: func(c *Config) { c.Retention.Raw = Duration(12 * time.Hour) },
			want:   "retention.raw: must be between 24h and 87840h (about 10 years), got 12h",
		},
		{
			name:   "negative raw retention",
			modify: func(c *Config) { c.Retention.Raw = Duration(-24 * time.Hour) },
			want:   `retention.raw: invalid duration "-24h0m0s"`,
		},
		{
			name:   "maintenance interval over an hour",
			modify: func(c *Config) { c.Postgres.MaintenanceInterval = Duration(2 * time.Hour) },
			want:   "postgres.maintenance_interval: must be between 1s and 1h, got 2h",
		},
		{
			name:   "both backends",
			modify: func(c *Config) { c.ClickHouse.Endpoint = "http://127.0.0.1:8123" },
			want:   "clickhouse.endpoint: is set together with postgres.dsn",
		},
		{
			name:   "clickhouse alone",
			modify: func(c *Config) { c.Postgres.DSN = ""; c.ClickHouse.Endpoint = "http://127.0.0.1:8123" },
		},
		{
			name:   "a clickhouse endpoint that is not a URL",
			modify: func(c *Config) { c.Postgres.DSN = ""; c.ClickHouse.Endpoint = "127.0.0.1:9000" },
			want:   `clickhouse.endpoint: must be an http:// or https:// URL of ClickHouse's HTTP interface (such as http://localhost:8123), got "127.0.0.1:9000"`,
		},
		{
			name: "an unknown table engine",
			modify: func(c *Config) {
				engine := "Log"
				c.Postgres.DSN = ""
				c.ClickHouse.Endpoint = "http://127.0.0.1:8123"
				c.ClickHouse.TableEngine = &engine
			},
			want: "clickhouse.table_engine: unknown variant `Log`",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := NewFactory().CreateDefaultConfig().(*Config)
			cfg.Postgres.DSN = testDSN
			tt.modify(cfg)
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
