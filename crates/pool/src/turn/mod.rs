//! A turn run by the pool: the process's event stream, named after the conversation, and the
//! turn's record in the store.

mod claim;

pub(crate) use claim::{Claim, Ending, Held, Running};

use crate::store_writer::WriteTicket;
use crate::tls::TurnTls;
use crate::tools::{Wait, WaitEnd};
use codex_pool_process::hops::hop;
use codex_pool_process::{AbortReason, TurnEvent, TurnStream};
use codex_pool_protocol::types::UserInput;
use codex_pool_protocol::ToolCall;
use codex_pool_protocol::{AgentMessageModeration, CodexThreadId, TurnId};
use codex_pool_store::{now_ms, ConversationId, PendingCall, StoreError};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What a turn asks of codex once placed.
#[derive(Clone, Copy)]
pub(crate) enum Ask<'a> {
    /// A turn of `input`, after `given` (tool outputs) is added to codex's history.
    Turn { input: &'a [UserInput], given: &'a [Value] },
    /// A compaction of the history (`thread/compact/start`).
    Compact,
}

/// The events of one turn started through the pool. Same contract as [`TurnStream`]: events,
/// then exactly one terminal event, then `None`. Events name the conversation, never the codex
/// thread that runs it ([`PoolTurn::codex_thread_id`] says which, when asked). Dropping it
/// interrupts the turn.
///
/// What codex recorded in the turn ([`TurnEvent::ResponseItem`]s) is kept in the store once
/// codex has finished the turn (`completed`, with any status: completed, interrupted or
/// failed), and the terminal event comes only once the store has it: a `completed` event means
/// the turn is kept. If the store fails, the turn ends with [`AbortReason::StoreFailed`]
/// instead and is dropped everywhere (codex's copy too), so the conversation goes on as if it
/// had not happened. A turn dropped after codex finished it is still kept. A turn codex did not
/// finish for us (`aborted`: its process died, it timed out, the consumer lagged or went away,
/// the pool shut down) leaves nothing, in the store or in codex, so the conversation never holds
/// half a turn (a tool call without its output, say); its caller can send the input again.
pub struct PoolTurn {
    conversation: ConversationId,
    codex_thread: CodexThreadId,
    stream: TurnStream,
    phase: Phase,
    /// Reports failed model connections and explains an end caused by new root certificates
    /// (only while the pool's bundle is reduced).
    tls: Option<TurnTls>,
    /// The wait for the outputs of the client tool calls the turn made, while it has some.
    wait: Option<Wait>,
    /// An event read ahead (see [`PoolTurn::named`]), yielded first.
    ahead: Option<TurnEvent>,
}

/// Where the turn is, with what it holds there. Each poll takes the phase by value and puts
/// back the next one; dropping the turn in a phase ends its claim as that phase requires (in
/// `Drop`, one `match`).
enum Phase {
    /// codex runs the turn; events flow.
    Streaming(Running),
    /// The model called client tools: what the turn recorded so far is being written, with the
    /// calls as pending. The consumer hears of them once the store has them.
    Checkpoint { running: Running, ticket: WriteTicket, calls: Vec<ToolCall> },
    /// codex finished the turn; its record is being written. `end` follows once it is.
    Recording { held: Held, ticket: WriteTicket, end: TurnEvent },
    /// The terminal event was yielded: the turn holds nothing (so a finished turn kept around
    /// holds no claim, no room and no lease).
    Done,
}

impl PoolTurn {
    pub(crate) fn new(
        conversation: ConversationId,
        stream: TurnStream,
        running: Running,
        tls: Option<TurnTls>,
    ) -> Self {
        let codex_thread = stream.thread_id().clone();
        Self { conversation, codex_thread, stream, phase: Phase::Streaming(running), tls, wait: None, ahead: None }
    }

    /// Records the turn's items with `turn`, an earlier turn that stays the conversation's
    /// latest (a compaction's: it adds to the history but is no turn of the conversation's).
    pub(crate) fn record_as(mut self, turn: TurnId) -> Self {
        if let Phase::Streaming(running) = &mut self.phase {
            running.record_as(turn);
        }
        self
    }

    /// The turn once it has its id: a turn codex starts itself (a compaction) is named by its
    /// first event, which is read here and yielded first.
    pub(crate) async fn named(mut self) -> Self {
        if self.turn_id().as_str().is_empty() {
            self.ahead = self.next().await;
        }
        self
    }

    /// The conversation the turn belongs to.
    pub fn conversation_id(&self) -> &ConversationId {
        &self.conversation
    }

    /// The codex thread running the turn (for diagnostics; events never name it).
    pub fn codex_thread_id(&self) -> &CodexThreadId {
        &self.codex_thread
    }

