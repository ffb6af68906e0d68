//! The store over PostgreSQL: reads the tables of schema/postgres/ (see schema/README.md).
//!
//! Every query is an unnamed statement with typed parameters (`query_typed`: one round trip,
//! planned with the actual values, so the day partitions of `spans` outside a time range are
//! pruned at plan time); a trace search declares a cursor that way and fetches from it. Values
//! only ever travel as parameters; the SQL text holds nothing but the schema name, which is
//! validated and double-quoted, and fixed text.
//!
//! Connections are plain TCP: TLS (the exporter's `sslmode` and `ca_file` handling) is not wired
//! in yet, so a DSN with `sslmode=require` is refused by [`PostgresStore::connect`].

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use serde_json::{json, Value as Json};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

use super::{BoxFuture, Store, StoreError, TagFilter, TraceQuery};
use crate::config::PostgresSettings;
use crate::model::{
    Attribute, DependencyLink, Event, Link, Operation, ServiceStats, Span, SpanId, SpanKind,
    StatsQuery, StatsSource, StatusCode, Trace, TraceId, Value, STATS_QUANTILES,
};

/// How long a query waits for a free connection before the database counts as unavailable.
const POOL_WAIT: Duration = Duration::from_secs(10);

pub struct PostgresStore {
    pool: Pool,
    /// The schema name, double-quoted.
    schema: String,
}

