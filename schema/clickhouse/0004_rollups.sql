-- Rollups the exporter does not write itself: materialized views keep them current on every insert
-- into the raw tables. Read every AggregateFunction column with <function>Merge (countMerge,
-- sumMerge, argMaxMerge, sumForEachMerge, sumMapMerge, quantileTDigestMerge(0.99),
-- uniqCombined64Merge) and GROUP BY the sorting key; SimpleAggregateFunction columns with any().
-- Statements end at a line that holds only ';'. Table and column meanings: schema/README.md.

-- Metrics: one row per series per five minutes (kept {ttl_5m}) and per hour (kept {ttl_1h}).
-- A series is (service, metric, type, temporality, SeriesHash); the hash covers the resource, the
-- scope name, the point attributes, the unit, and histogram bounds or exponential scale, so a
-- series that changes bounds or scale gets a row of its own. Summaries are not rolled up: their
-- quantiles cannot be merged.

CREATE TABLE IF NOT EXISTS {database}.otel_metrics_rollup_5m{on_cluster} (
    Bucket DateTime CODEC(Delta(4), ZSTD(1)),
    ServiceName LowCardinality(String),
    MetricName LowCardinality(String),
    MetricType LowCardinality(String),
    AggregationTemporality Int32,
    SeriesHash UInt64,
    MetricUnit SimpleAggregateFunction(any, String),
    IsMonotonic SimpleAggregateFunction(any, Bool),
    ResourceAttributes SimpleAggregateFunction(any, Map(String, String)) CODEC(ZSTD(1)),
    ScopeName SimpleAggregateFunction(any, String),
    Attributes SimpleAggregateFunction(any, Map(String, String)) CODEC(ZSTD(1)),
    ExplicitBounds SimpleAggregateFunction(any, Array(Float64)),
    Scale SimpleAggregateFunction(any, Int32),
    Points AggregateFunction(count),
    Sum AggregateFunction(sum, Float64),
    Min AggregateFunction(min, Float64),
    Max AggregateFunction(max, Float64),
    Last AggregateFunction(argMax, Float64, DateTime64(9)),
    Count AggregateFunction(sum, UInt64),
    LastCount AggregateFunction(argMax, UInt64, DateTime64(9)),
    ZeroCount AggregateFunction(sum, UInt64),
    BucketCounts AggregateFunction(sumForEach, Array(UInt64)),
    LastBucketCounts AggregateFunction(argMax, Array(UInt64), DateTime64(9)),
    PositiveBuckets AggregateFunction(sumMap, Array(Int32), Array(UInt64)),
    NegativeBuckets AggregateFunction(sumMap, Array(Int32), Array(UInt64)),
    LastExpBuckets AggregateFunction(argMax, Tuple(Int32, Array(UInt64), Int32, Array(UInt64)), DateTime64(9)),
    INDEX idx_attr_key mapKeys(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_value mapValues(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = {aggregating_engine}
PARTITION BY toDate(Bucket)
ORDER BY (ServiceName, MetricName, MetricType, AggregationTemporality, Bucket, SeriesHash)
TTL Bucket + {ttl_5m}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
;

CREATE TABLE IF NOT EXISTS {database}.otel_metrics_rollup_1h{on_cluster} (
    Bucket DateTime CODEC(Delta(4), ZSTD(1)),
    ServiceName LowCardinality(String),
    MetricName LowCardinality(String),
    MetricType LowCardinality(String),
    AggregationTemporality Int32,
    SeriesHash UInt64,
    MetricUnit SimpleAggregateFunction(any, String),
    IsMonotonic SimpleAggregateFunction(any, Bool),
    ResourceAttributes SimpleAggregateFunction(any, Map(String, String)) CODEC(ZSTD(1)),
    ScopeName SimpleAggregateFunction(any, String),
    Attributes SimpleAggregateFunction(any, Map(String, String)) CODEC(ZSTD(1)),
    ExplicitBounds SimpleAggregateFunction(any, Array(Float64)),
    Scale SimpleAggregateFunction(any, Int32),
    Points AggregateFunction(count),
    Sum AggregateFunction(sum, Float64),
    Min AggregateFunction(min, Float64),
    Max AggregateFunction(max, Float64),
    Last AggregateFunction(argMax, Float64, DateTime64(9)),
    Count AggregateFunction(sum, UInt64),
    LastCount AggregateFunction(argMax, UInt64, DateTime64(9)),
    ZeroCount AggregateFunction(sum, UInt64),
    BucketCounts AggregateFunction(sumForEach, Array(UInt64)),
    LastBucketCounts AggregateFunction(argMax, Array(UInt64), DateTime64(9)),
    PositiveBuckets AggregateFunction(sumMap, Array(Int32), Array(UInt64)),
    NegativeBuckets AggregateFunction(sumMap, Array(Int32), Array(UInt64)),
    LastExpBuckets AggregateFunction(argMax, Tuple(Int32, Array(UInt64), Int32, Array(UInt64)), DateTime64(9)),
    INDEX idx_attr_key mapKeys(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_value mapValues(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = {aggregating_engine}
PARTITION BY toMonday(Bucket)
ORDER BY (ServiceName, MetricName, MetricType, AggregationTemporality, Bucket, SeriesHash)
TTL Bucket + {ttl_1h}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.otel_metrics_rollup_5m_gauge_mv{on_cluster}
TO {database}.otel_metrics_rollup_5m
AS SELECT
    toStartOfFiveMinutes(s.TimeUnix) AS Bucket,
    s.ServiceName AS ServiceName,
    s.MetricName AS MetricName,
    'gauge' AS MetricType,
    toInt32(0) AS AggregationTemporality,
    cityHash64(s.ResourceAttributes, s.ScopeName, s.Attributes, s.MetricUnit) AS SeriesHash,
    any(s.MetricUnit) AS MetricUnit,
    any(s.ResourceAttributes) AS ResourceAttributes,
    any(s.ScopeName) AS ScopeName,
    any(s.Attributes) AS Attributes,
    countState() AS Points,
    sumState(s.Value) AS Sum,
    minState(s.Value) AS Min,
    maxState(s.Value) AS Max,
    argMaxState(s.Value, s.TimeUnix) AS Last
FROM {database}.otel_metrics_gauge AS s
GROUP BY Bucket, ServiceName, MetricName, AggregationTemporality, SeriesHash
;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.otel_metrics_rollup_5m_sum_mv{on_cluster}
TO {database}.otel_metrics_rollup_5m
AS SELECT
    toStartOfFiveMinutes(s.TimeUnix) AS Bucket,
    s.ServiceName AS ServiceName,
    s.MetricName AS MetricName,
    'sum' AS MetricType,
    s.AggregationTemporality AS AggregationTemporality,
    cityHash64(s.ResourceAttributes, s.ScopeName, s.Attributes, s.MetricUnit, s.IsMonotonic) AS SeriesHash,
    any(s.MetricUnit) AS MetricUnit,
    any(s.ResourceAttributes) AS ResourceAttributes,
    any(s.ScopeName) AS ScopeName,
    any(s.Attributes) AS Attributes,
    any(s.IsMonotonic) AS IsMonotonic,
    countState() AS Points,
    sumState(s.Value) AS Sum,
    minState(s.Value) AS Min,
    maxState(s.Value) AS Max,
    argMaxState(s.Value, s.TimeUnix) AS Last
FROM {database}.otel_metrics_sum AS s
GROUP BY Bucket, ServiceName, MetricName, AggregationTemporality, SeriesHash
;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.otel_metrics_rollup_5m_histogram_mv{on_cluster}
TO {database}.otel_metrics_rollup_5m
AS SELECT
    toStartOfFiveMinutes(s.TimeUnix) AS Bucket,
    s.ServiceName AS ServiceName,
    s.MetricName AS MetricName,
    'histogram' AS MetricType,
    s.AggregationTemporality AS AggregationTemporality,
    cityHash64(s.ResourceAttributes, s.ScopeName, s.Attributes, s.MetricUnit, s.ExplicitBounds) AS SeriesHash,
    any(s.MetricUnit) AS MetricUnit,
    any(s.ResourceAttributes) AS ResourceAttributes,
    any(s.ScopeName) AS ScopeName,
    any(s.Attributes) AS Attributes,
    any(s.ExplicitBounds) AS ExplicitBounds,
    countState() AS Points,
    sumState(s.Sum) AS Sum,
    minState(s.Min) AS Min,
    maxState(s.Max) AS Max,
    argMaxState(s.Sum, s.TimeUnix) AS Last,
    sumState(s.Count) AS Count,
    argMaxState(s.Count, s.TimeUnix) AS LastCount,
    sumForEachState(s.BucketCounts) AS BucketCounts,
    argMaxState(s.BucketCounts, s.TimeUnix) AS LastBucketCounts
FROM {database}.otel_metrics_histogram AS s
GROUP BY Bucket, ServiceName, MetricName, AggregationTemporality, SeriesHash
;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.otel_metrics_rollup_5m_exponential_histogram_mv{on_cluster}
TO {database}.otel_metrics_rollup_5m
AS SELECT
    toStartOfFiveMinutes(s.TimeUnix) AS Bucket,
    s.ServiceName AS ServiceName,
    s.MetricName AS MetricName,
    'exponential_histogram' AS MetricType,
    s.AggregationTemporality AS AggregationTemporality,
    cityHash64(s.ResourceAttributes, s.ScopeName, s.Attributes, s.MetricUnit, s.Scale) AS SeriesHash,
    any(s.MetricUnit) AS MetricUnit,
    any(s.ResourceAttributes) AS ResourceAttributes,
    any(s.ScopeName) AS ScopeName,
    any(s.Attributes) AS Attributes,
    any(s.Scale) AS Scale,
    countState() AS Points,
    sumState(s.Sum) AS Sum,
    minState(s.Min) AS Min,
    maxState(s.Max) AS Max,
    argMaxState(s.Sum, s.TimeUnix) AS Last,
    sumState(s.Count) AS Count,
    argMaxState(s.Count, s.TimeUnix) AS LastCount,
    sumState(s.ZeroCount) AS ZeroCount,
    sumMapState(arrayMap(i -> toInt32(s.PositiveOffset + i - 1), arrayEnumerate(s.PositiveBucketCounts)), s.PositiveBucketCounts) AS PositiveBuckets,
    sumMapState(arrayMap(i -> toInt32(s.NegativeOffset + i - 1), arrayEnumerate(s.NegativeBucketCounts)), s.NegativeBucketCounts) AS NegativeBuckets,
    argMaxState((s.PositiveOffset, s.PositiveBucketCounts, s.NegativeOffset, s.NegativeBucketCounts), s.TimeUnix) AS LastExpBuckets
FROM {database}.otel_metrics_exponential_histogram AS s
GROUP BY Bucket, ServiceName, MetricName, AggregationTemporality, SeriesHash
;

-- The hourly rollup is fed from the five-minute one (a cascaded view), not from the raw tables.
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.otel_metrics_rollup_1h_mv{on_cluster}
TO {database}.otel_metrics_rollup_1h
AS SELECT
    toStartOfHour(Bucket) AS Bucket,
    ServiceName,
    MetricName,
    MetricType,
    AggregationTemporality,
    SeriesHash,
    any(MetricUnit) AS MetricUnit,
    any(IsMonotonic) AS IsMonotonic,
    any(ResourceAttributes) AS ResourceAttributes,
    any(ScopeName) AS ScopeName,
    any(Attributes) AS Attributes,
    any(ExplicitBounds) AS ExplicitBounds,
    any(Scale) AS Scale,
    countMergeState(Points) AS Points,
    sumMergeState(Sum) AS Sum,
    minMergeState(Min) AS Min,
    maxMergeState(Max) AS Max,
    argMaxMergeState(Last) AS Last,
    sumMergeState(Count) AS Count,
    argMaxMergeState(LastCount) AS LastCount,
    sumMergeState(ZeroCount) AS ZeroCount,
    sumForEachMergeState(BucketCounts) AS BucketCounts,
    argMaxMergeState(LastBucketCounts) AS LastBucketCounts,
    sumMapMergeState(PositiveBuckets) AS PositiveBuckets,
    sumMapMergeState(NegativeBuckets) AS NegativeBuckets,
    argMaxMergeState(LastExpBuckets) AS LastExpBuckets
FROM {database}.otel_metrics_rollup_5m
GROUP BY Bucket, ServiceName, MetricName, MetricType, AggregationTemporality, SeriesHash
;

-- Spans per service, span name and kind per hour (kept {ttl_1h}).
CREATE TABLE IF NOT EXISTS {database}.otel_span_stats_1h{on_cluster} (
    Hour DateTime CODEC(Delta(4), ZSTD(1)),
    ServiceName LowCardinality(String),
    SpanName LowCardinality(String),
    SpanKind LowCardinality(String),
    Spans AggregateFunction(count),
    Errors AggregateFunction(sum, UInt64),
    DurationSum AggregateFunction(sum, UInt64),
    DurationMin AggregateFunction(min, UInt64),
    DurationMax AggregateFunction(max, UInt64),
    DurationQuantiles AggregateFunction(quantileTDigest, UInt64)
) ENGINE = {aggregating_engine}
PARTITION BY toMonday(Hour)
ORDER BY (ServiceName, Hour, SpanName, SpanKind)
TTL Hour + {ttl_1h}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.otel_span_stats_1h_mv{on_cluster}
TO {database}.otel_span_stats_1h
AS SELECT
    toStartOfHour(Timestamp) AS Hour,
    ServiceName,
    SpanName,
    SpanKind,
    countState() AS Spans,
    sumState(toUInt64(StatusCode IN ('Error', 'STATUS_CODE_ERROR'))) AS Errors,
    sumState(Duration) AS DurationSum,
    minState(Duration) AS DurationMin,
    maxState(Duration) AS DurationMax,
    quantileTDigestState(Duration) AS DurationQuantiles
FROM {database}.otel_traces
GROUP BY Hour, ServiceName, SpanName, SpanKind
;

-- Service dependencies: a Client/Producer span of one service whose child is a Server/Consumer span
-- of another, counted per hour of the child span. A view only sees the inserted block, and the
-- parent (which ends after its child) usually arrives in a later insert than the child, so:
--  * otel_rpc_spans keeps the Client/Producer/Server/Consumer spans of the last day, sorted by
--    TraceId, as a lookup table;
--  * on every insert, the candidates are the block's spans of those kinds plus the stored ones of
--    the same traces (the TraceId IN (block) filter uses otel_rpc_spans' primary key), and every
--    parent-child pair among them is emitted, whichever side arrived last;
--  * Calls and Errors are uniqCombined64 states of the child's (TraceId, SpanId), so a pair seen
--    again (both spans in one block, a later span of the same trace, a retried insert) is counted
--    once. uniqCombined64 is exact for small counts and within about 1 % beyond.
-- A parent arriving more than a day after its child, or on another shard, is not matched.
CREATE TABLE IF NOT EXISTS {database}.otel_rpc_spans{on_cluster} (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1))
) ENGINE = {engine}
PARTITION BY toDate(Timestamp)
ORDER BY (TraceId, SpanId)
TTL toDateTime(Timestamp) + toIntervalDay(1)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.otel_rpc_spans_mv{on_cluster}
TO {database}.otel_rpc_spans
AS SELECT Timestamp, TraceId, SpanId, ParentSpanId, ServiceName, SpanKind, StatusCode
FROM {database}.otel_traces
WHERE SpanKind IN ('Client', 'Producer', 'Server', 'Consumer',
                   'SPAN_KIND_CLIENT', 'SPAN_KIND_PRODUCER', 'SPAN_KIND_SERVER', 'SPAN_KIND_CONSUMER')
  AND TraceId != ''
;
CREATE TABLE IF NOT EXISTS {database}.otel_service_dependencies_1h{on_cluster} (
    Hour DateTime CODEC(Delta(4), ZSTD(1)),
    ParentService LowCardinality(String),
    ChildService LowCardinality(String),
    Calls AggregateFunction(uniqCombined64, String, String),
    Errors AggregateFunction(uniqCombined64, String, String)
) ENGINE = {aggregating_engine}
PARTITION BY toMonday(Hour)
ORDER BY (Hour, ParentService, ChildService)
TTL Hour + {ttl_1h}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.otel_service_dependencies_1h_mv{on_cluster}
TO {database}.otel_service_dependencies_1h
AS SELECT
    toStartOfHour(c.Timestamp) AS Hour,
    p.ServiceName AS ParentService,
    c.ServiceName AS ChildService,
    uniqCombined64State(c.TraceId, c.SpanId) AS Calls,
    uniqCombined64StateIf(c.TraceId, c.SpanId, c.StatusCode IN ('Error', 'STATUS_CODE_ERROR')) AS Errors
FROM (
    SELECT Timestamp, TraceId, SpanId, ParentSpanId, ServiceName, SpanKind, StatusCode
    FROM {database}.otel_traces
    WHERE SpanKind IN ('Server', 'Consumer', 'SPAN_KIND_SERVER', 'SPAN_KIND_CONSUMER') AND ParentSpanId != ''
    UNION ALL
    SELECT Timestamp, TraceId, SpanId, ParentSpanId, ServiceName, SpanKind, StatusCode
    FROM {database}.otel_rpc_spans
    WHERE TraceId IN (SELECT TraceId FROM {database}.otel_traces)
      AND SpanKind IN ('Server', 'Consumer', 'SPAN_KIND_SERVER', 'SPAN_KIND_CONSUMER') AND ParentSpanId != ''
) AS c
INNER JOIN (
    SELECT TraceId, SpanId, ServiceName
    FROM {database}.otel_traces
    WHERE SpanKind IN ('Client', 'Producer', 'SPAN_KIND_CLIENT', 'SPAN_KIND_PRODUCER')
    UNION ALL
    SELECT TraceId, SpanId, ServiceName
    FROM {database}.otel_rpc_spans
    WHERE TraceId IN (SELECT TraceId FROM {database}.otel_traces)
      AND SpanKind IN ('Client', 'Producer', 'SPAN_KIND_CLIENT', 'SPAN_KIND_PRODUCER')
) AS p ON c.TraceId = p.TraceId AND c.ParentSpanId = p.SpanId
WHERE c.ServiceName != p.ServiceName
GROUP BY Hour, ParentService, ChildService
;

-- Log records with SeverityNumber 17 (ERROR) or above, per service per hour (kept {ttl_1h}).
CREATE TABLE IF NOT EXISTS {database}.otel_error_logs_1h{on_cluster} (
    Hour DateTime CODEC(Delta(4), ZSTD(1)),
    ServiceName LowCardinality(String),
    Records AggregateFunction(count)
) ENGINE = {aggregating_engine}
PARTITION BY toMonday(Hour)
ORDER BY (ServiceName, Hour)
TTL Hour + {ttl_1h}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.otel_error_logs_1h_mv{on_cluster}
TO {database}.otel_error_logs_1h
AS SELECT
    toStartOfHour(Timestamp) AS Hour,
    ServiceName,
    countState() AS Records
FROM {database}.otel_logs
WHERE SeverityNumber >= 17
GROUP BY Hour, ServiceName
;
