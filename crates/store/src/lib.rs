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

#![deny(missing_docs)]

#[cfg(test)]
mod contract;
mod memory;
mod sqlite;
mod types;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;
pub use types::{now_ms, ConversationId, ListCursor, StoreError, StoredItem, ThreadRecord, TurnRecord};

use codex_pool_protocol::methods::ThreadSettings;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;

/// A boxed future returned by [`ThreadStore`] methods.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Persistence of conversations. Implementations must be safe to share between tasks; the
/// contract they keep is the test `contract::exercise` in this crate, run against each of them.
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
    /// Conversations, newest first (then by id, descending): at most `limit` of them, starting
    /// after `after` (the last of the previous page).
    fn list(&self, after: Option<ListCursor>, limit: usize) -> StoreFuture<'_, Vec<ThreadRecord>>;
    /// Items of a conversation's history after position `after_seq` (0 for the first), at most
    /// `limit`, oldest first.
    fn items<'a>(&'a self, id: &'a ConversationId, after_seq: u64, limit: usize) -> StoreFuture<'a, Vec<StoredItem>>;
    /// Writes out what the backend still buffers and shrinks its files (called at shutdown);
    /// the store stays usable.
    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}