impl PostgresStore {
    /// Builds the connection pool. Nothing connects yet: a database that is down makes each call
    /// answer [`StoreError::Unavailable`] until it is back, it does not stop the server starting.
    /// The settings are validated already (config.rs); a DSN that does not parse or an unreadable
    /// CA file is a [`StoreError::Query`] (action "read the settings").
    ///
    /// Each connection's `statement_timeout` is `query_timeout` (unless the DSN's options set
    /// one): a query the API has given up on would otherwise run on, and hold its pooled
    /// connection, until it finished.
    pub fn connect(
        settings: &PostgresSettings,
        query_timeout: Duration,
    ) -> Result<PostgresStore, StoreError> {
        let invalid = |message: String| StoreError::Query {
            action: "read the settings",
            message,
        };
        let mut config = tokio_postgres::Config::from_str(&settings.dsn)
            .map_err(|e| invalid(format!("the DSN is not a valid connection string: {e}")))?;
        let tls = otelstore::sink::postgres::tls_connector(&settings.ca_file)
            .map_err(|e| invalid(e.to_string()))?;
        config.connect_timeout(settings.connect_timeout.0);
        if config.get_application_name().is_none() {
            config.application_name("otelstore-query");
        }
        let options = config.get_options().unwrap_or_default();
        if !options.contains("statement_timeout") {
            let timeout = format!("-c statement_timeout={}", query_timeout.as_millis().max(1));
            config
                .options(options.to_owned() + if options.is_empty() { "" } else { " " } + &timeout);
        }
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(settings.connect_timeout.0))
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(PostgresStore {
            pool,
            schema: format!("\"{}\"", settings.schema),
        })
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            StoreError::Unavailable(match e {
                PoolError::Timeout(_) => {
                    format!("no connection to PostgreSQL within the time allowed ({e})")
                }
                PoolError::Backend(e) => postgres_message(&e),
                e => e.to_string(),
            })
        })
    }

    async fn query(
        &self,
        action: &'static str,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, StoreError> {
        let client = self.client().await?;
        client
            .query_typed(sql, params)
            .await
            .map_err(|e| query_error(action, &e))
    }

    /// Every service name in `spans`: a "loose index scan" that hops from one name to the next
    /// over the (service_name, start_time) index, one index probe per service and partition
    /// instead of reading every span (0.6 ms against 40 ms for `SELECT DISTINCT` over 200,000
    /// spans in 6 partitions). span_stats_1h answers as fast, but also names services whose
    /// spans have expired, which no search would find.
    async fn services(&self) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "WITH RECURSIVE names AS (
                (SELECT service_name FROM {s}.spans ORDER BY service_name LIMIT 1)
                UNION ALL
                SELECT (SELECT spans.service_name FROM {s}.spans
                        WHERE spans.service_name > names.service_name
                        ORDER BY spans.service_name LIMIT 1)
                FROM names WHERE names.service_name IS NOT NULL
            )
            SELECT service_name FROM names WHERE service_name IS NOT NULL",
            s = self.schema
        );
        let rows = self.query("list the services", &sql, &[]).await?;
        let mut names = rows
            .iter()
            .map(|row| row.try_get::<_, String>(0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| query_error("list the services", &e))?;
        // The database's collation ordered them; the API wants one order whatever the backend.
        names.sort_unstable();
        Ok(names)
    }

    /// The span names and kinds of a service, from the hourly span statistics (its primary key
    /// starts with the service name) rather than from every span of the service: 0.3 ms against
    /// 90 ms for 50,000 spans. Only the hours since the service's oldest stored span count (an
    /// index probe per day partition): the statistics are kept longer than the spans (a year
    /// against 30 days by default), and an operation offered should find traces.
    async fn operations(
        &self,
        service: &str,
        kind: Option<SpanKind>,
    ) -> Result<Vec<Operation>, StoreError> {
        const ACTION: &str = "list the operations";
        let kind = kind.map(|kind| kind as i16);
        let sql = format!(
            "SELECT DISTINCT span_name, span_kind FROM {s}.span_stats_1h
             WHERE service_name = $1 AND ($2::smallint IS NULL OR span_kind = $2)
               AND bucket_start > (SELECT min(start_time) FROM {s}.spans WHERE service_name = $1)
                                  - interval '1 hour'",
            s = self.schema
        );
        let rows = self
            .query(ACTION, &sql, &[(&service, Type::TEXT), (&kind, Type::INT2)])
            .await?;
        let mut operations = rows
            .iter()
            .map(|row| {
                Ok(Operation {
                    name: row.try_get(0)?,
                    span_kind: SpanKind::from_otlp(i64::from(row.try_get::<_, i16>(1)?))
                        .jaeger()
                        .unwrap_or("")
                        .to_owned(),
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(|e| query_error(ACTION, &e))?;
        operations.sort_unstable();
        // Kind numbers outside OTLP's read as unspecified, like 0: one operation.
        operations.dedup();
        Ok(operations)
    }

    /// Reads the matching spans newest first through a cursor, and keeps each trace the first
    /// time it comes, until there are enough. The planner plans a cursor to yield its first rows
    /// soon (`cursor_tuple_fraction`), so with a service it walks the (service_name, start_time)
    /// index backwards and stops there, instead of reading every matching span of the time range
    /// to sort them. Measured on 200,000 spans over two days ("frontend", duration >= 150 ms,
    /// limit 100): 0.6 ms, against 40 ms for one query with LIMIT, which the planner ran as
    /// parallel seq scans and a top-N sort because the filter made it expect few matches.
    ///
    /// Without a service no index yields spans in time order: the only one on start_time alone is
    /// a BRIN index, which finds the blocks of a time range but leaves their spans to be sorted,
    /// so one cursor over a day would read and sort the whole day. The range is read instead in
    /// windows from its end backwards, [`FIRST_WINDOW_MICROS`] long and doubling, each a cursor
    /// of its own that reads only its window's blocks; a search that finds enough traces in its
    /// first windows reads nothing older. 1,500,000 spans over two days, last 24 hours, limit 20:
    /// 0.7 ms, against 0.7–1.1 s for one cursor over the range; a search that matches nothing
    /// costs 11 cursors, 0.6–0.7 s against 0.44 s (docs/BENCHMARKS.md).
    async fn find_trace_ids(&self, query: &TraceQuery) -> Result<Vec<TraceId>, StoreError> {
        const ACTION: &str = "search traces";
        let limit = query.limit;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let error = |e: tokio_postgres::Error| query_error(ACTION, &e);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(error)?;
        let (min, max) = (query.start_min_unix_nano, query.start_max_unix_nano);
        // start_time holds whole microseconds; windows split the range on them, so each span is
        // in exactly one window.
        let (first, last) = (min.div_euclid(1000), max.div_euclid(1000));
        let mut window = Window {
            from: first,
            to: last,
            to_included: true,
        };
        let mut width = FIRST_WINDOW_MICROS;
        if query.service.is_none() {
            window.from = last.saturating_sub(width - 1).max(first);
        }
        let mut ids = Vec::with_capacity(limit.min(1000));
        let mut seen = HashSet::new();
        'search: loop {
            let search = Search::new(&self.schema, query, &window);
            tx.query_typed(&search.declare, &search.params())
                .await
                .map_err(error)?;
            let mut fetch = FIRST_FETCH;
            loop {
                let rows = tx.query_typed(fetch.0, &[]).await.map_err(error)?;
                for row in &rows {
                    let id: &[u8] = row.try_get(0).map_err(error)?;
                    let start: i64 = row.try_get(1).map_err(error)?;
                    // The scan's range is in whole microseconds; the exact one decides at its
                    // edges. Ids that are not 16 bytes (invalid OTLP, stored as sent) cannot be
                    // asked for.
                    let Ok(id) = <[u8; 16]>::try_from(id) else {
                        continue;
                    };
                    if (min..=max).contains(&start) && seen.insert(id) {
                        ids.push(TraceId(id));
                        if ids.len() == limit {
                            break 'search;
                        }
                    }
                }
                if rows.len() < fetch.1 {
                    break;
                }
                fetch = NEXT_FETCH;
            }
            if window.from <= first {
                break;
            }
            tx.batch_execute("CLOSE matching_spans")
                .await
                .map_err(error)?;
            width = width.saturating_mul(2);
            window = Window {
                from: window.from.saturating_sub(width).max(first),
                to: window.from,
                to_included: false,
            };
        }
        tx.commit().await.map_err(error)?;
        Ok(ids)
    }

    async fn traces(
        &self,
        ids: &[TraceId],
        window: Option<(i64, i64)>,
    ) -> Result<Vec<Trace>, StoreError> {
        const ACTION: &str = "read traces";
        let mut wanted = Vec::with_capacity(ids.len());
        let mut seen = HashSet::new();
        for id in ids {
            if seen.insert(*id) {
                wanted.push(*id);
            }
        }
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<&[u8]> = wanted.iter().map(|id| &id.0[..]).collect();
        let mut sql = format!(
            "SELECT {SPAN_COLUMNS} FROM {}.spans WHERE trace_id = ANY($1)",
            self.schema
        );
        let rows = match window {
            None => {
                self.query(ACTION, &sql, &[(&keys, Type::BYTEA_ARRAY)])
                    .await?
            }
            Some((start, end)) => {
                // start_time (microseconds) prunes partitions and the index; the exact
                // nanoseconds decide.
                sql.push_str(
                    " AND start_time >= $2 AND start_time <= $3
                      AND start_time_unix_nano >= $4 AND start_time_unix_nano <= $5",
                );
                let (from, to) = (micros_floor(start), micros_floor(end));
                self.query(
                    ACTION,
                    &sql,
                    &[
                        (&keys, Type::BYTEA_ARRAY),
                        (&from, Type::TIMESTAMPTZ),
                        (&to, Type::TIMESTAMPTZ),
                        (&start, Type::INT8),
                        (&end, Type::INT8),
                    ],
                )
                .await?
            }
        };
        let mut by_trace: HashMap<TraceId, Vec<Span>> = HashMap::new();
        for row in &rows {
            if let Some(span) = decode_span(row).map_err(|e| query_error(ACTION, &e))? {
                by_trace.entry(span.trace_id).or_default().push(span);
            }
        }
        Ok(wanted
            .into_iter()
            .filter_map(|trace_id| {
                let mut spans = by_trace.remove(&trace_id)?;
                spans.sort_by_key(|span| (span.start_unix_nano, span.span_id));
                Some(Trace { trace_id, spans })
            })
            .collect())
    }

    /// Calls per pair of services from the hourly rollup. Its buckets are whole hours of the
    /// callee's start, so the range is widened to the hours it touches.
    async fn dependencies(&self, start: i64, end: i64) -> Result<Vec<DependencyLink>, StoreError> {
        const ACTION: &str = "read the service dependencies";
        const HOUR_NS: i64 = 3_600_000_000_000;
        let from = micros_floor(start.div_euclid(HOUR_NS).saturating_mul(HOUR_NS));
        let to = micros_floor(end);
        let sql = format!(
            "SELECT parent_service, child_service, sum(calls)::bigint
             FROM {}.service_dependencies_1h
             WHERE bucket_start >= $1 AND bucket_start <= $2
             GROUP BY parent_service, child_service
             ORDER BY parent_service, child_service",
            self.schema
        );
        let rows = self
            .query(
                ACTION,
                &sql,
                &[(&from, Type::TIMESTAMPTZ), (&to, Type::TIMESTAMPTZ)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(DependencyLink {
                    parent: row.try_get(0)?,
                    child: row.try_get(1)?,
                    call_count: u64::try_from(row.try_get::<_, i64>(2)?).unwrap_or(0),
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(|e| query_error(ACTION, &e))
    }

    /// Statistics per service from the spans ([`raw_stats_sql`]) or the hourly statistics
    /// ([`hourly_stats_sql`]).
    async fn service_stats(&self, query: &StatsQuery) -> Result<Vec<ServiceStats>, StoreError> {
        const ACTION: &str = "read the service statistics";
        let mut values = Values::default();
        let sql = match query.source {
            StatsSource::Raw => raw_stats_sql(&self.schema, query, &mut values),
            StatsSource::Hourly => hourly_stats_sql(&self.schema, query, &mut values),
        };
        let rows = self.query(ACTION, &sql, &values.params()).await?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let mut stats = rows
            .iter()
            .map(|row| {
                let quantiles: Vec<Option<f64>> = row.try_get(3)?;
                Ok(ServiceStats::new(
                    row.try_get(0)?,
                    count(row.try_get(1)?),
                    count(row.try_get(2)?),
                    &quantiles,
                ))
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(|e| query_error(ACTION, &e))?;
        // One order whatever the database's collation.
        stats.sort_unstable_by(|a, b| a.service.cmp(&b.service));
        Ok(stats)
    }
}

impl Store for PostgresStore {
    fn services(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(self.services())
    }

    fn operations<'a>(
        &'a self,
        service: &'a str,
        kind: Option<SpanKind>,
    ) -> BoxFuture<'a, Result<Vec<Operation>, StoreError>> {
        Box::pin(self.operations(service, kind))
    }

    fn find_trace_ids<'a>(
        &'a self,
        query: &'a TraceQuery,
    ) -> BoxFuture<'a, Result<Vec<TraceId>, StoreError>> {
        Box::pin(self.find_trace_ids(query))
    }

    fn traces<'a>(
        &'a self,
        ids: &'a [TraceId],
        window: Option<(i64, i64)>,
    ) -> BoxFuture<'a, Result<Vec<Trace>, StoreError>> {
        Box::pin(self.traces(ids, window))
    }

    fn dependencies(
        &self,
        start_unix_nano: i64,
        end_unix_nano: i64,
    ) -> BoxFuture<'_, Result<Vec<DependencyLink>, StoreError>> {
        Box::pin(self.dependencies(start_unix_nano, end_unix_nano))
    }

    fn service_stats<'a>(
        &'a self,
        query: &'a StatsQuery,
    ) -> BoxFuture<'a, Result<Vec<ServiceStats>, StoreError>> {
        Box::pin(self.service_stats(query))
    }
}

