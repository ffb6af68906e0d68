//! Rollups merged at ingest: the encoders summarize each request as they write its rows, the
//! writer adds up the summaries of the requests it writes together, and the sums are upserted into
//! the rollup tables of schema/postgres/0006_rollups.sql in the same transaction as the raw rows.
//!
//! Why at ingest and not in a scheduled job: PostgreSQL cannot tell a job which rows are new, so a
//! job must either rescan recent time ranges (at 80k spans/s an hour is 288M rows, far more work
//! than the ingest itself) or track an ingest watermark, which late and retried data defeat. Merged
//! in the writing transaction, a rollup costs one upsert per key per batch (1-10 % of PostgreSQL's
//! statement time in `make bench`, docs/BENCHMARKS.md), it counts exactly the rows that were
//! committed, and the request-id dedupe keeps retries from counting twice. The one job left is
//! service dependencies whose parent span arrived in another request (see partitions.rs).
//!
//! Every transaction upserts its keys in the same (sorted) order: concurrent writers then wait for
//! each other instead of deadlocking.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use tokio_postgres::Transaction;

use crate::error::Error;
use crate::json;

const FIVE_MINUTES_NS: i64 = 300 * 1_000_000_000;
const HOUR_NS: i64 = 3600 * 1_000_000_000;
/// Duration buckets per power of two, and the power of two (in ns) where bucket 1 starts.
const DURATION_BUCKETS_PER_OCTAVE: f64 = 4.0;
const DURATION_FIRST_OCTAVE: f64 = 10.25;
const DURATION_BUCKETS: usize = 128;
/// OTLP severity numbers 17-24 are ERROR, ERROR2..4, FATAL..FATAL4.
const FIRST_ERROR_SEVERITY: i32 = 17;

/// Metric types as the rollup tables number them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Gauge = 1,
    Sum = 2,
    Histogram = 3,
    ExponentialHistogram = 4,
}

const DELTA: i16 = 1;

/// What identifies a metric series, borrowed from the request being encoded.
pub struct Series<'a> {
    pub metric_name: &'a str,
    pub metric_type: MetricType,
    pub temporality: i16,
    pub service_name: &'a str,
    /// The jsonb text written for the resource's and the point's attributes.
    pub resource_json: &'a [u8],
    pub scope_name: &'a str,
    pub scope_version: &'a str,
    pub attributes_json: &'a [u8],
}

/// The values of one histogram point, explicit or exponential.
#[derive(Default)]
pub struct HistogramPoint<'a> {
    pub count: i64,
    pub sum: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Counts checked to fit an i64.
    pub bucket_counts: &'a [u64],
    pub explicit_bounds: &'a [f64],
    /// Exponential histograms only.
    pub exponential: Option<ExponentialBuckets<'a>>,
}

pub struct ExponentialBuckets<'a> {
    pub scale: i32,
    pub zero_count: i64,
    pub positive_offset: i32,
    pub positive: &'a [u64],
    pub negative_offset: i32,
    pub negative: &'a [u64],
}

#[derive(Default)]
pub struct Rollups {
    /// Keyed by a hash of (service, span name, kind, hour), so that a span of a known key costs
    /// no allocation; the key itself is kept in the value.
    span_stats: HashMap<u64, SpanStats>,
    dependencies: BTreeMap<(String, String, i64), Calls>,
    error_logs: BTreeMap<(String, i64), u64>,
    metrics_5m: BTreeMap<(u64, i64), MetricRollup>,
    metrics_1h: BTreeMap<(u64, i64), MetricRollup>,
}

#[derive(Clone)]
struct SpanStats {
    key: (String, String, i16, i64),
    spans: u64,
    errors: u64,
    duration_sum_ns: i64,
    duration_min_ns: i64,
    duration_max_ns: i64,
    buckets: Vec<i64>,
}

#[derive(Clone, Copy, Default)]
struct Calls {
    calls: u64,
    errors: u64,
}

#[derive(Clone)]
struct MetricRollup {
    metric_name: String,
    metric_type: MetricType,
    service_name: String,
    resource_json: String,
    attributes_json: String,
    temporality: i16,
    values: MetricValues,
}

