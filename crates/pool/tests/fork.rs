//! Going on from an earlier turn (`Pool::fork_at`), against the real pinned codex and the fake
//! model.

use codex_pool::{ConversationId, Fork, Pool, PoolConfig, PoolError, Profile, TurnOptions};
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::types::UserInput;
use codex_pool_protocol::TurnId;
use codex_pool_store::{MemoryStore, ThreadStore};
use codex_pool_testkit::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Runs a turn to its end; answers its id and reply.
async fn turn(pool: &Pool, id: &ConversationId, text: &str) -> (TurnId, String) {
    let turn = pool.start_turn(id, vec![UserInput::text(text)], TurnOptions::default()).await.unwrap();
    let turn_id = turn.turn_id().to_owned();
    let (reply, _) = tokio::time::timeout(Duration::from_secs(60), turn.collect_text()).await.expect("turn ends");
    (turn_id, reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_goes_on_from_its_latest_turn_in_place_and_from_an_earlier_one_in_a_fork() {
    let env = Env::new().await;
    let store = Arc::new(MemoryStore::new());
    let mut config = PoolConfig::new(env.config());
    config.size = 1;
    let pool = Pool::new(config, store.clone());
    pool.ensure_started().await.unwrap();
    let settings = ThreadSettings { developer_instructions: Some("be brief".into()), ..Default::default() };
    let mut metadata = serde_json::Map::new();
    metadata.insert("who".into(), json!("ada"));
    let id = pool.create_thread_with_metadata(settings, Profile::Chat, metadata).await.unwrap();
    let (first, _) = turn(&pool, &id, "one").await;
    let (second, _) = turn(&pool, &id, "two").await;

    assert_eq!(pool.fork_at(&id, &second).await.unwrap(), Fork::Latest);
    assert_eq!(pool.fork_at(&id, &"no-such-turn".into()).await.unwrap(), Fork::NoSuchTurn);
    assert!(matches!(pool.fork_at(&"nobody".into(), &first).await, Err(PoolError::UnknownThread(_))));

    let Fork::New(fork) = pool.fork_at(&id, &first).await.unwrap() else { panic!("an earlier turn forks") };
    assert_ne!(fork, id);
    let original = store.history(&id).await.unwrap();
    let items = pool.all_items(&id).await.unwrap();
    let up_to_first = items.iter().rposition(|i| i.turn_id == first).unwrap() + 1;
    assert!(up_to_first < original.len());
    assert_eq!(store.history(&fork).await.unwrap(), original[..up_to_first], "the history up to the turn");
    let (was, now) = (store.load(&id).await.unwrap().unwrap(), store.load(&fork).await.unwrap().unwrap());
    assert_eq!((&now.settings, &now.profile, &now.metadata), (&was.settings, &was.profile, &was.metadata));
    assert_eq!(store.history(&id).await.unwrap(), original, "the original is left as it is");
    // The fork goes on with the history up to the turn: the model is sent `one`, not `two`.
    let (_, reply) = turn(&pool, &fork, "three").await;
    assert_eq!(reply, "echo: three");
    let sent: Vec<Vec<String>> = env
        .mock
        .requests()
        .iter()
        .map(|r| messages(&r.body).into_iter().map(|(_, text)| text).collect())
        .filter(|said: &Vec<String>| said.last().is_some_and(|t| t == "three"))
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].iter().filter(|t| *t == "one").count(), 1, "{:?}", sent[0]);
    assert!(!sent[0].iter().any(|t| t == "two"), "{:?}", sent[0]);
    pool.shutdown().await;
}
