//! The exporter's configuration: one schema, parsed from JSON and validated here, for every front end
//! (the Go shim sends the collector's YAML section to us as JSON).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A configuration problem, with the dotted path of the offending field.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl ConfigError {
    fn new(field: &str, reason: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// When an export call reports success.
    pub acknowledge: Acknowledge,
    /// Most bytes of encoded rows the core holds (queued or being written); above it, new data is
    /// refused with a retryable error so the collector pushes back on its clients. A single request
    /// larger than the limit is still taken when nothing else is held.
    pub memory_limit_mib: usize,
    /// Export calls waiting together are merged into one COPY of at most this many rows.
    pub max_batch_rows: usize,
    /// How long one write attempt (a COPY and its commit) may take before it is abandoned and retried.
    pub write_timeout: GoDuration,
    pub retention: Retention,
    /// The backend: exactly one of `postgres.dsn` and `clickhouse.endpoint` is set.
    pub postgres: PostgresConfig,
    pub clickhouse: ClickHouseConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            acknowledge: Acknowledge::Committed,
            memory_limit_mib: 256,
            max_batch_rows: 20_000,
            write_timeout: GoDuration(Duration::from_secs(30)),
            retention: Retention::default(),
            postgres: PostgresConfig::default(),
            clickhouse: ClickHouseConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Acknowledge {
    /// Success only once the data is committed in the database: nothing acknowledged is lost.
    Committed,
    /// Success once the core holds the data (fire and forget): faster, but what is held when the
    /// process dies is lost.
    Accepted,
}

/// How long each kind of data is kept. Data lives in time partitions, and a partition is dropped as
/// a whole once everything in it is older than its retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Spans, logs and metric points as received.
    pub raw: GoDuration,
    /// Metric rollups at 5-minute resolution.
    pub rollup_5m: GoDuration,
    /// Hourly rollups: metrics, span statistics, service dependencies, error-log counts.
    pub rollup_1h: GoDuration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            raw: GoDuration(DAY * 30),
            rollup_5m: GoDuration(DAY * 90),
            rollup_1h: GoDuration(DAY * 365),
        }
    }
}

const DAY: Duration = Duration::from_secs(86_400);

impl Retention {
    fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("retention.raw", self.raw),
            ("retention.rollup_5m", self.rollup_5m),
            ("retention.rollup_1h", self.rollup_1h),
        ] {
            // Partitions are a day wide: a shorter retention could not be honoured.
            if value.0 < DAY || value.0 > DAY * 3660 {
                return Err(ConfigError::new(
                    field,
                    format!("must be between 24h and 87840h (about 10 years), got {value}"),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// libpq-style connection string: a URL (`postgres://user:pass@host:5432/db`) or `key=value` pairs.
    pub dsn: String,
    /// Schema that holds otelstore's tables.
    pub schema: String,
    /// Create the schema and tables (versioned migrations) on first write.
    pub create_schema: bool,
    /// Connections kept open, each able to run one COPY at a time.
    pub pool_size: usize,
    /// How long one connection attempt may take.
    pub connect_timeout: GoDuration,
    /// PEM file of the CA certificates that sign the server's certificate. When set, TLS connections
    /// (per the DSN's sslmode) verify the server's chain and host name; when empty, they are
    /// encrypted without verifying the server, as libpq does without a root certificate.
    pub ca_file: String,
    /// How often the exporter creates upcoming partitions, drops expired ones, and links spans whose
    /// parent arrived in another batch into service dependencies.
    pub maintenance_interval: GoDuration,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            dsn: String::new(),
            schema: "otel".to_owned(),
            create_schema: true,
            pool_size: 4,
            connect_timeout: GoDuration(Duration::from_secs(10)),
            ca_file: String::new(),
            maintenance_interval: GoDuration(Duration::from_secs(60)),
        }
    }
}

// The DSN usually carries a password: never print it.
impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("dsn", &"<redacted>")
            .field("schema", &self.schema)
            .field("create_schema", &self.create_schema)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("ca_file", &self.ca_file)
            .field("maintenance_interval", &self.maintenance_interval)
            .finish()
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// The HTTP(S) interface, such as `http://localhost:8123`; empty when PostgreSQL is the backend.
    pub endpoint: String,
    /// Database that holds the tables; created by the migrations.
    pub database: String,
    pub username: String,
    pub password: String,
    /// Compression of inserted blocks and of responses.
    pub compression: Compression,
    /// Create the database, tables and views (versioned migrations) at start.
    pub create_schema: bool,
    /// Inserts in flight per signal.
    pub parallel_inserts: usize,
    /// Run every schema statement `ON CLUSTER` this cluster; empty for a single server.
    pub cluster_name: String,
    /// The engine family of the tables; by default `ReplicatedMergeTree` with a cluster and
    /// `MergeTree` without.
    pub table_engine: Option<TableEngine>,
    /// PEM file of the CA certificates that sign an `https://` endpoint's certificate; when empty,
    /// the system's roots.
    pub ca_file: String,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            database: "otel".to_owned(),
            username: "default".to_owned(),
            password: String::new(),
            compression: Compression::Lz4,
            create_schema: true,
            parallel_inserts: 4,
            cluster_name: String::new(),
            table_engine: None,
            ca_file: String::new(),
        }
    }
}

