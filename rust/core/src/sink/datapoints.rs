//! An OTLP `Metric` down to its data points, read in place for both sinks: which point type it
//! holds and how that aggregates ([`read_metric`]), each of its points
//! ([`MetricData::for_each_point`]), and the fields every point type has ([`Header`]).

use std::ops::Range;

use crate::wire::{Fields, Value, WireError};

/// How a Sum, Histogram or ExponentialHistogram aggregates its points; the defaults are OTLP's.
#[derive(Debug, Clone, Copy, Default)]
pub struct Aggregation {
    pub temporality: i32,
    pub is_monotonic: bool,
}

/// A metric's point type, with its aggregation where it has one.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Gauge,
    Sum(Aggregation),
    Histogram(Aggregation),
    ExponentialHistogram(Aggregation),
    Summary,
}

/// A metric that has data: its descriptive fields, its point type, and where its points are.
pub struct MetricData<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub unit: &'a str,
    pub kind: Kind,
    /// The data variant's field number, and the metric's bytes from where its last run began.
    variant: u32,
    data: &'a [u8],
}

// Metric.data, a oneof of these fields.
const GAUGE: u32 = 5;
const SUM: u32 = 7;
const HISTOGRAM: u32 = 9;
const EXPONENTIAL_HISTOGRAM: u32 = 10;
const SUMMARY: u32 = 11;

/// Reads a serialized `Metric`; `None` when it has no data, and so no points.
pub fn read_metric(message: &[u8]) -> Result<Option<MetricData<'_>>, WireError> {
    let (mut name, mut description, mut unit) = ("", "", "");
    // prost merges repeated occurrences of a oneof's message field, and a field of another variant
    // replaces them: the data is every occurrence of the last variant on the wire from where its
    // run began. `data` is that variant and the offset of that run.
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
    let Some((variant, from)) = data else {
        return Ok(None);
    };
    let data = &message[from..];
    let kind = match variant {
        GAUGE => Kind::Gauge,
        SUM => Kind::Sum(aggregation(
            data,
            SUM,
            "Sum",
            "Sum.aggregation_temporality",
            Some("Sum.is_monotonic"),
        )?),
        HISTOGRAM => Kind::Histogram(aggregation(
            data,
            HISTOGRAM,
            "Histogram",
            "Histogram.aggregation_temporality",
            None,
        )?),
        EXPONENTIAL_HISTOGRAM => Kind::ExponentialHistogram(aggregation(
            data,
            EXPONENTIAL_HISTOGRAM,
            "ExponentialHistogram",
            "ExponentialHistogram.aggregation_temporality",
            None,
        )?),
        _ => Kind::Summary,
    };
    Ok(Some(MetricData {
        name,
        description,
        unit,
        kind,
        variant,
        data,
    }))
}

