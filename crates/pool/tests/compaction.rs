//! Long conversations stay cheap to rebuild: once codex has compacted a conversation (its
//! threshold set low here, and the fake model reporting tokens as a real model would), a rebuild
//! gives the new thread the history the model saw last (the summary and what followed), not the
//! whole transcript, so codex does not compact it again; the store still holds every turn.

use codex_pool::{CompactScope, ConversationId, Pool, PoolConfig, Profile, TurnOptions};
use codex_pool_mock_model::{MockConfig, COMPACT_PROMPT};
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::types::UserInput;
use codex_pool_store::{SqliteStore, ThreadStore};
use codex_pool_testkit::*;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// The threshold, in tokens (the fake model counts a quarter of the request's bytes): some five
/// turns of the messages below.
const LIMIT: u64 = 4000;

fn config(env: &Env) -> PoolConfig {
    let mut c = PoolConfig::new(env.config());
    c.size = 2;
    c.compact_token_limits = vec![(CompactScope::Profile(Profile::Chat), LIMIT)];
    c
}

/// About 1,100 characters, tagged.
fn long(tag: &str) -> String {
    format!("{tag} {}", "lorem ipsum dolor sit amet ".repeat(40))
}

async fn turn(pool: &Pool, id: &ConversationId, text: &str) -> String {
    let turn = pool.start_turn(id, vec![UserInput::text(text)], TurnOptions::default()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), turn.collect_text()).await.expect("the turn ends").0
}

/// The model requests that asked for a summary.
fn compactions(env: &Env) -> usize {
    let asks = |body: &Value| last_user_text(body).is_some_and(|t| t.starts_with(COMPACT_PROMPT));
    env.mock.requests().iter().filter(|r| asks(&r.body)).count()
}

fn text_of(item: &Value) -> String {
    item["content"].as_array().into_iter().flatten().filter_map(|p| p["text"].as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_after_a_compaction_gives_codex_the_summary_and_never_compacts_again() {
    let env = Env::with_mock(MockConfig { tokens_from_size: true, ..MockConfig::default() }).await;
    let path = env.dir.path().join("db.sqlite");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let pool = Pool::new(config(&env), store.clone());
    pool.ensure_started().await.unwrap();
    let id = pool.create_thread(ThreadSettings::default()).await.unwrap();
    let mut turns = 0;
    while compactions(&env) == 0 {
        turns += 1;
        assert!(turns <= 12, "no compaction after {turns} turns");
        let text = long(&format!("turn-{turns}"));
        assert_eq!(turn(&pool, &id, &text).await, format!("echo: {text}"));
    }
    // One more turn after the compaction: the model's last request before the release.
    assert_eq!(turn(&pool, &id, "after the compaction").await, "echo: after the compaction");
    let before = env.mock.requests().last().unwrap().clone();
    let compacted = compactions(&env);
    // The store keeps the summary where it happened, and every turn.
    let history = store.history(&id).await.unwrap();
    let markers: Vec<&Value> = history.iter().filter(|i| i["type"] == "codex_pool.compaction").collect();
    assert_eq!(markers.len(), compacted, "{markers:?}");
    assert!(markers[0]["summary"].as_str().unwrap().starts_with("summary of"), "{markers:?}");
    let said =
        |history: &[Value], tag: &str| history.iter().any(|i| i["role"] == "user" && text_of(i).starts_with(tag));
    for n in 1..=turns {
        assert!(said(&history, &format!("turn-{n} ")), "turn {n} kept");
    }

    // Released, then rebuilt (on the other process: round robin), and after a restart of the pool.
    pool.release_thread(&id).await.unwrap();
    assert_eq!(turn(&pool, &id, "after the release").await, "echo: after the release");
    let check = |label: &str| {
        assert_eq!(compactions(&env), compacted, "{label}: codex compacted the rebuilt thread again");
        let sent = env.mock.requests().last().unwrap().clone();
        let input = sent.body["input"].as_array().unwrap().clone();
        let summaries = input.iter().filter(|i| text_of(i).contains("\nsummary of")).count();
        assert_eq!(summaries, 1, "{label}: the summary once");
        assert!(sent.body_bytes <= before.body_bytes + 2_000, "{label}: {} > {}", sent.body_bytes, before.body_bytes);
    };
    check("released");
    pool.shutdown().await;
    drop(pool);
    let pool = Pool::new(config(&env), Arc::new(SqliteStore::open(&path).unwrap()));
    pool.ensure_started().await.unwrap();
    assert_eq!(turn(&pool, &id, "after the restart").await, "echo: after the restart");
    check("restarted");
    let items = pool.all_items(&id).await.unwrap();
    let history: Vec<Value> = items.into_iter().map(|i| i.item).collect();
    for tag in ["turn-1 ", "after the compaction", "after the release", "after the restart"] {
        assert!(said(&history, tag), "{tag} listed");
    }
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_the_client_asks_for_is_kept_and_later_rebuilds_start_from_it() {
    let env = Env::with_mock(MockConfig { tokens_from_size: true, ..MockConfig::default() }).await;
    let store = Arc::new(SqliteStore::open(env.dir.path().join("db.sqlite")).unwrap());
    let mut c = config(&env);
    c.compact_token_limits.clear();
    let pool = Pool::new(c, store.clone());
    pool.ensure_started().await.unwrap();
    let id = pool.create_thread(ThreadSettings::default()).await.unwrap();
    for n in 1..=3 {
        turn(&pool, &id, &long(&format!("turn-{n}"))).await;
    }
    assert_eq!(compactions(&env), 0, "codex's own threshold is far");
    let mut compaction = pool.compact(&id).await.unwrap();
    let mut saw_item = false;
    let end = loop {
        let event = compaction.next().await.expect("the compaction ends");
        if let codex_pool::TurnEvent::ItemCompleted { item } = &event {
            saw_item |= item["type"] == "contextCompaction";
        }
        if event.is_terminal() {
            break event;
        }
    };
    assert!(matches!(end, codex_pool::TurnEvent::Completed { .. }), "{end:?}");
    assert!(saw_item);
    assert_eq!(compactions(&env), 1);
    let history = store.history(&id).await.unwrap();
    assert_eq!(history.iter().filter(|i| i["type"] == "codex_pool.compaction").count(), 1, "{history:?}");
    pool.release_thread(&id).await.unwrap();
    assert_eq!(turn(&pool, &id, "after").await, "echo: after");
    assert_eq!(compactions(&env), 1);
    let sent = env.mock.requests().last().unwrap().body.clone();
    let summaries = sent["input"].as_array().unwrap().iter().filter(|i| text_of(i).contains("\nsummary of")).count();
    assert_eq!(summaries, 1);
    pool.shutdown().await;
}
