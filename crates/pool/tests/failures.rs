//! Every turn ends, and says why: an unreachable model, oversized input, a failing store. Against
//! the real pinned `codex app-server` and the fake model.

use codex_pool::{AbortReason, ConversationId, Pool, PoolConfig, PoolError, TurnEvent, TurnOptions};
use codex_pool_mock_model::{MockConfig, MockModel};
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::types::{TurnStatus, UserInput};
use codex_pool_store::{SqliteStore, ThreadStore};
use codex_pool_testkit::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn turn(pool: &Pool, id: &ConversationId, text: &str) -> (String, TurnEvent) {
    let turn = pool.start_turn(id, vec![UserInput::text(text)], TurnOptions::default()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), turn.collect_text()).await.expect("the turn ends")
}

fn completed(end: &TurnEvent) -> bool {
    matches!(end, TurnEvent::Completed { status: TurnStatus::Completed, .. })
}

/// Texts of the stored history, in order.
async fn history(store: &dyn ThreadStore, id: &ConversationId) -> Vec<String> {
    let items = store.history(id).await.unwrap();
    items.iter().filter_map(|i| i["content"][0]["text"].as_str().map(str::to_owned)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_at_a_closed_port_ends_every_turn_naming_its_address_and_the_conversation_goes_on() {
    let env = Env::new().await;
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let (addr, url) = (model.addr(), model.base_url());
    let mut config = PoolConfig::new(env.config_for(&url));
    config.size = 1;
    config.progress_timeout = Duration::from_secs(3);
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let pool = Pool::new(config, store.clone());
    pool.ensure_started().await.unwrap();
    let (a, b) = (
        pool.create_thread(ThreadSettings::default()).await.unwrap(),
        pool.create_thread(Default::default()).await.unwrap(),
    );
    assert!(completed(&turn(&pool, &a, "before").await.1));

    // Nothing listens at the model's address any more: codex only announces retries.
    model.shutdown().await;
    let began = Instant::now();
    let (ends_a, ends_b) = tokio::join!(turn(&pool, &a, "lost in the void"), turn(&pool, &b, "me too"));
    let took = began.elapsed();
    for (_, end) in [&ends_a, &ends_b] {
        let TurnEvent::Aborted { reason: AbortReason::ModelUnreachable, message } = end else { panic!("{end:?}") };
        assert!(message.contains(&url), "the message names the address: {message}");
        println!("{message}");
    }
    assert!(took < Duration::from_secs(15), "the turns ended {took:?} after they began, the limit is 3 s");

    // The model is back at the same address: the conversation goes on, with its history.
    let model = MockModel::start(MockConfig { listen: addr, ..MockConfig::default() }).await.unwrap();
    let (text, end) = turn(&pool, &a, "after").await;
    assert!(completed(&end), "{end:?}");
    assert_eq!(text, "echo: after");
    let request = model.requests().into_iter().map(|r| r.body).find(|b| last_user_text(b).as_deref() == Some("after"));
    let msgs = messages(&request.expect("the model got the turn"));
    assert!(msgs.iter().any(|(r, t)| r == "user" && t == "before"), "{msgs:?}");
    assert!(msgs.iter().any(|(r, t)| r == "assistant" && t == "echo: before"), "{msgs:?}");
    assert!(!msgs.iter().any(|(_, t)| t == "lost in the void"), "the cut turn left nothing: {msgs:?}");
    assert_eq!(history(&*store, &a).await, ["before", "echo: before", "after", "echo: after"]);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_over_codex_limit_is_refused_and_the_conversation_goes_on() {
    let env = Env::new().await;
    let mut config = PoolConfig::new(env.config());
    config.size = 1;
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let pool = Pool::new(config, store.clone());
    pool.ensure_started().await.unwrap();
    let id = pool.create_thread(ThreadSettings::default()).await.unwrap();
    assert!(completed(&turn(&pool, &id, "first").await.1));

    let huge = "y".repeat(codex_pool_process::MAX_INPUT_CHARS + 1);
    let err = pool.start_turn(&id, vec![UserInput::text(huge)], TurnOptions::default()).await.unwrap_err();
    assert!(matches!(err, PoolError::InputTooLarge { chars: 1_048_577, limit: 1_048_576 }), "{err}");
    assert!(err.to_string().contains("1048576"), "the error states the limit: {err}");

    let (text, end) = turn(&pool, &id, "second").await;
    assert!(completed(&end) && text == "echo: second", "{end:?}");
    assert!(env.requests_with("yyyy").is_empty(), "the input never reached the model");
    assert_eq!(history(&*store, &id).await, ["first", "echo: first", "second", "echo: second"]);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_ends_the_turn_with_an_error_and_the_conversation_recovers_with_it() {
    let env = Env::new().await;
    let mut config = PoolConfig::new(env.config());
    config.size = 1;
    let store = Arc::new(SqliteStore::open(env.dir.path().join("threads.db")).unwrap());
    let pool = Pool::new(config, store.clone());
    pool.ensure_started().await.unwrap();
    let id = pool.create_thread(ThreadSettings::default()).await.unwrap();
    assert!(completed(&turn(&pool, &id, "kept").await.1));

    // The disk is full: codex finishes the turn, but the store cannot keep it.
    store.set_size_limit(Some(1)).await.unwrap();
    let big = format!("lost {}", "z".repeat(64 << 10));
    let (_, end) = turn(&pool, &id, &big).await;
    let TurnEvent::Aborted { reason: AbortReason::StoreFailed, message } = &end else { panic!("{end:?}") };
    assert!(message.contains("full") && message.contains("send it again"), "{message}");

    // Room again: the next turn keeps all the earlier history, and nothing of the lost one, in
    // the store and in what the model sees.
    store.set_size_limit(None).await.unwrap();
    let (text, end) = turn(&pool, &id, "recovered").await;
    assert!(completed(&end) && text == "echo: recovered", "{end:?}");
    let msgs = messages(&env.requests_with("recovered")[0]);
    assert!(msgs.iter().any(|(r, t)| r == "assistant" && t == "echo: kept"), "{msgs:?}");
    assert!(!msgs.iter().any(|(_, t)| t.starts_with("lost")), "the lost turn is gone from codex too");
    assert_eq!(history(&*store, &id).await, ["kept", "echo: kept", "recovered", "echo: recovered"]);
    pool.shutdown().await;
}
