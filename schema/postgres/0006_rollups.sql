-- otelstore PostgreSQL schema, version 6: rollups, kept current by the exporter as data arrives.
--
-- Every rollup row is merged in the same transaction as the raw rows it summarizes (see
-- sink/postgres/rollup.rs for why), so a rollup always agrees with the raw rows that were
-- committed, and a retried request is counted once. Tables are partitioned by bucket_start: a day
-- per partition at 5-minute resolution, seven days at 1-hour resolution.

-- Adds two count arrays element by element, the first element of `a` standing for index
-- `a_offset` and that of `b` for `b_offset` (exponential histogram buckets; 0 and 0 for the
-- others). Missing elements count as 0; the result starts at the lower of the two offsets, or is
-- empty when both are.
CREATE FUNCTION {schema}.otelstore_add_counts(a bigint[], a_offset integer, b bigint[], b_offset integer)
RETURNS bigint[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(coalesce(a[i - a_offset + 1], 0) + coalesce(b[i - b_offset + 1], 0) ORDER BY i), '{}')
    FROM generate_series(
        least(CASE WHEN cardinality(a) > 0 THEN a_offset END, CASE WHEN cardinality(b) > 0 THEN b_offset END),
        greatest(CASE WHEN cardinality(a) > 0 THEN a_offset + cardinality(a) END,
                 CASE WHEN cardinality(b) > 0 THEN b_offset + cardinality(b) END) - 1) AS i
$$;

-- The offset of otelstore_add_counts(a, a_offset, b, b_offset).
CREATE FUNCTION {schema}.otelstore_merged_offset(a bigint[], a_offset integer, b bigint[], b_offset integer)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(least(CASE WHEN cardinality(a) > 0 THEN a_offset END, CASE WHEN cardinality(b) > 0 THEN b_offset END), 0)
$$;

-- Span durations are counted in log-scale buckets, four per power of two: bucket 0 holds durations
-- below 2^10.25 ns (about 1.2 µs), bucket i > 0 those in [2^((i+40)/4), 2^((i+41)/4)) ns, the last
-- (127) everything from 2^41.75 ns (about 58 min) up. A quantile read from them is within 10 % of
-- the true one. This returns the estimate for quantile q (0..1) in nanoseconds: the geometric middle
-- of the bucket where the cumulative count reaches q, or NULL for no spans.
CREATE FUNCTION {schema}.otelstore_duration_quantile(buckets bigint[], q double precision)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    WITH cumulative AS (
        SELECT i, sum(count) OVER (ORDER BY i) AS running, sum(count) OVER () AS total
        FROM unnest(buckets) WITH ORDINALITY AS b(count, i)
    )
    SELECT CASE WHEN i = 1 THEN power(2, 10.125) ELSE power(2, (i - 1 + 40.5) / 4.0) END
    FROM cumulative
    WHERE total > 0 AND running >= greatest(q, 0) * total AND running > 0
    ORDER BY i
    LIMIT 1
$$;

-- Spans per service and operation per hour.
CREATE TABLE {schema}.span_stats_1h (
    bucket_start     timestamptz NOT NULL,
    service_name     text        NOT NULL,
    span_name        text        NOT NULL,
    span_kind        smallint    NOT NULL,
    spans            bigint      NOT NULL,
    errors           bigint      NOT NULL,  -- status code 2 (error)
    duration_sum_ns  bigint      NOT NULL,  -- saturates at 2^63-1
    duration_min_ns  bigint      NOT NULL,
    duration_max_ns  bigint      NOT NULL,
    duration_buckets bigint[]    NOT NULL,  -- see otelstore_duration_quantile; trailing zeros trimmed
    PRIMARY KEY (service_name, span_name, span_kind, bucket_start)
) PARTITION BY RANGE (bucket_start);
CREATE TABLE {schema}.span_stats_1h_default PARTITION OF {schema}.span_stats_1h DEFAULT;

-- Calls from one service to another per hour: a client (or producer) span in the parent service
-- whose child is a server (or consumer) span in the child service, counted at the child's hour.
CREATE TABLE {schema}.service_dependencies_1h (
    bucket_start   timestamptz NOT NULL,
    parent_service text        NOT NULL,
    child_service  text        NOT NULL,
    calls          bigint      NOT NULL,
    errors         bigint      NOT NULL,  -- calls whose server span has status code 2
    PRIMARY KEY (parent_service, child_service, bucket_start)
) PARTITION BY RANGE (bucket_start);
CREATE TABLE {schema}.service_dependencies_1h_default PARTITION OF {schema}.service_dependencies_1h DEFAULT;

