//! The routing table's states and counts, without codex.

use super::*;
use std::time::Duration;

fn loaded(slot: usize, generation: u64, codex: &str) -> Loaded {
    Loaded { slot, generation, codex_id: codex.into() }
}

fn routing() -> Routing {
    let r = Routing::new(2, 2);
    r.slot_restarted(0, 1);
    r.slot_restarted(1, 1);
    r
}

#[tokio::test]
async fn one_turn_at_a_time_and_counts_follow_the_state() {
    let r = routing();
    let a = ConversationId::from("a");
    r.insert_created(a.clone(), Default::default(), true, loaded(0, 1, "x"));
    assert_eq!(r.loads()[0], SlotLoad { generation: 1, loaded: 1, running: 0 });
    let claimed = r.claim_turn(&a).await.ok().unwrap();
    assert_eq!(claimed.loaded, Some(loaded(0, 1, "x")));
    assert!(matches!(r.claim_turn(&a).await, Err(Refused::Busy)));
    assert!(matches!(r.claim_delete(&a).await, Err(Refused::Busy)));
    assert!(matches!(r.claim_unload(&a).await, Err(Refused::Busy)));
    r.turn_placed(&a, 0);
    assert_eq!((r.loads()[0].running, *r.running().borrow()), (1, 1));
    r.end_turn(&a, None);
    assert_eq!((r.loads()[0].running, *r.running().borrow()), (0, 0));
    assert!(r.claim_turn(&a).await.is_ok());
    assert!(matches!(r.claim_turn(&ConversationId::from("b")).await, Err(Refused::Unknown)));
}

#[tokio::test]
async fn a_new_process_counts_from_zero_and_old_threads_do_not_count() {
    let r = routing();
    let a = ConversationId::from("a");
    r.insert_created(a.clone(), Default::default(), true, loaded(1, 1, "x"));
    r.slot_restarted(1, 2);
    assert_eq!(r.loads()[1].loaded, 0);
    // Forgetting the thread of the dead process does not count below zero.
    r.forget_codex_thread(&a);
    assert_eq!(r.loads()[1].loaded, 0);
    assert_eq!(r.take_orphans(), vec![loaded(1, 1, "x")]);
}

