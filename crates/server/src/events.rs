//! What clients see of a turn: its events named as the Codex SDK names them (`turn.started`,
//! `item.started`, `item.completed`, `text.delta`, `reasoning.delta`, then exactly one of
//! `turn.completed` and `turn.failed`), each with an id (its place in the turn, from 1) for
//! `Last-Event-ID`; and `item.moderated` in place of `item.completed` for an answer codex says
//! to hide or block (see [`EventBody::ItemModerated`]).
//!
//! The events keep their types until they are written ([`wire`]): the run log, the metrics and
//! the OpenAI routes match on [`EventBody`]. A new event is a new variant of it: its name in
//! [`EventBody::name`], its JSON in `wire.rs` (`impl Serialize for EventBody`), what the pool's
//! event makes of it in [`Mapper::map`]; the compiler then points at every reader that must
//! decide what to do with it.

mod wire;

use codex_pool::{AbortReason, ConversationId, TurnEvent};
use codex_pool_protocol::types::{TokenUsageBreakdown, TurnStatus};
use codex_pool_protocol::{AgentMessageModeration, TurnId, Withheld};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashSet;
use utoipa::ToSchema;
pub(crate) use wire::TurnResult;

/// One event of a turn, as the service logs it: its place in the turn and what it says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiEvent {
    /// Its place in the turn, from 1: the SSE `id`.
    pub(crate) id: u64,
    /// What it says.
    pub(crate) body: EventBody,
}

impl ApiEvent {
    /// Whether it ends the turn.
    pub(crate) fn is_terminal(&self) -> bool {
        self.body.is_terminal()
    }
}

/// What an event says, one variant per event name on the wire.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EventBody {
    /// `turn.started`: codex took the turn up.
    TurnStarted {
        /// The conversation.
        conversation_id: ConversationId,
        /// The turn.
        turn_id: TurnId,
    },
    /// `item.started`: an item began, as codex describes it.
    ItemStarted {
        /// The item.
        item: Value,
    },
    /// `item.completed`: an item is whole, as codex describes it.
    ItemCompleted {
        /// The item.
        item: Value,
    },
    /// `item.moderated`: an answer codex marks `hide` or `block` (its `moderation.display.mode`),
    /// in place of its `item.completed`. The item comes without its text (`text` is empty; its
    /// `moderation` says what codex decided). codex marks an answer when it is whole, so its
    /// `text.delta`s may have gone out already: `retracted` says so, and a client removes what it
    /// showed of the item.
    ItemModerated {
        /// The item, its text withheld.
        item: Value,
        /// What codex said to do.
        mode: Withheld,
        /// Text of the item went out in `text.delta`s before the mark came.
        retracted: bool,
    },
    /// `text.delta`: more of the reply.
    TextDelta {
        /// The message item it belongs to.
        item_id: String,
        /// The text.
        delta: String,
    },
    /// `reasoning.delta`: more of the model's reasoning (raw, or its summary).
    ReasoningDelta {
        /// The reasoning item.
        item_id: String,
        /// The text.
        delta: String,
        /// Whether it is of the summary.
        summary: bool,
    },
    /// `tool.calls`: the model called the client's tools; the turn waits for their outputs.
    ToolCalls {
        /// The calls, as the model made them.
        calls: Vec<codex_pool_protocol::ToolCall>,
    },
    /// `turn.completed`: codex finished the turn.
    TurnCompleted {
        /// The conversation.
        conversation_id: ConversationId,
        /// The turn.
        turn_id: TurnId,
        /// How: `completed`, or `interrupted`.
        status: Finished,
        /// Tokens it used.
        usage: Usage,
    },
    /// `turn.failed`: the turn ended without a reply.
    TurnFailed {
        /// The conversation.
        conversation_id: ConversationId,
        /// The turn.
        turn_id: TurnId,
        /// Why.
        error: Failure,
    },
}

impl EventBody {
    /// Its name: the SSE `event`, and `data.type`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            EventBody::TurnStarted { .. } => "turn.started",
            EventBody::ItemStarted { .. } => "item.started",
            EventBody::ItemCompleted { .. } => "item.completed",
            EventBody::ItemModerated { .. } => "item.moderated",
            EventBody::TextDelta { .. } => "text.delta",
            EventBody::ReasoningDelta { .. } => "reasoning.delta",
            EventBody::ToolCalls { .. } => "tool.calls",
            EventBody::TurnCompleted { .. } => "turn.completed",
            EventBody::TurnFailed { .. } => "turn.failed",
        }
    }

    /// Whether it ends the turn.
    pub(crate) fn is_terminal(&self) -> bool {
        matches!(self, EventBody::TurnCompleted { .. } | EventBody::TurnFailed { .. })
    }
}

/// How codex finished a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finished {
    /// To its end (`completed`).
    Completed,
    /// It was stopped (`interrupted`).
    Interrupted,
}

impl Finished {
    /// As it is written: `completed` or `interrupted`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Finished::Completed => "completed",
            Finished::Interrupted => "interrupted",
        }
    }
}

/// Why a turn failed, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Failure {
    /// Why.
    pub(crate) kind: FailureKind,
    /// What happened, for people.
    pub(crate) message: String,
}

/// Why a turn failed: written as a string (`model_error`, `process_exited`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum FailureKind {
    /// codex failed the turn: the model answered with an error (`model_error`).
    ModelError,
    /// The pool ended it before codex finished it (named as the reason is: `process_exited`, ...).
    Aborted(AbortReason),
    /// The service cut it: its events passed the per-turn limit (`events_too_large`).
    EventsTooLarge,
    /// Its events ended without an end, which the pool never does (`internal`).
    Internal,
}

