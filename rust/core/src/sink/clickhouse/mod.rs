//! The ClickHouse sink: the contrib clickhouseexporter's tables (schema/clickhouse/), written with
//! `INSERT ... FORMAT Native` over HTTP through the official `clickhouse` crate.
//!
//! Requests are encoded into Native blocks ([`encode_traces`]) without the database, so the exporter
//! can encode while an earlier write is under way and merge the blocks of several requests into one
//! INSERT ([`ClickHouseSink::write_traces`]): a Native stream is any number of blocks.
//!
//! Native rather than RowBinary: the data is columnar on the server, and a Native block carries
//! its column names and types, so the server checks them (and converts `String` to
//! `LowCardinality(String)`) instead of misreading bytes; arrays and maps are offsets plus flat
//! columns, which we fill while reading the request without per-value framing.

pub mod gostring;
pub mod native;
pub mod traces;

use bytes::Bytes;
use clickhouse::{Client, Compression};

use crate::config::ConfigError;
use crate::error::Error;
use crate::wire::WireError;
pub use traces::EncodedTraces;

/// Where and how to write; the exporter's configuration fills it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickHouseSettings {
    /// The HTTP(S) interface, such as `http://localhost:8123`.
    pub endpoint: String,
    /// `[A-Za-z_][A-Za-z0-9_]*`; created by the migrations.
    pub database: String,
    pub username: String,
    pub password: String,
    /// LZ4 for inserts (ClickHouse's compressed blocks, `decompress=1`) and responses.
    pub compression: bool,
    /// A cluster name for `ON CLUSTER` DDL, or empty for a single server.
    pub cluster: String,
    /// Replicated* engines (with `{shard}`/`{replica}` macros) instead of the plain ones.
    pub replicated: bool,
    /// Days kept: raw tables, five-minute rollups, hourly rollups. Each at least 1.
    pub ttl_raw_days: u32,
    pub ttl_5m_days: u32,
    pub ttl_1h_days: u32,
}

impl Default for ClickHouseSettings {
    fn default() -> Self {
        Self {
            endpoint: "http://localhost:8123".into(),
            database: "otel".into(),
            username: "default".into(),
            password: String::new(),
            compression: true,
            cluster: String::new(),
            replicated: false,
            ttl_raw_days: 30,
            ttl_5m_days: 90,
            ttl_1h_days: 365,
        }
    }
}

/// Every numbered migration, in order: (version, name, SQL with placeholders).
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "traces",
        include_str!("../../../../../schema/clickhouse/0001_traces.sql"),
    ),
    (
        2,
        "logs",
        include_str!("../../../../../schema/clickhouse/0002_logs.sql"),
    ),
    (
        3,
        "metrics",
        include_str!("../../../../../schema/clickhouse/0003_metrics.sql"),
    ),
    (
        4,
        "rollups",
        include_str!("../../../../../schema/clickhouse/0004_rollups.sql"),
    ),
];
const BOOTSTRAP: &str = include_str!("../../../../../schema/clickhouse/bootstrap.sql");

/// Encodes a serialized `ExportTraceServiceRequest` into a Native block for `otel_traces`.
pub fn encode_traces(otlp: &[u8]) -> Result<EncodedTraces, WireError> {
    traces::encode(otlp)
}

