//! The ClickHouse store: reads the tables the exporter writes (schema/clickhouse/, the contrib
//! clickhouseexporter's layout) through the official `clickhouse` crate over HTTP.
//!
//! What is read where:
//!
//! * services and operations: `otel_span_stats_1h`, one row per service, span name, kind and
//!   hour. On 3 million synthetic spans over a week (25 services, 40 span names), listing the
//!   services read 251,856 rollup rows instead of 3,000,000 spans, and one service's operations
//!   23,381 rows instead of 204,652 (chdb 26.9); real services put many more spans in each
//!   (service, name, kind, hour), so the gap grows with traffic. The rollup is kept longer than the
//!   spans (`retention.rollup_1h`, a year by default): a service whose spans have expired is still
//!   listed.
//! * trace search: `otel_traces`, bounded by `Timestamp` (daily partitions, and the sort key
//!   `(ServiceName, SpanName, toDateTime(Timestamp))` for a service and operation); attribute
//!   conditions can use the maps' bloom-filter indexes.
//! * traces by id: `otel_traces_trace_id_ts` gives the traces' first and last span start (whole
//!   seconds), so the `otel_traces` read is bounded to their partitions and time as well as by the
//!   `TraceId` bloom filter, in one query (`spans_sql`); an id the lookup table does not know is
//!   not searched for.
//! * dependencies: `otel_service_dependencies_1h` (`uniqCombined64Merge(Calls)`).
//! * service statistics: `otel_traces` or `otel_span_stats_1h`, as the query's source says
//!   (`stats_sql`).
//!
//! With `distributed_tables` every table is read through its `_dist` Distributed table, which sees
//! every shard. Every value a caller gives is a server-side query parameter (`{name:Type}`), which
//! the crate sends beside the query, never in it: the SQL text is built only from fixed fragments
//! and the validated database name.
//!
//! Values are as the exporter writes them (rust/core/src/sink/clickhouse/traces.rs): ids are
//! lower-case hex and `""` for none; kinds and status codes are pdata's names (`Server`, `Error`),
//! and the older `SPAN_KIND_SERVER`/`STATUS_CODE_ERROR` names, which the schema's views also accept,
//! are read the same way; attribute values are strings (pdata's AsString), so every attribute is a
//! [`Value::Str`]; maps are read as their pairs, so a repeated key keeps every value, in the stored
//! order. The tables keep no trace flags: [`Span::flags`] is 0.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use clickhouse::query::Query;
use clickhouse::{Client, Compression, Row, RowOwned, RowRead};
use otelstore::config::{ClickHouseConfig, Config, ConfigError};
use otelstore::error::{chain, clickhouse_exception_code};
use serde::Deserialize;

use super::{BoxFuture, Store, StoreError, TagFilter, TraceQuery};
use crate::config::ClickHouseSettings;
use crate::model::{
    Attribute, BadId, DependencyLink, Event, Link, Operation, ServiceStats, Span, SpanId, SpanKind,
    StatsQuery, StatsSource, StatusCode, Trace, TraceId, Value, STATS_QUANTILES,
};

/// The tables read, each as `"database".name` or `"database".name_dist`.
struct Tables {
    traces: String,
    trace_id_ts: String,
    span_stats: String,
    dependencies: String,
}

pub struct ClickHouseStore {
    client: Client,
    tables: Tables,
}

impl ClickHouseStore {
    /// Builds the client without connecting: a server that is down makes each call fail with
    /// [`StoreError::Unavailable`], not the start. The endpoint and database are checked as the
    /// exporter checks its own (errors name `clickhouse.endpoint`, `clickhouse.database`); an
    /// https endpoint's certificate is checked against the CA file, or the system's roots.
    ///
    /// Every query carries `max_execution_time`, `query_timeout` in whole seconds rounded up:
    /// a query the API has given up on would otherwise run on in the server (it does not stop a
    /// read when the client goes away, by default).
    pub fn new(
        settings: &ClickHouseSettings,
        query_timeout: Duration,
    ) -> Result<ClickHouseStore, ConfigError> {
        let config = Config {
            clickhouse: ClickHouseConfig {
                endpoint: settings.endpoint.clone(),
                database: settings.database.clone(),
                username: settings.username.clone(),
                password: settings.password.clone(),
                ca_file: settings.ca_file.clone(),
                ..ClickHouseConfig::default()
            },
            ..Config::default()
        };
        config.validate()?;
        let mut client = otelstore::sink::clickhouse::client_with_roots(&config.clickhouse.ca_file)
            .map_err(|e| match e {
                otelstore::Error::Config(e) => e,
                other => ConfigError {
                    field: "clickhouse".into(),
                    reason: other.to_string(),
                },
            })?
            .with_url(settings.endpoint.trim())
            .with_user(settings.username.as_str())
            .with_compression(Compression::Lz4)
            .with_setting(
                "max_execution_time",
                query_timeout.as_secs_f64().ceil().max(1.0).to_string(),
            );
        if !settings.password.is_empty() {
            client = client.with_password(settings.password.as_str());
        }
        // The database is a plain identifier (validated above): quoting it needs no escaping.
        let table = |name: &str| {
            let dist = if settings.distributed_tables {
                "_dist"
            } else {
                ""
            };
            format!("\"{}\".{name}{dist}", settings.database)
        };
        Ok(ClickHouseStore {
            client,
            tables: Tables {
                traces: table("otel_traces"),
                trace_id_ts: table("otel_traces_trace_id_ts"),
                span_stats: table("otel_span_stats_1h"),
                dependencies: table("otel_service_dependencies_1h"),
            },
        })
    }

