//! A memory store whose calls a test can fail or hold at a chosen point, for faults a real
//! database does not give on demand: a turn record refused (a full disk), a lease release held
//! mid-call (to run something else in that gap).

use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_store::{
    ConversationId, Fence, Lease, LeaseHolder, ListCursor, MemoryStore, NodeId, NodeInfo, NodeStatus, Renewal,
    StoreError, StoreFuture, StoredItem, ThreadRecord, ThreadStore, TranscriptEntry, TranscriptKey, TurnRecord,
};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// [`MemoryStore`], with two switches: `record_turns` fails while [`HookedStore::fail_records`]
/// is set, and lease releases (`release_lease`, `release_leases`) wait, once entered, for
/// [`HookedStore::let_release`] while [`HookedStore::hold_releases`] is set.
#[derive(Default)]
pub struct HookedStore {
    inner: MemoryStore,
    fail_records: AtomicBool,
    hold_releases: AtomicBool,
    releasing: Notify,
    gate: Notify,
}

impl HookedStore {
    /// A memory store with both switches off.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `record_turns` fail (as a full disk would) or work again.
    pub fn fail_records(&self, fail: bool) {
        self.fail_records.store(fail, Ordering::SeqCst);
    }

    /// Makes lease releases wait for [`HookedStore::let_release`] once entered, or not.
    pub fn hold_releases(&self, hold: bool) {
        self.hold_releases.store(hold, Ordering::SeqCst);
    }

    /// Waits until a held release has started.
    pub async fn release_started(&self) {
        self.releasing.notified().await;
    }

    /// Lets one held release go on.
    pub fn let_release(&self) {
        self.gate.notify_one();
    }

    async fn before_release(&self) {
        if self.hold_releases.load(Ordering::SeqCst) {
            self.releasing.notify_one();
            self.gate.notified().await;
        }
    }
}

impl ThreadStore for HookedStore {
    fn save(&self, record: ThreadRecord) -> StoreFuture<'_, ()> {
        self.inner.save(record)
    }
    fn update_settings<'a>(
        &'a self,
        id: &'a ConversationId,
        settings: ThreadSettings,
        fence: Option<Fence>,
    ) -> StoreFuture<'a, ()> {
        self.inner.update_settings(id, settings, fence)
    }
    fn load<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, Option<ThreadRecord>> {
        self.inner.load(id)
    }
    fn record_turns<'a>(&'a self, turns: &'a [TurnRecord]) -> StoreFuture<'a, ()> {
        if self.fail_records.load(Ordering::SeqCst) {
            let message = "the scripted disk is full".to_owned();
            return Box::pin(async move { Err(StoreError::Unavailable { backend: "failing", message }) });
        }
        self.inner.record_turns(turns)
    }
    fn history<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, Vec<Value>> {
        self.inner.history(id)
    }
    fn delete<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, bool> {
        self.inner.delete(id)
    }
    fn count(&self) -> StoreFuture<'_, u64> {
        self.inner.count()
    }
    fn list(&self, after: Option<ListCursor>, limit: usize) -> StoreFuture<'_, Vec<ThreadRecord>> {
        self.inner.list(after, limit)
    }
    fn items<'a>(&'a self, id: &'a ConversationId, after_seq: u64, limit: usize) -> StoreFuture<'a, Vec<StoredItem>> {
        self.inner.items(id, after_seq, limit)
    }
    fn register_node<'a>(&'a self, node: &'a NodeInfo) -> StoreFuture<'a, ()> {
        self.inner.register_node(node)
    }
    fn nodes(&self) -> StoreFuture<'_, Vec<NodeStatus>> {
        self.inner.nodes()
    }
    fn acquire_lease<'a>(
        &'a self,
        conversation: &'a ConversationId,
        node: &'a NodeId,
        ttl: Duration,
    ) -> StoreFuture<'a, Lease> {
        self.inner.acquire_lease(conversation, node, ttl)
    }
    fn lease_holder<'a>(&'a self, conversation: &'a ConversationId) -> StoreFuture<'a, Option<LeaseHolder>> {
        self.inner.lease_holder(conversation)
    }
    fn renew_leases<'a>(
        &'a self,
        node: &'a NodeId,
        conversations: &'a [ConversationId],
        ttl: Duration,
    ) -> StoreFuture<'a, Renewal> {
        self.inner.renew_leases(node, conversations, ttl)
    }
    fn release_lease<'a>(&'a self, conversation: &'a ConversationId, node: &'a NodeId) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            self.before_release().await;
            self.inner.release_lease(conversation, node).await
        })
    }
    fn release_leases<'a>(&'a self, node: &'a NodeId, conversations: &'a [ConversationId]) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            self.before_release().await;
            self.inner.release_leases(node, conversations).await
        })
    }
    fn take_transcript<'a>(&'a self, key: &'a TranscriptKey) -> StoreFuture<'a, Option<TranscriptEntry>> {
        self.inner.take_transcript(key)
    }
    fn put_transcript<'a>(&'a self, key: &'a TranscriptKey, entry: &'a TranscriptEntry) -> StoreFuture<'a, ()> {
        self.inner.put_transcript(key, entry)
    }
    fn keys(&self) -> &dyn codex_pool_store::KeyStore {
        self.inner.keys()
    }
}