-- Server and consumer spans whose parent was not in the same export request: the exporter's
-- maintenance looks their parents up in spans, turns matches into dependencies and deletes them;
-- a parent that has not arrived within an hour is given up on. A work queue, not data.
CREATE TABLE {schema}.otelstore_pending_dependencies (
    trace_id         bytea       NOT NULL,
    parent_span_id   bytea       NOT NULL,
    child_service    text        NOT NULL,
    child_start_time timestamptz NOT NULL,
    child_error      boolean     NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX otelstore_pending_dependencies_received_idx ON {schema}.otelstore_pending_dependencies (received_at);

-- Log records of severity ERROR or above (severity_number >= 17) per service per hour.
CREATE TABLE {schema}.error_logs_1h (
    bucket_start timestamptz NOT NULL,
    service_name text        NOT NULL,
    error_logs   bigint      NOT NULL,
    PRIMARY KEY (service_name, bucket_start)
) PARTITION BY RANGE (bucket_start);
CREATE TABLE {schema}.error_logs_1h_default PARTITION OF {schema}.error_logs_1h DEFAULT;

-- Metric data points per series per 5 minutes.
CREATE TABLE {schema}.metrics_rollup_5m (
    bucket_start            timestamptz NOT NULL,
    metric_name             text        NOT NULL,
    metric_type             smallint    NOT NULL,  -- 1 gauge, 2 sum, 3 histogram, 4 exponential histogram
    series_id               bigint      NOT NULL,  -- hash of the series: type, temporality, resource, scope, attributes, histogram bounds or scale
    service_name            text        NOT NULL,
    resource_attributes     jsonb       NOT NULL,
    attributes              jsonb       NOT NULL,  -- the data points' attributes
    aggregation_temporality smallint    NOT NULL,  -- 0 for gauges, else as sent
    points                  bigint      NOT NULL,  -- data points merged into this row
    last_time_unix_nano     bigint      NOT NULL,  -- time of the latest of them
    -- Gauges and sums: over the points' values. Histograms: min and max of the points' min and max.
    sum                     double precision,      -- histograms: the merged sum (NULL if a point had none)
    min                     double precision,
    max                     double precision,
    last                    double precision,      -- gauges and sums: the latest point's value
    -- Histograms: delta points are added up; of cumulative points the latest is kept, as it
    -- already covers the earlier ones.
    count                   bigint,
    bucket_counts           bigint[],
    explicit_bounds         double precision[],
    scale                   integer,
    zero_count              bigint,
    positive_offset         integer,
    positive_bucket_counts  bigint[],
    negative_offset         integer,
    negative_bucket_counts  bigint[],
    PRIMARY KEY (metric_name, series_id, bucket_start)
) PARTITION BY RANGE (bucket_start);
CREATE TABLE {schema}.metrics_rollup_5m_default PARTITION OF {schema}.metrics_rollup_5m DEFAULT;

-- Metric data points per series per hour.
CREATE TABLE {schema}.metrics_rollup_1h (
    bucket_start            timestamptz NOT NULL,
    metric_name             text        NOT NULL,
    metric_type             smallint    NOT NULL,  -- 1 gauge, 2 sum, 3 histogram, 4 exponential histogram
    series_id               bigint      NOT NULL,  -- hash of the series: type, temporality, resource, scope, attributes, histogram bounds or scale
    service_name            text        NOT NULL,
    resource_attributes     jsonb       NOT NULL,
    attributes              jsonb       NOT NULL,  -- the data points' attributes
    aggregation_temporality smallint    NOT NULL,  -- 0 for gauges, else as sent
    points                  bigint      NOT NULL,  -- data points merged into this row
    last_time_unix_nano     bigint      NOT NULL,  -- time of the latest of them
    -- Gauges and sums: over the points' values. Histograms: min and max of the points' min and max.
    sum                     double precision,      -- histograms: the merged sum (NULL if a point had none)
    min                     double precision,
    max                     double precision,
    last                    double precision,      -- gauges and sums: the latest point's value
    -- Histograms: delta points are added up; of cumulative points the latest is kept, as it
    -- already covers the earlier ones.
    count                   bigint,
    bucket_counts           bigint[],
    explicit_bounds         double precision[],
    scale                   integer,
    zero_count              bigint,
    positive_offset         integer,
    positive_bucket_counts  bigint[],
    negative_offset         integer,
    negative_bucket_counts  bigint[],
    PRIMARY KEY (metric_name, series_id, bucket_start)
) PARTITION BY RANGE (bucket_start);
CREATE TABLE {schema}.metrics_rollup_1h_default PARTITION OF {schema}.metrics_rollup_1h DEFAULT;
