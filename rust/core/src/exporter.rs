//! An exporter: one configuration, one runtime, one sink. Export calls come from any thread.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::sync::Notify;

use crate::config::Config;
use crate::decode::{self, Signal};
use crate::error::Error;
use crate::sink::postgres::{spans, PostgresSink};

pub struct Exporter {
    runtime: Runtime,
    postgres: PostgresSink,
    calls: CallGate,
}

/// Summary of one successful export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
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
        let postgres = {
            let _entered = runtime.enter();
            PostgresSink::new(&config.postgres)?
        };
        Ok(Self { runtime, postgres, calls: CallGate::default() })
    }

    /// Decodes one OTLP request and writes it. Returns once the rows are committed.
    pub fn export(&self, signal: Signal, otlp: &[u8]) -> Result<Written, Error> {
        let _call = self.calls.enter()?;
        match signal {
            Signal::Traces => {
                let request = decode::traces(otlp)?;
                let encoded = spans::encode(&request);
                let written = self.runtime.block_on(self.postgres.write_spans(encoded.rows))?;
                match encoded.first_rejection {
                    Some(first) => Err(Error::RowsRejected { written, rejected: encoded.rejected, first }),
                    None => Ok(Written { rows: written }),
                }
            }
            Signal::Logs | Signal::Metrics => Err(Error::UnsupportedSignal { signal }),
        }
    }

    /// Refuses new calls, waits up to `timeout` for the calls under way to finish, and closes the
    /// connections. Calling it again is harmless.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        self.calls.close();
        let drained = self.runtime.block_on(async { tokio::time::timeout(timeout, self.calls.drained()).await.is_ok() });
        self.postgres.close();
        if drained {
            Ok(())
        } else {
            Err(Error::ShutdownTimedOut { in_flight: self.calls.in_flight() })
        }
    }
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

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    async fn drained(&self) {
        loop {
            let notified = self.idle.notified();
            if self.in_flight() == 0 {
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
