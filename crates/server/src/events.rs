//! What clients see of a turn: its events named as the Codex SDK names them (`turn.started`,
//! `item.started`, `item.completed`, `text.delta`, `reasoning.delta`, then exactly one of
//! `turn.completed` and `turn.failed`), each with an id (its place in the turn, from 1) for
//! `Last-Event-ID`.

use codex_pool::{ConversationId, TurnEvent};
use codex_pool_protocol::types::{TokenUsageBreakdown, TurnStatus};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

/// One event of a turn, as the service sends it (an SSE event named `event`, with `data`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiEvent {
    /// Its place in the turn, from 1: the SSE `id`.
    pub id: u64,
    /// Its name: the SSE `event`, and `data.type`.
    pub event: &'static str,
    /// What it says; always has `type`.
    #[schema(value_type = Object)]
    pub data: Value,
}

impl ApiEvent {
    /// Whether it ends the turn.
    pub fn is_terminal(&self) -> bool {
        matches!(self.event, "turn.completed" | "turn.failed")
    }
}

/// Token usage of a turn: every model call of it, added up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// Input tokens.
    pub input_tokens: i64,
    /// Of those, served from the model's cache.
    pub cached_input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Of those, spent reasoning.
    pub reasoning_output_tokens: i64,
    /// All of them.
    pub total_tokens: i64,
}

impl Usage {
    fn add(&mut self, call: &TokenUsageBreakdown) {
        self.input_tokens += call.input_tokens;
        self.cached_input_tokens += call.cached_input_tokens;
        self.output_tokens += call.output_tokens;
        self.reasoning_output_tokens += call.reasoning_output_tokens;
        self.total_tokens += call.total_tokens;
    }
}

/// Turns the pool's events of one turn into the service's.
pub struct Mapper {
    conversation: ConversationId,
    turn_id: String,
    last_id: u64,
    usage: Usage,
    ended: bool,
}

impl Mapper {
    /// For the turn `turn_id` of `conversation`.
    pub fn new(conversation: ConversationId, turn_id: String) -> Self {
        Self { conversation, turn_id, last_id: 0, usage: Usage::default(), ended: false }
    }

    fn event(&mut self, name: &'static str, mut data: Value) -> ApiEvent {
        self.last_id += 1;
        data["type"] = json!(name);
        if name == "turn.completed" || name == "turn.failed" {
            self.ended = true;
        }
        ApiEvent { id: self.last_id, event: name, data }
    }

    /// Whether the terminal event went out.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The service's events for one of the pool's (none for what clients need not see: codex's
    /// retry announcements, raw history items, passed-through notifications).
    pub fn map(&mut self, event: TurnEvent) -> Vec<ApiEvent> {
        let (name, data) = match event {
            TurnEvent::Started { .. } => {
                ("turn.started", json!({"conversation_id": self.conversation, "turn_id": self.turn_id}))
            }
            TurnEvent::ItemStarted { item } => ("item.started", json!({"item": item})),
            TurnEvent::ItemCompleted { item } => ("item.completed", json!({"item": item})),
            TurnEvent::AgentMessageDelta { item_id, delta } => {
                ("text.delta", json!({"item_id": item_id, "delta": delta}))
            }
            TurnEvent::ReasoningDelta { item_id, delta } => {
                ("reasoning.delta", json!({"item_id": item_id, "delta": delta, "summary": false}))
            }
            TurnEvent::ReasoningSummaryDelta { item_id, delta } => {
                ("reasoning.delta", json!({"item_id": item_id, "delta": delta, "summary": true}))
            }
            TurnEvent::TokenUsage { usage } => {
                self.usage.add(&usage.last);
                return Vec::new();
            }
            TurnEvent::Completed { status: TurnStatus::Failed, error, .. } => {
                let message = match error {
                    Some(e) => match e.additional_details {
                        Some(details) => format!("{}: {details}", e.message),
                        None => e.message,
                    },
                    None => "the model failed the turn".to_owned(),
                };
                ("turn.failed", self.failure("model_error", message))
            }
            TurnEvent::Completed { status, .. } => {
                let status = if status == TurnStatus::Interrupted { "interrupted" } else { "completed" };
                (
                    "turn.completed",
                    json!({"conversation_id": self.conversation, "turn_id": self.turn_id, "status": status, "usage": self.usage}),
                )
            }
            TurnEvent::Aborted { reason, message } => ("turn.failed", self.failure(reason.as_str(), message)),
            _ => return Vec::new(),
        };
        vec![self.event(name, data)]
    }

    fn failure(&self, kind: &str, message: String) -> Value {
        json!({
            "conversation_id": self.conversation,
            "turn_id": self.turn_id,
            "error": {"kind": kind, "message": message},
        })
    }

    /// A terminal event for a turn the service cut (`kind` says why, `message` what to do).
    pub fn abort(&mut self, kind: &str, message: String) -> ApiEvent {
        let data = self.failure(kind, message);
        self.event("turn.failed", data)
    }

    /// A terminal event for a turn whose stream ended without one (never expected).
    pub fn lost(&mut self) -> ApiEvent {
        let data = self.failure("internal", "the turn's events ended without an end".to_owned());
        self.event("turn.failed", data)
    }
}

/// What a whole turn came to, for a client that asked not to stream it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TurnResult {
    /// The conversation.
    pub conversation_id: String,
    /// The turn.
    pub turn_id: String,
    /// `completed`, `interrupted` or `failed`.
    pub status: String,
    /// The reply: every text delta, joined.
    pub text: String,
    /// Every item the turn completed, as codex describes it.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Value>,
    /// Tokens the turn used.
    pub usage: Usage,
    /// For a failed turn: `kind` (`model_error`, `process_exited`, `timeout`, `model_unreachable`,
    /// `model_stalled`, `shutdown`, `consumer_lagged`, `store_failed`, `lease_lost`, `ca_bundle_replaced`,
    /// `events_too_large`) and `message`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
}

impl TurnResult {
    /// From the events of an ended turn.
    pub fn from_events<E: std::borrow::Borrow<ApiEvent>>(events: &[E]) -> Self {
        let mut result = TurnResult {
            conversation_id: String::new(),
            turn_id: String::new(),
            status: "failed".to_owned(),
            text: String::new(),
            items: Vec::new(),
            usage: Usage::default(),
            error: None,
        };
        for e in events {
            let e = e.borrow();
            match e.event {
                "text.delta" => result.text.push_str(e.data["delta"].as_str().unwrap_or_default()),
                "item.completed" => result.items.push(e.data["item"].clone()),
                "turn.completed" => {
                    result.status = e.data["status"].as_str().unwrap_or("completed").to_owned();
                    result.usage = serde_json::from_value(e.data["usage"].clone()).unwrap_or_default();
                }
                "turn.failed" => result.error = Some(e.data["error"].clone()),
                _ => {}
            }
            if let Some(id) = e.data["conversation_id"].as_str() {
                result.conversation_id = id.to_owned();
            }
            if let Some(id) = e.data["turn_id"].as_str() {
                result.turn_id = id.to_owned();
            }
        }
        result
    }
}

#[cfg(test)]
mod tests;
