//! The columns of the five metric tables, filled a point at a time. Each table's [`Data`] is in the
//! order of its `*_COLUMNS` list.

use super::super::columns::SortedPairs;
use super::super::native::{Data, Fixed32, Fixed64, Fixed8, Offsets, StringMap, Strings};
use super::super::Table;
use crate::sink::datapoints::{
    ExponentialValues, Header, HistogramValues, Kind, MetricData, Number, Repeated, SummaryValues,
};
use crate::sink::envelope::Group;
use crate::wire::{Fields, WireError};

/// What the points of one resource and scope share, encoded once and copied into each of their
/// rows: the resource and scope attributes (each a map column of one row), the service name, and
/// the scope's dropped attribute count.
#[derive(Default)]
pub struct GroupCache {
    /// Where the cached resource and scope are in the request, to tell when the walk moved on.
    at: Option<[usize; 4]>,
    resource_attributes: StringMap,
    scope_attributes: StringMap,
    service_name: Vec<u8>,
    scope_dropped_attr_count: u32,
}

impl GroupCache {
    pub fn update<'a>(
        &mut self,
        group: &Group<'a, '_>,
        pairs: &mut SortedPairs<'a>,
    ) -> Result<(), WireError> {
        let at = Some([
            group.resource.as_ptr() as usize,
            group.resource.len(),
            group.scope.as_ptr() as usize,
            group.scope.len(),
        ]);
        if self.at == at {
            return Ok(());
        }
        let resource = pairs.read(group.resource, 1, "Resource.attributes")?;
        self.resource_attributes = StringMap::default();
        resource.write(&mut self.resource_attributes);
        self.service_name.clear();
        // The sort keeps the pairs of one key in wire order: this is the first on the wire.
        if let Some((_, name)) = resource.iter().find(|(key, _)| *key == "service.name") {
            self.service_name.extend_from_slice(name);
        }
        self.scope_attributes = StringMap::default();
        pairs.read_into(
            &mut self.scope_attributes,
            group.scope,
            3,
            "InstrumentationScope.attributes",
        )?;
        self.scope_dropped_attr_count = 0;
        for entry in Fields::new(group.scope, "InstrumentationScope") {
            if let (4, v) = entry? {
                self.scope_dropped_attr_count =
                    v.uint32("InstrumentationScope.dropped_attributes_count")?;
            }
        }
        self.at = at;
        Ok(())
    }
}

/// Appends the one row of `cached` to `map`.
fn append_cached(map: &mut StringMap, cached: &StringMap) {
    map.keys.data.extend_from_slice(&cached.keys.data);
    map.values.data.extend_from_slice(&cached.values.data);
    map.offsets.end_row(cached.offsets.total());
}

/// Where a point is: its resource and scope, and its metric.
pub struct Point<'p, 'a> {
    pub group: &'p Group<'a, 'p>,
    pub cache: &'p GroupCache,
    pub metric: &'p MetricData<'a>,
}

/// A table's columns, as [`Data`] in block order.
pub trait TableColumns {
    fn rows(&self) -> u64;
    fn data(&self, table: Table) -> Vec<Data<'_>>;
}

/// The columns every point table starts with, up to `Flags`.
#[derive(Default)]
struct Common {
    rows: u64,
    resource_attributes: StringMap,
    resource_schema_url: Strings,
    scope_name: Strings,
    scope_version: Strings,
    scope_attributes: StringMap,
    scope_dropped_attr_count: Fixed32,
    scope_schema_url: Strings,
    service_name: Strings,
    metric_name: Strings,
    metric_description: Strings,
    metric_unit: Strings,
    attributes: StringMap,
    start_time_unix: Fixed64,
    time_unix: Fixed64,
    flags: Fixed32,
}

