use super::*;
use crate::sink::postgres::copy::parse;
use crate::testdata::{kv, string_kv, value};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile, Exemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric as OtlpMetric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

const TIME: u64 = 1_700_000_000_123_456_789;
/// TIME in microseconds since 2000-01-01, as the timestamptz column holds it.
const TIME_PG_MICROS: i64 = 1_700_000_000_123_456 - 946_684_800_000_000;

type Row = Vec<Option<Vec<u8>>>;

/// The rows of one table, read back by column name.
struct Table {
    columns: &'static [&'static str],
    rows: Vec<Row>,
}

struct Tables {
    gauge: Table,
    sum: Table,
    histogram: Table,
    exponential_histogram: Table,
    summary: Table,
    rejected: u64,
    first_rejection: Option<String>,
}

fn encode_tables(otlp: &[u8]) -> Tables {
    let encoded = encode(otlp).expect("valid request");
    let table = |columns: &'static [&'static str], rows: CopyRows| {
        let chunk = rows.finish();
        let rows = parse::rows(&chunk.data);
        assert_eq!(rows.len() as u64, chunk.rows);
        assert!(
            rows.iter().all(|row| row.len() == columns.len()),
            "every row has every column"
        );
        Table { columns, rows }
    };
    Tables {
        gauge: table(GAUGE_COLUMNS, encoded.gauge),
        sum: table(SUM_COLUMNS, encoded.sum),
        histogram: table(HISTOGRAM_COLUMNS, encoded.histogram),
        exponential_histogram: table(EXPONENTIAL_HISTOGRAM_COLUMNS, encoded.exponential_histogram),
        summary: table(SUMMARY_COLUMNS, encoded.summary),
        rejected: encoded.rejected,
        first_rejection: encoded.first_rejection,
    }
}

fn encode_request(request: &ExportMetricsServiceRequest) -> Tables {
    encode_tables(&request.encode_to_vec())
}

impl Table {
    fn row(&self, at: usize) -> RowRef<'_> {
        RowRef {
            columns: self.columns,
            row: &self.rows[at],
        }
    }
}

struct RowRef<'a> {
    columns: &'static [&'static str],
    row: &'a Row,
}

impl RowRef<'_> {
    fn field(&self, name: &str) -> Option<&[u8]> {
        self.row[self
            .columns
            .iter()
            .position(|c| *c == name)
            .unwrap_or_else(|| panic!("no column {name}"))]
        .as_deref()
    }

    fn bytes(&self, name: &str) -> &[u8] {
        self.field(name).unwrap_or_else(|| panic!("{name} is NULL"))
    }

    fn is_null(&self, name: &str) -> bool {
        self.field(name).is_none()
    }

    fn text(&self, name: &str) -> &str {
        std::str::from_utf8(self.bytes(name)).expect("UTF-8")
    }

    fn int8(&self, name: &str) -> i64 {
        i64::from_be_bytes(self.bytes(name).try_into().expect("8 bytes"))
    }

    fn int4(&self, name: &str) -> i32 {
        i32::from_be_bytes(self.bytes(name).try_into().expect("4 bytes"))
    }

    fn int2(&self, name: &str) -> i16 {
        i16::from_be_bytes(self.bytes(name).try_into().expect("2 bytes"))
    }

    fn float8(&self, name: &str) -> f64 {
        f64::from_be_bytes(self.bytes(name).try_into().expect("8 bytes"))
    }

    fn bool(&self, name: &str) -> bool {
        match self.bytes(name) {
            [0] => false,
            [1] => true,
            other => panic!("{name} is no bool: {other:?}"),
        }
    }

    fn json(&self, name: &str) -> serde_json::Value {
        let bytes = self.bytes(name);
        assert_eq!(bytes[0], 1, "jsonb version byte");
        serde_json::from_slice(&bytes[1..]).expect("valid JSON")
    }

    /// The JSON text as written, for checking how numbers are spelled.
    fn json_text(&self, name: &str) -> &str {
        std::str::from_utf8(&self.bytes(name)[1..]).expect("UTF-8")
    }

    fn int8_array(&self, name: &str) -> Vec<i64> {
        parse::int8_array(self.bytes(name))
    }

    fn float8_array(&self, name: &str) -> Vec<f64> {
        parse::float8_array(self.bytes(name))
    }
}

