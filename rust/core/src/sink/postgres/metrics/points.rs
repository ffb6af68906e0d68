//! Data points to rows: one function per point type reads the point, checks that its values fit
//! the table, and writes its row.

use super::super::copy::{CopyRows, RowStart};
use super::super::rollup::{ExponentialBuckets, HistogramPoint, MetricType, Rollups, Series};
use super::super::spans::{small_int, unix_nanos, MAX_ROW_BYTES};
use super::{
    EncodedMetrics, Metric, EXPONENTIAL_HISTOGRAM_COLUMNS, GAUGE_COLUMNS, HISTOGRAM_COLUMNS,
    SUMMARY_COLUMNS, SUM_COLUMNS,
};
use crate::json;
use crate::sink::datapoints::{
    read_number, Aggregation, ExponentialValues, Header, HistogramValues, Number, Repeated,
    SummaryValues,
};
use crate::wire::WireError;

/// The rows of every table so far, and the points left out.
pub(super) struct Points {
    gauge: CopyRows,
    sum: CopyRows,
    histogram: CopyRows,
    exponential_histogram: CopyRows,
    summary: CopyRows,
    rejections: Rejections,
    scratch: Scratch,
    rollups: Rollups,
}

/// The values of the point at hand, kept from point to point so their memory is reused.
#[derive(Default)]
struct Scratch {
    histogram: HistogramValues,
    exponential: ExponentialValues,
    summary: SummaryValues,
    /// The point's attributes as jsonb text: written into its row and keyed on in the rollups.
    attributes_json: Vec<u8>,
}

#[derive(Default)]
struct Rejections {
    count: u64,
    first: Option<String>,
}

impl Points {
    pub fn new() -> Self {
        // Rows are far larger than the points they come from (each repeats its resource, scope and
        // metric), and how a request divides among the tables is unknown, so buffers grow as needed.
        let table = |columns: &[&str]| CopyRows::new(columns.len() as i16, 0);
        Self {
            gauge: table(GAUGE_COLUMNS),
            sum: table(SUM_COLUMNS),
            histogram: table(HISTOGRAM_COLUMNS),
            exponential_histogram: table(EXPONENTIAL_HISTOGRAM_COLUMNS),
            summary: table(SUMMARY_COLUMNS),
            rejections: Rejections::default(),
            scratch: Scratch::default(),
            rollups: Rollups::default(),
        }
    }

    pub fn finish(self) -> EncodedMetrics {
        EncodedMetrics {
            gauge: self.gauge,
            sum: self.sum,
            histogram: self.histogram,
            exponential_histogram: self.exponential_histogram,
            summary: self.summary,
            rollups: self.rollups,
            rejected: self.rejections.count,
            first_rejection: self.rejections.first,
        }
    }

    /// A NumberDataPoint of a gauge, or of a sum when `sum` is given.
    pub fn number(
        &mut self,
        metric: &Metric<'_>,
        sum: Option<Aggregation>,
        point: &[u8],
    ) -> Result<(), WireError> {
        // With neither value, both value columns are NULL.
        let (header, value) = read_number(point)?;
        let kind = if sum.is_some() { "sum" } else { "gauge" };
        let checked = header.times().and_then(|times| {
            let sum_columns = sum.map(|s| {
                Ok::<_, String>((
                    small_int("aggregation_temporality", s.temporality)?,
                    s.is_monotonic,
                ))
            });
            Ok((times, sum_columns.transpose()?))
        });
        let Some((times, sum_columns)) = self.rejections.keep(metric, kind, checked) else {
            return Ok(());
        };

        let rows = if sum.is_some() {
            &mut self.sum
        } else {
            &mut self.gauge
        };
        let attributes_json = header.attributes_json(&mut self.scratch.attributes_json)?;
        let row = header.write(rows, metric, times, attributes_json)?;
        match value {
            Some(Number::Double(double)) => {
                rows.float8(double);
                rows.null();
            }
            Some(Number::Int(int)) => {
                rows.null();
                rows.int8(int);
            }
            None => {
                rows.null();
                rows.null();
            }
        }
        if let Some((temporality, is_monotonic)) = sum_columns {
            rows.int2(temporality);
            rows.bool(is_monotonic);
        }
        if self.rejections.end_row(rows, row, metric, kind) {
            if let Some(number) = value.map(Number::as_f64) {
                let (metric_type, temporality) = match sum_columns {
                    Some((temporality, _)) => (MetricType::Sum, temporality),
                    None => (MetricType::Gauge, 0),
                };
                self.rollups.number_point(
                    &series(metric, metric_type, temporality, attributes_json),
                    times.1,
                    number,
                );
            }
        }
        Ok(())
    }