/// ` AND service_name = $n` when the query is of one service.
fn service_condition(query: &StatsQuery, values: &mut Values) -> String {
    match &query.service {
        Some(service) => format!(
            " AND service_name = {}",
            values.param(service.clone(), Type::TEXT)
        ),
        None => String::new(),
    }
}

/// Statistics from the spans that started in the window, to the nanosecond (`start_time`, in
/// microseconds, bounds the day partitions read): `count(*)`, those with status code 2, and
/// `percentile_cont` of the durations at [`STATS_QUANTILES`] (exact: linear interpolation
/// between the two durations nearest the rank, as ClickHouse's `quantileExactInclusive`). A
/// negative duration (the span ends before it starts; stored as sent) counts as 0, as in
/// span_stats_1h.
fn raw_stats_sql(schema: &str, query: &StatsQuery, values: &mut Values) -> String {
    let (start, end) = query.covered();
    let from = values.param(micros_floor(start), Type::TIMESTAMPTZ);
    let to = values.param(micros_floor(end), Type::TIMESTAMPTZ);
    let start = values.param(start, Type::INT8);
    let end = values.param(end, Type::INT8);
    let error = values.param(StatusCode::Error as i16, Type::INT2);
    let levels = values.param(STATS_QUANTILES.to_vec(), Type::FLOAT8_ARRAY);
    let service = service_condition(query, values);
    format!(
        "SELECT service_name, count(*), count(*) FILTER (WHERE status_code = {error}),
                percentile_cont({levels}) WITHIN GROUP (ORDER BY greatest(duration_ns, 0)::float8)
         FROM {schema}.spans
         WHERE start_time >= {from} AND start_time <= {to}
           AND start_time_unix_nano >= {start} AND start_time_unix_nano < {end}{service}
         GROUP BY service_name"
    )
}

