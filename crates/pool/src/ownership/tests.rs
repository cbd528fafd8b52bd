//! [`Ownership`] against a store whose calls a test can hold at a chosen point.

use super::{NodeConfig, Ownership};
use crate::routing::Routing;
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_store::{
    ConversationId, Fence, Lease, LeaseHolder, ListCursor, MemoryStore, NodeId, NodeInfo, NodeStatus, PostgresStore,
    Renewal, StoreFuture, StoredItem, ThreadRecord, ThreadStore, TurnRecord,
};
use codex_pool_testkit::postgres::TestPostgres;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// A memory store whose lease releases wait, once entered, until the test lets them through.
#[derive(Default)]
struct HeldReleases {
    inner: MemoryStore,
    /// Notified when a release starts.
    releasing: Notify,
    /// Lets a waiting release go on.
    gate: Notify,
}

impl HeldReleases {
    async fn hold(&self) {
        self.releasing.notify_one();
        self.gate.notified().await;
    }
}

impl ThreadStore for HeldReleases {
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
            self.hold().await;
            self.inner.release_lease(conversation, node).await
        })
    }
    fn release_leases<'a>(&'a self, node: &'a NodeId, conversations: &'a [ConversationId]) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            self.hold().await;
            self.inner.release_leases(node, conversations).await
        })
    }
}

/// Asking whether another node serves a conversation, while a turn takes its lease here, must
/// not give that lease back: the turn's writes would then be refused (fenced).
#[tokio::test]
async fn asking_who_serves_a_conversation_never_undoes_a_turns_lease() {
    let store = Arc::new(HeldReleases::default());
    let ownership =
        Arc::new(Ownership::new(&NodeConfig::new("node-a", "http://a:1"), Duration::from_secs(600), store.clone()));
    let id = ConversationId::from("asked");
    store.save(ThreadRecord::new(id.clone(), Default::default())).await.unwrap();
    let mut check = tokio::spawn({
        let (ownership, id) = (ownership.clone(), id.clone());
        async move { ownership.check_elsewhere(&id).await }
    });
    // The check answers, or stops where it would give a lease back.
    let answered = tokio::select! {
        _ = store.releasing.notified() => None,
        done = &mut check => Some(done.unwrap()),
    };
    // Meanwhile a turn takes the lease.
    let fence = ownership.fence(&id).await.unwrap().fence;
    store.gate.notify_one();
    let answered = match answered {
        Some(answered) => answered,
        None => check.await.unwrap(),
    };
    answered.unwrap();
    // The turn's write under its fence goes through: the lease is still this node's.
    let turn = TurnRecord::completed("asked", "t1", vec![json!({"n": 1})]).with_fence(fence);
    store.record_turns(&[turn]).await.unwrap();
    assert_eq!(store.lease_holder(&id).await.unwrap().map(|h| (h.node, h.fence)), Some(("node-a".into(), fence)));
}

/// Another node's lease is named; a lease this node does not hold is not taken by asking.
#[tokio::test]
async fn asking_names_the_other_node_and_takes_nothing() {
    let store = Arc::new(MemoryStore::new());
    store.register_node(&NodeInfo::new("node-b", "http://b:1")).await.unwrap();
    let ownership = Ownership::new(&NodeConfig::new("node-a", "http://a:1"), Duration::from_secs(600), store.clone());
    let (free, taken) = (ConversationId::from("free"), ConversationId::from("taken"));
    ownership.check_elsewhere(&free).await.unwrap();
    assert_eq!(store.lease_holder(&free).await.unwrap(), None, "asking took nothing");
    store.acquire_lease(&taken, &"node-b".into(), Duration::from_secs(600)).await.unwrap();
    let err = ownership.check_elsewhere(&taken).await.unwrap_err();
    assert!(err.to_string().contains("node-b at http://b:1"), "{err}");
}

/// Leases unused for `idle_after` are given back in one round trip, and so is every lease at
/// shutdown, however many there are.
#[tokio::test]
async fn leases_are_given_back_in_one_round_trip() {
    let Some(server) = TestPostgres::shared() else { return };
    let db = server.database().await;
    let store = PostgresStore::open(db.url()).await.unwrap();
    // Every lease is unused as soon as it is taken.
    let ownership = Ownership::new(&NodeConfig::new("node-a", "http://a:1"), Duration::ZERO, Arc::new(store.clone()));
    let ids: Vec<ConversationId> = (0..4).map(|n| ConversationId::from(format!("idle-{n}"))).collect();
    for id in &ids {
        ownership.fence(id).await.unwrap();
    }
    let before = store.round_trips();
    let mut gone = ownership.renew_once(&Routing::new(1, 16)).await.unwrap();
    assert_eq!(store.round_trips() - before, 2, "the heartbeat, then the four leases given back");
    gone.sort();
    assert_eq!((gone, ownership.count()), (ids.clone(), 0));
    for id in &ids {
        assert_eq!(store.lease_holder(id).await.unwrap(), None);
        ownership.fence(id).await.unwrap();
    }
    let before = store.round_trips();
    ownership.release_all().await;
    assert_eq!(store.round_trips() - before, 1, "all four at once");
    for id in &ids {
        assert_eq!(store.lease_holder(id).await.unwrap(), None);
    }
}
