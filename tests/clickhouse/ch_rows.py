"""The rows otelstore must write to ClickHouse for OTLP requests, derived from the protobuf that was
sent, and the stored rows read back for comparison.

The values follow the contrib clickhouseexporter v0.149.0 (exporter_traces.go, exporter_logs.go,
internal/metrics/*.go), whose tables schema/clickhouse/ keeps:

* ids are lower-case hex; a span's or log record's empty (or all-zero) id is "", an exemplar's is
  zeros (pdata's ids are fixed arrays there, traceutil's *ToHexOrEmptyString elsewhere);
* SpanKind and StatusCode are pdata's names ("Server", "Error", ...);
* ServiceName is AsString() of the first service.name resource attribute, "" without one;
* attribute maps hold every pair, each value as pdata's Value.AsString() (`as_string` below), keys
  sorted as clickhouse-go's orderedmap sorts them;
* a log record's Timestamp is its time, or its observed time when that is 0; Body is AsString() of
  the body; TraceFlags the low byte of flags;
* a metric point's Value is a Float64 (an int converted, 0 without a value); a histogram's absent
  sum, min or max is 0; metric metadata and zero_threshold have no column.

Where otelstore deliberately differs (the module docs of rust/core/src/sink/clickhouse/*.rs), the
expectation here is otelstore's and says so.

AsString() follows pdata v1.62.0, which the collector core v0.156.0 brings (and so the contrib
distribution we build, and every later contrib release), as gostring.rs does: a non-finite double
is "NaN", "Infinity" or "-Infinity", and JSON of maps and arrays does not escape <, > and &.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections import defaultdict
from typing import Any, Iterable

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from payloads import metric_points, otlp_items

SPAN_KINDS = {0: "Unspecified", 1: "Internal", 2: "Server", 3: "Client", 4: "Producer", 5: "Consumer"}
STATUS_CODES = {0: "Unset", 1: "Ok", 2: "Error"}


# --------------------------------------------------------------------------- pdata's AsString


def go_float(f: float) -> str:
    """A finite double as Go's encoding/json writes it (pdata's float64AsString): the shortest
    round-trip digits, plain notation unless the magnitude is below 1e-6 or at least 1e21 ("1e-7",
    "1.5e+21")."""
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    sign = "-" if f < 0 else ""
    m = re.fullmatch(r"(\d+)(?:\.(\d+))?(?:e([+-]\d+))?", repr(abs(f)))
    whole, frac, exp = m.group(1), m.group(2) or "", int(m.group(3) or 0)
    digits = (whole + frac).lstrip("0")
    # value = 0.<digits> * 10**point
    point = len(whole) + exp - (len(whole + frac) - len((whole + frac).lstrip("0")))
    digits = digits.rstrip("0") or "0"
    if abs(f) < 1e-6 or abs(f) >= 1e21:
        e = point - 1
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if e < 0 else '+'}{abs(e)}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _raw(value: AnyValue) -> Any:
    """pdata's Value.AsRaw(), as encoding/json sees it (bytes become base64 strings there)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_raw(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _raw(kv.value) for kv in value.kvlist_value.values}  # the last duplicate wins
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind)


class _NotFinite(Exception):
    pass


def _json(raw: Any) -> str:
    """encoding/json of an AsRaw() value: map keys sorted, Go's number and string forms."""
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise _NotFinite
        return go_float(raw)
    if isinstance(raw, str):
        s = json.dumps(raw, ensure_ascii=False)
        s = s.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        return s
    if isinstance(raw, list):
        return "[" + ",".join(_json(v) for v in raw) + "]"
    return "{" + ",".join(f"{_json(k)}:{_json(raw[k])}" for k in sorted(raw)) + "}"


def non_finite(f: float) -> str:
    """AsString() of a NaN or an infinity."""
    return "NaN" if math.isnan(f) else ("Infinity" if f > 0 else "-Infinity")


def as_string(value: AnyValue) -> str:
    """pdata's Value.AsString() of an OTLP AnyValue."""
    kind = value.WhichOneof("value")
    if kind is None:
        return ""
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        f = value.double_value
        return go_float(f) if math.isfinite(f) else non_finite(f)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    try:
        return _json(_raw(value))
    except _NotFinite:
        return ""  # encoding/json refuses NaN and infinities; AsString keeps ""


def attributes(kvs: Iterable) -> list[list[str]]:
    """An attribute list as contrib's Map column holds it: every pair, values AsString(), sorted by
    key (a stable sort here; contrib's is not, which only matters for duplicate keys)."""
    return sorted(([kv.key, as_string(kv.value)] for kv in kvs), key=lambda pair: pair[0])


def hex_or_empty(id_bytes: bytes) -> str:
    return "" if not any(id_bytes) else id_bytes.hex()


