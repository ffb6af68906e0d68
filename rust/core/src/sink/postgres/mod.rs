//! The PostgreSQL sink: a small connection pool, schema migrations, and binary COPY writes.

mod copy;
mod migrate;
pub mod spans;

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::SinkExt;
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;

use crate::config::PostgresConfig;
use crate::error::Error;
pub use copy::CopyRows;

/// How long an export waits for a free connection before reporting the database as unavailable.
const POOL_WAIT: Duration = Duration::from_secs(30);

pub struct PostgresSink {
    pool: Pool,
    quoted_schema: String,
    create_schema: bool,
    schema_ready: OnceCell<()>,
    copy_spans: String,
}

impl PostgresSink {
    /// Builds the pool without connecting: a database that is down must not stop the collector from
    /// starting, only make writes retryable.
    pub fn new(config: &PostgresConfig) -> Result<Self, Error> {
        let mut pg_config = tokio_postgres::Config::from_str(&config.dsn).map_err(|e| {
            Error::Config(crate::config::ConfigError { field: "postgres.dsn".into(), reason: format!("not a valid connection string: {e}") })
        })?;
        pg_config.connect_timeout(config.connect_timeout.0);
        if pg_config.get_application_name().is_none() {
            pg_config.application_name("otelstore");
        }
        let manager = Manager::from_config(pg_config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(config.connect_timeout.0))
            .build()
            .map_err(|e| Error::Runtime(std::io::Error::other(e.to_string())))?;
        let quoted_schema = format!("\"{}\"", config.schema);
        let copy_spans = format!("COPY {quoted_schema}.spans ({}) FROM STDIN (FORMAT binary)", spans::COLUMNS.join(", "));
        Ok(Self { pool, quoted_schema, create_schema: config.create_schema, schema_ready: OnceCell::new(), copy_spans })
    }

    /// Writes the rows with one COPY, which commits on its own; returns the rows stored.
    pub async fn write_spans(&self, rows: CopyRows) -> Result<u64, Error> {
        let expected = rows.rows();
        if expected == 0 {
            return Ok(0);
        }
        self.ensure_schema().await?;
        let client = self.pool.get().await?;
        let sink = client.copy_in::<_, bytes::Bytes>(self.copy_spans.as_str()).await.map_err(Error::postgres("start COPY into spans"))?;
        futures_util::pin_mut!(sink);
        sink.send(rows.finish()).await.map_err(Error::postgres("send COPY data for spans"))?;
        sink.finish().await.map_err(Error::postgres("finish COPY into spans"))
    }

    /// Stops handing out connections and closes the idle ones.
    pub fn close(&self) {
        self.pool.close();
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
