//! `otel_metrics_gauge`, `_sum`, `_histogram`, `_exponential_histogram` and `_summary`: one Native
//! block per table the request has points for, one row per data point, written column by column
//! straight from the protobuf bytes (columns.rs holds the columns).
//!
//! Values follow the contrib clickhouseexporter (internal/metrics), so that dashboards and queries
//! written for its tables read these the same way:
//!
//! * the maps (`ResourceAttributes`, `ScopeAttributes`, `Attributes`,
//!   `Exemplars.FilteredAttributes`) hold every key/value pair, duplicates included, each value as
//!   `AsString()` (see gostring.rs), with the keys sorted by their bytes, as the ClickHouse Go
//!   client's ordered map sorts them. The order matters beyond looks: the tables sort by
//!   `cityHash64(Attributes)`, and the rollups (0004_rollups.sql) group by a hash of the resource
//!   and point attributes, and both hash the pairs in order, so the same attributes sent in
//!   another order must make the same map;
//! * `ServiceName` is `AsString()` of the first `service.name` resource attribute, whatever its
//!   type (pdata's `Map.Get` returns the first);
//! * `ResourceSchemaUrl`, `ScopeName`, `ScopeVersion`, `ScopeDroppedAttrCount`, `ScopeSchemaUrl`,
//!   `MetricName`, `MetricDescription`, `MetricUnit` and `Flags` are as sent; metric metadata and
//!   an exponential histogram's `zero_threshold` have no column;
//! * `StartTimeUnix`, `TimeUnix` and `Exemplars.TimeUnix` are the nanoseconds as sent;
//! * `Value` and `Exemplars.Value` are Float64: an `as_int` converted, 0 when there is neither value;
//! * `AggregationTemporality` is the enum's number as sent, `IsMonotonic` a Bool;
//! * a histogram's absent `sum`, `min` or `max` is 0 (the columns are not Nullable);
//! * `ValueAtQuantiles.Quantile` and `.Value` are a summary's pairs in order;
//! * `Exemplars.TraceId` and `Exemplars.SpanId` are lower-case hex of the id, and zeros (32 or 16
//!   `0`s) when the exemplar has none: pdata's ids are fixed arrays, so contrib never writes `""`
//!   here, unlike the span ids of `otel_traces`.
//!
//! Where we differ: a point whose start, time or exemplar time is past 2262-04-11 (beyond
//! DateTime64(9)'s Int64) is rejected and counted, as in PostgreSQL (contrib wraps it to a date
//! before 1970); a metric without data has no rows (contrib refuses the whole request); exemplar ids
//! of the wrong length are written as hex of the bytes sent (contrib's decoder refuses the whole
//! request); pairs of one key keep their order on the wire (contrib's sort is not stable). Counts
//! (`Count`, `ZeroCount`, the bucket counts) are UInt64 like OTLP's, so every count fits and none is
//! rejected (the PostgreSQL tables' bigint columns refuse counts above 2^63 - 1).

mod columns;
#[cfg(test)]
mod tests;

use super::columns::{too_late, SortedPairs};
use super::native::Block;
use super::{Blocks, Table};
use crate::sink::datapoints::{
    read_metric, read_number, ExponentialValues, Header, HistogramValues, Kind, SummaryValues,
};
use crate::sink::envelope::{self, Group};
use crate::sink::Encoded;
use crate::wire::{Fields, WireError};
use columns::{
    Columns, ExponentialColumns, GroupCache, HistogramColumns, NumberColumns, Point, PointColumns,
    SummaryColumns, TableColumns,
};