/// Statistics from span_stats_1h, over the whole hours of the window: each service's `spans` and
/// `errors` added up, and its `duration_buckets` added up bucket by bucket. That is what
/// `otelstore_add_counts(a, 0, b, 0)` does to two arrays (as the exporter merges a row at
/// ingest), done over every row at once: each array starts at bucket 0, so a bucket is the same
/// ordinal in every array, and the ordinals summed run from 1 to the longest array's length with
/// none missing. The schema has no aggregate over `otelstore_add_counts`, and this binary creates
/// nothing in it. `otelstore_duration_quantile` reads the merged buckets: the geometric middle of
/// the bucket that holds the value at rank ⌈q·n⌉, within 10 % of it.
fn hourly_stats_sql(schema: &str, query: &StatsQuery, values: &mut Values) -> String {
    let (start, end) = query.covered();
    let from = values.param(micros_floor(start), Type::TIMESTAMPTZ);
    let to = values.param(micros_floor(end), Type::TIMESTAMPTZ);
    let levels = values.param(STATS_QUANTILES.to_vec(), Type::FLOAT8_ARRAY);
    let service = service_condition(query, values);
    format!(
        "WITH hours AS (
            SELECT service_name, spans, errors, duration_buckets FROM {schema}.span_stats_1h
            WHERE bucket_start >= {from} AND bucket_start < {to}{service}
         ), buckets AS (
            SELECT service_name, i, sum(n)::bigint AS n
            FROM hours, unnest(duration_buckets) WITH ORDINALITY AS b(n, i)
            GROUP BY service_name, i
         ), merged AS (
            SELECT service_name, array_agg(n ORDER BY i) AS buckets FROM buckets
            GROUP BY service_name
         )
         SELECT t.service_name, t.spans, t.errors,
                ARRAY(SELECT {schema}.otelstore_duration_quantile(m.buckets, l.q)
                      FROM unnest({levels}) WITH ORDINALITY AS l(q, n) ORDER BY l.n)
         FROM (SELECT service_name, sum(spans)::bigint AS spans, sum(errors)::bigint AS errors
               FROM hours GROUP BY service_name) AS t
         LEFT JOIN merged AS m USING (service_name)"
    )
}

