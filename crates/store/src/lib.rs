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
//! [`SqliteStore`] is the default (embedded, one file); [`PostgresStore`] is the store several
//! nodes share; [`MemoryStore`] keeps records for the life of the process. [`open_store`] picks
//! SQLite or PostgreSQL from a path or URL. Other databases implement [`ThreadStore`].
//!
//! ## The chat transcript index
//!
//! Chat Completions clients send a whole transcript each time; the store says which
//! conversation a transcript is ([`ThreadStore::take_transcript`],
//! [`ThreadStore::put_transcript`]), under a [`TranscriptKey`]: a SHA-256 hash that every node
//! computes alike ([`TranscriptHasher`]). A take removes the entry, so two requests with the
//! same transcript never continue one conversation; entries go with their conversation.
//!
//! ## Pending tool calls
//!
//! When the model calls a client's tool, the turn waits for the client's output. The pool then
//! writes what the turn recorded so far, ending with the `function_call` items, as a
//! [`TurnRecord::partial`] that names the calls ([`PendingCall`]); they are the conversation's
//! [`ThreadRecord::pending_calls`] until a later write replaces them (a completed turn clears
//! them). They are written in the same transaction as the items and under the same fence, so
//! any node, after any restart, reads them with the record, without reading the history.
//!
//! ## API keys
//!
//! The keys an operator issues to applications live in the store too ([`ThreadStore::keys`],
//! a [`KeyStore`]), so every node sees a new or revoked key at once: hashed ([`ApiKey`]), with
//! optional limits, usage counters written at each turn's end, and a per-minute turn counter
//! every node shares. A conversation records the key that created it
//! ([`ThreadRecord::owner`]; `None`: the operator's), and is listed by it
//! ([`KeyStore::list_owned`]).
//!
//! ## Several nodes on one store
//!
//! When several nodes (codex-pool processes) share a store, each conversation is served by one
//! node at a time. A node announces itself with [`ThreadStore::register_node`], and repeats it
//! as its heartbeat. Before it serves a turn it takes the conversation's [`Lease`]
//! ([`ThreadStore::acquire_lease`]), keeps it with [`ThreadStore::renew_leases`] and gives it up
//! with [`ThreadStore::release_lease`] (or many at once, [`ThreadStore::release_leases`]); [`ThreadStore::lease_holder`] only reads who holds it.
//! Every change of owner gives the lease a larger fence; the
//! node puts it on its writes ([`TurnRecord::fence`]), and the store refuses a write whose fence
//! is no longer the conversation's ([`StoreError::Fenced`]).
//!
//! The fencing rule: a write with fence `n` is accepted while the conversation's lease still has
//! fence `n`, whether or not it has expired. Expiry only lets *another* node take the lease;
//! once one has, the fence has changed and every later write of the old owner is refused, and
//! a write that got in first is seen by the new owner, which reads the history after taking
//! the lease. A node paused past its lease whose conversation nobody took over may still write
//! when it resumes: nobody else wrote meanwhile, so the history stays one line. Times of
//! leases and heartbeats are the store's clock (PostgreSQL's `now()`), so the nodes' clocks
//! do not matter.
//!
//! ```
//! # async fn demo() -> Result<(), codex_pool_store::StoreError> {
//! use codex_pool_store::{ConversationId, SqliteStore, ThreadRecord, ThreadStore, TurnRecord};
//! let store = SqliteStore::open_in_memory()?;
//! let id = ConversationId::from("conversation-1");
//! store.save(ThreadRecord::new(id.clone(), Default::default())).await?;
//! let item = serde_json::json!({"type": "message", "role": "user", "content": []});
//! store.record_turns(&[TurnRecord::completed(id.clone(), "turn-1", vec![item])]).await?;
//! assert_eq!(store.load(&id).await?.unwrap().turns, 1);
//! assert_eq!(store.history(&id).await?.len(), 1);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

#[cfg(test)]
mod contract;
mod keys;
mod memory;
mod memory_keys;
mod open;
mod ownership;
mod postgres;
mod row;
mod sqlite;
mod transcripts;
mod types;

pub use keys::{
    check_key_name, hash_secret, looks_like_key, usage, ApiKey, KeyLimits, KeyStore, KEY_PREFIX, PREFIX_CHARS,
};
pub use memory::MemoryStore;
pub use open::{is_postgres_url, open_store};
pub use ownership::{Fence, Lease, LeaseHolder, NodeId, NodeInfo, NodeStatus, Renewal};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use transcripts::{TranscriptEntry, TranscriptHasher, TranscriptKey};
pub use types::{now_ms, ConversationId, ListCursor, PendingCall, StoreError, StoredItem, ThreadRecord, TurnRecord};

