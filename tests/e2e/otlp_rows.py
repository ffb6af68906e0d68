"""The rows otelstore must write for an OTLP logs or metrics request, derived from the protobuf that
was sent, following schema/postgres/0004_logs.sql, 0005_metrics.sql and the jsonb encoding of
attribute values in schema/README.md. Used by test_logs.py and test_metrics.py: the SDK exporters are
wrapped so that every request they send is recorded (encoded with the SDK's own OTLP encoder), and
what PostgreSQL holds is compared with these rows column by column.
"""

from __future__ import annotations

import base64
import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from payloads import metric_points, otlp_items
from row_diff import compare_rows  # noqa: F401 (re-exported for the tests)
from test_traces import fetch_rows  # noqa: F401 (re-exported for the tests)

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Every column of schema/postgres/0004_logs.sql.
LOG_COLUMNS = [
    "time", "time_unix_nano", "observed_time_unix_nano", "severity_number", "severity_text", "body",
    "attributes", "dropped_attributes_count", "flags", "trace_id", "span_id", "event_name",
    "service_name", "resource_attributes", "resource_schema_url", "scope_name", "scope_version",
    "scope_attributes", "scope_schema_url",
]

# The columns every table of schema/postgres/0005_metrics.sql starts with.
METRIC_COMMON_COLUMNS = [
    "metric_name", "metric_description", "metric_unit", "metric_metadata", "service_name",
    "resource_attributes", "resource_schema_url", "scope_name", "scope_version", "scope_attributes",
    "scope_schema_url", "attributes", "start_time_unix_nano", "time", "time_unix_nano", "flags",
    "exemplars",
]
METRIC_COLUMNS = {
    "metrics_gauge": METRIC_COMMON_COLUMNS + ["value_double", "value_int"],
    "metrics_sum": METRIC_COMMON_COLUMNS + ["value_double", "value_int", "aggregation_temporality", "is_monotonic"],
    "metrics_histogram": METRIC_COMMON_COLUMNS + [
        "count", "sum", "min", "max", "bucket_counts", "explicit_bounds", "aggregation_temporality"],
    "metrics_exponential_histogram": METRIC_COMMON_COLUMNS + [
        "count", "sum", "min", "max", "scale", "zero_count", "zero_threshold", "positive_offset",
        "positive_bucket_counts", "negative_offset", "negative_bucket_counts", "aggregation_temporality"],
    "metrics_summary": METRIC_COMMON_COLUMNS + ["count", "sum", "quantiles", "quantile_values"],
}
METRIC_TABLES = list(METRIC_COLUMNS)
# Metric.data oneof field -> table.
METRIC_TABLE_OF = {
    "gauge": "metrics_gauge",
    "sum": "metrics_sum",
    "histogram": "metrics_histogram",
    "exponential_histogram": "metrics_exponential_histogram",
    "summary": "metrics_summary",
}


# --------------------------------------------------------------------------- values


