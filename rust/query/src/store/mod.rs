//! What the APIs ask of a backend. PostgreSQL and ClickHouse each answer it from the tables the
//! exporter writes (schema/).

pub mod clickhouse;
pub mod postgres;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Backend;
use crate::model::{
    DependencyLink, Operation, ServiceStats, SpanKind, StatsQuery, StatusCode, Trace, TraceId,
};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached, or has no connection to spare: the API answers 503.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database stopped the query at the store's query timeout: the API answers 504, as for
    /// a request that outlives its request_timeout.
    #[error("{action}: the database stopped the query at the time allowed: {message}")]
    Timeout {
        action: &'static str,
        message: String,
    },
    /// The database answered with an error: the API answers 500.
    #[error("{action}: {message}")]
    Query {
        action: &'static str,
        message: String,
    },
}

/// One condition on a span of a trace search. Jaeger's derived tags (`error`, `span.kind`,
/// `otel.status_code`) become conditions on the columns they come from; any other tag matches a
/// span attribute or a resource attribute whose value, as a string, is the one given.
#[derive(Debug, Clone, PartialEq)]
pub enum TagFilter {
    Attribute {
        key: String,
        value: String,
    },
    Kind(SpanKind),
    Status(StatusCode),
    /// `error=true`: the status is Error; `error=false`: it is not.
    Error(bool),
}

impl TagFilter {
    /// The condition a Jaeger tag `key=value` asks for.
    pub fn from_jaeger(key: &str, value: &str) -> TagFilter {
        let attribute = || TagFilter::Attribute {
            key: key.to_owned(),
            value: value.to_owned(),
        };
        match key {
            "error" => match value {
                "true" => TagFilter::Error(true),
                "false" => TagFilter::Error(false),
                _ => attribute(),
            },
            "span.kind" => SpanKind::from_jaeger(value).map_or_else(attribute, TagFilter::Kind),
            "otel.status_code" => match value {
                "OK" => TagFilter::Status(StatusCode::Ok),
                "ERROR" => TagFilter::Status(StatusCode::Error),
                "UNSET" => TagFilter::Status(StatusCode::Unset),
                _ => attribute(),
            },
            _ => attribute(),
        }
    }
}

/// A trace search: traces with at least one span that meets every condition.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceQuery {
    pub service: Option<String>,
    /// The span name.
    pub operation: Option<String>,
    pub tags: Vec<TagFilter>,
    /// The span starts within [start_min, start_max], in nanoseconds since the epoch.
    pub start_min_unix_nano: i64,
    pub start_max_unix_nano: i64,
    pub duration_min_ns: Option<i64>,
    pub duration_max_ns: Option<i64>,
    /// At most this many traces, the most recent first.
    pub limit: usize,
}

/// A database that holds what the exporter wrote.
pub trait Store: Send + Sync {
    /// Every service name seen, sorted.
    fn services(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;

    /// The operations of a service, of one kind or all, sorted by name then kind.
    fn operations<'a>(
        &'a self,
        service: &'a str,
        kind: Option<SpanKind>,
    ) -> BoxFuture<'a, Result<Vec<Operation>, StoreError>>;

    /// The ids of the traces that match, the most recently started first.
    fn find_trace_ids<'a>(
        &'a self,
        query: &'a TraceQuery,
    ) -> BoxFuture<'a, Result<Vec<TraceId>, StoreError>>;

    /// Every stored span of these traces, one [`Trace`] per id that has any. With `window`
    /// (nanoseconds), only spans that start within it are looked at, which is faster.
    fn traces<'a>(
        &'a self,
        ids: &'a [TraceId],
        window: Option<(i64, i64)>,
    ) -> BoxFuture<'a, Result<Vec<Trace>, StoreError>>;

    /// Calls between services whose callee span started within [start, end] nanoseconds.
    fn dependencies(
        &self,
        start_unix_nano: i64,
        end_unix_nano: i64,
    ) -> BoxFuture<'_, Result<Vec<DependencyLink>, StoreError>>;

    /// Per service with spans that started within the query's window, sorted by service: how
    /// many, how many failed, and percentiles of their durations, read from the query's source
    /// (the hourly statistics cover the window [`StatsQuery::covered`] gives).
    fn service_stats<'a>(
        &'a self,
        query: &'a StatsQuery,
    ) -> BoxFuture<'a, Result<Vec<ServiceStats>, StoreError>>;
}

/// The store the configuration names. Nothing connects yet: a database that is down makes each
/// call answer [`StoreError::Unavailable`] until it is back. The database stops a query that runs
/// longer than `query_timeout` (the API's request_timeout, after which nobody waits for it).
pub async fn open(
    backend: &Backend,
    query_timeout: Duration,
) -> Result<Arc<dyn Store>, StoreError> {
    match backend {
        Backend::Postgres(settings) => Ok(Arc::new(postgres::PostgresStore::connect(
            settings,
            query_timeout,
        )?)),
        Backend::ClickHouse(settings) => Ok(Arc::new(
            clickhouse::ClickHouseStore::new(settings, query_timeout).map_err(|e| {
                StoreError::Query {
                    action: "read the settings",
                    message: e.to_string(),
                }
            })?,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaeger_derived_tags_become_column_conditions() {
        assert_eq!(
            TagFilter::from_jaeger("error", "true"),
            TagFilter::Error(true)
        );
        assert_eq!(
            TagFilter::from_jaeger("span.kind", "server"),
            TagFilter::Kind(SpanKind::Server)
        );
        assert_eq!(
            TagFilter::from_jaeger("otel.status_code", "ERROR"),
            TagFilter::Status(StatusCode::Error)
        );
        assert_eq!(
            TagFilter::from_jaeger("http.status_code", "500"),
            TagFilter::Attribute {
                key: "http.status_code".into(),
                value: "500".into()
            }
        );
        assert_eq!(
            TagFilter::from_jaeger("span.kind", "sideways"),
            TagFilter::Attribute {
                key: "span.kind".into(),
                value: "sideways".into()
            }
        );
    }
}