/// The mergeable part of a metric rollup row; see the column comments in 0006_rollups.sql.
#[derive(Clone, Default)]
struct MetricValues {
    points: u64,
    last_time: i64,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    last: Option<f64>,
    count: Option<i64>,
    bucket_counts: Vec<i64>,
    explicit_bounds: Vec<f64>,
    scale: Option<i32>,
    zero_count: Option<i64>,
    positive_offset: i32,
    positive: Vec<i64>,
    negative_offset: i32,
    negative: Vec<i64>,
}

impl Rollups {
    pub fn span(
        &mut self,
        service_name: &str,
        span_name: &str,
        kind: i16,
        start_nanos: i64,
        duration_ns: i64,
        error: bool,
    ) {
        let hour = bucket(start_nanos, HOUR_NS);
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for part in [service_name.as_bytes(), span_name.as_bytes()] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        hasher.update(&kind.to_le_bytes());
        hasher.update(&hour.to_le_bytes());
        let duration = duration_ns.max(0);
        let stats = self
            .span_stats
            .entry(hasher.digest())
            .or_insert_with(|| SpanStats {
                key: (service_name.to_owned(), span_name.to_owned(), kind, hour),
                spans: 0,
                errors: 0,
                duration_sum_ns: 0,
                duration_min_ns: duration,
                duration_max_ns: duration,
                buckets: Vec::new(),
            });
        stats.spans += 1;
        stats.errors += u64::from(error);
        stats.duration_sum_ns = stats.duration_sum_ns.saturating_add(duration);
        stats.duration_min_ns = stats.duration_min_ns.min(duration);
        stats.duration_max_ns = stats.duration_max_ns.max(duration);
        let index = duration_bucket(duration);
        if stats.buckets.len() <= index {
            stats.buckets.resize(index + 1, 0);
        }
        stats.buckets[index] += 1;
    }

    /// A call from `parent_service` to `child_service`, counted at the hour of the child's start.
    pub fn dependency(
        &mut self,
        parent_service: &str,
        child_service: &str,
        child_start_nanos: i64,
        error: bool,
    ) {
        let key = (
            parent_service.to_owned(),
            child_service.to_owned(),
            bucket(child_start_nanos, HOUR_NS),
        );
        let calls = self.dependencies.entry(key).or_default();
        calls.calls += 1;
        calls.errors += u64::from(error);
    }

    /// A log record; only those of severity ERROR and above are counted.
    pub fn log(&mut self, service_name: &str, time_nanos: i64, severity_number: i32) {
        if severity_number >= FIRST_ERROR_SEVERITY {
            *self
                .error_logs
                .entry((service_name.to_owned(), bucket(time_nanos, HOUR_NS)))
                .or_default() += 1;
        }
    }

    pub fn number_point(&mut self, series: &Series<'_>, time_nanos: i64, value: f64) {
        let point = MetricValues {
            points: 1,
            last_time: time_nanos,
            sum: Some(value),
            min: Some(value),
            max: Some(value),
            last: Some(value),
            ..MetricValues::default()
        };
        self.metric_point(series, &[], None, time_nanos, point);
    }

    pub fn histogram_point(
        &mut self,
        series: &Series<'_>,
        time_nanos: i64,
        histogram: &HistogramPoint<'_>,
    ) {
        let mut point = MetricValues {
            points: 1,
            last_time: time_nanos,
            sum: histogram.sum,
            min: histogram.min,
            max: histogram.max,
            count: Some(histogram.count),
            bucket_counts: signed(histogram.bucket_counts),
            explicit_bounds: histogram.explicit_bounds.to_vec(),
            ..MetricValues::default()
        };
        let scale = histogram.exponential.as_ref().map(|e| e.scale);
        if let Some(exponential) = &histogram.exponential {
            point.scale = Some(exponential.scale);
            point.zero_count = Some(exponential.zero_count);
            point.positive_offset = exponential.positive_offset;
            point.positive = signed(exponential.positive);
            point.negative_offset = exponential.negative_offset;
            point.negative = signed(exponential.negative);
        }
        self.metric_point(series, histogram.explicit_bounds, scale, time_nanos, point);
    }

