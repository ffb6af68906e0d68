//! Versioned, idempotent schema migrations from schema/postgres/.

use deadpool_postgres::Object;

use crate::error::Error;

/// Every migration, in order: (version, name, SQL with `{schema}` placeholders).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "spans",
        include_str!("../../../../../schema/postgres/0001_spans.sql"),
    ),
    (
        2,
        "request_ids",
        include_str!("../../../../../schema/postgres/0002_request_ids.sql"),
    ),
    (
        3,
        "partitioned_spans",
        include_str!("../../../../../schema/postgres/0003_partitioned_spans.sql"),
    ),
    (
        4,
        "logs",
        include_str!("../../../../../schema/postgres/0004_logs.sql"),
    ),
    (
        5,
        "metrics",
        include_str!("../../../../../schema/postgres/0005_metrics.sql"),
    ),
    (
        6,
        "rollups",
        include_str!("../../../../../schema/postgres/0006_rollups.sql"),
    ),
    (
        7,
        "spans_start_time_brin",
        include_str!("../../../../../schema/postgres/0007_spans_start_time_brin.sql"),
    ),
];

/// Any fixed number works: all otelstore exporters take the same lock while they migrate.
const MIGRATION_LOCK: i64 = 0x6f74_656c_7374_6f72; // "otelstor"

/// Applies the migrations this database lacks, in one transaction under an advisory lock, so that
/// collectors starting together apply each exactly once. `quoted_schema` is validated and quoted.
pub async fn apply(client: &mut Object, quoted_schema: &str) -> Result<Vec<i32>, Error> {
    let tx = client
        .transaction()
        .await
        .map_err(Error::postgres("begin migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(Error::postgres("take the migration lock"))?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {quoted_schema};
         CREATE TABLE IF NOT EXISTS {quoted_schema}.otelstore_schema_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(Error::postgres("create the schema"))?;
    let applied: Vec<i32> = tx
        .query(
            &format!("SELECT version FROM {quoted_schema}.otelstore_schema_migrations"),
            &[],
        )
        .await
        .map_err(Error::postgres("read applied migrations"))?
        .iter()
        .map(|row| row.get(0))
        .collect();

    let mut newly_applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        if applied.contains(&version) {
            continue;
        }
        tx.batch_execute(&sql.replace("{schema}", quoted_schema))
            .await
            .map_err(Error::postgres("apply a schema migration"))?;
        tx.execute(
            &format!("INSERT INTO {quoted_schema}.otelstore_schema_migrations (version, name) VALUES ($1, $2)"),
            &[&version, &name],
        )
        .await
        .map_err(Error::postgres("record a schema migration"))?;
        newly_applied.push(version);
    }
    tx.commit()
        .await
        .map_err(Error::postgres("commit migrations"))?;
    Ok(newly_applied)
}