/// One resource (service "svc") with one scope holding `metrics`.
fn request(metrics: Vec<OtlpMetric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![string_kv("service.name", "svc")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    version: "1.2".into(),
                    attributes: vec![string_kv("scope.key", "v")],
                    ..Default::default()
                }),
                metrics,
                schema_url: "https://scope".into(),
            }],
            schema_url: "https://resource".into(),
        }],
    }
}

fn metric(name: &str, data: Data) -> OtlpMetric {
    OtlpMetric {
        name: name.into(),
        description: "what it counts".into(),
        unit: "ms".into(),
        metadata: vec![kv("meta", value(Value::IntValue(1)))],
        data: Some(data),
    }
}

fn number_point(value: Option<number_data_point::Value>) -> NumberDataPoint {
    NumberDataPoint {
        time_unix_nano: TIME,
        value,
        ..Default::default()
    }
}

fn gauge(points: Vec<NumberDataPoint>) -> Data {
    Data::Gauge(Gauge {
        data_points: points,
    })
}

fn exemplar_with(value: Option<exemplar::Value>) -> Exemplar {
    Exemplar {
        filtered_attributes: vec![string_kv("user", "u1")],
        time_unix_nano: TIME - 1,
        span_id: vec![0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef],
        trace_id: vec![0xfe; 16],
        value,
    }
}

fn histogram_point() -> HistogramDataPoint {
    HistogramDataPoint {
        time_unix_nano: TIME,
        count: 6,
        sum: Some(12.5),
        bucket_counts: vec![1, 2, 3],
        explicit_bounds: vec![0.5, 10.0],
        min: Some(0.25),
        max: Some(11.0),
        ..Default::default()
    }
}

fn exponential_point() -> ExponentialHistogramDataPoint {
    ExponentialHistogramDataPoint {
        time_unix_nano: TIME,
        count: 10,
        scale: -3,
        zero_count: 1,
        positive: Some(Buckets {
            offset: -2,
            bucket_counts: vec![4, 0, 300],
        }),
        negative: Some(Buckets {
            offset: 5,
            bucket_counts: vec![2],
        }),
        zero_threshold: 1e-9,
        ..Default::default()
    }
}

#[test]
fn columns_are_those_of_the_schema_in_order() {
    let sql = include_str!("../../../../../../schema/postgres/0005_metrics.sql");
    for (table, columns) in [
        ("metrics_gauge", GAUGE_COLUMNS),
        ("metrics_sum", SUM_COLUMNS),
        ("metrics_histogram", HISTOGRAM_COLUMNS),
        (
            "metrics_exponential_histogram",
            EXPONENTIAL_HISTOGRAM_COLUMNS,
        ),
        ("metrics_summary", SUMMARY_COLUMNS),
    ] {
        let start = sql
            .find(&format!("CREATE TABLE {{schema}}.{table} ("))
            .expect("table in the schema");
        let body = &sql[start..];
        let body = &body[body.find('\n').expect("columns") + 1
            ..body.find(") PARTITION BY").expect("end of table")];
        let in_schema: Vec<&str> = body
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .collect();
        assert_eq!(in_schema, columns, "{table}");
    }
}