    fn metric_point(
        &mut self,
        series: &Series<'_>,
        bounds: &[f64],
        scale: Option<i32>,
        time_nanos: i64,
        point: MetricValues,
    ) {
        let id = series_id(series, bounds, scale);
        for (map, width) in [
            (&mut self.metrics_5m, FIVE_MINUTES_NS),
            (&mut self.metrics_1h, HOUR_NS),
        ] {
            match map.entry((id, bucket(time_nanos, width))) {
                std::collections::btree_map::Entry::Occupied(mut entry) => {
                    let rollup = entry.get_mut();
                    rollup
                        .values
                        .merge(&point, rollup.metric_type, rollup.temporality);
                }
                std::collections::btree_map::Entry::Vacant(entry) => {
                    entry.insert(MetricRollup {
                        metric_name: series.metric_name.to_owned(),
                        metric_type: series.metric_type,
                        service_name: series.service_name.to_owned(),
                        resource_json: String::from_utf8_lossy(series.resource_json).into_owned(),
                        attributes_json: String::from_utf8_lossy(series.attributes_json)
                            .into_owned(),
                        temporality: series.temporality,
                        values: point.clone(),
                    });
                }
            }
        }
    }

    /// Adds another request's rollups to these.
    pub fn merge(&mut self, other: &Rollups) {
        for (key, stats) in &other.span_stats {
            match self.span_stats.get_mut(key) {
                Some(mine) => {
                    mine.spans += stats.spans;
                    mine.errors += stats.errors;
                    mine.duration_sum_ns =
                        mine.duration_sum_ns.saturating_add(stats.duration_sum_ns);
                    mine.duration_min_ns = mine.duration_min_ns.min(stats.duration_min_ns);
                    mine.duration_max_ns = mine.duration_max_ns.max(stats.duration_max_ns);
                    mine.buckets = add_counts(&mine.buckets, 0, &stats.buckets, 0).1;
                }
                None => {
                    self.span_stats.insert(*key, stats.clone());
                }
            }
        }
        for (key, calls) in &other.dependencies {
            let mine = self.dependencies.entry(key.clone()).or_default();
            mine.calls += calls.calls;
            mine.errors += calls.errors;
        }
        for (key, count) in &other.error_logs {
            *self.error_logs.entry(key.clone()).or_default() += count;
        }
        for (mine, theirs) in [
            (&mut self.metrics_5m, &other.metrics_5m),
            (&mut self.metrics_1h, &other.metrics_1h),
        ] {
            for (key, rollup) in theirs {
                match mine.get_mut(key) {
                    Some(existing) => existing.values.merge(
                        &rollup.values,
                        existing.metric_type,
                        existing.temporality,
                    ),
                    None => {
                        mine.insert(*key, rollup.clone());
                    }
                }
            }
        }
    }

