//! Merges concurrent export requests into large writes, retries transient failures with backoff,
//! and acknowledges each request once its rows are committed.
//!
//! Each table has a queue and `pool_size` workers. A worker takes the first queued request and
//! whatever else is already waiting (up to `max_batch_rows`), writes them in one transaction, and
//! answers every request of the batch. Nothing waits to fill a batch: under light load a request is
//! written alone at once, under heavy load batches grow by themselves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::instrument::WithSubscriber;

use crate::error::{Error, ErrorKind};
use crate::limiter::Reservation;
use crate::sink::{Pending, Rows, Sink, Stored};
use crate::telemetry::{Counter, Telemetry};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One export request's rows on their way to the database.
pub struct Job<R> {
    pub request_id: [u8; 16],
    pub rows: R,
    /// When the caller stops waiting; `None` in fire-and-forget mode.
    pub deadline: Option<Instant>,
    /// Where the outcome goes; `None` in fire-and-forget mode.
    pub ack: Option<oneshot::Sender<Result<Stored, Error>>>,
    pub reservation: Reservation,
}

pub struct BatchWriter<S: Sink> {
    sender: Mutex<Option<mpsc::UnboundedSender<Job<S::Rows>>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    shared: Arc<Shared<S>>,
}

struct Shared<S: Sink> {
    receiver: tokio::sync::Mutex<mpsc::UnboundedReceiver<Job<S::Rows>>>,
    sink: Arc<S>,
    /// What telemetry calls this writer's data: "spans", "logs" or "metrics".
    name: &'static str,
    telemetry: Arc<Telemetry>,
    max_batch_rows: u64,
    write_timeout: Duration,
    /// Rows accepted and not yet answered.
    rows_held: AtomicU64,
    /// Rows accepted without a caller waiting (fire and forget) whose write was given up at shutdown.
    rows_abandoned: AtomicU64,
    /// Set at shutdown: retrying stops then.
    give_up_at: Mutex<Option<Instant>>,
}

#[derive(Clone, Copy)]
pub struct WriterSettings {
    pub workers: usize,
    pub max_batch_rows: usize,
    pub write_timeout: Duration,
}

