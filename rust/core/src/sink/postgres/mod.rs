//! The PostgreSQL sink: a small connection pool, schema migrations, and binary COPY writes that
//! commit the rows of many export requests together with the ids of those requests.

mod copy;
pub mod logs;
pub mod metrics;
mod migrate;
mod partitions;
pub mod rollup;
pub mod spans;
mod tls;

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::SinkExt;
use tokio::sync::OnceCell;
use tokio_postgres::error::SqlState;
use tokio_postgres::Transaction;

use super::{Encoded, Rows, Sink, Stored};
use crate::config::{ConfigError, PostgresConfig, Retention};
use crate::error::{Error, ErrorKind};
use crate::signal::Signal;
use crate::wire::WireError;

/// One export request's rows waiting to be written.
pub type Pending<'a> = super::Pending<'a, RequestRows>;
pub use copy::{Chunk, CopyRows};
use rollup::Rollups;
/// TLS for connections to PostgreSQL, as the exporter makes them (also used by otelstore-query).
pub use tls::connector as tls_connector;

/// How long an export waits for a free connection before reporting the database as unavailable.
const POOL_WAIT: Duration = Duration::from_secs(30);
/// Request ids are kept this long: longer than the collector retries one request (5 minutes by
/// default) and than a restart from its persistent queue usually takes.
const REQUEST_ID_RETENTION: &str = "1 hour";
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// The tables export requests are copied into, in the order a transaction writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableId {
    Spans,
    PendingDependencies,
    Logs,
    MetricsGauge,
    MetricsSum,
    MetricsHistogram,
    MetricsExponentialHistogram,
    MetricsSummary,
}

impl TableId {
    const ALL: [TableId; 8] = [
        TableId::Spans,
        TableId::PendingDependencies,
        TableId::Logs,
        TableId::MetricsGauge,
        TableId::MetricsSum,
        TableId::MetricsHistogram,
        TableId::MetricsExponentialHistogram,
        TableId::MetricsSummary,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TableId::Spans => "spans",
            TableId::PendingDependencies => "otelstore_pending_dependencies",
            TableId::Logs => "logs",
            TableId::MetricsGauge => "metrics_gauge",
            TableId::MetricsSum => "metrics_sum",
            TableId::MetricsHistogram => "metrics_histogram",
            TableId::MetricsExponentialHistogram => "metrics_exponential_histogram",
            TableId::MetricsSummary => "metrics_summary",
        }
    }

    fn columns(self) -> &'static [&'static str] {
        match self {
            TableId::Spans => spans::COLUMNS,
            TableId::PendingDependencies => spans::PENDING_DEPENDENCY_COLUMNS,
            TableId::Logs => logs::COLUMNS,
            TableId::MetricsGauge => metrics::GAUGE_COLUMNS,
            TableId::MetricsSum => metrics::SUM_COLUMNS,
            TableId::MetricsHistogram => metrics::HISTOGRAM_COLUMNS,
            TableId::MetricsExponentialHistogram => metrics::EXPONENTIAL_HISTOGRAM_COLUMNS,
            TableId::MetricsSummary => metrics::SUMMARY_COLUMNS,
        }
    }

    /// Whether the table holds telemetry, whose rows callers count; the others are bookkeeping.
    fn holds_data(self) -> bool {
        self != TableId::PendingDependencies
    }
}

/// Everything one export request writes: its rows per table and what they add to the rollups.
#[derive(Default)]
pub struct RequestRows {
    pub tables: Vec<(TableId, Chunk)>,
    pub rollups: rollup::Rollups,
}

impl Rows for RequestRows {
    fn rows(&self) -> u64 {
        self.tables
            .iter()
            .filter(|(table, _)| table.holds_data())
            .map(|(_, chunk)| chunk.rows)
            .sum()
    }

    fn bytes(&self) -> usize {
        self.tables.iter().map(|(_, chunk)| chunk.data.len()).sum()
    }
}

impl RequestRows {
    /// Adds a table's rows, if there are any.
    pub fn add(&mut self, table: TableId, rows: CopyRows) {
        if rows.rows() > 0 {
            self.tables.push((table, rows.finish()));
        }
    }

    fn chunk(&self, table: TableId) -> Option<&Chunk> {
        self.tables
            .iter()
            .find(|(t, _)| *t == table)
            .map(|(_, chunk)| chunk)
    }
}

pub struct PostgresSink {
    pool: Pool,
    quoted_schema: String,
    create_schema: bool,
    schema_ready: OnceCell<()>,
    last_prune: Mutex<Instant>,
    /// COPY statements, indexed by `TableId as usize`.
    copy_sql: Vec<String>,
    maintenance: partitions::Maintenance,
}