    /// Upserts every rollup into its table, in the transaction that writes the raw rows.
    pub async fn upsert(&self, tx: &Transaction<'_>, quoted_schema: &str) -> Result<(), Error> {
        if !self.span_stats.is_empty() {
            let mut stats: Vec<&SpanStats> = self.span_stats.values().collect();
            stats.sort_unstable_by(|a, b| a.key.cmp(&b.key));
            let rows = json_rows(stats.into_iter(), |out, s| {
                let (service, name, kind, bucket) = &s.key;
                field_str(out, "service_name", service);
                field_str(out, "span_name", name);
                field_num(out, "span_kind", i64::from(*kind));
                field_num(out, "bucket_start_s", bucket / 1_000_000_000);
                field_num(out, "spans", saturating_i64(s.spans));
                field_num(out, "errors", saturating_i64(s.errors));
                field_num(out, "duration_sum_ns", s.duration_sum_ns);
                field_num(out, "duration_min_ns", s.duration_min_ns);
                field_num(out, "duration_max_ns", s.duration_max_ns);
                field_counts(out, "duration_buckets", &s.buckets);
            });
            let sql = format!(
                "INSERT INTO {quoted_schema}.span_stats_1h AS r (bucket_start, service_name, span_name, span_kind, spans, errors,
                     duration_sum_ns, duration_min_ns, duration_max_ns, duration_buckets)
                 SELECT to_timestamp(bucket_start_s), service_name, span_name, span_kind, spans, errors,
                     duration_sum_ns, duration_min_ns, duration_max_ns, duration_buckets
                 FROM jsonb_to_recordset($1::text::jsonb) AS x(service_name text, span_name text, span_kind smallint,
                     bucket_start_s bigint, spans bigint, errors bigint, duration_sum_ns bigint, duration_min_ns bigint,
                     duration_max_ns bigint, duration_buckets bigint[])
                 ON CONFLICT (service_name, span_name, span_kind, bucket_start) DO UPDATE SET
                     spans = r.spans + EXCLUDED.spans,
                     errors = r.errors + EXCLUDED.errors,
                     duration_sum_ns = CASE WHEN r.duration_sum_ns > 9223372036854775807 - EXCLUDED.duration_sum_ns
                         THEN 9223372036854775807 ELSE r.duration_sum_ns + EXCLUDED.duration_sum_ns END,
                     duration_min_ns = least(r.duration_min_ns, EXCLUDED.duration_min_ns),
                     duration_max_ns = greatest(r.duration_max_ns, EXCLUDED.duration_max_ns),
                     duration_buckets = {quoted_schema}.otelstore_add_counts(r.duration_buckets, 0, EXCLUDED.duration_buckets, 0)"
            );
            execute(tx, &sql, rows, "upsert span statistics").await?;
        }
        if !self.dependencies.is_empty() {
            let rows = json_rows(
                self.dependencies.iter(),
                |out, ((parent, child, bucket), calls)| {
                    field_str(out, "parent_service", parent);
                    field_str(out, "child_service", child);
                    field_num(out, "bucket_start_s", bucket / 1_000_000_000);
                    field_num(out, "calls", saturating_i64(calls.calls));
                    field_num(out, "errors", saturating_i64(calls.errors));
                },
            );
            let sql = format!(
                "INSERT INTO {quoted_schema}.service_dependencies_1h AS r (bucket_start, parent_service, child_service, calls, errors)
                 SELECT to_timestamp(bucket_start_s), parent_service, child_service, calls, errors
                 FROM jsonb_to_recordset($1::text::jsonb) AS x(parent_service text, child_service text, bucket_start_s bigint,
                     calls bigint, errors bigint)
                 ON CONFLICT (parent_service, child_service, bucket_start) DO UPDATE SET
                     calls = r.calls + EXCLUDED.calls, errors = r.errors + EXCLUDED.errors"
            );
            execute(tx, &sql, rows, "upsert service dependencies").await?;
        }
        if !self.error_logs.is_empty() {
            let rows = json_rows(self.error_logs.iter(), |out, ((service, bucket), count)| {
                field_str(out, "service_name", service);
                field_num(out, "bucket_start_s", bucket / 1_000_000_000);
                field_num(out, "error_logs", saturating_i64(*count));
            });
            let sql = format!(
                "INSERT INTO {quoted_schema}.error_logs_1h AS r (bucket_start, service_name, error_logs)
                 SELECT to_timestamp(bucket_start_s), service_name, error_logs
                 FROM jsonb_to_recordset($1::text::jsonb) AS x(service_name text, bucket_start_s bigint, error_logs bigint)
                 ON CONFLICT (service_name, bucket_start) DO UPDATE SET error_logs = r.error_logs + EXCLUDED.error_logs"
            );
            execute(tx, &sql, rows, "upsert error-log counts").await?;
        }
        for (map, table) in [
            (&self.metrics_5m, "metrics_rollup_5m"),
            (&self.metrics_1h, "metrics_rollup_1h"),
        ] {
            if map.is_empty() {
                continue;
            }
            let rows = json_rows(map.iter(), |out, ((id, bucket), rollup)| {
                write_metric_row(out, *id, *bucket, rollup)
            });
            execute(
                tx,
                &metric_upsert_sql(quoted_schema, table),
                rows,
                "upsert metric rollups",
            )
            .await?;
        }
        Ok(())
    }
}

impl MetricValues {
    /// Folds `other` (later or earlier points of the same series) into these values.
    fn merge(&mut self, other: &MetricValues, metric_type: MetricType, temporality: i16) {
        let other_is_newer = other.last_time >= self.last_time;
        self.min = min_option(self.min, other.min);
        self.max = max_option(self.max, other.max);
        match metric_type {
            MetricType::Gauge | MetricType::Sum => {
                self.sum = match (self.sum, other.sum) {
                    (Some(a), Some(b)) => Some(a + b),
                    (a, b) => a.or(b),
                };
                if other_is_newer {
                    self.last = other.last;
                }
            }
            MetricType::Histogram | MetricType::ExponentialHistogram if temporality == DELTA => {
                self.sum = self.sum.zip(other.sum).map(|(a, b)| a + b);
                self.count = Some(
                    self.count
                        .unwrap_or(0)
                        .saturating_add(other.count.unwrap_or(0)),
                );
                self.bucket_counts = add_counts(&self.bucket_counts, 0, &other.bucket_counts, 0).1;
                self.zero_count = Some(
                    self.zero_count
                        .unwrap_or(0)
                        .saturating_add(other.zero_count.unwrap_or(0)),
                );
                (self.positive_offset, self.positive) = add_counts(
                    &self.positive,
                    self.positive_offset,
                    &other.positive,
                    other.positive_offset,
                );
                (self.negative_offset, self.negative) = add_counts(
                    &self.negative,
                    self.negative_offset,
                    &other.negative,
                    other.negative_offset,
                );
            }
            // Each cumulative point covers all before it: the newest one is the merge.
            MetricType::Histogram | MetricType::ExponentialHistogram => {
                if other_is_newer {
                    self.sum = other.sum;
                    self.count = other.count;
                    self.bucket_counts.clone_from(&other.bucket_counts);
                    self.zero_count = other.zero_count;
                    self.positive_offset = other.positive_offset;
                    self.positive.clone_from(&other.positive);
                    self.negative_offset = other.negative_offset;
                    self.negative.clone_from(&other.negative);
                }
            }
        }
        self.points += other.points;
        self.last_time = self.last_time.max(other.last_time);
    }
}

