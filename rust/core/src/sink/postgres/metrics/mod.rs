//! The metric tables: one COPY row per OTLP data point, in the table of its point type. This module
//! walks the request down to each metric; `points` reads each data point and writes its row.

mod points;
#[cfg(test)]
mod tests;

use super::copy::CopyRows;
use super::rollup::Rollups;
use crate::json;
use crate::sink::datapoints::{read_metric, Kind};
use crate::sink::envelope::{self, Group};
use crate::wire::WireError;
use points::Points;

/// The columns every point table starts with, followed by those of its point type: the order of
/// schema/postgres/0005_metrics.sql, as named in the COPY statements.
macro_rules! point_columns {
    ($($column:literal),*) => {
        &[
            "metric_name",
            "metric_description",
            "metric_unit",
            "metric_metadata",
            "service_name",
            "resource_attributes",
            "resource_schema_url",
            "scope_name",
            "scope_version",
            "scope_attributes",
            "scope_schema_url",
            "attributes",
            "start_time_unix_nano",
            "time",
            "time_unix_nano",
            "flags",
            "exemplars",
            $($column),*
        ]
    };
}

pub const GAUGE_COLUMNS: &[&str] = point_columns!("value_double", "value_int");
pub const SUM_COLUMNS: &[&str] = point_columns!(
    "value_double",
    "value_int",
    "aggregation_temporality",
    "is_monotonic"
);
pub const HISTOGRAM_COLUMNS: &[&str] = point_columns!(
    "count",
    "sum",
    "min",
    "max",
    "bucket_counts",
    "explicit_bounds",
    "aggregation_temporality"
);
pub const EXPONENTIAL_HISTOGRAM_COLUMNS: &[&str] = point_columns!(
    "count",
    "sum",
    "min",
    "max",
    "scale",
    "zero_count",
    "zero_threshold",
    "positive_offset",
    "positive_bucket_counts",
    "negative_offset",
    "negative_bucket_counts",
    "aggregation_temporality"
);
pub const SUMMARY_COLUMNS: &[&str] = point_columns!("count", "sum", "quantiles", "quantile_values");

/// The rows of one request, one set per table, and the points that could not become rows.
pub struct EncodedMetrics {
    pub gauge: CopyRows,
    pub sum: CopyRows,
    pub histogram: CopyRows,
    pub exponential_histogram: CopyRows,
    pub summary: CopyRows,
    pub rollups: Rollups,
    pub rejected: u64,
    pub first_rejection: Option<String>,
}

/// Encodes every data point of a serialized `ExportMetricsServiceRequest` as a row of its table,
/// reading the protobuf bytes in place. A request that is not valid protobuf, or holds a string
/// that is not UTF-8, is an error as a whole; a point whose values do not fit its table is left
/// out and counted.
pub fn encode(otlp: &[u8]) -> Result<EncodedMetrics, WireError> {
    let mut encoder = Encoder {
        points: Points::new(),
        metadata_json: Vec::new(),
    };
    envelope::for_each_item(otlp, &envelope::METRICS, |group, metric| {
        encoder.metric(metric, group)
    })?;
    Ok(encoder.points.finish())
}

struct Encoder {
    points: Points,
    // The metadata JSON is built once per metric and copied into each of its points' rows.
    metadata_json: Vec<u8>,
}

/// What the points of one metric share: the leading columns of each of their rows.
struct Metric<'a> {
    name: &'a str,
    description: &'a str,
    unit: &'a str,
    metadata_json: &'a [u8],
    group: &'a Group<'a, 'a>,
}

impl Encoder {
    fn metric(&mut self, message: &[u8], group: &Group<'_, '_>) -> Result<(), WireError> {
        // A metric without data has no points to write.
        let Some(data) = read_metric(message)? else {
            return Ok(());
        };
        self.metadata_json.clear();
        json::write_attributes(&mut self.metadata_json, message, 12, "Metric.metadata")?;
        let metric = Metric {
            name: data.name,
            description: data.description,
            unit: data.unit,
            metadata_json: &self.metadata_json,
            group,
        };
        let points = &mut self.points;
        data.for_each_point(|point| match data.kind {
            Kind::Gauge => points.number(&metric, None, point),
            Kind::Sum(aggregation) => points.number(&metric, Some(aggregation), point),
            Kind::Histogram(aggregation) => {
                points.histogram(&metric, aggregation.temporality, point)
            }
            Kind::ExponentialHistogram(aggregation) => {
                points.exponential_histogram(&metric, aggregation.temporality, point)
            }
            Kind::Summary => points.summary(&metric, point),
        })
    }
}
