//! Where conversations live, so none exists only in a process's memory.
//!
//! A [`ThreadRecord`] holds what is needed to carry a conversation on anywhere: the settings it
//! was created with (instructions, model, config overrides), and, item by item, its history: the
//! Responses API items codex recorded in the thread (user messages, replies, reasoning, tool calls
//! and outputs). codex's own copy of a thread is a cache: when a process dies, or a thread idles
//! out of it, the pool starts a new codex thread with the same settings and injects the history
//! kept here. That is what lets codex keep threads in memory only (no rollout files, no state
//! database writes per turn), and what will let conversations move between machines.
//!
//! [`SqliteStore`] is the default (embedded, one file); [`MemoryStore`] keeps records for the life
//! of the process. Other databases implement [`ThreadStore`].
//!
//! ```
//! # async fn demo() -> Result<(), codex_pool_store::StoreError> {
//! use codex_pool_store::{ConversationId, SqliteStore, ThreadRecord, ThreadStore, TurnRecord};
//! let store = SqliteStore::open_in_memory()?;
//! let id = ConversationId::from("conversation-1");
//! store.save(ThreadRecord::new(id.clone(), Default::default())).await?;
//! let item = serde_json::json!({"type": "message", "role": "user", "content": []});
//! store.record_turns(vec![TurnRecord::completed(id.clone(), "turn-1", vec![item])]).await?;
//! assert_eq!(store.load(&id).await?.unwrap().turns, 1);
//! assert_eq!(store.history(&id).await?.len(), 1);
//! # Ok(()) }
//! ```

mod memory;
mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

use codex_pool_protocol::methods::ThreadSettings;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

/// A boxed future returned by [`ThreadStore`] methods.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

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
    /// Any other failure of the backend.
    #[error("the thread store failed ({backend}: {message})")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What it said.
        message: String,
    },
}

/// One conversation as stored (its history is read with [`ThreadStore::history`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadRecord {
    /// The conversation's id.
    pub id: ConversationId,
    /// The settings to rebuild it with.
    pub settings: ThreadSettings,
    /// codex keeps the thread in memory only (`ephemeral`): the history here is the only copy.
    pub ephemeral: bool,
    /// When it was created (ms since the epoch).
    pub created_at_ms: i64,
    /// When it was last used (ms since the epoch).
    pub updated_at_ms: i64,
    /// Turns completed so far.
    pub turns: u64,
}

impl ThreadRecord {
    /// A new record, created now.
    pub fn new(id: impl Into<ConversationId>, settings: ThreadSettings) -> Self {
        let now = now_ms();
        Self { id: id.into(), settings, ephemeral: false, created_at_ms: now, updated_at_ms: now, turns: 0 }
    }
}

/// What one turn added to a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRecord {
    /// The conversation.
    pub conversation: ConversationId,
    /// The codex turn id (kept with each item, for diagnostics).
    pub turn_id: String,
    /// The Responses API items codex recorded in the turn, in order.
    pub items: Vec<Value>,
    /// codex finished the turn (completed, interrupted or failed): it counts in `turns`.
    pub completed: bool,
}

