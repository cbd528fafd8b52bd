//! Counters of one process, readable without asking the actor.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[derive(Debug)]
pub(crate) struct SharedStats {
    pub active_turns: AtomicUsize,
    pub loaded_threads: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub turns_started: AtomicU64,
    pub turns_completed: AtomicU64,
    /// When the counters started.
    born: tokio::time::Instant,
    /// When codex last wrote a line to stdout, in ms since `born`.
    heard_ms: AtomicU64,
}

impl Default for SharedStats {
    fn default() -> Self {
        Self {
            active_turns: AtomicUsize::new(0),
            loaded_threads: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            turns_started: AtomicU64::new(0),
            turns_completed: AtomicU64::new(0),
            born: tokio::time::Instant::now(),
            heard_ms: AtomicU64::new(0),
        }
    }
}

/// A snapshot of one process's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProcessStats {
    /// OS process id.
    pub pid: u32,
    /// Turns running now.
    pub active_turns: usize,
    /// Threads this process announced as started and has not closed.
    pub loaded_threads: usize,
    /// Requests awaiting an answer.
    pub in_flight: usize,
    /// Turns started since spawn.
    pub turns_started: u64,
    /// Turns codex completed since spawn.
    pub turns_completed: u64,
}

impl SharedStats {
    /// codex wrote a line.
    pub(crate) fn heard(&self) {
        self.heard_ms.store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long codex has written nothing.
    pub(crate) fn quiet_for(&self) -> std::time::Duration {
        let heard = std::time::Duration::from_millis(self.heard_ms.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(heard)
    }

    pub(crate) fn snapshot(&self, pid: u32) -> ProcessStats {
        ProcessStats {
            pid,
            active_turns: self.active_turns.load(Ordering::Relaxed),
            loaded_threads: self.loaded_threads.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            turns_started: self.turns_started.load(Ordering::Relaxed),
            turns_completed: self.turns_completed.load(Ordering::Relaxed),
        }
    }
}