impl Common {
    /// Starts a point's row. Its times were checked.
    fn row<'a>(
        &mut self,
        at: &Point<'_, 'a>,
        header: &Header<'a>,
        pairs: &mut SortedPairs<'a>,
    ) -> Result<(), WireError> {
        let Point {
            group,
            cache,
            metric,
        } = at;
        append_cached(&mut self.resource_attributes, &cache.resource_attributes);
        self.resource_schema_url
            .push(group.resource_schema_url.as_bytes());
        self.scope_name.push(group.scope_name.as_bytes());
        self.scope_version.push(group.scope_version.as_bytes());
        append_cached(&mut self.scope_attributes, &cache.scope_attributes);
        self.scope_dropped_attr_count
            .push_u32(cache.scope_dropped_attr_count);
        self.scope_schema_url
            .push(group.scope_schema_url.as_bytes());
        self.service_name.push(&cache.service_name);
        self.metric_name.push(metric.name.as_bytes());
        self.metric_description.push(metric.description.as_bytes());
        self.metric_unit.push(metric.unit.as_bytes());
        let Repeated { bytes, field, path } = header.attributes;
        pairs.read_into(&mut self.attributes, bytes, field, path)?;
        self.start_time_unix
            .push_i64(header.start_time_unix_nano as i64);
        self.time_unix.push_i64(header.time_unix_nano as i64);
        self.flags.push_u32(header.flags);
        self.rows += 1;
        Ok(())
    }

    fn data(&self) -> Vec<Data<'_>> {
        vec![
            Data::StringMap(&self.resource_attributes),
            Data::Strings(&self.resource_schema_url),
            Data::Strings(&self.scope_name),
            Data::Strings(&self.scope_version),
            Data::StringMap(&self.scope_attributes),
            Data::Fixed32(&self.scope_dropped_attr_count),
            Data::Strings(&self.scope_schema_url),
            Data::Strings(&self.service_name),
            Data::Strings(&self.metric_name),
            Data::Strings(&self.metric_description),
            Data::Strings(&self.metric_unit),
            Data::StringMap(&self.attributes),
            Data::Fixed64(&self.start_time_unix),
            Data::Fixed64(&self.time_unix),
            Data::Fixed32(&self.flags),
        ]
    }
}

/// The `Exemplars` nested columns: five arrays of one length per row.
#[derive(Default)]
struct Exemplars {
    offsets: Offsets,
    filtered_attributes: StringMap,
    time_unix: Fixed64,
    value: Fixed64,
    span_id: Strings,
    trace_id: Strings,
}

impl Exemplars {
    /// Writes a point's exemplars. Their times were checked.
    fn row<'a>(
        &mut self,
        exemplars: Repeated<'a>,
        pairs: &mut SortedPairs<'a>,
    ) -> Result<(), WireError> {
        let mut count = 0;
        for exemplar in exemplars.each() {
            let exemplar = exemplar?;
            let (mut time, mut value) = (0u64, 0.0);
            let (mut span_id, mut trace_id): (&[u8], &[u8]) = (&[], &[]);
            for entry in Fields::new(exemplar, "Exemplar") {
                match entry? {
                    (2, v) => time = v.fixed64("Exemplar.time_unix_nano")?,
                    // A oneof: the last variant on the wire wins.
                    (3, v) => value = v.double("Exemplar.as_double")?,
                    (6, v) => value = v.sfixed64("Exemplar.as_int")? as f64,
                    (4, v) => span_id = v.bytes("Exemplar.span_id")?,
                    (5, v) => trace_id = v.bytes("Exemplar.trace_id")?,
                    _ => {}
                }
            }
            pairs.read_into(
                &mut self.filtered_attributes,
                exemplar,
                7,
                "Exemplar.filtered_attributes",
            )?;
            self.time_unix.push_i64(time as i64);
            self.value.push_f64(value);
            push_id(&mut self.span_id, span_id, 8);
            push_id(&mut self.trace_id, trace_id, 16);
            count += 1;
        }
        self.offsets.end_row(count);
        Ok(())
    }

    fn extend<'c>(&'c self, data: &mut Vec<Data<'c>>) {
        let array = |inner| Data::Array(&self.offsets, Box::new(inner));
        data.extend([
            array(Data::StringMap(&self.filtered_attributes)),
            array(Data::Fixed64(&self.time_unix)),
            array(Data::Fixed64(&self.value)),
            array(Data::Strings(&self.span_id)),
            array(Data::Strings(&self.trace_id)),
        ]);
    }
}

