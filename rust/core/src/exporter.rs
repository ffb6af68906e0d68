//! An exporter: one configuration, one runtime, one sink (PostgreSQL or ClickHouse) with a batch
//! writer per signal and a maintenance task. Export calls come from any thread; decoding and encoding run on the caller's
//! thread, I/O on the runtime.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tracing::instrument::WithSubscriber;

use crate::batch::{BatchWriter, Job, WriterSettings};
use crate::config::{Acknowledge, Backend, Config};
use crate::error::Error;
use crate::limiter::MemoryLimiter;
use crate::signal::Signal;
use crate::sink::clickhouse::ClickHouseSink;
use crate::sink::postgres::PostgresSink;
use crate::sink::{Rows, Sink, Stored};
use crate::telemetry::{Counter, Telemetry};

pub struct Exporter {
    runtime: Runtime,
    pipeline: Pipeline,
    limiter: Arc<MemoryLimiter>,
    telemetry: Arc<Telemetry>,
    dispatch: tracing::Dispatch,
    acknowledge: Acknowledge,
    calls: CallGate,
}

/// Summary of one successful export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Rows stored by this call; 0 when the request had been stored before.
    pub rows: u64,
}

impl Exporter {
    pub fn new(config: Config) -> Result<Self, Error> {
        config.validate()?;
        // Two workers drive the connections' I/O; decoding and encoding run on the caller's thread.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("otelstore-io")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let telemetry = Arc::new(Telemetry::default());
        let dispatch = telemetry.dispatch();
        let limiter = MemoryLimiter::new(config.memory_limit_bytes(), Arc::clone(&telemetry));
        // The pool's timers and the writer tasks belong to this runtime.
        let entered = runtime.enter();
        let interval = config.postgres.maintenance_interval.0;
        let settings = |workers| WriterSettings {
            workers,
            max_batch_rows: config.max_batch_rows,
            write_timeout: config.write_timeout.0,
        };
        let pipeline = match config.backend() {
            Backend::Postgres => {
                let sink = PostgresSink::new(&config.postgres, &config.retention)?;
                Pipeline::Postgres(Writers::start(
                    sink,
                    settings(config.postgres.pool_size),
                    &telemetry,
                    &dispatch,
                    interval,
                ))
            }
            Backend::ClickHouse => {
                let sink = ClickHouseSink::new(&config.clickhouse, &config.retention)?;
                Pipeline::ClickHouse(Writers::start(
                    sink,
                    settings(config.clickhouse.parallel_inserts),
                    &telemetry,
                    &dispatch,
                    interval,
                ))
            }
        };
        drop(entered);
        Ok(Self {
            runtime,
            pipeline,
            limiter,
            telemetry,
            dispatch,
            acknowledge: config.acknowledge,
            calls: CallGate::default(),
        })
    }

    /// Decodes one OTLP request and hands its rows to the signal's writer. With `acknowledge:
    /// committed` this returns once they are committed, or with the last error when `timeout` runs
    /// out first.
    pub fn export(
        &self,
        signal: Signal,
        otlp: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Written, Error> {
        let _call = self.calls.enter()?;
        let deadline = timeout.map(|t| Instant::now() + t);
        tracing::dispatcher::with_default(&self.dispatch, || {
            self.export_signal(signal, otlp, deadline)
        })
    }

    fn export_signal(
        &self,
        signal: Signal,
        otlp: &[u8],
        deadline: Option<Instant>,
    ) -> Result<Written, Error> {
        match &self.pipeline {
            Pipeline::Postgres(writers) => {
                self.export_to(writers.writer(signal), signal, otlp, deadline)
            }
            Pipeline::ClickHouse(writers) => {
                self.export_to(writers.writer(signal), signal, otlp, deadline)
            }
        }
    }

    fn export_to<S: Sink>(
        &self,
        writer: &BatchWriter<S>,
        signal: Signal,
        otlp: &[u8],
        deadline: Option<Instant>,
    ) -> Result<Written, Error> {
        let encoded = S::encode(signal, otlp).map_err(|source| Error::Decode {
            signal,
            len: otlp.len(),
            source,
        })?;
        let rows = encoded.rows.rows();
        let stored = if encoded.rows.is_empty() {
            Stored::default()
        } else {
            let reservation = self.limiter.try_reserve(encoded.rows.bytes())?;
            let request_id = request_id(signal, otlp);
            match self.acknowledge {
                Acknowledge::Accepted => {
                    writer.submit(Job {
                        request_id,
                        rows: encoded.rows,
                        deadline: None,
                        ack: None,
                        reservation,
                    })?;
                    Stored {
                        written: rows,
                        ..Default::default()
                    }
                }
                Acknowledge::Committed => {
                    let (ack, answer) = oneshot::channel();
                    writer.submit(Job {
                        request_id,
                        rows: encoded.rows,
                        deadline,
                        ack: Some(ack),
                        reservation,
                    })?;
                    self.wait(answer, deadline)?
                }
            }
        };
        // Items the tables cannot take never reach the writer, which counts the database's refusals.
        self.telemetry
            .add(Counter::RowsRejected, writer.name(), encoded.rejected);
        let rejected = encoded.rejected + stored.rejected;
        match encoded.first_rejection.or(stored.first_rejection) {
            Some(first) if rejected > 0 => Err(Error::RowsRejected {
                signal,
                written: stored.written,
                rejected,
                first,
            }),
            _ => Ok(Written {
                rows: stored.written,
            }),
        }
    }

    /// Waits for the writer's answer, but not much past the caller's deadline: a request still
    /// queued then is reported as not written (and, if it is written later, its retry is
    /// recognized). The writer answers at the deadline itself, with the last error it saw; the
    /// grace lets that answer win over the bare timeout.
    fn wait<T>(
        &self,
        answer: oneshot::Receiver<Result<T, Error>>,
        deadline: Option<Instant>,
    ) -> Result<T, Error> {
        const GRACE: Duration = Duration::from_millis(50);
        self.runtime.block_on(async {
            let answered = match deadline {
                Some(deadline) => tokio::time::timeout_at((deadline + GRACE).into(), answer)
                    .await
                    .map_err(|_| Error::DeadlineExceeded {
                        last_error: "still queued behind other writes".to_owned(),
                    })?,
                None => answer.await,
            };
            answered.map_err(|_| Error::ShutDownBeforeWrite)?
        })
    }

    /// Refuses new calls, writes everything accepted within `timeout`, and closes the connections.
    /// Reports how many rows could not be written in time. Calling it again is harmless.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        self.calls.close();
        tracing::dispatcher::with_default(&self.dispatch, || {
            self.runtime.block_on(async {
                match &self.pipeline {
                    Pipeline::Postgres(writers) => writers.shutdown(deadline, &self.calls).await,
                    Pipeline::ClickHouse(writers) => writers.shutdown(deadline, &self.calls).await,
                }
            })
        })
    }