// Never print the password.
impl fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("endpoint", &self.endpoint)
            .field("database", &self.database)
            .field("username", &self.username)
            .field(
                "password",
                &if self.password.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("compression", &self.compression)
            .field("create_schema", &self.create_schema)
            .field("parallel_inserts", &self.parallel_inserts)
            .field("cluster_name", &self.cluster_name)
            .field("table_engine", &self.table_engine)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    Lz4,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TableEngine {
    MergeTree,
    ReplicatedMergeTree,
}

impl ClickHouseConfig {
    /// The engine family the tables get.
    pub fn engine(&self) -> TableEngine {
        self.table_engine
            .unwrap_or(if self.cluster_name.is_empty() {
                TableEngine::MergeTree
            } else {
                TableEngine::ReplicatedMergeTree
            })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let endpoint = self.endpoint.trim();
        let Some(host) = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"))
        else {
            return Err(ConfigError::new(
                "clickhouse.endpoint",
                format!("must be an http:// or https:// URL of ClickHouse's HTTP interface (such as http://localhost:8123), got {endpoint:?}"),
            ));
        };
        if host.is_empty() || host.starts_with('/') || host.contains('@') {
            return Err(ConfigError::new(
                "clickhouse.endpoint",
                "must name a host, without credentials (use clickhouse.username and clickhouse.password)",
            ));
        }
        validate_identifier("clickhouse.database", &self.database)?;
        if !self.cluster_name.is_empty() {
            validate_identifier("clickhouse.cluster_name", &self.cluster_name)?;
        }
        if !(1..=MAX_POOL_SIZE).contains(&self.parallel_inserts) {
            return Err(ConfigError::new(
                "clickhouse.parallel_inserts",
                format!(
                    "must be between 1 and {MAX_POOL_SIZE}, got {}",
                    self.parallel_inserts
                ),
            ));
        }
        if !self.ca_file.is_empty() {
            crate::sink::root_certificates("clickhouse.ca_file", &self.ca_file)?;
        }
        Ok(())
    }
}

const MAX_POOL_SIZE: usize = 64;
const MIN_MEMORY_LIMIT_MIB: usize = 8;
const MAX_MEMORY_LIMIT_MIB: usize = 1 << 20;
const MAX_BATCH_ROWS: usize = 1_000_000;
const MAX_TIMEOUT: Duration = Duration::from_secs(600);

impl Config {
    /// Parses and validates a JSON configuration. Missing keys take their defaults.
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let config: Config = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "config".to_owned()
            } else {
                path
            };
            let reason = e.into_inner().to_string();
            // The position inside the generated JSON means nothing to whoever wrote the YAML.
            let reason = match reason.rfind(" at line ") {
                Some(at) => reason[..at].to_owned(),
                None => reason,
            };
            ConfigError { field, reason }
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn defaults_json() -> String {
        // Serializing plain structs of strings, numbers and bools cannot fail.
        serde_json::to_string(&Config::default()).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_MEMORY_LIMIT_MIB..=MAX_MEMORY_LIMIT_MIB).contains(&self.memory_limit_mib) {
            return Err(ConfigError::new(
                "memory_limit_mib",
                format!(
                    "must be between {MIN_MEMORY_LIMIT_MIB} and {MAX_MEMORY_LIMIT_MIB}, got {}",
                    self.memory_limit_mib
                ),
            ));
        }
        if !(1..=MAX_BATCH_ROWS).contains(&self.max_batch_rows) {
            return Err(ConfigError::new(
                "max_batch_rows",
                format!(
                    "must be between 1 and {MAX_BATCH_ROWS}, got {}",
                    self.max_batch_rows
                ),
            ));
        }
        validate_timeout("write_timeout", self.write_timeout)?;
        self.retention.validate()?;
        match (self.postgres.dsn.trim().is_empty(), self.clickhouse.endpoint.trim().is_empty()) {
            (false, true) => self.postgres.validate(),
            (true, false) => self.clickhouse.validate(),
            (true, true) => Err(ConfigError::new(
                "postgres.dsn",
                "must be set (for example postgres://user@127.0.0.1:5432/db), or clickhouse.endpoint instead",
            )),
            (false, false) => Err(ConfigError::new(
                "clickhouse.endpoint",
                "is set together with postgres.dsn; an exporter writes to one backend, so configure one exporter per backend",
            )),
        }
    }

    /// Which backend the configuration selects (once validated).
    pub fn backend(&self) -> Backend {
        if self.clickhouse.endpoint.trim().is_empty() {
            Backend::Postgres
        } else {
            Backend::ClickHouse
        }
    }

    pub fn memory_limit_bytes(&self) -> usize {
        self.memory_limit_mib << 20
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    ClickHouse,
}