/// The columns every point table starts with, then those of its point type, and the exemplars'
/// after `exemplars;` (and the columns both histogram types start with after `histogram;`): the
/// columns of the INSERT, in block order, with the types their data is sent as. The server
/// converts `String` to the tables' `LowCardinality(String)`, the map keys likewise.
macro_rules! point_columns {
    (histogram; $($column:expr),* $(,)?) => {
        point_columns!(
            exemplars;
            ("Count", "UInt64"),
            ("Sum", "Float64"),
            ("Min", "Float64"),
            ("Max", "Float64"),
            ("AggregationTemporality", "Int32"),
            $($column,)*
        )
    };
    (exemplars; $($column:expr),* $(,)?) => {
        point_columns!(
            $($column,)*
            ("Exemplars.FilteredAttributes", "Array(Map(String, String))"),
            ("Exemplars.TimeUnix", "Array(DateTime64(9))"),
            ("Exemplars.Value", "Array(Float64)"),
            ("Exemplars.SpanId", "Array(String)"),
            ("Exemplars.TraceId", "Array(String)"),
        )
    };
    ($($column:expr),* $(,)?) => {
        &[
            ("ResourceAttributes", "Map(String, String)"),
            ("ResourceSchemaUrl", "String"),
            ("ScopeName", "String"),
            ("ScopeVersion", "String"),
            ("ScopeAttributes", "Map(String, String)"),
            ("ScopeDroppedAttrCount", "UInt32"),
            ("ScopeSchemaUrl", "String"),
            ("ServiceName", "String"),
            ("MetricName", "String"),
            ("MetricDescription", "String"),
            ("MetricUnit", "String"),
            ("Attributes", "Map(String, String)"),
            ("StartTimeUnix", "DateTime64(9)"),
            ("TimeUnix", "DateTime64(9)"),
            ("Flags", "UInt32"),
            $($column),*
        ]
    };
}

pub const GAUGE_COLUMNS: &[(&str, &str)] = point_columns!(exemplars; ("Value", "Float64"));
pub const SUM_COLUMNS: &[(&str, &str)] = point_columns!(
    exemplars;
    ("Value", "Float64"),
    ("AggregationTemporality", "Int32"),
    ("IsMonotonic", "Bool"),
);
pub const HISTOGRAM_COLUMNS: &[(&str, &str)] = point_columns!(
    histogram;
    ("BucketCounts", "Array(UInt64)"),
    ("ExplicitBounds", "Array(Float64)"),
);
pub const EXPONENTIAL_HISTOGRAM_COLUMNS: &[(&str, &str)] = point_columns!(
    histogram;
    ("Scale", "Int32"),
    ("ZeroCount", "UInt64"),
    ("PositiveOffset", "Int32"),
    ("PositiveBucketCounts", "Array(UInt64)"),
    ("NegativeOffset", "Int32"),
    ("NegativeBucketCounts", "Array(UInt64)"),
);
pub const SUMMARY_COLUMNS: &[(&str, &str)] = point_columns!(
    ("Count", "UInt64"),
    ("Sum", "Float64"),
    ("ValueAtQuantiles.Quantile", "Array(Float64)"),
    ("ValueAtQuantiles.Value", "Array(Float64)"),
);

/// Encodes every data point of a serialized `ExportMetricsServiceRequest` as a row of its point
/// type's table. A request that is not valid protobuf, or holds a string that is not UTF-8, is an
/// error as a whole; a point whose times do not fit DateTime64(9) is left out and counted.
pub fn encode(otlp: &[u8]) -> Result<Encoded<Blocks>, WireError> {
    let mut encoder = Encoder::default();
    envelope::for_each_item_raw(otlp, &envelope::METRICS, |group, metric| {
        encoder.metric(group, metric)
    })?;
    Ok(encoder.points.finish())
}

#[derive(Default)]
struct Encoder<'a> {
    group: GroupCache,
    points: Points<'a>,
}

/// The columns of every table so far, the buffers reused from point to point, and the points left
/// out.
#[derive(Default)]
struct Points<'a> {
    pairs: SortedPairs<'a>,
    histogram_values: HistogramValues,
    exponential_values: ExponentialValues,
    summary_values: SummaryValues,
    gauge: Columns<NumberColumns>,
    sum: Columns<NumberColumns>,
    histogram: Columns<HistogramColumns>,
    exponential_histogram: Columns<ExponentialColumns>,
    summary: Columns<SummaryColumns>,
    rejected: u64,
    first_rejection: Option<String>,
}

/// Whether a point fits its table, or why not.
type Checked = Result<(), String>;