/// Element-wise sum of two count arrays starting at the given offsets, as
/// `otelstore_add_counts` and `otelstore_merged_offset` compute it in SQL.
fn add_counts(a: &[i64], a_offset: i32, b: &[i64], b_offset: i32) -> (i32, Vec<i64>) {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => (0, Vec::new()),
        (false, true) => (a_offset, a.to_vec()),
        (true, false) => (b_offset, b.to_vec()),
        (false, false) => {
            let start = i64::from(a_offset.min(b_offset));
            let end =
                (i64::from(a_offset) + a.len() as i64).max(i64::from(b_offset) + b.len() as i64);
            let at = |counts: &[i64], offset: i32, i: i64| {
                usize::try_from(i - i64::from(offset))
                    .ok()
                    .and_then(|index| counts.get(index))
                    .copied()
                    .unwrap_or(0)
            };
            let sums = (start..end)
                .map(|i| at(a, a_offset, i).saturating_add(at(b, b_offset, i)))
                .collect();
            (a_offset.min(b_offset), sums)
        }
    }
}

/// Counts the encoder has checked to fit an i64; a larger one would saturate.
fn signed(counts: &[u64]) -> Vec<i64> {
    counts
        .iter()
        .map(|&count| i64::try_from(count).unwrap_or(i64::MAX))
        .collect()
}

fn min_option(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_option(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The start of the `width`-wide bucket holding `nanos`, in Unix nanoseconds.
fn bucket(nanos: i64, width: i64) -> i64 {
    nanos - nanos.rem_euclid(width)
}

/// The duration bucket of `duration_ns` (see `otelstore_duration_quantile` in 0006_rollups.sql).
fn duration_bucket(duration_ns: i64) -> usize {
    if duration_ns <= 0 {
        return 0;
    }
    let position =
        ((duration_ns as f64).log2() - DURATION_FIRST_OCTAVE) * DURATION_BUCKETS_PER_OCTAVE;
    if position < 0.0 {
        0
    } else {
        (position as usize + 1).min(DURATION_BUCKETS - 1)
    }
}

fn series_id(series: &Series<'_>, bounds: &[f64], scale: Option<i32>) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in [
        series.metric_name.as_bytes(),
        series.resource_json,
        series.scope_name.as_bytes(),
        series.scope_version.as_bytes(),
        series.attributes_json,
    ] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.update(&[series.metric_type as u8]);
    hasher.update(&series.temporality.to_le_bytes());
    for bound in bounds {
        hasher.update(&bound.to_bits().to_le_bytes());
    }
    if let Some(scale) = scale {
        hasher.update(&scale.to_le_bytes());
    }
    hasher.digest()
}

fn saturating_i64(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

async fn execute(
    tx: &Transaction<'_>,
    sql: &str,
    rows: String,
    action: &'static str,
) -> Result<(), Error> {
    tx.execute(sql, &[&rows])
        .await
        .map(|_| ())
        .map_err(Error::postgres(action))
}

/// A JSON array of objects, one per entry, for `jsonb_to_recordset`: one parameter however many
/// rows, and arrays per row, which `unnest` of parallel arrays cannot carry.
fn json_rows<T>(entries: impl Iterator<Item = T>, mut write: impl FnMut(&mut String, T)) -> String {
    let mut out = String::from("[");
    for entry in entries {
        if out.len() > 1 {
            out.push(',');
        }
        out.push('{');
        write(&mut out, entry);
        // Every writer leaves a trailing comma after its last field.
        out.pop();
        out.push('}');
    }
    out.push(']');
    out
}

fn field_str(out: &mut String, name: &str, value: &str) {
    let mut quoted = Vec::with_capacity(value.len() + 2);
    json::write_string(&mut quoted, value);
    let _ = write!(out, "\"{name}\":{},", String::from_utf8_lossy(&quoted));
}

fn field_num(out: &mut String, name: &str, value: i64) {
    let _ = write!(out, "\"{name}\":{value},");
}

fn field_double(out: &mut String, name: &str, value: Option<f64>) {
    let _ = write!(out, "\"{name}\":");
    match value {
        Some(v) => double_value(out, v),
        None => out.push_str("null"),
    }
    out.push(',');
}

/// NaN and the infinities, which JSON cannot spell, go as the strings PostgreSQL reads.
fn double_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("\"NaN\"");
    } else if value.is_infinite() {
        out.push_str(if value < 0.0 {
            "\"-Infinity\""
        } else {
            "\"Infinity\""
        });
    } else {
        out.push_str(ryu::Buffer::new().format_finite(value));
    }
}

