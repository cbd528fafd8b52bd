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
/// The turn's [`TurnEvent::ResponseItem`]s are what the store keeps of it, once codex has
/// finished the turn (`completed`, with any status: completed, interrupted or failed), whether
/// or not the consumer read that far (a turn dropped after codex finished it is still recorded).
/// A turn codex did not finish for us (`aborted`: its process died, it timed out, the consumer
/// lagged or went away, the pool shut down) leaves nothing in the stored history, so the
/// conversation never holds half a turn (a tool call without its output, say); its caller can
/// send the input again.
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
    /// The turn's history items so far, and whether codex finished the turn.
    pub record: TurnRecord,
    /// The turn's input: how its own user message is told from what codex records before it.
    pub input: Vec<UserInput>,
    pub _slot_turn: SlotTurn,
    pub _permit: OwnedSemaphorePermit,
    pub _thread_lock: OwnedMutexGuard<()>,
}

impl TurnClaim {
    /// Takes note of an event of the turn.
    fn observe(&mut self, event: &TurnEvent) {
        match event {
            TurnEvent::ResponseItem { item } => self.record.items.push(item.clone()),
            TurnEvent::Completed { .. } => self.record.completed = true,
            TurnEvent::Aborted { reason: AbortReason::ProcessExited, .. } => {
                // Its process died: the conversation is rebuilt elsewhere on its next turn.
                if let Some(pool) = self.pool.upgrade() {
                    pool.thread_lost_process(&self.record.thread_id);
                }
            }
            _ => {}
        }
    }
}

impl Drop for TurnClaim {
    fn drop(&mut self) {
        let Some(pool) = self.pool.upgrade() else { return };
        // Queued before the thread's lock (a field) is released, so the next turn's rebuild,
        // which flushes the queue first, sees these items.
        let thread_id = self.record.thread_id.clone();
        if self.record.completed {
            let mut record = std::mem::take(&mut self.record);
            own_items(&mut record.items, &self.input);
            pool.record_turn(record);
        }
        pool.turn_ended(&thread_id);
    }
}

/// Whether an item is context codex writes by itself for a thread (developer instructions,
/// permissions, environment, user instructions) rather than part of the conversation.
pub(crate) fn is_codex_context(item: &Value) -> bool {
    if item["type"] != "message" {
        return false;
    }
    let first = item["content"][0]["text"].as_str().unwrap_or_default();
    item["role"] == "developer"
        || (item["role"] == "user"
            && ["<environment_context>", "<user_instructions>", "<permissions"]
                .iter()
                .any(|tag| first.starts_with(tag)))
}

/// Keeps the turn's own items: its user message and what followed. What codex records before
/// it belongs to the codex thread, not to the turn: the context codex writes for a new thread
/// (developer instructions, permissions, environment), which it writes again on every rebuild;
/// and, on a rebuilt thread, the injected history, which codex may report again in the first
/// turn. The turn's message is the last user message holding the input's first text (or, for
/// an input of images only, an image): a repeated message appears earlier only as history. If
/// none is found, codex's own context is left out and the rest kept.
fn own_items(items: &mut Vec<Value>, input: &[UserInput]) {
    let text = input.iter().find_map(|i| match i {
        UserInput::Text { text } => Some(text.as_str()),
        _ => None,
    });
    let holds_input = |item: &Value| {
        let parts = item["content"].as_array().map(Vec::as_slice).unwrap_or_default();
        item["type"] == "message"
            && item["role"] == "user"
            && parts.iter().any(|part| match text {
                Some(text) => part["type"] == "input_text" && part["text"] == text,
                None => part["type"] == "input_image",
            })
    };
    match items.iter().rposition(holds_input) {
        Some(start) => {
            items.drain(..start);
        }
        None => {
            tracing::warn!("the turn's own message was not among its history items");
            items.retain(|item| !is_codex_context(item));
        }
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
        self.observe(&event);
        Poll::Ready(Some(event))
    }

    fn observe(&mut self, event: &TurnEvent) {
        if let Some(claim) = self.claim.as_mut() {
            claim.observe(event);
        }
        if event.is_terminal() {
            self.done = true;
            // Released now, so a finished turn kept around holds nothing.
            self.claim = None;
        }
    }
}

impl Drop for PoolTurn {
    fn drop(&mut self) {
        // Dropped before the end was read: what has already arrived still counts (codex may have
        // finished the turn). A turn still running is abandoned by the stream.
        while !self.done {
            let Some(event) = self.stream.try_next() else { break };
            self.observe(&event);
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
        own_items(&mut items, &[UserInput::text("hi")]);
        assert_eq!(items, vec![msg("user", "hi"), call, msg("assistant", "echo: hi")]);
    }

    #[test]
    fn images_are_found_in_the_turns_message() {
        // codex puts a text tag before each image.
        let with_image = json!({"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "<image name=[Image #1]>"},
            {"type": "input_image", "image_url": "data:..."},
            {"type": "input_text", "text": "what is this?"},
        ]});
        let input = [UserInput::Image { url: "data:...".into() }, UserInput::text("what is this?")];
        let mut items = vec![msg("developer", "ctx"), with_image.clone(), msg("assistant", "a cat")];
        own_items(&mut items, &input);
        assert_eq!(items, vec![with_image.clone(), msg("assistant", "a cat")]);

        let mut items = vec![msg("developer", "ctx"), with_image.clone()];
        own_items(&mut items, &[UserInput::Image { url: "data:...".into() }]);
        assert_eq!(items, vec![with_image]);
    }

    #[test]
    fn without_the_input_codex_context_is_still_left_out() {
        let mut items = vec![msg("developer", "ctx"), msg("user", "<environment_context>x"), msg("assistant", "x")];
        own_items(&mut items, &[UserInput::text("not there")]);
        assert_eq!(items, vec![msg("assistant", "x")]);
    }
}