/// The first window of a search without a service. A busy system has traces enough in a minute;
/// on an idle one the doubling windows reach back a day in 11 cursors.
const FIRST_WINDOW_MICROS: i64 = 60_000_000;

/// The first rows of a search's cursor, and the rows of each next fetch.
const FIRST_FETCH: (&str, usize) = ("FETCH 200 FROM matching_spans", 200);
const NEXT_FETCH: (&str, usize) = ("FETCH 5000 FROM matching_spans", 5000);

/// The values of a statement's parameters with their types, numbered `$1`, `$2`, ... as they are
/// added.
#[derive(Default)]
struct Values(Vec<(Box<dyn ToSql + Sync + Send>, Type)>);

impl Values {
    /// Adds a value and answers its placeholder.
    fn param(&mut self, value: impl ToSql + Sync + Send + 'static, kind: Type) -> String {
        self.0.push((Box::new(value), kind));
        format!("${}", self.0.len())
    }

    fn params(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        self.0
            .iter()
            .map(|(value, kind)| (value.as_ref() as &(dyn ToSql + Sync), kind.clone()))
            .collect()
    }
}

/// The start times, in whole microseconds since the epoch, a search's cursor reads: from `from`
/// to `to`, `to` itself included or not.
struct Window {
    from: i64,
    to: i64,
    to_included: bool,
}

/// A trace search: the cursor over its matching spans of a window, newest first, and its
/// parameters.
struct Search {
    declare: String,
    values: Values,
}

impl Search {
    fn new(schema: &str, query: &TraceQuery, window: &Window) -> Search {
        let mut search = Search {
            declare: String::new(),
            values: Values::default(),
        };
        let mut conditions = Vec::new();
        // start_time (microseconds) is the partition key and the index's second column. The
        // exact nanoseconds are compared as rows arrive: a condition on them here would make the
        // planner count the time range twice (they are the same time) and expect far fewer
        // matches than there are.
        let from = search.param(at_micros(window.from), Type::TIMESTAMPTZ);
        let to = search.param(at_micros(window.to), Type::TIMESTAMPTZ);
        let below = if window.to_included { "<=" } else { "<" };
        conditions.push(format!("start_time >= {from} AND start_time {below} {to}"));
        if let Some(service) = &query.service {
            let p = search.param(service.clone(), Type::TEXT);
            conditions.push(format!("service_name = {p}"));
        }
        if let Some(operation) = &query.operation {
            let p = search.param(operation.clone(), Type::TEXT);
            conditions.push(format!("name = {p}"));
        }
        if let Some(min) = query.duration_min_ns {
            let p = search.param(min, Type::INT8);
            conditions.push(format!("duration_ns >= {p}"));
        }
        if let Some(max) = query.duration_max_ns {
            let p = search.param(max, Type::INT8);
            conditions.push(format!("duration_ns <= {p}"));
        }
        for tag in &query.tags {
            conditions.push(match tag {
                TagFilter::Attribute { key, value } => {
                    let p = search.param(attribute_matches(key, value), Type::JSONB_ARRAY);
                    format!("(span_attributes @> ANY({p}) OR resource_attributes @> ANY({p}))")
                }
                TagFilter::Kind(kind) => {
                    format!("kind = {}", search.param(*kind as i16, Type::INT2))
                }
                TagFilter::Status(code) => {
                    format!("status_code = {}", search.param(*code as i16, Type::INT2))
                }
                TagFilter::Error(error) => {
                    let p = search.param(StatusCode::Error as i16, Type::INT2);
                    if *error {
                        format!("status_code = {p}")
                    } else {
                        format!("status_code <> {p}")
                    }
                }
            });
        }
        search.declare = format!(
            "DECLARE matching_spans NO SCROLL CURSOR FOR
                SELECT trace_id, start_time_unix_nano FROM {schema}.spans
                WHERE {}
                ORDER BY start_time DESC",
            conditions.join("\n                  AND ")
        );
        search
    }

