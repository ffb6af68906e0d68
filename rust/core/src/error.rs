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
    Decode {
        signal: Signal,
        len: usize,
        source: crate::wire::WireError,
    },

    #[error("{written} {} written, {rejected} rejected; first rejection: {first}", signal.items())]
    RowsRejected {
        signal: Signal,
        written: u64,
        rejected: u64,
        first: String,
    },

    #[error("PostgreSQL: {action}: {}", chain(source))]
    Postgres {
        action: &'static str,
        source: tokio_postgres::Error,
    },

    #[error("ClickHouse: {action}: {}", chain(source))]
    ClickHouse {
        action: &'static str,
        source: clickhouse::error::Error,
    },

    #[error("PostgreSQL: no connection available: {}", chain(.0))]
    Pool(#[from] deadpool_postgres::PoolError),

    #[error("the exporter is shut down")]
    ShutDown,

    #[error("the exporter shut down before this data was written")]
    ShutDownBeforeWrite,

    #[error("memory limit reached: {bytes} bytes do not fit beside the {held} held (limit {limit} bytes)")]
    MemoryLimit {
        bytes: usize,
        held: usize,
        limit: usize,
    },

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
            Error::ClickHouse { source, .. } => clickhouse_kind(source),
            Error::Pool(_)
            | Error::Runtime(_)
            | Error::ShutdownTimedOut { .. }
            | Error::ShutDownBeforeWrite
            | Error::MemoryLimit { .. }
            | Error::WriteTimeout(_)
            | Error::ConcurrentDuplicate
            | Error::DeadlineExceeded { .. } => ErrorKind::Retryable,
            Error::BatchFailed {
                retryable: true, ..
            } => ErrorKind::Retryable,
            Error::BatchFailed {
                retryable: false, ..
            } => ErrorKind::Permanent,
            Error::ShutDown => ErrorKind::ShutDown,
        }
    }

    pub(crate) fn postgres(action: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
        move |source| Error::Postgres { action, source }
    }

    pub(crate) fn clickhouse(
        action: &'static str,
    ) -> impl FnOnce(clickhouse::error::Error) -> Error {
        move |source| Error::ClickHouse { action, source }
    }
}

/// ClickHouse exception codes that mean the data sent can never be inserted as it is: it does not
/// parse, does not fit its column, or does not match the table's columns. A retry fails the same way.
const CLICKHOUSE_BAD_DATA: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    16,  // NO_SUCH_COLUMN_IN_TABLE
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    32,  // ATTEMPT_TO_READ_AFTER_EOF
    33,  // CANNOT_READ_ALL_DATA
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    43,  // ILLEGAL_TYPE_OF_ARGUMENT
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    131, // TOO_LARGE_STRING_SIZE
    190, // SIZES_OF_ARRAYS_DONT_MATCH
    321, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
];

/// The exception code at the start of a ClickHouse error text: `Code: 27. DB::Exception: ...`.
pub fn clickhouse_exception_code(text: &str) -> Option<u32> {
    let rest = text.trim_start().strip_prefix("Code:")?.trim_start();
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

/// An exception for bad data is permanent; everything else (connection refused or reset, timeouts,
/// a server that is starting, too many parts, memory limits, a table an operator may still create,
/// authentication that may be fixed) may succeed later.
fn clickhouse_kind(error: &clickhouse::error::Error) -> ErrorKind {
    match error {
        clickhouse::error::Error::BadResponse(text) => match clickhouse_exception_code(text) {
            Some(code) if CLICKHOUSE_BAD_DATA.contains(&code) => ErrorKind::Permanent,
            _ => ErrorKind::Retryable,
        },
        _ => ErrorKind::Retryable,
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
pub fn chain(error: &dyn std::error::Error) -> String {
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
        Error::BatchFailed {
            retryable: self.kind() == ErrorKind::Retryable,
            message: self.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clickhouse_bad_data_is_permanent_and_the_rest_retryable() {
        assert_eq!(
            clickhouse_exception_code(
                "Code: 33. DB::Exception: Cannot read all data. (CANNOT_READ_ALL_DATA)"
            ),
            Some(33)
        );
        assert_eq!(
            clickhouse_exception_code("  Code: 241. DB::Exception: Memory limit"),
            Some(241)
        );
        assert_eq!(clickhouse_exception_code("bad gateway"), None);
        let kind = |text: &str| {
            Error::ClickHouse {
                action: "insert spans",
                source: clickhouse::error::Error::BadResponse(text.into()),
            }
            .kind()
        };
        assert_eq!(
            kind("Code: 53. DB::Exception: Type mismatch"),
            ErrorKind::Permanent
        );
        assert_eq!(
            kind("Code: 60. DB::Exception: Unknown table"),
            ErrorKind::Retryable
        );
        assert_eq!(
            kind("Code: 252. DB::Exception: Too many parts"),
            ErrorKind::Retryable
        );
        assert_eq!(kind("502 Bad Gateway"), ErrorKind::Retryable);
        let timed_out = Error::ClickHouse {
            action: "insert spans",
            source: clickhouse::error::Error::TimedOut,
        };
        assert_eq!(timed_out.kind(), ErrorKind::Retryable);
    }
}