    /// The spans of the traces `ids` that start within `window` (inclusive nanoseconds), or
    /// anywhere the lookup table puts them.
    async fn read_spans(
        &self,
        ids: &[String],
        window: Option<(i64, i64)>,
    ) -> Result<Vec<Span>, StoreError> {
        const ACTION: &str = "read spans";
        let mut query = self
            .client
            .query(&spans_sql(&self.tables, window.is_some()))
            .param("ids", ids);
        if let Some((start, end)) = window {
            query = query.param("start", start.max(0)).param("end", end.max(0));
        }
        let mut cursor = query.fetch::<SpanRow>().map_err(error(ACTION))?;
        let mut spans = Vec::new();
        while let Some(row) = cursor.next().await.map_err(error(ACTION))? {
            match row.into_span() {
                Ok(span) => spans.push(span),
                Err(bad) => tracing::warn!(%bad, "skipped a span whose id is not hex"),
            }
        }
        Ok(spans)
    }
}

impl Store for ClickHouseStore {
    fn services(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let query = self.client.query(&services_sql(&self.tables));
            let rows: Vec<NameRow> = rows(query, "list services").await?;
            Ok(rows.into_iter().map(|row| row.name).collect())
        })
    }

    fn operations<'a>(
        &'a self,
        service: &'a str,
        kind: Option<SpanKind>,
    ) -> BoxFuture<'a, Result<Vec<Operation>, StoreError>> {
        Box::pin(async move {
            let mut query = self
                .client
                .query(&operations_sql(&self.tables, kind.is_some()))
                .param("service", service);
            if let Some(kind) = kind {
                query = query.param("kinds", kind_names(kind));
            }
            let rows: Vec<OperationRow> = rows(query, "list operations").await?;
            // Sorted and deduplicated by Jaeger's kind names (`Server` and `SPAN_KIND_SERVER`
            // are both `server`).
            let mut operations: Vec<Operation> = rows
                .into_iter()
                .map(|row| Operation {
                    name: row.name,
                    span_kind: kind_from_name(&row.kind).jaeger().unwrap_or("").to_owned(),
                })
                .collect();
            operations.sort();
            operations.dedup();
            Ok(operations)
        })
    }

    /// The search runs over the newest part of the range first, [`FIRST_WINDOW_NANOS`] long
    /// and four times longer each time it finds fewer traces than the limit, up to the whole
    /// range. A trace whose newest matching span falls in a window ranks above every trace whose
    /// newest one does not, so a window that finds `limit` traces has found the answer. The
    /// table is sorted by service, span name and time, and its parts hold the times written
    /// together: a recent window reads a few granules per (service, span name) where the whole
    /// range reads and groups every span of it. 10,000,000 spans written in time order over a
    /// day, any service, limit 20 (chdb 26.9): 60 ms for the last minute against 1.2 s for the
    /// day. A search that finds fewer than `limit` traces costs up to 7 queries, about 4/3 of
    /// one over the whole range.
    fn find_trace_ids<'a>(
        &'a self,
        q: &'a TraceQuery,
    ) -> BoxFuture<'a, Result<Vec<TraceId>, StoreError>> {
        Box::pin(async move {
            let search = TraceSearch::new(q);
            let sql = search.sql(&self.tables);
            let (first, last) = (q.start_min_unix_nano.max(0), q.start_max_unix_nano.max(0));
            let mut width = FIRST_WINDOW_NANOS;
            loop {
                let from = last.saturating_sub(width).max(first);
                let mut query = self
                    .client
                    .query(&sql)
                    .param("start_min", from)
                    .param("start_max", last)
                    .param("limit", q.limit as u64);
                for (name, value) in &search.params {
                    query = match value {
                        Param::Str(text) => query.param(name, text),
                        Param::Int(number) => query.param(name, number),
                        Param::Names(names) => query.param(name, names),
                    };
                }
                let rows: Vec<IdRow> = rows(query, "search traces").await?;
                if rows.len() >= q.limit || from <= first {
                    return Ok(rows
                        .iter()
                        .filter_map(|row| TraceId::parse(&row.trace_id).ok())
                        .collect());
                }
                width = width.saturating_mul(4);
            }
        })
    }

    fn traces<'a>(
        &'a self,
        ids: &'a [TraceId],
        window: Option<(i64, i64)>,
    ) -> BoxFuture<'a, Result<Vec<Trace>, StoreError>> {
        Box::pin(async move {
            let mut wanted: Vec<String> = ids.iter().map(TraceId::to_string).collect();
            wanted.sort();
            wanted.dedup();
            // A zero id is stored as "" (no trace): nothing to find.
            wanted.retain(|id| id.bytes().any(|b| b != b'0'));
            if wanted.is_empty() {
                return Ok(Vec::new());
            }
            let mut by_id: HashMap<TraceId, Vec<Span>> = HashMap::new();
            for span in self.read_spans(&wanted, window).await? {
                by_id.entry(span.trace_id).or_default().push(span);
            }
            // One Trace per id asked for that has spans, in the order asked.
            Ok(ids
                .iter()
                .filter_map(|id| {
                    by_id.remove(id).map(|spans| Trace {
                        trace_id: *id,
                        spans,
                    })
                })
                .collect())
        })
    }

    /// Calls in every hour that overlaps the range (hours as the server's time zone cuts them,
    /// as the view that fills the table does), so up to an hour on either side counts too.
    fn dependencies(
        &self,
        start_unix_nano: i64,
        end_unix_nano: i64,
    ) -> BoxFuture<'_, Result<Vec<DependencyLink>, StoreError>> {
        Box::pin(async move {
            let query = self
                .client
                .query(&dependencies_sql(&self.tables))
                .param("start", start_unix_nano.max(0))
                .param("end", end_unix_nano.max(0));
            let rows: Vec<LinkRow> = rows(query, "read service dependencies").await?;
            Ok(rows
                .into_iter()
                .map(|row| DependencyLink {
                    parent: row.parent,
                    child: row.child,
                    call_count: row.call_count,
                })
                .collect())
        })
    }

    /// Statistics per service, as `stats_sql` reads them.
    fn service_stats<'a>(
        &'a self,
        q: &'a StatsQuery,
    ) -> BoxFuture<'a, Result<Vec<ServiceStats>, StoreError>> {
        Box::pin(async move {
            let (start, end) = q.covered();
            let mut query = self
                .client
                .query(&stats_sql(&self.tables, q.source, q.service.is_some()))
                .param("start", start.max(0))
                .param("end", end.max(0));
            if q.source == StatsSource::Raw {
                query = query.param("errors", status_names(StatusCode::Error));
            }
            if let Some(service) = &q.service {
                query = query.param("service", service);
            }
            let rows: Vec<StatsRow> = rows(query, "read the service statistics").await?;
            Ok(rows
                .into_iter()
                .map(|row| {
                    let quantiles: Vec<Option<f64>> = row
                        .quantiles
                        .into_iter()
                        .map(|q| q.is_finite().then_some(q))
                        .collect();
                    ServiceStats::new(row.service, row.spans, row.errors, &quantiles)
                })
                .collect())
        })
    }
}

