//! A store whose turn records fail on demand; everything else is the memory store's.

use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_store::{
    ConversationId, Fence, Lease, LeaseHolder, ListCursor, MemoryStore, NodeId, NodeInfo, NodeStatus, Renewal,
    StoreError, StoreFuture, StoredItem, ThreadRecord, ThreadStore, TurnRecord,
};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// [`MemoryStore`], but `record_turns` fails while `fail_records` is set (as a full disk or a
/// lost database would).
pub struct FailingStore {
    pub inner: MemoryStore,
    pub fail_records: Arc<AtomicBool>,
}

impl ThreadStore for FailingStore {
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
    fn renew_leases<'a>(
        &'a self,
        node: &'a NodeId,
        conversations: &'a [ConversationId],
        ttl: Duration,
    ) -> StoreFuture<'a, Renewal> {
        self.inner.renew_leases(node, conversations, ttl)
    }
    fn release_lease<'a>(&'a self, conversation: &'a ConversationId, node: &'a NodeId) -> StoreFuture<'a, bool> {
        self.inner.release_lease(conversation, node)
    }
    fn lease_holder<'a>(&'a self, conversation: &'a ConversationId) -> StoreFuture<'a, Option<LeaseHolder>> {
        self.inner.lease_holder(conversation)
    }
    fn release_leases<'a>(&'a self, node: &'a NodeId, conversations: &'a [ConversationId]) -> StoreFuture<'a, u64> {
        self.inner.release_leases(node, conversations)
    }
}
