//! Writing to the store off the turn's path. [`StoreWriter`] owns the write queue, the task that
//! empties it (started with the pool), and its flush. Whatever is queued when the task gets to
//! it is written in one batch, so under load many turns share one transaction; each turn's
//! writer learns the outcome from its [`WriteTicket`].

use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_store::{ConversationId, Fence, StoreError, ThreadStore, TurnRecord};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// One write, or a request about the queue.
enum Op {
    /// What a turn added; the outcome goes to the ticket.
    Turn(TurnRecord, oneshot::Sender<Result<(), StoreError>>),
    /// The conversation's settings changed (under the lease with this fence, if any).
    Settings(ConversationId, ThreadSettings, Option<Fence>),
    /// Answer once everything queued before is written.
    Flush(oneshot::Sender<()>),
    /// Write everything queued before, then stop.
    Close,
}

/// The outcome of one turn's write, once the writer has done it.
pub(crate) struct WriteTicket(oneshot::Receiver<Result<(), StoreError>>);

impl Future for WriteTicket {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|answer| {
            answer.unwrap_or_else(|_| {
                Err(StoreError::Unavailable { backend: "pool", message: "the store writer has stopped".to_owned() })
            })
        })
    }
}

enum Lifecycle {
    /// Not started: writes wait in the queue.
    Idle(mpsc::UnboundedReceiver<Op>),
    Running(JoinHandle<()>),
    Closed,
}

/// The store's write queue and the task that empties it. Cheap to share (`Arc`).
pub(crate) struct StoreWriter {
    store: Arc<dyn ThreadStore>,
    ops: mpsc::UnboundedSender<Op>,
    lifecycle: Mutex<Lifecycle>,
}

impl StoreWriter {
    pub(crate) fn new(store: Arc<dyn ThreadStore>) -> Self {
        let (ops, rx) = mpsc::unbounded_channel();
        Self { store, ops, lifecycle: Mutex::new(Lifecycle::Idle(rx)) }
    }

    fn lifecycle(&self) -> std::sync::MutexGuard<'_, Lifecycle> {
        self.lifecycle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts writing (once; later calls do nothing).
    pub(crate) fn start(&self) {
        let mut lifecycle = self.lifecycle();
        if let Lifecycle::Idle(_) = &*lifecycle {
            let Lifecycle::Idle(rx) = std::mem::replace(&mut *lifecycle, Lifecycle::Closed) else { unreachable!() };
            *lifecycle = Lifecycle::Running(tokio::spawn(write(self.store.clone(), rx)));
        }
    }

    /// Queues what a turn added.
    pub(crate) fn record(&self, record: TurnRecord) -> WriteTicket {
        let (done, ticket) = oneshot::channel();
        // A closed writer drops the sender: the ticket then says the writer has stopped.
        let _ = self.ops.send(Op::Turn(record, done));
        WriteTicket(ticket)
    }

    /// Queues new settings of a conversation, written under `fence` (see
    /// [`TurnRecord::fence`]).
    pub(crate) fn update_settings(&self, id: ConversationId, settings: ThreadSettings, fence: Option<Fence>) {
        let _ = self.ops.send(Op::Settings(id, settings, fence));
    }

