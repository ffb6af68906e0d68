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

pub mod columns;
pub mod gostring;
pub mod logs;
pub mod metrics;
pub mod native;
pub mod traces;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clickhouse::{Client, Compression};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::OnceCell;

use crate::config::{self, ClickHouseConfig, ConfigError, GoDuration, Retention, TableEngine};
use crate::error::Error;
use crate::signal::Signal;
use crate::sink::{Encoded, Pending, Rows, Sink, Stored};
use crate::wire::WireError;

/// TCP keepalive on the server connections, as the `clickhouse` crate sets it.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Idle connections are closed before the server's own 3 s keep-alive timeout closes them under us.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// The tables export requests are inserted into, in the order a batch writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Traces,
    Logs,
    MetricsGauge,
    MetricsSum,
    MetricsHistogram,
    MetricsExponentialHistogram,
    MetricsSummary,
}

impl Table {
    /// What an error while inserting into the table says was being done.
    fn insert_action(self) -> &'static str {
        match self {
            Table::Traces => "insert spans",
            Table::Logs => "insert log records",
            _ => "insert metric points",
        }
    }

    const ALL: [Table; 7] = [
        Table::Traces,
        Table::Logs,
        Table::MetricsGauge,
        Table::MetricsSum,
        Table::MetricsHistogram,
        Table::MetricsExponentialHistogram,
        Table::MetricsSummary,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Traces => "otel_traces",
            Table::Logs => "otel_logs",
            Table::MetricsGauge => "otel_metrics_gauge",
            Table::MetricsSum => "otel_metrics_sum",
            Table::MetricsHistogram => "otel_metrics_histogram",
            Table::MetricsExponentialHistogram => "otel_metrics_exponential_histogram",
            Table::MetricsSummary => "otel_metrics_summary",
        }
    }

    /// The columns a block for the table carries, in order, with the types their data is sent as.
    pub fn columns(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Table::Traces => traces::COLUMNS,
            Table::Logs => logs::COLUMNS,
            Table::MetricsGauge => metrics::GAUGE_COLUMNS,
            Table::MetricsSum => metrics::SUM_COLUMNS,
            Table::MetricsHistogram => metrics::HISTOGRAM_COLUMNS,
            Table::MetricsExponentialHistogram => metrics::EXPONENTIAL_HISTOGRAM_COLUMNS,
            Table::MetricsSummary => metrics::SUMMARY_COLUMNS,
        }
    }
}

/// One request's rows: a Native block per table it has rows for.
#[derive(Debug, Clone, Default)]
pub struct Blocks {
    blocks: Vec<(Table, Bytes, u64)>,
}

impl Blocks {
    /// Adds a table's block of `rows` rows (a block of no rows is left out).
    pub fn add(&mut self, table: Table, block: Vec<u8>, rows: u64) {
        if rows > 0 {
            self.blocks.push((table, Bytes::from(block), rows));
        }
    }

    /// The block for `table`, if the request has rows for it.
    pub fn block(&self, table: Table) -> Option<&Bytes> {
        self.blocks
            .iter()
            .find(|(t, _, _)| *t == table)
            .map(|(_, block, _)| block)
    }
}

impl Rows for Blocks {
    fn rows(&self) -> u64 {
        self.blocks.iter().map(|(_, _, rows)| rows).sum()
    }

    fn bytes(&self) -> usize {
        self.blocks.iter().map(|(_, block, _)| block.len()).sum()
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
    (
        5,
        "insert_deduplication",
        include_str!("../../../../../schema/clickhouse/0005_insert_deduplication.sql"),
    ),
];
const BOOTSTRAP: &str = include_str!("../../../../../schema/clickhouse/bootstrap.sql");
/// Run after the migrations when there is a cluster.
const DISTRIBUTED: &str = include_str!("../../../../../schema/clickhouse/distributed.sql");

pub struct ClickHouseSink {
    client: Client,
    /// The database, double-quoted.
    quoted_database: String,
    placeholders: Vec<(&'static str, String)>,
    create_schema: bool,
    schema_ready: OnceCell<()>,
    /// INSERT statements, indexed by `Table as usize`.
    insert_sql: Vec<String>,
    /// With a cluster: the Distributed tables are created and inserts go through them.
    clustered: bool,
}

impl ClickHouseSink {
    /// Builds the client without connecting: a server that is down must not stop the collector from
    /// starting, only make writes retryable. The configuration is validated already.
    pub fn new(config: &ClickHouseConfig, retention: &Retention) -> Result<Self, Error> {
        let mut client = client_with_roots(&config.ca_file)?
            .with_url(config.endpoint.trim())
            .with_user(config.username.as_str())
            .with_compression(match config.compression {
                config::Compression::Lz4 => Compression::Lz4,
                config::Compression::None => Compression::None,
            });
        if !config.password.is_empty() {
            client = client.with_password(config.password.as_str());
        }
        let clustered = !config.cluster_name.is_empty();
        if clustered {
            // An acknowledged insert is on its shards, not queued on the node that took it.
            client = client.with_setting("distributed_foreground_insert", "1");
        }
        let quoted_database = format!("\"{}\"", config.database);
        let insert_sql = Table::ALL
            .iter()
            .map(|table| {
                let columns: Vec<String> = table
                    .columns()
                    .iter()
                    .map(|(name, _)| format!("`{name}`"))
                    .collect();
                format!(
                    "INSERT INTO {quoted_database}.{}{} ({}) FORMAT Native",
                    table.name(),
                    if clustered { "_dist" } else { "" },
                    columns.join(", ")
                )
            })
            .collect();
        Ok(Self {
            client,
            placeholders: placeholders(config, retention, &quoted_database),
            quoted_database,
            create_schema: config.create_schema,
            schema_ready: OnceCell::new(),
            insert_sql,
            clustered,
        })
    }