/// Every row of a query, or the error of `action`.
async fn rows<T: RowOwned + RowRead>(
    query: Query,
    action: &'static str,
) -> Result<Vec<T>, StoreError> {
    query.fetch_all().await.map_err(error(action))
}

// ---- The SQL. Every `{name:Type}` is a parameter the caller binds. ----

/// The newest part of its range a trace search reads first.
const FIRST_WINDOW_NANOS: i64 = 60_000_000_000;

/// Every service name, `""` (spans whose resource has no `service.name`) included, as the
/// PostgreSQL store lists it: the same data lists the same services on either backend.
fn services_sql(tables: &Tables) -> String {
    format!(
        "SELECT DISTINCT ServiceName AS name FROM {} ORDER BY name",
        tables.span_stats
    )
}

/// `{service:String}`, and with a kind `{kinds:Array(String)}`: the names it is stored under.
fn operations_sql(tables: &Tables, with_kind: bool) -> String {
    format!(
        "SELECT DISTINCT SpanName AS name, SpanKind AS kind FROM {} \
         WHERE ServiceName = {{service:String}}{}",
        tables.span_stats,
        if with_kind {
            " AND SpanKind IN {kinds:Array(String)}"
        } else {
            ""
        }
    )
}

/// `{start:Int64}` and `{end:Int64}` in nanoseconds.
fn dependencies_sql(tables: &Tables) -> String {
    format!(
        "SELECT ParentService AS parent, ChildService AS child, \
         uniqCombined64Merge(Calls) AS call_count FROM {} \
         WHERE Hour >= toStartOfHour(fromUnixTimestamp64Nano({{start:Int64}})) \
         AND Hour <= fromUnixTimestamp64Nano({{end:Int64}}) \
         GROUP BY ParentService, ChildService ORDER BY ParentService, ChildService",
        tables.dependencies
    )
}

