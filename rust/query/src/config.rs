//! The binary's configuration: a YAML or JSON file (`--config FILE`) and the few flags that override
//! it, validated in one place ([`Config::validate`]).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use otelstore::config::GoDuration;
use serde::Deserialize;

pub const USAGE: &str = "\
usage: otelstore-query [--config FILE] [--listen ADDR] [--postgres-dsn DSN | --clickhouse-endpoint URL]

  --config FILE              the configuration, in YAML or JSON
  --listen ADDR              the address to serve on (listen), default 127.0.0.1:16686
  --postgres-dsn DSN         read from PostgreSQL (postgres.dsn)
  --clickhouse-endpoint URL  read from ClickHouse's HTTP interface (clickhouse.endpoint)
  -h, --help                 print this help
  -V, --version              print the version";

/// What is wrong with the flags, the file or a value, naming the flag, the file or the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}\n\n{USAGE}")]
    Usage(String),
    #[error("cannot read the configuration file {path:?}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path:?}: {field}: {reason}")]
    Parse {
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

impl ConfigError {
    fn invalid(field: &str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

impl From<otelstore::config::ConfigError> for ConfigError {
    fn from(error: otelstore::config::ConfigError) -> Self {
        ConfigError::Invalid {
            field: error.field,
            reason: error.reason,
        }
    }
}

/// The configuration once validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub backend: Backend,
    /// How long a request may take before it is answered 504.
    pub request_timeout: Duration,
    pub cache: CacheSettings,
    pub search: SearchSettings,
    pub stats: StatsSettings,
    pub analysis: AnalysisSettings,
}

/// The database the traces are read from.
#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    Postgres(PostgresSettings),
    ClickHouse(ClickHouseSettings),
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresSettings {
    /// libpq-style connection string, as the exporter's `postgres.dsn`.
    pub dsn: String,
    /// The schema that holds otelstore's tables.
    pub schema: String,
    /// Connections kept open; queries beyond that wait for one.
    pub pool_size: usize,
    /// How long one connection attempt may take.
    pub connect_timeout: GoDuration,
    /// PEM file of the CA certificates that sign the server's certificate, as the exporter's
    /// `postgres.ca_file`: TLS per the DSN's sslmode, verified when set.
    pub ca_file: String,
}

/// The exporter's defaults, so that both find the same tables.
impl Default for PostgresSettings {
    fn default() -> Self {
        let exporter = otelstore::config::PostgresConfig::default();
        Self {
            dsn: exporter.dsn,
            schema: exporter.schema,
            pool_size: exporter.pool_size,
            connect_timeout: exporter.connect_timeout,
            ca_file: exporter.ca_file,
        }
    }
}

// The DSN usually carries a password: never print it.
impl fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("dsn", &"<redacted>")
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseSettings {
    /// The HTTP(S) interface, such as `http://localhost:8123`.
    pub endpoint: String,
    pub database: String,
    pub username: String,
    pub password: String,
    /// PEM file of the CA certificates that sign an https endpoint's certificate; when empty,
    /// the system's roots.
    pub ca_file: String,
    /// Read the `<table>_dist` Distributed tables the exporter creates with a `cluster_name`, to
    /// see every shard of a cluster.
    pub distributed_tables: bool,
}

/// The exporter's defaults, so that both find the same tables.
impl Default for ClickHouseSettings {
    fn default() -> Self {
        let exporter = otelstore::config::ClickHouseConfig::default();
        Self {
            endpoint: exporter.endpoint,
            database: exporter.database,
            username: exporter.username,
            password: exporter.password,
            ca_file: exporter.ca_file,
            distributed_tables: false,
        }
    }
}

impl fmt::Debug for ClickHouseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let password = if self.password.is_empty() {
            ""
        } else {
            "<redacted>"
        };
        f.debug_struct("ClickHouseSettings")
            .field("endpoint", &self.endpoint)
            .field("database", &self.database)
            .field("username", &self.username)
            .field("password", &password)
            .field("ca_file", &self.ca_file)
            .field("distributed_tables", &self.distributed_tables)
            .finish()
    }
}