impl<S: Sink> BatchWriter<S> {
    /// Starts the workers on the current runtime, logging through `dispatch`.
    pub fn start(
        sink: Arc<S>,
        name: &'static str,
        telemetry: Arc<Telemetry>,
        settings: WriterSettings,
        dispatch: &tracing::Dispatch,
    ) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            receiver: tokio::sync::Mutex::new(receiver),
            sink,
            name,
            telemetry,
            max_batch_rows: settings.max_batch_rows as u64,
            write_timeout: settings.write_timeout,
            rows_held: AtomicU64::new(0),
            rows_abandoned: AtomicU64::new(0),
            give_up_at: Mutex::new(None),
        });
        let workers = (0..settings.workers)
            .map(|_| tokio::spawn(Arc::clone(&shared).work().with_subscriber(dispatch.clone())))
            .collect();
        Self {
            sender: Mutex::new(Some(sender)),
            workers: Mutex::new(workers),
            shared,
        }
    }

    pub fn name(&self) -> &'static str {
        self.shared.name
    }

    pub fn submit(&self, job: Job<S::Rows>) -> Result<(), Error> {
        let rows = job.rows.rows();
        let sender = self
            .sender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let sender = sender.as_ref().ok_or(Error::ShutDown)?;
        self.shared.rows_held.fetch_add(rows, Ordering::SeqCst);
        sender.send(job).map_err(|_| {
            self.shared.rows_held.fetch_sub(rows, Ordering::SeqCst);
            Error::ShutDown
        })
    }

    /// Takes no new requests, writes every queued one until `deadline` (retrying until then), and
    /// reports how many accepted rows were left unwritten, if any: those still queued or cut off
    /// mid-write, and those of fire-and-forget requests whose write was given up.
    pub async fn shutdown(&self, deadline: Instant) -> Result<(), Error> {
        *self
            .shared
            .give_up_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(deadline);
        self.sender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let workers = std::mem::take(
            &mut *self
                .workers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for worker in workers {
            let abort = worker.abort_handle();
            if tokio::time::timeout_at(deadline.into(), worker)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        // Jobs still queued or cut off mid-write are dropped here; their callers hear that the
        // exporter shut down before writing them, and rows_held still counts them.
        let mut receiver = self.shared.receiver.lock().await;
        receiver.close();
        while receiver.try_recv().is_ok() {}
        let unwritten = self.shared.rows_held.load(Ordering::SeqCst)
            + self.shared.rows_abandoned.load(Ordering::SeqCst);
        if unwritten > 0 {
            tracing::error!(
                rows = unwritten,
                "shutdown deadline passed before every accepted row was written"
            );
            return Err(Error::ShutdownTimedOut { rows: unwritten });
        }
        Ok(())
    }
}

impl<S: Sink> Shared<S> {
    async fn work(self: Arc<Self>) {
        while let Some(batch) = self.next_batch().await {
            self.write_with_retries(batch).await;
        }
    }

    /// The first queued job and every other one already waiting, up to the row limit.
    async fn next_batch(&self) -> Option<Vec<Job<S::Rows>>> {
        let mut receiver = self.receiver.lock().await;
        let first = receiver.recv().await?;
        let mut rows = first.rows.rows();
        let mut batch = vec![first];
        while rows < self.max_batch_rows {
            match receiver.try_recv() {
                Ok(job) => {
                    rows += job.rows.rows();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        Some(batch)
    }

    async fn write_with_retries(&self, mut batch: Vec<Job<S::Rows>>) {
        let table = self.name;
        let mut backoff = FIRST_BACKOFF;
        let mut last_error: Option<Error> = None;
        loop {
            let now = Instant::now();
            // A caller that stopped waiting gets the last error; it retries through the collector,
            // and the request id keeps a later success from storing it twice.
            let (expired, waiting): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .partition(|job| job.deadline.is_some_and(|d| d <= now));
            batch = waiting;
            for job in expired {
                let last = last_error
                    .as_ref()
                    .map_or_else(|| "none yet".to_owned(), ToString::to_string);
                self.answer(job, Err(Error::DeadlineExceeded { last_error: last }));
            }
            if batch.is_empty() {
                return;
            }

            let give_up_at = *self
                .give_up_at
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let nearest_deadline = batch.iter().filter_map(|j| j.deadline).min();
            let attempt_ends = [give_up_at, nearest_deadline]
                .into_iter()
                .flatten()
                .fold(now + self.write_timeout, Instant::min);
            let pending: Vec<Pending<'_, S::Rows>> = batch
                .iter()
                .map(|job| Pending {
                    request_id: job.request_id,
                    rows: &job.rows,
                })
                .collect();
            let started = Instant::now();
            let attempt =
                tokio::time::timeout_at(attempt_ends.into(), self.sink.write(&pending)).await;
            drop(pending);
            let result = attempt.unwrap_or_else(|_| Err(Error::WriteTimeout(attempt_ends - now)));
            match result {
                Ok(outcomes) => {
                    self.record_success(
                        table,
                        started.elapsed(),
                        &outcomes,
                        batch.iter().map(|j| j.rows.bytes()).sum(),
                    );
                    for (job, stored) in batch.into_iter().zip(outcomes) {
                        self.answer(job, Ok(stored));
                    }
                    return;
                }
                Err(error) if error.kind() == ErrorKind::Retryable => {
                    self.telemetry.add(Counter::WriteRetries, table, 1);
                    self.telemetry.set_database_error(Some(error.to_string()));
                    tracing::warn!(table = table, requests = batch.len(), %error, retry_in = ?backoff, "write failed, retrying");
                    if give_up_at.is_some_and(|at| Instant::now() + backoff >= at) {
                        for job in batch {
                            if job.ack.is_none() {
                                self.rows_abandoned
                                    .fetch_add(job.rows.rows(), Ordering::SeqCst);
                            }
                            self.answer(job, Err(error.for_each_call()));
                        }
                        return;
                    }
                    // Sleep no longer than the nearest caller waits, so it hears back in time.
                    let wake = nearest_deadline.map_or(Instant::now() + backoff, |d| {
                        d.min(Instant::now() + backoff)
                    });
                    tokio::time::sleep_until(wake.into()).await;
                    backoff = jittered(backoff * 2).min(MAX_BACKOFF);
                    last_error = Some(error);
                }
                Err(error) => {
                    self.telemetry.add(
                        Counter::RowsRejected,
                        table,
                        batch.iter().map(|j| j.rows.rows()).sum(),
                    );
                    tracing::error!(table = table, requests = batch.len(), %error, "write failed permanently");
                    for job in batch {
                        self.answer(job, Err(error.for_each_call()));
                    }
                    return;
                }
            }
        }
    }

    fn record_success(
        &self,
        table: &'static str,
        elapsed: Duration,
        outcomes: &[Stored],
        bytes: usize,
    ) {
        let written: u64 = outcomes.iter().map(|s| s.written).sum();
        self.telemetry.add(Counter::RowsWritten, table, written);
        self.telemetry
            .add(Counter::BytesWritten, table, bytes as u64);
        self.telemetry.add(Counter::BatchesWritten, table, 1);
        self.telemetry.add(
            Counter::RowsRejected,
            table,
            outcomes.iter().map(|s| s.rejected).sum(),
        );
        self.telemetry.add(
            Counter::DuplicateRequestsSkipped,
            table,
            outcomes.iter().filter(|s| s.duplicate).count() as u64,
        );
        self.telemetry.record_write(table, elapsed, written);
        self.telemetry.set_database_error(None);
    }

    fn answer(&self, job: Job<S::Rows>, outcome: Result<Stored, Error>) {
        let Job {
            rows,
            ack,
            reservation,
            ..
        } = job;
        drop(reservation);
        let rows = rows.rows();
        self.rows_held.fetch_sub(rows, Ordering::SeqCst);
        match ack {
            // The caller may have given up already; then nobody needs the answer.
            Some(ack) => drop(ack.send(outcome)),
            None => {
                if let Err(error) = outcome {
                    tracing::error!(%error, rows, "accepted rows were not written");
                }
            }
        }
    }
}

/// Spreads retries of many writers apart: a random delay between half and all of `delay`.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(0.5 + fastrand::f64() * 0.5)
}
