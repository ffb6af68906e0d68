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
pub struct Layout {
    message: &'static str,
    start_time_unix_nano: &'static str,
    time_unix_nano: &'static str,
    flags: (u32, &'static str),
    attributes: (u32, &'static str),
    /// SummaryDataPoint has none.
    exemplars: Option<(u32, &'static str)>,
}

pub const NUMBER_POINT: Layout = Layout {
    message: "NumberDataPoint",
    start_time_unix_nano: "NumberDataPoint.start_time_unix_nano",
    time_unix_nano: "NumberDataPoint.time_unix_nano",
    flags: (8, "NumberDataPoint.flags"),
    attributes: (7, "NumberDataPoint.attributes"),
    exemplars: Some((5, "NumberDataPoint.exemplars")),
};

pub const HISTOGRAM_POINT: Layout = Layout {
    message: "HistogramDataPoint",
    start_time_unix_nano: "HistogramDataPoint.start_time_unix_nano",
    time_unix_nano: "HistogramDataPoint.time_unix_nano",
    flags: (10, "HistogramDataPoint.flags"),
    attributes: (9, "HistogramDataPoint.attributes"),
    exemplars: Some((8, "HistogramDataPoint.exemplars")),
};

pub const EXPONENTIAL_HISTOGRAM_POINT: Layout = Layout {
    message: "ExponentialHistogramDataPoint",
    start_time_unix_nano: "ExponentialHistogramDataPoint.start_time_unix_nano",
    time_unix_nano: "ExponentialHistogramDataPoint.time_unix_nano",
    flags: (10, "ExponentialHistogramDataPoint.flags"),
    attributes: (1, "ExponentialHistogramDataPoint.attributes"),
    exemplars: Some((11, "ExponentialHistogramDataPoint.exemplars")),
};

pub const SUMMARY_POINT: Layout = Layout {
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
    pub fn read(
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

/// Reads one occurrence of an exponential histogram's `positive` or `negative` buckets. Further
/// occurrences merge as prost merges them: the last offset wins and the counts are appended.
pub fn read_buckets(
    buckets: &[u8],
    offset: &mut i32,
    counts: &mut Vec<u64>,
) -> Result<(), WireError> {
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

/// Grows `range` to take in `field`; an empty range is replaced.
fn cover(range: &mut Range<usize>, field: Range<usize>) {
    *range = if range.start == range.end {
        field
    } else {
        range.start..field.end
    };
}
