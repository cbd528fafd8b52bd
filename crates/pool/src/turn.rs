//! A turn run by the pool: the process's event stream, named after the conversation, plus
//! bookkeeping when it ends (the turn's history items go to the store).

use crate::pool::PoolInner;
use crate::supervisor::SlotShared;
use codex_pool_process::{AbortReason, TurnEvent, TurnStream};
use codex_pool_protocol::types::UserInput;
use codex_pool_store::TurnRecord;
use serde_json::Value;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit};

/// The events of one turn started through the pool. Same contract as [`TurnStream`]: events,
/// then exactly one terminal event, then `None`. Events name the conversation (its id in
/// [`TurnEvent::Started`] is the conversation's, whichever codex thread runs it). Dropping it
/// interrupts the turn.
///
/// The turn's [`TurnEvent::ResponseItem`]s are what the store keeps of it: they are recorded when
/// the turn ends (completed, interrupted, failed, timed out or dropped), except when its process
/// died, which leaves no trace in the conversation: the caller sees `aborted`/`process_exited`
/// and can send the same input again.
pub struct PoolTurn {
    /// The conversation.
    thread_id: String,
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

/// What a running turn holds: the thread's turn lock, room on its process, the counters, and
/// what the store is to keep of the turn.
pub(crate) struct TurnClaim {
    pub pool: Weak<PoolInner>,
    /// The turn's history items so far; `None` once there is nothing to record.
    pub record: Option<TurnRecord>,
    /// The first part of the turn's input: where the turn's own items begin.
    pub first_input: Option<UserInput>,
    pub _slot_turn: SlotTurn,
    pub _permit: OwnedSemaphorePermit,
    pub _thread_lock: OwnedMutexGuard<()>,
}

impl Drop for TurnClaim {
    fn drop(&mut self) {
        let Some(pool) = self.pool.upgrade() else { return };
        let Some(mut record) = self.record.take() else { return };
        let thread_id = record.thread_id.clone();
        own_items(&mut record.items, self.first_input.as_ref());
        // Queued before the thread's lock (a field) is released, so the next turn's rebuild,
        // which flushes the queue, sees these items.
        if record.completed || !record.items.is_empty() {
            pool.record_turn(record);
        }
        pool.turn_ended(&thread_id);
    }
}

/// Keeps the turn's own items: its user message and what followed. What codex records before
/// it belongs to the codex thread, not to the turn: the context codex writes for a new thread
/// (developer instructions, permissions, environment), which it writes again on every rebuild;
/// and, on a rebuilt thread, the injected history, which codex may report again in the first
/// turn. The turn's message is the last user message that starts like the input (a repeated
/// message appears earlier only as history). If none is found, every item is kept.
fn own_items(items: &mut Vec<Value>, first_input: Option<&UserInput>) {
    let Some(first) = first_input else { return };
    let starts_like_input = |item: &Value| {
        let part = &item["content"][0];
        item["type"] == "message"
            && item["role"] == "user"
            && match first {
                UserInput::Text { text } => part["type"] == "input_text" && part["text"] == text.as_str(),
                UserInput::Image { .. } | UserInput::LocalImage { .. } => part["type"] == "input_image",
            }
    };
    match items.iter().rposition(starts_like_input) {
        Some(start) => {
            items.drain(..start);
        }
        None if !items.is_empty() => tracing::warn!("the turn's own message was not among its history items"),
        None => {}
    }
}

impl PoolTurn {
    pub(crate) fn new(thread_id: &str, stream: TurnStream, claim: TurnClaim) -> Self {
        Self { thread_id: thread_id.to_owned(), stream, done: false, claim: Some(claim) }
    }

    /// The conversation the turn belongs to.
    pub fn thread_id(&self) -> &str {
        &self.thread_id
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
        if self.done {
            return Poll::Ready(None);
        }
        let Poll::Ready(polled) = futures_core::Stream::poll_next(Pin::new(&mut self.stream), cx) else {
            return Poll::Pending;
        };
        let Some(mut event) = polled else {
            self.done = true;
            return Poll::Ready(None);
        };
        if let TurnEvent::Started { thread_id, .. } = &mut event {
            thread_id.clone_from(&self.thread_id);
        }
        if let Some(claim) = self.claim.as_mut() {
            let record = claim.record.as_mut();
            match &event {
                TurnEvent::ResponseItem { item } => {
                    if let Some(r) = record {
                        r.items.push(item.clone());
                    }
                }
                TurnEvent::Completed { .. } => {
                    if let Some(r) = record {
                        r.completed = true;
                    }
                }
                TurnEvent::Aborted { reason: AbortReason::ProcessExited, .. } => {
                    // The turn died with its process: nothing of it is kept, and the conversation
                    // is rebuilt elsewhere on its next turn.
                    if let (Some(r), Some(pool)) = (claim.record.take(), claim.pool.upgrade()) {
                        pool.thread_lost_process(&r.thread_id);
                        pool.turn_ended(&r.thread_id);
                    }
                }
                _ => {}
            }
        }
        if event.is_terminal() {
            self.done = true;
            // Released now, so a finished turn kept around holds nothing.
            self.claim = None;
        }
        Poll::Ready(Some(event))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(role: &str, text: &str) -> Value {
        let kind = if role == "assistant" { "output_text" } else { "input_text" };
        json!({"type": "message", "role": role, "content": [{"type": kind, "text": text}]})
    }

    #[test]
    fn only_the_turns_own_items_are_kept() {
        let call = json!({"type": "function_call", "name": "f", "arguments": "{}", "call_id": "c"});
        // A rebuilt thread: context, re-reported history with the same text, then the turn.
        let mut items = vec![
            msg("developer", "You are Ada."),
            msg("user", "<environment_context>...</environment_context>"),
            msg("user", "hi"),
            msg("assistant", "echo: hi"),
            msg("user", "hi"),
            call.clone(),
            msg("assistant", "echo: hi"),
        ];
        own_items(&mut items, Some(&UserInput::text("hi")));
        assert_eq!(items, vec![msg("user", "hi"), call, msg("assistant", "echo: hi")]);

        let mut unknown = vec![msg("assistant", "x")];
        own_items(&mut unknown, Some(&UserInput::text("hi")));
        assert_eq!(unknown.len(), 1, "kept when the input is not found");
    }
}
