use super::*;
use crate::sink::Rows;
use crate::testdata::{kv, string_kv, value};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric::Data as OtlpData,
    number_data_point, summary_data_point::ValueAtQuantile, Exemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::{json, Value as Json};

const TIME: u64 = 1_700_000_000_123_456_789;
const START: u64 = TIME - 60_000_000_000;

// ---- A reader of the Native blocks written, for the column types the metric tables use ----

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> &'a [u8] {
        let bytes = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        bytes
    }

    fn varuint(&mut self) -> u64 {
        let (mut value, mut shift) = (0u64, 0);
        loop {
            let byte = self.take(1)[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return value;
            }
            shift += 7;
        }
    }

    fn string(&mut self) -> String {
        let len = self.varuint() as usize;
        String::from_utf8(self.take(len).to_vec()).expect("UTF-8")
    }

    fn fixed<const N: usize>(&mut self) -> [u8; N] {
        self.take(N).try_into().expect("N bytes")
    }

    fn offsets(&mut self, rows: usize) -> Vec<usize> {
        (0..rows)
            .map(|_| u64::from_le_bytes(self.fixed()) as usize)
            .collect()
    }

    /// `rows` values of type `ty`; a map row is its [key, value] pairs in order.
    fn column(&mut self, ty: &str, rows: usize) -> Vec<Json> {
        if let Some(inner) = ty.strip_prefix("Array(").and_then(|t| t.strip_suffix(')')) {
            let offsets = self.offsets(rows);
            let items = self.column(inner, offsets.last().copied().unwrap_or(0));
            return split(&offsets, |range| Json::from(items[range].to_vec()));
        }
        if ty == "Map(String, String)" {
            let offsets = self.offsets(rows);
            let total = offsets.last().copied().unwrap_or(0);
            let keys = self.column("String", total);
            let values = self.column("String", total);
            return split(&offsets, |range| {
                range.map(|i| json!([keys[i], values[i]])).collect()
            });
        }
        (0..rows)
            .map(|_| match ty {
                "String" => json!(self.string()),
                "UInt64" => json!(u64::from_le_bytes(self.fixed())),
                "DateTime64(9)" => json!(i64::from_le_bytes(self.fixed())),
                "Float64" => json!(f64::from_le_bytes(self.fixed())),
                "Int32" => json!(i32::from_le_bytes(self.fixed())),
                "UInt32" => json!(u32::from_le_bytes(self.fixed())),
                "Bool" => json!(self.fixed::<1>()[0] == 1),
                other => panic!("no reader for {other}"),
            })
            .collect()
    }
}

fn split(offsets: &[usize], row: impl Fn(std::ops::Range<usize>) -> Json) -> Vec<Json> {
    let mut start = 0;
    offsets
        .iter()
        .map(|&end| {
            let value = row(start..end);
            start = end;
            value
        })
        .collect()
}

/// A table's block, column by column: each column's name and its values, one per row, checking
/// the names and types against the table's column list.
fn columns(encoded: &Encoded<Blocks>, table: Table) -> Vec<(&'static str, Vec<Json>)> {
    let block = encoded.rows.block(table).expect("a block");
    let mut reader = Reader { buf: block, pos: 0 };
    let count = reader.varuint() as usize;
    let rows = reader.varuint() as usize;
    assert_eq!(count, table.columns().len(), "{table:?}");
    let columns = table
        .columns()
        .iter()
        .map(|&(name, ty)| {
            assert_eq!((reader.string(), reader.string()), (name.into(), ty.into()));
            (name, reader.column(ty, rows))
        })
        .collect();
    assert_eq!(
        reader.pos,
        block.len(),
        "the block ends with its last column"
    );
    columns
}

/// One row of a table as a JSON object of its columns.
fn row(encoded: &Encoded<Blocks>, table: Table, at: usize) -> Json {
    columns(encoded, table)
        .into_iter()
        .map(|(name, values)| (name.to_owned(), values[at].clone()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn encode_request(request: &ExportMetricsServiceRequest) -> Encoded<Blocks> {
    encode(&request.encode_to_vec()).expect("valid request")
}

// ---- Requests ----

fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    string_kv("service.name", "svc"),
                    kv("host.cpus", value(Value::IntValue(4))),
                    string_kv("service.name", "second"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    version: "1.2".into(),
                    attributes: vec![string_kv("z", "1"), string_kv("a", "2")],
                    dropped_attributes_count: 3,
                }),
                metrics,
                schema_url: "https://scope".into(),
            }],
            schema_url: "https://resource".into(),
        }],
    }
}

