//! Time partitions and the exporter's periodic maintenance.
//!
//! Every table is range-partitioned by its time column into partitions of whole UTC days, named
//! `<table>_pYYYYMMDD` after their first day, beside a DEFAULT partition that takes any row no
//! other partition does, so an insert never fails for want of a partition. Maintenance:
//! - creates the partitions of the current and next two periods ahead of the data;
//! - moves rows that reached a default partition (rows timestamped days away from now, or rows
//!   from before the tables were partitioned) into their own partition, created for them; queries
//!   of that table wait for the move, so they never miss the rows in flight;
//! - drops partitions once all their rows are older than the retention (never deleting row by
//!   row, except the strays left in a default partition past the retention);
//! - turns pending service dependencies whose parent span has arrived into dependency counts.
//!
//! Every step runs in its own short transaction under an advisory lock, so exporters of several
//! collectors can run it at once, and a lock held by ingest makes a step wait at most
//! `LOCK_TIMEOUT` before it is left for the next run.

use std::time::Duration;

use deadpool_postgres::Object;

use crate::config::Retention;
use crate::error::Error;

const DAY_SECS: i64 = 86_400;
/// Partitions are created this long ahead of now.
const AHEAD_SECS: i64 = 2 * DAY_SECS;
/// Any fixed number works: exporters of every collector take the same lock.
const MAINTENANCE_LOCK: i64 = 0x6f74_656c_6d61_696e; // "otelmain"
const LOCK_TIMEOUT: &str = "5s";
/// Pending dependencies resolved per statement, so that one run holds few row locks.
const PENDING_BATCH: i64 = 10_000;
/// A parent span that has not arrived this long after its child is not coming.
const PENDING_PATIENCE: &str = "1 hour";

/// A partitioned table: its time column, partition width and how long its data is kept.
struct Partitioned {
    table: &'static str,
    column: &'static str,
    width_days: i64,
    retention: Duration,
}

pub struct Maintenance {
    quoted_schema: String,
    tables: Vec<Partitioned>,
}

impl Maintenance {
    pub fn new(quoted_schema: String, retention: &Retention) -> Self {
        let raw = |table, column| Partitioned {
            table,
            column,
            width_days: 1,
            retention: retention.raw.0,
        };
        let hourly = |table| Partitioned {
            table,
            column: "bucket_start",
            width_days: 7,
            retention: retention.rollup_1h.0,
        };
        let tables = vec![
            raw("spans", "start_time"),
            raw("logs", "time"),
            raw("metrics_gauge", "time"),
            raw("metrics_sum", "time"),
            raw("metrics_histogram", "time"),
            raw("metrics_exponential_histogram", "time"),
            raw("metrics_summary", "time"),
            Partitioned {
                table: "metrics_rollup_5m",
                column: "bucket_start",
                width_days: 1,
                retention: retention.rollup_5m.0,
            },
            hourly("metrics_rollup_1h"),
            hourly("span_stats_1h"),
            hourly("service_dependencies_1h"),
            hourly("error_logs_1h"),
        ];
        Self {
            quoted_schema,
            tables,
        }
    }

    /// One maintenance run.
    pub async fn run(&self, client: &mut Object) -> Result<(), Error> {
        self.create_partitions(client).await?;
        self.drop_expired(client).await?;
        self.resolve_dependencies(client).await
    }

    /// Creates the partitions due now and those the default partitions have rows for.
    pub async fn create_partitions(&self, client: &mut Object) -> Result<(), Error> {
        let now = database_now(client).await?;
        for table in &self.tables {
            let width = table.width_days * DAY_SECS;
            let mut due: Vec<i64> = (0..)
                .map(|n| period_start(now, width) - width + n * width)
                .take_while(|start| *start <= now + AHEAD_SECS)
                .collect();
            let oldest_kept = now - table.retention.as_secs() as i64;
            let strays = client
                .query(
                    &format!(
                        "SELECT DISTINCT (floor(extract(epoch FROM {column})::float8 / $1::float8) * $1::float8)::bigint FROM {schema}.{table}_default
                         WHERE {column} >= to_timestamp($2::float8) AND {column} < to_timestamp($3::float8)",
                        column = table.column,
                        schema = self.quoted_schema,
                        table = table.table,
                    ),
                    &[&(width as f64), &(oldest_kept as f64), &((now + AHEAD_SECS) as f64)],
                )
                .await
                .map_err(Error::postgres("look for rows in a default partition"))?;
            due.extend(strays.iter().map(|row| row.get::<_, i64>(0)));
            // A period already past the retention would only be dropped again.
            due.retain(|start| start + width > oldest_kept);
            due.sort_unstable();
            due.dedup();
            for start in due {
                self.create_partition(client, table, start, start + width)
                    .await?;
            }
        }
        Ok(())
    }