#[test]
fn a_gauge_point_fills_every_column() {
    let mut point = number_point(Some(number_data_point::Value::AsInt(-42)));
    point.start_time_unix_nano = TIME - 1_000;
    point.attributes = vec![
        string_kv("host", "a"),
        kv("n", value(Value::DoubleValue(1.0))),
    ];
    point.flags = 1;
    point.exemplars = vec![
        exemplar_with(Some(exemplar::Value::AsInt(7))),
        exemplar_with(Some(exemplar::Value::AsDouble(2.0))),
    ];
    let tables = encode_request(&request(vec![metric("queue.depth", gauge(vec![point]))]));
    assert_eq!(
        (
            tables.gauge.rows.len(),
            tables.rejected,
            tables.first_rejection
        ),
        (1, 0, None)
    );
    let row = tables.gauge.row(0);
    assert_eq!(row.text("metric_name"), "queue.depth");
    assert_eq!(row.text("metric_description"), "what it counts");
    assert_eq!(row.text("metric_unit"), "ms");
    assert_eq!(row.json("metric_metadata"), serde_json::json!({"meta": 1}));
    assert_eq!(row.text("service_name"), "svc");
    assert_eq!(
        row.json("resource_attributes"),
        serde_json::json!({"service.name": "svc"})
    );
    assert_eq!(row.text("resource_schema_url"), "https://resource");
    assert_eq!(row.text("scope_name"), "lib");
    assert_eq!(row.text("scope_version"), "1.2");
    assert_eq!(
        row.json("scope_attributes"),
        serde_json::json!({"scope.key": "v"})
    );
    assert_eq!(row.text("scope_schema_url"), "https://scope");
    assert_eq!(row.json_text("attributes"), r#"{"host":"a","n":1.0}"#);
    assert_eq!(row.int8("start_time_unix_nano"), TIME as i64 - 1_000);
    assert_eq!(row.int8("time"), TIME_PG_MICROS);
    assert_eq!(row.int8("time_unix_nano"), TIME as i64);
    assert_eq!(row.int4("flags"), 1);
    let ids = r#""trace_id":"fefefefefefefefefefefefefefefefe","span_id":"0123456789abcdef""#;
    assert_eq!(
        row.json_text("exemplars"),
        format!(
            r#"[{{"time_unix_nano":{t},"value":7,{ids},"filtered_attributes":{{"user":"u1"}}}},{{"time_unix_nano":{t},"value":2.0,{ids},"filtered_attributes":{{"user":"u1"}}}}]"#,
            t = TIME - 1
        )
    );
    assert!(row.is_null("value_double"));
    assert_eq!(row.int8("value_int"), -42);
}

#[test]
fn double_and_empty_gauge_values() {
    let points = vec![
        number_point(Some(number_data_point::Value::AsDouble(f64::NAN))),
        number_point(Some(number_data_point::Value::AsDouble(-0.5))),
        number_point(None),
    ];
    let tables = encode_request(&request(vec![metric("g", gauge(points))]));
    let gauge = &tables.gauge;
    assert_eq!(gauge.rows.len(), 3);
    assert!(gauge.row(0).float8("value_double").is_nan());
    assert!(gauge.row(0).is_null("value_int"));
    assert_eq!(gauge.row(1).float8("value_double"), -0.5);
    assert!(
        gauge.row(2).is_null("value_double") && gauge.row(2).is_null("value_int"),
        "no value, no value column"
    );
    // Unset times and no exemplars.
    assert_eq!(gauge.row(0).int8("start_time_unix_nano"), 0);
    assert_eq!(gauge.row(0).json("exemplars"), serde_json::json!([]));
    assert_eq!(gauge.row(0).json("attributes"), serde_json::json!({}));
    assert_eq!(
        tables.sum.rows.len() + tables.histogram.rows.len() + tables.summary.rows.len(),
        0
    );
}

#[test]
fn sums_carry_temporality_and_monotonicity() {
    let sum = |aggregation_temporality, is_monotonic, value| {
        Data::Sum(Sum {
            data_points: vec![number_point(Some(value))],
            aggregation_temporality,
            is_monotonic,
        })
    };
    let tables = encode_request(&request(vec![
        metric("requests", sum(1, true, number_data_point::Value::AsInt(5))),
        metric(
            "balance",
            sum(2, false, number_data_point::Value::AsDouble(1.5)),
        ),
    ]));
    let rows = &tables.sum;
    assert_eq!((rows.rows.len(), tables.gauge.rows.len()), (2, 0));
    assert_eq!(rows.row(0).text("metric_name"), "requests");
    assert_eq!(rows.row(0).int8("value_int"), 5);
    assert_eq!(rows.row(0).int2("aggregation_temporality"), 1);
    assert!(rows.row(0).bool("is_monotonic"));
    assert_eq!(rows.row(1).float8("value_double"), 1.5);
    assert_eq!(rows.row(1).int2("aggregation_temporality"), 2);
    assert!(!rows.row(1).bool("is_monotonic"));
}

#[test]
fn histograms_with_and_without_sum_min_and_max() {
    let mut bare = HistogramDataPoint {
        time_unix_nano: TIME,
        count: 0,
        ..Default::default()
    };
    bare.flags = 1;
    let mut full = histogram_point();
    full.exemplars = vec![exemplar_with(None)];
    full.attributes = vec![string_kv("route", "/")];
    let data = Data::Histogram(Histogram {
        data_points: vec![full, bare],
        aggregation_temporality: 2,
    });
    let tables = encode_request(&request(vec![metric("latency", data)]));
    let rows = &tables.histogram;
    assert_eq!(rows.rows.len(), 2);
    let full = rows.row(0);
    assert_eq!(full.json("attributes"), serde_json::json!({"route": "/"}));
    assert_eq!(full.int8("count"), 6);
    assert_eq!(full.float8("sum"), 12.5);
    assert_eq!(full.float8("min"), 0.25);
    assert_eq!(full.float8("max"), 11.0);
    assert_eq!(full.int8_array("bucket_counts"), vec![1, 2, 3]);
    assert_eq!(full.float8_array("explicit_bounds"), vec![0.5, 10.0]);
    assert_eq!(full.int2("aggregation_temporality"), 2);
    assert_eq!(full.json("exemplars")[0]["value"], serde_json::Value::Null);
    let bare = rows.row(1);
    assert_eq!(bare.int8("count"), 0);
    assert!(bare.is_null("sum") && bare.is_null("min") && bare.is_null("max"));
    assert_eq!(bare.int8_array("bucket_counts"), Vec::<i64>::new());
    assert_eq!(bare.float8_array("explicit_bounds"), Vec::<f64>::new());
    assert_eq!(bare.int4("flags"), 1);
}

#[test]
fn exponential_histograms_with_negative_scale_and_offset() {
    let mut point = exponential_point();
    point.sum = Some(99.0);
    point.min = Some(-3.0);
    point.max = Some(f64::INFINITY);
    point.attributes = vec![string_kv("k", "v")];
    point.exemplars = vec![exemplar_with(Some(exemplar::Value::AsDouble(1e-3)))];
    let empty = ExponentialHistogramDataPoint {
        time_unix_nano: TIME,
        scale: i32::MIN,
        ..Default::default()
    };
    let data = Data::ExponentialHistogram(ExponentialHistogram {
        data_points: vec![point, empty],
        aggregation_temporality: 1,
    });
    let tables = encode_request(&request(vec![metric("size", data)]));
    let rows = &tables.exponential_histogram;
    assert_eq!(rows.rows.len(), 2);
    let row = rows.row(0);
    assert_eq!(row.json("attributes"), serde_json::json!({"k": "v"}));
    assert_eq!(
        row.json_text("exemplars")
            .split(r#""value":"#)
            .nth(1)
            .map(|rest| &rest[..6]),
        Some("0.001,")
    );
    assert_eq!(row.int8("count"), 10);
    assert_eq!(row.float8("sum"), 99.0);
    assert_eq!(row.float8("min"), -3.0);
    assert_eq!(row.float8("max"), f64::INFINITY);
    assert_eq!(row.int4("scale"), -3);
    assert_eq!(row.int8("zero_count"), 1);
    assert_eq!(row.float8("zero_threshold"), 1e-9);
    assert_eq!(row.int4("positive_offset"), -2);
    assert_eq!(row.int8_array("positive_bucket_counts"), vec![4, 0, 300]);
    assert_eq!(row.int4("negative_offset"), 5);
    assert_eq!(row.int8_array("negative_bucket_counts"), vec![2]);
    assert_eq!(row.int2("aggregation_temporality"), 1);
    let empty = rows.row(1);
    assert_eq!(empty.int4("scale"), i32::MIN);
    assert!(empty.is_null("sum") && empty.is_null("min") && empty.is_null("max"));
    assert_eq!(
        (empty.int4("positive_offset"), empty.int4("negative_offset")),
        (0, 0)
    );
    assert_eq!(
        empty.int8_array("positive_bucket_counts"),
        Vec::<i64>::new()
    );
    assert_eq!(
        empty.int8_array("negative_bucket_counts"),
        Vec::<i64>::new()
    );
    assert_eq!(empty.float8("zero_threshold"), 0.0);
}

#[test]
fn summaries_keep_their_quantiles_in_order() {
    let point = SummaryDataPoint {
        time_unix_nano: TIME,
        count: 4,
        sum: 10.0,
        quantile_values: vec![
            ValueAtQuantile {
                quantile: 0.0,
                value: 1.0,
            },
            ValueAtQuantile {
                quantile: 0.5,
                value: 2.5,
            },
            ValueAtQuantile {
                quantile: 1.0,
                value: 4.0,
            },
        ],
        attributes: vec![string_kv("k", "v")],
        flags: 1,
        ..Default::default()
    };
    let bare = SummaryDataPoint {
        time_unix_nano: TIME,
        ..Default::default()
    };
    let tables = encode_request(&request(vec![metric(
        "gc",
        Data::Summary(Summary {
            data_points: vec![point, bare],
        }),
    )]));
    let rows = &tables.summary;
    assert_eq!(rows.rows.len(), 2);
    let row = rows.row(0);
    assert_eq!(row.json("attributes"), serde_json::json!({"k": "v"}));
    assert_eq!(row.int4("flags"), 1);
    assert_eq!(row.json("exemplars"), serde_json::json!([]));
    assert_eq!(row.int8("count"), 4);
    assert_eq!(row.float8("sum"), 10.0);
    assert_eq!(row.float8_array("quantiles"), vec![0.0, 0.5, 1.0]);
    assert_eq!(row.float8_array("quantile_values"), vec![1.0, 2.5, 4.0]);
    assert_eq!(rows.row(1).float8("sum"), 0.0);
    assert_eq!(rows.row(1).float8_array("quantiles"), Vec::<f64>::new());
}

#[test]
fn points_past_2262_are_rejected_and_their_neighbours_kept() {
    let late = NumberDataPoint {
        time_unix_nano: u64::MAX,
        ..number_point(None)
    };
    let early_late_start = NumberDataPoint {
        start_time_unix_nano: i64::MAX as u64 + 1,
        ..number_point(None)
    };
    let last_instant = NumberDataPoint {
        time_unix_nano: i64::MAX as u64,
        ..number_point(None)
    };
    let tables = encode_request(&request(vec![metric(
        "g",
        gauge(vec![
            number_point(None),
            late,
            early_late_start,
            last_instant,
        ]),
    )]));
    assert_eq!(tables.gauge.rows.len(), 2);
    assert_eq!(tables.gauge.row(0).int8("time_unix_nano"), TIME as i64);
    assert_eq!(tables.gauge.row(1).int8("time_unix_nano"), i64::MAX);
    assert_eq!(tables.rejected, 2);
    assert_eq!(
        tables.first_rejection.as_deref(),
        Some("gauge point of metric \"g\": time_unix_nano 18446744073709551615 is after 2262-04-11, the last instant a bigint of nanoseconds holds")
    );
}

#[test]
fn counts_past_a_bigint_are_rejected() {
    let too_many = HistogramDataPoint {
        count: i64::MAX as u64 + 1,
        ..histogram_point()
    };
    let bucket_too_full = HistogramDataPoint {
        bucket_counts: vec![0, u64::MAX],
        ..histogram_point()
    };
    let at_most = HistogramDataPoint {
        count: i64::MAX as u64,
        ..histogram_point()
    };
    let histogram = Data::Histogram(Histogram {
        data_points: vec![too_many, bucket_too_full, at_most],
        aggregation_temporality: 2,
    });
    let tables = encode_request(&request(vec![metric("h", histogram)]));
    assert_eq!(tables.histogram.rows.len(), 1);
    assert_eq!(tables.histogram.row(0).int8("count"), i64::MAX);
    assert_eq!(tables.rejected, 2);
    assert_eq!(
        tables.first_rejection.as_deref(),
        Some("histogram point of metric \"h\": count 9223372036854775808 exceeds 9223372036854775807, the largest bigint")
    );

    let bucket_too_full = HistogramDataPoint {
        bucket_counts: vec![0, u64::MAX],
        ..histogram_point()
    };
    let histogram = Data::Histogram(Histogram {
        data_points: vec![bucket_too_full],
        aggregation_temporality: 2,
    });
    let tables = encode_request(&request(vec![metric("h", histogram)]));
    assert_eq!(
        tables.first_rejection.as_deref(),
        Some("histogram point of metric \"h\": bucket_counts[1] 18446744073709551615 exceeds 9223372036854775807, the largest bigint")
    );

    let zero_count = ExponentialHistogramDataPoint {
        zero_count: u64::MAX,
        ..exponential_point()
    };
    let negative = ExponentialHistogramDataPoint {
        negative: Some(Buckets {
            offset: 0,
            bucket_counts: vec![u64::MAX],
        }),
        ..exponential_point()
    };
    let summary = SummaryDataPoint {
        count: u64::MAX,
        ..Default::default()
    };
    let tables = encode_request(&request(vec![
        metric(
            "e",
            Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![zero_count, negative],
                aggregation_temporality: 1,
            }),
        ),
        metric(
            "s",
            Data::Summary(Summary {
                data_points: vec![summary],
            }),
        ),
    ]));
    assert_eq!(
        (
            tables.exponential_histogram.rows.len(),
            tables.summary.rows.len(),
            tables.rejected
        ),
        (0, 0, 3)
    );
    assert_eq!(
        tables.first_rejection.as_deref(),
        Some(
            "exponential histogram point of metric \"e\": zero_count 18446744073709551615 exceeds 9223372036854775807, the largest bigint"
        )
    );
}

