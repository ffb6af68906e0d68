//! The ClickHouse sink's metric tables against ClickHouse itself, through the chdb front (see
//! tests/clickhouse.rs): every column of the five point tables read back, and the five-minute and
//! hourly rollups checked against aggregates of the raw rows.

mod common;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile, Exemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use otelstore::signal::Signal;
use otelstore::sink::clickhouse::{ClickHouseSink, Table};
use otelstore::sink::{Rows, Sink};
use prost::Message;
use serde_json::{json, Value as Json};

use common::{base_time, kv, rows as query, text, Front};

const SECOND: u64 = 1_000_000_000;
const METRIC_TABLES: [Table; 5] = [
    Table::MetricsGauge,
    Table::MetricsSum,
    Table::MetricsHistogram,
    Table::MetricsExponentialHistogram,
    Table::MetricsSummary,
];

fn metric(name: &str, unit: &str, data: Data) -> Metric {
    Metric {
        name: name.into(),
        description: format!("about {name}"),
        unit: unit.into(),
        metadata: vec![text("not", "stored")],
        data: Some(data),
    }
}

fn number(
    attributes: Vec<KeyValue>,
    time: u64,
    value: number_data_point::Value,
) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: time - 60 * SECOND,
        time_unix_nano: time,
        value: Some(value),
        ..Default::default()
    }
}

fn kitchen() -> Vec<KeyValue> {
    vec![text("room", "kitchen"), kv("floor", Value::IntValue(1))]
}

/// The same attributes in another order: the same series once the keys are sorted.
fn kitchen_reversed() -> Vec<KeyValue> {
    let mut attributes = kitchen();
    attributes.reverse();
    attributes
}

fn resource_metrics(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(Resource {
            attributes: resource,
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(InstrumentationScope {
                name: "io.test".into(),
                version: "1.0.0".into(),
                attributes: vec![text("z", "1"), text("a", "2")],
                dropped_attributes_count: 1,
            }),
            metrics,
            schema_url: "https://scope".into(),
        }],
        schema_url: "https://resource".into(),
    }
}

