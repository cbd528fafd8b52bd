//! Counters of what the pool does, for monitoring: conversations rebuilt from the store, and
//! turns that waited for room on their process. Each is counted where it happens (placement,
//! the turn permits); [`PoolStats`](crate::PoolStats) reports them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The pool's counters; they only go up.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    rebuilds: AtomicU64,
    queue_waits: AtomicU64,
    queue_wait_us: AtomicU64,
    queue_timeouts: AtomicU64,
    refused_full: AtomicU64,
}

/// A snapshot of the pool's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct PoolCounters {
    /// Conversations rebuilt on a process from the store's history (after a crash, an idle
    /// unload, a release or a restart).
    pub rebuilds: u64,
    /// Turns that found their process full and waited for room.
    pub queue_waits: u64,
    /// Time those turns waited, added up, in seconds.
    pub queue_wait_seconds: f64,
    /// Turns that waited in vain and were refused as overloaded.
    pub queue_timeouts: u64,
    /// Turns refused at once because their process was full (they asked not to wait:
    /// [`TurnOptions::refuse_when_full`](crate::TurnOptions::refuse_when_full)).
    pub refused_full: u64,
}

impl Counters {
    pub(crate) fn rebuilt(&self) {
        self.rebuilds.fetch_add(1, Ordering::Relaxed);
    }

    /// A turn waited `waited` for room; `got_in` tells whether it got it.
    pub(crate) fn waited(&self, waited: Duration, got_in: bool) {
        self.queue_waits.fetch_add(1, Ordering::Relaxed);
        self.queue_wait_us.fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        if !got_in {
            self.queue_timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A turn found its process full and did not wait.
    pub(crate) fn refused_full(&self) {
        self.refused_full.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> PoolCounters {
        PoolCounters {
            rebuilds: self.rebuilds.load(Ordering::Relaxed),
            queue_waits: self.queue_waits.load(Ordering::Relaxed),
            queue_wait_seconds: self.queue_wait_us.load(Ordering::Relaxed) as f64 / 1e6,
            queue_timeouts: self.queue_timeouts.load(Ordering::Relaxed),
            refused_full: self.refused_full.load(Ordering::Relaxed),
        }
    }
}
