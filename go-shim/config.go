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

// Config is the otelstore exporter's section of the collector configuration.
type Config struct {
	TimeoutConfig exporterhelper.TimeoutConfig                             `mapstructure:",squash"`
	QueueConfig   configoptional.Optional[exporterhelper.QueueBatchConfig] `mapstructure:"sending_queue"`
	BackOffConfig configretry.BackOffConfig                                `mapstructure:"retry_on_failure"`
	Postgres      PostgresConfig                                           `mapstructure:"postgres"`
}

// PostgresConfig mirrors the Rust core's PostgresConfig, which owns the defaults and the validation
// rules; Go only carries the values across.
type PostgresConfig struct {
	// DSN is a libpq-style connection string. It usually holds a password, so it is redacted
	// wherever the collector prints its configuration.
	DSN            configopaque.String `mapstructure:"dsn" json:"dsn"`
	Schema         string              `mapstructure:"schema" json:"schema"`
	CreateSchema   bool                `mapstructure:"create_schema" json:"create_schema"`
	PoolSize       int                 `mapstructure:"pool_size" json:"pool_size"`
	ConnectTimeout Duration            `mapstructure:"connect_timeout" json:"connect_timeout"`
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

// coreConfig is the JSON document the Rust core parses. configopaque.String marshals as
// "[REDACTED]", so the DSN is shadowed by a plain string: the core must see the real value.
type coreConfig struct {
	Postgres corePostgresConfig `json:"postgres"`
}

type corePostgresConfig struct {
	PostgresConfig
	DSN string `json:"dsn"`
}

func (cfg *Config) coreJSON() ([]byte, error) {
	return json.Marshal(coreConfig{Postgres: corePostgresConfig{PostgresConfig: cfg.Postgres, DSN: string(cfg.Postgres.DSN)}})
}

// defaultPostgresConfig asks the core for its defaults, so they are written down only once.
func defaultPostgresConfig() (PostgresConfig, error) {
	defaults, err := coreDefaults()
	if err != nil {
		return PostgresConfig{}, err
	}
	var parsed coreConfig
	if err := json.Unmarshal(defaults, &parsed); err != nil {
		return PostgresConfig{}, fmt.Errorf("otelstore core returned default configuration that does not decode: %w", err)
	}
	postgres := parsed.Postgres.PostgresConfig
	postgres.DSN = configopaque.String(parsed.Postgres.DSN)
	return postgres, nil
}

// Validate checks the postgres section with the core's own rules; the exporterhelper sections
// validate themselves.
func (cfg *Config) Validate() error {
	configJSON, err := cfg.coreJSON()
	if err != nil {
		return err
	}
	return coreValidate(configJSON)
}