    /// Telemetry since the previous call, as JSON (see [`Telemetry::drain`]).
    pub fn drain_telemetry(&self) -> String {
        self.telemetry.drain(self.limiter.limit())
    }
}

/// The backend the exporter writes to, with its writers.
enum Pipeline {
    Postgres(Writers<PostgresSink>),
    ClickHouse(Writers<ClickHouseSink>),
}

/// A sink, a batch writer per signal, and the sink's maintenance task.
struct Writers<S: Sink> {
    sink: Arc<S>,
    spans: BatchWriter<S>,
    logs: BatchWriter<S>,
    metrics: BatchWriter<S>,
    maintenance: JoinHandle<()>,
}

impl<S: Sink> Writers<S> {
    /// Starts the writers and the maintenance on the current runtime.
    fn start(
        sink: S,
        settings: WriterSettings,
        telemetry: &Arc<Telemetry>,
        dispatch: &tracing::Dispatch,
        maintenance_interval: Duration,
    ) -> Self {
        let sink = Arc::new(sink);
        let writer = |name| {
            BatchWriter::start(
                Arc::clone(&sink),
                name,
                Arc::clone(telemetry),
                settings,
                dispatch,
            )
        };
        let (spans, logs, metrics) = (writer("spans"), writer("logs"), writer("metrics"));
        let maintenance = tokio::spawn(
            maintain(Arc::clone(&sink), maintenance_interval).with_subscriber(dispatch.clone()),
        );
        Self {
            sink,
            spans,
            logs,
            metrics,
            maintenance,
        }
    }

    fn writer(&self, signal: Signal) -> &BatchWriter<S> {
        match signal {
            Signal::Traces => &self.spans,
            Signal::Logs => &self.logs,
            Signal::Metrics => &self.metrics,
        }
    }

    async fn shutdown(&self, deadline: Instant, calls: &CallGate) -> Result<(), Error> {
        self.maintenance.abort();
        let (spans, logs, metrics) = tokio::join!(
            self.spans.shutdown(deadline),
            self.logs.shutdown(deadline),
            self.metrics.shutdown(deadline)
        );
        let _ = tokio::time::timeout_at(deadline.into(), calls.drained()).await;
        self.sink.close();
        unwritten_rows([spans, logs, metrics])
    }
}

/// The writers' shutdown results as one: the rows none of them could write.
fn unwritten_rows(results: [Result<(), Error>; 3]) -> Result<(), Error> {
    let mut rows = 0;
    for result in results {
        match result {
            Ok(()) => {}
            Err(Error::ShutdownTimedOut { rows: unwritten }) => rows += unwritten,
            Err(other) => return Err(other),
        }
    }
    if rows > 0 {
        return Err(Error::ShutdownTimedOut { rows });
    }
    Ok(())
}

/// Runs the sink's maintenance every `interval`, the first time at once. A failure is logged and
/// the next run tries again.
async fn maintain<S: Sink>(sink: Arc<S>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = sink.maintain().await {
            tracing::warn!(%error, "maintenance failed; it runs again in {interval:?}");
        }
    }
}

/// Identifies a request by its content, so the same request retried (by the collector, or after a
/// restart from its persistent queue) has the same id.
fn request_id(signal: Signal, otlp: &[u8]) -> [u8; 16] {
    xxhash_rust::xxh3::xxh3_128_with_seed(otlp, signal as u64).to_be_bytes()
}

/// Counts the export calls under way, and refuses new ones once closed.
#[derive(Default)]
struct CallGate {
    closed: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

struct CallGuard<'a>(&'a CallGate);

impl CallGate {
    fn enter(&self) -> Result<CallGuard<'_>, Error> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = CallGuard(self);
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::ShutDown);
        }
        Ok(guard)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    async fn drained(&self) {
        loop {
            let notified = self.idle.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
