//! Errors of the core, and the one decision every caller needs from them: retry or not.

use crate::config::ConfigError;
use crate::decode::Signal;

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
    Decode { signal: Signal, len: usize, source: prost::DecodeError },

    #[error("{signal} are not supported yet: only traces are stored")]
    UnsupportedSignal { signal: Signal },

    #[error("{written} spans written, {rejected} rejected; first rejection: {first}")]
    RowsRejected { written: u64, rejected: u64, first: String },

    #[error("PostgreSQL: {action}: {source}")]
    Postgres { action: &'static str, source: tokio_postgres::Error },

    #[error("PostgreSQL: no connection available: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),

    #[error("the exporter is shut down")]
    ShutDown,

    #[error("could not start the exporter's runtime: {0}")]
    Runtime(#[source] std::io::Error),

    #[error("shutdown timed out with {in_flight} export calls still writing")]
    ShutdownTimedOut { in_flight: usize },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) => ErrorKind::InvalidConfig,
            Error::Decode { .. } | Error::UnsupportedSignal { .. } | Error::RowsRejected { .. } => ErrorKind::Permanent,
            Error::Postgres { source, .. } => postgres_kind(source),
            Error::Pool(_) | Error::Runtime(_) | Error::ShutdownTimedOut { .. } => {
                ErrorKind::Retryable
            }
            Error::ShutDown => ErrorKind::ShutDown,
        }
    }

    pub(crate) fn postgres(action: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
        move |source| Error::Postgres { action, source }
    }
}

/// Errors without a SQLSTATE are I/O or protocol failures (refused, reset, closed): retryable.
/// With one, the class decides: bad data (22) and constraint violations (23) fail the same way on
/// every attempt; anything else (connection loss, serialization failure, shutdown, missing table
/// that an operator may still create, out of disk) may succeed later.
fn postgres_kind(error: &tokio_postgres::Error) -> ErrorKind {
    match error.code().map(|state| &state.code()[..2]) {
        Some("22") | Some("23") => ErrorKind::Permanent,
        _ => ErrorKind::Retryable,
    }
}