    /// The turn id codex assigned.
    pub fn turn_id(&self) -> &TurnId {
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
        if let Some(event) = self.ahead.take() {
            return Poll::Ready(Some(event));
        }
        loop {
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Done => return Poll::Ready(None),
                Phase::Recording { held, mut ticket, end } => {
                    let Poll::Ready(outcome) = Pin::new(&mut ticket).poll(cx) else {
                        self.phase = Phase::Recording { held, ticket, end };
                        return Poll::Pending;
                    };
                    hop(self.conversation.as_str(), "turn.recorded");
                    return Poll::Ready(Some(self.recorded(held, outcome, end)));
                }
                Phase::Checkpoint { running, mut ticket, calls } => {
                    let Poll::Ready(outcome) = Pin::new(&mut ticket).poll(cx) else {
                        self.phase = Phase::Checkpoint { running, ticket, calls };
                        return Poll::Pending;
                    };
                    return Poll::Ready(Some(self.checkpointed(running, outcome, calls)));
                }
                Phase::Streaming(running) => {
                    if let Some(wait) = &mut self.wait {
                        if let Poll::Ready(end) = wait.poll(cx, &mut self.stream) {
                            self.wait = None;
                            running.abandon();
                            return Poll::Ready(Some(wait_ended(end)));
                        }
                        if wait.is_over() {
                            self.wait = None;
                        }
                    }
                    let Poll::Ready(polled) = futures_core::Stream::poll_next(Pin::new(&mut self.stream), cx) else {
                        self.phase = Phase::Streaming(running);
                        return Poll::Pending;
                    };
                    // A stream always ends with a terminal event; one that did not leaves
                    // nothing kept.
                    let Some(event) = polled else {
                        running.abandon();
                        return Poll::Ready(None);
                    };
                    if let Some(event) = self.observe(running, event) {
                        return Poll::Ready(Some(event));
                    }
                    // Completed: wait for the store.
                }
            }
        }
    }

    /// Takes note of an event of the running turn and moves to the next phase; returns the
    /// event as the consumer sees it, or `None` when it is held back until the turn's record
    /// is written.
    fn observe(&mut self, mut running: Running, mut event: TurnEvent) -> Option<TurnEvent> {
        if let Some(tls) = &mut self.tls {
            tls.observe(&mut event);
        }
        match &mut event {
            TurnEvent::Started { thread_id, .. } => *thread_id = self.conversation.to_string(),
            TurnEvent::AgentMessageDelta { .. } if !running.first_delta => {
                running.first_delta = true;
                hop(self.conversation.as_str(), "turn.first_delta");
            }
            TurnEvent::ResponseItem { item } => running.push(item.clone()),
            TurnEvent::ItemStarted { item } if item["type"] == "contextCompaction" => running.compacting(true),
            TurnEvent::ItemCompleted { item } if item["type"] == "contextCompaction" => running.compacting(false),
            TurnEvent::ItemCompleted { item } if item["type"] == "agentMessage" => {
                if let (Some(id), Some(mode)) = (item["id"].as_str(), AgentMessageModeration::withheld_in(item)) {
                    running.moderated(id, mode);
                }
            }
            TurnEvent::ToolCall { request } => {
                // codex asks for an output: the consumer heard of the call with the others of
                // its response (`ToolCalls`); one given already goes to codex now.
                if let Some(wait) = &mut self.wait {
                    wait.asked(&request.call_id, &mut self.stream);
                    if wait.is_over() {
                        self.wait = None;
                    }
                }
                self.phase = Phase::Streaming(running);
                return None;
            }
            TurnEvent::Notification { method, params } => {
                name_conversation(params, &self.conversation);
                if method == RESPONSE_COMPLETED {
                    let calls = running.tools.take_calls();
                    if !calls.is_empty() {
                        let ticket = running.checkpoint(self.stream.turn_id(), pending(&calls));
                        self.phase = Phase::Checkpoint { running, ticket, calls };
                        return Some(event);
                    }
                }
            }
            TurnEvent::ServerRequest { params, .. } => name_conversation(params, &self.conversation),
            TurnEvent::Completed { .. } if self.wait.as_ref().is_some_and(|w| !w.is_over()) => {
                // codex ended the turn (interrupted) while calls waited: it wrote a "cancelled"
                // output of its own for each, which is not the client's. Nothing more is kept;
                // the calls stay pending in the store, and the thread is rebuilt from it.
                self.wait = None;
                running.abandon();
                return Some(event);
            }
            TurnEvent::Completed { turn_id, .. } => {
                hop(self.conversation.as_str(), "turn.completed");
                let (held, ticket) = running.record(turn_id);
                self.phase = Phase::Recording { held, ticket, end: event };
                return None;
            }
            TurnEvent::Aborted { .. } => {
                running.abandon();
                return Some(event);
            }
            _ => {}
        }
        self.phase = Phase::Streaming(running);
        Some(event)
    }

    /// The store answered about a checkpoint: the consumer hears of the calls, and the turn
    /// waits for their outputs; or, if the store did not keep it, the turn ends as
    /// [`PoolTurn::recorded`] ends one.
    fn checkpointed(&mut self, running: Running, outcome: Result<(), StoreError>, calls: Vec<ToolCall>) -> TurnEvent {
        match outcome {
            Ok(()) => {
                running.set_pending(pending(&calls));
                let ids = calls.iter().map(|c| c.call_id.clone()).collect();
                let tools = &running.tools;
                let wait =
                    Wait::new(tools.waits.clone(), self.conversation.clone(), self.turn_id().clone(), ids, tools.limit);
                // Outputs given before the wait began cannot be: the calls were not known.
                self.wait = Some(wait);
                self.phase = Phase::Streaming(running);
                TurnEvent::ToolCalls { calls }
            }
            Err(e) => {
                let lost = matches!(e, StoreError::Fenced { .. });
                if let (true, Some(lease)) = (lost, running.lease()) {
                    lease.lost(&self.conversation);
                }
                running.abandon();
                store_refused(e)
            }
        }
    }

    /// The store answered about the turn's record: the terminal event the consumer gets, and
    /// the conversation given back (without codex's copy when the turn was not kept).
    fn recorded(&self, held: Held, outcome: Result<(), StoreError>, end: TurnEvent) -> TurnEvent {
        match outcome {
            Ok(()) => {
                held.claim.set_pending(Vec::new());
                held.claim.end(Ending::Kept);
                end
            }
            Err(e) => {
                if let (StoreError::Fenced { .. }, Some(lease)) = (&e, &held.lease) {
                    lease.lost(&self.conversation);
                }
                held.claim.end(Ending::Rebuild);
                store_refused(e)
            }
        }
    }
}

