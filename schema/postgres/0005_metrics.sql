-- otelstore PostgreSQL schema, version 5: metric data points, one table per point type, partitioned
-- by day of the point's time. Counts are OTLP uint64; a count above 2^63-1 is refused, not wrapped.
-- Exemplar values keep int and double apart as the attribute encoding does; ids are lower-case hex.

-- Gauge data points.
CREATE TABLE {schema}.metrics_gauge (
    metric_name              text        NOT NULL,
    metric_description       text        NOT NULL,
    metric_unit              text        NOT NULL,
    metric_metadata          jsonb       NOT NULL,  -- Metric.metadata, as attributes
    service_name             text        NOT NULL,  -- resource attribute service.name, '' when absent
    resource_attributes      jsonb       NOT NULL,
    resource_schema_url      text        NOT NULL,
    scope_name               text        NOT NULL,
    scope_version            text        NOT NULL,
    scope_attributes         jsonb       NOT NULL,
    scope_schema_url         text        NOT NULL,
    attributes               jsonb       NOT NULL,  -- the data point's attributes
    start_time_unix_nano     bigint      NOT NULL,  -- 0 when not set
    time                     timestamptz NOT NULL,
    time_unix_nano           bigint      NOT NULL,  -- exact nanoseconds
    flags                    integer     NOT NULL,  -- DataPointFlags
    exemplars                jsonb       NOT NULL,  -- [{"time_unix_nano","value","trace_id","span_id","filtered_attributes"}]
    value_double             double precision,      -- exactly one of value_double and value_int is set
    value_int                bigint
) PARTITION BY RANGE (time);
CREATE TABLE {schema}.metrics_gauge_default PARTITION OF {schema}.metrics_gauge DEFAULT;
CREATE INDEX metrics_gauge_name_time_idx ON {schema}.metrics_gauge (metric_name, service_name, time DESC);

-- Sum data points.
CREATE TABLE {schema}.metrics_sum (
    metric_name              text        NOT NULL,
    metric_description       text        NOT NULL,
    metric_unit              text        NOT NULL,
    metric_metadata          jsonb       NOT NULL,  -- Metric.metadata, as attributes
    service_name             text        NOT NULL,  -- resource attribute service.name, '' when absent
    resource_attributes      jsonb       NOT NULL,
    resource_schema_url      text        NOT NULL,
    scope_name               text        NOT NULL,
    scope_version            text        NOT NULL,
    scope_attributes         jsonb       NOT NULL,
    scope_schema_url         text        NOT NULL,
    attributes               jsonb       NOT NULL,  -- the data point's attributes
    start_time_unix_nano     bigint      NOT NULL,  -- 0 when not set
    time                     timestamptz NOT NULL,
    time_unix_nano           bigint      NOT NULL,  -- exact nanoseconds
    flags                    integer     NOT NULL,  -- DataPointFlags
    exemplars                jsonb       NOT NULL,  -- [{"time_unix_nano","value","trace_id","span_id","filtered_attributes"}]
    value_double             double precision,      -- exactly one of value_double and value_int is set
    value_int                bigint,
    aggregation_temporality  smallint    NOT NULL,  -- 0 unspecified, 1 delta, 2 cumulative
    is_monotonic             boolean     NOT NULL
) PARTITION BY RANGE (time);
CREATE TABLE {schema}.metrics_sum_default PARTITION OF {schema}.metrics_sum DEFAULT;
CREATE INDEX metrics_sum_name_time_idx ON {schema}.metrics_sum (metric_name, service_name, time DESC);

-- Histogram data points.
CREATE TABLE {schema}.metrics_histogram (
    metric_name              text        NOT NULL,
    metric_description       text        NOT NULL,
    metric_unit              text        NOT NULL,
    metric_metadata          jsonb       NOT NULL,  -- Metric.metadata, as attributes
    service_name             text        NOT NULL,  -- resource attribute service.name, '' when absent
    resource_attributes      jsonb       NOT NULL,
    resource_schema_url      text        NOT NULL,
    scope_name               text        NOT NULL,
    scope_version            text        NOT NULL,
    scope_attributes         jsonb       NOT NULL,
    scope_schema_url         text        NOT NULL,
    attributes               jsonb       NOT NULL,  -- the data point's attributes
    start_time_unix_nano     bigint      NOT NULL,  -- 0 when not set
    time                     timestamptz NOT NULL,
    time_unix_nano           bigint      NOT NULL,  -- exact nanoseconds
    flags                    integer     NOT NULL,  -- DataPointFlags
    exemplars                jsonb       NOT NULL,  -- [{"time_unix_nano","value","trace_id","span_id","filtered_attributes"}]
    count                    bigint      NOT NULL,
    sum                      double precision,      -- NULL when the point has no sum
    min                      double precision,      -- NULL when not recorded
    max                      double precision,
    bucket_counts            bigint[]    NOT NULL,
    explicit_bounds          double precision[] NOT NULL,
    aggregation_temporality  smallint    NOT NULL
) PARTITION BY RANGE (time);
CREATE TABLE {schema}.metrics_histogram_default PARTITION OF {schema}.metrics_histogram DEFAULT;
CREATE INDEX metrics_histogram_name_time_idx ON {schema}.metrics_histogram (metric_name, service_name, time DESC);