impl TurnRecord {
    /// A turn codex finished.
    pub fn completed(conversation: impl Into<ConversationId>, turn_id: impl Into<String>, items: Vec<Value>) -> Self {
        Self { conversation: conversation.into(), turn_id: turn_id.into(), items, completed: true }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Persistence of conversations. Implementations must be safe to share between tasks; the
/// contract they keep is the test `exercise` in this crate, run against each of them.
pub trait ThreadStore: Send + Sync + 'static {
    /// Inserts a record, or updates an existing one (all but `created_at_ms`); its history is
    /// kept.
    fn save(&self, record: ThreadRecord) -> StoreFuture<'_, ()>;
    /// Replaces the settings of an existing conversation; does nothing for an unknown id (one
    /// released meanwhile is not brought back).
    fn update_settings<'a>(&'a self, id: &'a ConversationId, settings: ThreadSettings) -> StoreFuture<'a, ()>;
    /// The record of a conversation.
    fn load<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, Option<ThreadRecord>>;
    /// Appends what turns added, in order, all or nothing: each turn's items go to the end of its
    /// conversation's history, completed turns bump `turns` and `updated_at_ms`. Turns of
    /// conversations that no longer exist (released meanwhile) are skipped.
    fn record_turns(&self, turns: Vec<TurnRecord>) -> StoreFuture<'_, ()>;
    /// A conversation's history, oldest item first (empty for an unknown id).
    fn history<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, Vec<Value>>;
    /// Forgets a conversation and its history. Returns whether it existed.
    fn delete<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, bool>;
    /// How many conversations are stored.
    fn count(&self) -> StoreFuture<'_, u64>;
    /// Writes out what the backend still buffers and shrinks its files (called at shutdown);
    /// the store stays usable.
    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The contract every store must keep.
    pub(crate) async fn exercise(store: &dyn ThreadStore) {
        let settings = ThreadSettings { developer_instructions: Some("be brief".into()), ..Default::default() };
        let (a_id, b_id, gone) = (ConversationId::from("a"), ConversationId::from("b"), ConversationId::from("gone"));
        assert_eq!(store.load(&a_id).await.unwrap(), None);
        assert!(store.history(&a_id).await.unwrap().is_empty());
        store.save(ThreadRecord { ephemeral: true, ..ThreadRecord::new("a", settings.clone()) }).await.unwrap();
        store.save(ThreadRecord::new("b", Default::default())).await.unwrap();
        let a = store.load(&a_id).await.unwrap().unwrap();
        assert_eq!(a.settings, settings);
        assert!(a.ephemeral);
        assert_eq!(a.turns, 0);

        let item = |n: u32| json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": n.to_string()}]});
        store
            .record_turns(vec![
                TurnRecord::completed("a", "t1", vec![item(1), item(2)]),
                TurnRecord::completed("b", "t1", vec![item(10)]),
                TurnRecord { completed: false, ..TurnRecord::completed("a", "t2", vec![item(3)]) },
                TurnRecord::completed("gone", "t1", vec![item(99)]),
            ])
            .await
            .unwrap();
        store.record_turns(vec![TurnRecord::completed("a", "t3", vec![item(4)])]).await.unwrap();
        assert_eq!(store.history(&a_id).await.unwrap(), vec![item(1), item(2), item(3), item(4)]);
        assert_eq!(store.history(&b_id).await.unwrap(), vec![item(10)]);
        assert!(store.history(&gone).await.unwrap().is_empty(), "no history without a record");
        assert_eq!(store.load(&gone).await.unwrap(), None);
        let a2 = store.load(&a_id).await.unwrap().unwrap();
        assert_eq!(a2.turns, 2, "the unfinished turn is not counted");
        assert!(a2.updated_at_ms >= a.updated_at_ms);

        // Saving new settings keeps the history and the creation time.
        let changed = ThreadSettings { model: Some("m".into()), ..settings.clone() };
        store.save(ThreadRecord { settings: changed.clone(), ..a2.clone() }).await.unwrap();
        let a3 = store.load(&a_id).await.unwrap().unwrap();
        assert_eq!((a3.settings, a3.created_at_ms, a3.turns), (changed, a.created_at_ms, 2));
        assert_eq!(store.history(&a_id).await.unwrap().len(), 4);
        assert_eq!(store.count().await.unwrap(), 2);

        let again = ThreadSettings { model: Some("n".into()), ..settings.clone() };
        store.update_settings(&a_id, again.clone()).await.unwrap();
        assert_eq!(store.load(&a_id).await.unwrap().unwrap().settings, again);
        store.update_settings(&gone, again).await.unwrap();
        assert_eq!(store.load(&gone).await.unwrap(), None, "no record is created");

        assert!(store.delete(&a_id).await.unwrap());
        assert_eq!(store.load(&a_id).await.unwrap(), None);
        assert!(store.history(&a_id).await.unwrap().is_empty());
        assert!(!store.delete(&a_id).await.unwrap());
        assert_eq!(store.count().await.unwrap(), 1);
        // A new conversation under a deleted id starts with no history.
        store.save(ThreadRecord::new("a", Default::default())).await.unwrap();
        assert!(store.history(&a_id).await.unwrap().is_empty());
    }
}