/// The results cache: a zero `ttl` or `max_bytes` turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// How long a response is served from the cache.
    pub ttl: GoDuration,
    /// Most bytes of cached responses (and their keys); the oldest are evicted first.
    pub max_bytes: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: GoDuration(Duration::from_secs(15 * 60)),
            max_bytes: 64 << 20,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchSettings {
    /// How far back a trace search without `start` looks.
    pub default_lookback: GoDuration,
    /// Most traces one search returns; a larger `limit` is lowered to it.
    pub max_limit: usize,
}

impl Default for SearchSettings {
    fn default() -> Self {
        Self {
            default_lookback: GoDuration(Duration::from_secs(48 * 3600)),
            max_limit: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsSettings {
    /// Service statistics over a range at least this long are read from the hourly statistics
    /// (whole hours, percentiles estimated, fast however many spans); shorter ones from the
    /// spans (exact). `0s`: always the hourly statistics.
    pub hourly_from: GoDuration,
}

impl Default for StatsSettings {
    fn default() -> Self {
        Self {
            hourly_from: GoDuration(Duration::from_secs(6 * 3600)),
        }
    }
}

/// The analyses of stored traces (`/api/v1/analysis/…`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisSettings {
    /// Most traces one analysis reads, the most recent first.
    pub max_traces: usize,
    pub n_plus_one: NPlusOneSettings,
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        Self {
            max_traces: 500,
            n_plus_one: NPlusOneSettings::default(),
        }
    }
}

/// When repeated database calls under one span are an N+1 finding.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NPlusOneSettings {
    /// Calls with one statement in a row, at least.
    pub min_repeats: usize,
    /// Their durations added up, at least.
    pub min_total: GoDuration,
}

impl Default for NPlusOneSettings {
    fn default() -> Self {
        Self {
            min_repeats: 5,
            min_total: GoDuration(Duration::from_millis(50)),
        }
    }
}

/// The file as written, before validation; every key is optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct File {
    listen: String,
    postgres: PostgresSettings,
    clickhouse: ClickHouseSettings,
    request_timeout: GoDuration,
    cache: CacheSettings,
    search: SearchSettings,
    stats: StatsSettings,
    analysis: AnalysisSettings,
}

impl Default for File {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:16686".to_owned(),
            postgres: PostgresSettings::default(),
            clickhouse: ClickHouseSettings::default(),
            request_timeout: GoDuration(Duration::from_secs(30)),
            cache: CacheSettings::default(),
            search: SearchSettings::default(),
            stats: StatsSettings::default(),
            analysis: AnalysisSettings::default(),
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Serve(Box<Config>),
    Help,
    Version,
}

/// The values given as flags; each one overrides the file's.
#[derive(Debug, Default)]
struct Flags {
    help: bool,
    version: bool,
    config: Option<String>,
    listen: Option<String>,
    postgres_dsn: Option<String>,
    clickhouse_endpoint: Option<String>,
}

impl Flags {
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Flags, ConfigError> {
        let mut flags = Flags::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) if name.starts_with("--") => (name.to_owned(), Some(value)),
                _ => (arg.clone(), None),
            };
            let slot = match name.as_str() {
                "-h" | "--help" => {
                    flags.help = true;
                    continue;
                }
                "-V" | "--version" => {
                    flags.version = true;
                    continue;
                }
                "--listen" => &mut flags.listen,
                "--postgres-dsn" => &mut flags.postgres_dsn,
                "--clickhouse-endpoint" => &mut flags.clickhouse_endpoint,
                "--config" => &mut flags.config,
                _ => return Err(ConfigError::Usage(format!("unknown argument {arg:?}"))),
            };
            *slot = Some(flag_value(&name, inline, &mut args)?);
        }
        Ok(flags)
    }
}

