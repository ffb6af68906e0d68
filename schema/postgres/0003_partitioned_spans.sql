-- otelstore PostgreSQL schema, version 3: spans partitioned by day of start_time.
-- The spans table of version 1 becomes the DEFAULT partition of a new partitioned table with the
-- same columns and index names, so an existing database keeps its rows. The exporter creates each
-- day's partition ahead of the data and moves rows that reached the default partition (its own
-- migration leftovers, or spans timestamped far from now) into their day's partition once that
-- exists; see sink/postgres/partitions.rs.

ALTER INDEX {schema}.spans_trace_id_idx RENAME TO spans_default_trace_id_idx;
ALTER INDEX {schema}.spans_service_time_idx RENAME TO spans_default_service_time_idx;
ALTER TABLE {schema}.spans RENAME TO spans_default;

CREATE TABLE {schema}.spans (LIKE {schema}.spans_default INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (start_time);
CREATE INDEX spans_trace_id_idx ON {schema}.spans (trace_id);
CREATE INDEX spans_service_time_idx ON {schema}.spans (service_name, start_time DESC);
-- The existing indexes of the old table match the new ones and are attached to them.
ALTER TABLE {schema}.spans ATTACH PARTITION {schema}.spans_default DEFAULT;
