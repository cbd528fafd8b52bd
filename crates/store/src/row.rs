//! A conversation's row as both SQL back-ends hold it (SQLite and PostgreSQL): its settings,
//! metadata and pending calls as JSON text, decoded and encoded here once for both.

use crate::types::{ConversationId, PendingCall, StoreError, ThreadRecord};
use codex_pool_protocol::TurnId;

/// The columns a [`ThreadRecord`] is read from, in [`RawRecord`]'s order (both back-ends; a
/// macro, so that `concat!` can build whole statements from it at compile time).
macro_rules! record_columns {
    () => {
        "thread_id, settings, profile, ephemeral, metadata, created_at_ms, updated_at_ms, turns, last_turn, pending_calls, owner"
    };
}
pub(crate) use record_columns;

/// A row of `threads` as read from the database, before its JSON is decoded.
pub(crate) struct RawRecord {
    pub(crate) id: String,
    pub(crate) settings: String,
    pub(crate) profile: String,
    pub(crate) ephemeral: bool,
    pub(crate) metadata: String,
    pub(crate) created_at_ms: i64,
    pub(crate) updated_at_ms: i64,
    pub(crate) turns: i64,
    pub(crate) last_turn: Option<String>,
    /// A JSON array of [`PendingCall`]s; NULL when none.
    pub(crate) pending_calls: Option<String>,
    /// The owning key's id; NULL: the operator's.
    pub(crate) owner: Option<String>,
}

impl RawRecord {
    /// The record the row holds; `Corrupt` when its JSON does not read back.
    pub(crate) fn decode(self) -> Result<ThreadRecord, StoreError> {
        let id = ConversationId::from(self.id);
        Ok(ThreadRecord {
            settings: serde_json::from_str(&self.settings).map_err(|e| corrupt(&id, e))?,
            metadata: serde_json::from_str(&self.metadata).map_err(|e| corrupt(&id, e))?,
            profile: self.profile,
            ephemeral: self.ephemeral,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            turns: self.turns.max(0) as u64,
            last_turn: self.last_turn.map(TurnId::from),
            pending_calls: match self.pending_calls {
                Some(text) => decode_pending(&id, &text)?,
                None => Vec::new(),
            },
            owner: self.owner,
            id,
        })
    }
}

/// A record's settings and metadata as the JSON text its row holds.
pub(crate) fn encode_json(record: &ThreadRecord) -> Result<(String, String), StoreError> {
    Ok((to_json(&record.id, &record.settings)?, to_json(&record.id, &record.metadata)?))
}

/// A conversation's pending calls as the column holds them: NULL when there are none.
pub(crate) fn encode_pending(id: &ConversationId, calls: &[PendingCall]) -> Result<Option<String>, StoreError> {
    if calls.is_empty() {
        return Ok(None);
    }
    to_json(id, &calls).map(Some)
}

/// The pending calls a column holds. The error says where the text is wrong, not what it says:
/// serde's message may quote a value, and a call's arguments are the model's words.
fn decode_pending(id: &ConversationId, text: &str) -> Result<Vec<PendingCall>, StoreError> {
    serde_json::from_str(text).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "is not a list of calls",
            _ => "is not valid JSON",
        };
        corrupt(id, format!("its pending calls {what} (line {}, column {})", e.line(), e.column()))
    })
}

/// A value of a conversation (settings, an item) as the JSON text a row holds.
pub(crate) fn to_json(id: &ConversationId, value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| corrupt(id, e))
}

/// A value of a conversation read back from the JSON text of a row.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(id: &ConversationId, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(id, e))
}

/// What is stored of a conversation does not read back (or cannot be written as JSON).
fn corrupt(id: &ConversationId, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { thread_id: id.to_string(), reason: e.to_string() }
}
