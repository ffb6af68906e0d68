-- otelstore PostgreSQL schema, version 4: log records, partitioned by day of their time.

CREATE TABLE {schema}.logs (
    time                     timestamptz NOT NULL,  -- time_unix_nano, or observed_time_unix_nano when that is 0
    time_unix_nano           bigint      NOT NULL,  -- exact nanoseconds as sent; 0 when the source did not set it
    observed_time_unix_nano  bigint      NOT NULL,
    severity_number          smallint    NOT NULL,  -- OTLP SeverityNumber: 0 unspecified, 1-4 trace .. 21-24 fatal
    severity_text            text        NOT NULL,
    body                     jsonb,                 -- the AnyValue, encoded like attribute values; NULL when absent or empty
    attributes               jsonb       NOT NULL,
    dropped_attributes_count integer     NOT NULL,
    flags                    integer     NOT NULL,  -- OTLP fixed32, stored as its signed bit pattern
    trace_id                 bytea,                 -- NULL when the record is not tied to a trace
    span_id                  bytea,
    event_name               text        NOT NULL,
    service_name             text        NOT NULL,  -- resource attribute service.name, '' when absent
    resource_attributes      jsonb       NOT NULL,
    resource_schema_url      text        NOT NULL,
    scope_name               text        NOT NULL,
    scope_version            text        NOT NULL,
    scope_attributes         jsonb       NOT NULL,
    scope_schema_url         text        NOT NULL
) PARTITION BY RANGE (time);
CREATE TABLE {schema}.logs_default PARTITION OF {schema}.logs DEFAULT;

-- Logs of a service in a time range, newest first; severity is filtered on the rows it narrows down.
CREATE INDEX logs_service_time_idx ON {schema}.logs (service_name, time DESC);
-- Logs of one trace.
CREATE INDEX logs_trace_id_idx ON {schema}.logs (trace_id) WHERE trace_id IS NOT NULL;
-- Full-text search on the body: a string body's words, or the JSON text of any other kind.
-- Query with: to_tsvector('simple', body #>> '{}') @@ plainto_tsquery('simple', 'words')
CREATE INDEX logs_body_search_idx ON {schema}.logs USING gin (to_tsvector('simple', body #>> '{}'));
