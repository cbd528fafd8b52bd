//! Where a turn's events become bytes: an SSE event each ([`ApiEvent::to_sse`]), their size in
//! the run log's budget ([`ApiEvent::wire_size`]), and a whole turn's answer ([`TurnResult`]).
//!
//! An event's JSON has its keys in alphabetical order, `type` among them: the service first
//! wrote them as `serde_json::Value`s, whose maps sort, and clients may rely on the bytes.

use super::{ApiEvent, EventBody, Failure, Usage};
use axum::response::sse::Event;
use codex_pool_protocol::TurnId;
use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

impl ApiEvent {
    /// The event as sent: `id`, `event` (its name) and `data` (its JSON).
    pub(crate) fn to_sse(&self) -> Event {
        let data = serde_json::to_string(&self.body).unwrap_or_default();
        Event::default().id(self.id.to_string()).event(self.body.name()).data(data)
    }

    /// The bytes it takes when sent (its JSON, and the SSE lines around it), counted without
    /// writing it anywhere.
    pub(crate) fn wire_size(&self) -> usize {
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut count = Count(0);
        let _ = serde_json::to_writer(&mut count, &self.body);
        // The SSE framing: `id`, `event` and `data` lines.
        count.0 + self.body.name().len() + 32
    }
}

/// The event's `data`.
impl Serialize for EventBody {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let name = self.name();
        // Keys in alphabetical order (see the module's documentation).
        match self {
            EventBody::TurnStarted { conversation_id, turn_id } => {
                let mut m = s.serialize_struct(name, 3)?;
                m.serialize_field("conversation_id", conversation_id)?;
                m.serialize_field("turn_id", turn_id)?;
                m.serialize_field("type", name)?;
                m.end()
            }
            EventBody::ItemStarted { item } | EventBody::ItemCompleted { item } => {
                let mut m = s.serialize_struct(name, 2)?;
                m.serialize_field("item", item)?;
                m.serialize_field("type", name)?;
                m.end()
            }
            EventBody::ItemModerated { item, mode, retracted } => {
                let mut m = s.serialize_struct(name, 4)?;
                m.serialize_field("item", item)?;
                m.serialize_field("mode", mode.as_str())?;
                m.serialize_field("retracted", retracted)?;
                m.serialize_field("type", name)?;
                m.end()
            }
            EventBody::TextDelta { item_id, delta } => {
                let mut m = s.serialize_struct(name, 3)?;
                m.serialize_field("delta", delta)?;
                m.serialize_field("item_id", item_id)?;
                m.serialize_field("type", name)?;
                m.end()
            }
            EventBody::ReasoningDelta { item_id, delta, summary } => {
                let mut m = s.serialize_struct(name, 4)?;
                m.serialize_field("delta", delta)?;
                m.serialize_field("item_id", item_id)?;
                m.serialize_field("summary", summary)?;
                m.serialize_field("type", name)?;
                m.end()
            }
            EventBody::ToolCalls { calls } => {
                let mut m = s.serialize_struct(name, 2)?;
                m.serialize_field("calls", calls)?;
                m.serialize_field("type", name)?;
                m.end()
            }
            EventBody::TurnCompleted { conversation_id, turn_id, status, usage } => {
                let mut m = s.serialize_struct(name, 5)?;
                m.serialize_field("conversation_id", conversation_id)?;
                m.serialize_field("status", status.as_str())?;
                m.serialize_field("turn_id", turn_id)?;
                m.serialize_field("type", name)?;
                m.serialize_field("usage", &SortedUsage(usage))?;
                m.end()
            }
            EventBody::TurnFailed { conversation_id, turn_id, error } => {
                let mut m = s.serialize_struct(name, 4)?;
                m.serialize_field("conversation_id", conversation_id)?;
                m.serialize_field("error", error)?;
                m.serialize_field("turn_id", turn_id)?;
                m.serialize_field("type", name)?;
                m.end()
            }
        }
    }
}

/// [`Usage`] with its keys in alphabetical order, as events write it.
struct SortedUsage<'a>(&'a Usage);