    /// Creates the partition for [start, end) unless it exists, moving the default partition's
    /// rows of that range into it (PostgreSQL refuses a partition whose rows sit in the default
    /// one).
    async fn create_partition(
        &self,
        client: &mut Object,
        table: &Partitioned,
        start: i64,
        end: i64,
    ) -> Result<(), Error> {
        let partition = format!("{}_p{}", table.table, date_digits(start));
        let (schema, parent, column) = (&self.quoted_schema, table.table, table.column);
        let (from, to) = (timestamp_literal(start), timestamp_literal(end));
        let tx = locked_transaction(client).await?;
        let row = tx
            .query_one(
                &format!(
                    "SELECT to_regclass($1) IS NOT NULL,
                            EXISTS (SELECT 1 FROM {schema}.{parent}_default WHERE {column} >= '{from}' AND {column} < '{to}')"
                ),
                &[&format!("{schema}.{partition}")],
            )
            .await
            .map_err(Error::postgres("look up a partition"))?;
        let (exists, strays): (bool, bool) = (row.get(0), row.get(1));
        if exists {
            return Ok(());
        }
        let sql = if strays {
            // A query planned before the new partition is attached would scan only the default
            // partition, and miss the moved rows: readers wait for the move instead.
            format!(
                "LOCK TABLE {schema}.{parent} IN ACCESS EXCLUSIVE MODE;
                 CREATE TABLE {schema}.{partition} (LIKE {schema}.{parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
                 WITH moved AS (DELETE FROM {schema}.{parent}_default WHERE {column} >= '{from}' AND {column} < '{to}' RETURNING *)
                 INSERT INTO {schema}.{partition} SELECT * FROM moved;
                 ALTER TABLE {schema}.{parent} ATTACH PARTITION {schema}.{partition} FOR VALUES FROM ('{from}') TO ('{to}');"
            )
        } else {
            format!("CREATE TABLE {schema}.{partition} PARTITION OF {schema}.{parent} FOR VALUES FROM ('{from}') TO ('{to}')")
        };
        tx.batch_execute(&sql)
            .await
            .map_err(Error::postgres("create a partition"))?;
        tx.commit()
            .await
            .map_err(Error::postgres("commit a new partition"))?;
        tracing::info!(partition = %partition, moved_from_default = strays, "created partition");
        Ok(())
    }

    /// Drops partitions whose every row is older than the retention, and the strays of that age
    /// in the default partitions.
    async fn drop_expired(&self, client: &mut Object) -> Result<(), Error> {
        let now = database_now(client).await?;
        for table in &self.tables {
            let oldest_kept = now - table.retention.as_secs() as i64;
            let partitions = client
                .query(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                     WHERE i.inhparent = to_regclass($1)",
                    &[&format!("{}.{}", self.quoted_schema, table.table)],
                )
                .await
                .map_err(Error::postgres("list partitions"))?;
            let prefix = format!("{}_p", table.table);
            for row in partitions {
                let name: String = row.get(0);
                let Some(start) = name.strip_prefix(&prefix).and_then(parse_date_digits) else {
                    continue;
                };
                if start + table.width_days * DAY_SECS > oldest_kept {
                    continue;
                }
                let tx = locked_transaction(client).await?;
                tx.batch_execute(&format!(
                    "DROP TABLE IF EXISTS {}.{name}",
                    self.quoted_schema
                ))
                .await
                .map_err(Error::postgres("drop an expired partition"))?;
                tx.commit()
                    .await
                    .map_err(Error::postgres("commit dropping a partition"))?;
                tracing::info!(partition = %name, "dropped expired partition");
            }
            client
                .execute(
                    &format!(
                        "DELETE FROM {}.{}_default WHERE {} < to_timestamp($1::float8)",
                        self.quoted_schema, table.table, table.column
                    ),
                    &[&(oldest_kept as f64)],
                )
                .await
                .map_err(Error::postgres(
                    "delete expired rows of a default partition",
                ))?;
        }
        Ok(())
    }

    /// Finds the parents of pending server and consumer spans, counts a dependency for each
    /// client or producer parent in another service, and forgets what is resolved or too old.
    async fn resolve_dependencies(&self, client: &mut Object) -> Result<(), Error> {
        let schema = &self.quoted_schema;
        let sql = format!(
            "WITH batch AS (
                 SELECT ctid AS row_id, trace_id, parent_span_id, child_service, child_start_time, child_error
                 FROM {schema}.otelstore_pending_dependencies
                 ORDER BY received_at LIMIT $1 FOR UPDATE SKIP LOCKED
             ), matched AS (
                 SELECT b.row_id, b.child_service, b.child_start_time, b.child_error, parent.service_name, parent.kind
                 FROM batch b CROSS JOIN LATERAL (
                     SELECT s.service_name, s.kind FROM {schema}.spans s
                     WHERE s.trace_id = b.trace_id AND s.span_id = b.parent_span_id
                       AND s.start_time BETWEEN b.child_start_time - interval '1 day' AND b.child_start_time + interval '1 day'
                     LIMIT 1
                 ) parent
             ), resolved AS (
                 DELETE FROM {schema}.otelstore_pending_dependencies p USING matched m WHERE p.ctid = m.row_id
             ), counted AS (
                 INSERT INTO {schema}.service_dependencies_1h AS d (bucket_start, parent_service, child_service, calls, errors)
                 SELECT to_timestamp(floor(extract(epoch FROM child_start_time) / 3600) * 3600) AS hour, service_name,
                        child_service, count(*), count(*) FILTER (WHERE child_error)
                 FROM matched WHERE kind IN (3, 4) AND service_name <> child_service
                 GROUP BY hour, service_name, child_service
                 ORDER BY service_name, child_service, hour
                 ON CONFLICT (parent_service, child_service, bucket_start) DO UPDATE
                     SET calls = d.calls + EXCLUDED.calls, errors = d.errors + EXCLUDED.errors
             )
             SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM matched)"
        );
        loop {
            let tx = locked_transaction(client).await?;
            let row = tx
                .query_one(&sql, &[&PENDING_BATCH])
                .await
                .map_err(Error::postgres("resolve pending dependencies"))?;
            tx.commit()
                .await
                .map_err(Error::postgres("commit resolved dependencies"))?;
            let (looked_at, matched): (i64, i64) = (row.get(0), row.get(1));
            // Stop when the queue is done or holds only spans whose parents have not arrived.
            if looked_at < PENDING_BATCH || matched == 0 {
                break;
            }
        }
        client
            .execute(
                &format!("DELETE FROM {schema}.otelstore_pending_dependencies WHERE received_at < now() - interval '{PENDING_PATIENCE}'"),
                &[],
            )
            .await
            .map_err(Error::postgres("forget pending dependencies without a parent"))?;
        Ok(())
    }
}

