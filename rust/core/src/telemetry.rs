//! What the core tells its host about itself: counters, gauges, write durations, log records and
//! database health, collected here and handed over by [`Telemetry::drain`] as JSON. The collector's
//! Go component drains it every second into the collector's own metrics and logger.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// Records kept between drains; beyond these the oldest are dropped and counted.
const MAX_LOGS: usize = 1000;
const MAX_WRITES: usize = 10_000;

/// Monotonic counters, named as the host reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Counter {
    RowsWritten,
    BytesWritten,
    BatchesWritten,
    RowsRejected,
    WriteRetries,
    DuplicateRequestsSkipped,
    RequestsRefused,
    LogRecordsDropped,
}

#[derive(Default)]
pub struct Telemetry {
    counters: Mutex<BTreeMap<(Counter, &'static str), u64>>,
    bytes_held: AtomicU64,
    writes: Mutex<VecDeque<WriteRecord>>,
    logs: Mutex<VecDeque<LogRecord>>,
    database_error: Mutex<Option<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WriteRecord {
    pub table: &'static str,
    pub seconds: f64,
    pub rows: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogRecord {
    pub level: &'static str,
    pub message: String,
    pub fields: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
struct Drained {
    counters: Vec<CounterDelta>,
    gauges: Vec<Gauge>,
    writes: Vec<WriteRecord>,
    logs: Vec<LogRecord>,
    database: Database,
}

#[derive(Serialize)]
struct CounterDelta {
    name: Counter,
    /// Empty for counters that belong to no table.
    table: &'static str,
    delta: u64,
}

#[derive(Serialize)]
struct Gauge {
    name: &'static str,
    value: u64,
}

#[derive(Serialize)]
struct Database {
    reachable: bool,
    error: String,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Telemetry {
    pub fn add(&self, counter: Counter, table: &'static str, delta: u64) {
        if delta > 0 {
            *lock(&self.counters).entry((counter, table)).or_default() += delta;
        }
    }

    pub fn set_bytes_held(&self, bytes: usize) {
        self.bytes_held.store(bytes as u64, Ordering::Relaxed);
    }

    pub fn record_write(&self, table: &'static str, elapsed: Duration, rows: u64) {
        let mut writes = lock(&self.writes);
        if writes.len() == MAX_WRITES {
            writes.pop_front();
        }
        writes.push_back(WriteRecord {
            table,
            seconds: elapsed.as_secs_f64(),
            rows,
        });
    }

    /// Remembers whether the last write reached the database, for the host's health reporting.
    pub fn set_database_error(&self, error: Option<String>) {
        *lock(&self.database_error) = error;
    }

    fn push_log(&self, record: LogRecord) {
        let dropped = {
            let mut logs = lock(&self.logs);
            let full = logs.len() == MAX_LOGS;
            if full {
                logs.pop_front();
            }
            logs.push_back(record);
            full
        };
        if dropped {
            self.add(Counter::LogRecordsDropped, "", 1);
        }
    }

    /// Everything since the previous drain, as JSON: counter deltas, current gauges, the duration of
    /// each write, log records, and whether the database is reachable.
    pub fn drain(&self, memory_limit_bytes: usize) -> String {
        let counters = std::mem::take(&mut *lock(&self.counters))
            .into_iter()
            .map(|((name, table), delta)| CounterDelta { name, table, delta })
            .collect();
        let database_error = lock(&self.database_error).clone();
        let drained = Drained {
            counters,
            gauges: vec![
                Gauge {
                    name: "bytes_held",
                    value: self.bytes_held.load(Ordering::Relaxed),
                },
                Gauge {
                    name: "memory_limit_bytes",
                    value: memory_limit_bytes as u64,
                },
            ],
            writes: lock(&self.writes).drain(..).collect(),
            logs: lock(&self.logs).drain(..).collect(),
            database: Database {
                reachable: database_error.is_none(),
                error: database_error.unwrap_or_default(),
            },
        };
        // Plain structs of strings and numbers always serialize.
        serde_json::to_string(&drained).unwrap_or_default()
    }

    /// A tracing dispatcher whose events land in this exporter's log records, so that each
    /// exporter's lines reach the host under that exporter's name.
    pub fn dispatch(self: &Arc<Self>) -> tracing::Dispatch {
        tracing::Dispatch::new(tracing_subscriber::registry().with(LogLayer(Arc::clone(self))))
    }
}

struct LogLayer(Arc<Telemetry>);

impl<S: Subscriber> Layer<S> for LogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warn",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => return,
        };
        let mut visitor = FieldVisitor {
            message: String::new(),
            fields: BTreeMap::new(),
        };
        event.record(&mut visitor);
        self.0.push_log(LogRecord {
            level,
            message: visitor.message,
            fields: visitor.fields,
        });
    }
}

struct FieldVisitor {
    message: String,
    fields: BTreeMap<&'static str, String>,
}

impl Visit for FieldVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields.insert(field.name(), value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.insert(field.name(), text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_reports_deltas_once() {
        let telemetry = Arc::new(Telemetry::default());
        telemetry.add(Counter::RowsWritten, "spans", 5);
        telemetry.add(Counter::RowsWritten, "spans", 2);
        telemetry.add(Counter::RequestsRefused, "", 1);
        telemetry.set_bytes_held(10);
        telemetry.record_write("spans", Duration::from_millis(250), 7);
        telemetry.set_database_error(Some("connection refused".into()));
        let first: serde_json::Value = serde_json::from_str(&telemetry.drain(100)).expect("JSON");
        assert_eq!(
            first["counters"],
            serde_json::json!([{"name": "rows_written", "table": "spans", "delta": 7}, {"name": "requests_refused", "table": "", "delta": 1}])
        );
        assert_eq!(
            first["gauges"],
            serde_json::json!([{"name": "bytes_held", "value": 10}, {"name": "memory_limit_bytes", "value": 100}])
        );
        assert_eq!(
            first["writes"],
            serde_json::json!([{"table": "spans", "seconds": 0.25, "rows": 7}])
        );
        assert_eq!(
            first["database"],
            serde_json::json!({"reachable": false, "error": "connection refused"})
        );

        telemetry.set_database_error(None);
        let second: serde_json::Value = serde_json::from_str(&telemetry.drain(100)).expect("JSON");
        assert_eq!(second["counters"], serde_json::json!([]));
        assert_eq!(second["writes"], serde_json::json!([]));
        assert_eq!(second["database"]["reachable"], true);
    }

    #[test]
    fn tracing_events_become_log_records_of_this_exporter_only() {
        let mine = Arc::new(Telemetry::default());
        let other = Arc::new(Telemetry::default());
        let _other_dispatch = other.dispatch();
        tracing::dispatcher::with_default(&mine.dispatch(), || {
            tracing::warn!(table = "spans", attempt = 3, "write failed, retrying");
            tracing::trace!("too fine to forward");
        });
        let drained: serde_json::Value = serde_json::from_str(&mine.drain(0)).expect("JSON");
        assert_eq!(
            drained["logs"],
            serde_json::json!([{"level": "warn", "message": "write failed, retrying", "fields": {"attempt": "3", "table": "spans"}}])
        );
        let drained: serde_json::Value = serde_json::from_str(&other.drain(0)).expect("JSON");
        assert_eq!(drained["logs"], serde_json::json!([]));
    }

    #[test]
    fn log_records_beyond_the_cap_are_counted() {
        let telemetry = Arc::new(Telemetry::default());
        tracing::dispatcher::with_default(&telemetry.dispatch(), || {
            for i in 0..MAX_LOGS + 3 {
                tracing::info!(i, "line");
            }
        });
        let drained: serde_json::Value = serde_json::from_str(&telemetry.drain(0)).expect("JSON");
        assert_eq!(drained["logs"].as_array().map(Vec::len), Some(MAX_LOGS));
        assert_eq!(drained["logs"][0]["fields"]["i"], "3");
        assert_eq!(
            drained["counters"],
            serde_json::json!([{"name": "log_records_dropped", "table": "", "delta": 3}])
        );
    }
}
