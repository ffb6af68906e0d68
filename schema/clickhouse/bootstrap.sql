-- Run before every migration pass, not versioned itself: creates the database and the table that
-- records which numbered files (NNNN_name.sql) have been applied. Idempotent.
-- Split rule: statements end at a line that holds only ';'.
CREATE DATABASE IF NOT EXISTS {database}{on_cluster}
;
CREATE TABLE IF NOT EXISTS {database}.otelstore_schema_migrations{on_cluster} (
    version UInt32,
    name String,
    applied_at DateTime DEFAULT now()
) ENGINE = {replacing_engine}
ORDER BY version
;
