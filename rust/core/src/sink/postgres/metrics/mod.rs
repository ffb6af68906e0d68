//! The metric tables: one COPY row per OTLP data point, in the table of its point type. This module
//! walks the request down to each metric; `points` reads each data point and writes its row.

mod points;
#[cfg(test)]
mod tests;

use super::copy::CopyRows;
use super::rollup::Rollups;
use crate::json;
use crate::sink::envelope::{self, Group};
use crate::wire::{Fields, WireError};
use points::{Aggregation, Points};

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

// Metric.data, a oneof of these fields.
const GAUGE: u32 = 5;
const SUM: u32 = 7;
const HISTOGRAM: u32 = 9;
const EXPONENTIAL_HISTOGRAM: u32 = 10;
const SUMMARY: u32 = 11;

impl Encoder {
    fn metric(&mut self, message: &[u8], group: &Group<'_, '_>) -> Result<(), WireError> {
        let (mut name, mut description, mut unit) = ("", "", "");
        // prost merges repeated occurrences of a oneof's message field, and a field of another
        // variant replaces them: the data is every occurrence of the last variant on the wire from
        // where its run began. `data` is that variant and the offset of that run.
        let mut data: Option<(u32, usize)> = None;
        let mut reader = Fields::new(message, "Metric");
        loop {
            let start = reader.offset();
            let Some(entry) = reader.next() else { break };
            match entry? {
                (1, v) => name = v.string("Metric.name")?,
                (2, v) => description = v.string("Metric.description")?,
                (3, v) => unit = v.string("Metric.unit")?,
                (variant @ (GAUGE | SUM | HISTOGRAM | EXPONENTIAL_HISTOGRAM | SUMMARY), v) => {
                    v.bytes("Metric.data")?;
                    if data.is_none_or(|(current, _)| current != variant) {
                        data = Some((variant, start));
                    }
                }
                _ => {}
            }
        }
        // A metric without data has no points to write.
        let Some((variant, from)) = data else {
            return Ok(());
        };
        self.metadata_json.clear();
        json::write_attributes(&mut self.metadata_json, message, 12, "Metric.metadata")?;
        let metric = Metric {
            name,
            description,
            unit,
            metadata_json: &self.metadata_json,
            group,
        };
        let data = &message[from..];
        match variant {
            GAUGE => {
                for gauge in messages(data, "Metric", GAUGE, "Metric.gauge") {
                    for point in messages(gauge?, "Gauge", 1, "Gauge.data_points") {
                        self.points.number(&metric, None, point?)?;
                    }
                }
            }
            SUM => {
                let aggregation = aggregation(
                    data,
                    SUM,
                    "Sum",
                    "Sum.aggregation_temporality",
                    Some("Sum.is_monotonic"),
                )?;
                for sum in messages(data, "Metric", SUM, "Metric.sum") {
                    for point in messages(sum?, "Sum", 1, "Sum.data_points") {
                        self.points.number(&metric, Some(aggregation), point?)?;
                    }
                }
            }
            HISTOGRAM => {
                let aggregation = aggregation(
                    data,
                    HISTOGRAM,
                    "Histogram",
                    "Histogram.aggregation_temporality",
                    None,
                )?;
                for histogram in messages(data, "Metric", HISTOGRAM, "Metric.histogram") {
                    for point in messages(histogram?, "Histogram", 1, "Histogram.data_points") {
                        self.points
                            .histogram(&metric, aggregation.temporality, point?)?;
                    }
                }
            }
            EXPONENTIAL_HISTOGRAM => {
                let aggregation = aggregation(
                    data,
                    EXPONENTIAL_HISTOGRAM,
                    "ExponentialHistogram",
                    "ExponentialHistogram.aggregation_temporality",
                    None,
                )?;
                for histogram in messages(
                    data,
                    "Metric",
                    EXPONENTIAL_HISTOGRAM,
                    "Metric.exponential_histogram",
                ) {
                    for point in messages(
                        histogram?,
                        "ExponentialHistogram",
                        1,
                        "ExponentialHistogram.data_points",
                    ) {
                        self.points.exponential_histogram(
                            &metric,
                            aggregation.temporality,
                            point?,
                        )?;
                    }
                }
            }
            // SUMMARY, the one variant left.
            _ => {
                for summary in messages(data, "Metric", SUMMARY, "Metric.summary") {
                    for point in messages(summary?, "Summary", 1, "Summary.data_points") {
                        self.points.summary(&metric, point?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The bytes of every occurrence of message field `number` in `message`, named `message_path`.
fn messages<'a>(
    message: &'a [u8],
    message_path: &'static str,
    number: u32,
    path: &'static str,
) -> impl Iterator<Item = Result<&'a [u8], WireError>> {
    Fields::new(message, message_path).filter_map(move |entry| match entry {
        Ok((n, value)) if n == number => Some(value.bytes(path)),
        Ok(_) => None,
        Err(error) => Some(Err(error)),
    })
}

/// The temporality, and for a Sum its monotonicity, of data field `variant` in `data`. The last
/// value on the wire wins across its occurrences, as it does when prost merges them.
fn aggregation(
    data: &[u8],
    variant: u32,
    message_path: &'static str,
    temporality_path: &'static str,
    monotonic_path: Option<&'static str>,
) -> Result<Aggregation, WireError> {
    let mut aggregation = Aggregation::default();
    for message in messages(data, "Metric", variant, "Metric.data") {
        for entry in Fields::new(message?, message_path) {
            match (entry?, monotonic_path) {
                ((2, v), _) => aggregation.temporality = v.int32(temporality_path)?,
                ((3, v), Some(path)) => aggregation.is_monotonic = v.varint(path)? != 0,
                _ => {}
            }
        }
    }
    Ok(aggregation)
}