    fn param(&mut self, value: impl ToSql + Sync + Send + 'static, kind: Type) -> String {
        self.values.param(value, kind)
    }

    fn params(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        self.values.params()
    }
}

/// The jsonb objects `{key: value}` an attribute column contains when its value, as a string, is
/// `text`: the string itself; the number, when `text` is one (so `500` finds the int 500, and
/// the string "500"; numbers compare by value, so it finds a double 500.0 too); the bool for
/// `true`/`false`; the tagged double for `NaN` and the infinities.
fn attribute_matches(key: &str, text: &str) -> Vec<Json> {
    let mut objects = vec![json!({ key: text })];
    match text {
        "true" => objects.push(json!({ key: true })),
        "false" => objects.push(json!({ key: false })),
        "NaN" | "Infinity" | "-Infinity" => objects.push(json!({ key: { "$double": text } })),
        _ => {
            if let Ok(number) = serde_json::Number::from_str(text) {
                objects.push(json!({ key: number }));
            }
        }
    }
    objects
}

/// A time in whole microseconds, rounded down, as `start_time` holds a span's start.
fn micros_floor(unix_nano: i64) -> SystemTime {
    at_micros(unix_nano.div_euclid(1000))
}

/// The time `micros` microseconds after the epoch (before it when negative).
fn at_micros(micros: i64) -> SystemTime {
    let since_epoch = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH + since_epoch
    } else {
        UNIX_EPOCH - since_epoch
    }
}

/// A lost or refused connection means the database is unavailable; anything else is the query's
/// own error.
fn query_error(action: &'static str, error: &tokio_postgres::Error) -> StoreError {
    let unavailable = error.is_closed()
        || error.code().is_some_and(|code| {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(code)
        });
    if unavailable {
        StoreError::Unavailable(postgres_message(error))
    } else if error.code() == Some(&SqlState::QUERY_CANCELED) {
        StoreError::Timeout {
            action,
            message: postgres_message(error),
        }
    } else {
        StoreError::Query {
            action,
            message: postgres_message(error),
        }
    }
}

/// The server's message when there is one (tokio-postgres prints only "db error"), else the
/// client's; neither holds the DSN.
fn postgres_message(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => db.to_string(),
        None => error.to_string(),
    }
}

const SPAN_COLUMNS: &str = "trace_id, span_id, parent_span_id, trace_state, flags, name, kind, \
    start_time_unix_nano, duration_ns, status_code, status_message, service_name, \
    resource_attributes, scope_name, scope_version, span_attributes, events, links";

/// One row of [`SPAN_COLUMNS`], or None for a span whose ids are not OTLP's 16 and 8 bytes.
fn decode_span(row: &Row) -> Result<Option<Span>, tokio_postgres::Error> {
    let trace_id: &[u8] = row.try_get(0)?;
    let span_id: &[u8] = row.try_get(1)?;
    let (Ok(trace_id), Ok(span_id)) = (trace_id.try_into(), span_id.try_into()) else {
        tracing::debug!("a span whose ids are not 16 and 8 bytes long is skipped");
        return Ok(None);
    };
    let parent: Option<&[u8]> = row.try_get(2)?;
    let events: Json = row.try_get(16)?;
    let links: Json = row.try_get(17)?;
    Ok(Some(Span {
        trace_id: TraceId(trace_id),
        span_id: SpanId(span_id),
        parent_span_id: parent.and_then(|id| id.try_into().ok()).map(SpanId),
        trace_state: row.try_get(3)?,
        // The column keeps OTLP's fixed32 as its signed bit pattern.
        flags: row.try_get::<_, i32>(4)? as u32,
        name: row.try_get(5)?,
        kind: SpanKind::from_otlp(i64::from(row.try_get::<_, i16>(6)?)),
        start_unix_nano: row.try_get(7)?,
        duration_ns: row.try_get(8)?,
        status_code: StatusCode::from_otlp(i64::from(row.try_get::<_, i16>(9)?)),
        status_message: row.try_get(10)?,
        service_name: row.try_get(11)?,
        resource_attributes: attributes(&row.try_get(12)?),
        scope_name: row.try_get(13)?,
        scope_version: row.try_get(14)?,
        attributes: attributes(&row.try_get(15)?),
        events: items(&events).filter_map(event).collect(),
        links: items(&links).filter_map(link).collect(),
    }))
}