    pub fn histogram(
        &mut self,
        metric: &Metric<'_>,
        temporality: i32,
        point: &[u8],
    ) -> Result<(), WireError> {
        let Scratch {
            histogram: values,
            attributes_json,
            ..
        } = &mut self.scratch;
        let header = values.read(point)?;
        let HistogramValues {
            count,
            sum,
            min,
            max,
            ref bucket_counts,
            ref explicit_bounds,
        } = *values;
        let checked = header.times().and_then(|times| {
            counts_fit("bucket_counts", bucket_counts)?;
            Ok((
                times,
                bigint("count", count)?,
                small_int("aggregation_temporality", temporality)?,
            ))
        });
        let Some((times, count, temporality)) = self.rejections.keep(metric, "histogram", checked)
        else {
            return Ok(());
        };

        let rows = &mut self.histogram;
        let attributes_json = header.attributes_json(attributes_json)?;
        let row = header.write(rows, metric, times, attributes_json)?;
        rows.int8(count);
        float8_or_null(rows, sum);
        float8_or_null(rows, min);
        float8_or_null(rows, max);
        write_counts(rows, bucket_counts);
        rows.float8_array(explicit_bounds.iter().copied());
        rows.int2(temporality);
        if self.rejections.end_row(rows, row, metric, "histogram") {
            let point = HistogramPoint {
                count,
                sum,
                min,
                max,
                bucket_counts,
                explicit_bounds,
                exponential: None,
            };
            self.rollups.histogram_point(
                &series(metric, MetricType::Histogram, temporality, attributes_json),
                times.1,
                &point,
            );
        }
        Ok(())
    }

    pub fn exponential_histogram(
        &mut self,
        metric: &Metric<'_>,
        temporality: i32,
        point: &[u8],
    ) -> Result<(), WireError> {
        let Scratch {
            exponential: values,
            attributes_json,
            ..
        } = &mut self.scratch;
        let header = values.read(point)?;
        let ExponentialValues {
            count,
            sum,
            min,
            max,
            scale,
            zero_count,
            zero_threshold,
            positive_offset,
            ref positive_bucket_counts,
            negative_offset,
            ref negative_bucket_counts,
        } = *values;
        let checked = header.times().and_then(|times| {
            counts_fit("positive.bucket_counts", positive_bucket_counts)?;
            counts_fit("negative.bucket_counts", negative_bucket_counts)?;
            let counts = (bigint("count", count)?, bigint("zero_count", zero_count)?);
            Ok((
                times,
                counts,
                small_int("aggregation_temporality", temporality)?,
            ))
        });
        let Some((times, (count, zero_count), temporality)) =
            self.rejections
                .keep(metric, "exponential histogram", checked)
        else {
            return Ok(());
        };

        let rows = &mut self.exponential_histogram;
        let attributes_json = header.attributes_json(attributes_json)?;
        let row = header.write(rows, metric, times, attributes_json)?;
        rows.int8(count);
        float8_or_null(rows, sum);
        float8_or_null(rows, min);
        float8_or_null(rows, max);
        rows.int4(scale);
        rows.int8(zero_count);
        rows.float8(zero_threshold);
        rows.int4(positive_offset);
        write_counts(rows, positive_bucket_counts);
        rows.int4(negative_offset);
        write_counts(rows, negative_bucket_counts);
        rows.int2(temporality);
        if self
            .rejections
            .end_row(rows, row, metric, "exponential histogram")
        {
            let buckets = ExponentialBuckets {
                scale,
                zero_count,
                positive_offset,
                positive: positive_bucket_counts,
                negative_offset,
                negative: negative_bucket_counts,
            };
            let point = HistogramPoint {
                count,
                sum,
                min,
                max,
                bucket_counts: &[],
                explicit_bounds: &[],
                exponential: Some(buckets),
            };
            self.rollups.histogram_point(
                &series(
                    metric,
                    MetricType::ExponentialHistogram,
                    temporality,
                    attributes_json,
                ),
                times.1,
                &point,
            );
        }
        Ok(())
    }

    pub fn summary(&mut self, metric: &Metric<'_>, point: &[u8]) -> Result<(), WireError> {
        let Scratch {
            summary: values,
            attributes_json,
            ..
        } = &mut self.scratch;
        let header = values.read(point)?;
        let SummaryValues {
            count,
            sum,
            ref quantiles,
            ref quantile_values,
        } = *values;
        let checked = header
            .times()
            .and_then(|times| Ok((times, bigint("count", count)?)));
        let Some((times, count)) = self.rejections.keep(metric, "summary", checked) else {
            return Ok(());
        };

        let rows = &mut self.summary;
        let attributes_json = header.attributes_json(attributes_json)?;
        let row = header.write(rows, metric, times, attributes_json)?;
        rows.int8(count);
        rows.float8(sum);
        rows.float8_array(quantiles.iter().copied());
        rows.float8_array(quantile_values.iter().copied());
        // Summaries have no rollup: their quantiles cannot be merged.
        self.rejections.end_row(rows, row, metric, "summary");
        Ok(())
    }
}