fn field_counts(out: &mut String, name: &str, counts: &[i64]) {
    let _ = write!(out, "\"{name}\":[");
    for (i, count) in counts.iter().enumerate() {
        let _ = write!(out, "{}{count}", if i > 0 { "," } else { "" });
    }
    out.push_str("],");
}

fn write_metric_row(out: &mut String, id: u64, bucket: i64, rollup: &MetricRollup) {
    let v = &rollup.values;
    let histogram = matches!(
        rollup.metric_type,
        MetricType::Histogram | MetricType::ExponentialHistogram
    );
    let exponential = rollup.metric_type == MetricType::ExponentialHistogram;
    field_num(out, "bucket_start_s", bucket / 1_000_000_000);
    field_str(out, "metric_name", &rollup.metric_name);
    field_num(out, "metric_type", rollup.metric_type as i64);
    // The column is a bigint: the hash's bit pattern.
    field_num(out, "series_id", id as i64);
    field_str(out, "service_name", &rollup.service_name);
    let _ = write!(
        out,
        "\"resource_attributes\":{},\"attributes\":{},",
        rollup.resource_json, rollup.attributes_json
    );
    field_num(
        out,
        "aggregation_temporality",
        i64::from(rollup.temporality),
    );
    field_num(out, "points", saturating_i64(v.points));
    field_num(out, "last_time_unix_nano", v.last_time);
    field_double(out, "sum", v.sum);
    field_double(out, "min", v.min);
    field_double(out, "max", v.max);
    field_double(out, "last", v.last);
    if histogram {
        field_num(out, "count", v.count.unwrap_or(0));
    }
    if histogram && !exponential {
        field_counts(out, "bucket_counts", &v.bucket_counts);
        out.push_str("\"explicit_bounds\":[");
        for (i, bound) in v.explicit_bounds.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            double_value(out, *bound);
        }
        out.push_str("],");
    }
    if exponential {
        field_num(out, "scale", i64::from(v.scale.unwrap_or(0)));
        field_num(out, "zero_count", v.zero_count.unwrap_or(0));
        field_num(out, "positive_offset", i64::from(v.positive_offset));
        field_counts(out, "positive_bucket_counts", &v.positive);
        field_num(out, "negative_offset", i64::from(v.negative_offset));
        field_counts(out, "negative_bucket_counts", &v.negative);
    }
}