fn request(t0: u64) -> ExportMetricsServiceRequest {
    use number_data_point::Value::{AsDouble, AsInt};
    let exemplar = Exemplar {
        filtered_attributes: vec![text("user", "u1"), text("tenant", "t")],
        time_unix_nano: t0 - 1,
        span_id: vec![0xab; 8],
        trace_id: vec![0x0c; 16],
        value: Some(exemplar::Value::AsInt(3)),
    };
    let mut kitchen_first = number(kitchen(), t0, AsDouble(21.5));
    kitchen_first.flags = 1;
    kitchen_first.exemplars = vec![exemplar.clone()];
    let mut late = number(kitchen(), t0, AsDouble(0.0));
    late.time_unix_nano = u64::MAX;
    let gauge = metric(
        "temp",
        "C",
        Data::Gauge(Gauge {
            data_points: vec![
                kitchen_first,
                number(kitchen_reversed(), t0 + SECOND, AsInt(23)),
                // Ten minutes on: another five-minute bucket, the same hour.
                number(
                    vec![text("room", "hall")],
                    t0 + 600 * SECOND,
                    AsDouble(-1.0),
                ),
                late,
            ],
        }),
    );
    let sum = metric(
        "requests",
        "1",
        Data::Sum(Sum {
            data_points: vec![
                number(vec![text("route", "/a")], t0, AsInt(10)),
                number(vec![text("route", "/a")], t0 + 2 * SECOND, AsDouble(15.5)),
            ],
            aggregation_temporality: 2,
            is_monotonic: true,
        }),
    );
    let histogram = metric(
        "latency",
        "ms",
        Data::Histogram(Histogram {
            data_points: vec![
                HistogramDataPoint {
                    attributes: vec![text("route", "/a")],
                    start_time_unix_nano: t0 - 60 * SECOND,
                    time_unix_nano: t0,
                    count: 3,
                    sum: Some(7.5),
                    bucket_counts: vec![1, 2, 0],
                    explicit_bounds: vec![1.0, 5.0],
                    exemplars: vec![Exemplar {
                        filtered_attributes: vec![],
                        span_id: vec![],
                        trace_id: vec![],
                        value: Some(exemplar::Value::AsDouble(0.5)),
                        ..exemplar
                    }],
                    flags: 0,
                    min: Some(0.5),
                    max: Some(4.0),
                },
                // Without min and max: 0, as contrib writes them.
                HistogramDataPoint {
                    attributes: vec![text("route", "/a")],
                    start_time_unix_nano: t0 + 3 * SECOND - 60 * SECOND,
                    time_unix_nano: t0 + 3 * SECOND,
                    count: 1,
                    sum: Some(2.0),
                    bucket_counts: vec![0, 1, 0],
                    explicit_bounds: vec![1.0, 5.0],
                    flags: 1,
                    ..Default::default()
                },
            ],
            aggregation_temporality: 1,
        }),
    );
    let exponential = metric(
        "size",
        "By",
        Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![
                ExponentialHistogramDataPoint {
                    attributes: vec![],
                    start_time_unix_nano: t0 - 60 * SECOND,
                    time_unix_nano: t0,
                    count: 7,
                    sum: Some(10.0),
                    scale: 2,
                    zero_count: 1,
                    positive: Some(Buckets {
                        offset: -1,
                        bucket_counts: vec![1, 2],
                    }),
                    negative: Some(Buckets {
                        offset: 0,
                        bucket_counts: vec![3],
                    }),
                    min: Some(-2.0),
                    max: Some(5.0),
                    zero_threshold: 0.001,
                    ..Default::default()
                },
                ExponentialHistogramDataPoint {
                    attributes: vec![],
                    start_time_unix_nano: t0 + 4 * SECOND - 60 * SECOND,
                    time_unix_nano: t0 + 4 * SECOND,
                    count: 4,
                    sum: Some(8.0),
                    scale: 2,
                    positive: Some(Buckets {
                        offset: 0,
                        bucket_counts: vec![4],
                    }),
                    min: Some(1.0),
                    max: Some(3.0),
                    ..Default::default()
                },
            ],
            aggregation_temporality: 1,
        }),
    );
    let summary = metric(
        "rpc",
        "s",
        Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                attributes: vec![text("method", "get")],
                start_time_unix_nano: t0 - 60 * SECOND,
                time_unix_nano: t0,
                count: 5,
                sum: 2.5,
                quantile_values: vec![
                    ValueAtQuantile {
                        quantile: 0.5,
                        value: 0.4,
                    },
                    ValueAtQuantile {
                        quantile: 0.99,
                        value: 1.2,
                    },
                ],
                flags: 0,
            }],
        }),
    );
    ExportMetricsServiceRequest {
        resource_metrics: vec![
            resource_metrics(
                vec![
                    text("service.name", "svc-a"),
                    text("host.name", "h1"),
                    text("service.name", "second"),
                ],
                vec![gauge, sum, histogram, exponential, summary],
            ),
            // The same resource with its attributes in another order, and a third kitchen point:
            // one series with the first two in the rollups.
            resource_metrics(
                vec![
                    text("host.name", "h1"),
                    text("service.name", "svc-a"),
                    text("service.name", "second"),
                ],
                vec![metric(
                    "temp",
                    "C",
                    Data::Gauge(Gauge {
                        data_points: vec![number(
                            kitchen_reversed(),
                            t0 + 2 * SECOND,
                            AsDouble(22.0),
                        )],
                    }),
                )],
            ),
        ],
    }
}

/// `value` with every whole number written as an integer: ClickHouse writes the Float64 23.0 as
/// `23`, which serde_json reads as an integer, unequal to the 23.0 of `json!`.
fn whole(value: Json) -> Json {
    match value {
        Json::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => json!(f as i64),
            _ => Json::Number(n),
        },
        Json::Array(items) => items.into_iter().map(whole).collect(),
        Json::Object(fields) => fields.into_iter().map(|(k, v)| (k, whole(v))).collect(),
        other => other,
    }
}

/// Asserts that rows read back are `want`, whole numbers compared as such.
#[track_caller]
fn assert_rows(got: Vec<Json>, want: Vec<Json>) {
    assert_eq!(whole(Json::from(got)), whole(Json::from(want)));
}