def service_name(resource) -> str:
    return next((as_string(kv.value) for kv in resource.attributes if kv.key == "service.name"), "")


# --------------------------------------------------------------------------- traces


def expected_trace_rows(requests: Iterable) -> list[dict]:
    """One otel_traces row per span of the ExportTraceServiceRequests."""
    return [{
        "Timestamp": s.start_time_unix_nano,
        "TraceId": hex_or_empty(s.trace_id),
        "SpanId": hex_or_empty(s.span_id),
        "ParentSpanId": hex_or_empty(s.parent_span_id),
        "TraceState": s.trace_state,
        "SpanName": s.name,
        "SpanKind": SPAN_KINDS.get(s.kind, ""),
        "ServiceName": service_name(rs.resource),
        "ResourceAttributes": attributes(rs.resource.attributes),
        "ScopeName": ss.scope.name,
        "ScopeVersion": ss.scope.version,
        "SpanAttributes": attributes(s.attributes),
        # otelstore: 0 for a span that ends before it starts (contrib subtracts unsigned numbers and
        # stores about 1.8e19).
        "Duration": max(s.end_time_unix_nano - s.start_time_unix_nano, 0),
        "StatusCode": STATUS_CODES.get(s.status.code, ""),
        "StatusMessage": s.status.message,
        "Events.Timestamp": [e.time_unix_nano for e in s.events],
        "Events.Name": [e.name for e in s.events],
        "Events.Attributes": [attributes(e.attributes) for e in s.events],
        "Links.TraceId": [hex_or_empty(l.trace_id) for l in s.links],
        "Links.SpanId": [hex_or_empty(l.span_id) for l in s.links],
        "Links.TraceState": [l.trace_state for l in s.links],
        "Links.Attributes": [attributes(l.attributes) for l in s.links],
    } for rs, ss, s in otlp_items(requests, "traces")]


def span_key(row: dict) -> tuple:
    return row["TraceId"], row["SpanId"]


# --------------------------------------------------------------------------- logs


def expected_log_rows(requests: Iterable) -> list[dict]:
    """One otel_logs row per log record of the ExportLogsServiceRequests."""
    rows = []
    for rl, sl, r in otlp_items(requests, "logs"):
        timestamp = r.time_unix_nano or r.observed_time_unix_nano
        rows.append({
            "Timestamp": timestamp,
            "TimestampTime": timestamp // 10**9,  # the table's DEFAULT toDateTime(Timestamp)
            "TraceId": hex_or_empty(r.trace_id),
            "SpanId": hex_or_empty(r.span_id),
            "TraceFlags": r.flags & 0xFF,
            "SeverityText": r.severity_text,
            "SeverityNumber": int(r.severity_number),
            "ServiceName": service_name(rl.resource),
            "Body": as_string(r.body),
            "ResourceSchemaUrl": rl.schema_url,
            "ResourceAttributes": attributes(rl.resource.attributes),
            "ScopeSchemaUrl": sl.schema_url,
            "ScopeName": sl.scope.name,
            "ScopeVersion": sl.scope.version,
            "ScopeAttributes": attributes(sl.scope.attributes),
            "LogAttributes": attributes(r.attributes),
            "EventName": r.event_name,
        })
    return rows


# --------------------------------------------------------------------------- metrics

METRIC_TABLE_OF = {
    "gauge": "otel_metrics_gauge",
    "sum": "otel_metrics_sum",
    "histogram": "otel_metrics_histogram",
    "exponential_histogram": "otel_metrics_exponential_histogram",
    "summary": "otel_metrics_summary",
}
METRIC_TABLES = list(METRIC_TABLE_OF.values())


def _number(pt) -> float:
    which = pt.WhichOneof("value")
    return float(pt.as_int) if which == "as_int" else pt.as_double if which == "as_double" else 0.0


def _exemplars(pt) -> dict:
    return {
        "Exemplars.FilteredAttributes": [attributes(e.filtered_attributes) for e in pt.exemplars],
        "Exemplars.TimeUnix": [e.time_unix_nano for e in pt.exemplars],
        "Exemplars.Value": [_number(e) for e in pt.exemplars],
        "Exemplars.SpanId": [e.span_id.hex() or "0" * 16 for e in pt.exemplars],
        "Exemplars.TraceId": [e.trace_id.hex() or "0" * 32 for e in pt.exemplars],
    }


