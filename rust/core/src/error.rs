//! Errors of the core, and the one decision every caller needs from them: retry or not.

use crate::config::ConfigError;
use crate::signal::Signal;

/// What a caller should do with data that was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration is wrong; nothing will work until it is fixed.
    InvalidConfig,
    /// This data can never be written as sent; retrying it would fail the same way.
    Permanent,
    /// Nothing was acknowledged, but the same data may be written later.
    Retryable,
    /// The exporter was used after shutdown.
    ShutDown,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),

    #[error("malformed OTLP {signal} request ({len} bytes): {source}")]
    Decode { signal: Signal, len: usize, source: crate::wire::WireError },

    #[error("{written} {} written, {rejected} rejected; first rejection: {first}", signal.items())]
    RowsRejected { signal: Signal, written: u64, rejected: u64, first: String },

    #[error("PostgreSQL: {action}: {}", chain(source))]
    Postgres { action: &'static str, source: tokio_postgres::Error },

    #[error("PostgreSQL: no connection available: {}", chain(.0))]
    Pool(#[from] deadpool_postgres::PoolError),

    #[error("the exporter is shut down")]
    ShutDown,

    #[error("the exporter shut down before this data was written")]
    ShutDownBeforeWrite,

    #[error("memory limit reached: {bytes} bytes do not fit beside the {held} held (limit {limit} bytes)")]
    MemoryLimit { bytes: usize, held: usize, limit: usize },

    #[error("a write attempt took longer than {0:?}")]
    WriteTimeout(std::time::Duration),

    #[error("another writer stored a request of this batch at the same time")]
    ConcurrentDuplicate,

    #[error("not written before the export deadline; last error: {last_error}")]
    DeadlineExceeded { last_error: String },

    /// One failure of a merged write, reported to each export call that was part of it.
    #[error("{message}")]
    BatchFailed { retryable: bool, message: String },

    #[error("could not start the exporter's runtime: {0}")]
    Runtime(#[source] std::io::Error),

    #[error("shutdown timed out: {rows} rows were not written")]
    ShutdownTimedOut { rows: u64 },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) => ErrorKind::InvalidConfig,
            Error::Decode { .. } | Error::RowsRejected { .. } => ErrorKind::Permanent,
            Error::Postgres { source, .. } => postgres_kind(source),
            Error::Pool(_)
            | Error::Runtime(_)
            | Error::ShutdownTimedOut { .. }
            | Error::ShutDownBeforeWrite
            | Error::MemoryLimit { .. }
            | Error::WriteTimeout(_)
            | Error::ConcurrentDuplicate
            | Error::DeadlineExceeded { .. } => ErrorKind::Retryable,
            Error::BatchFailed { retryable: true, .. } => ErrorKind::Retryable,
            Error::BatchFailed { retryable: false, .. } => ErrorKind::Permanent,
            Error::ShutDown => ErrorKind::ShutDown,
        }
    }

    pub(crate) fn postgres(action: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
        move |source| Error::Postgres { action, source }
    }
}

/// Errors without a SQLSTATE are I/O or protocol failures (refused, reset, closed): retryable.
/// With one, the class decides: bad data (22), constraint violations (23) and values beyond a
/// program limit (54, such as a jsonb too large) fail the same way on every attempt; anything else
/// (connection loss, serialization failure, shutdown, a missing table an operator may still create,
/// a full disk) may succeed later.
fn postgres_kind(error: &tokio_postgres::Error) -> ErrorKind {
    match error.code().map(|state| &state.code()[..2]) {
        Some("22") | Some("23") | Some("54") => ErrorKind::Permanent,
        _ => ErrorKind::Retryable,
    }
}

/// An error and its causes, "outer: inner: innermost", since the outer messages of the database
/// client ("error connecting to server") hide the useful part ("Connection refused").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl Error {
    /// A copy of this failure for each export call that shared the write.
    pub fn for_each_call(&self) -> Error {
        Error::BatchFailed { retryable: self.kind() == ErrorKind::Retryable, message: self.to_string() }
    }
}
