//! A turn run by the pool: the process's event stream, named after the conversation, and the
//! turn's record in the store.

use crate::history::own_items;
use crate::ownership::TurnLease;
use crate::routing::Routing;
use crate::store_writer::{StoreWriter, WriteTicket};
use crate::tls::TurnTls;
use codex_pool_process::hops::hop;
use codex_pool_process::{AbortReason, TurnEvent, TurnStream};
use codex_pool_protocol::types::UserInput;
use codex_pool_protocol::CodexThreadId;
use codex_pool_store::{ConversationId, StoreError, TurnRecord};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::OwnedSemaphorePermit;

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
    /// Released with the terminal event, so a finished turn kept around holds nothing.
    claim: Option<TurnClaim>,
    /// Reports failed model connections and explains an end caused by new root certificates
    /// (only while the pool's bundle is reduced).
    tls: Option<TurnTls>,
}

enum Phase {
    /// Events flow.
    Streaming,
    /// codex finished the turn; its record is being written. `end` follows once it is.
    Recording { ticket: WriteTicket, end: TurnEvent },
    /// The terminal event was yielded.
    Done,
}

/// What a running turn holds: the conversation's claim in the routing table, room on its
/// process, and what the store is to keep of the turn.
pub(crate) struct TurnClaim {
    routing: Arc<Routing>,
    writer: Arc<StoreWriter>,
    conversation: ConversationId,
    /// The turn's input: how its own user message is told from what codex records before it.
    input: Vec<UserInput>,
    /// The turn's history items so far.
    items: Vec<Value>,
    /// This node's lease on the conversation (several nodes only).
    lease: Option<TurnLease>,
    _permit: OwnedSemaphorePermit,
    /// The first text delta was seen (for the hop trace).
    first_delta: bool,
    ended: bool,
}

impl TurnClaim {
    pub(crate) fn new(
        routing: Arc<Routing>,
        writer: Arc<StoreWriter>,
        conversation: ConversationId,
        input: Vec<UserInput>,
        permit: OwnedSemaphorePermit,
        lease: Option<TurnLease>,
    ) -> Self {
        Self {
            routing,
            writer,
            conversation,
            input,
            items: Vec::new(),
            lease,
            _permit: permit,
            first_delta: false,
            ended: false,
        }
    }

    /// Queues the record of a turn codex finished.
    fn record(&mut self, turn_id: &str) -> WriteTicket {
        let mut items = std::mem::take(&mut self.items);
        own_items(&mut items, &self.input);
        let record = TurnRecord {
            fence: self.lease.as_ref().map(TurnLease::fence),
            ..TurnRecord::completed(self.conversation.clone(), turn_id, items)
        };
        self.writer.record(record)
    }

    /// The turn is over for the pool; `unconfirmed` is its write, if nobody waits for it.
    fn end(mut self, unconfirmed: Option<WriteTicket>) {
        self.ended = true;
        self.routing.end_turn(&self.conversation, unconfirmed);
    }

    /// The codex thread holds what the store does not (a turn cut short, or one the store could
    /// not keep): the next turn rebuilds the conversation from the store.
    fn distrust_codex_thread(&self) {
        self.routing.forget_codex_thread(&self.conversation);
    }
}

impl Drop for TurnClaim {
    fn drop(&mut self) {
        if !self.ended {
            self.routing.end_turn(&self.conversation, None);
        }
    }
}

