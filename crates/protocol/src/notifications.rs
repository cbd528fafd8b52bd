//! Notifications from the server. The ones codex-pool acts on are typed; every other method comes
//! through as [`ServerNotification::Other`] with its raw params, so a new codex never breaks us.

use crate::types::{CodexThreadId, Thread, ThreadTokenUsage, Turn, TurnError, TurnId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// `turn/started` and `turn/completed`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnNotification {
    /// The thread.
    pub thread_id: CodexThreadId,
    /// The turn (for `turn/completed`, its final status and error).
    pub turn: Turn,
}

/// `item/started` and `item/completed`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemNotification {
    /// The thread.
    pub thread_id: CodexThreadId,
    /// The turn.
    pub turn_id: TurnId,
    /// The item (user message, agent message, reasoning, command, ...), as raw JSON.
    pub item: Value,
}

/// `item/agentMessage/delta`, `item/reasoning/textDelta`, `item/reasoning/summaryTextDelta`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeltaNotification {
    /// The thread.
    pub thread_id: CodexThreadId,
    /// The turn.
    pub turn_id: TurnId,
    /// The item the text belongs to.
    pub item_id: String,
    /// The new text.
    pub delta: String,
}

/// `thread/tokenUsage/updated`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsageNotification {
    /// The thread.
    pub thread_id: CodexThreadId,
    /// The turn.
    pub turn_id: TurnId,
    /// Usage so far.
    pub token_usage: ThreadTokenUsage,
}

/// `error`: something went wrong in a turn; `will_retry` says whether codex tries again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorNotification {
    /// The thread.
    pub thread_id: CodexThreadId,
    /// The turn.
    pub turn_id: TurnId,
    /// What went wrong.
    pub error: TurnError,
    /// Whether codex retries by itself.
    pub will_retry: bool,
}

/// `rawResponseItem/completed` (experimental API, threads started with `experimentalRawEvents`):
/// an item was recorded in the thread's model-visible history.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawResponseItemNotification {
    /// The thread.
    pub thread_id: CodexThreadId,
    /// The turn.
    pub turn_id: TurnId,
    /// The Responses API item (user or assistant message, reasoning, tool call or output, ...).
    pub item: Value,
}

/// `thread/started`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThreadStartedNotification {
    /// The thread.
    pub thread: Thread,
}

/// `thread/closed`: the thread was unloaded from the process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadClosedNotification {
    /// The thread.
    pub thread_id: CodexThreadId,
}

/// A decoded notification.
#[derive(Debug, Clone)]
pub enum ServerNotification {
    /// `thread/started`.
    ThreadStarted(ThreadStartedNotification),
    /// `thread/closed`.
    ThreadClosed(ThreadClosedNotification),
    /// `turn/started`.
    TurnStarted(TurnNotification),
    /// `turn/completed`.
    TurnCompleted(TurnNotification),
    /// `item/started`.
    ItemStarted(ItemNotification),
    /// `item/completed`.
    ItemCompleted(ItemNotification),
    /// `item/agentMessage/delta`.
    AgentMessageDelta(DeltaNotification),
    /// `item/reasoning/textDelta`.
    ReasoningTextDelta(DeltaNotification),
    /// `item/reasoning/summaryTextDelta`.
    ReasoningSummaryTextDelta(DeltaNotification),
    /// `thread/tokenUsage/updated`.
    TokenUsageUpdated(TokenUsageNotification),
    /// `error`.
    Error(ErrorNotification),
    /// `rawResponseItem/completed`.
    RawResponseItemCompleted(RawResponseItemNotification),
    /// Any other method, or a known one whose params did not decode.
    Other {
        /// The method.
        method: String,
        /// Its params, as raw JSON (`null` when absent).
        params: Value,
    },
}

/// The methods typed above, for `optOutNotificationMethods` and routing.
pub mod method {
    /// `thread/started`
    pub const THREAD_STARTED: &str = "thread/started";
    /// `thread/closed`
    pub const THREAD_CLOSED: &str = "thread/closed";
    /// `turn/started`
    pub const TURN_STARTED: &str = "turn/started";
    /// `turn/completed`
    pub const TURN_COMPLETED: &str = "turn/completed";
    /// `item/started`
    pub const ITEM_STARTED: &str = "item/started";
    /// `item/completed`
    pub const ITEM_COMPLETED: &str = "item/completed";
    /// `item/agentMessage/delta`
    pub const AGENT_MESSAGE_DELTA: &str = "item/agentMessage/delta";
    /// `item/reasoning/textDelta`
    pub const REASONING_TEXT_DELTA: &str = "item/reasoning/textDelta";
    /// `item/reasoning/summaryTextDelta`
    pub const REASONING_SUMMARY_TEXT_DELTA: &str = "item/reasoning/summaryTextDelta";
    /// `thread/tokenUsage/updated`
    pub const TOKEN_USAGE_UPDATED: &str = "thread/tokenUsage/updated";
    /// `error`
    pub const ERROR: &str = "error";
    /// `rawResponseItem/completed`
    pub const RAW_RESPONSE_ITEM_COMPLETED: &str = "rawResponseItem/completed";
}