pub struct ClickHouseSink {
    client: Client,
    /// The database, double-quoted.
    quoted_database: String,
    placeholders: Vec<(&'static str, String)>,
    insert_traces_sql: String,
}

impl ClickHouseSink {
    /// Builds the client without connecting: a server that is down must not stop the collector from
    /// starting, only make writes retryable.
    pub fn new(settings: &ClickHouseSettings) -> Result<Self, Error> {
        let invalid = |field: &str, reason: String| {
            Error::Config(ConfigError {
                field: format!("clickhouse.{field}"),
                reason,
            })
        };
        if !is_identifier(&settings.database) {
            return Err(invalid("database", format!("{:?} is not a name of letters, digits and '_' that does not start with a digit", settings.database)));
        }
        if !settings.cluster.is_empty() && !is_identifier(&settings.cluster) {
            return Err(invalid("cluster", format!("{:?} is not a name of letters, digits and '_' that does not start with a digit", settings.cluster)));
        }
        for (field, days) in [
            ("ttl_raw_days", settings.ttl_raw_days),
            ("ttl_5m_days", settings.ttl_5m_days),
            ("ttl_1h_days", settings.ttl_1h_days),
        ] {
            if days == 0 {
                return Err(invalid(field, "must be at least 1".into()));
            }
        }
        if !(settings.endpoint.starts_with("http://") || settings.endpoint.starts_with("https://"))
        {
            return Err(invalid(
                "endpoint",
                format!("{:?} is not an http:// or https:// URL", settings.endpoint),
            ));
        }
        let mut client = Client::default()
            .with_url(settings.endpoint.as_str())
            .with_user(settings.username.as_str())
            .with_compression(if settings.compression {
                Compression::Lz4
            } else {
                Compression::None
            });
        if !settings.password.is_empty() {
            client = client.with_password(settings.password.as_str());
        }
        let quoted_database = format!("\"{}\"", settings.database);
        let insert_traces_sql = format!(
            "INSERT INTO {quoted_database}.otel_traces ({}) FORMAT Native",
            traces::COLUMNS
                .iter()
                .map(|(name, _)| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(Self {
            client,
            placeholders: placeholders(settings, &quoted_database),
            quoted_database,
            insert_traces_sql,
        })
    }

    /// Applies the migrations the database lacks (schema/README.md, "ClickHouse"): bootstrap.sql,
    /// then each numbered file not recorded in `otelstore_schema_migrations`, recorded after it
    /// ran. Every statement is `IF NOT EXISTS`, so racing collectors or a crash between a file and
    /// its record re-run a file harmlessly. Returns the versions applied.
    pub async fn migrate(&self) -> Result<Vec<u32>, Error> {
        for statement in statements(&self.render(BOOTSTRAP)) {
            self.client
                .query_raw(statement)
                .execute()
                .await
                .map_err(Error::clickhouse("bootstrap the schema"))?;
        }
        let applied = self
            .client
            .query_raw(&format!(
                "SELECT version FROM {}.otelstore_schema_migrations FINAL",
                self.quoted_database
            ))
            .fetch_bytes("TabSeparated")
            .map_err(Error::clickhouse("read applied migrations"))?
            .collect()
            .await
            .map_err(Error::clickhouse("read applied migrations"))?;
        let applied: Vec<u32> = String::from_utf8_lossy(&applied)
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let mut newly_applied = Vec::new();
        for &(version, name, sql) in MIGRATIONS {
            if applied.contains(&version) {
                continue;
            }
            for statement in statements(&self.render(sql)) {
                self.client
                    .query_raw(statement)
                    .execute()
                    .await
                    .map_err(Error::clickhouse("apply a schema migration"))?;
            }
            self.client
                .query_raw(&format!(
                    "INSERT INTO {}.otelstore_schema_migrations (version, name) VALUES ({version}, '{name}')",
                    self.quoted_database
                ))
                .execute()
                .await
                .map_err(Error::clickhouse("record a schema migration"))?;
            newly_applied.push(version);
        }
        Ok(newly_applied)
    }

    /// Inserts the blocks of one or more encoded requests in one INSERT: the server writes them
    /// all, and the materialized views see them, or none (a failed INSERT over HTTP is not partly
    /// applied for a single partition; blocks spanning partitions may be, as with any INSERT).
    pub async fn write_traces(&self, blocks: &[&Bytes]) -> Result<(), Error> {
        let mut blocks = blocks.iter().filter(|block| !block.is_empty()).peekable();
        if blocks.peek().is_none() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert_formatted_with(self.insert_traces_sql.as_str());
        for block in blocks {
            insert
                .send((*block).clone())
                .await
                .map_err(Error::clickhouse("insert spans"))?;
        }
        insert
            .end()
            .await
            .map_err(Error::clickhouse("insert spans"))
    }

    /// The SQL of a schema file with the placeholders substituted, in one pass: substituted text is
    /// not scanned again, so ClickHouse macros in an engine clause (`{shard}`, `{table}`) survive.
    /// An unknown `{name}` is left as it is.
    fn render(&self, sql: &str) -> String {
        render(sql, &self.placeholders)
    }

    /// The client, for queries outside the sink's own (tests, diagnostics).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn placeholders(
    settings: &ClickHouseSettings,
    quoted_database: &str,
) -> Vec<(&'static str, String)> {
    let engine = |family: &str| {
        if settings.replicated {
            format!("Replicated{family}('/clickhouse/tables/{{shard}}/{{database}}/{{table}}', '{{replica}}')")
        } else {
            format!("{family}()")
        }
    };
    vec![
        ("database", quoted_database.to_owned()),
        (
            "on_cluster",
            if settings.cluster.is_empty() {
                String::new()
            } else {
                format!(" ON CLUSTER \"{}\"", settings.cluster)
            },
        ),
        ("engine", engine("MergeTree")),
        ("aggregating_engine", engine("AggregatingMergeTree")),
        ("replacing_engine", engine("ReplacingMergeTree")),
        (
            "ttl_raw",
            format!("toIntervalDay({})", settings.ttl_raw_days),
        ),
        ("ttl_5m", format!("toIntervalDay({})", settings.ttl_5m_days)),
        ("ttl_1h", format!("toIntervalDay({})", settings.ttl_1h_days)),
    ]
}

fn render(sql: &str, placeholders: &[(&'static str, String)]) -> String {
    let mut out = String::with_capacity(sql.len() + 256);
    let mut rest = sql;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let name = &after[..close];
            placeholders
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, value)| (value, close))
        });
        match value {
            Some((value, close)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The statements of a schema file: a statement ends at a line that holds only `;` (whitespace
/// around it allowed); chunks of only blank lines and `--` comments are skipped.
fn statements(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    for line in sql.split_inclusive('\n') {
        if line.trim() == ";" {
            out.push(&sql[start..pos]);
            start = pos + line.len();
        }
        pos += line.len();
    }
    out.push(&sql[start..]);
    out.into_iter()
        .filter(|chunk| {
            chunk
                .lines()
                .any(|line| !line.trim().is_empty() && !line.trim_start().starts_with("--"))
        })
        .map(str::trim)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_substituted_once() {
        let settings = ClickHouseSettings {
            replicated: true,
            cluster: "c1".into(),
            ..Default::default()
        };
        let values = placeholders(&settings, "\"otel\"");
        assert_eq!(
            render("CREATE TABLE {database}.t{on_cluster} ENGINE = {engine} TTL x + {ttl_raw} {unknown} {", &values),
            "CREATE TABLE \"otel\".t ON CLUSTER \"c1\" ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}') TTL x + toIntervalDay(30) {unknown} {"
        );
    }

    #[test]
    fn statements_end_at_a_line_of_only_a_semicolon() {
        let sql = "-- header\nCREATE A (x String DEFAULT ';')\n;\n  ;  \n-- only a comment\n\n;\nCREATE B\n;\n";
        assert_eq!(
            statements(sql),
            vec!["-- header\nCREATE A (x String DEFAULT ';')", "CREATE B"]
        );
    }

    #[test]
    fn every_schema_file_renders_without_placeholders_left() {
        let values = placeholders(&ClickHouseSettings::default(), "\"otel\"");
        for sql in std::iter::once(BOOTSTRAP).chain(MIGRATIONS.iter().map(|m| m.2)) {
            for statement in statements(&render(sql, &values)) {
                assert!(
                    !statement.contains("{database}") && !statement.contains("{engine}"),
                    "{statement}"
                );
            }
        }
    }

    #[test]
    fn settings_are_validated() {
        for bad in [
            ClickHouseSettings {
                database: "1x".into(),
                ..Default::default()
            },
            ClickHouseSettings {
                database: "a\"b".into(),
                ..Default::default()
            },
            ClickHouseSettings {
                cluster: "a b".into(),
                ..Default::default()
            },
            ClickHouseSettings {
                ttl_5m_days: 0,
                ..Default::default()
            },
            ClickHouseSettings {
                endpoint: "localhost:8123".into(),
                ..Default::default()
            },
        ] {
            assert!(
                matches!(ClickHouseSink::new(&bad), Err(Error::Config(_))),
                "{bad:?}"
            );
        }
        assert!(ClickHouseSink::new(&ClickHouseSettings::default()).is_ok());
    }
}