fn metric(name: &str, data: OtlpData) -> Metric {
    Metric {
        name: name.into(),
        description: "what it counts".into(),
        unit: "ms".into(),
        metadata: vec![string_kv("meta", "not stored")],
        data: Some(data),
    }
}

fn exemplar(number: Option<exemplar::Value>) -> Exemplar {
    Exemplar {
        filtered_attributes: vec![
            string_kv("user", "u1"),
            kv("n", value(Value::BoolValue(true))),
        ],
        time_unix_nano: TIME - 1,
        span_id: vec![0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef],
        trace_id: vec![0xfe; 16],
        value: number,
    }
}

fn number_point(value: Option<number_data_point::Value>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: vec![string_kv("b", "2"), string_kv("a", "1")],
        start_time_unix_nano: START,
        time_unix_nano: TIME,
        flags: 1,
        value,
        ..Default::default()
    }
}

fn gauge(points: Vec<NumberDataPoint>) -> OtlpData {
    OtlpData::Gauge(Gauge {
        data_points: points,
    })
}

/// The columns every table starts with, for a point of `request()` with `number_point`'s
/// attributes, times and flags.
fn common(name: &str) -> Json {
    json!({
        "ResourceAttributes": [["host.cpus", "4"], ["service.name", "svc"], ["service.name", "second"]],
        "ResourceSchemaUrl": "https://resource",
        "ScopeName": "lib",
        "ScopeVersion": "1.2",
        "ScopeAttributes": [["a", "2"], ["z", "1"]],
        "ScopeDroppedAttrCount": 3,
        "ScopeSchemaUrl": "https://scope",
        "ServiceName": "svc",
        "MetricName": name,
        "MetricDescription": "what it counts",
        "MetricUnit": "ms",
        "Attributes": [["a", "1"], ["b", "2"]],
        "StartTimeUnix": START,
        "TimeUnix": TIME,
        "Flags": 1,
    })
}

/// A whole row: the columns of `common(name)`, the point type's own, and the exemplars' for
/// exemplars of `exemplar()` with these values, if the table has them.
fn expected(name: &str, own: Json, exemplar_values: Option<&[f64]>) -> Json {
    let mut row = common(name);
    let object = row.as_object_mut().expect("an object");
    let n = exemplar_values.map_or(0, <[f64]>::len);
    let exemplars = exemplar_values.map(|values| {
        json!({
            "Exemplars.FilteredAttributes": vec![json!([["n", "true"], ["user", "u1"]]); n],
            "Exemplars.TimeUnix": vec![TIME - 1; n],
            "Exemplars.Value": values,
            "Exemplars.SpanId": vec!["0123456789abcdef"; n],
            "Exemplars.TraceId": vec!["fe".repeat(16); n],
        })
    });
    for more in std::iter::once(own).chain(exemplars) {
        object.extend(more.as_object().expect("an object").clone());
    }
    row
}

// ---- Tests ----

#[test]
fn an_empty_request_has_no_block() {
    let encoded = encode(&[]).expect("valid");
    assert_eq!((encoded.rows.rows(), encoded.rejected), (0, 0));
    for table in Table::ALL {
        assert!(encoded.rows.block(table).is_none(), "{table:?}");
    }
    let encoded = encode_request(&request(vec![]));
    assert_eq!(encoded.rows.rows(), 0);
}