impl Sink for PostgresSink {
    type Rows = RequestRows;

    fn encode(signal: Signal, otlp: &[u8]) -> Result<Encoded<RequestRows>, WireError> {
        let mut rows = RequestRows::default();
        let (rejected, first_rejection) = match signal {
            Signal::Traces => {
                let encoded = spans::encode(otlp)?;
                rows.add(TableId::Spans, encoded.rows);
                rows.add(TableId::PendingDependencies, encoded.pending_dependencies);
                rows.rollups = encoded.rollups;
                (encoded.rejected, encoded.first_rejection)
            }
            Signal::Logs => {
                let encoded = logs::encode(otlp)?;
                rows.add(TableId::Logs, encoded.rows);
                rows.rollups = encoded.rollups;
                (encoded.rejected, encoded.first_rejection)
            }
            Signal::Metrics => {
                let encoded = metrics::encode(otlp)?;
                rows.add(TableId::MetricsGauge, encoded.gauge);
                rows.add(TableId::MetricsSum, encoded.sum);
                rows.add(TableId::MetricsHistogram, encoded.histogram);
                rows.add(
                    TableId::MetricsExponentialHistogram,
                    encoded.exponential_histogram,
                );
                rows.add(TableId::MetricsSummary, encoded.summary);
                rows.rollups = encoded.rollups;
                (encoded.rejected, encoded.first_rejection)
            }
        };
        Ok(Encoded {
            rows,
            rejected,
            first_rejection,
        })
    }

    /// Writes the rows of several requests in one transaction, with their rollups, skipping
    /// requests stored before. Returns one [`Stored`] per request, in order. When PostgreSQL
    /// refuses a value, the rows it refuses are found by bisection and left out; the others are
    /// written.
    async fn write(&self, pending: &[Pending<'_>]) -> Result<Vec<Stored>, Error> {
        self.ensure_schema().await?;
        let mut client = self.pool.get().await?;
        let tx = client
            .transaction()
            .await
            .map_err(Error::postgres("begin"))?;
        let stored_before = self.stored_before(&tx, pending).await?;
        let fresh: Vec<&Pending<'_>> = pending
            .iter()
            .filter(|p| !stored_before.contains(&p.request_id))
            .collect();
        let mut copied = Ok(());
        for table in TableId::ALL {
            let parts: Vec<Bytes> = fresh
                .iter()
                .filter_map(|p| p.rows.chunk(table))
                .map(|chunk| chunk.data.clone())
                .collect();
            if !parts.is_empty() {
                copied = copy(&tx, self.copy_sql(table), parts).await.map(|_| ());
                if copied.is_err() {
                    break;
                }
            }
        }
        let outcomes: Vec<Stored> = match copied {
            Ok(()) => pending
                .iter()
                .map(|p| {
                    let duplicate = stored_before.contains(&p.request_id);
                    Stored {
                        written: if duplicate { 0 } else { p.rows.rows() },
                        duplicate,
                        ..Stored::default()
                    }
                })
                .collect(),
            Err(error) if error.kind() == ErrorKind::Permanent => {
                drop(tx);
                let tx = client
                    .transaction()
                    .await
                    .map_err(Error::postgres("begin"))?;
                let outcomes = self
                    .isolate_refused_rows(&tx, pending, &stored_before)
                    .await?;
                self.upsert_rollups(&tx, &fresh).await?;
                self.record_and_commit(tx, pending, &stored_before, &outcomes)
                    .await?;
                return Ok(outcomes);
            }
            Err(error) => return Err(error),
        };
        self.upsert_rollups(&tx, &fresh).await?;
        self.record_and_commit(tx, pending, &stored_before, &outcomes)
            .await?;
        self.prune_request_ids(&client).await;
        Ok(outcomes)
    }

    /// Creates upcoming partitions, drops expired ones and resolves pending service dependencies;
    /// see partitions.rs. Does nothing when the exporter does not manage the schema.
    async fn maintain(&self) -> Result<(), Error> {
        if !self.create_schema {
            return Ok(());
        }
        self.ensure_schema().await?;
        let mut client = self.pool.get().await?;
        self.maintenance.run(&mut client).await
    }

    fn close(&self) {
        self.pool.close();
    }
}

impl PostgresSink {
    /// Builds the pool without connecting: a database that is down must not stop the collector from
    /// starting, only make writes retryable.
    pub fn new(config: &PostgresConfig, retention: &Retention) -> Result<Self, Error> {
        let mut pg_config = tokio_postgres::Config::from_str(&config.dsn).map_err(|e| {
            Error::Config(ConfigError {
                field: "postgres.dsn".into(),
                reason: format!("not a valid connection string: {e}"),
            })
        })?;
        pg_config.connect_timeout(config.connect_timeout.0);
        if pg_config.get_application_name().is_none() {
            pg_config.application_name("otelstore");
        }
        let tls = tls::connector(&config.ca_file)?;
        let manager = Manager::from_config(
            pg_config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(config.connect_timeout.0))
            .build()
            .map_err(|e| Error::Runtime(std::io::Error::other(e.to_string())))?;
        let quoted_schema = format!("\"{}\"", config.schema);
        let copy_sql = TableId::ALL
            .iter()
            .map(|table| {
                format!(
                    "COPY {quoted_schema}.{} ({}) FROM STDIN (FORMAT binary)",
                    table.name(),
                    table.columns().join(", ")
                )
            })
            .collect();
        Ok(Self {
            pool,
            maintenance: partitions::Maintenance::new(quoted_schema.clone(), retention),
            quoted_schema,
            create_schema: config.create_schema,
            schema_ready: OnceCell::new(),
            last_prune: Mutex::new(Instant::now()),
            copy_sql,
        })
    }

