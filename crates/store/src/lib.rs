//! Where conversations live, so none exists only in a process's memory.
//!
//! A [`ThreadRecord`] holds what is needed to carry a conversation on anywhere: its codex thread
//! id and the settings it was created with (instructions, model, config overrides). codex keeps
//! the history itself (in `CODEX_HOME`); the pool resumes a thread from its record after a crash
//! or a restart. When a thread has to be replaced by a new id (a fork, when the old one cannot be
//! resumed), the store keeps an alias, so the old id still finds the conversation.
//!
//! [`SqliteStore`] is the default (embedded, one file); [`MemoryStore`] keeps records for the life
//! of the process. Other databases implement [`ThreadStore`].
//!
//! ```
//! # async fn demo() -> Result<(), codex_pool_store::StoreError> {
//! use codex_pool_store::{SqliteStore, ThreadRecord, ThreadStore};
//! let store = SqliteStore::open_in_memory()?;
//! store.save(ThreadRecord::new("thread-1", Default::default())).await?;
//! assert!(store.load("thread-1").await?.is_some());
//! # Ok(()) }
//! ```

mod memory;
mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

use codex_pool_protocol::methods::ThreadSettings;
use std::future::Future;
use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

/// A boxed future returned by [`ThreadStore`] methods.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What went wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("thread store: {0}")]
    Database(#[from] rusqlite::Error),
    /// A stored record could not be read back.
    #[error("thread store: corrupt record for {thread_id}: {reason}")]
    Corrupt {
        /// The thread.
        thread_id: String,
        /// Why.
        reason: String,
    },
    /// The blocking task running the query died.
    #[error("thread store: worker failed: {0}")]
    Worker(String),
}

/// One conversation as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadRecord {
    /// The codex thread id the conversation has now.
    pub thread_id: String,
    /// The settings to resume it with.
    pub settings: ThreadSettings,
    /// When it was created (ms since the epoch).
    pub created_at_ms: i64,
    /// When it was last used (ms since the epoch).
    pub updated_at_ms: i64,
    /// Turns completed so far.
    pub turns: u64,
}

impl ThreadRecord {
    /// A new record, created now.
    pub fn new(thread_id: impl Into<String>, settings: ThreadSettings) -> Self {
        let now = now_ms();
        Self { thread_id: thread_id.into(), settings, created_at_ms: now, updated_at_ms: now, turns: 0 }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Persistence of conversations. Implementations must be safe to share between tasks.
pub trait ThreadStore: Send + Sync + 'static {
    /// Inserts or replaces a record.
    fn save(&self, record: ThreadRecord) -> StoreFuture<'_, ()>;
    /// The record of a thread id, following aliases of replaced ids.
    fn load<'a>(&'a self, thread_id: &'a str) -> StoreFuture<'a, Option<ThreadRecord>>;
    /// Records that a conversation moved from `old_id` to `record.thread_id`: the new record is
    /// saved, the old one removed, and `old_id` (and every alias of it) now leads to the new id.
    fn replace<'a>(&'a self, old_id: &'a str, record: ThreadRecord) -> StoreFuture<'a, ()>;
    /// Records `turns` more completed turns: bumps `turns` and sets `updated_at_ms` to now.
    fn touch<'a>(&'a self, thread_id: &'a str, turns: u64) -> StoreFuture<'a, ()>;
    /// Forgets a thread and its aliases. Returns whether it existed.
    fn delete<'a>(&'a self, thread_id: &'a str) -> StoreFuture<'a, bool>;
    /// How many conversations are stored.
    fn count(&self) -> StoreFuture<'_, u64>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract every store must keep.
    pub(crate) async fn exercise(store: &dyn ThreadStore) {
        let settings = ThreadSettings { developer_instructions: Some("be brief".into()), ..Default::default() };
        assert_eq!(store.load("a").await.unwrap(), None);
        store.save(ThreadRecord::new("a", settings.clone())).await.unwrap();
        let a = store.load("a").await.unwrap().unwrap();
        assert_eq!(a.settings, settings);
        assert_eq!(a.turns, 0);
        store.touch("a", 1).await.unwrap();
        assert_eq!(store.load("a").await.unwrap().unwrap().turns, 1);

        // a -> b -> c: every old id leads to the newest.
        store.replace("a", ThreadRecord { thread_id: "b".into(), ..a.clone() }).await.unwrap();
        store.replace("b", ThreadRecord { thread_id: "c".into(), ..a.clone() }).await.unwrap();
        for id in ["a", "b", "c"] {
            assert_eq!(store.load(id).await.unwrap().unwrap().thread_id, "c", "{id}");
        }
        assert_eq!(store.count().await.unwrap(), 1);
        store.touch("a", 1).await.unwrap();
        assert_eq!(store.load("c").await.unwrap().unwrap().turns, 1, "touch through an alias");

        assert!(store.delete("a").await.unwrap());
        for id in ["a", "b", "c"] {
            assert_eq!(store.load(id).await.unwrap(), None, "{id}");
        }
        assert!(!store.delete("c").await.unwrap());
        assert_eq!(store.count().await.unwrap(), 0);
    }
}