fn metric_upsert_sql(quoted_schema: &str, table: &str) -> String {
    const COLUMNS: &str = "bucket_start_s bigint, metric_name text, metric_type smallint, series_id bigint, service_name text,
        resource_attributes jsonb, attributes jsonb, aggregation_temporality smallint, points bigint,
        last_time_unix_nano bigint, sum double precision, min double precision, max double precision,
        last double precision, count bigint, bucket_counts bigint[], explicit_bounds double precision[], scale integer,
        zero_count bigint, positive_offset integer, positive_bucket_counts bigint[], negative_offset integer,
        negative_bucket_counts bigint[]";
    // Histograms: delta points add up, the newest cumulative point replaces the others; in the
    // same way as MetricValues::merge.
    let newer = "EXCLUDED.last_time_unix_nano >= r.last_time_unix_nano";
    let histogram = "r.metric_type IN (3, 4)";
    let delta = "r.aggregation_temporality = 1";
    format!(
        "INSERT INTO {quoted_schema}.{table} AS r (bucket_start, metric_name, metric_type, series_id, service_name,
             resource_attributes, attributes, aggregation_temporality, points, last_time_unix_nano, sum, min, max, last,
             count, bucket_counts, explicit_bounds, scale, zero_count, positive_offset, positive_bucket_counts,
             negative_offset, negative_bucket_counts)
         SELECT to_timestamp(bucket_start_s), metric_name, metric_type, series_id, service_name, resource_attributes,
             attributes, aggregation_temporality, points, last_time_unix_nano, sum, min, max, last, count, bucket_counts,
             explicit_bounds, scale, zero_count, positive_offset, positive_bucket_counts, negative_offset,
             negative_bucket_counts
         FROM jsonb_to_recordset($1::text::jsonb) AS x({COLUMNS})
         ON CONFLICT (metric_name, series_id, bucket_start) DO UPDATE SET
             points = r.points + EXCLUDED.points,
             last_time_unix_nano = greatest(r.last_time_unix_nano, EXCLUDED.last_time_unix_nano),
             min = least(r.min, EXCLUDED.min),
             max = greatest(r.max, EXCLUDED.max),
             last = CASE WHEN {newer} THEN EXCLUDED.last ELSE r.last END,
             sum = CASE WHEN NOT {histogram} THEN coalesce(r.sum + EXCLUDED.sum, r.sum, EXCLUDED.sum)
                        WHEN {delta} THEN r.sum + EXCLUDED.sum
                        WHEN {newer} THEN EXCLUDED.sum ELSE r.sum END,
             count = CASE WHEN {delta} THEN r.count + EXCLUDED.count WHEN {newer} THEN EXCLUDED.count ELSE r.count END,
             bucket_counts = CASE WHEN {delta} THEN {quoted_schema}.otelstore_add_counts(r.bucket_counts, 0, EXCLUDED.bucket_counts, 0)
                                  WHEN {newer} THEN EXCLUDED.bucket_counts ELSE r.bucket_counts END,
             zero_count = CASE WHEN {delta} THEN r.zero_count + EXCLUDED.zero_count WHEN {newer} THEN EXCLUDED.zero_count ELSE r.zero_count END,
             positive_offset = CASE WHEN {delta} THEN {quoted_schema}.otelstore_merged_offset(r.positive_bucket_counts, r.positive_offset, EXCLUDED.positive_bucket_counts, EXCLUDED.positive_offset)
                                    WHEN {newer} THEN EXCLUDED.positive_offset ELSE r.positive_offset END,
             positive_bucket_counts = CASE WHEN {delta} THEN {quoted_schema}.otelstore_add_counts(r.positive_bucket_counts, r.positive_offset, EXCLUDED.positive_bucket_counts, EXCLUDED.positive_offset)
                                           WHEN {newer} THEN EXCLUDED.positive_bucket_counts ELSE r.positive_bucket_counts END,
             negative_offset = CASE WHEN {delta} THEN {quoted_schema}.otelstore_merged_offset(r.negative_bucket_counts, r.negative_offset, EXCLUDED.negative_bucket_counts, EXCLUDED.negative_offset)
                                    WHEN {newer} THEN EXCLUDED.negative_offset ELSE r.negative_offset END,
             negative_bucket_counts = CASE WHEN {delta} THEN {quoted_schema}.otelstore_add_counts(r.negative_bucket_counts, r.negative_offset, EXCLUDED.negative_bucket_counts, EXCLUDED.negative_offset)
                                           WHEN {newer} THEN EXCLUDED.negative_bucket_counts ELSE r.negative_bucket_counts END"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_buckets_follow_the_documented_bounds() {
        assert_eq!(duration_bucket(0), 0);
        assert_eq!(duration_bucket(1_000), 0);
        // 2^10.25 ns (1217.7) is where bucket 1 starts; 2^11 = 2048 ns is bucket 4's start.
        assert_eq!(duration_bucket(1_217), 0);
        assert_eq!(duration_bucket(1_218), 1);
        assert_eq!(duration_bucket(2_048), 4);
        assert_eq!(duration_bucket(i64::MAX), DURATION_BUCKETS - 1);
    }

    #[test]
    fn offset_counts_add_up_like_the_sql_function() {
        assert_eq!(add_counts(&[1, 2], 0, &[5], 1), (0, vec![1, 7]));
        assert_eq!(add_counts(&[1, 2], -3, &[], 0), (-3, vec![1, 2]));
        assert_eq!(add_counts(&[], 5, &[1], -2), (-2, vec![1]));
        assert_eq!(add_counts(&[1], 3, &[1], 0), (0, vec![1, 0, 0, 1]));
        assert_eq!(add_counts(&[], 0, &[], 0), (0, vec![]));
    }

    fn series(temporality: i16, metric_type: MetricType) -> Series<'static> {
        Series {
            metric_name: "m",
            metric_type,
            temporality,
            service_name: "svc",
            resource_json: b"{}",
            scope_name: "",
            scope_version: "",
            attributes_json: b"{\"k\":1}",
        }
    }

    #[test]
    fn numbers_keep_count_sum_min_max_and_the_latest_value() {
        let mut rollups = Rollups::default();
        let s = series(0, MetricType::Gauge);
        rollups.number_point(&s, 2_000_000_000, 5.0);
        rollups.number_point(&s, 1_000_000_000, 7.0);
        rollups.number_point(&s, 3_000_000_000, -1.0);
        let (_, rollup) = rollups.metrics_5m.iter().next().expect("one row");
        let v = &rollup.values;
        assert_eq!(
            (v.points, v.sum, v.min, v.max, v.last),
            (3, Some(11.0), Some(-1.0), Some(7.0), Some(-1.0))
        );
        assert_eq!(rollups.metrics_1h.len(), 1);
    }

    #[test]
    fn delta_histograms_add_and_cumulative_ones_keep_the_newest() {
        let point = |count, buckets: &'static [u64]| HistogramPoint {
            count,
            sum: Some(count as f64),
            bucket_counts: buckets,
            explicit_bounds: &[1.0],
            ..Default::default()
        };
        let mut delta = Rollups::default();
        delta.histogram_point(&series(1, MetricType::Histogram), 10, &point(2, &[1, 1]));
        delta.histogram_point(&series(1, MetricType::Histogram), 20, &point(3, &[0, 3]));
        let v = &delta.metrics_5m.values().next().expect("row").values;
        assert_eq!(
            (v.count, v.sum, v.bucket_counts.clone()),
            (Some(5), Some(5.0), vec![1, 4])
        );

        let mut cumulative = Rollups::default();
        cumulative.histogram_point(&series(2, MetricType::Histogram), 20, &point(5, &[1, 4]));
        cumulative.histogram_point(&series(2, MetricType::Histogram), 10, &point(2, &[1, 1]));
        let v = &cumulative.metrics_5m.values().next().expect("row").values;
        assert_eq!(
            (v.points, v.count, v.bucket_counts.clone()),
            (2, Some(5), vec![1, 4])
        );
    }

    #[test]
    fn requests_merge_into_one_batch() {
        let mut a = Rollups::default();
        a.span("svc", "GET /", 2, 0, 1_000_000, false);
        a.log("svc", 0, 17);
        a.log("svc", 0, 9);
        let mut b = Rollups::default();
        b.span("svc", "GET /", 2, 10, 3_000_000, true);
        b.log("svc", 10, 21);
        b.dependency("front", "svc", 10, false);
        a.merge(&b);
        let stats = a.span_stats.values().next().expect("stats");
        assert_eq!(
            (
                stats.spans,
                stats.errors,
                stats.duration_min_ns,
                stats.duration_max_ns
            ),
            (2, 1, 1_000_000, 3_000_000)
        );
        assert_eq!(stats.buckets.iter().sum::<i64>(), 2);
        assert_eq!(a.error_logs.values().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(a.dependencies.len(), 1);
    }

    #[test]
    fn rows_are_json_that_postgres_can_read() {
        let mut rollups = Rollups::default();
        rollups.number_point(&series(2, MetricType::Sum), 0, f64::NAN);
        let (key, rollup) = rollups.metrics_1h.iter().next().expect("row");
        let rows = json_rows(std::iter::once(()), |out, ()| {
            write_metric_row(out, key.0, key.1, rollup)
        });
        let parsed: serde_json::Value = serde_json::from_str(&rows).expect("valid JSON");
        assert_eq!(parsed[0]["sum"], "NaN");
        assert_eq!(parsed[0]["attributes"]["k"], 1);
    }
}