impl Serialize for SortedUsage<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let u = self.0;
        let mut m = s.serialize_struct("Usage", 5)?;
        m.serialize_field("cached_input_tokens", &u.cached_input_tokens)?;
        m.serialize_field("input_tokens", &u.input_tokens)?;
        m.serialize_field("output_tokens", &u.output_tokens)?;
        m.serialize_field("reasoning_output_tokens", &u.reasoning_output_tokens)?;
        m.serialize_field("total_tokens", &u.total_tokens)?;
        m.end()
    }
}

/// What a whole turn came to, for a client that asked not to stream it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TurnResult {
    /// The conversation.
    pub(crate) conversation_id: String,
    /// The turn.
    #[schema(value_type = String)]
    pub(crate) turn_id: TurnId,
    /// `completed`, `interrupted` or `failed`.
    pub(crate) status: String,
    /// The reply: every text delta, joined, but those of answers codex marked `hide` or `block`.
    pub(crate) text: String,
    /// Every item the turn completed, as codex describes it (a moderated answer without its
    /// text, its `moderation` saying why).
    #[schema(value_type = Vec<Object>)]
    pub(crate) items: Vec<Value>,
    /// Tokens the turn used.
    pub(crate) usage: Usage,
    /// The client tool calls the turn waits on (status `tool_calls`): answer them with
    /// `POST /v1/conversations/{id}/tool_outputs`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub(crate) tool_calls: Vec<codex_pool_protocol::ToolCall>,
    /// For a failed turn: `kind` (`model_error`, `process_exited`, `timeout`, `model_unreachable`,
    /// `model_stalled`, `shutdown`, `consumer_lagged`, `store_failed`, `lease_lost`, `ca_bundle_replaced`,
    /// `events_too_large`) and `message`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub(crate) error: Option<Failure>,
}

impl TurnResult {
    /// From the events of an ended turn.
    pub(crate) fn from_events<E: std::borrow::Borrow<ApiEvent>>(events: &[E]) -> Self {
        let mut result = TurnResult {
            conversation_id: String::new(),
            turn_id: TurnId::default(),
            status: "failed".to_owned(),
            text: String::new(),
            items: Vec::new(),
            usage: Usage::default(),
            tool_calls: Vec::new(),
            error: None,
        };
        // The text by message item, in order, so a moderated one can be taken out.
        let mut texts: Vec<(&str, String)> = Vec::new();
        for e in events {
            let (conversation, turn) = match &e.borrow().body {
                EventBody::TextDelta { item_id, delta } => {
                    match texts.last_mut() {
                        Some((id, text)) if *id == item_id.as_str() => text.push_str(delta),
                        _ => texts.push((item_id, delta.clone())),
                    }
                    continue;
                }
                EventBody::ItemCompleted { item } => {
                    result.items.push(item.clone());
                    continue;
                }
                EventBody::ItemModerated { item, .. } => {
                    texts.retain(|(id, _)| Some(*id) != item["id"].as_str());
                    result.items.push(item.clone());
                    continue;
                }
                EventBody::ItemStarted { .. } | EventBody::ReasoningDelta { .. } => continue,
                EventBody::ToolCalls { calls } => {
                    result.status = "tool_calls".to_owned();
                    result.tool_calls.clone_from(calls);
                    continue;
                }
                EventBody::TurnStarted { conversation_id, turn_id } => (conversation_id, turn_id),
                EventBody::TurnCompleted { conversation_id, turn_id, status, usage } => {
                    result.status = status.as_str().to_owned();
                    result.usage = *usage;
                    (conversation_id, turn_id)
                }
                EventBody::TurnFailed { conversation_id, turn_id, error } => {
                    result.error = Some(error.clone());
                    (conversation_id, turn_id)
                }
            };
            result.conversation_id = conversation.to_string();
            result.turn_id.clone_from(turn);
        }
        result.text = texts.into_iter().map(|(_, text)| text).collect();
        result
    }
}