impl FailureKind {
    /// As it is written (`model_error`, `process_exited`, `events_too_large`, ...).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FailureKind::ModelError => "model_error",
            FailureKind::Aborted(reason) => reason.as_str(),
            FailureKind::EventsTooLarge => "events_too_large",
            FailureKind::Internal => "internal",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FailureKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Token usage of a turn: every model call of it, added up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub(crate) struct Usage {
    /// Input tokens.
    pub(crate) input_tokens: i64,
    /// Of those, served from the model's cache.
    pub(crate) cached_input_tokens: i64,
    /// Output tokens.
    pub(crate) output_tokens: i64,
    /// Of those, spent reasoning.
    pub(crate) reasoning_output_tokens: i64,
    /// All of them.
    pub(crate) total_tokens: i64,
}

impl From<TokenUsageBreakdown> for Usage {
    fn from(u: TokenUsageBreakdown) -> Self {
        Self {
            input_tokens: u.input_tokens,
            cached_input_tokens: u.cached_input_tokens,
            output_tokens: u.output_tokens,
            reasoning_output_tokens: u.reasoning_output_tokens,
            total_tokens: u.total_tokens,
        }
    }
}

/// Turns the pool's events of one turn into the service's.
pub(crate) struct Mapper {
    conversation: ConversationId,
    turn_id: TurnId,
    last_id: u64,
    ended: bool,
    /// The message items whose text went out in `text.delta`s.
    streamed: HashSet<String>,
}

impl Mapper {
    /// For the turn `turn_id` of `conversation`.
    pub(crate) fn new(conversation: ConversationId, turn_id: TurnId) -> Self {
        Self { conversation, turn_id, last_id: 0, ended: false, streamed: HashSet::new() }
    }

    fn event(&mut self, body: EventBody) -> ApiEvent {
        self.last_id += 1;
        self.ended |= body.is_terminal();
        ApiEvent { id: self.last_id, body }
    }

    /// Whether the terminal event went out.
    pub(crate) fn ended(&self) -> bool {
        self.ended
    }

    /// The service's event for one of the pool's (none for what clients need not see: codex's
    /// retry announcements, token counts (the end carries the turn's), raw history items,
    /// passed-through notifications).
    pub(crate) fn map(&mut self, event: TurnEvent) -> Option<ApiEvent> {
        let body = match event {
            TurnEvent::Started { .. } => {
                EventBody::TurnStarted { conversation_id: self.conversation.clone(), turn_id: self.turn_id.clone() }
            }
            TurnEvent::ItemStarted { item } => EventBody::ItemStarted { item },
            TurnEvent::ItemCompleted { item } => self.completed(item),
            TurnEvent::AgentMessageDelta { item_id, delta } => {
                if !self.streamed.contains(&item_id) {
                    self.streamed.insert(item_id.clone());
                }
                EventBody::TextDelta { item_id, delta }
            }
            TurnEvent::ReasoningDelta { item_id, delta } => {
                EventBody::ReasoningDelta { item_id, delta, summary: false }
            }
            TurnEvent::ReasoningSummaryDelta { item_id, delta } => {
                EventBody::ReasoningDelta { item_id, delta, summary: true }
            }
            TurnEvent::Completed { status: TurnStatus::Failed, error, .. } => {
                let message = match error {
                    Some(e) => match e.additional_details {
                        Some(details) => format!("{}: {details}", e.message),
                        None => e.message,
                    },
                    None => "the model failed the turn".to_owned(),
                };
                self.failure(FailureKind::ModelError, message)
            }
            TurnEvent::Completed { status, usage, .. } => EventBody::TurnCompleted {
                conversation_id: self.conversation.clone(),
                turn_id: self.turn_id.clone(),
                status: if status == TurnStatus::Interrupted { Finished::Interrupted } else { Finished::Completed },
                usage: usage.into(),
            },
            TurnEvent::Aborted { reason, message } => self.failure(FailureKind::Aborted(reason), message),
            TurnEvent::ToolCalls { calls } => EventBody::ToolCalls { calls },
            _ => return None,
        };
        Some(self.event(body))
    }

    /// An item's completion: `item.moderated`, its text withheld, for an answer codex marks
    /// `hide` or `block`; `item.completed` otherwise.
    fn completed(&mut self, mut item: Value) -> EventBody {
        let withheld = (item["type"] == "agentMessage").then(|| AgentMessageModeration::withheld_in(&item)).flatten();
        let Some(mode) = withheld else {
            return EventBody::ItemCompleted { item };
        };
        let retracted = item["id"].as_str().is_some_and(|id| self.streamed.contains(id));
        item["text"] = Value::String(String::new());
        EventBody::ItemModerated { item, mode, retracted }
    }

    fn failure(&self, kind: FailureKind, message: String) -> EventBody {
        EventBody::TurnFailed {
            conversation_id: self.conversation.clone(),
            turn_id: self.turn_id.clone(),
            error: Failure { kind, message },
        }
    }

    /// A terminal event for a turn the service cut (`kind` says why, `message` what to do).
    pub(crate) fn abort(&mut self, kind: FailureKind, message: String) -> ApiEvent {
        let body = self.failure(kind, message);
        self.event(body)
    }

    /// A terminal event for a turn whose stream ended without one (never expected).
    pub(crate) fn lost(&mut self) -> ApiEvent {
        let body = self.failure(FailureKind::Internal, "the turn's events ended without an end".to_owned());
        self.event(body)
    }
}

#[cfg(test)]
mod tests;