    /// Waits until every write queued so far is done (at once when the writer never started:
    /// nothing is being written then).
    pub(crate) async fn flush(&self) {
        if !matches!(&*self.lifecycle(), Lifecycle::Running(_)) {
            return;
        }
        let (done, wait) = oneshot::channel();
        if self.ops.send(Op::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Writes what is queued, ends the task, and lets the store shrink its files. Later writes
    /// fail their tickets.
    pub(crate) async fn close(&self) {
        let task = match std::mem::replace(&mut *self.lifecycle(), Lifecycle::Closed) {
            Lifecycle::Running(task) => Some(task),
            Lifecycle::Idle(_) | Lifecycle::Closed => None,
        };
        if let Some(task) = task {
            let _ = self.ops.send(Op::Close);
            let _ = task.await;
        }
        if let Err(e) = self.store.close().await {
            tracing::warn!(error = %e, "the thread store could not shrink its files on close");
        }
    }
}

/// The writer task: batches what is queued, in order.
async fn write(store: Arc<dyn ThreadStore>, mut rx: mpsc::UnboundedReceiver<Op>) {
    let mut ops = Vec::new();
    let mut open = true;
    while open && rx.recv_many(&mut ops, 1024).await > 0 {
        let mut turns = Vec::new();
        for op in ops.drain(..) {
            match op {
                Op::Turn(record, done) => turns.push((record, done)),
                Op::Settings(id, settings, fence) => {
                    write_turns(&*store, &mut turns).await;
                    if let Err(e) = store.update_settings(&id, settings, fence).await {
                        tracing::warn!(conversation = %id, error = %e, "could not update a conversation's settings");
                    }
                }
                Op::Flush(done) => {
                    write_turns(&*store, &mut turns).await;
                    let _ = done.send(());
                }
                Op::Close => open = false,
            }
        }
        write_turns(&*store, &mut turns).await;
    }
}

/// A turn waiting to be written, and who hears how it went.
type Queued = (TurnRecord, oneshot::Sender<Result<(), StoreError>>);

/// Writes a batch of turns in one transaction and tells each its outcome. A turn refused by its
/// fence (its conversation's lease was taken over by another node) fails alone: the batch is
/// written again without it.
async fn write_turns(store: &dyn ThreadStore, turns: &mut Vec<Queued>) {
    let (mut records, mut tickets): (Vec<TurnRecord>, Vec<_>) = std::mem::take(turns).into_iter().unzip();
    for record in &records {
        codex_pool_process::hops::hop(record.conversation.as_str(), "store.batch");
    }
    while !records.is_empty() {
        let outcome = store.record_turns(&records).await;
        if let Err(StoreError::Fenced { thread_id, fence }) = &outcome {
            let refused = |r: &TurnRecord| r.conversation.as_str() == thread_id && r.fence == Some(*fence);
            if records.iter().any(refused) {
                tracing::warn!(conversation = %thread_id, fence = %fence, "a turn's write was refused: another node holds the conversation now");
                let batch = std::mem::take(&mut records).into_iter().zip(std::mem::take(&mut tickets));
                for (record, ticket) in batch {
                    if refused(&record) {
                        let _ = ticket.send(outcome.clone());
                    } else {
                        records.push(record);
                        tickets.push(ticket);
                    }
                }
                continue;
            }
        }
        for record in &records {
            codex_pool_process::hops::hop(record.conversation.as_str(), "store.written");
        }
        if let Err(e) = &outcome {
            tracing::error!(turns = records.len(), error = %e, "could not record turns in the thread store");
        }
        for ticket in tickets.drain(..) {
            let _ = ticket.send(outcome.clone());
        }
        // Written, or failed as a whole: only a refusal by a fence writes again.
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codex_pool_store::{MemoryStore, NodeId, ThreadRecord};
    use serde_json::json;
    use std::time::Duration;

    #[tokio::test]
    async fn a_turn_refused_by_its_fence_fails_alone_and_the_rest_of_its_batch_is_written() {
        let store = Arc::new(MemoryStore::new());
        let (x, y) = (ConversationId::from("x"), ConversationId::from("y"));
        for id in [&x, &y] {
            store.save(ThreadRecord::new(id.clone(), Default::default())).await.unwrap();
        }
        // Node a's lease on x runs out at once, and node b takes x over.
        let old = store.acquire_lease(&x, &NodeId::new("a"), Duration::ZERO).await.unwrap();
        let new = store.acquire_lease(&x, &NodeId::new("b"), Duration::from_secs(60)).await.unwrap();
        assert_ne!(old.fence, new.fence);
        let turn = |id: &ConversationId, fence: Option<Fence>, text: &str| TurnRecord {
            fence,
            ..TurnRecord::completed(id.clone(), text, vec![json!({"type": "message", "text": text})])
        };
        let mut queued = Vec::new();
        let mut answers = Vec::new();
        for record in [turn(&x, Some(old.fence), "stale"), turn(&y, None, "mine"), turn(&x, Some(new.fence), "fresh")] {
            let (done, answer) = oneshot::channel();
            queued.push((record, done));
            answers.push(answer);
        }
        write_turns(&*store, &mut queued).await;
        let mut outcomes = Vec::new();
        for answer in answers {
            outcomes.push(answer.await.unwrap());
        }
        assert!(matches!(&outcomes[0], Err(StoreError::Fenced { fence, .. }) if *fence == old.fence), "{outcomes:?}");
        assert!(outcomes[1].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
        let texts = |id| {
            let store = store.clone();
            async move { store.history(&id).await.unwrap().iter().map(|i| i["text"].clone()).collect::<Vec<_>>() }
        };
        assert_eq!(texts(x.clone()).await, vec![json!("fresh")]);
        assert_eq!(texts(y.clone()).await, vec![json!("mine")]);
    }
}
