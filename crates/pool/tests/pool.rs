//! The pool against the real pinned `codex app-server` and the fake model.

use codex_pool::{ConversationId, Pool, PoolConfig, PoolError, Profile, Strategy, TurnEvent, TurnOptions};
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::types::{TurnStatus, UserInput};
use codex_pool_store::{MemoryStore, SqliteStore, ThreadStore};
use codex_pool_testkit::*;
use std::sync::Arc;
use std::time::Duration;

fn pool_config(env: &Env, size: usize) -> PoolConfig {
    let mut c = PoolConfig::new(env.config());
    c.size = size;
    c
}

async fn turn_text(pool: &Pool, thread: &ConversationId, text: &str) -> (String, TurnEvent) {
    let turn = pool.start_turn(thread, vec![UserInput::text(text)], TurnOptions::default()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), turn.collect_text()).await.expect("turn ends")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_started_is_idempotent_under_concurrent_callers() {
    let env = Env::new().await;
    let pool = Pool::new(pool_config(&env, 2), Arc::new(MemoryStore::new()));
    let (a, b, c) = tokio::join!(pool.ensure_started(), pool.ensure_started(), pool.ensure_started());
    let pids = |s: codex_pool::PoolStats| s.slots.iter().map(|s| s.pid).collect::<Vec<_>>();
    let (a, b, c) = (pids(a.unwrap()), pids(b.unwrap()), pids(c.unwrap()));
    assert_eq!(a, b);
    assert_eq!(b, c);
    assert_eq!(pool.stats().ready, 2);
    // Exactly two codex processes run for this pool, and they are the ones it reports.
    let mut reported: Vec<u32> = a.into_iter().flatten().collect();
    reported.sort_unstable();
    assert_eq!(codex_processes_under(env.dir.path()), reported);
    pool.shutdown().await;
    assert_eq!(codex_processes_under(env.dir.path()), Vec::<u32>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_up_turns_stay_on_their_process_and_round_robin_spreads_threads() {
    let env = Env::new().await;
    let pool = Pool::new(pool_config(&env, 3), Arc::new(MemoryStore::new()));
    pool.ensure_started().await.unwrap();
    let mut threads = Vec::new();
    for _ in 0..6 {
        threads.push(pool.create_thread(ThreadSettings::default()).await.unwrap());
    }
    let slots: Vec<usize> = threads.iter().map(|t| pool.slot_of(t).unwrap()).collect();
    assert_eq!(slots, vec![0, 1, 2, 0, 1, 2], "round robin");
    for round in 0..3 {
        for (t, slot) in threads.iter().zip(&slots) {
            let (text, end) = turn_text(&pool, t, &format!("{t} round {round}")).await;
            assert_eq!(text, format!("echo: {t} round {round}"));
            assert!(matches!(end, TurnEvent::Completed { status: TurnStatus::Completed, .. }));
            assert_eq!(pool.slot_of(t), Some(*slot), "affinity");
        }
    }
    let per_process: Vec<u64> = pool.stats().slots.iter().map(|s| s.process.unwrap().turns_completed).collect();
    assert_eq!(per_process, vec![6, 6, 6]);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_busy_avoids_the_process_with_running_turns() {
    let env = Env::new().await;
    let mut config = pool_config(&env, 2);
    config.strategy = Strategy::LeastBusy;
    let pool = Pool::new(config, Arc::new(MemoryStore::new()));
    pool.ensure_started().await.unwrap();
    let first = pool.create_thread(ThreadSettings::default()).await.unwrap();
    let busy_slot = pool.slot_of(&first).unwrap();
    let slow = pool
        .start_turn(&first, vec![UserInput::text("slow [mock:deltas=20] [mock:delay_ms=50]")], TurnOptions::default())
        .await
        .unwrap();
    for _ in 0..3 {
        let t = pool.create_thread(ThreadSettings::default()).await.unwrap();
        assert_ne!(pool.slot_of(&t), Some(busy_slot), "least_busy picked the busy process");
    }
    slow.collect_text().await;
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_conversations_of_three_turns_on_three_processes() {
    let env = Env::with_mock(codex_pool_mock_model::MockConfig { keep_requests: false, ..Default::default() }).await;
    let pool = Pool::new(pool_config(&env, 3), Arc::new(MemoryStore::new()));
    pool.ensure_started().await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..200 {
        let pool = pool.clone();
        tasks.spawn(async move {
            let thread = pool.create_thread(ThreadSettings::default()).await.unwrap();
            for t in 0..3 {
                let text = format!("conversation {c} turn {t}");
                let (reply, end) = turn_text(&pool, &thread, &text).await;
                assert_eq!(reply, format!("echo: {text}"), "mixed or lost events");
                assert!(matches!(end, TurnEvent::Completed { status: TurnStatus::Completed, .. }), "{end:?}");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let stats = pool.stats();
    assert_eq!(stats.threads, 200);
    assert_eq!(stats.active_turns, 0);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_threads_busy_threads_and_delete() {
    let env = Env::new().await;
    let store = Arc::new(MemoryStore::new());
    let pool = Pool::new(pool_config(&env, 1), store.clone());
    pool.ensure_started().await.unwrap();
    let no_such = ConversationId::from("no-such-thread");
    let err = pool.start_turn(&no_such, vec![UserInput::text("x")], TurnOptions::default()).await.unwrap_err();
    assert!(matches!(err, PoolError::UnknownThread(_)), "{err}");
    assert!(matches!(pool.interrupt_turn(&no_such).await, Err(PoolError::UnknownThread(_))));

    let thread = pool.create_thread(ThreadSettings::default()).await.unwrap();
    assert!(matches!(pool.interrupt_turn(&thread).await, Err(PoolError::NoActiveTurn(_))));
    let slow = pool
        .start_turn(&thread, vec![UserInput::text("slow [mock:deltas=50] [mock:delay_ms=50]")], TurnOptions::default())
        .await
        .unwrap();
    let err = pool.start_turn(&thread, vec![UserInput::text("again")], TurnOptions::default()).await.unwrap_err();
    assert!(matches!(err, PoolError::ThreadBusy(_)), "{err}");
    assert!(matches!(pool.release_thread(&thread).await, Err(PoolError::ThreadBusy(_))));
    assert!(matches!(pool.delete_thread(&thread).await, Err(PoolError::ThreadBusy(_))));
    pool.interrupt_turn(&thread).await.expect("interrupt");
    let (_, end) = slow.collect_text().await;
    assert!(matches!(end, TurnEvent::Completed { status: TurnStatus::Interrupted, .. }), "{end:?}");

    assert_eq!(store.count().await.unwrap(), 1);
    pool.delete_thread(&thread).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 0);
    assert!(store.history(&thread).await.unwrap().is_empty(), "deleted with its history");
    assert!(matches!(pool.delete_thread(&thread).await, Err(PoolError::UnknownThread(_))));
    assert!(matches!(pool.release_thread(&thread).await, Err(PoolError::UnknownThread(_))));
    let err = pool.start_turn(&thread, vec![UserInput::text("x")], TurnOptions::default()).await.unwrap_err();
    assert!(matches!(err, PoolError::UnknownThread(_)), "{err}");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_running_turns_with_a_final_event_and_leaves_no_process() {
    let env = Env::new().await;
    let pool = Pool::new(pool_config(&env, 2), Arc::new(MemoryStore::new()));
    pool.ensure_started().await.unwrap();
    let pids: Vec<u32> = pool.stats().slots.iter().map(|s| s.pid.unwrap()).collect();
    let thread = pool.create_thread(ThreadSettings::default()).await.unwrap();
    let mut turn = pool
        .start_turn(
            &thread,
            vec![UserInput::text("long [mock:deltas=100] [mock:delay_ms=100]")],
            TurnOptions::default(),
        )
        .await
        .unwrap();
    loop {
        let e = turn.next().await.unwrap();
        if matches!(e, TurnEvent::AgentMessageDelta { .. }) {
            break;
        }
    }
    let stopping = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.shutdown().await })
    };
    let mut last = None;
    while let Some(e) = tokio::time::timeout(Duration::from_secs(10), turn.next()).await.unwrap() {
        last = Some(e);
    }
    let last = last.unwrap();
    assert!(last.is_terminal(), "{last:?}");
    assert!(
        matches!(last, TurnEvent::Aborted { .. } | TurnEvent::Completed { status: TurnStatus::Interrupted, .. }),
        "{last:?}"
    );
    stopping.await.unwrap();
    for pid in pids {
        assert!(!alive(pid), "codex {pid} outlived the pool");
    }
    let err = pool.create_thread(ThreadSettings::default()).await.unwrap_err();
    assert!(matches!(err, PoolError::ShutDown), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_threads_are_unloaded_and_rebuilt_on_their_next_turn() {
    let env = Env::new().await;
    let mut config = pool_config(&env, 1);
    config.idle_unsubscribe_after = Duration::from_millis(200);
    let pool = Pool::new(config, Arc::new(MemoryStore::new()));
    pool.ensure_started().await.unwrap();
    let thread = pool.create_thread(ThreadSettings::default()).await.unwrap();
    turn_text(&pool, &thread, "first").await;
    wait_until("the idle thread is unloaded", Duration::from_secs(5), || pool.stats().loaded_threads == 0).await;
    wait_until("and the pool forgets it", Duration::from_secs(5), || pool.stats().threads == 0).await;
    let (text, _) = turn_text(&pool, &thread, "second").await;
    assert_eq!(text, "echo: second");
    assert_ne!(pool.codex_thread_id(&thread).unwrap().as_str(), thread.as_str(), "rebuilt on a new codex thread");
    let req = &env.requests_with("second")[0];
    assert!(messages(req).iter().any(|(r, t)| r == "assistant" && t == "echo: first"), "history lost on rebuild");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilt_conversations_are_spread_by_the_strategy() {
    let env = Env::new().await;
    let mut config = pool_config(&env, 2);
    config.idle_unsubscribe_after = Duration::from_millis(100);
    let pool = Pool::new(config, Arc::new(MemoryStore::new()));
    pool.ensure_started().await.unwrap();
    let mut threads = Vec::new();
    for _ in 0..4 {
        threads.push(pool.create_thread(ThreadSettings::default()).await.unwrap());
    }
    wait_until("every thread is unloaded", Duration::from_secs(5), || pool.stats().loaded_threads == 0).await;
    let mut per_slot = [0; 2];
    for t in &threads {
        turn_text(&pool, t, "back").await;
        per_slot[pool.slot_of(t).expect("loaded right after its turn")] += 1;
    }
    assert_eq!(per_slot, [2, 2], "round robin places rebuilds like new threads");
    pool.shutdown().await;
}

/// A pool on the database `db` creates a conversation, runs one turn and shuts down; returns the
/// conversation's id (for a second pool to pick up).
async fn one_turn_on_a_first_pool(
    env: &Env,
    db: &std::path::Path,
    settings: ThreadSettings,
    profile: Profile,
    text: &str,
) -> ConversationId {
    let pool = Pool::new(pool_config(env, 1), Arc::new(SqliteStore::open(db).unwrap()));
    pool.ensure_started().await.unwrap();
    let thread = pool.create_thread_with(settings, profile).await.unwrap();
    turn_text(&pool, &thread, text).await;
    pool.shutdown().await;
    thread
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_survive_a_restart_of_the_pool() {
    let env = Env::new().await;
    let db = env.dir.path().join("threads.db");
    let settings = ThreadSettings { developer_instructions: Some("You are Ada.".into()), ..Default::default() };
    let thread = one_turn_on_a_first_pool(&env, &db, settings, Profile::Chat, "remember me").await;
    let record = SqliteStore::open(&db).unwrap().load(&thread).await.unwrap().expect("stored");
    assert_eq!(record.turns, 1, "the completed turn was recorded by shutdown");
    assert_eq!(record.settings.developer_instructions.as_deref(), Some("You are Ada."));
    let pool = Pool::new(pool_config(&env, 2), Arc::new(SqliteStore::open(&db).unwrap()));
    pool.ensure_started().await.unwrap();
    let (text, _) = turn_text(&pool, &thread, "still there?").await;
    assert_eq!(text, "echo: still there?");
    let req = &env.requests_with("still there?")[0];
    let msgs = messages(req);
    assert!(msgs.iter().any(|(r, t)| r == "user" && t == "remember me"), "{msgs:?}");
    assert!(msgs.iter().any(|(_, t)| t.contains("You are Ada.")), "instructions lost: {msgs:?}");
    pool.shutdown().await;
}

/// Files named `rollout-*.jsonl` under `dir`: codex's on-disk copies of threads.
fn rollout_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("rollout-")) {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_history_lives_in_the_store_not_on_codex_disk() {
    let env = Env::new().await;
    let store = Arc::new(SqliteStore::open(env.dir.path().join("threads.db")).unwrap());
    let pool = Pool::new(pool_config(&env, 1), store.clone());
    pool.ensure_started().await.unwrap();
    let chat = pool.create_thread(ThreadSettings::default()).await.unwrap();
    let agent = pool.create_thread_with(ThreadSettings::default(), Profile::Codex).await.unwrap();
    turn_text(&pool, &chat, "hello chat").await;
    turn_text(&pool, &agent, "hello agent").await;
    pool.shutdown().await;

    // codex wrote a rollout for the coding-agent thread only; the chat thread was ephemeral.
    let rollouts = rollout_files(env.dir.path());
    assert_eq!(rollouts.len(), 1, "{rollouts:?}");
    assert!(rollouts[0].to_string_lossy().contains(agent.as_str()), "{rollouts:?}");
    assert!(store.load(&chat).await.unwrap().unwrap().ephemeral);
    assert!(!store.load(&agent).await.unwrap().unwrap().ephemeral);
    // Both histories are in the store, as codex recorded them: the user's message, then the reply.
    for (thread, said) in [(&chat, "hello chat"), (&agent, "hello agent")] {
        let history = store.history(thread).await.unwrap();
        let texts: Vec<(&str, &str)> = history
            .iter()
            .filter(|i| i["type"] == "message")
            .map(|i| (i["role"].as_str().unwrap(), i["content"][0]["text"].as_str().unwrap()))
            .collect();
        assert_eq!(texts, [("user", said), ("assistant", format!("echo: {said}").as_str())], "{history:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_conversation_sends_its_context_and_history_once() {
    let env = Env::new().await;
    let mut config = pool_config(&env, 1);
    config.idle_unsubscribe_after = Duration::from_millis(100);
    let store = Arc::new(MemoryStore::new());
    let pool = Pool::new(config, store.clone());
    pool.ensure_started().await.unwrap();
    for profile in [Profile::Chat, Profile::Codex] {
        let settings = ThreadSettings { developer_instructions: Some("You are Ada.".into()), ..Default::default() };
        let thread = pool.create_thread_with(settings, profile).await.unwrap();
        // Rebuilt three times: codex writes its context for every new thread, and may report the
        // injected history again in the first turn; neither may pile up.
        for n in 0..4 {
            turn_text(&pool, &thread, &format!("{} says {n}", profile.name())).await;
            wait_until("the thread is unloaded", Duration::from_secs(5), || pool.slot_of(&thread).is_none()).await;
        }
        let last = format!("{} says 3", profile.name());
        let msgs = messages(&env.requests_with(&last)[0]);
        let count = |needle: &str| msgs.iter().filter(|(_, t)| t.contains(needle)).count();
        assert_eq!(count("You are Ada."), 1, "{profile:?}: {msgs:?}");
        assert!(count("<environment_context>") <= 1, "{profile:?}: {msgs:?}");
        for n in 0..3 {
            // The message and its echo.
            assert_eq!(count(&format!("{} says {n}", profile.name())), 2, "{profile:?} turn {n}: {msgs:?}");
        }
        assert_eq!(store.history(&thread).await.unwrap().len(), 8, "{profile:?}: a user message and a reply a turn");
    }
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_come_back_with_the_history_after_a_crash() {
    use codex_pool_protocol::types::ApprovalPolicy;
    let env = Env::new().await;
    let pool = Pool::new(pool_config(&env, 1), Arc::new(MemoryStore::new()));
    pool.ensure_started().await.unwrap();
    let settings = ThreadSettings { approval_policy: Some(ApprovalPolicy::Untrusted), ..Default::default() };
    let thread = pool.create_thread_with(settings, Profile::Codex).await.unwrap();
    let (text, _) = turn_text(&pool, &thread, r#"run it [mock:tool=exec_command {"cmd":"echo hi"}]"#).await;
    assert!(text.starts_with("tool output:"), "{text}");
    let victim = pool.stats().slots[0].pid.unwrap();
    kill(victim, libc::SIGKILL);
    wait_until("the process is replaced", Duration::from_secs(20), || {
        pool.stats().slots[0].pid.is_some_and(|pid| pid != victim)
    })
    .await;
    let (text, _) = turn_text(&pool, &thread, "and now?").await;
    assert_eq!(text, "echo: and now?");
    // The rebuilt thread sent the model the call and its output, in order, before the new message.
    let req = &env.requests_with("and now?")[0];
    let kinds: Vec<&str> = req["input"].as_array().unwrap().iter().filter_map(|i| i["type"].as_str()).collect();
    let call = kinds.iter().position(|k| *k == "function_call").unwrap_or_else(|| panic!("{kinds:?}"));
    let output = kinds.iter().position(|k| *k == "function_call_output").unwrap_or_else(|| panic!("{kinds:?}"));
    assert!(call < output, "{kinds:?}");
    assert_eq!(last_user_text(req).as_deref(), Some("and now?"));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_dropped_after_codex_finished_it_is_kept_and_an_unfinished_one_is_not() {
    let env = Env::new().await;
    let store = Arc::new(MemoryStore::new());
    let pool = Pool::new(pool_config(&env, 1), store.clone());
    pool.ensure_started().await.unwrap();
    let thread = pool.create_thread(ThreadSettings::default()).await.unwrap();
    // Read up to the reply, then let codex finish, then drop without reading the end.
    let mut turn = pool.start_turn(&thread, vec![UserInput::text("finished")], TurnOptions::default()).await.unwrap();
    while !matches!(turn.next().await.unwrap(), TurnEvent::ItemCompleted { item } if item["type"] == "agentMessage") {}
    let codex_finished = || pool.stats().slots[0].process.is_some_and(|p| p.turns_completed == 1);
    wait_until("codex finishes the turn", Duration::from_secs(10), codex_finished).await;
    drop(turn);
    // Dropped in the middle: codex never finished it for us.
    let mut turn = pool
        .start_turn(
            &thread,
            vec![UserInput::text("unfinished [mock:deltas=50] [mock:delay_ms=50]")],
            TurnOptions::default(),
        )
        .await
        .unwrap();
    while !matches!(turn.next().await.unwrap(), TurnEvent::AgentMessageDelta { .. }) {}
    drop(turn);
    let (text, _) = turn_text(&pool, &thread, "last").await;
    assert_eq!(text, "echo: last");
    pool.shutdown().await;
    let history = store.history(&thread).await.unwrap();
    let texts: Vec<&str> = history.iter().filter_map(|i| i["content"][0]["text"].as_str()).collect();
    assert_eq!(texts, ["finished", "echo: finished", "last", "echo: last"], "{history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_was_never_started_says_so() {
    let env = Env::new().await;
    let store = Arc::new(MemoryStore::new());
    let stored = ConversationId::from("stored");
    store.save(codex_pool_store::ThreadRecord::new(stored.clone(), ThreadSettings::default())).await.unwrap();
    let pool = Pool::new(pool_config(&env, 1), store);
    let turn = tokio::time::timeout(
        Duration::from_secs(5),
        pool.start_turn(&stored, vec![UserInput::text("x")], TurnOptions::default()),
    )
    .await
    .expect("an answer, not a hang");
    assert!(matches!(turn, Err(PoolError::Unavailable)), "{turn:?}");
    let released = tokio::time::timeout(Duration::from_secs(5), pool.release_thread(&stored)).await;
    assert!(matches!(released, Ok(Ok(()))), "{released:?}");
    assert!(matches!(pool.create_thread(ThreadSettings::default()).await, Err(PoolError::Unavailable)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_conversations_stay_within_the_loaded_thread_cap() {
    const CAP: usize = 100;
    let env = Env::with_mock(codex_pool_mock_model::MockConfig { keep_requests: false, ..Default::default() }).await;
    let mut config = pool_config(&env, 2);
    config.max_loaded_threads_per_process = CAP;
    let pool = Pool::new(config, Arc::new(MemoryStore::new()));
    pool.ensure_started().await.unwrap();
    let started = std::time::Instant::now();
    let threads: Vec<ConversationId> = {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..1000 {
            let pool = pool.clone();
            tasks.spawn(async move { pool.create_thread(ThreadSettings::default()).await.unwrap() });
        }
        let mut v = Vec::new();
        while let Some(t) = tasks.join_next().await {
            v.push(t.unwrap());
        }
        v
    };
    println!("1000 threads created in {:?}", started.elapsed());
    // What codex itself reports loaded (`thread/started` minus `thread/closed`), per process.
    let loaded_in_codex = || -> Vec<usize> {
        pool.stats().slots.iter().map(|s| s.process.map_or(usize::MAX, |p| p.loaded_threads)).collect()
    };
    wait_until("codex unloads the threads over the cap", Duration::from_secs(30), || {
        loaded_in_codex().iter().all(|n| *n <= CAP)
    })
    .await;
    println!("threads loaded per process: {:?}", loaded_in_codex());
    assert!(pool.stats().slots.iter().all(|s| s.loaded_threads <= CAP));
    // An evicted conversation still takes a turn (it had no history, so it starts afresh).
    let (text, _) = turn_text(&pool, &threads[0], "still here").await;
    assert_eq!(text, "echo: still here");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_dropped_and_kept_turns_leave_no_trace() {
    let env = Env::new().await;
    let pool = Pool::new(pool_config(&env, 1), Arc::new(MemoryStore::new()));
    pool.ensure_started().await.unwrap();
    let thread = pool.create_thread(ThreadSettings::default()).await.unwrap();
    // Cancelled while starting.
    for _ in 0..5 {
        let _ = tokio::time::timeout(
            Duration::ZERO,
            pool.start_turn(&thread, vec![UserInput::text("x")], TurnOptions::default()),
        )
        .await;
    }
    wait_until("the cancelled turns end", Duration::from_secs(10), || {
        let stats = pool.stats();
        stats.active_turns == 0 && stats.slots[0].process.is_some_and(|p| p.active_turns == 0)
    })
    .await;
    // Dropped while running: the next turn starts right away (waiting for codex to end the old one).
    let slow = pool
        .start_turn(&thread, vec![UserInput::text("slow [mock:deltas=50] [mock:delay_ms=50]")], TurnOptions::default())
        .await
        .unwrap();
    drop(slow);
    let (text, _) = turn_text(&pool, &thread, "next").await;
    assert_eq!(text, "echo: next");
    // Finished but kept: holds nothing.
    let mut kept = pool.start_turn(&thread, vec![UserInput::text("kept")], TurnOptions::default()).await.unwrap();
    while !kept.next().await.unwrap().is_terminal() {}
    assert_eq!(pool.stats().active_turns, 0);
    let (text, _) = turn_text(&pool, &thread, "after kept").await;
    assert_eq!(text, "echo: after kept");
    drop(kept);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_turn_times_out_but_a_long_chatty_one_does_not() {
    use codex_pool::AbortReason;
    let env = Env::new().await;
    let mut config = pool_config(&env, 1);
    config.turn_timeout = Duration::from_millis(600);
    let store = Arc::new(MemoryStore::new());
    let pool = Pool::new(config, store.clone());
    pool.ensure_started().await.unwrap();
    let thread = pool.create_thread(ThreadSettings::default()).await.unwrap();
    // 12 deltas 150 ms apart: 1.8 s in all, three times the timeout, never 600 ms of silence.
    let (text, end) = turn_text(&pool, &thread, "chatty [mock:deltas=12] [mock:delay_ms=150]").await;
    assert!(matches!(end, TurnEvent::Completed { status: TurnStatus::Completed, .. }), "{end:?}");
    assert_eq!(text, "echo: chatty [mock:deltas=12] [mock:delay_ms=150]");
    // The model never answers: the turn ends with a timeout and the thread goes on.
    let (_, end) = turn_text(&pool, &thread, "silence [mock:hang]").await;
    assert!(matches!(end, TurnEvent::Aborted { reason: AbortReason::Timeout, .. }), "{end:?}");
    let (text, _) = turn_text(&pool, &thread, "after the silence").await;
    assert_eq!(text, "echo: after the silence");
    pool.shutdown().await;
    // The timed-out turn left nothing in the history.
    let history = store.history(&thread).await.unwrap();
    assert_eq!(history.len(), 4, "{history:?}");
    assert!(!history.iter().any(|i| i.to_string().contains("silence [mock:hang]")), "{history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_conversation_is_unloaded_kept_and_rebuilt_with_its_history() {
    let env = Env::new().await;
    let store = Arc::new(MemoryStore::new());
    let pool = Pool::new(pool_config(&env, 1), store.clone());
    pool.ensure_started().await.unwrap();
    let metadata = serde_json::json!({"user": "ada"}).as_object().unwrap().clone();
    let thread = pool.create_thread_with_metadata(ThreadSettings::default(), Profile::Chat, metadata).await.unwrap();
    turn_text(&pool, &thread, "remember this").await;
    let info = pool.conversation(&thread).await.unwrap().unwrap();
    assert_eq!((info.running, info.loaded.map(|(slot, _)| slot)), (false, Some(0)));
    assert_eq!((info.record.profile.as_str(), info.record.turns), ("chat", 1));
    assert_eq!(info.record.metadata["user"], "ada");

    pool.release_thread(&thread).await.unwrap();
    assert_eq!(pool.stats().loaded_threads, 0);
    let loaded_in_codex = || pool.stats().slots[0].process.map(|p| p.loaded_threads);
    wait_until("codex unloads the thread", Duration::from_secs(10), || loaded_in_codex() == Some(0)).await;
    assert!(pool.conversation(&thread).await.unwrap().unwrap().loaded.is_none());
    assert_eq!(store.count().await.unwrap(), 1, "kept in the store");

    let (text, _) = turn_text(&pool, &thread, "and now?").await;
    assert_eq!(text, "echo: and now?");
    let msgs = messages(&env.requests_with("and now?")[0]);
    assert!(msgs.iter().any(|(r, t)| r == "assistant" && t == "echo: remember this"), "{msgs:?}");
    let items = pool.items(&thread, 0, 100).await.unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(pool.items(&thread, 2, 1).await.unwrap()[0].seq, 3);
    let listed = pool.conversations(None, 10).await.unwrap();
    assert_eq!(listed.iter().map(|c| &c.record.id).collect::<Vec<_>>(), [&thread]);
    pool.shutdown().await;
}