impl PostgresConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        // tokio-postgres's parse errors do not echo the input, so the password stays out of the message.
        let parsed = tokio_postgres::Config::from_str(&self.dsn).map_err(|e| {
            ConfigError::new(
                "postgres.dsn",
                format!("not a valid connection string: {e}"),
            )
        })?;
        if parsed.get_hosts().is_empty() {
            return Err(ConfigError::new("postgres.dsn", "names no host"));
        }
        validate_identifier("postgres.schema", &self.schema)?;
        if !(1..=MAX_POOL_SIZE).contains(&self.pool_size) {
            return Err(ConfigError::new(
                "postgres.pool_size",
                format!(
                    "must be between 1 and {MAX_POOL_SIZE}, got {}",
                    self.pool_size
                ),
            ));
        }
        validate_timeout("postgres.connect_timeout", self.connect_timeout)?;
        if self.maintenance_interval.0 < Duration::from_secs(1)
            || self.maintenance_interval.0 > Duration::from_secs(3600)
        {
            return Err(ConfigError::new(
                "postgres.maintenance_interval",
                format!(
                    "must be between 1s and 1h, got {}",
                    self.maintenance_interval
                ),
            ));
        }
        if !self.ca_file.is_empty() {
            crate::sink::root_certificates("postgres.ca_file", &self.ca_file)?;
        }
        Ok(())
    }
}

fn validate_timeout(field: &str, timeout: GoDuration) -> Result<(), ConfigError> {
    if timeout.0.is_zero() || timeout.0 > MAX_TIMEOUT {
        return Err(ConfigError::new(
            field,
            format!("must be more than 0s and at most 10m, got {timeout}"),
        ));
    }
    Ok(())
}

