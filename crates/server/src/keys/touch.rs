//! Writing when each key was last used, off the request's path: the guard queues a touch
//! ([`Touches::send`], never waiting: a full queue drops it), one task the service owns writes
//! them in turn ([`Toucher`]), and at shutdown writes what is queued and ends.

use codex_pool_store::ThreadStore;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Touches queued at most: each key is touched at most once a minute per node, so the queue
/// holds about one per key in use; past it a touch is dropped (the next one, a minute later,
/// writes it).
const QUEUE: usize = 256;

/// Where the guard queues touches: a key's id and when it was used (ms since the epoch).
#[derive(Clone)]
pub(crate) struct Touches(mpsc::Sender<(String, i64)>);

impl Touches {
    /// Queues a touch of key `id` at `at_ms`; false when it was dropped (queue full, or the
    /// service is shutting down).
    pub(crate) fn send(&self, id: &str, at_ms: i64) -> bool {
        self.0.try_send((id.to_owned(), at_ms)).is_ok()
    }
}

/// The task that writes the touches; the service stops it at shutdown ([`Toucher::stop`]).
pub(crate) struct Toucher {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Starts the task writing touches to `store`.
pub(crate) fn start(store: Arc<dyn ThreadStore>) -> (Touches, Toucher) {
    let (tx, mut rx) = mpsc::channel::<(String, i64)>(QUEUE);
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                touch = rx.recv() => match touch {
                    Some((id, at_ms)) => write(&*store, &id, at_ms).await,
                    None => return,
                },
                _ = &mut stopped => break,
            }
        }
        // Shutting down: nothing more comes in; what is queued is written.
        rx.close();
        while let Some((id, at_ms)) = rx.recv().await {
            write(&*store, &id, at_ms).await;
        }
    });
    (Touches(tx), Toucher { stop, task })
}

async fn write(store: &dyn ThreadStore, id: &str, at_ms: i64) {
    if let Err(e) = store.keys().touch_key(id, at_ms).await {
        tracing::debug!(key = %id, error = %e, "a key's last use could not be written");
    }
}

impl Toucher {
    /// Takes no more touches, writes those queued, and ends; within `grace`, or the task is
    /// aborted (a store that does not answer).
    pub(crate) async fn stop(self, grace: Duration) {
        let Toucher { stop, mut task } = self;
        let _ = stop.send(());
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            tracing::warn!("keys' last use still being written after the grace period; stopping");
            task.abort();
            let _ = task.await;
        }
    }
}