/// Statistics per service of the spans that started in [`{start:Int64}`, `{end:Int64}`)
/// nanoseconds, of `{service:String}` only when `one_service`, sorted by service.
///
/// * Raw, from `otel_traces`: `count()`, the spans whose status is one of
///   `{errors:Array(String)}`, and `quantilesExactInclusive` of `Duration`: exact, interpolated
///   between the two durations nearest the rank as PostgreSQL's `percentile_cont`, so both
///   backends give the same numbers. It holds every duration of a service in memory (8 bytes a
///   span) while it runs: raw statistics serve only ranges shorter than `stats.hourly_from`; at
///   a rate that makes that too much, lower it. `quantileTDigest` would take constant memory but
///   estimate, as the hourly statistics already do.
/// * Hourly, from `otel_span_stats_1h` (the caller gives whole hours, [`StatsQuery::covered`]):
///   `countMerge(Spans)`, `sumMerge(Errors)` (its view counts the same two status names) and
///   `quantilesTDigestMerge` of the hours' t-digests (which the state of `quantileTDigest`
///   merges into at any levels): an estimate; ClickHouse gives 1 % as its largest error.
fn stats_sql(tables: &Tables, source: StatsSource, one_service: bool) -> String {
    let levels = STATS_QUANTILES.map(|q| q.to_string()).join(", ");
    let (table, time, counts, quantiles) = match source {
        StatsSource::Raw => (
            &tables.traces,
            "Timestamp",
            "count() AS spans, countIf(StatusCode IN {errors:Array(String)}) AS errors",
            format!("quantilesExactInclusive({levels})(Duration)"),
        ),
        StatsSource::Hourly => (
            &tables.span_stats,
            "Hour",
            "countMerge(Spans) AS spans, sumMerge(Errors) AS errors",
            format!("quantilesTDigestMerge({levels})(DurationQuantiles)"),
        ),
    };
    let service = if one_service {
        " AND ServiceName = {service:String}"
    } else {
        ""
    };
    format!(
        "SELECT ServiceName AS service, {counts}, \
         CAST({quantiles}, 'Array(Float64)') AS quantiles FROM {table} \
         WHERE {time} >= fromUnixTimestamp64Nano({{start:Int64}}) \
         AND {time} < fromUnixTimestamp64Nano({{end:Int64}}){service} \
         GROUP BY ServiceName ORDER BY ServiceName"
    )
}

/// The columns of a span read back, in [`SpanRow`]'s order; maps as arrays of pairs.
const SPAN_COLUMNS: &str =
    "TraceId AS trace_id, SpanId AS span_id, ParentSpanId AS parent_span_id, \
     TraceState AS trace_state, SpanName AS name, SpanKind AS kind, ServiceName AS service_name, \
     CAST(ResourceAttributes, 'Array(Tuple(String, String))') AS resource_attributes, \
     ScopeName AS scope_name, ScopeVersion AS scope_version, \
     CAST(SpanAttributes, 'Array(Tuple(String, String))') AS attributes, \
     toUnixTimestamp64Nano(Timestamp) AS start, Duration AS duration, \
     StatusCode AS status_code, StatusMessage AS status_message, \
     arrayMap(t -> toUnixTimestamp64Nano(t), Events.Timestamp) AS event_times, \
     Events.Name AS event_names, \
     CAST(Events.Attributes, 'Array(Array(Tuple(String, String)))') AS event_attributes, \
     Links.TraceId AS link_trace_ids, Links.SpanId AS link_span_ids, \
     Links.TraceState AS link_trace_states, \
     CAST(Links.Attributes, 'Array(Array(Tuple(String, String)))') AS link_attributes";

/// The spans of the traces `{ids:Array(String)}` that start within `{start:Int64}`..=`{end:Int64}`
/// (nanoseconds) with `window`, or else between the first and the last span start that
/// `otel_traces_trace_id_ts` knows of them (whole seconds: up to the end of the last one). The
/// bounds are scalar subqueries, which the server runs first and uses as constants to prune
/// partitions and parts: one round trip instead of a lookup and then a read. An id the lookup
/// table does not know bounds nothing (the bounds of no rows are NULL), so nothing is read.
///
/// The bounds are `DateTime64(9)` like `Timestamp`: ClickHouse 26.9 prunes parts on a
/// `DateTime64 < DateTime` condition as if the column held whole seconds, and so skips the spans
/// of the trace's last second.
fn spans_sql(tables: &Tables, window: bool) -> String {
    let bounds = if window {
        "Timestamp >= fromUnixTimestamp64Nano({start:Int64}) \
         AND Timestamp <= fromUnixTimestamp64Nano({end:Int64})"
            .to_owned()
    } else {
        let lookup = &tables.trace_id_ts;
        format!(
            "Timestamp >= (SELECT toDateTime64(min(Start), 9) FROM {lookup} \
             WHERE TraceId IN {{ids:Array(String)}}) \
             AND Timestamp < (SELECT toDateTime64(max(End) + 1, 9) FROM {lookup} \
             WHERE TraceId IN {{ids:Array(String)}})"
        )
    };
    format!(
        "SELECT {SPAN_COLUMNS} FROM {} WHERE TraceId IN {{ids:Array(String)}} AND {bounds}",
        tables.traces
    )
}

/// A parameter of a trace search.
#[derive(Debug, PartialEq)]
enum Param<'a> {
    Str(&'a str),
    Int(i64),
    Names(&'static [&'static str]),
}

