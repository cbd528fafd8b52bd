//! The records a store keeps, their ids, and its errors.

use crate::NodeId;
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::TurnId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// The id of a conversation: the same for its whole life, whichever codex thread holds it (the
/// pool rebuilds a conversation on a new codex thread after a crash, an idle unload or a
/// restart).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConversationId(String);

impl ConversationId {
    /// Wraps an id.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for ConversationId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl From<&str> for ConversationId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

impl std::borrow::Borrow<str> for ConversationId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// What went wrong in a store. The same shapes for every backend; each message says what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database has no room: the disk is full, or the database reached its size limit.
    #[error("the thread store is full ({backend}: {message}); free disk space or raise the database's size limit")]
    Full {
        /// Which backend.
        backend: &'static str,
        /// What it said.
        message: String,
    },
    /// The database cannot be written: its file (or folder) is read-only.
    #[error("the thread store is read-only ({backend}: {message}); make the database and its folder writable")]
    ReadOnly {
        /// Which backend.
        backend: &'static str,
        /// What it said.
        message: String,
    },
    /// Another writer held the database longer than the store waits.
    #[error("the thread store is busy ({backend}: {message}); another process holds the database, retry")]
    Busy {
        /// Which backend.
        backend: &'static str,
        /// What it said.
        message: String,
    },
    /// The database cannot be reached or opened.
    #[error("the thread store is unavailable ({backend}: {message})")]
    Unavailable {
        /// Which backend.
        backend: &'static str,
        /// What it said.
        message: String,
    },
    /// A stored record could not be read back.
    #[error("the thread store holds a corrupt record for {thread_id}: {reason}")]
    Corrupt {
        /// The conversation.
        thread_id: String,
        /// Why.
        reason: String,
    },
    /// The database was written by a newer codex-pool, whose schema this one does not know.
    #[error(
        "the thread store's schema is version {found}, newer than this codex-pool knows ({known}); upgrade codex-pool"
    )]
    NewerSchema {
        /// The database's version.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// Another node holds an unexpired lease on the conversation: its turns go there.
    #[error(
        "conversation {thread_id} is served by node {node}{}; send its turns there, or retry when that node's lease runs out",
        address.as_deref().map(|a| format!(" at {a}")).unwrap_or_default()
    )]
    OwnedElsewhere {
        /// The conversation.
        thread_id: String,
        /// The node that holds its lease.
        node: NodeId,
        /// Where that node said it can be reached (`None` if it never registered).
        address: Option<String>,
    },
    /// A write carried a fence that is no longer the conversation's: another node has taken it
    /// over (or the lease was released). Nothing of the call was written.
    #[error(
        "the write to conversation {thread_id} was refused: its fence {fence} is no longer the conversation's (another node took it over, or the lease was released); nothing was written"
    )]
    Fenced {
        /// The conversation.
        thread_id: String,
        /// The fence the refused write carried.
        fence: crate::Fence,
    },
    /// Another API key has that name.
    #[error(
        "an API key named {name:?} exists already; pick another name, or revoke that key and use its name no more"
    )]
    KeyNameTaken {
        /// The name.
        name: String,
    },
    /// Any other failure of the backend.
    #[error("the thread store failed ({backend}: {message})")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What it said.
        message: String,
    },
}

/// One conversation as stored (its history is read with
/// [`ThreadStore::history`](crate::ThreadStore::history)).
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadRecord {
    /// The conversation's id.
    pub id: ConversationId,
    /// The settings to rebuild it with.
    pub settings: ThreadSettings,
    /// The name of the profile it was created with (`chat`, `codex`), as the pool names it.
    pub profile: String,
    /// codex keeps the thread in memory only (`ephemeral`): the history here is the only copy.
    pub ephemeral: bool,
    /// What its creator attached to it (string keys, any JSON values); the pool never reads it.
    pub metadata: Map<String, Value>,
    /// When it was created (ms since the epoch).
    pub created_at_ms: i64,
    /// When it was last used (ms since the epoch).
    pub updated_at_ms: i64,
    /// Turns completed so far.
    pub turns: u64,
    /// The last turn recorded that codex finished or that added to the history (`None` before
    /// any, and in records stored before codex-pool kept it): written with the turn, so a
    /// caller knows whether a turn is the conversation's latest without reading its history.
    pub last_turn: Option<TurnId>,
    /// The client tool calls the model made that have no output yet, oldest first (empty when
    /// none, and in records stored before codex-pool kept them): written with the turn's items
    /// ([`TurnRecord::pending_calls`]), so any node knows them without reading the history.
    pub pending_calls: Vec<PendingCall>,
    /// The id of the API key that owns it (`None`: the operator's, as every conversation stored
    /// before keys). Set once, by [`KeyStore::set_owner`](crate::KeyStore::set_owner);
    /// [`ThreadStore::save`](crate::ThreadStore::save) keeps what is stored.
    pub owner: Option<String>,
}