#[test]
fn one_point_of_each_type_makes_one_block_per_table() {
    let encoded = encode_request(&request(vec![
        metric(
            "g",
            gauge(vec![NumberDataPoint {
                exemplars: vec![exemplar(Some(exemplar::Value::AsInt(-3)))],
                ..number_point(Some(number_data_point::Value::AsDouble(1.5)))
            }]),
        ),
        metric(
            "s",
            OtlpData::Sum(Sum {
                data_points: vec![number_point(Some(number_data_point::Value::AsInt(7)))],
                aggregation_temporality: 2,
                is_monotonic: true,
            }),
        ),
        metric(
            "h",
            OtlpData::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: vec![string_kv("b", "2"), string_kv("a", "1")],
                    start_time_unix_nano: START,
                    time_unix_nano: TIME,
                    count: 6,
                    sum: Some(12.5),
                    bucket_counts: vec![1, 2, 3],
                    explicit_bounds: vec![1.0, 5.0],
                    exemplars: vec![
                        exemplar(Some(exemplar::Value::AsDouble(0.5))),
                        exemplar(None),
                    ],
                    flags: 1,
                    min: Some(0.5),
                    max: Some(9.0),
                }],
                aggregation_temporality: 1,
            }),
        ),
        metric(
            "e",
            OtlpData::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    attributes: vec![string_kv("b", "2"), string_kv("a", "1")],
                    start_time_unix_nano: START,
                    time_unix_nano: TIME,
                    count: 10,
                    sum: Some(-4.0),
                    scale: -2,
                    zero_count: 1,
                    positive: Some(Buckets {
                        offset: -1,
                        bucket_counts: vec![4, 5],
                    }),
                    negative: Some(Buckets {
                        offset: 3,
                        bucket_counts: vec![0],
                    }),
                    flags: 1,
                    exemplars: vec![],
                    min: None,
                    max: Some(8.0),
                    zero_threshold: 0.001,
                }],
                aggregation_temporality: 2,
            }),
        ),
        metric(
            "q",
            OtlpData::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    attributes: vec![string_kv("b", "2"), string_kv("a", "1")],
                    start_time_unix_nano: START,
                    time_unix_nano: TIME,
                    count: u64::MAX,
                    sum: 3.25,
                    quantile_values: vec![
                        ValueAtQuantile {
                            quantile: 0.5,
                            value: 1.0,
                        },
                        ValueAtQuantile {
                            quantile: 0.99,
                            value: 2.0,
                        },
                    ],
                    flags: 1,
                }],
            }),
        ),
    ]));
    assert_eq!((encoded.rows.rows(), encoded.rejected), (5, 0));
    let expect = [
        (
            Table::MetricsGauge,
            expected("g", json!({"Value": 1.5}), Some(&[-3.0])),
        ),
        (
            Table::MetricsSum,
            expected(
                "s",
                json!({"Value": 7.0, "AggregationTemporality": 2, "IsMonotonic": true}),
                Some(&[]),
            ),
        ),
        (
            Table::MetricsHistogram,
            expected(
                "h",
                json!({
                    "Count": 6, "Sum": 12.5, "Min": 0.5, "Max": 9.0, "AggregationTemporality": 1,
                    "BucketCounts": [1, 2, 3], "ExplicitBounds": [1.0, 5.0]
                }),
                Some(&[0.5, 0.0]),
            ),
        ),
        (
            Table::MetricsExponentialHistogram,
            expected(
                "e",
                json!({
                    "Count": 10, "Sum": -4.0, "Min": 0.0, "Max": 8.0, "AggregationTemporality": 2,
                    "Scale": -2, "ZeroCount": 1, "PositiveOffset": -1, "PositiveBucketCounts": [4, 5],
                    "NegativeOffset": 3, "NegativeBucketCounts": [0]
                }),
                Some(&[]),
            ),
        ),
        (
            Table::MetricsSummary,
            expected(
                "q",
                json!({
                    "Count": u64::MAX, "Sum": 3.25,
                    "ValueAtQuantiles.Quantile": [0.5, 0.99], "ValueAtQuantiles.Value": [1.0, 2.0]
                }),
                None,
            ),
        ),
    ];
    for (table, want) in expect {
        assert_eq!(row(&encoded, table, 0), want, "{table:?}");
    }
}

#[test]
fn points_past_2262_are_rejected_and_their_neighbours_kept() {
    let late_start = NumberDataPoint {
        start_time_unix_nano: i64::MAX as u64 + 1,
        ..number_point(None)
    };
    let late_exemplar = NumberDataPoint {
        exemplars: vec![Exemplar {
            time_unix_nano: u64::MAX,
            ..exemplar(None)
        }],
        ..number_point(None)
    };
    let last_instant = NumberDataPoint {
        time_unix_nano: i64::MAX as u64,
        ..number_point(None)
    };
    let late_summary = SummaryDataPoint {
        time_unix_nano: u64::MAX,
        ..Default::default()
    };
    let encoded = encode_request(&request(vec![
        metric(
            "g",
            gauge(vec![
                number_point(None),
                late_start,
                late_exemplar,
                last_instant,
            ]),
        ),
        metric(
            "q",
            OtlpData::Summary(Summary {
                data_points: vec![late_summary],
            }),
        ),
    ]));
    assert_eq!((encoded.rows.rows(), encoded.rejected), (2, 3));
    let times = &columns(&encoded, Table::MetricsGauge)[13];
    assert_eq!(times, &("TimeUnix", vec![json!(TIME), json!(i64::MAX)]));
    assert!(encoded.rows.block(Table::MetricsSummary).is_none());
    assert_eq!(
        encoded.first_rejection.as_deref(),
        Some("gauge point 1 of metric \"g\": start_time_unix_nano 9223372036854775808 is after 2262-04-11, the last instant DateTime64(9) holds")
    );

    let only_exemplar = encode_request(&request(vec![metric(
        "late",
        OtlpData::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                exemplars: vec![
                    exemplar(None),
                    Exemplar {
                        time_unix_nano: u64::MAX,
                        ..exemplar(None)
                    },
                ],
                ..Default::default()
            }],
            aggregation_temporality: 2,
        }),
    )]));
    assert_eq!(
        only_exemplar.first_rejection.as_deref(),
        Some("histogram point 0 of metric \"late\": an exemplar's time_unix_nano 18446744073709551615 is after 2262-04-11, the last instant DateTime64(9) holds")
    );
}

