//! The PostgreSQL sink: a small connection pool, schema migrations, and binary COPY writes that
//! commit the rows of many export requests together with the ids of those requests.

mod copy;
mod migrate;
pub mod logs;
pub mod metrics;
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

use crate::config::{ConfigError, PostgresConfig};
use crate::error::{Error, ErrorKind};
pub use copy::{Chunk, CopyRows};
pub use tls::root_certificates;

/// How long an export waits for a free connection before reporting the database as unavailable.
const POOL_WAIT: Duration = Duration::from_secs(30);
/// Request ids are kept this long: longer than the collector retries one request (5 minutes by
/// default) and than a restart from its persistent queue usually takes.
const REQUEST_ID_RETENTION: &str = "1 hour";
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// A table the sink writes, with its COPY statement.
pub struct Table {
    pub name: &'static str,
    copy_sql: String,
}

/// One export request's rows waiting to be written.
pub struct Pending<'a> {
    pub request_id: [u8; 16],
    pub chunk: &'a Chunk,
}

/// What became of one request's rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    pub written: u64,
    pub rejected: u64,
    pub first_rejection: Option<String>,
    /// The request had been stored before (a retry after a lost acknowledgement): nothing written.
    pub duplicate: bool,
}

pub struct PostgresSink {
    pool: Pool,
    quoted_schema: String,
    create_schema: bool,
    schema_ready: OnceCell<()>,
    last_prune: Mutex<Instant>,
    pub spans: Table,
}

impl PostgresSink {
    /// Builds the pool without connecting: a database that is down must not stop the collector from
    /// starting, only make writes retryable.
    pub fn new(config: &PostgresConfig) -> Result<Self, Error> {
        let mut pg_config = tokio_postgres::Config::from_str(&config.dsn).map_err(|e| {
            Error::Config(ConfigError { field: "postgres.dsn".into(), reason: format!("not a valid connection string: {e}") })
        })?;
        pg_config.connect_timeout(config.connect_timeout.0);
        if pg_config.get_application_name().is_none() {
            pg_config.application_name("otelstore");
        }
        let tls = tls::connector(&config.ca_file)?;
        let manager = Manager::from_config(pg_config, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(config.connect_timeout.0))
            .build()
            .map_err(|e| Error::Runtime(std::io::Error::other(e.to_string())))?;
        let quoted_schema = format!("\"{}\"", config.schema);
        let spans = Table {
            name: "spans",
            copy_sql: format!("COPY {quoted_schema}.spans ({}) FROM STDIN (FORMAT binary)", spans::COLUMNS.join(", ")),
        };
        Ok(Self {
            pool,
            quoted_schema,
            create_schema: config.create_schema,
            schema_ready: OnceCell::new(),
            last_prune: Mutex::new(Instant::now()),
            spans,
        })
    }

    /// Writes the rows of several requests in one transaction, skipping requests stored before.
    /// Returns one [`Stored`] per request, in order. When PostgreSQL refuses a value, the rows it
    /// refuses are found by bisection and left out; the others are written.
    pub async fn write(&self, table: &Table, pending: &[Pending<'_>]) -> Result<Vec<Stored>, Error> {
        self.ensure_schema().await?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.map_err(Error::postgres("begin"))?;
        let stored_before = self.stored_before(&tx, pending).await?;
        let fresh: Vec<&Pending<'_>> = pending.iter().filter(|p| !stored_before.contains(&p.request_id)).collect();
        let copied = copy(&tx, table, fresh.iter().map(|p| p.chunk.data.clone())).await;
        let outcomes: Vec<Stored> = match copied {
            Ok(_) => pending
                .iter()
                .map(|p| {
                    let duplicate = stored_before.contains(&p.request_id);
                    Stored { written: if duplicate { 0 } else { p.chunk.rows }, duplicate, ..Stored::default() }
                })
                .collect(),
            Err(error) if error.kind() == ErrorKind::Permanent => {
                drop(tx);
                let tx = client.transaction().await.map_err(Error::postgres("begin"))?;
                let outcomes = isolate_refused_rows(&tx, table, pending, &stored_before).await?;
                self.record_and_commit(tx, pending, &stored_before, &outcomes).await?;
                return Ok(outcomes);
            }
            Err(error) => return Err(error),
        };
        self.record_and_commit(tx, pending, &stored_before, &outcomes).await?;
        self.prune_request_ids(&client).await;
        Ok(outcomes)
    }

    /// Stops handing out connections and closes the idle ones.
    pub fn close(&self) {
        self.pool.close();
    }

    async fn stored_before(&self, tx: &Transaction<'_>, pending: &[Pending<'_>]) -> Result<HashSet<[u8; 16]>, Error> {
        let ids: Vec<&[u8]> = pending.iter().map(|p| &p.request_id[..]).collect();
        let rows = tx
            .query(&format!("SELECT id FROM {}.otelstore_batches WHERE id = ANY($1)", self.quoted_schema), &[&ids])
            .await
            .map_err(Error::postgres("look up stored request ids"))?;
        Ok(rows.iter().filter_map(|row| row.get::<_, &[u8]>(0).try_into().ok()).collect())
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
            .map(|(p, stored)| (&p.request_id[..], i64::try_from(stored.written).unwrap_or(i64::MAX)))
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
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => return Err(Error::ConcurrentDuplicate),
                Err(e) => return Err(Error::postgres("record request ids")(e)),
            }
        }
        tx.commit().await.map_err(Error::postgres("commit"))
    }

    /// Forgets request ids past the retention window, at most every few minutes, on the connection
    /// that just wrote. A failure here costs nothing but a log line.
    async fn prune_request_ids(&self, client: &deadpool_postgres::Object) {
        {
            let mut last = self.last_prune.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
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
                Ok(())
            })
            .await
            .map(|_| ())
    }
}

