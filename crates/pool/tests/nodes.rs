//! Two pools (nodes) sharing one PostgreSQL store, against the real pinned codex and the fake
//! model: one node serves a conversation at a time, the other takes it over when the first lets
//! go, and a write made under a lease another node has taken is refused by its fence.

use codex_pool::{AbortReason, ConversationId, NodeConfig, Pool, PoolConfig, PoolError, TurnEvent, TurnOptions};
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::types::{TurnStatus, UserInput};
use codex_pool_store::{PostgresStore, StoreError};
use codex_pool_testkit::postgres::{TestDatabase, TestPostgres};
use codex_pool_testkit::*;
use std::sync::Arc;
use std::time::Duration;

/// A node of one process on the database, with the given lease.
async fn node(env: &Env, db: &TestDatabase, id: &str, lease: Duration) -> (Pool, PostgresStore) {
    let store = PostgresStore::open(db.url()).await.unwrap();
    let mut config = PoolConfig::new(env.config());
    config.size = 1;
    let mut node = NodeConfig::new(id, format!("http://{id}.test:7878"));
    node.lease_ttl = lease;
    config.node = Some(node);
    let pool = Pool::new(config, Arc::new(store.clone()));
    pool.ensure_started().await.unwrap();
    (pool, store)
}

async fn say(pool: &Pool, id: &ConversationId, text: &str) -> Result<(String, TurnEvent), PoolError> {
    let turn = pool.start_turn(id, vec![UserInput::text(text)], TurnOptions::default()).await?;
    Ok(tokio::time::timeout(Duration::from_secs(60), turn.collect_text()).await.expect("the turn ends"))
}