impl PoolTurn {
    pub(crate) fn new(
        conversation: ConversationId,
        stream: TurnStream,
        claim: TurnClaim,
        tls: Option<TurnTls>,
    ) -> Self {
        let codex_thread = stream.thread_id().clone();
        Self { conversation, codex_thread, stream, phase: Phase::Streaming, claim: Some(claim), tls }
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
        loop {
            match &mut self.phase {
                Phase::Done => return Poll::Ready(None),
                Phase::Recording { ticket, .. } => {
                    let Poll::Ready(outcome) = Pin::new(ticket).poll(cx) else { return Poll::Pending };
                    let Phase::Recording { end, .. } = std::mem::replace(&mut self.phase, Phase::Done) else {
                        unreachable!()
                    };
                    let claim = self.claim.take().expect("a recording turn holds its claim");
                    hop(self.conversation.as_str(), "turn.recorded");
                    return Poll::Ready(Some(match outcome {
                        Ok(()) => {
                            claim.end(None);
                            end
                        }
                        Err(StoreError::Fenced { .. }) => {
                            if let Some(lease) = &claim.lease {
                                lease.lost(&self.conversation);
                            }
                            claim.distrust_codex_thread();
                            claim.end(None);
                            TurnEvent::Aborted {
                                reason: AbortReason::LeaseLost,
                                message: "another node took this conversation over while the turn ran (this node had \
                                          not renewed its lease in time); nothing of the turn was kept: send it again"
                                    .to_owned(),
                            }
                        }
                        Err(e) => {
                            claim.distrust_codex_thread();
                            claim.end(None);
                            TurnEvent::Aborted {
                                reason: AbortReason::StoreFailed,
                                message: format!(
                                    "codex finished the turn but the store could not keep it ({e}); the turn was \
                                     dropped, send it again once the store is back"
                                ),
                            }
                        }
                    }));
                }
                Phase::Streaming => {
                    let Poll::Ready(polled) = futures_core::Stream::poll_next(Pin::new(&mut self.stream), cx) else {
                        return Poll::Pending;
                    };
                    let Some(event) = polled else {
                        self.phase = Phase::Done;
                        return Poll::Ready(None);
                    };
                    if let Some(event) = self.observe(event) {
                        return Poll::Ready(Some(event));
                    }
                    // Completed: wait for the store.
                }
            }
        }
    }

    /// Takes note of an event; returns it as the consumer sees it, or `None` when it is held back
    /// until the turn's record is written.
    fn observe(&mut self, mut event: TurnEvent) -> Option<TurnEvent> {
        if let Some(tls) = &mut self.tls {
            tls.observe(&mut event);
        }
        let claim = self.claim.as_mut()?;
        match &mut event {
            TurnEvent::Started { thread_id, .. } => *thread_id = self.conversation.to_string(),
            TurnEvent::AgentMessageDelta { .. } if !claim.first_delta => {
                claim.first_delta = true;
                hop(self.conversation.as_str(), "turn.first_delta");
            }
            TurnEvent::ResponseItem { item } => claim.items.push(item.clone()),
            TurnEvent::Notification { params, .. } | TurnEvent::ServerRequest { params, .. } => {
                name_conversation(params, &self.conversation)
            }
            TurnEvent::Completed { turn_id, .. } => {
                hop(self.conversation.as_str(), "turn.completed");
                let ticket = claim.record(turn_id);
                self.phase = Phase::Recording { ticket, end: event };
                return None;
            }
            TurnEvent::Aborted { .. } => {
                let claim = self.claim.take().expect("checked above");
                claim.distrust_codex_thread();
                claim.end(None);
                self.phase = Phase::Done;
            }
            _ => {}
        }
        Some(event)
    }
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
        // Dropped before the end was read: what has already arrived still counts (codex may have
        // finished the turn). A turn still running is abandoned by the stream.
        while matches!(self.phase, Phase::Streaming) && self.claim.is_some() {
            let Some(event) = self.stream.try_next() else { break };
            let _ = self.observe(event);
        }
        let Some(claim) = self.claim.take() else { return };
        match std::mem::replace(&mut self.phase, Phase::Done) {
            // The next turn of the conversation learns whether the store kept this one.
            Phase::Recording { ticket, .. } => claim.end(Some(ticket)),
            // Not finished by codex: nothing of it is kept, and codex's copy is not trusted.
            Phase::Streaming | Phase::Done => {
                claim.distrust_codex_thread();
                claim.end(None);
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