fn flag_value(
    name: &str,
    inline: Option<&str>,
    rest: &mut impl Iterator<Item = String>,
) -> Result<String, ConfigError> {
    match inline {
        Some(value) => Ok(value.to_owned()),
        None => rest
            .next()
            .ok_or_else(|| ConfigError::Usage(format!("{name} needs a value"))),
    }
}

/// Parses a configuration file: JSON when it starts with `{`, YAML otherwise. Missing keys take
/// their defaults; an unknown key is an error.
fn parse_file(path: PathBuf, text: &str) -> Result<File, ConfigError> {
    if text.trim_start().starts_with('{') {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| located(path, e))
    } else if text.trim().is_empty() {
        Ok(File::default())
    } else {
        serde_path_to_error::deserialize(serde_norway::Deserializer::from_str(text))
            .map_err(|e| located(path, e))
    }
}

fn located<E: fmt::Display>(path: PathBuf, error: serde_path_to_error::Error<E>) -> ConfigError {
    let field = match error.path().to_string() {
        dot if dot == "." => "config".to_owned(),
        field => field,
    };
    let reason = error.into_inner().to_string();
    // The YAML parser names the field, or the section that holds it, again.
    let reason = match reason.split_once(": ") {
        Some((named, rest)) if field == named || field.starts_with(&format!("{named}.")) => {
            rest.to_owned()
        }
        _ => reason,
    };
    ConfigError::Parse {
        path,
        field,
        reason,
    }
}

impl File {
    /// Expands `${env:NAME}` and `${env:NAME:-default}` in the string values that name a place or
    /// carry a secret, as the collector's configuration does, so that a value can be copied from
    /// it and a password kept out of the file and off the command line. `$${env:` stays as
    /// `${env:`. On error, the field and why, never the value (it may hold a password).
    /// Fields in `skipped` are left as they are.
    fn expand_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
        skipped: &[&str],
    ) -> Result<(), (String, String)> {
        let fields = [
            ("listen", &mut self.listen),
            ("postgres.dsn", &mut self.postgres.dsn),
            ("postgres.schema", &mut self.postgres.schema),
            ("postgres.ca_file", &mut self.postgres.ca_file),
            ("clickhouse.endpoint", &mut self.clickhouse.endpoint),
            ("clickhouse.database", &mut self.clickhouse.database),
            ("clickhouse.username", &mut self.clickhouse.username),
            ("clickhouse.password", &mut self.clickhouse.password),
            ("clickhouse.ca_file", &mut self.clickhouse.ca_file),
        ];
        for (field, value) in fields {
            if skipped.contains(&field) {
                continue;
            }
            *value = expand_env(value, &lookup).map_err(|reason| (field.to_owned(), reason))?;
        }
        Ok(())
    }
}

/// `text` with each `${env:NAME}` replaced by the variable's value, or by `default` in
/// `${env:NAME:-default}` when it is unset.
fn expand_env(text: &str, lookup: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    const OPEN: &str = "${env:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(OPEN) {
        if rest[..at].ends_with('$') {
            out.push_str(&rest[..at - 1]);
            out.push_str(OPEN);
            rest = &rest[at + OPEN.len()..];
            continue;
        }
        out.push_str(&rest[..at]);
        let reference = &rest[at + OPEN.len()..];
        let close = reference
            .find('}')
            .ok_or_else(|| format!("{OPEN}... is not closed with }}"))?;
        let (name, default) = match reference[..close].split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (&reference[..close], None),
        };
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("{name:?} is not an environment variable name"));
        }
        match (lookup(name), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!(
                    "the environment variable {name} is not set (give a default with ${{env:{name}:-...}})"
                ))
            }
        }
        rest = &reference[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
const MAX_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);
const MAX_CACHE_BYTES: usize = 16 << 30;
const MAX_LOOKBACK: Duration = Duration::from_secs(366 * 24 * 3600);
const MAX_SEARCH_LIMIT: usize = 100_000;
const MAX_ANALYSIS_TRACES: usize = 10_000;
const MAX_REPEATS: usize = 10_000;
const MAX_N_PLUS_ONE_TOTAL: Duration = Duration::from_secs(3600);

