-- Retried inserts are written once. The exporter names every INSERT with a token derived from the
-- export requests it carries (insert_deduplication_token), so an INSERT retried after a timeout
-- or a partial failure is recognized. Replicated tables keep recent block ids by default; plain
-- MergeTree tables need a window of their own. The rollup tables fed by materialized views get
-- one too, so a deduplicated insert is not counted twice in them.
-- Statements end at a line that holds only ';'.

ALTER TABLE {database}.otel_traces{on_cluster} MODIFY SETTING non_replicated_deduplication_window = 1000
;
ALTER TABLE {database}.otel_traces_trace_id_ts{on_cluster} MODIFY SETTING non_replicated_deduplication_window = 1000
;
ALTER TABLE {database}.otel_logs{on_cluster} MODIFY SETTING non_replicated_deduplication_window = 1000
;
ALTER TABLE {database}.otel_metrics_gauge{on_cluster} MODIFY SETTING non_replicated_deduplication_window = 1000
;
ALTER TABLE {database}.otel_metrics_sum{on_cluster} MODIFY SETTING non_replicated_deduplication_window = 1000
;
ALTER TABLE {database}.otel_metrics_histogram{on_cluster} MODIFY SETTING non_replicated_deduplication_window = 1000
;
ALTER TABLE {database}.otel_metrics_exponential_histogram{on_cluster} MODIFY SETTING non_replicated_deduplication_window = 1000
;
ALTER TABLE {database}.otel_metrics_summary{on_cluster} MODIFY SETTING non_replicated_deduplication_window = 1000
;
ALTER TABLE {database}.otel_metrics_rollup_5m{on_cluster} MODIFY SETTING non_replicated_deduplication_window = 1000
;
ALTER TABLE {database}.otel_metrics_rollup_1h{on_cluster} MODIFY SETTING non_replicated_deduplication_window = 1000
;
ALTER TABLE {database}.otel_span_stats_1h{on_cluster} MODIFY SETTING non_replicated_deduplication_window = 1000
;
ALTER TABLE {database}.otel_rpc_spans{on_cluster} MODIFY SETTING non_replicated_deduplication_window = 1000
;
ALTER TABLE {database}.otel_service_dependencies_1h{on_cluster} MODIFY SETTING non_replicated_deduplication_window = 1000
;
ALTER TABLE {database}.otel_error_logs_1h{on_cluster} MODIFY SETTING non_replicated_deduplication_window = 1000
;