    /// Applies the migrations the database lacks (schema/README.md, "ClickHouse"): bootstrap.sql,
    /// then each numbered file not recorded in `otelstore_schema_migrations`, recorded after it
    /// ran. Every statement is `IF NOT EXISTS`, so racing collectors or a crash between a file and
    /// its record re-run a file harmlessly. With a cluster, distributed.sql runs last, every pass.
    /// Returns the versions applied.
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
        if self.clustered {
            for statement in statements(&self.render(DISTRIBUTED)) {
                self.client
                    .query_raw(statement)
                    .execute()
                    .await
                    .map_err(Error::clickhouse("create the Distributed tables"))?;
            }
        }
        Ok(newly_applied)
    }

    /// Inserts the blocks of one or more requests for one table in one INSERT: the server writes
    /// them, and the materialized views see them, or none (a failed INSERT over HTTP is not partly
    /// applied for a single partition; blocks spanning partitions may be, as with any INSERT).
    /// An INSERT with the `dedup_token` of one already written is skipped by the server
    /// (migration 5 gives every table a deduplication window).
    pub async fn insert(
        &self,
        table: Table,
        blocks: &[&Bytes],
        dedup_token: &str,
    ) -> Result<(), Error> {
        let action = table.insert_action();
        let client = self
            .client
            .clone()
            .with_setting("insert_deduplication_token", dedup_token);
        let mut insert = client.insert_formatted_with(self.insert_sql[table as usize].as_str());
        for block in blocks {
            insert
                .send((*block).clone())
                .await
                .map_err(Error::clickhouse(action))?;
        }
        insert.end().await.map_err(Error::clickhouse(action))
    }

