//! The pool over a scripted peer that plays codex ([`codex_pool_testkit::scripted`]), on paused
//! time: faults the real binary cannot produce on demand (a process that dies mid-turn, a store
//! that fails a write, a turn that waits for room), each in well under a second of real time.

use codex_pool::{
    AbortReason, DownReason, NodeConfig, Pool, PoolConfig, PoolError, PoolTurn, Profile, Spawner, TurnEvent,
    TurnOptions,
};
use codex_pool_process::{BoxFuture, ExitReason, ModelProvider, ProcessConfig};
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::types::{TurnStatus, UserInput};
use codex_pool_store::{ConversationId, MemoryStore, NodeId, StoreError, ThreadRecord, ThreadStore};
use codex_pool_testkit::scripted::{message, ScriptedCodex};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

use codex_pool_testkit::stores::HookedStore;

/// A pool of one scripted process over `store`.
fn pool(codex: &ScriptedCodex, dir: &tempfile::TempDir, store: Arc<dyn ThreadStore>) -> Pool {
    pool_with(codex, dir, store, |_| {})
}

/// [`pool`], its settings changed by `change`.
fn pool_with(
    codex: &ScriptedCodex,
    dir: &tempfile::TempDir,
    store: Arc<dyn ThreadStore>,
    change: impl FnOnce(&mut PoolConfig),
) -> Pool {
    let process = ProcessConfig::new("codex".into(), dir.path().join("home"), dir.path().join("work"))
        .with_provider(&ModelProvider::new("mock", "http://127.0.0.1:9/v1"));
    let mut config = PoolConfig::new(process);
    config.size = 1;
    let codex = codex.clone();
    config.spawner = Spawner::custom(move |process| -> BoxFuture<_> {
        let codex = codex.clone();
        Box::pin(async move { codex.spawn(process).await })
    });
    change(&mut config);
    Pool::new(config, store)
}

async fn start(pool: &Pool, id: &codex_pool::ConversationId, text: &str) -> PoolTurn {
    pool.start_turn(id, vec![UserInput::text(text)], TurnOptions::default()).await.unwrap()
}

/// The texts of a history's messages, in order.
fn texts(items: &[Value]) -> Vec<String> {
    items.iter().map(|item| item["content"][0]["text"].as_str().unwrap_or_default().to_owned()).collect()
}

/// Runs a turn the scripted codex answers with `reply`; returns its end.
async fn answered(
    pool: &Pool,
    codex: &ScriptedCodex,
    id: &codex_pool::ConversationId,
    text: &str,
    reply: &str,
) -> TurnEvent {
    let turn = start(pool, id, text).await;
    let scripted = codex.next_turn().await;
    assert_eq!(scripted.text(), text);
    scripted.reply(reply);
    let (got, end) = turn.collect_text().await;
    assert_eq!(got, reply);
    end
}

/// Waits until the pool's only slot serves its `generation`th process (a minute at most, of
/// paused time).
async fn serving(pool: &Pool, generation: u64) {
    let serves = async {
        while !(pool.is_ready() && pool.stats().slots[0].generation == generation) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), serves).await.expect("a new process serves");
}