impl<'a> MetricData<'a> {
    /// Calls `point` with the bytes of each data point, in order.
    pub fn for_each_point(
        &self,
        mut point: impl FnMut(&'a [u8]) -> Result<(), WireError>,
    ) -> Result<(), WireError> {
        let (path, message, points) = match self.variant {
            GAUGE => ("Metric.gauge", "Gauge", "Gauge.data_points"),
            SUM => ("Metric.sum", "Sum", "Sum.data_points"),
            HISTOGRAM => ("Metric.histogram", "Histogram", "Histogram.data_points"),
            EXPONENTIAL_HISTOGRAM => (
                "Metric.exponential_histogram",
                "ExponentialHistogram",
                "ExponentialHistogram.data_points",
            ),
            _ => ("Metric.summary", "Summary", "Summary.data_points"),
        };
        for data in messages(self.data, "Metric", self.variant, path) {
            for each in messages(data?, message, 1, points) {
                point(each?)?;
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

/// Where a point type keeps the fields that every point has.
struct Layout {
    message: &'static str,
    start_time_unix_nano: &'static str,
    time_unix_nano: &'static str,
    flags: (u32, &'static str),
    attributes: (u32, &'static str),
    /// SummaryDataPoint has none.
    exemplars: Option<(u32, &'static str)>,
}

const NUMBER_POINT: Layout = Layout {
    message: "NumberDataPoint",
    start_time_unix_nano: "NumberDataPoint.start_time_unix_nano",
    time_unix_nano: "NumberDataPoint.time_unix_nano",
    flags: (8, "NumberDataPoint.flags"),
    attributes: (7, "NumberDataPoint.attributes"),
    exemplars: Some((5, "NumberDataPoint.exemplars")),
};

const HISTOGRAM_POINT: Layout = Layout {
    message: "HistogramDataPoint",
    start_time_unix_nano: "HistogramDataPoint.start_time_unix_nano",
    time_unix_nano: "HistogramDataPoint.time_unix_nano",
    flags: (10, "HistogramDataPoint.flags"),
    attributes: (9, "HistogramDataPoint.attributes"),
    exemplars: Some((8, "HistogramDataPoint.exemplars")),
};

const EXPONENTIAL_HISTOGRAM_POINT: Layout = Layout {
    message: "ExponentialHistogramDataPoint",
    start_time_unix_nano: "ExponentialHistogramDataPoint.start_time_unix_nano",
    time_unix_nano: "ExponentialHistogramDataPoint.time_unix_nano",
    flags: (10, "ExponentialHistogramDataPoint.flags"),
    attributes: (1, "ExponentialHistogramDataPoint.attributes"),
    exemplars: Some((11, "ExponentialHistogramDataPoint.exemplars")),
};

const SUMMARY_POINT: Layout = Layout {
    message: "SummaryDataPoint",
    start_time_unix_nano: "SummaryDataPoint.start_time_unix_nano",
    time_unix_nano: "SummaryDataPoint.time_unix_nano",
    flags: (8, "SummaryDataPoint.flags"),
    attributes: (7, "SummaryDataPoint.attributes"),
    exemplars: None,
};

/// The fields every point has, read from one point.
pub struct Header<'a> {
    pub start_time_unix_nano: u64,
    pub time_unix_nano: u64,
    pub flags: u32,
    pub attributes: Repeated<'a>,
    pub exemplars: Repeated<'a>,
}

/// A repeated message field of a point: the point's bytes from the field's first occurrence to its
/// last. Other fields may lie between, so readers pick out `field` with `Fields`.
#[derive(Clone, Copy)]
pub struct Repeated<'a> {
    pub bytes: &'a [u8],
    pub field: u32,
    pub path: &'static str,
}

impl<'a> Header<'a> {
    /// Reads `point`, passing each field that is not a header field to `other`. Attributes and
    /// exemplars are only located here, and read when their columns are written.
    fn read(
        point: &'a [u8],
        layout: &Layout,
        mut other: impl FnMut(u32, Value<'a>) -> Result<(), WireError>,
    ) -> Result<Self, WireError> {
        let (mut start_time_unix_nano, mut time_unix_nano, mut flags) = (0, 0, 0);
        let (mut attributes, mut exemplars) = (0..0, 0..0);
        // Field number 0 never occurs, so a point type without exemplars finds none.
        let (exemplars_field, exemplars_path) = layout.exemplars.unwrap_or((0, ""));
        let mut reader = Fields::new(point, layout.message);
        loop {
            let start = reader.offset();
            let Some(entry) = reader.next() else { break };
            let field = start..reader.offset();
            match entry? {
                (2, v) => start_time_unix_nano = v.fixed64(layout.start_time_unix_nano)?,
                (3, v) => time_unix_nano = v.fixed64(layout.time_unix_nano)?,
                (number, v) if number == layout.flags.0 => flags = v.uint32(layout.flags.1)?,
                (number, _) if number == layout.attributes.0 => cover(&mut attributes, field),
                (number, _) if number == exemplars_field => cover(&mut exemplars, field),
                (number, v) => other(number, v)?,
            }
        }
        Ok(Header {
            start_time_unix_nano,
            time_unix_nano,
            flags,
            attributes: Repeated {
                bytes: &point[attributes],
                field: layout.attributes.0,
                path: layout.attributes.1,
            },
            exemplars: Repeated {
                bytes: &point[exemplars],
                field: exemplars_field,
                path: exemplars_path,
            },
        })
    }
}

impl<'a> Repeated<'a> {
    /// The bytes of each occurrence of the field.
    pub fn each(&self) -> impl Iterator<Item = Result<&'a [u8], WireError>> {
        messages(self.bytes, self.path, self.field, self.path)
    }
}

/// Reads one occurrence of an exponential histogram's `positive` or `negative` buckets. Further
/// occurrences merge as prost merges them: the last offset wins and the counts are appended.
fn read_buckets(buckets: &[u8], offset: &mut i32, counts: &mut Vec<u64>) -> Result<(), WireError> {
    for entry in Fields::new(buckets, "Buckets") {
        match entry? {
            (1, v) => *offset = v.sint32("Buckets.offset")?,
            (2, v) => {
                for count in v.packed_varint("Buckets.bucket_counts")? {
                    counts.push(count?);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A NumberDataPoint's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Double(f64),
    Int(i64),
}

impl Number {
    /// The value as a double, as a Float64 column or a rollup takes it.
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Double(double) => double,
            Number::Int(int) => int as f64,
        }
    }
}

/// Reads a NumberDataPoint: its header and its value, `None` when it has neither `as_double` nor
/// `as_int` (a oneof: the last variant on the wire wins).
pub fn read_number(point: &[u8]) -> Result<(Header<'_>, Option<Number>), WireError> {
    let mut value = None;
    let header = Header::read(point, &NUMBER_POINT, |number, v| {
        match number {
            4 => value = Some(Number::Double(v.double("NumberDataPoint.as_double")?)),
            6 => value = Some(Number::Int(v.sfixed64("NumberDataPoint.as_int")?)),
            _ => {}
        }
        Ok(())
    })?;
    Ok((header, value))
}

/// The values of a HistogramDataPoint beyond its header, kept from point to point so the memory
/// of the repeated ones is reused.
#[derive(Debug, Default)]
pub struct HistogramValues {
    pub count: u64,
    pub sum: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub bucket_counts: Vec<u64>,
    pub explicit_bounds: Vec<f64>,
}

impl HistogramValues {
    /// Reads `point` into `self`, returning its header.
    pub fn read<'a>(&mut self, point: &'a [u8]) -> Result<Header<'a>, WireError> {
        self.bucket_counts.clear();
        self.explicit_bounds.clear();
        (self.count, self.sum, self.min, self.max) = (0, None, None, None);
        Header::read(point, &HISTOGRAM_POINT, |number, v| {
            match number {
                4 => self.count = v.fixed64("HistogramDataPoint.count")?,
                5 => self.sum = Some(v.double("HistogramDataPoint.sum")?),
                6 => {
                    for bucket_count in v.packed_fixed64("HistogramDataPoint.bucket_counts")? {
                        self.bucket_counts.push(bucket_count?);
                    }
                }
                7 => {
                    for bound in v.packed_fixed64("HistogramDataPoint.explicit_bounds")? {
                        self.explicit_bounds.push(f64::from_bits(bound?));
                    }
                }
                11 => self.min = Some(v.double("HistogramDataPoint.min")?),
                12 => self.max = Some(v.double("HistogramDataPoint.max")?),
                _ => {}
            }
            Ok(())
        })
    }
}

/// The values of an ExponentialHistogramDataPoint beyond its header, kept like
/// [`HistogramValues`].
#[derive(Debug, Default)]
pub struct ExponentialValues {
    pub count: u64,
    pub sum: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub scale: i32,
    pub zero_count: u64,
    pub zero_threshold: f64,
    pub positive_offset: i32,
    pub positive_bucket_counts: Vec<u64>,
    pub negative_offset: i32,
    pub negative_bucket_counts: Vec<u64>,
}

impl ExponentialValues {
    /// Reads `point` into `self`, returning its header.
    pub fn read<'a>(&mut self, point: &'a [u8]) -> Result<Header<'a>, WireError> {
        self.positive_bucket_counts.clear();
        self.negative_bucket_counts.clear();
        (self.count, self.sum, self.min, self.max) = (0, None, None, None);
        (self.scale, self.zero_count, self.zero_threshold) = (0, 0, 0.0);
        (self.positive_offset, self.negative_offset) = (0, 0);
        Header::read(point, &EXPONENTIAL_HISTOGRAM_POINT, |number, v| {
            match number {
                4 => self.count = v.fixed64("ExponentialHistogramDataPoint.count")?,
                5 => self.sum = Some(v.double("ExponentialHistogramDataPoint.sum")?),
                6 => self.scale = v.sint32("ExponentialHistogramDataPoint.scale")?,
                7 => self.zero_count = v.fixed64("ExponentialHistogramDataPoint.zero_count")?,
                8 => read_buckets(
                    v.bytes("ExponentialHistogramDataPoint.positive")?,
                    &mut self.positive_offset,
                    &mut self.positive_bucket_counts,
                )?,
                9 => read_buckets(
                    v.bytes("ExponentialHistogramDataPoint.negative")?,
                    &mut self.negative_offset,
                    &mut self.negative_bucket_counts,
                )?,
                12 => self.min = Some(v.double("ExponentialHistogramDataPoint.min")?),
                13 => self.max = Some(v.double("ExponentialHistogramDataPoint.max")?),
                14 => {
                    self.zero_threshold =
                        v.double("ExponentialHistogramDataPoint.zero_threshold")?
                }
                _ => {}
            }
            Ok(())
        })
    }
}

/// The values of a SummaryDataPoint beyond its header, kept like [`HistogramValues`].
#[derive(Debug, Default)]
pub struct SummaryValues {
    pub count: u64,
    pub sum: f64,
    pub quantiles: Vec<f64>,
    pub quantile_values: Vec<f64>,
}

impl SummaryValues {
    /// Reads `point` into `self`, returning its header.
    pub fn read<'a>(&mut self, point: &'a [u8]) -> Result<Header<'a>, WireError> {
        self.quantiles.clear();
        self.quantile_values.clear();
        (self.count, self.sum) = (0, 0.0);
        Header::read(point, &SUMMARY_POINT, |number, v| {
            match number {
                4 => self.count = v.fixed64("SummaryDataPoint.count")?,
                5 => self.sum = v.double("SummaryDataPoint.sum")?,
                6 => {
                    let (mut quantile, mut value) = (0.0, 0.0);
                    for entry in Fields::new(
                        v.bytes("SummaryDataPoint.quantile_values")?,
                        "ValueAtQuantile",
                    ) {
                        match entry? {
                            (1, v) => quantile = v.double("ValueAtQuantile.quantile")?,
                            (2, v) => value = v.double("ValueAtQuantile.value")?,
                            _ => {}
                        }
                    }
                    self.quantiles.push(quantile);
                    self.quantile_values.push(value);
                }
                _ => {}
            }
            Ok(())
        })
    }
}

/// Grows `range` to take in `field`; an empty range is replaced.
fn cover(range: &mut Range<usize>, field: Range<usize>) {
    *range = if range.start == range.end {
        field
    } else {
        range.start..field.end
    };
}