impl Header<'_> {
    /// Start and time nanoseconds as their bigint columns take them, or why they don't fit.
    fn times(&self) -> Result<(i64, i64), String> {
        Ok((
            unix_nanos("start_time_unix_nano", self.start_time_unix_nano)?,
            unix_nanos("time_unix_nano", self.time_unix_nano)?,
        ))
    }

    /// The point's attributes as jsonb text, written into `buffer`.
    fn attributes_json<'b>(&self, buffer: &'b mut Vec<u8>) -> Result<&'b [u8], WireError> {
        let Repeated { bytes, field, path } = self.attributes;
        buffer.clear();
        json::write_attributes(buffer, bytes, field, path)?;
        Ok(buffer)
    }

    /// Starts the point's row with the columns every point table begins with.
    fn write(
        &self,
        rows: &mut CopyRows,
        metric: &Metric<'_>,
        (start, time): (i64, i64),
        attributes_json: &[u8],
    ) -> Result<RowStart, WireError> {
        let row = rows.start_row();
        rows.text(metric.name);
        rows.text(metric.description);
        rows.text(metric.unit);
        rows.jsonb_text(metric.metadata_json);
        metric.group.write_columns(rows);
        rows.jsonb_text(attributes_json);
        rows.int8(start);
        rows.timestamptz_from_unix_nanos(time);
        rows.int8(time);
        // uint32 flags keep their bit pattern in a signed integer column.
        rows.int4(self.flags as i32);
        let Repeated { bytes, field, path } = self.exemplars;
        rows.jsonb(|out| json::write_exemplars(out, bytes, field, path))?;
        Ok(row)
    }
}

impl Rejections {
    /// The checked values of a point, or `None` when one does not fit and the point is rejected.
    fn keep<T>(
        &mut self,
        metric: &Metric<'_>,
        kind: &str,
        checked: Result<T, String>,
    ) -> Option<T> {
        checked
            .map_err(|reason| self.add(metric, kind, reason))
            .ok()
    }

    /// Ends a row; one over PostgreSQL's field limit is taken back and its point rejected.
    /// Returns whether the row was kept.
    fn end_row(
        &mut self,
        rows: &mut CopyRows,
        row: RowStart,
        metric: &Metric<'_>,
        kind: &str,
    ) -> bool {
        let len = rows.row_len(row);
        if len > MAX_ROW_BYTES {
            rows.discard_row(row);
            self.add(
                metric,
                kind,
                format!("its row of {len} bytes exceeds PostgreSQL's 1 GB field limit"),
            );
            return false;
        }
        true
    }

    fn add(&mut self, metric: &Metric<'_>, kind: &str, reason: String) {
        self.count += 1;
        self.first
            .get_or_insert_with(|| format!("{kind} point of metric {:?}: {reason}", metric.name));
    }
}

/// The series a point of `metric` belongs to, for the rollups.
fn series<'a>(
    metric: &'a Metric<'a>,
    metric_type: MetricType,
    temporality: i16,
    attributes_json: &'a [u8],
) -> Series<'a> {
    Series {
        metric_name: metric.name,
        metric_type,
        temporality,
        service_name: metric.group.service_name,
        resource_json: metric.group.resource_json,
        scope_name: metric.group.scope_name,
        scope_version: metric.group.scope_version,
        attributes_json,
    }
}

/// OTLP counts are uint64; one above a bigint's range is refused rather than wrapped.
fn bigint(field: &str, value: u64) -> Result<i64, String> {
    i64::try_from(value)
        .map_err(|_| format!("{field} {value} exceeds {}, the largest bigint", i64::MAX))
}

fn counts_fit(field: &str, counts: &[u64]) -> Result<(), String> {
    match counts
        .iter()
        .position(|&count| i64::try_from(count).is_err())
    {
        Some(at) => Err(format!(
            "{field}[{at}] {} exceeds {}, the largest bigint",
            counts[at],
            i64::MAX
        )),
        None => Ok(()),
    }
}

/// Counts that [`counts_fit`] accepted, as a bigint[].
fn write_counts(rows: &mut CopyRows, counts: &[u64]) {
    rows.int8_array(counts.iter().map(|&count| count as i64));
}

fn float8_or_null(rows: &mut CopyRows, value: Option<f64>) {
    match value {
        Some(value) => rows.float8(value),
        None => rows.null(),
    }
}
