-- otelstore PostgreSQL schema, version 7: a BRIN index on spans.start_time.
-- A trace search without a service has no btree to narrow its time range with; spans are written
-- roughly in start-time order, so each block range of a partition covers a short stretch of time
-- and a BRIN index reads only the blocks of the searched range, for about 1 % of the ingest rate
-- (schema/README.md). Created on the partitioned table, it is built on every existing partition
-- in this migration's transaction (writes to spans wait for it) and PostgreSQL creates it on every
-- partition created or attached later.

CREATE INDEX spans_start_time_brin_idx ON {schema}.spans USING brin (start_time);
