//! Errors of the pool.

use codex_pool_process::{ProcessError, SpawnError};
use codex_pool_store::StoreError;

/// What can go wrong in the pool.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No process could be started.
    #[error("no codex process could be started: {0}")]
    NoProcess(String),
    /// Every process is down right now (they are being restarted).
    #[error("no codex process is available right now; retry shortly")]
    Unavailable,
    /// The pool is shutting down or has shut down.
    #[error("the pool is shut down")]
    ShutDown,
    /// The thread id is not known to the pool or its store.
    #[error("unknown thread {0}")]
    UnknownThread(String),
    /// A turn is already running on the thread.
    #[error("thread {0} already has a turn running; wait for it to end or interrupt it")]
    ThreadBusy(String),
    /// No turn is running on the thread.
    #[error("thread {0} has no turn running")]
    NoActiveTurn(String),
    /// The thread's process has no room for another turn.
    #[error("the codex process of thread {thread_id} already runs {limit} turns; retry later")]
    Overloaded {
        /// The thread.
        thread_id: String,
        /// The per-process limit.
        limit: usize,
    },
    /// The conversation could not be rebuilt on a live process from its stored history.
    #[error("thread {thread_id} could not be rebuilt on a codex process: {source}")]
    Rebuild {
        /// The thread.
        thread_id: String,
        /// What codex answered.
        source: ProcessError,
    },
    /// A request to a process failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A process could not be spawned.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// The thread store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
