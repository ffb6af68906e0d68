-- otelstore PostgreSQL schema, version 1: spans.
-- {schema} is replaced by the configured schema name, already validated and quoted.
-- Applied once, inside the migration transaction, when create_schema is true.

CREATE TABLE {schema}.spans (
    trace_id                 bytea       NOT NULL,  -- 16 bytes as sent
    span_id                  bytea       NOT NULL,  -- 8 bytes as sent
    parent_span_id           bytea,                 -- NULL for a root span
    trace_state              text        NOT NULL,
    flags                    integer     NOT NULL,  -- OTLP fixed32, stored as its signed bit pattern
    name                     text        NOT NULL,
    kind                     smallint    NOT NULL,  -- OTLP SpanKind number: 0 unspecified .. 5 consumer
    start_time               timestamptz NOT NULL,  -- microseconds, for range queries and psql
    start_time_unix_nano     bigint      NOT NULL,  -- exact nanoseconds
    duration_ns              bigint      NOT NULL,  -- end - start; negative when a client sent end < start
    status_code              smallint    NOT NULL,  -- 0 unset, 1 ok, 2 error
    status_message           text        NOT NULL,
    service_name             text        NOT NULL,  -- resource attribute service.name, '' when absent
    resource_attributes      jsonb       NOT NULL,
    resource_schema_url      text        NOT NULL,
    scope_name               text        NOT NULL,
    scope_version            text        NOT NULL,
    scope_attributes         jsonb       NOT NULL,
    scope_schema_url         text        NOT NULL,
    span_attributes          jsonb       NOT NULL,
    events                   jsonb       NOT NULL,  -- [{"time_unix_nano","name","attributes","dropped_attributes_count"}]
    links                    jsonb       NOT NULL,  -- [{"trace_id","span_id","trace_state","flags","attributes","dropped_attributes_count"}]
    dropped_attributes_count integer     NOT NULL,
    dropped_events_count     integer     NOT NULL,
    dropped_links_count      integer     NOT NULL
);

-- Trace by id.
CREATE INDEX spans_trace_id_idx ON {schema}.spans (trace_id);
-- Spans of a service in a time range, newest first; duration, status and attribute
-- filters are applied to the rows this index narrows down.
CREATE INDEX spans_service_time_idx ON {schema}.spans (service_name, start_time DESC);