#[tokio::test(start_paused = true)]
async fn a_process_that_dies_mid_turn_is_replaced_and_the_next_turn_is_rebuilt_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let codex = ScriptedCodex::new();
    let pool = pool(&codex, &dir, Arc::new(MemoryStore::new()));
    pool.ensure_started().await.unwrap();
    let id = pool.create_thread(ThreadSettings::default()).await.unwrap();
    let end = answered(&pool, &codex, &id, "first", "one").await;
    assert!(matches!(end, TurnEvent::Completed { status: TurnStatus::Completed, .. }), "{end:?}");

    let mut turn = start(&pool, &id, "second").await;
    let scripted = codex.next_turn().await;
    assert!(matches!(turn.next().await, Some(TurnEvent::Started { .. })));
    scripted.delta("half an ans");
    assert!(matches!(turn.next().await, Some(TurnEvent::AgentMessageDelta { .. })));
    scripted.kill_process();
    let end = turn.next().await.unwrap();
    assert!(matches!(end, TurnEvent::Aborted { reason: AbortReason::ProcessExited, .. }), "{end:?}");
    assert!(turn.next().await.is_none());
    // Down, and why, typed: it exited (its output closed before the OS reported the kill).
    let down = async {
        loop {
            let slot = pool.stats().slots.remove(0);
            if let Some(reason) = slot.down_reason {
                return reason;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let reason = tokio::time::timeout(Duration::from_secs(1), down).await.expect("the slot is down");
    assert!(
        matches!(reason, DownReason::Exited(ExitReason::StdoutClosed { .. } | ExitReason::Signal(_))),
        "{reason:?}"
    );

    // The supervisor starts another process (after its backoff); the conversation's next turn
    // runs there, on a thread rebuilt from the store: the kept turn, not the aborted one.
    serving(&pool, 2).await;
    assert_eq!((codex.spawned(), pool.stats().slots[0].restarts), (2, 1));
    let end = answered(&pool, &codex, &id, "third", "three").await;
    assert!(matches!(end, TurnEvent::Completed { status: TurnStatus::Completed, .. }), "{end:?}");
    let injected = codex.received_of("thread/inject_items");
    assert_eq!(injected.len(), 1, "{injected:?}");
    assert_eq!(injected[0].process, 1);
    let items = injected[0].params["items"].as_array().unwrap();
    assert_eq!(texts(items), ["first", "one"]);
    assert_eq!(texts(&pool.store().history(&id).await.unwrap()), ["first", "one", "third", "three"]);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_turn_waits_for_room_on_its_process_and_a_service_turn_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let codex = ScriptedCodex::new();
    let wait = Duration::from_secs(5);
    let pool = pool_with(&codex, &dir, Arc::new(MemoryStore::new()), |c| {
        c.max_turns_per_process = 1;
        c.overload_wait = wait;
    });
    pool.ensure_started().await.unwrap();
    let a = pool.create_thread(ThreadSettings::default()).await.unwrap();
    let b = pool.create_thread(ThreadSettings::default()).await.unwrap();
    let running = start(&pool, &a, "long").await;
    let scripted = codex.next_turn().await;

    // The service's way: refused at once, without waiting.
    let mut refuse = TurnOptions::default();
    refuse.refuse_when_full = true;
    let began = tokio::time::Instant::now();
    let refused = pool.start_turn(&b, vec![UserInput::text("now")], refuse).await;
    assert!(matches!(refused, Err(PoolError::Overloaded { limit: 1, .. })), "{:?}", refused.err());
    assert_eq!(began.elapsed(), Duration::ZERO);

    // A Rust caller's way: it waits for room, up to `overload_wait`, then is refused.
    let began = tokio::time::Instant::now();
    let waited = pool.start_turn(&b, vec![UserInput::text("later")], TurnOptions::default()).await;
    assert!(matches!(waited, Err(PoolError::Overloaded { limit: 1, .. })), "{:?}", waited.err());
    assert_eq!(began.elapsed(), wait);

    // Room made while it waits: it runs.
    let waiting = {
        let pool = pool.clone();
        let b = b.clone();
        tokio::spawn(async move { start(&pool, &b, "after").await })
    };
    tokio::time::sleep(wait / 2).await;
    assert!(!waiting.is_finished(), "the turn did not wait for room");
    scripted.reply("done");
    let (_, end) = running.collect_text().await;
    assert!(matches!(end, TurnEvent::Completed { .. }), "{end:?}");
    let turn = waiting.await.unwrap();
    let scripted = codex.next_turn().await;
    assert_eq!(scripted.text(), "after");
    scripted.reply("ran");
    assert_eq!(turn.collect_text().await.0, "ran");
    assert_eq!(codex.received_of("turn/start").len(), 2, "refused turns never reached codex");
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_store_write_that_fails_ends_the_turn_as_store_failed_and_keeps_nothing_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let codex = ScriptedCodex::new();
    let store = Arc::new(HookedStore::new());
    let pool = pool(&codex, &dir, store.clone());
    pool.ensure_started().await.unwrap();
    let id = pool.create_thread(ThreadSettings::default()).await.unwrap();
    let end = answered(&pool, &codex, &id, "first", "one").await;
    assert!(matches!(end, TurnEvent::Completed { .. }), "{end:?}");

    store.fail_records(true);
    let end = answered(&pool, &codex, &id, "second", "two").await;
    let TurnEvent::Aborted { reason: AbortReason::StoreFailed, message: why } = &end else { panic!("{end:?}") };
    assert!(why.contains("send it again"), "{why}");
    assert_eq!(texts(&pool.store().history(&id).await.unwrap()), ["first", "one"]);

    // codex's copy held the dropped turn: the next turn runs on a thread rebuilt from the store.
    store.fail_records(false);
    let end = answered(&pool, &codex, &id, "third", "three").await;
    assert!(matches!(end, TurnEvent::Completed { .. }), "{end:?}");
    let starts = codex.received_of("turn/start");
    assert_ne!(starts[1].params["threadId"], starts[2].params["threadId"], "the thread was rebuilt");
    let injected = codex.received_of("thread/inject_items");
    assert_eq!(injected.len(), 1, "{injected:?}");
    assert_eq!(injected[0].params["items"], json!([message("user", "first"), message("assistant", "one")]));
    assert_eq!(texts(&pool.store().history(&id).await.unwrap()), ["first", "one", "third", "three"]);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_lease_lost_mid_turn_ends_the_turn_as_lease_lost_and_keeps_nothing_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let codex = ScriptedCodex::new();
    let store = Arc::new(MemoryStore::new());
    let pool = pool_with(&codex, &dir, store.clone(), |c| c.node = Some(NodeConfig::new("here", "http://here")));
    pool.ensure_started().await.unwrap();
    let id = pool.create_thread(ThreadSettings::default()).await.unwrap();
    let end = answered(&pool, &codex, &id, "first", "one").await;
    assert!(matches!(end, TurnEvent::Completed { .. }), "{end:?}");

    let turn = start(&pool, &id, "second").await;
    let scripted = codex.next_turn().await;
    // Another node takes the conversation over while the turn runs (as it may once this node's
    // lease has expired): a new fence.
    assert!(store.release_lease(&id, &NodeId::from("here")).await.unwrap());
    store.acquire_lease(&id, &NodeId::from("there"), Duration::from_secs(60)).await.unwrap();
    scripted.reply("two");
    let (_, end) = turn.collect_text().await;
    assert!(matches!(end, TurnEvent::Aborted { reason: AbortReason::LeaseLost, .. }), "{end:?}");
    assert_eq!(texts(&pool.store().history(&id).await.unwrap()), ["first", "one"]);

    // The conversation is the other node's now: this one refuses its next turn.
    let refused = pool.start_turn(&id, vec![UserInput::text("third")], TurnOptions::default()).await;
    assert!(matches!(refused, Err(PoolError::Store(StoreError::OwnedElsewhere { .. }))), "{:?}", refused.err());
    assert_eq!(codex.received_of("turn/start").len(), 2);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_turn_whose_process_dies_as_it_starts_runs_on_another_process_with_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let codex = ScriptedCodex::new();
    let pool = pool_with(&codex, &dir, Arc::new(MemoryStore::new()), |c| c.size = 2);
    pool.ensure_started().await.unwrap();
    let id = pool.create_thread(ThreadSettings::default()).await.unwrap();
    let end = answered(&pool, &codex, &id, "first", "one").await;
    assert!(matches!(end, TurnEvent::Completed { .. }), "{end:?}");
    let first = pool.slot_of(&id).unwrap();

    // Its process dies on `turn/start`, before answering: the pool places the turn again, on
    // the process that still serves, rebuilt from the store; the caller sees one turn.
    codex.die_on_next_turn_start();
    let turn = start(&pool, &id, "second").await;
    let scripted = codex.next_turn().await;
    assert_ne!(pool.slot_of(&id), Some(first));
    let starts = codex.received_of("turn/start");
    assert_eq!(starts.len(), 3, "{starts:?}");
    assert_eq!((starts[1].process, starts[2].process), (starts[0].process, scripted.process));
    assert_ne!(scripted.process, starts[0].process);
    let injected = codex.received_of("thread/inject_items");
    assert_eq!(injected.len(), 1, "{injected:?}");
    assert_eq!(injected[0].process, scripted.process);
    assert_eq!(texts(injected[0].params["items"].as_array().unwrap()), ["first", "one"]);
    scripted.reply("two");
    let (text, end) = turn.collect_text().await;
    assert_eq!(text, "two");
    assert!(matches!(end, TurnEvent::Completed { status: TurnStatus::Completed, .. }), "{end:?}");
    assert_eq!(texts(&pool.store().history(&id).await.unwrap()), ["first", "one", "second", "two"]);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_conversation_is_unloaded_forgotten_and_rebuilt_with_the_settings_a_turn_changed() {
    let dir = tempfile::tempdir().unwrap();
    let codex = ScriptedCodex::new();
    let idle_after = Duration::from_secs(600);
    let pool = pool_with(&codex, &dir, Arc::new(MemoryStore::new()), |c| c.idle_unsubscribe_after = idle_after);
    pool.ensure_started().await.unwrap();
    let id = pool.create_thread(ThreadSettings::default()).await.unwrap();
    // A turn that changes the model: it sticks for later turns, rebuilds included.
    let mut options = TurnOptions::default();
    options.model = Some("other-model".into());
    let turn = pool.start_turn(&id, vec![UserInput::text("first")], options).await.unwrap();
    codex.next_turn().await.reply("one");
    turn.collect_text().await;
    assert_eq!(pool.stats().threads, 1);

    // Idle past `idle_after`: unloaded from codex, and the pool keeps nothing of it.
    tokio::time::sleep(idle_after).await;
    let forgotten = async {
        while pool.stats().threads > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(1), forgotten).await.expect("the idle conversation is forgotten");
    assert_eq!(codex.received_of("thread/unsubscribe").len(), 1);
    assert_eq!(pool.codex_thread_id(&id), None);

    // Its next turn reads it from the store: the model the first turn chose, the history.
    let end = answered(&pool, &codex, &id, "second", "two").await;
    assert!(matches!(end, TurnEvent::Completed { status: TurnStatus::Completed, .. }), "{end:?}");
    let started = codex.received_of("thread/start");
    assert_eq!(started.len(), 2, "created, then rebuilt");
    assert_eq!(started[1].params["model"], "other-model", "{}", started[1].params);
    let injected = codex.received_of("thread/inject_items");
    assert_eq!(texts(injected[0].params["items"].as_array().unwrap()), ["first", "one"]);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_stored_profile_the_pool_does_not_know_is_an_error_not_chat() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let pool = pool(&ScriptedCodex::new(), &dir, store.clone());
    let mut record = ThreadRecord::new(ConversationId::from("coding"), ThreadSettings::default());
    record.profile = "codex".into();
    store.save(record.clone()).await.unwrap();
    record.id = "corrupt".into();
    record.profile = "c0dex\u{0}".into();
    store.save(record).await.unwrap();

    let info = pool.conversation(&"coding".into()).await.unwrap().unwrap();
    assert_eq!(info.profile().unwrap(), Profile::Codex);
    let info = pool.conversation(&"corrupt".into()).await.unwrap().unwrap();
    let err = info.profile().unwrap_err();
    assert!(matches!(&err, PoolError::CorruptProfile { thread_id } if thread_id.as_str() == "corrupt"), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("set its profile") && message.contains("chat or codex"), "{message}");
    assert!(!message.contains("c0dex"), "the stored value is not repeated: {message}");
}

/// How many codex threads the scripted processes started: created and rebuilt conversations.
fn threads_started(codex: &ScriptedCodex) -> usize {
    codex.received_of("thread/start").len()
}

#[tokio::test(start_paused = true)]
async fn a_turn_given_up_before_codex_got_it_keeps_the_thread_and_one_dropped_mid_turn_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let codex = ScriptedCodex::new();
    let pool = pool_with(&codex, &dir, Arc::new(MemoryStore::new()), |c| {
        c.max_turns_per_process = 1;
        c.overload_wait = Duration::from_secs(60);
    });
    pool.ensure_started().await.unwrap();
    let a = pool.create_thread(ThreadSettings::default()).await.unwrap();
    let b = pool.create_thread(ThreadSettings::default()).await.unwrap();

    // A turn of `b` waits for room behind `a`'s, and its caller gives up: nothing reached
    // codex, so `b` is idle again on the same codex thread.
    let running = start(&pool, &a, "hold").await;
    let scripted = codex.next_turn().await;
    let waiting = {
        let (pool, b) = (pool.clone(), b.clone());
        tokio::spawn(async move { start(&pool, &b, "given up").await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "the turn did not wait for room");
    assert!(pool.conversation(&b).await.unwrap().unwrap().running);
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    assert!(!pool.conversation(&b).await.unwrap().unwrap().running, "given back");
    scripted.reply("held");
    assert!(matches!(running.collect_text().await.1, TurnEvent::Completed { .. }));
    let end = answered(&pool, &codex, &b, "first", "one").await;
    assert!(matches!(end, TurnEvent::Completed { .. }), "{end:?}");
    assert_eq!(threads_started(&codex), 2, "b ran on the thread it was created on");

    // A turn dropped while codex runs it: nothing of it is kept, and codex's copy, which holds
    // half of it, is dropped: the next turn runs on a thread rebuilt from the store.
    let mut turn = start(&pool, &b, "second").await;
    let scripted = codex.next_turn().await;
    assert!(matches!(turn.next().await, Some(TurnEvent::Started { .. })));
    scripted.delta("half an ans");
    assert!(matches!(turn.next().await, Some(TurnEvent::AgentMessageDelta { .. })));
    drop(turn);
    assert!(!pool.conversation(&b).await.unwrap().unwrap().running, "given back");
    let end = answered(&pool, &codex, &b, "third", "three").await;
    assert!(matches!(end, TurnEvent::Completed { .. }), "{end:?}");
    assert_eq!(threads_started(&codex), 3, "b was rebuilt");
    let injected = codex.received_of("thread/inject_items");
    assert_eq!(texts(injected[0].params["items"].as_array().unwrap()), ["first", "one"]);
    assert_eq!(texts(&pool.store().history(&b).await.unwrap()), ["first", "one", "third", "three"]);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_turn_dropped_after_codex_finished_it_is_kept_if_the_store_keeps_it_and_rebuilt_if_not() {
    let dir = tempfile::tempdir().unwrap();
    let codex = ScriptedCodex::new();
    let store = Arc::new(HookedStore::new());
    let pool = pool(&codex, &dir, store.clone());
    pool.ensure_started().await.unwrap();
    let id = pool.create_thread(ThreadSettings::default()).await.unwrap();

    // codex finishes the turn, and its consumer drops it without reading the end: the turn is
    // kept, and the next one runs on the same codex thread.
    let turn = start(&pool, &id, "first").await;
    codex.next_turn().await.reply("one");
    tokio::time::sleep(Duration::from_millis(1)).await;
    drop(turn);
    let end = answered(&pool, &codex, &id, "second", "two").await;
    assert!(matches!(end, TurnEvent::Completed { .. }), "{end:?}");
    assert_eq!(threads_started(&codex), 1, "no rebuild");
    assert_eq!(texts(&pool.store().history(&id).await.unwrap()), ["first", "one", "second", "two"]);

    // The same, but the store fails the record: the next turn learns it before it runs, and
    // runs on a thread rebuilt from the store, without the lost turn.
    store.fail_records(true);
    let turn = start(&pool, &id, "lost").await;
    codex.next_turn().await.reply("lost too");
    tokio::time::sleep(Duration::from_millis(1)).await;
    drop(turn);
    // The writer tries (and fails) before the store works again.
    tokio::time::sleep(Duration::from_millis(1)).await;
    store.fail_records(false);
    let end = answered(&pool, &codex, &id, "third", "three").await;
    assert!(matches!(end, TurnEvent::Completed { .. }), "{end:?}");
    assert_eq!(threads_started(&codex), 2, "rebuilt");
    let injected = codex.received_of("thread/inject_items");
    assert_eq!(texts(injected[0].params["items"].as_array().unwrap()), ["first", "one", "second", "two"]);
    assert_eq!(texts(&pool.store().history(&id).await.unwrap()), ["first", "one", "second", "two", "third", "three"]);
    pool.shutdown().await;
}