    async fn ensure_schema(&self) -> Result<(), Error> {
        if !self.create_schema {
            return Ok(());
        }
        self.schema_ready
            .get_or_try_init(|| async {
                let applied = self.migrate().await?;
                if !applied.is_empty() {
                    tracing::info!(versions = ?applied, "applied ClickHouse schema migrations");
                }
                Ok::<(), Error>(())
            })
            .await
            .map(|_| ())
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

impl Sink for ClickHouseSink {
    type Rows = Blocks;

    fn encode(signal: Signal, otlp: &[u8]) -> Result<Encoded<Blocks>, WireError> {
        match signal {
            Signal::Traces => traces::encode(otlp),
            Signal::Logs => logs::encode(otlp),
            Signal::Metrics => metrics::encode(otlp),
        }
    }

    /// One INSERT per table the requests have rows for, in a fixed order. ClickHouse has no
    /// transaction over several INSERTs: when one fails, the batch is retried whole, and the
    /// INSERTs that had succeeded are recognized by their deduplication token (the same requests
    /// give the same token) and skipped.
    async fn write(&self, pending: &[Pending<'_, Blocks>]) -> Result<Vec<Stored>, Error> {
        self.ensure_schema().await?;
        let batch = dedup_token(pending);
        for table in Table::ALL {
            let blocks: Vec<&Bytes> = pending.iter().filter_map(|p| p.rows.block(table)).collect();
            if !blocks.is_empty() {
                self.insert(table, &blocks, &format!("{batch}-{}", table.name()))
                    .await?;
            }
        }
        Ok(pending
            .iter()
            .map(|p| Stored {
                written: p.rows.rows(),
                ..Stored::default()
            })
            .collect())
    }

    /// Creates the schema at start, so tables and views exist before the first write.
    async fn maintain(&self) -> Result<(), Error> {
        self.ensure_schema().await
    }

    /// The HTTP client keeps no state that needs closing.
    fn close(&self) {}
}

/// Names the requests of a batch: a hash of their ids, in order. A request retried alone (by the
/// collector, after its caller gave up) gets the token it had when it was written alone, so the
/// common case of one request per INSERT is deduplicated across retries too.
fn dedup_token(pending: &[Pending<'_, Blocks>]) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for p in pending {
        hasher.update(&p.request_id);
    }
    format!("{:032x}", hasher.digest128())
}

/// A client over hyper with rustls, trusting the CA file's certificates or else the
/// system's. Built here rather than by the `clickhouse` crate, whose own client panics when the
/// system has no root certificates. otelstore-query reads through the same kind of client.
pub fn client_with_roots(ca_file: &str) -> Result<Client, Error> {
    let roots = if ca_file.is_empty() {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        roots
    } else {
        crate::sink::root_certificates("clickhouse.ca_file", ca_file)?
    };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| {
        Error::Config(ConfigError {
            field: "clickhouse.ca_file".into(),
            reason: format!("TLS setup failed: {e}"),
        })
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.set_keepalive(Some(TCP_KEEPALIVE));
    // A request's head and body can be two writes: with Nagle's algorithm the second would wait
    // for the server's delayed ACK (up to 40 ms) on a kept-alive connection.
    http.set_nodelay(true);
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::with_http_client(
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector),
    ))
}

fn placeholders(
    config: &ClickHouseConfig,
    retention: &Retention,
    quoted_database: &str,
) -> Vec<(&'static str, String)> {
    let replicated = config.engine() == TableEngine::ReplicatedMergeTree;
    // TTLs are whole days, rounded up: the tables are partitioned by day.
    let days = |kept: GoDuration| format!("toIntervalDay({})", kept.0.as_secs().div_ceil(86_400));
    let engine = |family: &str| {
        if replicated {
            format!("Replicated{family}('/clickhouse/tables/{{shard}}/{{database}}/{{table}}', '{{replica}}')")
        } else {
            format!("{family}()")
        }
    };
    vec![
        ("database", quoted_database.to_owned()),
        // Names are validated plain identifiers, so quoting them needs no escaping.
        ("database_literal", format!("'{}'", config.database)),
        ("cluster_literal", format!("'{}'", config.cluster_name)),
        (
            "on_cluster",
            if config.cluster_name.is_empty() {
                String::new()
            } else {
                format!(" ON CLUSTER \"{}\"", config.cluster_name)
            },
        ),
        ("engine", engine("MergeTree")),
        ("aggregating_engine", engine("AggregatingMergeTree")),
        ("replacing_engine", engine("ReplacingMergeTree")),
        ("ttl_raw", days(retention.raw)),
        ("ttl_5m", days(retention.rollup_5m)),
        ("ttl_1h", days(retention.rollup_1h)),
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
        let config = ClickHouseConfig {
            cluster_name: "c1".into(),
            ..Default::default()
        };
        let values = placeholders(&config, &Retention::default(), "\"otel\"");
        assert_eq!(
            render("CREATE TABLE {database}.t{on_cluster} ENGINE = {engine} TTL x + {ttl_raw} {unknown} {", &values),
            "CREATE TABLE \"otel\".t ON CLUSTER \"c1\" ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}') TTL x + toIntervalDay(30) {unknown} {"
        );
    }

    #[test]
    fn ttls_are_whole_days_rounded_up() {
        let retention = Retention {
            raw: GoDuration(Duration::from_secs(36 * 3600)),
            ..Default::default()
        };
        let values = placeholders(&ClickHouseConfig::default(), &retention, "\"otel\"");
        assert_eq!(
            render("{ttl_raw} {ttl_5m} {ttl_1h} {engine}", &values),
            "toIntervalDay(2) toIntervalDay(90) toIntervalDay(365) MergeTree()"
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
        let values = placeholders(
            &ClickHouseConfig::default(),
            &Retention::default(),
            "\"otel\"",
        );
        for sql in [BOOTSTRAP, DISTRIBUTED]
            .into_iter()
            .chain(MIGRATIONS.iter().map(|m| m.2))
        {
            let rendered = render(sql, &values);
            let code: String = rendered
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect();
            assert!(!code.contains('{'), "{rendered}");
        }
    }

    #[test]
    fn a_cluster_gets_distributed_tables_and_inserts_through_them() {
        let config = ClickHouseConfig {
            endpoint: "http://127.0.0.1:8123".into(),
            cluster_name: "main".into(),
            ..Default::default()
        };
        let sink = ClickHouseSink::new(&config, &Retention::default()).expect("valid");
        assert!(sink.insert_sql[Table::Traces as usize]
            .starts_with("INSERT INTO \"otel\".otel_traces_dist (`Timestamp`,"));
        let distributed = statements(&sink.render(DISTRIBUTED))
            .into_iter()
            .map(|statement| {
                statement
                    .lines()
                    .filter(|l| !l.starts_with("--"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>();
        assert_eq!(
            distributed[0],
            "CREATE TABLE IF NOT EXISTS \"otel\".otel_traces_dist ON CLUSTER \"main\" AS \"otel\".otel_traces \
             ENGINE = Distributed('main', 'otel', 'otel_traces', cityHash64(TraceId))"
        );
        // One Distributed table per table that holds rows (not the views' internal lookup).
        assert_eq!(distributed.len(), 13);
        for table in Table::ALL {
            assert!(
                distributed
                    .iter()
                    .any(|s| s.contains(&format!(".{}_dist ON CLUSTER", table.name()))),
                "{table:?}"
            );
        }
        let single = ClickHouseSink::new(
            &ClickHouseConfig {
                cluster_name: String::new(),
                ..config
            },
            &Retention::default(),
        )
        .expect("valid");
        assert!(single.insert_sql[Table::Traces as usize]
            .starts_with("INSERT INTO \"otel\".otel_traces (`Timestamp`,"));
    }
}
