package otelstoreexporter

import (
	"encoding/json"
	"fmt"
	"time"

	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/config/configretry"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
)

// Config is the otelstore exporter's section of the collector configuration: exporterhelper's
// sections, which the collector handles, and the core's keys, which are sent to the Rust core.
type Config struct {
	TimeoutConfig exporterhelper.TimeoutConfig                             `mapstructure:",squash"`
	QueueConfig   configoptional.Optional[exporterhelper.QueueBatchConfig] `mapstructure:"sending_queue"`
	BackOffConfig configretry.BackOffConfig                                `mapstructure:"retry_on_failure"`
	CoreConfig    `mapstructure:",squash"`
}

// CoreConfig mirrors the Rust core's Config (rust/core/src/config.rs), which owns the defaults and
// the validation rules; Go only carries the values across.
type CoreConfig struct {
	// Acknowledge is when an export call reports success: "committed" or "accepted".
	Acknowledge    string    `mapstructure:"acknowledge" json:"acknowledge"`
	MemoryLimitMiB int       `mapstructure:"memory_limit_mib" json:"memory_limit_mib"`
	MaxBatchRows   int       `mapstructure:"max_batch_rows" json:"max_batch_rows"`
	WriteTimeout   Duration  `mapstructure:"write_timeout" json:"write_timeout"`
	Retention      Retention `mapstructure:"retention" json:"retention"`
	// Postgres and ClickHouse are the backends: exactly one is configured.
	Postgres   PostgresConfig   `mapstructure:"postgres" json:"postgres"`
	ClickHouse ClickHouseConfig `mapstructure:"clickhouse" json:"clickhouse"`
}

// Retention mirrors the Rust core's Retention: how long each kind of data is kept.
type Retention struct {
	// Raw is for spans, logs and metric points as received.
	Raw      Duration `mapstructure:"raw" json:"raw"`
	Rollup5m Duration `mapstructure:"rollup_5m" json:"rollup_5m"`
	Rollup1h Duration `mapstructure:"rollup_1h" json:"rollup_1h"`
}

// PostgresConfig mirrors the Rust core's PostgresConfig.
type PostgresConfig struct {
	// DSN is a libpq-style connection string. It usually holds a password, so it is redacted
	// wherever the collector prints its configuration.
	DSN                 configopaque.String `mapstructure:"dsn" json:"dsn"`
	Schema              string              `mapstructure:"schema" json:"schema"`
	CreateSchema        bool                `mapstructure:"create_schema" json:"create_schema"`
	PoolSize            int                 `mapstructure:"pool_size" json:"pool_size"`
	ConnectTimeout      Duration            `mapstructure:"connect_timeout" json:"connect_timeout"`
	CAFile              string              `mapstructure:"ca_file" json:"ca_file"`
	MaintenanceInterval Duration            `mapstructure:"maintenance_interval" json:"maintenance_interval"`
}

// ClickHouseConfig mirrors the Rust core's ClickHouseConfig.
type ClickHouseConfig struct {
	Endpoint string `mapstructure:"endpoint" json:"endpoint"`
	Database string `mapstructure:"database" json:"database"`
	Username string `mapstructure:"username" json:"username"`
	// Password is redacted wherever the collector prints its configuration.
	Password        configopaque.String `mapstructure:"password" json:"password"`
	Compression     string              `mapstructure:"compression" json:"compression"`
	CreateSchema    bool                `mapstructure:"create_schema" json:"create_schema"`
	ParallelInserts int                 `mapstructure:"parallel_inserts" json:"parallel_inserts"`
	ClusterName     string              `mapstructure:"cluster_name" json:"cluster_name"`
	// TableEngine is "MergeTree" or "ReplicatedMergeTree"; empty lets the core choose by cluster_name.
	TableEngine *string `mapstructure:"table_engine" json:"table_engine"`
	CAFile      string  `mapstructure:"ca_file" json:"ca_file"`
}

// Duration is a time.Duration written as a Go duration string ("10s", "1m30s", "500ms") both in the
// collector's YAML and in the core's JSON, so one value reads the same on both sides.
type Duration time.Duration

func (d Duration) MarshalText() ([]byte, error) {
	return []byte(time.Duration(d).String()), nil
}

func (d *Duration) UnmarshalText(text []byte) error {
	parsed, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf("invalid duration %q (use a Go duration such as \"10s\", \"1m30s\", \"500ms\")", text)
	}
	*d = Duration(parsed)
	return nil
}

// coreDocument is the JSON document the Rust core parses. configopaque.String marshals as
// "[REDACTED]", so the DSN and the password are shadowed by plain strings: the core must see the
// real values. (encoding/json prefers the shallower field, so the fields here win over the
// embedded ones.)
type coreDocument struct {
	CoreConfig
	Postgres   corePostgresConfig   `json:"postgres"`
	ClickHouse coreClickHouseConfig `json:"clickhouse"`
}

type corePostgresConfig struct {
	PostgresConfig
	DSN string `json:"dsn"`
}

type coreClickHouseConfig struct {
	ClickHouseConfig
	Password string `json:"password"`
}

func (cfg *Config) coreJSON() ([]byte, error) {
	return json.Marshal(coreDocument{
		CoreConfig: cfg.CoreConfig,
		Postgres:   corePostgresConfig{PostgresConfig: cfg.Postgres, DSN: string(cfg.Postgres.DSN)},
		ClickHouse: coreClickHouseConfig{ClickHouseConfig: cfg.ClickHouse, Password: string(cfg.ClickHouse.Password)},
	})
}

// defaultCoreConfig asks the core for its defaults, so they are written down only once.
func defaultCoreConfig() (CoreConfig, error) {
	defaults, err := coreDefaults()
	if err != nil {
		return CoreConfig{}, err
	}
	var parsed coreDocument
	if err := json.Unmarshal(defaults, &parsed); err != nil {
		return CoreConfig{}, fmt.Errorf("otelstore core returned default configuration that does not decode: %w", err)
	}
	core := parsed.CoreConfig
	core.Postgres = parsed.Postgres.PostgresConfig
	core.Postgres.DSN = configopaque.String(parsed.Postgres.DSN)
	core.ClickHouse = parsed.ClickHouse.ClickHouseConfig
	core.ClickHouse.Password = configopaque.String(parsed.ClickHouse.Password)
	return core, nil
}

// Validate checks the core's keys with the core's own rules; the exporterhelper sections validate
// themselves.
func (cfg *Config) Validate() error {
	configJSON, err := cfg.coreJSON()
	if err != nil {
		return err
	}
	return coreValidate(configJSON)
}