fn items(array: &Json) -> impl Iterator<Item = &Json> {
    array.as_array().into_iter().flatten()
}

/// `{"time_unix_nano", "name", "attributes", ...}`.
fn event(json: &Json) -> Option<Event> {
    Some(Event {
        time_unix_nano: json["time_unix_nano"]
            .as_u64()
            .map(|t| i64::try_from(t).unwrap_or(i64::MAX))?,
        name: json["name"].as_str()?.to_owned(),
        attributes: attributes(&json["attributes"]),
    })
}

/// `{"trace_id", "span_id", "trace_state", "attributes", ...}`, ids in hex; a link whose ids are
/// not 16 and 8 bytes is left out.
fn link(json: &Json) -> Option<Link> {
    let (trace_id, span_id) = (json["trace_id"].as_str()?, json["span_id"].as_str()?);
    if trace_id.len() != 32 || span_id.len() != 16 {
        return None;
    }
    Some(Link {
        trace_id: TraceId::parse(trace_id).ok()?,
        span_id: SpanId::parse(span_id).ok()?,
        trace_state: json["trace_state"].as_str()?.to_owned(),
        attributes: attributes(&json["attributes"]),
    })
}

/// An attribute column (an object from key to value; keys as sent), sorted by key: jsonb keeps no
/// order of its own.
fn attributes(json: &Json) -> Vec<Attribute> {
    let mut attributes: Vec<Attribute> = json
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| Attribute {
            key: key.clone(),
            value: value_of(value),
        })
        .collect();
    attributes.sort_by(|a, b| a.key.cmp(&b.key));
    attributes
}