/// The end of a turn whose record (or checkpoint) the store refused.
fn store_refused(e: StoreError) -> TurnEvent {
    match e {
        StoreError::Fenced { .. } => TurnEvent::Aborted {
            reason: AbortReason::LeaseLost,
            message: "another node took this conversation over while the turn ran (this node had not \
                      renewed its lease in time); nothing of the turn was kept: send it again"
                .to_owned(),
        },
        e => TurnEvent::Aborted {
            reason: AbortReason::StoreFailed,
            message: format!(
                "codex finished the turn but the store could not keep it ({e}); the turn was dropped, \
                 send it again once the store is back"
            ),
        },
    }
}

/// The notification that ends one model response: the client tool calls it made are all known.
const RESPONSE_COMPLETED: &str = "rawResponse/completed";

/// Calls as the store keeps them pending, made now.
fn pending(calls: &[ToolCall]) -> Vec<PendingCall> {
    let since_ms = now_ms();
    calls
        .iter()
        .map(|c| PendingCall {
            call_id: c.call_id.clone(),
            name: c.name.clone(),
            arguments: c.arguments.clone(),
            since_ms,
        })
        .collect()
}

/// The end of a turn whose wait for tool outputs ended it.
fn wait_ended(end: WaitEnd) -> TurnEvent {
    let (reason, message) = match end {
        WaitEnd::Expired(limit) => (
            AbortReason::ToolCallTimeout,
            format!(
                "the turn waited {limit:?} for the outputs of its tool calls and was let go; the calls stay \
                 pending: send their outputs to continue the conversation"
            ),
        ),
        WaitEnd::ToolsChanged => (
            AbortReason::ToolsChanged,
            "the conversation went on with another tool list; its pending calls continue on a thread rebuilt \
             with it"
                .to_owned(),
        ),
    };
    TurnEvent::Aborted { reason, message }
}

/// Names the conversation where codex's params name its thread.
fn name_conversation(params: &mut Value, conversation: &ConversationId) {
    for key in ["threadId", "conversationId"] {
        if let Some(id) = params.get_mut(key).filter(|v| v.is_string()) {
            *id = Value::String(conversation.to_string());
        }
    }
}

impl Drop for PoolTurn {
    fn drop(&mut self) {
        loop {
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Streaming(running) => match self.stream.try_next() {
                    // Dropped before the end was read: what has already arrived still counts
                    // (codex may have finished the turn).
                    Some(event) => drop(self.observe(running, event)),
                    // Not finished by codex: nothing of it is kept, and codex's copy is not
                    // trusted. The stream abandons the turn if it still runs.
                    None => return running.abandon(),
                },
                // The calls may or may not be in the store: the conversation is rebuilt from it.
                Phase::Checkpoint { running, .. } => return running.abandon(),
                // The next turn of the conversation learns whether the store kept this one.
                Phase::Recording { held, ticket, .. } => return held.claim.end(Ending::Unconfirmed(ticket)),
                Phase::Done => return,
            }
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
        f.debug_struct("PoolTurn")
            .field("conversation", &self.conversation)
            .field("codex_thread", &self.codex_thread)
            .field("turn_id", &self.stream.turn_id())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn codex_thread_ids_in_params_become_the_conversation() {
        let mut params = json!({"threadId": "codex-2", "turnId": "u", "item": {"threadId": "kept"}});
        name_conversation(&mut params, &ConversationId::from("conv"));
        assert_eq!(params, json!({"threadId": "conv", "turnId": "u", "item": {"threadId": "kept"}}));
    }
}