/// The columns every point table starts with, read so that JSON shows them exactly: maps as their
/// pairs in order, times as nanoseconds.
const COMMON: &str = "CAST(ResourceAttributes, 'Array(Tuple(String, String))') AS ResourceAttributes, \
    ResourceSchemaUrl, ScopeName, ScopeVersion, \
    CAST(ScopeAttributes, 'Array(Tuple(String, String))') AS ScopeAttributes, ScopeDroppedAttrCount, \
    ScopeSchemaUrl, ServiceName, MetricName, MetricDescription, MetricUnit, \
    CAST(Attributes, 'Array(Tuple(String, String))') AS Attributes, \
    toUnixTimestamp64Nano(StartTimeUnix) AS StartTimeUnix, toUnixTimestamp64Nano(TimeUnix) AS TimeUnix, Flags";

const EXEMPLARS: &str = "arrayMap(m -> CAST(m, 'Array(Tuple(String, String))'), Exemplars.FilteredAttributes) AS ExemplarAttributes, \
    arrayMap(t -> toUnixTimestamp64Nano(t), Exemplars.TimeUnix) AS ExemplarTimes, \
    Exemplars.Value AS ExemplarValues, Exemplars.SpanId AS ExemplarSpanIds, Exemplars.TraceId AS ExemplarTraceIds";

/// The common columns of a point of `request()` at `time`, with these point attributes and flags.
fn common(name: &str, unit: &str, attributes: Json, time: u64, flags: u32) -> Json {
    json!({
        "ResourceAttributes": [["host.name", "h1"], ["service.name", "svc-a"], ["service.name", "second"]],
        "ResourceSchemaUrl": "https://resource",
        "ScopeName": "io.test",
        "ScopeVersion": "1.0.0",
        "ScopeAttributes": [["a", "2"], ["z", "1"]],
        "ScopeDroppedAttrCount": 1,
        "ScopeSchemaUrl": "https://scope",
        "ServiceName": "svc-a",
        "MetricName": name,
        "MetricDescription": format!("about {name}"),
        "MetricUnit": unit,
        "Attributes": attributes,
        "StartTimeUnix": time - 60 * SECOND,
        "TimeUnix": time,
        "Flags": flags,
    })
}

/// `base` with the fields of `more` added.
fn with(mut base: Json, more: Json) -> Json {
    if let (Some(base), Json::Object(more)) = (base.as_object_mut(), more) {
        base.extend(more);
    }
    base
}