/// One COPY of the given row data, framed by the PGCOPY header and trailer.
async fn copy(tx: &Transaction<'_>, table: &Table, parts: impl Iterator<Item = Bytes>) -> Result<u64, Error> {
    let sink = tx.copy_in::<_, Bytes>(table.copy_sql.as_str()).await.map_err(Error::postgres("start COPY"))?;
    futures_util::pin_mut!(sink);
    sink.feed(Bytes::from_static(copy::HEADER)).await.map_err(Error::postgres("send COPY data"))?;
    for part in parts {
        sink.feed(part).await.map_err(Error::postgres("send COPY data"))?;
    }
    sink.feed(Bytes::from_static(copy::TRAILER)).await.map_err(Error::postgres("send COPY data"))?;
    sink.finish().await.map_err(Error::postgres("finish COPY"))
}

/// Writes each request's rows, bisecting under savepoints whenever PostgreSQL refuses a value, so
/// exactly the refused rows are left out. Costs about log2(rows) extra COPYs per refused row, and
/// runs only after a batch failed with a data error.
async fn isolate_refused_rows(
    tx: &Transaction<'_>,
    table: &Table,
    pending: &[Pending<'_>],
    stored_before: &HashSet<[u8; 16]>,
) -> Result<Vec<Stored>, Error> {
    let mut outcomes = Vec::with_capacity(pending.len());
    for p in pending {
        if stored_before.contains(&p.request_id) {
            outcomes.push(Stored { duplicate: true, ..Stored::default() });
            continue;
        }
        let rows = p.chunk.row_ranges();
        let mut stored = Stored::default();
        // A stack of row ranges still to write: the whole request first, halves after a refusal.
        let mut todo = Vec::new();
        todo.push(0..rows.len());
        while let Some(span) = todo.pop() {
            if span.is_empty() {
                continue;
            }
            tx.batch_execute("SAVEPOINT otelstore_rows").await.map_err(Error::postgres("set a savepoint"))?;
            let parts = rows[span.clone()].iter().map(|range| p.chunk.data.slice(range.clone()));
            match copy(tx, table, parts).await {
                Ok(written) => {
                    stored.written += written;
                    tx.batch_execute("RELEASE SAVEPOINT otelstore_rows").await.map_err(Error::postgres("release a savepoint"))?;
                }
                Err(error) if error.kind() == ErrorKind::Permanent => {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT otelstore_rows; RELEASE SAVEPOINT otelstore_rows")
                        .await
                        .map_err(Error::postgres("roll back to a savepoint"))?;
                    if span.len() == 1 {
                        stored.rejected += 1;
                        stored.first_rejection.get_or_insert_with(|| format!("row {} of the request: {error}", span.start));
                    } else {
                        let middle = span.start + span.len() / 2;
                        todo.push(middle..span.end);
                        todo.push(span.start..middle);
                    }
                }
                Err(error) => return Err(error),
            }
        }
        if stored.rejected > 0 {
            tracing::warn!(table = table.name, rejected = stored.rejected, reason = stored.first_rejection.as_deref().unwrap_or(""), "PostgreSQL refused rows; the others were written");
        }
        outcomes.push(stored);
    }
    Ok(outcomes)
}
