//! The contract of nodes, leases and fences, run against every store with the rest of it.

use crate::*;
use serde_json::json;

const LONG: Duration = Duration::from_secs(600);
/// A lease that has run out as soon as it is taken (its expiry is `now`, and a lease is held
/// while its expiry is later than now): expiry without sleeping.
const SPENT: Duration = Duration::ZERO;

pub(super) async fn exercise(store: &dyn ThreadStore) {
    nodes_announce_themselves(store).await;
    a_held_lease_is_refused_to_others(store).await;
    the_holder_is_read_without_taking_the_lease(store).await;
    fences_refuse_the_writes_of_a_node_that_was_taken_over(store).await;
    renewals_say_what_was_lost(store).await;
    released_and_deleted_leases_never_give_a_fence_back(store).await;
    many_leases_are_given_back_at_once(store).await;
    nodes_count_the_conversations_they_hold(store).await;
}

fn a() -> NodeId {
    NodeId::from("node-a")
}

fn b() -> NodeId {
    NodeId::from("node-b")
}

fn turn(id: &str, n: u32) -> TurnRecord {
    TurnRecord::completed(id, format!("t{n}"), vec![json!({"n": n})])
}

async fn nodes_announce_themselves(store: &dyn ThreadStore) {
    assert!(store.nodes().await.unwrap().is_empty());
    store.register_node(&NodeInfo::new(b(), "http://b:1")).await.unwrap();
    store.register_node(&NodeInfo::new(a(), "http://a:0")).await.unwrap();
    let first = store.nodes().await.unwrap();
    // The heartbeat again, from a new address.
    store.register_node(&NodeInfo::new(a(), "http://a:1")).await.unwrap();
    let nodes = store.nodes().await.unwrap();
    assert_eq!(
        nodes.iter().map(|n| (n.id.as_str(), n.address.as_str())).collect::<Vec<_>>(),
        [("node-a", "http://a:1"), ("node-b", "http://b:1")]
    );
    assert!(nodes[0].heartbeat_at_ms >= first[0].heartbeat_at_ms);
    assert!(nodes.iter().all(|n| n.conversations == 0 && n.heartbeat_age_ms < 60_000), "{nodes:?}");
}

async fn a_held_lease_is_refused_to_others(store: &dyn ThreadStore) {
    let id = ConversationId::from("held");
    let lease = store.acquire_lease(&id, &a(), LONG).await.unwrap();
    assert_eq!((&lease.conversation, &lease.node), (&id, &a()));
    assert!(lease.fence > Fence::new(0) && lease.expires_at_ms > now_ms() - 60_000);
    // Taking it again renews it: same fence.
    let again = store.acquire_lease(&id, &a(), LONG).await.unwrap();
    assert_eq!(again.fence, lease.fence);
    assert!(again.expires_at_ms >= lease.expires_at_ms);
    let err = store.acquire_lease(&id, &b(), LONG).await.unwrap_err();
    match &err {
        StoreError::OwnedElsewhere { thread_id, node, address } => {
            assert_eq!((thread_id.as_str(), node, address.as_deref()), ("held", &a(), Some("http://a:1")));
        }
        other => panic!("expected OwnedElsewhere, got {other}"),
    }
    assert!(err.to_string().contains("node-a at http://a:1"), "{err}");
    // An owner that never registered is named without an address.
    let unknown = NodeId::from("node-x");
    store.acquire_lease(&"held-by-x".into(), &unknown, LONG).await.unwrap();
    let err = store.acquire_lease(&"held-by-x".into(), &a(), LONG).await.unwrap_err();
    assert!(matches!(&err, StoreError::OwnedElsewhere { address: None, .. }), "{err}");
    assert!(store.release_lease(&"held-by-x".into(), &unknown).await.unwrap());
    assert!(store.release_lease(&id, &a()).await.unwrap());
}