#[test]
fn a_temporality_past_a_smallint_rejects_the_points() {
    let sum = Data::Sum(Sum {
        data_points: vec![number_point(None), number_point(None)],
        aggregation_temporality: 40_000,
        is_monotonic: true,
    });
    let gauge = gauge(vec![number_point(None)]);
    let tables = encode_request(&request(vec![metric("odd", sum), metric("fine", gauge)]));
    assert_eq!(
        (
            tables.sum.rows.len(),
            tables.gauge.rows.len(),
            tables.rejected
        ),
        (0, 1, 2)
    );
    assert_eq!(
        tables.first_rejection.as_deref(),
        Some(
            "sum point of metric \"odd\": aggregation_temporality 40000 is not a valid OTLP value"
        )
    );
}

#[test]
fn metrics_without_data_write_nothing() {
    let mut empty = metric("nothing", gauge(vec![]));
    empty.data = None;
    let tables = encode_request(&request(vec![empty, metric("empty gauge", gauge(vec![]))]));
    assert_eq!(tables.gauge.rows.len() + tables.rejected as usize, 0);
}

#[test]
fn resources_and_scopes_are_written_per_point() {
    let mut request = request(vec![metric("a", gauge(vec![number_point(None)]))]);
    let mut other = request.resource_metrics[0].clone();
    other.resource = None;
    other.schema_url = String::new();
    other.scope_metrics[0].scope = None;
    request.resource_metrics.push(other);
    let tables = encode_request(&request);
    assert_eq!(tables.gauge.rows.len(), 2);
    assert_eq!(tables.gauge.row(0).text("service_name"), "svc");
    let bare = tables.gauge.row(1);
    assert_eq!(
        (
            bare.text("service_name"),
            bare.text("resource_schema_url"),
            bare.text("scope_name")
        ),
        ("", "", "")
    );
    assert_eq!(bare.json("resource_attributes"), serde_json::json!({}));
    assert_eq!(bare.json("scope_attributes"), serde_json::json!({}));
}