/// SQL identifiers we interpolate (always double-quoted as well) must be plain names, so no
/// configuration value can change the meaning of a statement.
fn validate_identifier(field: &str, name: &str) -> Result<(), ConfigError> {
    let mut chars = name.chars();
    let plain = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63;
    if plain {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!(
                "must be a plain SQL name matching [A-Za-z_][A-Za-z0-9_]{{0,62}}, got {name:?}"
            ),
        ))
    }
}

/// A duration written the way the collector's YAML writes them ("10s", "1m30s", "250ms"), so a value
/// means the same in the collector config and in our JSON.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GoDuration(pub Duration);

impl fmt::Debug for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos > 0 && nanos.is_multiple_of(3_600_000_000_000) {
            write!(f, "{}h", nanos / 3_600_000_000_000)
        } else if nanos > 0 && nanos.is_multiple_of(60_000_000_000) {
            write!(f, "{}m", nanos / 60_000_000_000)
        } else if nanos.is_multiple_of(1_000_000_000) {
            write!(f, "{}s", nanos / 1_000_000_000)
        } else if nanos.is_multiple_of(1_000_000) {
            write!(f, "{}ms", nanos / 1_000_000)
        } else {
            write!(f, "{nanos}ns")
        }
    }
}

impl FromStr for GoDuration {
    type Err = String;