impl<'a> Encoder<'a> {
    fn metric(&mut self, group: &Group<'a, '_>, message: &'a [u8]) -> Result<(), WireError> {
        // A metric without data has no points to write.
        let Some(metric) = read_metric(message)? else {
            return Ok(());
        };
        self.group.update(group, &mut self.points.pairs)?;
        let at = Point {
            group,
            cache: &self.group,
            metric: &metric,
        };
        let points = &mut self.points;
        let mut index = 0u64;
        metric.for_each_point(|point| {
            let Points { pairs, .. } = points;
            let checked = match metric.kind {
                Kind::Gauge | Kind::Sum(_) => {
                    let (header, value) = read_number(point)?;
                    let table = if let Kind::Sum(_) = metric.kind {
                        &mut points.sum
                    } else {
                        &mut points.gauge
                    };
                    write(table, &at, &header, &value, pairs)?
                }
                Kind::Histogram(_) => {
                    let header = points.histogram_values.read(point)?;
                    let values = &points.histogram_values;
                    write(&mut points.histogram, &at, &header, values, pairs)?
                }
                Kind::ExponentialHistogram(_) => {
                    let header = points.exponential_values.read(point)?;
                    let values = &points.exponential_values;
                    write(
                        &mut points.exponential_histogram,
                        &at,
                        &header,
                        values,
                        pairs,
                    )?
                }
                Kind::Summary => {
                    let header = points.summary_values.read(point)?;
                    let values = &points.summary_values;
                    write(&mut points.summary, &at, &header, values, pairs)?
                }
            };
            if let Err(reason) = checked {
                points.rejected += 1;
                points.first_rejection.get_or_insert_with(|| {
                    format!(
                        "{} point {index} of metric {:?}: {reason}",
                        kind_name(metric.kind),
                        metric.name
                    )
                });
            }
            index += 1;
            Ok(())
        })
    }
}

/// Writes a point into its table's columns, if its times fit.
fn write<'a, T: PointColumns>(
    table: &mut Columns<T>,
    at: &Point<'_, 'a>,
    header: &Header<'a>,
    values: &T::Values,
    pairs: &mut SortedPairs<'a>,
) -> Result<Checked, WireError> {
    if let Err(reason) = check(header)? {
        return Ok(Err(reason));
    }
    table.row(at, header, values, pairs)?;
    Ok(Ok(()))
}

impl Points<'_> {
    fn finish(self) -> Encoded<Blocks> {
        let mut blocks = Blocks::default();
        let tables: [(Table, &dyn TableColumns); 5] = [
            (Table::MetricsGauge, &self.gauge),
            (Table::MetricsSum, &self.sum),
            (Table::MetricsHistogram, &self.histogram),
            (
                Table::MetricsExponentialHistogram,
                &self.exponential_histogram,
            ),
            (Table::MetricsSummary, &self.summary),
        ];
        for (table, columns) in tables {
            let rows = columns.rows();
            if rows > 0 {
                let block = Block::of(table.columns(), &columns.data(table), rows);
                blocks.add(table, block, rows);
            }
        }
        Encoded {
            rows: blocks,
            rejected: self.rejected,
            first_rejection: self.first_rejection,
        }
    }
}

/// Whether the point's times fit DateTime64(9), before any of its columns is written.
fn check(header: &Header<'_>) -> Result<Checked, WireError> {
    for (name, value) in [
        ("start_time_unix_nano", header.start_time_unix_nano),
        ("time_unix_nano", header.time_unix_nano),
    ] {
        if i64::try_from(value).is_err() {
            return Ok(Err(too_late(name, value)));
        }
    }
    for exemplar in header.exemplars.each() {
        for entry in Fields::new(exemplar?, "Exemplar") {
            if let (2, v) = entry? {
                let time = v.fixed64("Exemplar.time_unix_nano")?;
                if i64::try_from(time).is_err() {
                    return Ok(Err(too_late("an exemplar's time_unix_nano", time)));
                }
            }
        }
    }
    Ok(Ok(()))
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Gauge => "gauge",
        Kind::Sum(_) => "sum",
        Kind::Histogram(_) => "histogram",
        Kind::ExponentialHistogram(_) => "exponential histogram",
        Kind::Summary => "summary",
    }
}
