//! [`Ownership`] against a store whose calls a test can hold at a chosen point
//! ([`HookedStore`]).

use super::{NodeConfig, Ownership};
use crate::routing::Routing;
use codex_pool_store::{ConversationId, MemoryStore, NodeInfo, PostgresStore, ThreadRecord, ThreadStore, TurnRecord};
use codex_pool_testkit::postgres::TestPostgres;
use codex_pool_testkit::stores::HookedStore;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Asking whether another node serves a conversation, while a turn takes its lease here, must
/// not give that lease back: the turn's writes would then be refused (fenced).
#[tokio::test]
async fn asking_who_serves_a_conversation_never_undoes_a_turns_lease() {
    let store = Arc::new(HookedStore::new());
    store.hold_releases(true);
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
        _ = store.release_started() => None,
        done = &mut check => Some(done.unwrap()),
    };
    // Meanwhile a turn takes the lease.
    let fence = ownership.fence(&id).await.unwrap().fence;
    store.let_release();
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