/// Lower-case hex of an exemplar's id; an absent id is `len` zero bytes, as pdata's fixed-size ids
/// hold it.
fn push_id(column: &mut Strings, id: &[u8], len: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let _ = column.push_with::<()>(|out| {
        if id.is_empty() {
            out.resize(out.len() + 2 * len, b'0');
        }
        for byte in id {
            out.push(DIGITS[usize::from(byte >> 4)]);
            out.push(DIGITS[usize::from(byte & 0x0f)]);
        }
        Ok(())
    });
}

/// An `Array(UInt64)` or `Array(Float64)` column.
#[derive(Default)]
struct Array64 {
    offsets: Offsets,
    items: Fixed64,
}

impl Array64 {
    fn push_u64s(&mut self, items: &[u64]) {
        for &item in items {
            self.items.push_u64(item);
        }
        self.offsets.end_row(items.len() as u64);
    }

    fn push_f64s(&mut self, items: &[f64]) {
        for &item in items {
            self.items.push_f64(item);
        }
        self.offsets.end_row(items.len() as u64);
    }

    fn data(&self) -> Data<'_> {
        Data::Array(&self.offsets, Box::new(Data::Fixed64(&self.items)))
    }
}

/// A table's columns: those every table starts with, the point type's own, and the exemplars'.
#[derive(Default)]
pub struct Columns<T> {
    common: Common,
    own: T,
    exemplars: Exemplars,
}

/// The columns of a point type's own, between the common ones and the exemplars'.
pub trait PointColumns: Default {
    /// What a point's own columns are written from.
    type Values;
    /// Whether the table has the `Exemplars` columns.
    const EXEMPLARS: bool = true;
    fn push(&mut self, values: &Self::Values, kind: Kind);
    fn extend<'c>(&'c self, data: &mut Vec<Data<'c>>, table: Table);
}

impl<T: PointColumns> Columns<T> {
    /// Writes a point whose times were checked.
    pub fn row<'a>(
        &mut self,
        at: &Point<'_, 'a>,
        header: &Header<'a>,
        values: &T::Values,
        pairs: &mut SortedPairs<'a>,
    ) -> Result<(), WireError> {
        self.common.row(at, header, pairs)?;
        self.own.push(values, at.metric.kind);
        if T::EXEMPLARS {
            self.exemplars.row(header.exemplars, pairs)?;
        }
        Ok(())
    }
}

impl<T: PointColumns> TableColumns for Columns<T> {
    fn rows(&self) -> u64 {
        self.common.rows
    }

    fn data(&self, table: Table) -> Vec<Data<'_>> {
        let mut data = self.common.data();
        self.own.extend(&mut data, table);
        if T::EXEMPLARS {
            self.exemplars.extend(&mut data);
        }
        data
    }
}

/// The temporality of a point type that has one, else 0.
fn temporality(kind: Kind) -> i32 {
    match kind {
        Kind::Sum(aggregation)
        | Kind::Histogram(aggregation)
        | Kind::ExponentialHistogram(aggregation) => aggregation.temporality,
        Kind::Gauge | Kind::Summary => 0,
    }
}

/// `otel_metrics_gauge`'s `Value`, or `otel_metrics_sum`'s with the aggregation columns.
#[derive(Default)]
pub struct NumberColumns {
    value: Fixed64,
    temporality: Fixed32,
    is_monotonic: Fixed8,
}

impl PointColumns for NumberColumns {
    type Values = Option<Number>;

    fn push(&mut self, value: &Option<Number>, kind: Kind) {
        self.value.push_f64(value.map_or(0.0, Number::as_f64));
        if let Kind::Sum(sum) = kind {
            self.temporality.push_i32(sum.temporality);
            self.is_monotonic.push_bool(sum.is_monotonic);
        }
    }

    fn extend<'c>(&'c self, data: &mut Vec<Data<'c>>, table: Table) {
        data.push(Data::Fixed64(&self.value));
        if table == Table::MetricsSum {
            data.push(Data::Fixed32(&self.temporality));
            data.push(Data::Fixed8(&self.is_monotonic));
        }
    }
}

/// `Count`, `Sum`, `Min`, `Max` and `AggregationTemporality` of a histogram of either kind.
#[derive(Default)]
struct Stats {
    count: Fixed64,
    sum: Fixed64,
    min: Fixed64,
    max: Fixed64,
    temporality: Fixed32,
}