    fn copy_sql(&self, table: TableId) -> &str {
        &self.copy_sql[table as usize]
    }

    /// Rollups of the requests written, in the same transaction. Rows PostgreSQL refused are
    /// still counted in them; only a constraint added to the tables by hand refuses rows.
    async fn upsert_rollups(
        &self,
        tx: &Transaction<'_>,
        fresh: &[&Pending<'_>],
    ) -> Result<(), Error> {
        match fresh {
            [] => Ok(()),
            [one] => one.rows.rollups.upsert(tx, &self.quoted_schema).await,
            several => {
                let mut total = Rollups::default();
                for p in several {
                    total.merge(&p.rows.rollups);
                }
                total.upsert(tx, &self.quoted_schema).await
            }
        }
    }

    async fn stored_before(
        &self,
        tx: &Transaction<'_>,
        pending: &[Pending<'_>],
    ) -> Result<HashSet<[u8; 16]>, Error> {
        let ids: Vec<&[u8]> = pending.iter().map(|p| &p.request_id[..]).collect();
        let rows = tx
            .query(
                &format!(
                    "SELECT id FROM {}.otelstore_batches WHERE id = ANY($1)",
                    self.quoted_schema
                ),
                &[&ids],
            )
            .await
            .map_err(Error::postgres("look up stored request ids"))?;
        Ok(rows
            .iter()
            .filter_map(|row| row.get::<_, &[u8]>(0).try_into().ok())
            .collect())
    }

    async fn record_and_commit(
        &self,
        tx: deadpool_postgres::Transaction<'_>,
        pending: &[Pending<'_>],
        stored_before: &HashSet<[u8; 16]>,
        outcomes: &[Stored],
    ) -> Result<(), Error> {
        let (ids, rows): (Vec<&[u8]>, Vec<i64>) = pending
            .iter()
            .zip(outcomes)
            .filter(|(p, _)| !stored_before.contains(&p.request_id))
            .map(|(p, stored)| {
                (
                    &p.request_id[..],
                    i64::try_from(stored.written).unwrap_or(i64::MAX),
                )
            })
            .unzip();
        if !ids.is_empty() {
            let recorded = tx
                .execute(
                    &format!("INSERT INTO {}.otelstore_batches (id, rows) SELECT * FROM unnest($1::bytea[], $2::int8[])", self.quoted_schema),
                    &[&ids, &rows],
                )
                .await;
            match recorded {
                Ok(_) => {}
                // Another writer committed one of these requests meanwhile: retry, and the lookup
                // will skip it.
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    return Err(Error::ConcurrentDuplicate)
                }
                Err(e) => return Err(Error::postgres("record request ids")(e)),
            }
        }
        tx.commit().await.map_err(Error::postgres("commit"))
    }

    /// Forgets request ids past the retention window, at most every few minutes, on the connection
    /// that just wrote. A failure here costs nothing but a log line.
    async fn prune_request_ids(&self, client: &deadpool_postgres::Object) {
        {
            let mut last = self
                .last_prune
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if last.elapsed() < PRUNE_EVERY {
                return;
            }
            *last = Instant::now();
        }
        let sql = format!(
            "DELETE FROM {}.otelstore_batches WHERE stored_at < now() - interval '{REQUEST_ID_RETENTION}'",
            self.quoted_schema
        );
        if let Err(error) = client.execute(sql.as_str(), &[]).await {
            tracing::warn!(%error, "could not prune old request ids");
        }
    }

    async fn ensure_schema(&self) -> Result<(), Error> {
        if !self.create_schema {
            return Ok(());
        }
        self.schema_ready
            .get_or_try_init(|| async {
                let mut client = self.pool.get().await?;
                let applied = migrate::apply(&mut client, &self.quoted_schema).await?;
                if !applied.is_empty() {
                    tracing::info!(schema = %self.quoted_schema, versions = ?applied, "applied schema migrations");
                }
                // Today's partitions must exist before the first rows arrive, or they would all
                // go through the default partitions.
                self.maintenance.create_partitions(&mut client).await
            })
            .await
            .map(|_| ())
    }
}

/// One COPY of the given row data, framed by the PGCOPY header and trailer.
async fn copy(tx: &Transaction<'_>, sql: &str, parts: Vec<Bytes>) -> Result<u64, Error> {
    let sink = tx
        .copy_in::<_, Bytes>(sql)
        .await
        .map_err(Error::postgres("start COPY"))?;
    futures_util::pin_mut!(sink);
    sink.feed(Bytes::from_static(copy::HEADER))
        .await
        .map_err(Error::postgres("send COPY data"))?;
    for part in parts {
        sink.feed(part)
            .await
            .map_err(Error::postgres("send COPY data"))?;
    }
    sink.feed(Bytes::from_static(copy::TRAILER))
        .await
        .map_err(Error::postgres("send COPY data"))?;
    sink.finish().await.map_err(Error::postgres("finish COPY"))
}

impl PostgresSink {
    /// Writes each request's rows, bisecting under savepoints whenever PostgreSQL refuses a value,
    /// so exactly the refused rows are left out. Costs about log2(rows) extra COPYs per refused
    /// row, and runs only after a batch failed with a data error.
    async fn isolate_refused_rows(
        &self,
        tx: &Transaction<'_>,
        pending: &[Pending<'_>],
        stored_before: &HashSet<[u8; 16]>,
    ) -> Result<Vec<Stored>, Error> {
        let mut outcomes = Vec::with_capacity(pending.len());
        for p in pending {
            if stored_before.contains(&p.request_id) {
                outcomes.push(Stored {
                    duplicate: true,
                    ..Stored::default()
                });
                continue;
            }
            let mut stored = Stored::default();
            for (table, chunk) in &p.rows.tables {
                let (written, rejected, first) = self.copy_bisecting(tx, *table, chunk).await?;
                if table.holds_data() {
                    stored.written += written;
                    stored.rejected += rejected;
                    if stored.first_rejection.is_none() {
                        stored.first_rejection = first;
                    }
                }
            }
            outcomes.push(stored);
        }
        Ok(outcomes)
    }

    /// Copies one request's rows of one table; returns the rows written and refused, and the first refusal.
    async fn copy_bisecting(
        &self,
        tx: &Transaction<'_>,
        table: TableId,
        chunk: &Chunk,
    ) -> Result<(u64, u64, Option<String>), Error> {
        let rows = chunk.row_ranges();
        let (mut written, mut rejected, mut first_rejection) = (0, 0, None);
        // A stack of row ranges still to write: the whole request first, halves after a refusal.
        let mut todo = Vec::new();
        todo.push(0..rows.len());
        while let Some(span) = todo.pop() {
            if span.is_empty() {
                continue;
            }
            tx.batch_execute("SAVEPOINT otelstore_rows")
                .await
                .map_err(Error::postgres("set a savepoint"))?;
            let parts: Vec<Bytes> = rows[span.clone()]
                .iter()
                .map(|range| chunk.data.slice(range.clone()))
                .collect();
            match copy(tx, self.copy_sql(table), parts).await {
                Ok(count) => {
                    written += count;
                    tx.batch_execute("RELEASE SAVEPOINT otelstore_rows")
                        .await
                        .map_err(Error::postgres("release a savepoint"))?;
                }
                Err(error) if error.kind() == ErrorKind::Permanent => {
                    tx.batch_execute(
                        "ROLLBACK TO SAVEPOINT otelstore_rows; RELEASE SAVEPOINT otelstore_rows",
                    )
                    .await
                    .map_err(Error::postgres("roll back to a savepoint"))?;
                    if span.len() == 1 {
                        rejected += 1;
                        first_rejection.get_or_insert_with(|| {
                            format!(
                                "{} row {} of the request: {error}",
                                table.name(),
                                span.start
                            )
                        });
                    } else {
                        let middle = span.start + span.len() / 2;
                        todo.push(middle..span.end);
                        todo.push(span.start..middle);
                    }
                }
                Err(error) => return Err(error),
            }
        }
        if rejected > 0 {
            tracing::warn!(
                table = table.name(),
                rejected,
                reason = first_rejection.as_deref().unwrap_or(""),
                "PostgreSQL refused rows; the others were written"
            );
        }
        Ok((written, rejected, first_rejection))
    }
}