async fn the_holder_is_read_without_taking_the_lease(store: &dyn ThreadStore) {
    let id = ConversationId::from("read");
    assert_eq!(store.lease_holder(&id).await.unwrap(), None, "nobody holds it");
    let lease = store.acquire_lease(&id, &a(), LONG).await.unwrap();
    let holder = store.lease_holder(&id).await.unwrap().expect("A holds it");
    assert_eq!((&holder.node, holder.address.as_deref(), holder.fence), (&a(), Some("http://a:1"), lease.fence));
    assert!(holder.expires_at_ms >= lease.expires_at_ms);
    let err = holder.owned_elsewhere(&id);
    assert!(matches!(&err, StoreError::OwnedElsewhere { node, .. } if node == &a()), "{err}");
    assert!(err.to_string().contains("node-a at http://a:1"), "{err}");
    // Reading took nothing: still A's, same fence, B refused.
    assert_eq!(store.acquire_lease(&id, &a(), LONG).await.unwrap().fence, lease.fence);
    assert!(matches!(store.acquire_lease(&id, &b(), LONG).await, Err(StoreError::OwnedElsewhere { .. })));
    assert!(store.release_lease(&id, &a()).await.unwrap());
    assert_eq!(store.lease_holder(&id).await.unwrap(), None, "released");
    // A lease run out is nobody's, but reading it does not take it from its node: A renews it
    // with its fence.
    let lapsed = store.acquire_lease(&id, &b(), SPENT).await.unwrap();
    assert_eq!(store.lease_holder(&id).await.unwrap(), None, "run out");
    let renewed = store.renew_leases(&b(), std::slice::from_ref(&id), LONG).await.unwrap().renewed;
    assert_eq!(renewed, std::slice::from_ref(&id));
    let holder = store.lease_holder(&id).await.unwrap().expect("B renewed it");
    assert_eq!((&holder.node, holder.fence), (&b(), lapsed.fence));
    assert!(store.release_lease(&id, &b()).await.unwrap());
    // An owner that never registered is named without an address.
    let unknown = NodeId::from("node-x");
    store.acquire_lease(&id, &unknown, LONG).await.unwrap();
    assert_eq!(store.lease_holder(&id).await.unwrap().map(|h| (h.node, h.address)), Some((unknown.clone(), None)));
    assert!(store.release_lease(&id, &unknown).await.unwrap());
}

async fn fences_refuse_the_writes_of_a_node_that_was_taken_over(store: &dyn ThreadStore) {
    let (id, other) = (ConversationId::from("fenced"), ConversationId::from("bystander"));
    store.save(ThreadRecord::new(id.clone(), Default::default())).await.unwrap();
    store.save(ThreadRecord::new(other.clone(), Default::default())).await.unwrap();
    // A's lease runs out at once; nobody has taken the conversation yet, so A may still write.
    let f = store.acquire_lease(&id, &a(), SPENT).await.unwrap().fence;
    store.record_turns(&[turn("fenced", 1).with_fence(f)]).await.unwrap();
    // B takes it over: a new fence.
    let g = store.acquire_lease(&id, &b(), LONG).await.unwrap().fence;
    assert!(g > f, "the fence grows on a change of owner: {f} then {g}");
    // A's write with its old fence is refused, with the rest of its batch.
    let batch = vec![turn("bystander", 2), turn("fenced", 3).with_fence(f)];
    let err = store.record_turns(&batch).await.unwrap_err();
    match &err {
        StoreError::Fenced { thread_id, fence } => assert_eq!((thread_id.as_str(), *fence), ("fenced", f)),
        other => panic!("expected Fenced, got {other}"),
    }
    assert!(err.to_string().contains("nothing was written"), "{err}");
    let changed = ThreadSettings { model: Some("stale".into()), ..Default::default() };
    let err = store.update_settings(&id, changed, Some(f)).await.unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    assert!(store.history(&other).await.unwrap().is_empty(), "nothing of the refused batch was written");
    let record = store.load(&id).await.unwrap().unwrap();
    assert_eq!((record.turns, record.settings.model), (1, None));
    // B's writes go through, after A's first one.
    store.record_turns(&[turn("fenced", 4).with_fence(g), turn("bystander", 5)]).await.unwrap();
    let mine = ThreadSettings { model: Some("b's".into()), ..Default::default() };
    store.update_settings(&id, mine.clone(), Some(g)).await.unwrap();
    let items = store.items(&id, 0, 10).await.unwrap();
    assert_eq!(items.iter().map(|i| (i.seq, i.item["n"].as_u64().unwrap())).collect::<Vec<_>>(), [(1, 1), (2, 4)]);
    assert_eq!(store.load(&id).await.unwrap().unwrap().settings, mine);
    // A fenced write to a conversation deleted meanwhile (its lease with it) is skipped, as any
    // write to it.
    let h = store.acquire_lease(&other, &a(), LONG).await.unwrap().fence;
    assert!(store.delete(&other).await.unwrap());
    store.record_turns(&[turn("bystander", 6).with_fence(h)]).await.unwrap();
    assert_eq!(store.load(&other).await.unwrap(), None);
    assert!(!store.release_lease(&other, &a()).await.unwrap(), "the lease went with the conversation");
    store.delete(&id).await.unwrap();
}