// ---- Protobuf as prost reads it, beyond what prost writes ----

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A length-delimited field.
fn delimited(number: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(number << 3 | 2, &mut out);
    varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

fn fixed64(number: u64, value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(number << 3 | 1, &mut out);
    out.extend_from_slice(&value.to_le_bytes());
    out
}

fn varint_field(number: u64, value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(number << 3, &mut out);
    varint(value, &mut out);
    out
}

/// A request holding one metric of the given bytes, in the resource and scope `request` makes.
fn request_around(metric: &[u8]) -> Vec<u8> {
    let template = request(vec![]).resource_metrics.remove(0);
    let scope = [
        template.scope_metrics[0].encode_to_vec(),
        delimited(2, metric),
    ]
    .concat();
    let resource = template.resource.expect("a resource").encode_to_vec();
    delimited(1, &[delimited(1, &resource), delimited(2, &scope)].concat())
}

/// What the encoder makes of `otlp` equals what it makes of prost's reading of it, re-encoded.
fn same_as_prost(otlp: &[u8]) -> Tables {
    let canonical = ExportMetricsServiceRequest::decode(otlp)
        .expect("prost reads it")
        .encode_to_vec();
    assert_ne!(
        canonical, otlp,
        "the test input is not prost's own encoding"
    );
    let (ours, theirs) = (encode_tables(otlp), encode_tables(&canonical));
    for (a, b) in [
        (&ours.gauge, &theirs.gauge),
        (&ours.sum, &theirs.sum),
        (&ours.histogram, &theirs.histogram),
        (&ours.exponential_histogram, &theirs.exponential_histogram),
        (&ours.summary, &theirs.summary),
    ] {
        assert_eq!(a.rows, b.rows);
    }
    ours
}

#[test]
fn unpacked_repeated_fields_are_read_like_packed_ones() {
    // HistogramDataPoint: time, count, then bucket_counts and explicit_bounds one per field, mixed
    // with a packed run.
    let mut point = [
        fixed64(3, TIME),
        fixed64(4, 6),
        fixed64(6, 1),
        fixed64(7, 0.5f64.to_bits()),
    ]
    .concat();
    point.extend_from_slice(&delimited(
        6,
        &[2u64, 3]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    ));
    point.extend_from_slice(&fixed64(7, 10f64.to_bits()));
    let histogram = [delimited(1, &point), varint_field(2, 2)].concat();
    let metric = [delimited(1, b"h"), delimited(9, &histogram)].concat();
    let tables = same_as_prost(&request_around(&metric));
    let row = tables.histogram.row(0);
    assert_eq!(row.int8_array("bucket_counts"), vec![1, 2, 3]);
    assert_eq!(row.float8_array("explicit_bounds"), vec![0.5, 10.0]);

    // Buckets: offset -1 (zigzag 1), counts 7 unpacked then [8, 9] packed.
    let buckets = [
        varint_field(1, 1),
        varint_field(2, 7),
        delimited(2, &[8, 9]),
    ]
    .concat();
    let point = [fixed64(3, TIME), delimited(8, &buckets), varint_field(6, 3)].concat();
    let metric = [delimited(1, b"e"), delimited(10, &delimited(1, &point))].concat();
    let tables = same_as_prost(&request_around(&metric));
    let row = tables.exponential_histogram.row(0);
    assert_eq!(row.int4("positive_offset"), -1);
    assert_eq!(row.int4("scale"), -2);
    assert_eq!(row.int8_array("positive_bucket_counts"), vec![7, 8, 9]);
}

#[test]
fn repeated_oneof_and_message_fields_merge_as_prost_merges_them() {
    let point = |value: f64| [fixed64(3, TIME), fixed64(4, value.to_bits())].concat();
    let sum = |value: f64, temporality: u64| {
        [delimited(1, &point(value)), varint_field(2, temporality)].concat()
    };
    // A gauge, then a sum, then another sum: the sum replaces the gauge, and the two sums merge,
    // the last temporality winning.
    let metric = [
        delimited(1, b"m"),
        delimited(5, &delimited(1, &point(1.0))),
        delimited(7, &sum(2.0, 1)),
        delimited(7, &[sum(3.0, 2), varint_field(3, 1)].concat()),
    ]
    .concat();
    let tables = same_as_prost(&request_around(&metric));
    assert_eq!((tables.gauge.rows.len(), tables.sum.rows.len()), (0, 2));
    assert_eq!(tables.sum.row(0).float8("value_double"), 2.0);
    assert_eq!(tables.sum.row(1).int2("aggregation_temporality"), 2);
    assert!(tables.sum.row(0).bool("is_monotonic"));

    // A point's value oneof: the last one wins; two `positive` buckets merge.
    let number = [
        fixed64(3, TIME),
        fixed64(6, 5),
        fixed64(4, 2.5f64.to_bits()),
    ]
    .concat();
    let metric = [delimited(1, b"g"), delimited(5, &delimited(1, &number))].concat();
    let tables = same_as_prost(&request_around(&metric));
    assert!(tables.gauge.row(0).is_null("value_int"));
    assert_eq!(tables.gauge.row(0).float8("value_double"), 2.5);

    let point = [
        fixed64(3, TIME),
        delimited(8, &[varint_field(1, 4), delimited(2, &[1])].concat()),
        delimited(8, &[varint_field(1, 3), delimited(2, &[2])].concat()),
    ]
    .concat();
    let metric = [delimited(1, b"e"), delimited(10, &delimited(1, &point))].concat();
    let tables = same_as_prost(&request_around(&metric));
    let row = tables.exponential_histogram.row(0);
    assert_eq!(
        (
            row.int4("positive_offset"),
            row.int8_array("positive_bucket_counts")
        ),
        (-2, vec![1, 2])
    );
}

#[test]
fn an_empty_request_has_no_rows() {
    let tables = encode_tables(&[]);
    assert_eq!(
        tables.gauge.rows.len() + tables.sum.rows.len() + tables.rejected as usize,
        0
    );
}

#[test]
fn malformed_requests_are_errors() {
    assert_eq!(
        encode(&[0xff, 0xff, 0xff]).err().map(|e| e.to_string()),
        Some("ExportMetricsServiceRequest: truncated varint".into())
    );
    let otlp = request(vec![metric("g", gauge(vec![number_point(None)]))]).encode_to_vec();
    let error = encode(&otlp[..otlp.len() - 3]).err().expect("truncated");
    assert_eq!(error.reason, "field runs past the end of its message");

    let mut otlp = request(vec![metric("MARKER", gauge(vec![number_point(None)]))]).encode_to_vec();
    let at = otlp
        .windows(6)
        .position(|w| w == b"MARKER")
        .expect("marker present");
    otlp[at] = 0xff;
    assert_eq!(
        encode(&otlp).err().map(|e| e.to_string()),
        Some("Metric.name: string is not valid UTF-8".into())
    );

    // A time sent as a varint, and a packed run of bucket counts that ends inside a count.
    let point = varint_field(3, 1);
    let metric = [delimited(1, b"g"), delimited(5, &delimited(1, &point))].concat();
    assert_eq!(
        encode(&request_around(&metric))
            .err()
            .map(|e| e.to_string()),
        Some("NumberDataPoint.time_unix_nano: wrong wire type, expected fixed64".into())
    );
    let point = delimited(6, &[0; 12]);
    let metric = [delimited(1, b"h"), delimited(9, &delimited(1, &point))].concat();
    assert_eq!(
        encode(&request_around(&metric))
            .err()
            .map(|e| e.to_string()),
        Some("HistogramDataPoint.bucket_counts: field runs past the end of its message".into())
    );
}