#[test]
fn map_keys_are_sorted_and_pairs_of_one_key_keep_wire_order() {
    let point = |attributes| NumberDataPoint {
        attributes,
        ..number_point(None)
    };
    let encoded = encode_request(&request(vec![metric(
        "g",
        gauge(vec![
            point(vec![
                string_kv("k", "first"),
                string_kv("b", ""),
                string_kv("a", "x"),
                string_kv("k", ""),
                string_kv("k", "third"),
                string_kv("B", "upper"),
            ]),
            point(vec![
                string_kv("a", "x"),
                string_kv("k", "first"),
                string_kv("B", "upper"),
                string_kv("k", ""),
                string_kv("b", ""),
                string_kv("k", "third"),
            ]),
            point(vec![]),
        ]),
    )]));
    let sorted = json!([
        ["B", "upper"],
        ["a", "x"],
        ["b", ""],
        ["k", "first"],
        ["k", ""],
        ["k", "third"]
    ]);
    assert_eq!(
        columns(&encoded, Table::MetricsGauge)[11],
        ("Attributes", vec![sorted.clone(), sorted, json!([])])
    );
}

#[test]
fn service_name_is_the_first_on_the_wire_whatever_its_type() {
    let mut request = request(vec![metric("g", gauge(vec![number_point(None)]))]);
    let mut other = request.resource_metrics[0].clone();
    other.resource = Some(Resource {
        attributes: vec![
            kv("service.name", value(Value::IntValue(12))),
            string_kv("service.name", "a"),
        ],
        ..Default::default()
    });
    other.scope_metrics[0].scope = None;
    other.schema_url = String::new();
    let mut bare = other.clone();
    bare.resource = None;
    request.resource_metrics.extend([other, bare]);
    let columns = columns(&encode_request(&request), Table::MetricsGauge);
    let column = |name: &str| {
        columns
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, values)| values.clone())
            .expect("a column")
    };
    assert_eq!(
        column("ServiceName"),
        vec![json!("svc"), json!("12"), json!("")]
    );
    assert_eq!(
        column("ResourceAttributes")[1],
        json!([["service.name", "12"], ["service.name", "a"]])
    );
    assert_eq!(
        (
            column("ScopeAttributes")[1].clone(),
            column("ScopeDroppedAttrCount")[1].clone()
        ),
        (json!([]), json!(0))
    );
    assert_eq!(column("ResourceSchemaUrl")[2], json!(""));
}

#[test]
fn exemplar_ids_are_hex_and_absent_ones_zeros() {
    let exemplars = vec![
        Exemplar {
            span_id: vec![],
            trace_id: vec![],
            ..exemplar(None)
        },
        Exemplar {
            span_id: vec![0xab],
            trace_id: vec![0; 16],
            ..exemplar(None)
        },
    ];
    let encoded = encode_request(&request(vec![metric(
        "g",
        gauge(vec![NumberDataPoint {
            exemplars,
            ..number_point(None)
        }]),
    )]));
    let row = row(&encoded, Table::MetricsGauge, 0);
    assert_eq!(
        (&row["Exemplars.SpanId"], &row["Exemplars.TraceId"]),
        (
            &json!(["0".repeat(16), "ab"]),
            &json!(["0".repeat(32), "0".repeat(32)])
        )
    );
    // A point without a value is 0, as contrib's getValue makes it.
    assert_eq!(row["Value"], json!(0.0));
}

#[test]
fn metrics_without_data_write_nothing() {
    let mut empty = metric("nothing", gauge(vec![]));
    empty.data = None;
    let encoded = encode_request(&request(vec![empty, metric("no points", gauge(vec![]))]));
    assert_eq!((encoded.rows.rows(), encoded.rejected), (0, 0));
}

#[test]
fn garbage_is_an_error() {
    assert!(encode(&[0xff, 0xff, 0xff]).is_err());
    // A metric whose gauge is not a message.
    let metric = [0x2a, 0x01, 0xff];
    let mut scope_metrics = vec![0x12, metric.len() as u8];
    scope_metrics.extend_from_slice(&metric);
    let mut resource_metrics = vec![0x12, scope_metrics.len() as u8];
    resource_metrics.extend_from_slice(&scope_metrics);
    let mut request = vec![0x0a, resource_metrics.len() as u8];
    request.extend_from_slice(&resource_metrics);
    assert!(encode(&request).is_err());
}