impl Config {
    /// The configuration the command line (without the program name) asks for: the file's, then
    /// the flags', validated.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Command, ConfigError> {
        let flags = Flags::parse(args)?;
        if flags.help {
            return Ok(Command::Help);
        }
        if flags.version {
            return Ok(Command::Version);
        }
        let mut file = match flags.config {
            Some(path) => {
                let path = PathBuf::from(path);
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let mut file = parse_file(path.clone(), &text)?;
                // A value a flag replaces is not read, nor its variables.
                let replaced: Vec<&str> = [
                    ("listen", flags.listen.is_some()),
                    ("postgres.dsn", flags.postgres_dsn.is_some()),
                    ("clickhouse.endpoint", flags.clickhouse_endpoint.is_some()),
                ]
                .into_iter()
                .filter_map(|(field, given)| given.then_some(field))
                .collect();
                file.expand_env(|name| std::env::var(name).ok(), &replaced)
                    .map_err(|(field, reason)| ConfigError::Parse {
                        path,
                        field,
                        reason,
                    })?;
                file
            }
            None => File::default(),
        };
        if let Some(listen) = flags.listen {
            file.listen = listen;
        }
        if let Some(dsn) = flags.postgres_dsn {
            file.postgres.dsn = dsn;
        }
        if let Some(endpoint) = flags.clickhouse_endpoint {
            file.clickhouse.endpoint = endpoint;
        }
        Self::validate(file).map(|config| Command::Serve(Box::new(config)))
    }

    fn validate(file: File) -> Result<Config, ConfigError> {
        let listen = file
            .listen
            .to_socket_addrs()
            .ok()
            .and_then(|mut addresses| addresses.next())
            .ok_or_else(|| {
                ConfigError::invalid(
                    "listen",
                    format!(
                        "must be a host and port such as 127.0.0.1:16686 or [::]:16686, got {:?}",
                        file.listen
                    ),
                )
            })?;
        let backend = validate_backend(file.postgres, file.clickhouse)?;
        let timeout = file.request_timeout;
        if timeout.0.is_zero() || timeout.0 > MAX_REQUEST_TIMEOUT {
            return Err(ConfigError::invalid(
                "request_timeout",
                format!("must be more than 0s and at most 10m, got {timeout}"),
            ));
        }
        if file.cache.ttl.0 > MAX_CACHE_TTL {
            return Err(ConfigError::invalid(
                "cache.ttl",
                format!(
                    "must be at most 24h (0s turns the cache off), got {}",
                    file.cache.ttl
                ),
            ));
        }
        if file.cache.max_bytes > MAX_CACHE_BYTES {
            return Err(ConfigError::invalid(
                "cache.max_bytes",
                format!(
                    "must be at most {MAX_CACHE_BYTES} (16 GiB; 0 turns the cache off), got {}",
                    file.cache.max_bytes
                ),
            ));
        }
        let lookback = file.search.default_lookback;
        if lookback.0.is_zero() || lookback.0 > MAX_LOOKBACK {
            return Err(ConfigError::invalid(
                "search.default_lookback",
                format!("must be more than 0s and at most 8784h (366 days), got {lookback}"),
            ));
        }
        within(
            "search.max_limit",
            file.search.max_limit,
            1..=MAX_SEARCH_LIMIT,
        )?;
        let hourly_from = file.stats.hourly_from;
        if hourly_from.0 > MAX_LOOKBACK {
            return Err(ConfigError::invalid(
                "stats.hourly_from",
                format!(
                    "must be at most 8784h (366 days; 0s always reads the hourly statistics), got {hourly_from}"
                ),
            ));
        }
        validate_analysis(&file.analysis)?;
        Ok(Config {
            listen,
            backend,
            request_timeout: timeout.0,
            cache: file.cache,
            search: file.search,
            stats: file.stats,
            analysis: file.analysis,
        })
    }
}