/// A row of a table with exemplars: `common`, no exemplars, and `own`'s columns, which may
/// replace the exemplars'.
fn point(common: Json, own: Json) -> Json {
    let none = json!({
        "ExemplarAttributes": [], "ExemplarTimes": [], "ExemplarValues": [], "ExemplarSpanIds": [],
        "ExemplarTraceIds": []
    });
    with(with(common, none), own)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_round_trip_through_clickhouse() {
    let Some(front) = Front::start() else {
        return;
    };
    let sink = front.sink();
    assert_eq!(
        sink.migrate().await.expect("migrations"),
        vec![1, 2, 3, 4, 5]
    );

    let t0 = base_time();
    let encoded = ClickHouseSink::encode(Signal::Metrics, &request(t0).encode_to_vec())
        .expect("valid request");
    assert_eq!((encoded.rows.rows(), encoded.rejected), (11, 1));
    assert_eq!(
        encoded.first_rejection.as_deref(),
        Some("gauge point 3 of metric \"temp\": time_unix_nano 18446744073709551615 is after 2262-04-11, the last instant DateTime64(9) holds")
    );
    for table in METRIC_TABLES {
        let block = encoded.rows.block(table).expect("a block for every table");
        sink.insert(table, &[block], "metrics")
            .await
            .expect("insert");
    }

    // ---- Every column of every table ----
    let kitchen_pairs = json!([["floor", "1"], ["room", "kitchen"]]);
    let gauge = query(
        &sink,
        &format!("SELECT {COMMON}, Value, {EXEMPLARS} FROM otel_test.otel_metrics_gauge ORDER BY TimeUnix"),
    )
    .await;
    assert_rows(
        gauge,
        vec![
            point(
                common("temp", "C", kitchen_pairs.clone(), t0, 1),
                json!({
                    "Value": 21.5,
                    "ExemplarAttributes": [[["tenant", "t"], ["user", "u1"]]], "ExemplarTimes": [t0 - 1],
                    "ExemplarValues": [3.0], "ExemplarSpanIds": ["ab".repeat(8)],
                    "ExemplarTraceIds": ["0c".repeat(16)]
                }),
            ),
            point(
                common("temp", "C", kitchen_pairs.clone(), t0 + SECOND, 0),
                json!({"Value": 23.0}),
            ),
            point(
                common("temp", "C", kitchen_pairs, t0 + 2 * SECOND, 0),
                json!({"Value": 22.0}),
            ),
            point(
                common("temp", "C", json!([["room", "hall"]]), t0 + 600 * SECOND, 0),
                json!({"Value": -1.0}),
            ),
        ],
    );

    let route = json!([["route", "/a"]]);
    let sum = query(
        &sink,
        &format!("SELECT {COMMON}, Value, AggregationTemporality, IsMonotonic, {EXEMPLARS} FROM otel_test.otel_metrics_sum ORDER BY TimeUnix"),
    )
    .await;
    let sum_row = |time, value| {
        point(
            common("requests", "1", route.clone(), time, 0),
            json!({"Value": value, "AggregationTemporality": 2, "IsMonotonic": true}),
        )
    };
    assert_rows(sum, vec![sum_row(t0, 10.0), sum_row(t0 + 2 * SECOND, 15.5)]);

    let histogram = query(
        &sink,
        &format!("SELECT {COMMON}, Count, Sum, BucketCounts, ExplicitBounds, Min, Max, AggregationTemporality, {EXEMPLARS} FROM otel_test.otel_metrics_histogram ORDER BY TimeUnix"),
    )
    .await;
    assert_rows(
        histogram,
        vec![
            point(
                common("latency", "ms", route.clone(), t0, 0),
                json!({
                    "Count": 3, "Sum": 7.5, "BucketCounts": [1, 2, 0], "ExplicitBounds": [1.0, 5.0],
                    "Min": 0.5, "Max": 4.0, "AggregationTemporality": 1,
                    // An exemplar without ids: zeros, as pdata's fixed-size ids give them.
                    "ExemplarAttributes": [[]], "ExemplarTimes": [t0 - 1], "ExemplarValues": [0.5],
                    "ExemplarSpanIds": ["0".repeat(16)], "ExemplarTraceIds": ["0".repeat(32)]
                }),
            ),
            point(
                common("latency", "ms", route.clone(), t0 + 3 * SECOND, 1),
                json!({
                    "Count": 1, "Sum": 2.0, "BucketCounts": [0, 1, 0], "ExplicitBounds": [1.0, 5.0],
                    "Min": 0.0, "Max": 0.0, "AggregationTemporality": 1
                }),
            ),
        ],
    );

    let exponential = query(
        &sink,
        &format!("SELECT {COMMON}, Count, Sum, Scale, ZeroCount, PositiveOffset, PositiveBucketCounts, NegativeOffset, NegativeBucketCounts, Min, Max, AggregationTemporality, {EXEMPLARS} FROM otel_test.otel_metrics_exponential_histogram ORDER BY TimeUnix"),
    )
    .await;
    assert_rows(
        exponential,
        vec![
            point(
                common("size", "By", json!([]), t0, 0),
                json!({
                    "Count": 7, "Sum": 10.0, "Scale": 2, "ZeroCount": 1, "PositiveOffset": -1,
                    "PositiveBucketCounts": [1, 2], "NegativeOffset": 0, "NegativeBucketCounts": [3],
                    "Min": -2.0, "Max": 5.0, "AggregationTemporality": 1
                }),
            ),
            point(
                common("size", "By", json!([]), t0 + 4 * SECOND, 0),
                json!({
                    "Count": 4, "Sum": 8.0, "Scale": 2, "ZeroCount": 0, "PositiveOffset": 0,
                    "PositiveBucketCounts": [4], "NegativeOffset": 0, "NegativeBucketCounts": [],
                    "Min": 1.0, "Max": 3.0, "AggregationTemporality": 1
                }),
            ),
        ],
    );

    let summary = query(
        &sink,
        &format!("SELECT {COMMON}, Count, Sum, ValueAtQuantiles.Quantile AS Quantiles, ValueAtQuantiles.Value AS QuantileValues FROM otel_test.otel_metrics_summary"),
    )
    .await;
    assert_rows(
        summary,
        vec![with(
            common("rpc", "s", json!([["method", "get"]]), t0, 0),
            json!({"Count": 5, "Sum": 2.5, "Quantiles": [0.5, 0.99], "QuantileValues": [0.4, 1.2]}),
        )],
    );

    // ---- The rollups against the raw rows ----
    for (rollup, bucket) in [
        ("otel_metrics_rollup_5m", "toStartOfFiveMinutes"),
        ("otel_metrics_rollup_1h", "toStartOfHour"),
    ] {
        let rolled = query(&sink, &rollup_sql(rollup)).await;
        assert_eq!(rolled, query(&sink, &raw_sql(bucket)).await, "{rollup}");
        // The three kitchen points, sent with their attributes (and their resource's) in two
        // orders, are one series; so are the two points of each other metric but the summary.
        let mut series: Vec<(&str, u64)> = rolled
            .iter()
            .map(|row| {
                (
                    row["metric"].as_str().expect("a name"),
                    row["points"].as_u64().expect("a count"),
                )
            })
            .collect();
        series.sort();
        assert_eq!(
            series,
            [
                ("latency", 2),
                ("requests", 2),
                ("size", 2),
                ("temp", 1),
                ("temp", 3)
            ],
            "{rollup}: {rolled:#?}"
        );
        // And by hand, beyond agreeing with the raw rows: the values of three series.
        let pick = |name: &str, fields: &[&str]| {
            let row = rolled
                .iter()
                .filter(|row| row["metric"] == name)
                .max_by_key(|row| row["points"].as_u64())
                .expect("a series");
            whole(fields.iter().map(|field| row[*field].clone()).collect())
        };
        let number = ["points", "sum", "min", "max", "last"];
        assert_eq!(
            pick("temp", &number),
            whole(json!([3, 66.5, 21.5, 23.0, 22.0]))
        );
        assert_eq!(
            pick(
                "latency",
                &["count", "bucket_counts", "last_bucket_counts", "bounds"]
            ),
            json!([4, [1, 3, 0], [0, 1, 0], [1, 5]])
        );
        assert_eq!(
            pick(
                "size",
                &["count", "zero_count", "positive", "negative", "scale"]
            ),
            json!([11, 1, [[-1, 0], [1, 6]], [[0], [3]], 2])
        );
    }
    drop(front);
}

/// A rollup's rows, merged, named as [`raw_sql`] names the aggregates of the raw rows.
fn rollup_sql(table: &str) -> String {
    format!(
        "SELECT toUnixTimestamp(Bucket) AS start, ServiceName AS service, MetricName AS metric, \
         MetricType AS type, AggregationTemporality AS temporality, SeriesHash AS series, \
         any(MetricUnit) AS unit, any(IsMonotonic) AS monotonic, \
         CAST(any(ResourceAttributes), 'Array(Tuple(String, String))') AS resource, any(ScopeName) AS scope, \
         CAST(any(Attributes), 'Array(Tuple(String, String))') AS attributes, any(ExplicitBounds) AS bounds, \
         any(Scale) AS scale, countMerge(Points) AS points, sumMerge(Sum) AS sum, minMerge(Min) AS min, \
         maxMerge(Max) AS max, argMaxMerge(Last) AS last, sumMerge(Count) AS count, \
         argMaxMerge(LastCount) AS last_count, sumMerge(ZeroCount) AS zero_count, \
         sumForEachMerge(BucketCounts) AS bucket_counts, argMaxMerge(LastBucketCounts) AS last_bucket_counts, \
         sumMapMerge(PositiveBuckets) AS positive, sumMapMerge(NegativeBuckets) AS negative, \
         argMaxMerge(LastExpBuckets) AS last_exponential \
         FROM otel_test.{table} GROUP BY start, service, metric, type, temporality, series \
         ORDER BY metric, start, series"
    )
}

/// The same aggregates computed from the raw rows of the four rolled-up tables, per `bucket`
/// (`toStartOfFiveMinutes` or `toStartOfHour`) and series, as 0004_rollups.sql defines them.
fn raw_sql(bucket: &str) -> String {
    let select = |metric_type: &str, temporality: &str, hashed: &str, columns: &str| {
        format!(
            "SELECT toUnixTimestamp({bucket}(TimeUnix)) AS start, ServiceName AS service, MetricName AS metric, \
             '{metric_type}' AS type, {temporality} AS temporality, \
             cityHash64(ResourceAttributes, ScopeName, Attributes, MetricUnit{hashed}) AS series, \
             any(MetricUnit) AS unit, \
             CAST(any(ResourceAttributes), 'Array(Tuple(String, String))') AS resource, any(ScopeName) AS scope, \
             CAST(any(Attributes), 'Array(Tuple(String, String))') AS attributes, count() AS points, {columns} \
             FROM otel_test.otel_metrics_{metric_type} GROUP BY start, service, metric, temporality, series"
        )
    };
    let number = |monotonic: &str| {
        format!(
            "{monotonic} AS monotonic, CAST([], 'Array(Float64)') AS bounds, toInt32(0) AS scale, \
             sum(Value) AS sum, min(Value) AS min, max(Value) AS max, argMax(Value, TimeUnix) AS last, \
             toUInt64(0) AS count, toUInt64(0) AS last_count, toUInt64(0) AS zero_count, \
             CAST([], 'Array(UInt64)') AS bucket_counts, CAST([], 'Array(UInt64)') AS last_bucket_counts, {NO_EXPONENTIAL}"
        )
    };
    let histogram = |bounds: &str,
                     scale: &str,
                     zero_count: &str,
                     buckets: &str,
                     exponential: &str| {
        format!(
            "false AS monotonic, {bounds} AS bounds, {scale} AS scale, \
             sum(Sum) AS sum, min(Min) AS min, max(Max) AS max, argMax(Sum, TimeUnix) AS last, \
             sum(Count) AS count, argMax(Count, TimeUnix) AS last_count, {zero_count} AS zero_count, \
             {buckets}, {exponential}"
        )
    };
    let parts = [
        select("gauge", "toInt32(0)", "", &number("false")),
        select(
            "sum",
            "AggregationTemporality",
            ", IsMonotonic",
            &number("any(IsMonotonic)"),
        ),
        select(
            "histogram",
            "AggregationTemporality",
            ", ExplicitBounds",
            &histogram(
                "any(ExplicitBounds)",
                "toInt32(0)",
                "toUInt64(0)",
                "sumForEach(BucketCounts) AS bucket_counts, \
                 argMax(BucketCounts, TimeUnix) AS last_bucket_counts",
                NO_EXPONENTIAL,
            ),
        ),
        select(
            "exponential_histogram",
            "AggregationTemporality",
            ", Scale",
            &histogram(
                "CAST([], 'Array(Float64)')",
                "any(Scale)",
                "sum(ZeroCount)",
                "CAST([], 'Array(UInt64)') AS bucket_counts, \
                 CAST([], 'Array(UInt64)') AS last_bucket_counts",
                "sumMap(arrayMap(i -> toInt32(PositiveOffset + i - 1), arrayEnumerate(PositiveBucketCounts)), \
                 PositiveBucketCounts) AS positive, \
                 sumMap(arrayMap(i -> toInt32(NegativeOffset + i - 1), arrayEnumerate(NegativeBucketCounts)), \
                 NegativeBucketCounts) AS negative, \
                 argMax((PositiveOffset, PositiveBucketCounts, NegativeOffset, NegativeBucketCounts), TimeUnix) \
                 AS last_exponential",
            ),
        ),
    ];
    format!(
        "SELECT start, service, metric, type, temporality, series, unit, monotonic, resource, scope, \
         attributes, bounds, scale, points, sum, min, max, last, count, last_count, zero_count, \
         bucket_counts, last_bucket_counts, positive, negative, last_exponential \
         FROM ({}) ORDER BY metric, start, series",
        parts.join(" UNION ALL ")
    )
}

/// The exponential buckets' aggregates of a table that has none, as a rollup row merges them.
const NO_EXPONENTIAL: &str = "(CAST([], 'Array(Int32)'), CAST([], 'Array(UInt64)')) AS positive, \
    (CAST([], 'Array(Int32)'), CAST([], 'Array(UInt64)')) AS negative, \
    (toInt32(0), CAST([], 'Array(UInt64)'), toInt32(0), CAST([], 'Array(UInt64)')) AS last_exponential";