#[tokio::test(start_paused = true)]
async fn idle_and_over_cap_threads_are_unloaded_and_a_turn_waits_for_it() {
    let r = Arc::new(routing());
    for (n, id) in ["a", "b", "c"].iter().enumerate() {
        r.insert_created((*id).into(), Default::default(), true, loaded(0, 1, id));
        tokio::time::advance(Duration::from_secs(n as u64 + 1)).await;
    }
    // Three on slot 0, whose cap is 2: the least recently used goes.
    let picked = r.take_idle(Duration::from_secs(3600));
    assert_eq!(picked, vec![(ConversationId::from("a"), Some(loaded(0, 1, "a")))]);
    assert_eq!(r.loads()[0].loaded, 2);
    // A turn of `a` waits until the unload is done.
    let waiting = {
        let r = r.clone();
        tokio::spawn(async move { r.claim_turn(&ConversationId::from("a")).await.ok().map(|c| c.loaded) })
    };
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    r.unloaded(&"a".into());
    assert_eq!(waiting.await.unwrap(), None, "forgotten: the turn reads it from the store");
    // Idle long enough: the rest go too.
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(r.take_idle(Duration::from_secs(3600)).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_conversation_idle_past_idle_after_is_unloaded_and_forgotten() {
    let idle_after = Duration::from_secs(600);
    let r = Routing::new(1, 16);
    r.slot_restarted(0, 1);
    let (a, b) = (ConversationId::from("a"), ConversationId::from("b"));
    r.insert_created(a.clone(), Default::default(), true, loaded(0, 1, "x"));
    tokio::time::advance(Duration::from_secs(1)).await;
    r.insert_created(b.clone(), Default::default(), true, loaded(0, 1, "y"));
    tokio::time::advance(idle_after - Duration::from_millis(500)).await;
    assert_eq!(r.take_idle(idle_after), vec![(a.clone(), Some(loaded(0, 1, "x")))], "only `a` is idle that long");
    r.unloaded(&a);
    assert!(r.get(&a).is_none(), "unloaded and forgotten: its next turn reads it from the store");
    assert!(matches!(r.claim_turn(&a).await, Err(Refused::Unknown)));
    assert_eq!(r.counts(), (1, 1));
    // A released one is forgotten too.
    let _ = r.claim_unload(&b).await.ok().unwrap();
    r.unloaded(&b);
    assert_eq!(r.counts(), (0, 0));
    assert_eq!(r.next_expiry(idle_after), None, "nothing left to expire");
}

#[tokio::test(start_paused = true)]
async fn a_touched_conversation_moves_to_the_back_and_the_next_expiry_follows() {
    let idle_after = Duration::from_secs(60);
    let r = Routing::new(1, 2);
    r.slot_restarted(0, 1);
    let begun = Instant::now();
    for (n, id) in ["a", "b", "c"].iter().enumerate() {
        if n > 0 {
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        r.insert_created((*id).into(), Default::default(), true, loaded(0, 1, id));
    }
    assert_eq!(r.next_expiry(idle_after), Some(begun + idle_after), "`a` first");
    // A turn of `a`: it is used last now, and `b` is next to expire (and to go over the cap).
    tokio::time::advance(Duration::from_secs(1)).await;
    let _ = r.claim_turn(&"a".into()).await.ok().unwrap();
    assert_eq!(r.next_expiry(idle_after), Some(begun + Duration::from_secs(1) + idle_after));
    r.end_turn(&"a".into(), None);
    assert_eq!(r.take_idle(idle_after), vec![(ConversationId::from("b"), Some(loaded(0, 1, "b")))]);
    r.unloaded(&"b".into());
    assert_eq!(r.next_expiry(idle_after), Some(begun + Duration::from_secs(2) + idle_after), "then `c`");
    tokio::time::advance(idle_after - Duration::from_secs(1)).await;
    let expired: Vec<ConversationId> = r.take_idle(idle_after).into_iter().map(|(id, _)| id).collect();
    assert_eq!(expired, ["c".into()], "`a`, touched, is not idle that long");
}

#[tokio::test(start_paused = true)]
async fn a_conversation_becoming_idle_when_none_was_wakes_the_reaper() {
    let r = routing();
    let wake = r.reap_signal();
    let a = ConversationId::from("a");
    r.insert_created(a.clone(), Default::default(), true, loaded(0, 1, "x"));
    let _ = r.claim_turn(&a).await.ok().unwrap();
    assert_eq!(r.next_expiry(Duration::from_secs(1)), None);
    // Whatever woke it before, it sleeps now with no expiry to wait for.
    let _ = tokio::time::timeout(Duration::ZERO, wake.notified()).await;
    assert!(tokio::time::timeout(Duration::ZERO, wake.notified()).await.is_err());
    r.end_turn(&a, None);
    assert!(tokio::time::timeout(Duration::ZERO, wake.notified()).await.is_ok(), "woken: it has an expiry again");
}

#[tokio::test(start_paused = true)]
async fn conversations_held_on_a_dead_process_are_forgotten_too() {
    let r = routing();
    for id in ["a", "b", "c"] {
        r.insert_created(id.into(), Default::default(), true, loaded(0, 1, id));
    }
    // Slot 0 restarts: three stale threads; then three on the new process, one over the cap.
    r.slot_restarted(0, 2);
    for id in ["d", "e", "f"] {
        tokio::time::advance(Duration::from_secs(1)).await;
        r.insert_created(id.into(), Default::default(), true, loaded(0, 2, id));
    }
    let picked: Vec<ConversationId> = r.take_idle(Duration::from_secs(3600)).into_iter().map(|(id, _)| id).collect();
    assert_eq!(picked, ["a".into(), "b".into(), "c".into(), "d".into()]);
    for id in &picked {
        r.unloaded(id);
    }
    assert_eq!(r.counts(), (2, 2));
}

#[tokio::test]
async fn a_deletion_forgets_the_conversation_and_hands_back_its_thread() {
    let r = routing();
    let a = ConversationId::from("a");
    r.insert_created(a.clone(), Default::default(), true, loaded(0, 1, "x"));
    assert!(r.claim_delete(&a).await.ok().unwrap());
    assert!(matches!(r.claim_turn(&a).await, Err(Refused::Busy)));
    r.finish_delete(&a, false);
    assert!(r.claim_delete(&a).await.ok().unwrap(), "a failed deletion leaves it as it was");
    assert_eq!(r.finish_delete(&a, true), Some(loaded(0, 1, "x")));
    assert!(matches!(r.claim_turn(&a).await, Err(Refused::Unknown)));
    assert_eq!(r.counts(), (0, 0));
}

#[tokio::test]
async fn a_conversation_another_node_served_is_forgotten_only_when_idle() {
    let r = routing();
    let (a, b) = (ConversationId::from("a"), ConversationId::from("b"));
    r.insert_created(a.clone(), Default::default(), true, loaded(0, 1, "x"));
    r.insert_created(b.clone(), Default::default(), true, loaded(1, 1, "y"));
    let _running = r.claim_turn(&b).await.ok().unwrap();
    r.evict_if_idle(&a);
    r.evict_if_idle(&b);
    assert!(r.get(&a).is_none(), "idle: forgotten, to be read from the store again");
    assert_eq!(r.take_orphans(), vec![loaded(0, 1, "x")], "and its codex thread unloaded");
    assert_eq!(r.get(&b).unwrap().0, Some(loaded(1, 1, "y")), "a running turn keeps its thread");
    assert_eq!(r.loads()[0].loaded, 0);
}