/// A number that must lie in `range`: the error names the field, the bounds and the value.
fn within(field: &str, value: usize, range: RangeInclusive<usize>) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(ConfigError::invalid(
        field,
        format!(
            "must be between {} and {}, got {value}",
            range.start(),
            range.end()
        ),
    ))
}

fn validate_analysis(analysis: &AnalysisSettings) -> Result<(), ConfigError> {
    within(
        "analysis.max_traces",
        analysis.max_traces,
        1..=MAX_ANALYSIS_TRACES,
    )?;
    let n_plus_one = &analysis.n_plus_one;
    within(
        "analysis.n_plus_one.min_repeats",
        n_plus_one.min_repeats,
        2..=MAX_REPEATS,
    )?;
    if n_plus_one.min_total.0 > MAX_N_PLUS_ONE_TOTAL {
        return Err(ConfigError::invalid(
            "analysis.n_plus_one.min_total",
            format!("must be at most 1h, got {}", n_plus_one.min_total),
        ));
    }
    Ok(())
}

/// Exactly one backend, its values checked by the exporter's own rules (the same field names, so
/// one DSN or endpoint is valid for both).
fn validate_backend(
    postgres: PostgresSettings,
    clickhouse: ClickHouseSettings,
) -> Result<Backend, ConfigError> {
    let exporter = otelstore::Config {
        postgres: otelstore::config::PostgresConfig {
            dsn: postgres.dsn.clone(),
            schema: postgres.schema.clone(),
            pool_size: postgres.pool_size,
            connect_timeout: postgres.connect_timeout,
            ca_file: postgres.ca_file.clone(),
            ..Default::default()
        },
        clickhouse: otelstore::config::ClickHouseConfig {
            endpoint: clickhouse.endpoint.clone(),
            database: clickhouse.database.clone(),
            username: clickhouse.username.clone(),
            password: clickhouse.password.clone(),
            ca_file: clickhouse.ca_file.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    // The exporter's message for two backends speaks of exporters.
    if !postgres.dsn.trim().is_empty() && !clickhouse.endpoint.trim().is_empty() {
        return Err(ConfigError::invalid(
            "clickhouse.endpoint",
            "is set together with postgres.dsn; set only one of them",
        ));
    }
    exporter.validate()?;
    Ok(match exporter.backend() {
        otelstore::config::Backend::Postgres => Backend::Postgres(postgres),
        otelstore::config::Backend::ClickHouse => Backend::ClickHouse(clickhouse),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn serve(list: &[&str]) -> Config {
        match Config::from_args(args(list)).expect("valid") {
            Command::Serve(config) => *config,
            other => panic!("expected a configuration, got {other:?}"),
        }
    }

    fn error_of(list: &[&str]) -> String {
        Config::from_args(args(list))
            .expect_err("should be rejected")
            .to_string()
    }

    /// A configuration file in the temporary directory, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> TempFile {
            let path =
                std::env::temp_dir().join(format!("otelstore-query-{}-{name}", std::process::id()));
            std::fs::write(&path, text).expect("write");
            TempFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().expect("UTF-8 path")
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn defaults_need_only_a_backend() {
        let config = serve(&["--postgres-dsn", "postgres://otel:secret@127.0.0.1/otel"]);
        assert_eq!(config.listen, "127.0.0.1:16686".parse().expect("address"));
        assert_eq!(
            config.backend,
            Backend::Postgres(PostgresSettings {
                dsn: "postgres://otel:secret@127.0.0.1/otel".into(),
                schema: "otel".into(),
                pool_size: 4,
                connect_timeout: GoDuration(Duration::from_secs(10)),
                ca_file: String::new(),
            })
        );
        assert_eq!(config.request_timeout, Duration::from_secs(30));
        assert_eq!(config.cache.ttl.0, Duration::from_secs(900));
        assert_eq!(config.cache.max_bytes, 64 << 20);
        assert_eq!(
            config.search.default_lookback.0,
            Duration::from_secs(48 * 3600)
        );
        assert_eq!(config.search.max_limit, 1000);
        assert_eq!(config.stats.hourly_from.0, Duration::from_secs(6 * 3600));
        assert_eq!(config.analysis.max_traces, 500);
        assert_eq!(config.analysis.n_plus_one.min_repeats, 5);
        assert_eq!(
            config.analysis.n_plus_one.min_total.0,
            Duration::from_millis(50)
        );
        assert!(!format!("{config:?}").contains("secret"));
    }

    #[test]
    fn a_yaml_file_sets_every_key_and_flags_override_it() {
        let file = TempFile::new(
            "full.yaml",
            "listen: 0.0.0.0:9000\n\
             clickhouse:\n  endpoint: http://ch:8123\n  database: traces\n  username: reader\n  password: hunter2\n\
             request_timeout: 5s\n\
             cache:\n  ttl: 1m\n  max_bytes: 1024\n\
             search:\n  default_lookback: 2h\n  max_limit: 50\n\
             stats:\n  hourly_from: 24h\n\
             analysis:\n  max_traces: 20\n  n_plus_one:\n    min_repeats: 3\n    min_total: 1.5ms\n",
        );
        let config = serve(&["--config", file.path()]);
        assert_eq!(config.listen, "0.0.0.0:9000".parse().expect("address"));
        let Backend::ClickHouse(clickhouse) = &config.backend else {
            panic!("expected ClickHouse, got {:?}", config.backend);
        };
        assert_eq!(clickhouse.endpoint, "http://ch:8123");
        assert_eq!(clickhouse.database, "traces");
        assert_eq!(clickhouse.username, "reader");
        assert_eq!(clickhouse.password, "hunter2");
        assert_eq!(config.request_timeout, Duration::from_secs(5));
        assert_eq!(config.cache.ttl.0, Duration::from_secs(60));
        assert_eq!(config.cache.max_bytes, 1024);
        assert_eq!(config.search.default_lookback.0, Duration::from_secs(7200));
        assert_eq!(config.search.max_limit, 50);
        assert_eq!(config.stats.hourly_from.0, Duration::from_secs(86_400));
        assert_eq!(
            config.analysis,
            AnalysisSettings {
                max_traces: 20,
                n_plus_one: NPlusOneSettings {
                    min_repeats: 3,
                    min_total: GoDuration(Duration::from_micros(1500)),
                },
            }
        );
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("hunter2") && debug.contains("<redacted>"),
            "{debug}"
        );

        let overridden = serve(&[
            "--config",
            file.path(),
            "--listen=127.0.0.1:7000",
            "--clickhouse-endpoint",
            "https://other:8443",
        ]);
        assert_eq!(
            overridden.listen,
            "127.0.0.1:7000".parse().expect("address")
        );
        let Backend::ClickHouse(clickhouse) = &overridden.backend else {
            panic!("expected ClickHouse");
        };
        assert_eq!(clickhouse.endpoint, "https://other:8443");
        assert_eq!(clickhouse.database, "traces");
    }

    #[test]
    fn a_json_file_is_read_too() {
        let file = TempFile::new(
            "config.json",
            "{\n\t\"postgres\": {\"dsn\": \"host=db user=otel\", \"schema\": \"tel\"},\n\t\"cache\": {\"ttl\": \"0s\"}\n}",
        );
        let config = serve(&["--config", file.path()]);
        assert_eq!(
            config.backend,
            Backend::Postgres(PostgresSettings {
                dsn: "host=db user=otel".into(),
                schema: "tel".into(),
                ..PostgresSettings::default()
            })
        );
        assert!(config.cache.ttl.0.is_zero());
    }

    #[test]
    fn environment_variables_are_expanded_in_places_and_secrets() {
        let env = |name: &str| match name {
            "PG_PASSWORD" => Some("s3cret$".to_owned()),
            "CH_HOST" => Some("ch.example".to_owned()),
            _ => None,
        };
        for (text, expanded) in [
            (
                "postgres://otel:${env:PG_PASSWORD}@db/t",
                "postgres://otel:s3cret$@db/t",
            ),
            ("${env:CH_HOST}:${env:CH_HOST}", "ch.example:ch.example"),
            ("${env:CH_PORT:-8123}", "8123"),
            ("${env:CH_HOST:-other}", "ch.example"),
            ("${env:CH_USER:-}", ""),
            (
                "$${env:CH_HOST} and $$ and $",
                "${env:CH_HOST} and $$ and $",
            ),
            ("no references", "no references"),
        ] {
            assert_eq!(expand_env(text, &env).as_deref(), Ok(expanded), "{text}");
        }
        for (text, reason) in [
            (
                "${env:CH_PASSWORD}",
                "the environment variable CH_PASSWORD is not set",
            ),
            ("${env:1X}", "\"1X\" is not an environment variable name"),
            ("${env:}", "\"\" is not an environment variable name"),
            ("${env:CH_HOST", "${env:... is not closed with }"),
        ] {
            let error = expand_env(text, &env).expect_err(text);
            assert!(error.starts_with(reason), "{text}: {error}");
        }

        let mut file = File::default();
        file.clickhouse.endpoint = "https://${env:CH_HOST}:8443".into();
        file.clickhouse.password = "${env:PG_PASSWORD}".into();
        file.expand_env(env, &[]).expect("expanded");
        assert_eq!(file.clickhouse.endpoint, "https://ch.example:8443");
        assert_eq!(file.clickhouse.password, "s3cret$");

        // Through the binary's arguments, the error names the file and the field, not the value.
        let yaml = TempFile::new(
            "env.yaml",
            "postgres:\n  dsn: postgres://otel:${env:OTELSTORE_QUERY_TEST_UNSET_VARIABLE}@db/t\n",
        );
        let message = error_of(&["--config", yaml.path()]);
        assert!(
            message.contains(
                "env.yaml\": postgres.dsn: the environment variable \
                 OTELSTORE_QUERY_TEST_UNSET_VARIABLE is not set"
            ),
            "{message}"
        );
        assert!(!message.contains("postgres://"), "{message}");
        // A flag's value replaces the file's, whose variables are then not needed.
        let config = serve(&["--config", yaml.path(), "--postgres-dsn", "host=db"]);
        assert!(matches!(config.backend, Backend::Postgres(pg) if pg.dsn == "host=db"));
    }

    #[test]
    fn file_errors_name_the_file_and_the_field() {
        let yaml = TempFile::new("bad.yaml", "cache:\n  ttl: soon\n");
        let message = error_of(&["--config", yaml.path()]);
        assert!(
            message.contains("bad.yaml\": cache.ttl: invalid duration \"soon\""),
            "{message}"
        );
        assert!(message.ends_with("at line 2 column 3"), "{message}");
        let unknown = TempFile::new("unknown.yaml", "search:\n  maxlimit: 3\n");
        let message = error_of(&["--config", unknown.path()]);
        assert!(
            message.contains(": search.maxlimit: unknown field `maxlimit`"),
            "{message}"
        );
        let json = TempFile::new("bad.json", r#"{"cache": {"max_bytes": "lots"}}"#);
        let message = error_of(&["--config", json.path()]);
        assert!(
            message.contains(": cache.max_bytes: invalid type: string"),
            "{message}"
        );
        let message = error_of(&["--config", "/nonexistent/query.yaml"]);
        assert!(
            message.starts_with("cannot read the configuration file \"/nonexistent/query.yaml\""),
            "{message}"
        );
    }

    #[test]
    fn values_are_validated_with_the_field_and_value_named() {
        let with = |yaml: &str| {
            let file = TempFile::new(
                "value.yaml",
                &format!("postgres:\n  dsn: postgres://u@h/db\n{yaml}"),
            );
            error_of(&["--config", file.path()])
        };
        assert_eq!(
            with("listen: nowhere\n"),
            "listen: must be a host and port such as 127.0.0.1:16686 or [::]:16686, got \"nowhere\""
        );
        assert_eq!(
            with("request_timeout: 0s\n"),
            "request_timeout: must be more than 0s and at most 10m, got 0s"
        );
        assert_eq!(
            with("request_timeout: 11m\n"),
            "request_timeout: must be more than 0s and at most 10m, got 11m"
        );
        assert_eq!(
            with("cache:\n  ttl: 25h\n"),
            "cache.ttl: must be at most 24h (0s turns the cache off), got 25h"
        );
        assert_eq!(
            with("cache:\n  max_bytes: 17179869185\n"),
            "cache.max_bytes: must be at most 17179869184 (16 GiB; 0 turns the cache off), got 17179869185"
        );
        assert_eq!(
            with("search:\n  default_lookback: 0s\n"),
            "search.default_lookback: must be more than 0s and at most 8784h (366 days), got 0s"
        );
        assert_eq!(
            with("search:\n  max_limit: 0\n"),
            "search.max_limit: must be between 1 and 100000, got 0"
        );
        assert_eq!(
            with("stats:\n  hourly_from: 8785h\n"),
            "stats.hourly_from: must be at most 8784h (366 days; 0s always reads the hourly statistics), got 8785h"
        );
        assert_eq!(
            with("analysis:\n  max_traces: 0\n"),
            "analysis.max_traces: must be between 1 and 10000, got 0"
        );
        assert_eq!(
            with("analysis:\n  n_plus_one:\n    min_repeats: 1\n"),
            "analysis.n_plus_one.min_repeats: must be between 2 and 10000, got 1"
        );
        assert_eq!(
            with("analysis:\n  n_plus_one:\n    min_total: 2h\n"),
            "analysis.n_plus_one.min_total: must be at most 1h, got 2h"
        );
        assert!(
            with("  schema: \"a;b\"\n").starts_with("postgres.schema: must be a plain SQL name")
        );
    }

    #[test]
    fn exactly_one_backend_is_configured() {
        assert_eq!(
            error_of(&[]),
            "postgres.dsn: must be set (for example postgres://user@127.0.0.1:5432/db), or clickhouse.endpoint instead"
        );
        assert_eq!(
            error_of(&[
                "--postgres-dsn",
                "postgres://u@h/db",
                "--clickhouse-endpoint",
                "http://h:8123"
            ]),
            "clickhouse.endpoint: is set together with postgres.dsn; set only one of them"
        );
        assert!(error_of(&["--clickhouse-endpoint", "h:8123"])
            .starts_with("clickhouse.endpoint: must be an http:// or https:// URL"));
        let message = error_of(&["--postgres-dsn", "postgres://u:hunter2@h:port/db"]);
        assert!(
            message.starts_with("postgres.dsn: not a valid connection string"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn flags_are_checked() {
        assert_eq!(
            Config::from_args(args(&["--help"])).expect("help"),
            Command::Help
        );
        assert_eq!(
            Config::from_args(args(&["-V"])).expect("version"),
            Command::Version
        );
        let message = error_of(&["--verbose"]);
        assert!(
            message.starts_with("unknown argument \"--verbose\"\n\nusage:"),
            "{message}"
        );
        assert!(error_of(&["--listen"]).starts_with("--listen needs a value\n"));
    }
}