/// A trace search's conditions beyond the time range, as SQL with numbered parameters.
struct TraceSearch<'a> {
    conditions: Vec<String>,
    params: Vec<(String, Param<'a>)>,
}

impl<'a> TraceSearch<'a> {
    fn new(q: &'a TraceQuery) -> Self {
        let mut search = TraceSearch {
            conditions: Vec::new(),
            params: Vec::new(),
        };
        if let Some(service) = &q.service {
            search.add(
                "ServiceName = {service:String}",
                "service",
                Param::Str(service),
            );
        }
        if let Some(operation) = &q.operation {
            search.add(
                "SpanName = {operation:String}",
                "operation",
                Param::Str(operation),
            );
        }
        if let Some(min) = q.duration_min_ns {
            search.add(
                "Duration >= {duration_min:Int64}",
                "duration_min",
                Param::Int(min),
            );
        }
        if let Some(max) = q.duration_max_ns {
            search.add(
                "Duration <= {duration_max:Int64}",
                "duration_max",
                Param::Int(max),
            );
        }
        for (i, tag) in q.tags.iter().enumerate() {
            let (test, names) = match tag {
                TagFilter::Attribute { key, value } => {
                    search.add_attribute(i, key, value);
                    continue;
                }
                TagFilter::Kind(kind) => ("SpanKind IN", kind_names(*kind)),
                TagFilter::Status(status) => ("StatusCode IN", status_names(*status)),
                TagFilter::Error(true) => ("StatusCode IN", status_names(StatusCode::Error)),
                TagFilter::Error(false) => ("StatusCode NOT IN", status_names(StatusCode::Error)),
            };
            search.add(
                &format!("{test} {{names{i}:Array(String)}}"),
                &format!("names{i}"),
                Param::Names(names),
            );
        }
        search
    }

    fn add(&mut self, condition: &str, name: &str, value: Param<'a>) {
        self.conditions.push(condition.to_owned());
        self.params.push((name.to_owned(), value));
    }

    /// The span's or its resource's attribute `key` is `value`. A missing key reads as `""`, so
    /// only an empty value needs the key's presence checked.
    fn add_attribute(&mut self, i: usize, key: &'a str, value: &'a str) {
        let equals = |map: &str| {
            let present = if value.is_empty() {
                format!("mapContains({map}, {{key{i}:String}}) AND ")
            } else {
                String::new()
            };
            format!("({present}{map}[{{key{i}:String}}] = {{value{i}:String}})")
        };
        self.conditions.push(format!(
            "({} OR {})",
            equals("SpanAttributes"),
            equals("ResourceAttributes")
        ));
        self.params.push((format!("key{i}"), Param::Str(key)));
        self.params.push((format!("value{i}"), Param::Str(value)));
    }

    /// Traces with a span that starts in [`{start_min:Int64}`, `{start_max:Int64}`] and meets
    /// every condition, the most recent (latest such span) first, at most `{limit:UInt64}`.
    fn sql(&self, tables: &Tables) -> String {
        let mut sql = format!(
            "SELECT TraceId AS trace_id FROM {} \
             WHERE Timestamp >= fromUnixTimestamp64Nano({{start_min:Int64}}) \
             AND Timestamp <= fromUnixTimestamp64Nano({{start_max:Int64}}) AND TraceId != ''",
            tables.traces
        );
        for condition in &self.conditions {
            sql.push_str(" AND ");
            sql.push_str(condition);
        }
        sql.push_str(
            " GROUP BY TraceId ORDER BY max(Timestamp) DESC, TraceId LIMIT {limit:UInt64}",
        );
        sql
    }
}

// ---- The rows, named as the SQL above aliases its columns. ----

#[derive(Row, Deserialize)]
struct NameRow {
    name: String,
}

#[derive(Row, Deserialize)]
struct OperationRow {
    name: String,
    kind: String,
}

#[derive(Row, Deserialize)]
struct IdRow {
    trace_id: String,
}

#[derive(Row, Deserialize)]
struct LinkRow {
    parent: String,
    child: String,
    call_count: u64,
}

#[derive(Row, Deserialize)]
struct StatsRow {
    service: String,
    spans: u64,
    errors: u64,
    quantiles: Vec<f64>,
}

#[derive(Row, Deserialize)]
struct SpanRow {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    trace_state: String,
    name: String,
    kind: String,
    service_name: String,
    resource_attributes: Vec<(String, String)>,
    scope_name: String,
    scope_version: String,
    attributes: Vec<(String, String)>,
    start: i64,
    duration: u64,
    status_code: String,
    status_message: String,
    event_times: Vec<i64>,
    event_names: Vec<String>,
    event_attributes: Vec<Vec<(String, String)>>,
    link_trace_ids: Vec<String>,
    link_span_ids: Vec<String>,
    link_trace_states: Vec<String>,
    link_attributes: Vec<Vec<(String, String)>>,
}

