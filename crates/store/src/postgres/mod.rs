//! The PostgreSQL store, which several nodes share.

mod config;
mod db;
mod errors;
mod keys;
mod leases;
mod schema;
#[cfg(test)]
mod tests;
mod threads;
mod transcripts;
mod turns;

use crate::{
    ConversationId, Fence, Lease, LeaseHolder, ListCursor, NodeId, NodeInfo, NodeStatus, Renewal, StoreError,
    StoreFuture, StoredItem, ThreadRecord, ThreadStore, TranscriptEntry, TranscriptKey, TurnRecord,
};
use codex_pool_protocol::methods::ThreadSettings;
use config::Target;
use db::Db;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// A [`ThreadStore`] in a PostgreSQL database, shared by every node that opens it: the
/// conversations, their histories, the nodes and their leases (fences checked by the database
/// on every fenced write, times by its clock).
///
/// Opened from a URL, `postgres://user:password@host:port/database` (or `postgresql://`, or
/// libpq's `key=value` form), whose parameters are PostgreSQL's (`connect_timeout`,
/// `application_name`, `options`, …) plus the store's own `pool_size=N` (connections in its
/// pool, 8 unless said). Connections are plain TCP or a Unix socket (`host=/run/postgresql`),
/// without TLS: for a server on loopback or a private network. The schema is created or
/// brought up to date when the store opens. A call costs one round trip (one more the first
/// time a connection runs that statement), but `delete`.
#[derive(Clone)]
pub struct PostgresStore {
    db: Arc<Db>,
}

impl PostgresStore {
    /// Connects to the database at `url` and brings its schema up to date (several nodes may
    /// do so at once). Fails with [`StoreError::Unavailable`] if the server cannot be reached,
    /// with [`StoreError::NewerSchema`] if a newer codex-pool wrote it; messages never hold the
    /// URL's password.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let db = Db::new(Target::parse(url)?)?;
        let found = schema::migrate(&db).await?;
        let known = schema::MIGRATIONS.len() as i64;
        if found < known {
            tracing::info!(
                server = db.server(),
                from = found,
                to = known,
                "the thread store's schema was brought up to date"
            );
        }
        tracing::debug!(server = db.server(), "the thread store is open");
        Ok(Self { db: Arc::new(db) })
    }

    /// `postgres://user@host:port/database`: the server, as messages name it.
    pub fn server(&self) -> &str {
        self.db.server()
    }

    /// Round trips to the server this store has made (one per statement, from the check of
    /// its schema at open on): the difference over a run is what `bench` divides by turns.
    pub fn round_trips(&self) -> u64 {
        self.db.round_trips()
    }
}

impl ThreadStore for PostgresStore {
    fn save(&self, record: ThreadRecord) -> StoreFuture<'_, ()> {
        Box::pin(threads::save(&self.db, record))
    }

    fn update_settings<'a>(
        &'a self,
        id: &'a ConversationId,
        settings: ThreadSettings,
        fence: Option<Fence>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move { threads::update_settings(&self.db, id, &settings, fence).await })
    }

    fn load<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, Option<ThreadRecord>> {
        Box::pin(threads::load(&self.db, id))
    }

    fn record_turns<'a>(&'a self, turns: &'a [TurnRecord]) -> StoreFuture<'a, ()> {
        Box::pin(turns::record_turns(&self.db, turns))
    }

    fn history<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, Vec<Value>> {
        Box::pin(threads::history(&self.db, id))
    }

    fn delete<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, bool> {
        Box::pin(threads::delete(&self.db, id))
    }

    fn count(&self) -> StoreFuture<'_, u64> {
        Box::pin(threads::count(&self.db))
    }

    fn list(&self, after: Option<ListCursor>, limit: usize) -> StoreFuture<'_, Vec<ThreadRecord>> {
        Box::pin(threads::list(&self.db, after, limit))
    }

    fn items<'a>(&'a self, id: &'a ConversationId, after_seq: u64, limit: usize) -> StoreFuture<'a, Vec<StoredItem>> {
        Box::pin(threads::items(&self.db, id, after_seq, limit))
    }

    fn register_node<'a>(&'a self, node: &'a NodeInfo) -> StoreFuture<'a, ()> {
        Box::pin(leases::register_node(&self.db, node))
    }

    fn nodes(&self) -> StoreFuture<'_, Vec<NodeStatus>> {
        Box::pin(leases::nodes(&self.db))
    }

    fn acquire_lease<'a>(
        &'a self,
        conversation: &'a ConversationId,
        node: &'a NodeId,
        ttl: Duration,
    ) -> StoreFuture<'a, Lease> {
        Box::pin(leases::acquire(&self.db, conversation, node, ttl))
    }

    fn lease_holder<'a>(&'a self, conversation: &'a ConversationId) -> StoreFuture<'a, Option<LeaseHolder>> {
        Box::pin(leases::holder(&self.db, conversation))
    }

    fn renew_leases<'a>(
        &'a self,
        node: &'a NodeId,
        conversations: &'a [ConversationId],
        ttl: Duration,
    ) -> StoreFuture<'a, Renewal> {
        Box::pin(leases::renew(&self.db, node, conversations, ttl))
    }

    fn release_lease<'a>(&'a self, conversation: &'a ConversationId, node: &'a NodeId) -> StoreFuture<'a, bool> {
        Box::pin(leases::release(&self.db, conversation, node))
    }

    fn release_leases<'a>(&'a self, node: &'a NodeId, conversations: &'a [ConversationId]) -> StoreFuture<'a, u64> {
        Box::pin(leases::release_many(&self.db, node, conversations))
    }

    fn take_transcript<'a>(&'a self, key: &'a TranscriptKey) -> StoreFuture<'a, Option<TranscriptEntry>> {
        Box::pin(transcripts::take(&self.db, key))
    }

    fn put_transcript<'a>(&'a self, key: &'a TranscriptKey, entry: &'a TranscriptEntry) -> StoreFuture<'a, ()> {
        Box::pin(transcripts::put(&self.db, key, entry))
    }

    fn keys(&self) -> &dyn crate::KeyStore {
        self
    }
}
