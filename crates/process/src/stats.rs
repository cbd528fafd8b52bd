//! Counters of one process, readable without asking the actor.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[derive(Debug, Default)]
pub(crate) struct SharedStats {
    pub active_turns: AtomicUsize,
    pub loaded_threads: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub turns_started: AtomicU64,
    pub turns_completed: AtomicU64,
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