fn attributes(pairs: Vec<(String, String)>) -> Vec<Attribute> {
    pairs
        .into_iter()
        .map(|(key, value)| Attribute {
            key,
            value: Value::Str(value),
        })
        .collect()
}

impl SpanRow {
    /// The span, or its id that is not hex. A link whose ids are not hex is left out; a parent id
    /// that is not hex (`""`: none) counts as none.
    fn into_span(self) -> Result<Span, BadId> {
        let events = self
            .event_times
            .into_iter()
            .zip(self.event_names)
            .zip(self.event_attributes)
            .map(|((time_unix_nano, name), pairs)| Event {
                time_unix_nano,
                name,
                attributes: attributes(pairs),
            })
            .collect();
        let links = self
            .link_trace_ids
            .iter()
            .zip(&self.link_span_ids)
            .zip(self.link_trace_states)
            .zip(self.link_attributes)
            .filter_map(|(((trace_id, span_id), trace_state), pairs)| {
                Some(Link {
                    trace_id: TraceId::parse(trace_id).ok()?,
                    span_id: SpanId::parse(span_id).ok()?,
                    trace_state,
                    attributes: attributes(pairs),
                })
            })
            .collect();
        Ok(Span {
            trace_id: TraceId::parse(&self.trace_id)?,
            span_id: SpanId::parse(&self.span_id)?,
            parent_span_id: SpanId::parse(&self.parent_span_id).ok(),
            trace_state: self.trace_state,
            flags: 0,
            name: self.name,
            kind: kind_from_name(&self.kind),
            start_unix_nano: self.start,
            duration_ns: i64::try_from(self.duration).unwrap_or(i64::MAX),
            status_code: status_from_name(&self.status_code),
            status_message: self.status_message,
            service_name: self.service_name,
            resource_attributes: attributes(self.resource_attributes),
            scope_name: self.scope_name,
            scope_version: self.scope_version,
            attributes: attributes(self.attributes),
            events,
            links,
        })
    }
}

// ---- Kind and status names. ----

/// The names a kind is stored under: pdata's, then the older OTLP enum name.
fn kind_names(kind: SpanKind) -> &'static [&'static str] {
    match kind {
        SpanKind::Unspecified => &["Unspecified", "SPAN_KIND_UNSPECIFIED", ""],
        SpanKind::Internal => &["Internal", "SPAN_KIND_INTERNAL"],
        SpanKind::Server => &["Server", "SPAN_KIND_SERVER"],
        SpanKind::Client => &["Client", "SPAN_KIND_CLIENT"],
        SpanKind::Producer => &["Producer", "SPAN_KIND_PRODUCER"],
        SpanKind::Consumer => &["Consumer", "SPAN_KIND_CONSUMER"],
    }
}

fn status_names(status: StatusCode) -> &'static [&'static str] {
    match status {
        StatusCode::Unset => &["Unset", "STATUS_CODE_UNSET", ""],
        StatusCode::Ok => &["Ok", "STATUS_CODE_OK"],
        StatusCode::Error => &["Error", "STATUS_CODE_ERROR"],
    }
}

/// `SPAN_KIND_SERVER` → `Server`, the name the model's parsers know.
fn pdata_name<'a>(name: &'a str, prefix: &str) -> Cow<'a, str> {
    let Some(rest) = name.strip_prefix(prefix) else {
        return name.into();
    };
    let mut chars = rest.chars();
    match chars.next() {
        Some(first) => format!("{first}{}", chars.as_str().to_ascii_lowercase()).into(),
        None => name.into(),
    }
}

fn kind_from_name(name: &str) -> SpanKind {
    SpanKind::from_name(&pdata_name(name, "SPAN_KIND_"))
}

fn status_from_name(name: &str) -> StatusCode {
    StatusCode::from_name(&pdata_name(name, "STATUS_CODE_"))
}

// ---- Errors. ----

/// ClickHouse exception codes that mean the server, or a shard behind it, cannot take the query
/// now: TOO_MANY_SIMULTANEOUS_QUERIES, SOCKET_TIMEOUT, NETWORK_ERROR, ALL_CONNECTION_TRIES_FAILED.
const UNAVAILABLE_CODES: &[u32] = &[202, 209, 210, 279];
/// TIMEOUT_EXCEEDED: the query ran past its `max_execution_time`.
const TIMEOUT_EXCEEDED: u32 = 159;