def expected_metric_rows(requests: Iterable) -> dict[str, list[dict]]:
    """Table -> one row per data point of the ExportMetricsServiceRequests."""
    out: dict[str, list[dict]] = {t: [] for t in METRIC_TABLES}
    for rm, sm, m, kind, data, pt in metric_points(requests):
        row = {
            "ResourceAttributes": attributes(rm.resource.attributes),
            "ResourceSchemaUrl": rm.schema_url,
            "ScopeName": sm.scope.name,
            "ScopeVersion": sm.scope.version,
            "ScopeAttributes": attributes(sm.scope.attributes),
            "ScopeDroppedAttrCount": sm.scope.dropped_attributes_count,
            "ScopeSchemaUrl": sm.schema_url,
            "ServiceName": service_name(rm.resource),
            "MetricName": m.name,
            "MetricDescription": m.description,
            "MetricUnit": m.unit,
            "Attributes": attributes(pt.attributes),
            "StartTimeUnix": pt.start_time_unix_nano,
            "TimeUnix": pt.time_unix_nano,
            "Flags": pt.flags,
        }
        if kind in ("gauge", "sum"):
            row["Value"] = _number(pt)
        if kind == "sum":
            row["AggregationTemporality"] = int(data.aggregation_temporality)
            row["IsMonotonic"] = data.is_monotonic
        if kind in ("histogram", "exponential_histogram"):
            row["Count"] = pt.count
            row["Sum"] = pt.sum if pt.HasField("sum") else 0.0
            row["Min"] = pt.min if pt.HasField("min") else 0.0
            row["Max"] = pt.max if pt.HasField("max") else 0.0
            row["AggregationTemporality"] = int(data.aggregation_temporality)
        if kind == "histogram":
            row["BucketCounts"] = list(pt.bucket_counts)
            row["ExplicitBounds"] = [float(b) for b in pt.explicit_bounds]
        if kind == "exponential_histogram":
            row["Scale"] = pt.scale
            row["ZeroCount"] = pt.zero_count
            row["PositiveOffset"] = pt.positive.offset
            row["PositiveBucketCounts"] = list(pt.positive.bucket_counts)
            row["NegativeOffset"] = pt.negative.offset
            row["NegativeBucketCounts"] = list(pt.negative.bucket_counts)
        if kind == "summary":
            row["Count"] = pt.count
            row["Sum"] = float(pt.sum)
            row["ValueAtQuantiles.Quantile"] = [float(q.quantile) for q in pt.quantile_values]
            row["ValueAtQuantiles.Value"] = [float(q.value) for q in pt.quantile_values]
        else:
            row.update(_exemplars(pt))
        out[METRIC_TABLE_OF[kind]].append(row)
    return out


def metric_key(row: dict) -> tuple:
    """A data point's identity within one test: one point per series per collection."""
    return row["ServiceName"], row["MetricName"], json.dumps(sorted(row["Attributes"])), row["TimeUnix"]


# --------------------------------------------------------------------------- stored rows


def _select(name: str, typ: str) -> str:
    """A column as a SELECT expression that reads back exactly: times as integer nanoseconds
    (DateTime64) or seconds (DateTime)."""
    col = f"`{name}`"
    if typ.startswith("DateTime64"):
        return f"toUnixTimestamp64Nano({col})"
    if typ.startswith("Array(DateTime64"):
        return f"arrayMap(t -> toUnixTimestamp64Nano(t), {col})"
    if typ.startswith("DateTime"):
        return f"toUnixTimestamp({col})"
    return col


def _convert(typ: str, value: Any) -> Any:
    """A JSON value of a column of type `typ` as Python compares it: floats as floats (ClickHouse
    writes 2.0 as 2), maps as lists of [key, value] pairs in stored order."""
    if typ.startswith("Array("):
        return [_convert(typ[6:-1], v) for v in value]
    if typ.startswith(("Float", "Nullable(Float")) and value is not None:
        return float(value)
    if typ.startswith("Map("):
        return [list(pair) for pair in value]
    return value


def columns(front, database: str, table: str) -> list[tuple[str, str]]:
    """The stored columns of a table (not ALIAS or MATERIALIZED ones), with their types, in order."""
    return [tuple(r) for r in front.rows(
        f"SELECT name, type FROM system.columns WHERE database = '{database}' AND table = '{table}' "
        "AND default_kind NOT IN ('ALIAS', 'MATERIALIZED') ORDER BY position")]


def fetch_rows(front, database: str, table: str, where: str = "1") -> list[dict]:
    """Every stored column of the table's rows, by name; maps as lists of [key, value] pairs."""
    cols = columns(front, database, table)
    select = ", ".join(_select(n, t) for n, t in cols)
    text = front.run(f"SELECT {select} FROM `{database}`.`{table}` WHERE {where} FORMAT JSONCompactEachRow "
                     "SETTINGS output_format_json_quote_64bit_integers = 0, output_format_json_quote_denormals = 1")
    rows = []
    for line in text.splitlines():
        values = json.loads(line, object_pairs_hook=lambda pairs: pairs)
        rows.append({n: _convert(t, v) for (n, t), v in zip(cols, values)})
    return rows




def grouped(rows: Iterable[dict], key) -> dict:
    out = defaultdict(list)
    for r in rows:
        out[key(r)].append(r)
    return out