async fn renewals_say_what_was_lost(store: &dyn ThreadStore) {
    let ids: Vec<ConversationId> = ["r1", "r2", "r3", "r4"].map(ConversationId::from).into();
    let kept = store.acquire_lease(&ids[0], &a(), LONG).await.unwrap();
    // Expired, but nobody took it: still A's to renew, with the same fence.
    let lapsed = store.acquire_lease(&ids[1], &a(), SPENT).await.unwrap();
    // Expired and taken over by B.
    store.acquire_lease(&ids[2], &a(), SPENT).await.unwrap();
    store.acquire_lease(&ids[2], &b(), LONG).await.unwrap();
    let renewal = store.renew_leases(&a(), &ids, LONG).await.unwrap();
    assert_eq!(renewal.renewed, &ids[..2]);
    assert_eq!(renewal.lost, &ids[2..], "taken over, and never held");
    assert!(renewal.expires_at_ms >= kept.expires_at_ms);
    // The lapsed lease is A's again for LONG: B is refused, A keeps its fence.
    assert!(matches!(store.acquire_lease(&ids[1], &b(), LONG).await, Err(StoreError::OwnedElsewhere { .. })));
    assert_eq!(store.acquire_lease(&ids[1], &a(), LONG).await.unwrap().fence, lapsed.fence);
    let nothing = store.renew_leases(&a(), &[], LONG).await.unwrap();
    assert!(nothing.renewed.is_empty() && nothing.lost.is_empty());
    for id in &ids[..2] {
        assert!(store.release_lease(id, &a()).await.unwrap());
    }
    assert!(!store.release_lease(&ids[2], &a()).await.unwrap(), "B's lease is not A's to release");
    assert!(store.release_lease(&ids[2], &b()).await.unwrap());
}

async fn released_and_deleted_leases_never_give_a_fence_back(store: &dyn ThreadStore) {
    let id = ConversationId::from("reused");
    store.save(ThreadRecord::new(id.clone(), Default::default())).await.unwrap();
    let first = store.acquire_lease(&id, &a(), LONG).await.unwrap().fence;
    assert!(store.release_lease(&id, &a()).await.unwrap());
    // Released: another node takes it at once, with a new fence; A's writes are refused.
    let second = store.acquire_lease(&id, &b(), LONG).await.unwrap().fence;
    assert!(second > first);
    let refused = store.record_turns(&[turn("reused", 1).with_fence(first)]).await;
    assert!(matches!(refused, Err(StoreError::Fenced { .. })), "{refused:?}");
    // Deleted and created again under the same id: still a new fence.
    assert!(store.delete(&id).await.unwrap());
    store.save(ThreadRecord::new(id.clone(), Default::default())).await.unwrap();
    let third = store.acquire_lease(&id, &a(), LONG).await.unwrap().fence;
    assert!(third > second, "{third} after {second}");
    let refused = store.record_turns(&[turn("reused", 2).with_fence(second)]).await;
    assert!(matches!(refused, Err(StoreError::Fenced { .. })), "{refused:?}");
    // Without a lease at all, a fenced write is refused too.
    assert!(store.release_lease(&id, &a()).await.unwrap());
    let refused = store.record_turns(&[turn("reused", 3).with_fence(third)]).await;
    assert!(matches!(refused, Err(StoreError::Fenced { .. })), "{refused:?}");
    assert!(store.history(&id).await.unwrap().is_empty());
    store.delete(&id).await.unwrap();
}

async fn many_leases_are_given_back_at_once(store: &dyn ThreadStore) {
    let ids: Vec<ConversationId> = ["m1", "m2", "m3", "m-never"].map(ConversationId::from).into();
    let first = store.acquire_lease(&ids[0], &a(), LONG).await.unwrap().fence;
    store.acquire_lease(&ids[1], &a(), SPENT).await.unwrap();
    store.acquire_lease(&ids[2], &b(), LONG).await.unwrap();
    assert_eq!(store.release_leases(&a(), &[]).await.unwrap(), 0);
    // A's two (one of them run out) go; B's is not A's to give back; one was never held.
    assert_eq!(store.release_leases(&a(), &ids).await.unwrap(), 2);
    assert_eq!(store.renew_leases(&a(), &ids, LONG).await.unwrap().renewed, [] as [ConversationId; 0]);
    assert_eq!(store.lease_holder(&ids[2]).await.unwrap().map(|h| h.node), Some(b()));
    // Released: B takes one at once, with a new fence.
    assert!(store.acquire_lease(&ids[0], &b(), LONG).await.unwrap().fence > first);
    assert_eq!(store.release_leases(&b(), &ids).await.unwrap(), 2);
    assert_eq!(store.renew_leases(&b(), &ids, LONG).await.unwrap().renewed, [] as [ConversationId; 0]);
}

async fn nodes_count_the_conversations_they_hold(store: &dyn ThreadStore) {
    for n in 0..3 {
        store.acquire_lease(&format!("count-a{n}").into(), &a(), LONG).await.unwrap();
    }
    store.acquire_lease(&"count-b".into(), &b(), LONG).await.unwrap();
    store.acquire_lease(&"count-lapsed".into(), &b(), SPENT).await.unwrap();
    let counts: Vec<(String, u64)> =
        store.nodes().await.unwrap().into_iter().map(|n| (n.id.to_string(), n.conversations)).collect();
    assert_eq!(counts, [("node-a".to_owned(), 3), ("node-b".to_owned(), 1)], "expired leases do not count");
    // Deleting a conversation drops its lease.
    store.save(ThreadRecord::new("count-a0", Default::default())).await.unwrap();
    store.delete(&"count-a0".into()).await.unwrap();
    assert_eq!(store.nodes().await.unwrap()[0].conversations, 2);
}
