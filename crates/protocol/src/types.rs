//! Data types shared by requests, responses and notifications.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// The id codex gives a thread (a UUIDv7 it chooses). A conversation of the pool has an id of its
/// own, and may be held by several codex threads over its life (one at a time); this type keeps
/// the two apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CodexThreadId(String);

/// The methods every id codex writes has: made from its text, read as text, shown as is,
/// looked up in maps by `&str`.
macro_rules! codex_id {
    ($id:ident) => {
        impl $id {
            /// Wraps an id as codex wrote it.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $id {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl From<&str> for $id {
            fn from(id: &str) -> Self {
                Self(id.to_owned())
            }
        }

        impl From<&$id> for $id {
            fn from(id: &$id) -> Self {
                id.clone()
            }
        }

        impl std::borrow::Borrow<str> for $id {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

codex_id!(CodexThreadId);

/// The id codex gives a turn. It names the turn in `turn/start`'s answer and in every notification
/// about that turn; on the wire it is the plain string codex wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TurnId(String);

codex_id!(TurnId);

/// What a thread is, as the server reports it. Only the fields codex-pool reads are typed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Thread {
    /// The thread id (a UUIDv7 chosen by codex).
    pub id: CodexThreadId,
    /// Source thread id when this thread was created by `thread/fork`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from_id: Option<CodexThreadId>,
    /// Whether the thread lives only in memory.
    #[serde(default)]
    pub ephemeral: bool,
    /// Its name, once named (`thread/name/set`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Turns, when the response includes them (`thread/read` with `includeTurns`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turns: Vec<Turn>,
}

/// One turn of a thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Turn {
    /// The turn id.
    pub id: TurnId,
    /// Where the turn stands.
    pub status: TurnStatus,
    /// What went wrong, for failed or interrupted turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TurnError>,
    /// Items of the turn (user message, agent message, tool calls, ...), as raw JSON.
    #[serde(default)]
    pub items: Vec<Value>,
}

/// The state of a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TurnStatus {
    /// Finished normally.
    Completed,
    /// Stopped by `turn/interrupt` (or by a crash, as seen after resume).
    Interrupted,
    /// Ended with an error.
    Failed,
    /// Still running.
    InProgress,
}

/// The error attached to a failed or interrupted turn, or sent in an `error` notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnError {
    /// Human-readable description.
    pub message: String,
    /// Structured classification from codex, kept as raw JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codex_error_info: Option<Value>,
    /// More detail, when codex gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_details: Option<String>,
}

/// One piece of user input for `turn/start` and `turn/steer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum UserInput {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// An image by URL.
    Image {
        /// The image URL (also `data:` URLs).
        url: String,
    },
    /// An image file on the codex host.
    LocalImage {
        /// Absolute path of the image.
        path: String,
    },
}

impl UserInput {
    /// A text input.
    pub fn text(text: impl Into<String>) -> Self {
        UserInput::Text { text: text.into() }
    }
}

/// The sandbox mode of a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxMode {
    /// Commands may read but not write.
    ReadOnly,
    /// Commands may write inside the working directory.
    WorkspaceWrite,
    /// No sandbox at all.
    DangerFullAccess,
}

/// A reasoning effort as codex takes it (`turn/start`'s `effort`, the `model_reasoning_effort`
/// setting). The pinned codex's schema makes it any non-empty value the model advertises
/// (`model/list`'s `supportedReasoningEfforts`; its own catalogue has `low` to `xhigh`, `max` and
/// `ultra`), so it is not a closed list here: a service chooses the ones it offers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReasoningEffort(String);

/// An empty reasoning effort, which codex refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a reasoning effort cannot be empty; use one the model advertises, such as low, medium or high")]
pub struct EmptyReasoningEffort;

impl ReasoningEffort {
    /// The effort named `value`, if it is not empty.
    pub fn new(value: impl Into<String>) -> Result<Self, EmptyReasoningEffort> {
        let value = value.into();
        if value.is_empty() {
            return Err(EmptyReasoningEffort);
        }
        Ok(Self(value))
    }

    /// Its name, as codex takes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ReasoningEffort {
    type Error = EmptyReasoningEffort;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<ReasoningEffort> for String {
    fn from(effort: ReasoningEffort) -> String {
        effort.0
    }
}

impl fmt::Display for ReasoningEffort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// When codex asks the client before acting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalPolicy {
    /// Ask before anything not known to be safe.
    Untrusted,
    /// The model decides when to ask.
    OnRequest,
    /// Never ask; failures go back to the model.
    Never,
}

/// Token counts of one turn or a whole thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsageBreakdown {
    /// Input tokens.
    pub input_tokens: i64,
    /// Input tokens served from cache.
    pub cached_input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Output tokens spent on reasoning.
    pub reasoning_output_tokens: i64,
    /// Everything.
    pub total_tokens: i64,
}

impl std::ops::AddAssign for TokenUsageBreakdown {
    fn add_assign(&mut self, other: Self) {
        self.input_tokens += other.input_tokens;
        self.cached_input_tokens += other.cached_input_tokens;
        self.output_tokens += other.output_tokens;
        self.reasoning_output_tokens += other.reasoning_output_tokens;
        self.total_tokens += other.total_tokens;
    }
}

/// Token usage of a thread: the last turn and the running total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadTokenUsage {
    /// The most recent model call.
    pub last: TokenUsageBreakdown,
    /// The thread so far.
    pub total: TokenUsageBreakdown,
    /// The model's context window, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_context_window: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reasoning_effort_is_any_non_empty_name() {
        let effort: ReasoningEffort = serde_json::from_str(r#""xhigh""#).unwrap();
        assert_eq!((effort.as_str(), serde_json::to_string(&effort).unwrap()), ("xhigh", r#""xhigh""#.to_owned()));
        assert!(serde_json::from_str::<ReasoningEffort>(r#""""#).is_err());
        assert_eq!(ReasoningEffort::new(""), Err(EmptyReasoningEffort));
    }
}