/// Connection failures, timeouts, answers that are not ClickHouse's (a proxy's 502 or 503) and
/// the codes in [`UNAVAILABLE_CODES`] make the database unavailable; anything else the server
/// says is an error of the query.
fn error(action: &'static str) -> impl FnOnce(clickhouse::error::Error) -> StoreError {
    use clickhouse::error::Error as E;
    move |source| {
        let message = chain(&source);
        let code = match &source {
            E::BadResponse(text) => clickhouse_exception_code(text),
            _ => None,
        };
        let unavailable = match &source {
            E::Network(_) | E::TimedOut => true,
            E::BadResponse(_) => code.is_none_or(|code| UNAVAILABLE_CODES.contains(&code)),
            _ => false,
        };
        if unavailable {
            StoreError::Unavailable(format!("{action}: {message}"))
        } else if code == Some(TIMEOUT_EXCEEDED) {
            StoreError::Timeout { action, message }
        } else {
            StoreError::Query { action, message }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(30);

    fn tables() -> Tables {
        Tables {
            traces: "\"otel\".otel_traces".into(),
            trace_id_ts: "\"otel\".otel_traces_trace_id_ts".into(),
            span_stats: "\"otel\".otel_span_stats_1h".into(),
            dependencies: "\"otel\".otel_service_dependencies_1h".into(),
        }
    }

    #[test]
    fn a_search_binds_every_value_and_writes_none_into_the_sql() {
        let query = TraceQuery {
            service: Some("svc' OR 1=1 --".into()),
            operation: Some("GET {x:String}".into()),
            tags: vec![
                TagFilter::from_jaeger("http.route", "/a'b"),
                TagFilter::from_jaeger("note", ""),
                TagFilter::from_jaeger("span.kind", "server"),
                TagFilter::from_jaeger("error", "false"),
            ],
            start_min_unix_nano: 1,
            start_max_unix_nano: 2,
            duration_min_ns: Some(3),
            duration_max_ns: None,
            limit: 20,
        };
        let search = TraceSearch::new(&query);
        assert_eq!(
            search.sql(&tables()),
            "SELECT TraceId AS trace_id FROM \"otel\".otel_traces \
             WHERE Timestamp >= fromUnixTimestamp64Nano({start_min:Int64}) \
             AND Timestamp <= fromUnixTimestamp64Nano({start_max:Int64}) AND TraceId != '' \
             AND ServiceName = {service:String} AND SpanName = {operation:String} \
             AND Duration >= {duration_min:Int64} \
             AND ((SpanAttributes[{key0:String}] = {value0:String}) \
             OR (ResourceAttributes[{key0:String}] = {value0:String})) \
             AND ((mapContains(SpanAttributes, {key1:String}) AND SpanAttributes[{key1:String}] = {value1:String}) \
             OR (mapContains(ResourceAttributes, {key1:String}) AND ResourceAttributes[{key1:String}] = {value1:String})) \
             AND SpanKind IN {names2:Array(String)} AND StatusCode NOT IN {names3:Array(String)} \
             GROUP BY TraceId ORDER BY max(Timestamp) DESC, TraceId LIMIT {limit:UInt64}"
        );
        assert_eq!(
            search.params,
            vec![
                ("service".to_owned(), Param::Str("svc' OR 1=1 --")),
                ("operation".to_owned(), Param::Str("GET {x:String}")),
                ("duration_min".to_owned(), Param::Int(3)),
                ("key0".to_owned(), Param::Str("http.route")),
                ("value0".to_owned(), Param::Str("/a'b")),
                ("key1".to_owned(), Param::Str("note")),
                ("value1".to_owned(), Param::Str("")),
                (
                    "names2".to_owned(),
                    Param::Names(&["Server", "SPAN_KIND_SERVER"])
                ),
                (
                    "names3".to_owned(),
                    Param::Names(&["Error", "STATUS_CODE_ERROR"])
                ),
            ]
        );
    }

    #[test]
    fn services_include_the_empty_name() {
        // Spans without service.name are stored with ServiceName ''; the PostgreSQL store lists
        // that name too, so nothing filters it out.
        assert_eq!(
            services_sql(&tables()),
            "SELECT DISTINCT ServiceName AS name FROM \"otel\".otel_span_stats_1h ORDER BY name"
        );
    }

    #[test]
    fn statistics_read_the_spans_or_the_hourly_states() {
        assert_eq!(
            stats_sql(&tables(), StatsSource::Raw, true),
            "SELECT ServiceName AS service, count() AS spans, \
             countIf(StatusCode IN {errors:Array(String)}) AS errors, \
             CAST(quantilesExactInclusive(0.5, 0.95, 0.99)(Duration), 'Array(Float64)') AS quantiles \
             FROM \"otel\".otel_traces \
             WHERE Timestamp >= fromUnixTimestamp64Nano({start:Int64}) \
             AND Timestamp < fromUnixTimestamp64Nano({end:Int64}) AND ServiceName = {service:String} \
             GROUP BY ServiceName ORDER BY ServiceName"
        );
        assert_eq!(
            stats_sql(&tables(), StatsSource::Hourly, false),
            "SELECT ServiceName AS service, countMerge(Spans) AS spans, sumMerge(Errors) AS errors, \
             CAST(quantilesTDigestMerge(0.5, 0.95, 0.99)(DurationQuantiles), 'Array(Float64)') AS quantiles \
             FROM \"otel\".otel_span_stats_1h \
             WHERE Hour >= fromUnixTimestamp64Nano({start:Int64}) \
             AND Hour < fromUnixTimestamp64Nano({end:Int64}) \
             GROUP BY ServiceName ORDER BY ServiceName"
        );
    }

    #[test]
    fn spans_are_read_in_the_window_or_within_the_lookup_tables_bounds() {
        let mut dist = tables();
        dist.traces = "\"otel\".otel_traces_dist".into();
        dist.trace_id_ts = "\"otel\".otel_traces_trace_id_ts_dist".into();
        assert_eq!(
            spans_sql(&dist, true),
            format!(
                "SELECT {SPAN_COLUMNS} FROM \"otel\".otel_traces_dist \
                 WHERE TraceId IN {{ids:Array(String)}} \
                 AND Timestamp >= fromUnixTimestamp64Nano({{start:Int64}}) \
                 AND Timestamp <= fromUnixTimestamp64Nano({{end:Int64}})"
            )
        );
        assert_eq!(
            spans_sql(&dist, false),
            format!(
                "SELECT {SPAN_COLUMNS} FROM \"otel\".otel_traces_dist \
                 WHERE TraceId IN {{ids:Array(String)}} \
                 AND Timestamp >= (SELECT toDateTime64(min(Start), 9) \
                 FROM \"otel\".otel_traces_trace_id_ts_dist WHERE TraceId IN {{ids:Array(String)}}) \
                 AND Timestamp < (SELECT toDateTime64(max(End) + 1, 9) \
                 FROM \"otel\".otel_traces_trace_id_ts_dist WHERE TraceId IN {{ids:Array(String)}})"
            )
        );
    }

    #[test]
    fn both_generations_of_names_are_read() {
        for (name, kind) in [
            ("Server", SpanKind::Server),
            ("SPAN_KIND_SERVER", SpanKind::Server),
            ("SPAN_KIND_CONSUMER", SpanKind::Consumer),
            ("Internal", SpanKind::Internal),
            ("Unspecified", SpanKind::Unspecified),
            ("", SpanKind::Unspecified),
            ("SPAN_KIND_", SpanKind::Unspecified),
            ("SPAN_KIND_ÉTRANGE", SpanKind::Unspecified),
            ("sideways", SpanKind::Unspecified),
        ] {
            assert_eq!(kind_from_name(name), kind, "{name:?}");
        }
        for (name, status) in [
            ("Error", StatusCode::Error),
            ("STATUS_CODE_ERROR", StatusCode::Error),
            ("STATUS_CODE_OK", StatusCode::Ok),
            ("Unset", StatusCode::Unset),
            ("", StatusCode::Unset),
        ] {
            assert_eq!(status_from_name(name), status, "{name:?}");
        }
        // Every name a kind is stored under reads back as that kind.
        for kind in [
            SpanKind::Unspecified,
            SpanKind::Internal,
            SpanKind::Server,
            SpanKind::Client,
            SpanKind::Producer,
            SpanKind::Consumer,
        ] {
            assert!(kind_names(kind).iter().all(|n| kind_from_name(n) == kind));
        }
        for status in [StatusCode::Unset, StatusCode::Ok, StatusCode::Error] {
            assert!(status_names(status)
                .iter()
                .all(|n| status_from_name(n) == status));
        }
    }

    #[test]
    fn errors_are_unavailable_or_of_the_query() {
        use clickhouse::error::Error as E;
        let classify = |e: E| error("list services")(e);
        assert!(matches!(
            classify(E::TimedOut),
            StoreError::Unavailable(m) if m == "list services: timeout expired"
        ));
        assert!(matches!(
            classify(E::BadResponse("503 Service Unavailable".into())),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            classify(E::BadResponse(
                "Code: 202. DB::Exception: Too many simultaneous queries".into()
            )),
            StoreError::Unavailable(_)
        ));
        match classify(E::BadResponse(
            "Code: 81. DB::Exception: Database nowhere does not exist".into(),
        )) {
            StoreError::Query { action, message } => {
                assert_eq!(action, "list services");
                assert!(message.contains("Code: 81"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        match classify(E::BadResponse(
            "Code: 159. DB::Exception: Timeout exceeded: elapsed 30.01 seconds, maximum: 30. \
             (TIMEOUT_EXCEEDED)"
                .into(),
        )) {
            StoreError::Timeout { action, message } => {
                assert_eq!(action, "list services");
                assert!(message.contains("Code: 159"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn settings_never_show_the_password() {
        let settings = ClickHouseSettings {
            endpoint: "http://ch:8123".into(),
            password: "s3cret".into(),
            ..Default::default()
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("<redacted>"),
            "{shown}"
        );
        let store = ClickHouseStore::new(&settings, TIMEOUT).expect("valid");
        assert_eq!(store.tables.span_stats, "\"otel\".otel_span_stats_1h");
        let dist = ClickHouseStore::new(
            &ClickHouseSettings {
                distributed_tables: true,
                ..settings
            },
            TIMEOUT,
        )
        .expect("valid");
        assert_eq!(dist.tables.traces, "\"otel\".otel_traces_dist");
        assert_eq!(
            dist.tables.trace_id_ts,
            "\"otel\".otel_traces_trace_id_ts_dist"
        );
    }
}