/// One attribute value as the exporter encodes it (schema/README.md, "Attribute encoding").
fn value_of(json: &Json) -> Value {
    match json {
        Json::Null => Value::Empty,
        Json::Bool(b) => Value::Bool(*b),
        // jsonb keeps a number as written: the exporter writes every double with a fraction.
        Json::Number(n) => match n.as_i64() {
            Some(int) if !n.is_f64() => Value::Int(int),
            _ => Value::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::Str(s.clone()),
        Json::Array(values) => Value::Array(values.iter().map(value_of).collect()),
        Json::Object(map) => {
            if map.len() == 1 {
                if let Some(value) = tagged(map) {
                    return value;
                }
            }
            // A map: each key that begins with '$' was given one more.
            let mut entries: Vec<Attribute> = map
                .iter()
                .map(|(key, value)| Attribute {
                    key: key.strip_prefix('$').unwrap_or(key).to_owned(),
                    value: value_of(value),
                })
                .collect();
            entries.sort_by(|a, b| a.key.cmp(&b.key));
            Value::Map(entries)
        }
    }
}

/// `{"$double": "NaN"}`, `{"$bytes": "<base64>"}` or `{"$strindex": n}` (profiles only; read as its
/// int). A map's own keys never begin with a single '$'.
fn tagged(map: &serde_json::Map<String, Json>) -> Option<Value> {
    let (tag, value) = map.iter().next()?;
    match (tag.as_str(), value) {
        ("$double", Json::String(name)) => match name.as_str() {
            "NaN" => Some(Value::Double(f64::NAN)),
            "Infinity" => Some(Value::Double(f64::INFINITY)),
            "-Infinity" => Some(Value::Double(f64::NEG_INFINITY)),
            _ => None,
        },
        ("$bytes", Json::String(text)) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()
            .map(Value::Bytes),
        ("$strindex", Json::Number(n)) => n.as_i64().map(Value::Int),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(key: &str, value: Value) -> Attribute {
        Attribute {
            key: key.into(),
            value,
        }
    }

    #[test]
    fn the_exporters_jsonb_encoding_reads_back_typed() {
        let column: Json = serde_json::from_str(
            r#"{"s": "x", "b": false, "i": 9223372036854775807, "d": 1.0, "e": 0.00000025,
                "big": 10000000000000000.0, "nan": {"$double": "NaN"}, "inf": {"$double": "-Infinity"},
                "bytes": {"$bytes": "AP8="}, "arr": [1, 2.5, null], "none": null,
                "map": {"$$x": true, "$$bytes": {"$bytes": ""}, "y": {}}}"#,
        )
        .expect("JSON");
        let mut got = attributes(&column);
        let Value::Double(nan) = got.iter().find(|a| a.key == "nan").expect("nan").value else {
            panic!("NaN is a double")
        };
        assert!(nan.is_nan());
        got.retain(|a| a.key != "nan");
        assert_eq!(
            got,
            vec![
                attr(
                    "arr",
                    Value::Array(vec![Value::Int(1), Value::Double(2.5), Value::Empty])
                ),
                attr("b", Value::Bool(false)),
                attr("big", Value::Double(1e16)),
                attr("bytes", Value::Bytes(vec![0, 255])),
                attr("d", Value::Double(1.0)),
                attr("e", Value::Double(2.5e-7)),
                attr("i", Value::Int(i64::MAX)),
                attr("inf", Value::Double(f64::NEG_INFINITY)),
                attr(
                    "map",
                    Value::Map(vec![
                        attr("$bytes", Value::Bytes(vec![])),
                        attr("$x", Value::Bool(true)),
                        attr("y", Value::Map(vec![])),
                    ])
                ),
                attr("none", Value::Empty),
                attr("s", Value::Str("x".into())),
            ]
        );
    }

    #[test]
    fn a_tag_matches_the_string_and_the_value_it_spells() {
        let texts = |key, text| {
            attribute_matches(key, text)
                .iter()
                .map(Json::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            texts("http.status_code", "500"),
            [
                r#"{"http.status_code":"500"}"#,
                r#"{"http.status_code":500}"#
            ]
        );
        assert_eq!(texts("x", "true"), [r#"{"x":"true"}"#, r#"{"x":true}"#]);
        assert_eq!(
            texts("x", "NaN"),
            [r#"{"x":"NaN"}"#, r#"{"x":{"$double":"NaN"}}"#]
        );
        assert_eq!(texts("x", "-2.5"), [r#"{"x":"-2.5"}"#, r#"{"x":-2.5}"#]);
        assert_eq!(texts("$k", "GET"), [r#"{"$k":"GET"}"#]);
        assert_eq!(texts("x", "0x10"), [r#"{"x":"0x10"}"#]);
    }

    #[test]
    fn statistics_bind_every_value() {
        let query = StatsQuery {
            service: Some("svc' OR 1=1 --".into()),
            start_unix_nano: 1_700_000_000_123_456_789,
            end_unix_nano: 1_700_003_600_000_000_000,
            source: StatsSource::Raw,
        };
        let mut values = Values::default();
        let sql = raw_stats_sql("\"otel\"", &query, &mut values);
        assert!(sql.contains("FROM \"otel\".spans"), "{sql}");
        assert!(
            sql.contains("start_time_unix_nano >= $3 AND start_time_unix_nano < $4"),
            "{sql}"
        );
        assert!(sql.ends_with("AND service_name = $7\n         GROUP BY service_name"));
        assert_eq!(
            values
                .params()
                .iter()
                .map(|p| p.1.clone())
                .collect::<Vec<_>>(),
            [
                Type::TIMESTAMPTZ,
                Type::TIMESTAMPTZ,
                Type::INT8,
                Type::INT8,
                Type::INT2,
                Type::FLOAT8_ARRAY,
                Type::TEXT
            ]
        );
        let mut values = Values::default();
        let hourly = StatsQuery {
            service: None,
            source: StatsSource::Hourly,
            ..query
        };
        let sql = hourly_stats_sql("\"otel\"", &hourly, &mut values);
        assert!(sql.contains("FROM \"otel\".span_stats_1h"), "{sql}");
        assert!(
            sql.contains("WHERE bucket_start >= $1 AND bucket_start < $2\n"),
            "{sql}"
        );
        assert!(sql.contains("\"otel\".otelstore_duration_quantile(m.buckets, l.q)"));
        assert!(sql.contains("unnest($3) WITH ORDINALITY"), "{sql}");
        assert_eq!(values.params().len(), 3);
    }

    #[test]
    fn times_round_down_to_microseconds() {
        assert_eq!(
            micros_floor(1_700_000_000_123_456_789),
            UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456)
        );
        assert_eq!(micros_floor(-1), UNIX_EPOCH - Duration::from_micros(1));
    }

    #[test]
    fn settings_errors_never_show_the_dsn() {
        let settings = PostgresSettings {
            dsn: "postgres://u:secret@db:notaport/x".into(),
            ..PostgresSettings::default()
        };
        assert!(!format!("{settings:?}").contains("secret"));
        let error = PostgresStore::connect(&settings, Duration::from_secs(30))
            .err()
            .expect("bad DSN");
        assert!(!error.to_string().contains("secret"), "{error}");
    }
}