    /// Accepts Go's `time.ParseDuration` syntax without a sign: a sequence of decimal numbers, each
    /// with an optional fraction and a unit (ns, us, µs, ms, s, m, h); "0" alone is zero.
    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || {
            format!("invalid duration {text:?} (use a Go duration such as \"10s\", \"1m30s\", \"500ms\")")
        };
        if text == "0" {
            return Ok(GoDuration(Duration::ZERO));
        }
        let mut rest = text;
        let mut total_nanos: f64 = 0.0;
        if rest.is_empty() {
            return Err(invalid());
        }
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(invalid)?;
            let (number, after) = rest.split_at(number_len);
            let value: f64 = number.parse().map_err(|_| invalid())?;
            let unit_len = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let (unit, after_unit) = after.split_at(unit_len);
            let scale = match unit {
                "ns" => 1.0,
                "us" | "µs" | "μs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                _ => return Err(invalid()),
            };
            total_nanos += value * scale;
            rest = after_unit;
        }
        if !total_nanos.is_finite() || total_nanos > u64::MAX as f64 {
            return Err(invalid());
        }
        Ok(GoDuration(Duration::from_nanos(total_nanos.round() as u64)))
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_dsn(extra: &str) -> String {
        format!(r#"{{"postgres":{{"dsn":"postgres://otel:secret@127.0.0.1:5432/otel"{extra}}}}}"#)
    }

    fn error_of(json: &str) -> String {
        Config::from_json(json.as_bytes())
            .expect_err("config should be rejected")
            .to_string()
    }

    #[test]
    fn missing_keys_take_defaults() {
        let config = Config::from_json(with_dsn("").as_bytes()).expect("valid");
        assert_eq!(config.postgres.schema, "otel");
        assert!(config.postgres.create_schema);
        assert_eq!(config.postgres.pool_size, 4);
        assert_eq!(config.postgres.connect_timeout.0, Duration::from_secs(10));
        assert_eq!(config.acknowledge, Acknowledge::Committed);
        assert_eq!(config.memory_limit_bytes(), 256 << 20);
        assert_eq!(config.max_batch_rows, 20_000);
        assert_eq!(config.write_timeout.0, Duration::from_secs(30));
        assert_eq!(config.retention.raw.0, DAY * 30);
        assert_eq!(config.retention.rollup_5m.0, DAY * 90);
        assert_eq!(config.retention.rollup_1h.0, DAY * 365);
        assert_eq!(
            config.postgres.maintenance_interval.0,
            Duration::from_secs(60)
        );
    }

    #[test]
    fn defaults_json_round_trips_and_only_lacks_a_dsn() {
        let defaults = Config::defaults_json();
        let parsed: Config = serde_json::from_str(&defaults).expect("defaults parse");
        assert_eq!(parsed, Config::default());
        assert_eq!(
            error_of(&defaults),
            "postgres.dsn: must be set (for example postgres://user@127.0.0.1:5432/db), or clickhouse.endpoint instead"
        );
    }

    #[test]
    fn errors_name_the_field_and_value() {
        assert_eq!(
            error_of(&with_dsn(r#","pool_size":0"#)),
            "postgres.pool_size: must be between 1 and 64, got 0"
        );
        assert!(error_of(&with_dsn(r#","schema":"otel; DROP TABLE x""#))
            .starts_with("postgres.schema: must be a plain SQL name"));
        assert!(error_of(&with_dsn(r#","schema":"otel; DROP TABLE x""#))
            .contains(r#""otel; DROP TABLE x""#));
        assert!(error_of(&with_dsn(r#","connect_timeout":"ten""#))
            .starts_with("postgres.connect_timeout: invalid duration \"ten\""));
        assert!(error_of(&with_dsn(r#","connect_timeout":"0s""#))
            .starts_with("postgres.connect_timeout: must be more than 0s"));
        assert!(error_of(&with_dsn(r#","pool_size":"four""#))
            .starts_with("postgres.pool_size: invalid type: string"));
        let top = |extra: &str| {
            error_of(&format!(
                r#"{{{extra},"postgres":{{"dsn":"postgres://u@h/db"}}}}"#
            ))
        };
        assert_eq!(
            top(r#""memory_limit_mib":4"#),
            "memory_limit_mib: must be between 8 and 1048576, got 4"
        );
        assert_eq!(
            top(r#""max_batch_rows":0"#),
            "max_batch_rows: must be between 1 and 1000000, got 0"
        );
        assert_eq!(
            top(r#""write_timeout":"11m""#),
            "write_timeout: must be more than 0s and at most 10m, got 11m"
        );
        assert_eq!(
            top(r#""acknowledge":"maybe""#),
            "acknowledge: unknown variant `maybe`, expected `committed` or `accepted`"
        );
        assert_eq!(
            top(r#""retention":{"raw":"12h"}"#),
            "retention.raw: must be between 24h and 87840h (about 10 years), got 12h"
        );
        assert_eq!(
            error_of(&with_dsn(r#","maintenance_interval":"2h""#)),
            "postgres.maintenance_interval: must be between 1s and 1h, got 2h"
        );
        assert!(error_of(&with_dsn(r#","poolsize":4"#))
            .starts_with("postgres.poolsize: unknown field `poolsize`"));
        assert!(error_of(r#"{"postgress":{}}"#).starts_with("postgress: unknown field"));
        let message = error_of("not json");
        assert!(message.starts_with("config: expected ident"), "{message}");
    }

    #[test]
    fn exactly_one_backend_is_configured() {
        let clickhouse = |extra: &str| {
            format!(r#"{{"clickhouse":{{"endpoint":"http://127.0.0.1:8123"{extra}}}}}"#)
        };
        let config = Config::from_json(clickhouse("").as_bytes()).expect("valid");
        assert_eq!(config.backend(), Backend::ClickHouse);
        assert_eq!(config.clickhouse.engine(), TableEngine::MergeTree);
        assert_eq!(
            Config::from_json(with_dsn("").as_bytes())
                .expect("valid")
                .backend(),
            Backend::Postgres
        );
        let both =
            r#"{"postgres":{"dsn":"postgres://u@h/db"},"clickhouse":{"endpoint":"http://h:8123"}}"#;
        assert!(
            error_of(both).starts_with("clickhouse.endpoint: is set together with postgres.dsn")
        );
        let clustered =
            Config::from_json(clickhouse(r#","cluster_name":"main""#).as_bytes()).expect("valid");
        assert_eq!(
            clustered.clickhouse.engine(),
            TableEngine::ReplicatedMergeTree
        );
        let plain = Config::from_json(
            clickhouse(r#","cluster_name":"main","table_engine":"MergeTree""#).as_bytes(),
        )
        .expect("valid");
        assert_eq!(plain.clickhouse.engine(), TableEngine::MergeTree);
    }

    #[test]
    fn clickhouse_errors_name_the_field_and_value() {
        let error = |clickhouse: &str| error_of(&format!(r#"{{"clickhouse":{clickhouse}}}"#));
        assert_eq!(
            error(r#"{"endpoint":"localhost:8123"}"#),
            r#"clickhouse.endpoint: must be an http:// or https:// URL of ClickHouse's HTTP interface (such as http://localhost:8123), got "localhost:8123""#
        );
        assert!(error(r#"{"endpoint":"http://u:hunter2@h:8123"}"#)
            .starts_with("clickhouse.endpoint: must name a host, without credentials"));
        assert!(!error(r#"{"endpoint":"http://u:hunter2@h:8123"}"#).contains("hunter2"));
        assert!(error(r#"{"endpoint":"http://h","database":"a-b"}"#)
            .starts_with(r#"clickhouse.database: must be a plain SQL name"#));
        assert!(error(r#"{"endpoint":"http://h","cluster_name":"a b"}"#)
            .starts_with(r#"clickhouse.cluster_name: must be a plain SQL name"#));
        assert_eq!(
            error(r#"{"endpoint":"http://h","parallel_inserts":0}"#),
            "clickhouse.parallel_inserts: must be between 1 and 64, got 0"
        );
        assert_eq!(
            error(r#"{"endpoint":"http://h","compression":"zip"}"#),
            "clickhouse.compression: unknown variant `zip`, expected `lz4` or `none`"
        );
        assert!(error(r#"{"endpoint":"http://h","table_engine":"Log"}"#)
            .starts_with("clickhouse.table_engine: unknown variant `Log`"));
        assert!(
            error(r#"{"endpoint":"http://h","ca_file":"/nonexistent/ca.pem"}"#)
                .starts_with(r#"clickhouse.ca_file: cannot read "/nonexistent/ca.pem""#)
        );
        let debug = format!(
            "{:?}",
            Config::from_json(br#"{"clickhouse":{"endpoint":"http://h","password":"hunter2"}}"#)
                .expect("valid")
        );
        assert!(
            !debug.contains("hunter2") && debug.contains("<redacted>"),
            "{debug}"
        );
    }

    #[test]
    fn dsn_errors_never_echo_the_password() {
        let message =
            error_of(r#"{"postgres":{"dsn":"postgres://otel:hunter2@127.0.0.1:notaport/db"}}"#);
        assert!(
            message.starts_with("postgres.dsn: not a valid connection string"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
        let debug = format!(
            "{:?}",
            Config::from_json(with_dsn("").as_bytes()).expect("valid")
        );
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        assert_eq!(
            error_of(&with_dsn(r#","ca_file":"/nonexistent/ca.pem""#)),
            r#"postgres.ca_file: cannot read "/nonexistent/ca.pem": No such file or directory (os error 2)"#
        );
        let empty =
            std::env::temp_dir().join(format!("otelstore-empty-ca-{}.pem", std::process::id()));
        std::fs::write(&empty, "no certificate here\n").expect("write");
        let message = error_of(&with_dsn(&format!(
            r#","ca_file":{:?}"#,
            empty.display().to_string()
        )));
        std::fs::remove_file(&empty).expect("remove");
        assert!(message.ends_with("holds no PEM certificate"), "{message}");
    }

    #[test]
    fn go_durations_parse_and_print() {
        let parse = |s: &str| s.parse::<GoDuration>().map(|d| d.0);
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h0m0s"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("3µs"), Ok(Duration::from_micros(3)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        for bad in ["", "10", "s", "-1s", "1d", "1s2"] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert_eq!(GoDuration(Duration::from_secs(90)).to_string(), "90s");
        assert_eq!(GoDuration(Duration::from_secs(120)).to_string(), "2m");
        assert_eq!(GoDuration(DAY * 30).to_string(), "720h");
        assert_eq!(
            GoDuration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
        assert_eq!(GoDuration(Duration::from_nanos(7)).to_string(), "7ns");
    }
}
