//! A hard limit on the bytes of encoded rows the core holds, queued or being written. Data above
//! the limit is refused with a retryable error, so the collector's queue and receivers push back on
//! clients instead of the process growing without bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::Error;
use crate::telemetry::{Counter, Telemetry};

pub struct MemoryLimiter {
    limit: usize,
    held: AtomicUsize,
    telemetry: Arc<Telemetry>,
}

/// Bytes held until this is dropped.
pub struct Reservation {
    limiter: Arc<MemoryLimiter>,
    bytes: usize,
}

impl MemoryLimiter {
    pub fn new(limit: usize, telemetry: Arc<Telemetry>) -> Arc<Self> {
        Arc::new(Self {
            limit,
            held: AtomicUsize::new(0),
            telemetry,
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Reserves `bytes`, or refuses with a retryable error when they do not fit beside what is
    /// held. A request larger than the whole limit is admitted when nothing else is held, so every
    /// valid request can be written eventually: the core then holds at most the limit or the
    /// largest single request, whichever is more.
    pub fn try_reserve(self: &Arc<Self>, bytes: usize) -> Result<Reservation, Error> {
        let reserved = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held == 0 || held + bytes <= self.limit).then_some(held + bytes)
            });
        match reserved {
            Ok(before) => {
                self.telemetry.set_bytes_held(before + bytes);
                Ok(Reservation {
                    limiter: Arc::clone(self),
                    bytes,
                })
            }
            Err(held) => {
                self.telemetry.add(Counter::RequestsRefused, "", 1);
                Err(Error::MemoryLimit {
                    bytes,
                    held,
                    limit: self.limit,
                })
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let before = self.limiter.held.fetch_sub(self.bytes, Ordering::AcqRel);
        self.limiter.telemetry.set_bytes_held(before - self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn refuses_above_the_limit_and_frees_on_drop() {
        let limiter = MemoryLimiter::new(100, Arc::new(Telemetry::default()));
        let first = limiter.try_reserve(60).expect("fits");
        let refused = limiter.try_reserve(50).err().expect("over the limit");
        assert_eq!(refused.kind(), ErrorKind::Retryable);
        assert_eq!(
            refused.to_string(),
            "memory limit reached: 50 bytes do not fit beside the 60 held (limit 100 bytes)"
        );
        drop(first);
        let _second = limiter.try_reserve(100).expect("fits again once freed");
    }

    #[test]
    fn a_request_larger_than_the_whole_limit_is_admitted_alone() {
        let limiter = MemoryLimiter::new(100, Arc::new(Telemetry::default()));
        let alone = limiter.try_reserve(150).expect("nothing else held");
        assert_eq!(
            limiter.try_reserve(1).err().map(|e| e.kind()),
            Some(ErrorKind::Retryable)
        );
        drop(alone);
        let small = limiter.try_reserve(10).expect("fits");
        assert_eq!(
            limiter.try_reserve(150).err().map(|e| e.kind()),
            Some(ErrorKind::Retryable)
        );
        drop(small);
    }
}