fn completed(end: &TurnEvent) -> bool {
    matches!(end, TurnEvent::Completed { status: TurnStatus::Completed, .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_serves_a_conversation_and_another_takes_it_over_when_it_lets_go() {
    let Some(server) = TestPostgres::shared() else { return };
    let db = server.database().await;
    let env = Env::new().await;
    let (a, a_store) = node(&env, &db, "a", Duration::from_secs(30)).await;
    let (b, _) = node(&env, &db, "b", Duration::from_secs(30)).await;

    let id = a.create_thread(ThreadSettings::default()).await.unwrap();
    let before = a_store.round_trips();
    let (text, end) = say(&a, &id, "first words").await.unwrap();
    assert_eq!((text.as_str(), completed(&end)), ("echo: first words", true), "{end:?}");
    let (_, end) = say(&a, &id, "second words").await.unwrap();
    assert!(completed(&end), "{end:?}");
    // The lease is held: a turn costs the store one round trip, its write.
    assert_eq!(a_store.round_trips() - before, 2, "two turns, two round trips");

    // The other node reads it, but does not serve it: it names who does.
    assert_eq!(b.conversation(&id).await.unwrap().unwrap().record.turns, 2);
    match say(&b, &id, "not here").await {
        Err(PoolError::Store(StoreError::OwnedElsewhere { node, address, .. })) => {
            assert_eq!((node.as_str(), address.as_deref()), ("a", Some("http://a.test:7878")))
        }
        other => panic!("{other:?}"),
    }
    let nodes = b.nodes().await.unwrap();
    let held: Vec<(String, u64)> = nodes.iter().map(|n| (n.id.to_string(), n.conversations)).collect();
    assert_eq!(held, vec![("a".to_owned(), 1), ("b".to_owned(), 0)]);
    assert_eq!(a.stats().node.unwrap().leases, 1);

    // A stops: it gives its leases back, and the other node carries the conversation on from
    // the store, with its whole history.
    a.shutdown().await;
    let (text, end) = say(&b, &id, "third words").await.unwrap();
    assert_eq!((text.as_str(), completed(&end)), ("echo: third words", true), "{end:?}");
    let sent = messages(&env.requests_with("third words")[0]);
    for earlier in ["first words", "echo: first words", "second words", "echo: second words"] {
        assert!(sent.iter().any(|(_, t)| t == earlier), "{earlier:?} missing from {sent:?}");
    }
    assert_eq!(b.conversation(&id).await.unwrap().unwrap().record.turns, 3);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_finished_under_a_lease_another_node_took_is_not_kept() {
    let Some(server) = TestPostgres::shared() else { return };
    let db = server.database().await;
    let env = Env::new().await;
    // Long leases: A believes its lease is good all along, as a node paused past it would.
    let (a, _) = node(&env, &db, "a", Duration::from_secs(60)).await;
    let (b, _) = node(&env, &db, "b", Duration::from_secs(60)).await;
    let id = a.create_thread(ThreadSettings::default()).await.unwrap();
    let (_, end) = say(&a, &id, "kept words").await.unwrap();
    assert!(completed(&end));

    let slow = a
        .start_turn(
            &id,
            vec![UserInput::text("lost words [mock:deltas=30] [mock:delay_ms=100]")],
            TurnOptions::default(),
        )
        .await
        .unwrap();
    // A's lease runs out, as the store sees it (A was paused, say), and B takes the
    // conversation for a turn of its own, rebuilt from the store.
    db.execute(&format!("UPDATE leases SET expires_at = now() - interval '1 second' WHERE thread_id = '{id}'"))
        .await
        .unwrap();
    let (text, end) = say(&b, &id, "new owner words").await.unwrap();
    assert_eq!((text.as_str(), completed(&end)), ("echo: new owner words", true), "{end:?}");

    // A's turn ends: its write carried the old fence, and the store refused it.
    let (_, end) = tokio::time::timeout(Duration::from_secs(60), slow.collect_text()).await.unwrap();
    let TurnEvent::Aborted { reason: AbortReason::LeaseLost, message } = &end else { panic!("{end:?}") };
    assert!(message.contains("another node"), "{message}");
    let history = b.store().history(&id).await.unwrap();
    let history = serde_json::to_string(&history).unwrap();
    assert!(history.contains("new owner words") && history.contains("kept words"), "{history}");
    assert!(!history.contains("lost words"), "the fenced turn left nothing: {history}");
    assert_eq!(b.conversation(&id).await.unwrap().unwrap().record.turns, 2);
    // And A knows: it sends the next turn to B.
    assert!(matches!(
        say(&a, &id, "again").await,
        Err(PoolError::Store(StoreError::OwnedElsewhere { ref node, .. })) if node.as_str() == "b"
    ));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restarted_under_a_node_fails_turns_clearly_and_the_node_carries_on() {
    if TestPostgres::shared().is_none() {
        return;
    }
    let Ok(server) = TestPostgres::start() else {
        println!("skipped: restarting PostgreSQL needs a throwaway server");
        return;
    };
    let db = server.database().await;
    let env = Env::new().await;
    let (a, _) = node(&env, &db, "a", Duration::from_secs(30)).await;
    let id = a.create_thread(ThreadSettings::default()).await.unwrap();
    let (_, end) = say(&a, &id, "before the restart").await.unwrap();
    assert!(completed(&end));

    server.shut_down();
    // A turn that ends while the store is down is kept nowhere, and says why.
    let (_, end) = say(&a, &id, "during the outage").await.unwrap();
    let TurnEvent::Aborted { reason: AbortReason::StoreFailed, message } = &end else { panic!("{end:?}") };
    assert!(message.contains("PostgreSQL") && message.contains("send it again"), "{message}");
    // Nothing new can be created; the error names the server and what to check.
    let err = a.create_thread(ThreadSettings::default()).await.unwrap_err();
    assert!(matches!(err, PoolError::Store(StoreError::Unavailable { .. })), "{err}");

    server.restart().unwrap();
    let (text, end) = say(&a, &id, "after the restart").await.unwrap();
    assert_eq!((text.as_str(), completed(&end)), ("echo: after the restart", true), "{end:?}");
    let sent = messages(&env.requests_with("after the restart")[0]);
    assert!(sent.iter().any(|(_, t)| t == "echo: before the restart"), "{sent:?}");
    assert!(!sent.iter().any(|(_, t)| t.contains("during the outage")), "the failed turn left nothing: {sent:?}");
    assert_eq!(a.conversation(&id).await.unwrap().unwrap().record.turns, 2);
    a.shutdown().await;
}