-- Exponential histogram data points.
CREATE TABLE {schema}.metrics_exponential_histogram (
    metric_name              text        NOT NULL,
    metric_description       text        NOT NULL,
    metric_unit              text        NOT NULL,
    metric_metadata          jsonb       NOT NULL,  -- Metric.metadata, as attributes
    service_name             text        NOT NULL,  -- resource attribute service.name, '' when absent
    resource_attributes      jsonb       NOT NULL,
    resource_schema_url      text        NOT NULL,
    scope_name               text        NOT NULL,
    scope_version            text        NOT NULL,
    scope_attributes         jsonb       NOT NULL,
    scope_schema_url         text        NOT NULL,
    attributes               jsonb       NOT NULL,  -- the data point's attributes
    start_time_unix_nano     bigint      NOT NULL,  -- 0 when not set
    time                     timestamptz NOT NULL,
    time_unix_nano           bigint      NOT NULL,  -- exact nanoseconds
    flags                    integer     NOT NULL,  -- DataPointFlags
    exemplars                jsonb       NOT NULL,  -- [{"time_unix_nano","value","trace_id","span_id","filtered_attributes"}]
    count                    bigint      NOT NULL,
    sum                      double precision,      -- NULL when the point has no sum
    min                      double precision,
    max                      double precision,
    scale                    integer     NOT NULL,
    zero_count               bigint      NOT NULL,
    zero_threshold           double precision NOT NULL,
    positive_offset          integer     NOT NULL,
    positive_bucket_counts   bigint[]    NOT NULL,
    negative_offset          integer     NOT NULL,
    negative_bucket_counts   bigint[]    NOT NULL,
    aggregation_temporality  smallint    NOT NULL
) PARTITION BY RANGE (time);
CREATE TABLE {schema}.metrics_exponential_histogram_default PARTITION OF {schema}.metrics_exponential_histogram DEFAULT;
CREATE INDEX metrics_exponential_histogram_name_time_idx ON {schema}.metrics_exponential_histogram (metric_name, service_name, time DESC);

-- Summary data points.
CREATE TABLE {schema}.metrics_summary (
    metric_name              text        NOT NULL,
    metric_description       text        NOT NULL,
    metric_unit              text        NOT NULL,
    metric_metadata          jsonb       NOT NULL,  -- Metric.metadata, as attributes
    service_name             text        NOT NULL,  -- resource attribute service.name, '' when absent
    resource_attributes      jsonb       NOT NULL,
    resource_schema_url      text        NOT NULL,
    scope_name               text        NOT NULL,
    scope_version            text        NOT NULL,
    scope_attributes         jsonb       NOT NULL,
    scope_schema_url         text        NOT NULL,
    attributes               jsonb       NOT NULL,  -- the data point's attributes
    start_time_unix_nano     bigint      NOT NULL,  -- 0 when not set
    time                     timestamptz NOT NULL,
    time_unix_nano           bigint      NOT NULL,  -- exact nanoseconds
    flags                    integer     NOT NULL,  -- DataPointFlags
    exemplars                jsonb       NOT NULL,  -- [{"time_unix_nano","value","trace_id","span_id","filtered_attributes"}]
    count                    bigint      NOT NULL,
    sum                      double precision NOT NULL,
    quantiles                double precision[] NOT NULL,  -- quantile_values[i] is the value at quantiles[i]
    quantile_values          double precision[] NOT NULL
) PARTITION BY RANGE (time);
CREATE TABLE {schema}.metrics_summary_default PARTITION OF {schema}.metrics_summary DEFAULT;
CREATE INDEX metrics_summary_name_time_idx ON {schema}.metrics_summary (metric_name, service_name, time DESC);
