-- Only with a cluster (cluster_name), run after every migration pass, not versioned itself: a
-- Distributed table over each table, named <table>_dist, for a cluster of several shards. The
-- exporter inserts through the raw tables' _dist tables; readers query the _dist tables to see
-- every shard. Spans are sharded by trace id, so a trace, its trace-id lookup row and the spans the
-- dependency view joins stay on one shard; the rest is spread at random. Idempotent.
-- Split rule: statements end at a line that holds only ';'.
CREATE TABLE IF NOT EXISTS {database}.otel_traces_dist{on_cluster} AS {database}.otel_traces
ENGINE = Distributed({cluster_literal}, {database_literal}, 'otel_traces', cityHash64(TraceId))
;
CREATE TABLE IF NOT EXISTS {database}.otel_traces_trace_id_ts_dist{on_cluster} AS {database}.otel_traces_trace_id_ts
ENGINE = Distributed({cluster_literal}, {database_literal}, 'otel_traces_trace_id_ts', cityHash64(TraceId))
;
CREATE TABLE IF NOT EXISTS {database}.otel_logs_dist{on_cluster} AS {database}.otel_logs
ENGINE = Distributed({cluster_literal}, {database_literal}, 'otel_logs', rand())
;
CREATE TABLE IF NOT EXISTS {database}.otel_metrics_gauge_dist{on_cluster} AS {database}.otel_metrics_gauge
ENGINE = Distributed({cluster_literal}, {database_literal}, 'otel_metrics_gauge', rand())
;
CREATE TABLE IF NOT EXISTS {database}.otel_metrics_sum_dist{on_cluster} AS {database}.otel_metrics_sum
ENGINE = Distributed({cluster_literal}, {database_literal}, 'otel_metrics_sum', rand())
;
CREATE TABLE IF NOT EXISTS {database}.otel_metrics_histogram_dist{on_cluster} AS {database}.otel_metrics_histogram
ENGINE = Distributed({cluster_literal}, {database_literal}, 'otel_metrics_histogram', rand())
;
CREATE TABLE IF NOT EXISTS {database}.otel_metrics_exponential_histogram_dist{on_cluster} AS {database}.otel_metrics_exponential_histogram
ENGINE = Distributed({cluster_literal}, {database_literal}, 'otel_metrics_exponential_histogram', rand())
;
CREATE TABLE IF NOT EXISTS {database}.otel_metrics_summary_dist{on_cluster} AS {database}.otel_metrics_summary
ENGINE = Distributed({cluster_literal}, {database_literal}, 'otel_metrics_summary', rand())
;
CREATE TABLE IF NOT EXISTS {database}.otel_metrics_rollup_5m_dist{on_cluster} AS {database}.otel_metrics_rollup_5m
ENGINE = Distributed({cluster_literal}, {database_literal}, 'otel_metrics_rollup_5m', rand())
;
CREATE TABLE IF NOT EXISTS {database}.otel_metrics_rollup_1h_dist{on_cluster} AS {database}.otel_metrics_rollup_1h
ENGINE = Distributed({cluster_literal}, {database_literal}, 'otel_metrics_rollup_1h', rand())
;
CREATE TABLE IF NOT EXISTS {database}.otel_span_stats_1h_dist{on_cluster} AS {database}.otel_span_stats_1h
ENGINE = Distributed({cluster_literal}, {database_literal}, 'otel_span_stats_1h', rand())
;
CREATE TABLE IF NOT EXISTS {database}.otel_service_dependencies_1h_dist{on_cluster} AS {database}.otel_service_dependencies_1h
ENGINE = Distributed({cluster_literal}, {database_literal}, 'otel_service_dependencies_1h', rand())
;
CREATE TABLE IF NOT EXISTS {database}.otel_error_logs_1h_dist{on_cluster} AS {database}.otel_error_logs_1h
ENGINE = Distributed({cluster_literal}, {database_literal}, 'otel_error_logs_1h', rand())
;