impl ThreadRecord {
    /// A new record, created now.
    pub fn new(id: impl Into<ConversationId>, settings: ThreadSettings) -> Self {
        let now = now_ms();
        Self {
            id: id.into(),
            settings,
            profile: "chat".to_owned(),
            ephemeral: false,
            metadata: Map::new(),
            created_at_ms: now,
            updated_at_ms: now,
            turns: 0,
            last_turn: None,
            pending_calls: Vec::new(),
            owner: None,
        }
    }
}

/// A client tool call the model made that has no output yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCall {
    /// The model's `call_id`.
    pub call_id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, as the model wrote them (a JSON text).
    pub arguments: String,
    /// When the call was made (ms since the epoch).
    pub since_ms: i64,
}

/// What one turn added to a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRecord {
    /// The conversation.
    pub conversation: ConversationId,
    /// The codex turn id (kept with each item, for diagnostics).
    pub turn_id: TurnId,
    /// The Responses API items codex recorded in the turn, in order.
    pub items: Vec<Value>,
    /// codex finished the turn (completed, interrupted or failed): it counts in `turns`.
    pub completed: bool,
    /// The fence of the writer's lease on the conversation ([`Lease::fence`](crate::Lease::fence)):
    /// the turn is written only while that is still the conversation's fence, else the whole
    /// batch fails with [`StoreError::Fenced`]. `None` (one node alone): no lease is checked.
    pub fence: Option<crate::Fence>,
    /// The conversation's pending calls once this turn is written: `Some` replaces
    /// [`ThreadRecord::pending_calls`] (in the same transaction as the items, under the same
    /// fence), `None` leaves them as they are.
    pub pending_calls: Option<Vec<PendingCall>>,
}

impl TurnRecord {
    /// Whether writing it makes it its conversation's [`ThreadRecord::last_turn`]: codex
    /// finished it, or it added items.
    pub fn is_last_turn(&self) -> bool {
        self.completed || !self.items.is_empty()
    }

    /// A turn codex finished: nothing of the conversation is pending any more.
    pub fn completed(conversation: impl Into<ConversationId>, turn_id: impl Into<TurnId>, items: Vec<Value>) -> Self {
        Self {
            conversation: conversation.into(),
            turn_id: turn_id.into(),
            items,
            completed: true,
            fence: None,
            pending_calls: Some(Vec::new()),
        }
    }

    /// What a turn codex has not finished recorded so far (ending with the calls' `function_call`
    /// items), written when the model calls client tools: the conversation's pending calls become
    /// `pending`.
    pub fn partial(
        conversation: impl Into<ConversationId>,
        turn_id: impl Into<TurnId>,
        items: Vec<Value>,
        pending: Vec<PendingCall>,
    ) -> Self {
        Self { completed: false, pending_calls: Some(pending), ..Self::completed(conversation, turn_id, items) }
    }

    /// The same turn, written only under the lease with this fence.
    pub fn with_fence(self, fence: crate::Fence) -> Self {
        Self { fence: Some(fence), ..self }
    }
}

/// One item of a conversation's history, with its place in it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredItem {
    /// Its position in the history, from 1, in the order codex recorded the items.
    pub seq: u64,
    /// The codex turn that recorded it.
    pub turn_id: TurnId,
    /// The Responses API item.
    pub item: Value,
}

/// Where a page of the conversation list starts: after the conversation created at
/// `created_at_ms` with id `id` (the list runs newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    /// When the last conversation of the previous page was created.
    pub created_at_ms: i64,
    /// Its id.
    pub id: ConversationId,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
