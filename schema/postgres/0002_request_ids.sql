-- otelstore PostgreSQL schema, version 2: ids of stored export requests.
-- Each write records the ids (a 128-bit hash of the OTLP request bytes) of the requests it stored, in
-- the same transaction as their rows. A request that is retried after its write committed (the
-- acknowledgement was lost, the collector restarted from its persistent queue) is found here and
-- not stored twice. Rows older than the retention window are pruned by the exporter.

CREATE TABLE {schema}.otelstore_batches (
    id        bytea       PRIMARY KEY,
    rows      bigint      NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now()
);