impl ServerNotification {
    /// Decodes a notification. A known method whose params do not fit its type falls back to
    /// [`ServerNotification::Other`] rather than failing: the caller still sees it.
    pub fn decode(method: &str, params: Option<&RawValue>) -> Self {
        fn typed<T: DeserializeOwned>(params: Option<&RawValue>) -> Option<T> {
            serde_json::from_str(params?.get()).ok()
        }
        let decoded = match method {
            method::THREAD_STARTED => typed(params).map(Self::ThreadStarted),
            method::THREAD_CLOSED => typed(params).map(Self::ThreadClosed),
            method::TURN_STARTED => typed(params).map(Self::TurnStarted),
            method::TURN_COMPLETED => typed(params).map(Self::TurnCompleted),
            method::ITEM_STARTED => typed(params).map(Self::ItemStarted),
            method::ITEM_COMPLETED => typed(params).map(Self::ItemCompleted),
            method::AGENT_MESSAGE_DELTA => typed(params).map(Self::AgentMessageDelta),
            method::REASONING_TEXT_DELTA => typed(params).map(Self::ReasoningTextDelta),
            method::REASONING_SUMMARY_TEXT_DELTA => typed(params).map(Self::ReasoningSummaryTextDelta),
            method::TOKEN_USAGE_UPDATED => typed(params).map(Self::TokenUsageUpdated),
            method::ERROR => typed(params).map(Self::Error),
            method::RAW_RESPONSE_ITEM_COMPLETED => typed(params).map(Self::RawResponseItemCompleted),
            _ => None,
        };
        decoded.unwrap_or_else(|| Self::Other {
            method: method.to_owned(),
            params: params.and_then(|p| serde_json::from_str(p.get()).ok()).unwrap_or(Value::Null),
        })
    }

    /// The turn this notification is about, when it names one.
    pub fn turn_id(&self) -> Option<&str> {
        match self {
            Self::TurnStarted(n) | Self::TurnCompleted(n) => Some(n.turn.id.as_str()),
            Self::ItemStarted(n) | Self::ItemCompleted(n) => Some(n.turn_id.as_str()),
            Self::AgentMessageDelta(n) | Self::ReasoningTextDelta(n) | Self::ReasoningSummaryTextDelta(n) => {
                Some(n.turn_id.as_str())
            }
            Self::TokenUsageUpdated(n) => Some(n.turn_id.as_str()),
            Self::Error(n) => Some(n.turn_id.as_str()),
            Self::RawResponseItemCompleted(n) => Some(n.turn_id.as_str()),
            Self::ThreadStarted(_) | Self::ThreadClosed(_) => None,
            Self::Other { params, .. } => params.get("turnId").and_then(Value::as_str),
        }
    }

    /// The thread this notification is about, when it names one.
    pub fn thread_id(&self) -> Option<&str> {
        match self {
            Self::ThreadStarted(n) => Some(n.thread.id.as_str()),
            Self::ThreadClosed(n) => Some(n.thread_id.as_str()),
            Self::TurnStarted(n) | Self::TurnCompleted(n) => Some(n.thread_id.as_str()),
            Self::ItemStarted(n) | Self::ItemCompleted(n) => Some(n.thread_id.as_str()),
            Self::AgentMessageDelta(n) | Self::ReasoningTextDelta(n) | Self::ReasoningSummaryTextDelta(n) => {
                Some(n.thread_id.as_str())
            }
            Self::TokenUsageUpdated(n) => Some(n.thread_id.as_str()),
            Self::Error(n) => Some(n.thread_id.as_str()),
            Self::RawResponseItemCompleted(n) => Some(n.thread_id.as_str()),
            Self::Other { params, .. } => params.get("threadId").and_then(Value::as_str),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn decodes_delta_with_unknown_fields() {
        let p = raw(r#"{"threadId":"t","turnId":"u","itemId":"i","delta":"hi","emittedAtMs":5}"#);
        match ServerNotification::decode("item/agentMessage/delta", Some(&p)) {
            ServerNotification::AgentMessageDelta(d) => assert_eq!(d.delta, "hi"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_and_malformed_pass_through() {
        let p = raw(r#"{"threadId":"t","x":1}"#);
        let n = ServerNotification::decode("brand/new", Some(&p));
        assert!(matches!(&n, ServerNotification::Other { method, .. } if method == "brand/new"));
        assert_eq!(n.thread_id(), Some("t"));
        // A known method with params of the wrong shape is passed through, not dropped.
        let n = ServerNotification::decode("turn/completed", Some(&p));
        assert!(matches!(n, ServerNotification::Other { .. }));
    }
}