def time_of(ns: int) -> datetime:
    """timestamptz holds microseconds: the nanoseconds truncated."""
    return EPOCH + timedelta(microseconds=ns // 1000)


def signed32(value: int) -> int:
    """A fixed32 as PostgreSQL's integer holds it: its signed bit pattern."""
    return value - (1 << 32) if value >= 1 << 31 else value


def double_jsonb(value: float) -> Any:
    if math.isnan(value):
        return {"$double": "NaN"}
    if math.isinf(value):
        return {"$double": "Infinity" if value > 0 else "-Infinity"}
    return float(value)


def anyvalue_jsonb(value: AnyValue) -> Any:
    """An OTLP AnyValue as schema/README.md stores it in jsonb."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return double_jsonb(value.double_value)
    if kind == "bytes_value":
        return {"$bytes": base64.b64encode(value.bytes_value).decode("ascii")}
    if kind == "array_value":
        return [anyvalue_jsonb(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return kvs_jsonb(value.kvlist_value.values, nested=True)
    raise AssertionError(f"no jsonb encoding for AnyValue kind {kind}")


def kvs_jsonb(kvs: Iterable, nested: bool = False) -> dict:
    """A KeyValue list as a jsonb object; the last of duplicate keys wins. In a map value (`nested`)
    a key starting with '$' gets another '$', so that a map never looks like a tagged value; the keys
    of an attribute list itself (attributes, metadata, filtered_attributes) are stored as they are."""
    return {("$" + kv.key if nested and kv.key.startswith("$") else kv.key): anyvalue_jsonb(kv.value) for kv in kvs}


def service_name(resource) -> str:
    """The first string service.name resource attribute, as service_name holds it."""
    return next((kv.value.string_value for kv in resource.attributes
                 if kv.key == "service.name" and kv.value.WhichOneof("value") == "string_value"), "")


def canonical(value: Any) -> str:
    """A hashable, order-independent form of a decoded jsonb value (for row keys)."""
    return json.dumps(value, sort_keys=True)


# --------------------------------------------------------------------------- logs


def expected_log_rows(requests: Iterable[ExportLogsServiceRequest]) -> list[dict]:
    """One row per log record of the requests, with every column of the logs table."""
    rows = []
    for rl, sl, lr in otlp_items(requests, "logs"):
        rows.append({
            "time": time_of(lr.time_unix_nano or lr.observed_time_unix_nano),
            "time_unix_nano": lr.time_unix_nano,
            "observed_time_unix_nano": lr.observed_time_unix_nano,
            "severity_number": int(lr.severity_number),
            "severity_text": lr.severity_text,
            "body": anyvalue_jsonb(lr.body) if lr.HasField("body") else None,
            "attributes": kvs_jsonb(lr.attributes),
            "dropped_attributes_count": lr.dropped_attributes_count,
            "flags": signed32(lr.flags),
            "trace_id": lr.trace_id or None,
            "span_id": lr.span_id or None,
            "event_name": lr.event_name,
            "service_name": service_name(rl.resource),
            "resource_attributes": kvs_jsonb(rl.resource.attributes),
            "resource_schema_url": rl.schema_url,
            "scope_name": sl.scope.name,
            "scope_version": sl.scope.version,
            "scope_attributes": kvs_jsonb(sl.scope.attributes),
            "scope_schema_url": sl.schema_url,
        })
    return rows


# --------------------------------------------------------------------------- metrics


def exemplar_jsonb(ex) -> dict:
    kind = ex.WhichOneof("value")
    if kind == "as_int":
        value: Any = ex.as_int
    elif kind == "as_double":
        value = double_jsonb(ex.as_double)
    else:
        value = None
    return {
        "time_unix_nano": ex.time_unix_nano,
        "value": value,
        "trace_id": ex.trace_id.hex(),
        "span_id": ex.span_id.hex(),
        "filtered_attributes": kvs_jsonb(ex.filtered_attributes),
    }


def expected_metric_rows(requests: Iterable[ExportMetricsServiceRequest]) -> dict[str, list[dict]]:
    """Table name -> one row per data point of the requests, with every column of that table."""
    out: dict[str, list[dict]] = {t: [] for t in METRIC_TABLES}
    for rm, sm, m, kind, data, pt in metric_points(requests):
        row = {
            "metric_name": m.name,
            "metric_description": m.description,
            "metric_unit": m.unit,
            "metric_metadata": kvs_jsonb(m.metadata),
            "service_name": service_name(rm.resource),
            "resource_attributes": kvs_jsonb(rm.resource.attributes),
            "resource_schema_url": rm.schema_url,
            "scope_name": sm.scope.name,
            "scope_version": sm.scope.version,
            "scope_attributes": kvs_jsonb(sm.scope.attributes),
            "scope_schema_url": sm.schema_url,
            "attributes": kvs_jsonb(pt.attributes),
            "start_time_unix_nano": pt.start_time_unix_nano,
            "time": time_of(pt.time_unix_nano),
            "time_unix_nano": pt.time_unix_nano,
            "flags": signed32(pt.flags),
            "exemplars": [exemplar_jsonb(e) for e in pt.exemplars] if kind != "summary" else [],
        }
        if kind in ("gauge", "sum"):
            which = pt.WhichOneof("value")
            row["value_int"] = pt.as_int if which == "as_int" else None
            row["value_double"] = pt.as_double if which == "as_double" else None
        if kind == "sum":
            row["aggregation_temporality"] = int(data.aggregation_temporality)
            row["is_monotonic"] = data.is_monotonic
        if kind in ("histogram", "exponential_histogram"):
            row["count"] = pt.count
            row["sum"] = pt.sum if pt.HasField("sum") else None
            row["min"] = pt.min if pt.HasField("min") else None
            row["max"] = pt.max if pt.HasField("max") else None
            row["aggregation_temporality"] = int(data.aggregation_temporality)
        if kind == "histogram":
            row["bucket_counts"] = list(pt.bucket_counts)
            row["explicit_bounds"] = [float(b) for b in pt.explicit_bounds]
        if kind == "exponential_histogram":
            row["scale"] = pt.scale
            row["zero_count"] = pt.zero_count
            row["zero_threshold"] = float(pt.zero_threshold)
            row["positive_offset"] = pt.positive.offset
            row["positive_bucket_counts"] = list(pt.positive.bucket_counts)
            row["negative_offset"] = pt.negative.offset
            row["negative_bucket_counts"] = list(pt.negative.bucket_counts)
        if kind == "summary":
            row["count"] = pt.count
            row["sum"] = float(pt.sum)
            row["quantiles"] = [float(q.quantile) for q in pt.quantile_values]
            row["quantile_values"] = [float(q.value) for q in pt.quantile_values]
        table = METRIC_TABLE_OF[kind]
        assert set(row) == set(METRIC_COLUMNS[table]), (table, set(row) ^ set(METRIC_COLUMNS[table]))
        out[table].append(row)
    return out


def metric_key(row: dict) -> tuple:
    """A data point's identity within one test: one point per series per collection."""
    return (row["metric_name"], canonical(row["attributes"]), row["time_unix_nano"])