use codex_pool_protocol::methods::ThreadSettings;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future returned by [`ThreadStore`] methods.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Persistence of conversations. Implementations must be safe to share between tasks; the
/// contract they keep is the test `contract::exercise` in this crate, run against each of them.
pub trait ThreadStore: Send + Sync + 'static {
    /// Inserts a record, or updates an existing one (all but `created_at_ms`, pending calls
    /// included); its history is kept.
    fn save(&self, record: ThreadRecord) -> StoreFuture<'_, ()>;
    /// Replaces the settings of an existing conversation; does nothing for an unknown id (one
    /// released meanwhile is not brought back). With a `fence`, only while that is the
    /// conversation's fence (as [`TurnRecord::fence`]), else [`StoreError::Fenced`].
    fn update_settings<'a>(
        &'a self,
        id: &'a ConversationId,
        settings: ThreadSettings,
        fence: Option<Fence>,
    ) -> StoreFuture<'a, ()>;
    /// The record of a conversation.
    fn load<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, Option<ThreadRecord>>;
    /// Appends what turns added, in order, all or nothing: each turn's items go to the end of its
    /// conversation's history, completed turns bump `turns` and `updated_at_ms`, and a turn with
    /// [`TurnRecord::pending_calls`] replaces the conversation's pending calls. Turns of
    /// conversations that no longer exist (released meanwhile) are skipped. If a turn carries a
    /// fence that is not its conversation's any more, nothing is written and the call fails with
    /// [`StoreError::Fenced`] (naming one such turn). The turns are borrowed, so that a caller
    /// can write again those a refusal did not concern.
    fn record_turns<'a>(&'a self, turns: &'a [TurnRecord]) -> StoreFuture<'a, ()>;
    /// A conversation's history, oldest item first (empty for an unknown id).
    fn history<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, Vec<Value>>;
    /// Forgets a conversation, its history, its lease and its transcript index entries. Returns
    /// whether it existed.
    fn delete<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, bool>;
    /// How many conversations are stored.
    fn count(&self) -> StoreFuture<'_, u64>;
    /// Conversations, newest first (then by id, descending): at most `limit` of them, starting
    /// after `after` (the last of the previous page).
    fn list(&self, after: Option<ListCursor>, limit: usize) -> StoreFuture<'_, Vec<ThreadRecord>>;
    /// Items of a conversation's history after position `after_seq` (0 for the first), at most
    /// `limit`, oldest first.
    fn items<'a>(&'a self, id: &'a ConversationId, after_seq: u64, limit: usize) -> StoreFuture<'a, Vec<StoredItem>>;
    /// Announces a node, or renews its heartbeat: records its address and the time (the store's
    /// clock). Called at start and then periodically.
    fn register_node<'a>(&'a self, node: &'a NodeInfo) -> StoreFuture<'a, ()>;
    /// The nodes that have registered, by id, with their last heartbeat and how many
    /// conversations each holds an unexpired lease on.
    fn nodes(&self) -> StoreFuture<'_, Vec<NodeStatus>>;
    /// Takes the lease on a conversation for `node`, for `ttl` from now (the store's clock): when
    /// nobody holds it, when its holder's lease expired (a new fence then), or when `node`
    /// holds it already (renewed, same fence). Fails with [`StoreError::OwnedElsewhere`] while
    /// another node holds an unexpired lease. The conversation need not exist yet.
    fn acquire_lease<'a>(
        &'a self,
        conversation: &'a ConversationId,
        node: &'a NodeId,
        ttl: Duration,
    ) -> StoreFuture<'a, Lease>;
    /// Who holds an unexpired lease on a conversation, if anyone: a read, which takes nothing
    /// and gives nothing back (so it cannot undo a lease a turn takes meanwhile).
    fn lease_holder<'a>(&'a self, conversation: &'a ConversationId) -> StoreFuture<'a, Option<LeaseHolder>>;
    /// Extends, to `ttl` from now, the leases `node` still holds among `conversations` (expired
    /// ones too, if nobody took them over: their fences are unchanged), and says which it lost.
    fn renew_leases<'a>(
        &'a self,
        node: &'a NodeId,
        conversations: &'a [ConversationId],
        ttl: Duration,
    ) -> StoreFuture<'a, Renewal>;
    /// Gives up `node`'s lease on a conversation, so another node can take it at once. Returns
    /// whether `node` held it. Its fence is never given out again.
    fn release_lease<'a>(&'a self, conversation: &'a ConversationId, node: &'a NodeId) -> StoreFuture<'a, bool>;
    /// Gives up `node`'s leases among `conversations` at once (one statement; PostgreSQL: one
    /// round trip), as [`ThreadStore::release_lease`] does for one. Returns how many `node` held.
    fn release_leases<'a>(&'a self, node: &'a NodeId, conversations: &'a [ConversationId]) -> StoreFuture<'a, u64>;
    /// Takes the entry indexed under a chat transcript's key out of the index, if any: one call,
    /// atomic (PostgreSQL: one statement), so of two callers with the same key at most one gets
    /// the entry, on any node.
    fn take_transcript<'a>(&'a self, key: &'a TranscriptKey) -> StoreFuture<'a, Option<TranscriptEntry>>;
    /// Indexes a conversation under a chat transcript's key, replacing what the key held, and
    /// any other entry of the conversation (a conversation has one transcript). Does nothing
    /// for an unknown conversation (deleted meanwhile): no entry outlives its conversation.
    fn put_transcript<'a>(&'a self, key: &'a TranscriptKey, entry: &'a TranscriptEntry) -> StoreFuture<'a, ()>;
    /// Its API keys, their usage, and conversations by owner (the same store).
    fn keys(&self) -> &dyn KeyStore;
    /// Writes out what the backend still buffers and shrinks its files (called at shutdown);
    /// the store stays usable.
    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}