async fn locked_transaction(
    client: &mut Object,
) -> Result<deadpool_postgres::Transaction<'_>, Error> {
    let tx = client
        .transaction()
        .await
        .map_err(Error::postgres("begin maintenance"))?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'; SELECT pg_advisory_xact_lock({MAINTENANCE_LOCK})"))
        .await
        .map_err(Error::postgres("take the maintenance lock"))?;
    Ok(tx)
}

/// The database's clock, so that exporters on hosts with skewed clocks agree on the partitions.
async fn database_now(client: &Object) -> Result<i64, Error> {
    let row = client
        .query_one("SELECT extract(epoch FROM now())::bigint", &[])
        .await
        .map_err(Error::postgres("read the database clock"))?;
    Ok(row.get(0))
}

/// The start of the `width`-second period holding `unix_secs`, periods counted from the epoch.
fn period_start(unix_secs: i64, width: i64) -> i64 {
    unix_secs - unix_secs.rem_euclid(width)
}

/// (year, month, day) of a day counted from 1970-01-01, in the proleptic Gregorian calendar
/// (Howard Hinnant's civil_from_days).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Days from 1970-01-01 to the given date (Howard Hinnant's days_from_civil).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// "YYYYMMDD" of the UTC day holding `unix_secs`.
fn date_digits(unix_secs: i64) -> String {
    let (year, month, day) = civil_from_days(unix_secs.div_euclid(DAY_SECS));
    format!("{year:04}{month:02}{day:02}")
}

/// The Unix seconds of midnight UTC on a "YYYYMMDD" date, or `None` for any other text.
fn parse_date_digits(digits: &str) -> Option<i64> {
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, month, day) = (
        digits[..4].parse().ok()?,
        digits[4..6].parse().ok()?,
        digits[6..].parse().ok()?,
    );
    Some(days_from_civil(year, month, day) * DAY_SECS)
}

/// A timestamptz literal for partition bounds, in UTC.
fn timestamp_literal(unix_secs: i64) -> String {
    let (year, month, day) = civil_from_days(unix_secs.div_euclid(DAY_SECS));
    let seconds = unix_secs.rem_euclid(DAY_SECS);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}+00",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(date_digits(0), "19700101");
        assert_eq!(date_digits(1_795_392_000), "20261123");
        assert_eq!(date_digits(951_782_400), "20000229");
        assert_eq!(date_digits(-1), "19691231");
        for days in [-1_000, -1, 0, 59, 60, 11_016, 20_780, 2_932_896] {
            let secs = days * DAY_SECS;
            assert_eq!(
                parse_date_digits(&date_digits(secs)),
                Some(secs),
                "day {days}"
            );
        }
        assert_eq!(parse_date_digits("2026112"), None);
        assert_eq!(parse_date_digits("default"), None);
        assert_eq!(
            timestamp_literal(1_795_392_000 + 3661),
            "2026-11-23 01:01:01+00"
        );
    }

    #[test]
    fn periods_are_aligned_to_the_epoch() {
        assert_eq!(period_start(1_795_392_000 + 5, DAY_SECS), 1_795_392_000);
        assert_eq!(period_start(-5, DAY_SECS), -DAY_SECS);
        assert_eq!(period_start(8 * DAY_SECS, 7 * DAY_SECS), 7 * DAY_SECS);
    }
}