impl Stats {
    fn push(&mut self, count: u64, [sum, min, max]: [Option<f64>; 3], kind: Kind) {
        self.count.push_u64(count);
        self.sum.push_f64(sum.unwrap_or(0.0));
        self.min.push_f64(min.unwrap_or(0.0));
        self.max.push_f64(max.unwrap_or(0.0));
        self.temporality.push_i32(temporality(kind));
    }

    fn extend<'c>(&'c self, data: &mut Vec<Data<'c>>) {
        data.extend([
            Data::Fixed64(&self.count),
            Data::Fixed64(&self.sum),
            Data::Fixed64(&self.min),
            Data::Fixed64(&self.max),
            Data::Fixed32(&self.temporality),
        ]);
    }
}

/// `otel_metrics_histogram`'s own columns.
#[derive(Default)]
pub struct HistogramColumns {
    stats: Stats,
    bucket_counts: Array64,
    explicit_bounds: Array64,
}

impl PointColumns for HistogramColumns {
    type Values = HistogramValues;

    fn push(&mut self, values: &HistogramValues, kind: Kind) {
        let extremes = [values.sum, values.min, values.max];
        self.stats.push(values.count, extremes, kind);
        self.bucket_counts.push_u64s(&values.bucket_counts);
        self.explicit_bounds.push_f64s(&values.explicit_bounds);
    }

    fn extend<'c>(&'c self, data: &mut Vec<Data<'c>>, _: Table) {
        self.stats.extend(data);
        data.extend([self.bucket_counts.data(), self.explicit_bounds.data()]);
    }
}

/// `otel_metrics_exponential_histogram`'s own columns.
#[derive(Default)]
pub struct ExponentialColumns {
    stats: Stats,
    scale: Fixed32,
    zero_count: Fixed64,
    positive_offset: Fixed32,
    positive_bucket_counts: Array64,
    negative_offset: Fixed32,
    negative_bucket_counts: Array64,
}

impl PointColumns for ExponentialColumns {
    type Values = ExponentialValues;

    fn push(&mut self, values: &ExponentialValues, kind: Kind) {
        let extremes = [values.sum, values.min, values.max];
        self.stats.push(values.count, extremes, kind);
        self.scale.push_i32(values.scale);
        self.zero_count.push_u64(values.zero_count);
        self.positive_offset.push_i32(values.positive_offset);
        self.positive_bucket_counts
            .push_u64s(&values.positive_bucket_counts);
        self.negative_offset.push_i32(values.negative_offset);
        self.negative_bucket_counts
            .push_u64s(&values.negative_bucket_counts);
    }

    fn extend<'c>(&'c self, data: &mut Vec<Data<'c>>, _: Table) {
        self.stats.extend(data);
        data.extend([
            Data::Fixed32(&self.scale),
            Data::Fixed64(&self.zero_count),
            Data::Fixed32(&self.positive_offset),
            self.positive_bucket_counts.data(),
            Data::Fixed32(&self.negative_offset),
            self.negative_bucket_counts.data(),
        ]);
    }
}

/// `otel_metrics_summary`'s own columns; a summary has no exemplars.
#[derive(Default)]
pub struct SummaryColumns {
    count: Fixed64,
    sum: Fixed64,
    /// `ValueAtQuantiles.Quantile`, and the values at them, which share its offsets.
    quantiles: Array64,
    quantile_values: Fixed64,
}

impl PointColumns for SummaryColumns {
    type Values = SummaryValues;
    const EXEMPLARS: bool = false;

    fn push(&mut self, values: &SummaryValues, _: Kind) {
        self.count.push_u64(values.count);
        self.sum.push_f64(values.sum);
        self.quantiles.push_f64s(&values.quantiles);
        for &value in &values.quantile_values {
            self.quantile_values.push_f64(value);
        }
    }

    fn extend<'c>(&'c self, data: &mut Vec<Data<'c>>, _: Table) {
        data.extend([
            Data::Fixed64(&self.count),
            Data::Fixed64(&self.sum),
            self.quantiles.data(),
            Data::Array(
                &self.quantiles.offsets,
                Box::new(Data::Fixed64(&self.quantile_values)),
            ),
        ]);
    }
}
