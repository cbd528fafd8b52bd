//! A turn run by the pool: the process's event stream, plus what the pool has to say first
//! (a changed thread id), plus bookkeeping when it ends.

use crate::pool::PoolInner;
use crate::supervisor::SlotShared;
use codex_pool_process::{AbortReason, TurnEvent, TurnStream};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit};

/// The events of one turn started through the pool. Same contract as [`TurnStream`]: events,
/// then exactly one terminal event, then `None`. A [`TurnEvent::ThreadIdChanged`] may come first
/// when the conversation had to move to a new thread id. Dropping it interrupts the turn.
pub struct PoolTurn {
    prefix: VecDeque<TurnEvent>,
    stream: TurnStream,
    done: bool,
    /// Released with the terminal event, so a finished turn kept around holds nothing.
    claim: Option<TurnClaim>,
}

/// A turn counted in its slot's `active_turns` for as long as it lives.
pub(crate) struct SlotTurn(Arc<SlotShared>);

impl SlotTurn {
    pub(crate) fn new(slot: Arc<SlotShared>) -> Self {
        slot.active_turns.fetch_add(1, Ordering::Relaxed);
        Self(slot)
    }
}

impl Drop for SlotTurn {
    fn drop(&mut self) {
        self.0.active_turns.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a running turn holds: the thread's turn lock, room on its process, and the counters.
pub(crate) struct TurnClaim {
    pub pool: Weak<PoolInner>,
    pub thread_id: String,
    pub _slot_turn: SlotTurn,
    pub _permit: OwnedSemaphorePermit,
    pub _thread_lock: OwnedMutexGuard<()>,
}

impl Drop for TurnClaim {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.turn_ended(&self.thread_id);
        }
    }
}

impl PoolTurn {
    pub(crate) fn new(prefix: Vec<TurnEvent>, stream: TurnStream, claim: TurnClaim) -> Self {
        Self { prefix: prefix.into(), stream, done: false, claim: Some(claim) }
    }

    /// The thread id the turn runs on (the new one, after a [`TurnEvent::ThreadIdChanged`]).
    pub fn thread_id(&self) -> &str {
        self.stream.thread_id()
    }

    /// The turn id.
    pub fn turn_id(&self) -> &str {
        self.stream.turn_id()
    }

    /// The next event, or `None` after the terminal one.
    pub async fn next(&mut self) -> Option<TurnEvent> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// Reads to the end; returns the reply text and the terminal event.
    pub async fn collect_text(self) -> (String, TurnEvent) {
        codex_pool_process::events::collect_text(self).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<TurnEvent>> {
        if let Some(e) = self.prefix.pop_front() {
            return Poll::Ready(Some(e));
        }
        if self.done {
            return Poll::Ready(None);
        }
        let polled = futures_core::Stream::poll_next(Pin::new(&mut self.stream), cx);
        if let Poll::Ready(Some(event)) = &polled {
            if event.is_terminal() {
                self.done = true;
                self.finished(event);
                self.claim = None;
            }
        }
        polled
    }

    fn finished(&self, event: &TurnEvent) {
        let Some(pool) = self.claim.as_ref().and_then(|c| c.pool.upgrade()) else { return };
        match event {
            TurnEvent::Completed { .. } => pool.turn_completed(self.thread_id()),
            TurnEvent::Aborted { reason: AbortReason::ProcessExited, .. } => pool.thread_lost_process(self.thread_id()),
            _ => {}
        }
    }
}

impl futures_core::Stream for PoolTurn {
    type Item = TurnEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TurnEvent>> {
        self.get_mut().poll_event(cx)
    }
}

impl std::fmt::Debug for PoolTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolTurn").field("stream", &self.stream).field("done", &self.done).finish()
    }
}
