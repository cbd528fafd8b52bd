//! Process failures: the real pinned `codex app-server` killed or stopped mid-conversation, and
//! (with a SCRIPTED FAKE app-server, for what the real binary cannot do on demand) a crash loop,
//! garbage on stdout, and health pings answered late by a process that keeps talking.

use codex_pool::{AbortReason, ConversationId, Pool, PoolConfig, PoolError, SlotStatus, TurnEvent, TurnOptions};
use codex_pool_process::ProcessConfig;
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::types::{TurnStatus, UserInput};
use codex_pool_store::MemoryStore;
use codex_pool_testkit::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn pool_config(env: &Env, size: usize) -> PoolConfig {
    let mut c = PoolConfig::new(env.config());
    c.size = size;
    c.restart_backoff = Duration::from_millis(50);
    c
}

async fn turn_text(pool: &Pool, thread: &ConversationId, text: &str) -> (String, TurnEvent, Vec<TurnEvent>) {
    let mut turn = pool.start_turn(thread, vec![UserInput::text(text)], TurnOptions::default()).await.unwrap();
    let mut events = Vec::new();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(e) = turn.next().await {
            if let TurnEvent::AgentMessageDelta { delta, .. } = &e {
                reply.push_str(delta);
            }
            if e.is_terminal() {
                return (reply, e, events);
            }
            events.push(e);
        }
        unreachable!()
    })
    .await
    .expect("turn ends")
}

/// Kills (SIGKILL) or stops (SIGSTOP) the process of `victim` in the middle of a streaming turn
/// and checks that every conversation it held goes on with its history.
async fn conversations_survive(signal: libc::c_int) {
    let env = Env::new().await;
    let mut config = pool_config(&env, 2);
    config.health_interval = Duration::from_millis(200);
    config.health_timeout = Duration::from_millis(800);
    let pool = Pool::new(config, Arc::new(MemoryStore::new()));
    pool.ensure_started().await.unwrap();
    let threads: Vec<ConversationId> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(pool.create_thread(ThreadSettings::default()).await.unwrap());
        }
        v
    };
    for t in &threads {
        turn_text(&pool, t, &format!("before {t}")).await;
    }
    let victim_slot = pool.slot_of(&threads[0]).unwrap();
    let victim = pool.stats().slots[victim_slot].pid.unwrap();
    let on_victim: Vec<&ConversationId> = threads.iter().filter(|t| pool.slot_of(t) == Some(victim_slot)).collect();
    assert!(on_victim.len() >= 2);

    let mut turn = pool
        .start_turn(
            &threads[0],
            vec![UserInput::text("doomed [mock:deltas=200] [mock:delay_ms=50]")],
            TurnOptions::default(),
        )
        .await
        .unwrap();
    while !matches!(turn.next().await.unwrap(), TurnEvent::AgentMessageDelta { .. }) {}
    let hit = Instant::now();
    kill(victim, signal);
    let end = loop {
        let e = tokio::time::timeout(Duration::from_secs(30), turn.next()).await.unwrap().unwrap();
        if e.is_terminal() {
            break e;
        }
    };
    let took = hit.elapsed();
    assert!(matches!(end, TurnEvent::Aborted { reason: AbortReason::ProcessExited, .. }), "{end:?}");
    println!("turn ended {took:?} after signal {signal}");
    if signal == libc::SIGKILL {
        assert!(took < Duration::from_secs(1), "a crashed turn took {took:?} to end");
    }
    drop(turn);

    wait_until("the process is replaced", Duration::from_secs(20), || {
        pool.stats().slots[victim_slot].pid.is_some_and(|pid| pid != victim)
    })
    .await;
    assert!(pool.stats().slots[victim_slot].restarts >= 1);

    for t in &threads {
        let was_on_victim = on_victim.contains(&t);
        let (reply, end, events) = turn_text(&pool, t, &format!("after {t}")).await;
        assert!(matches!(end, TurnEvent::Completed { status: TurnStatus::Completed, .. }), "{end:?}");
        assert_eq!(reply, format!("echo: after {t}"));
        // The conversation keeps its id; a conversation of the dead process runs on a new codex thread.
        assert!(matches!(&events[0], TurnEvent::Started { thread_id, .. } if thread_id == t.as_str()), "{events:?}");
        assert_eq!(pool.codex_thread_id(t).unwrap().as_str() != t.as_str(), was_on_victim, "{t}");
        let req = &env.requests_with(&format!("after {t}"))[0];
        let msgs = messages(req);
        assert!(msgs.iter().any(|(r, m)| r == "user" && m == &format!("before {t}")), "history of {t} lost: {msgs:?}");
        assert!(msgs.iter().any(|(r, m)| r == "assistant" && m == &format!("echo: before {t}")));
        // The turn cut by the crash left nothing behind: it can be sent again.
        assert!(!msgs.iter().any(|(_, m)| m.starts_with("doomed")), "{msgs:?}");
    }
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_turn_ends_the_turn_at_once_and_conversations_go_on() {
    conversations_survive(libc::SIGKILL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_is_detected_as_hung_and_conversations_go_on() {
    conversations_survive(libc::SIGSTOP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_that_never_ran_a_turn_is_rebuilt_with_its_settings_and_id() {
    let env = Env::new().await;
    let pool = Pool::new(pool_config(&env, 1), Arc::new(MemoryStore::new()));
    pool.ensure_started().await.unwrap();
    let settings = ThreadSettings { developer_instructions: Some("Speak like a pirate.".into()), ..Default::default() };
    let thread = pool.create_thread(settings).await.unwrap();
    let victim = pool.stats().slots[0].pid.unwrap();
    kill(victim, libc::SIGKILL);
    wait_until("the process is replaced", Duration::from_secs(20), || {
        pool.stats().slots[0].pid.is_some_and(|pid| pid != victim)
    })
    .await;
    let (reply, end, events) = turn_text(&pool, &thread, "ahoy").await;
    assert!(matches!(end, TurnEvent::Completed { .. }), "{end:?}");
    assert_eq!(reply, "echo: ahoy");
    assert!(matches!(&events[0], TurnEvent::Started { thread_id, .. } if thread_id == thread.as_str()), "{events:?}");
    assert_ne!(pool.codex_thread_id(&thread).unwrap().as_str(), thread.as_str(), "rebuilt on a new codex thread");
    // The settings came along.
    let msgs = messages(&env.requests_with("ahoy")[0]);
    assert!(msgs.iter().any(|(_, t)| t.contains("Speak like a pirate.")), "{msgs:?}");
    let (reply, _, _) = turn_text(&pool, &thread, "again").await;
    assert_eq!(reply, "echo: again");
    pool.shutdown().await;
}

/// A pool of one SCRIPTED FAKE app-server (`FAKE_SCENARIO` picks its misbehaviour): only for
/// faults the real codex cannot produce on demand.
fn fake_pool(scenario: &str, dir: &tempfile::TempDir) -> PoolConfig {
    init_tracing();
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../process/tests/fixtures/fake-app-server.sh");
    let mut process = ProcessConfig::new(bin, dir.path().join("home"), dir.path().join("empty"));
    process.env.push(("FAKE_SCENARIO".into(), scenario.into()));
    let mut config = PoolConfig::new(process);
    config.size = 1;
    config.restart_backoff = Duration::from_millis(100);
    config.restart_backoff_max = Duration::from_secs(1);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_backs_off_instead_of_spinning() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let pool = Pool::new(fake_pool("crash-loop", &dir), Arc::new(MemoryStore::new()));
    let err = pool.ensure_started().await.unwrap_err();
    assert!(matches!(err, PoolError::NoProcess(_)), "{err}");
    assert!(err.to_string().contains("exit"), "{err}");
    // Backoff 100, 200, 400 ms between attempts: the fourth comes after 700 ms at the earliest,
    // where a spin would make hundreds of attempts in that time.
    wait_until("four attempts", Duration::from_secs(10), || pool.stats().slots[0].spawn_failures >= 4).await;
    let took = started.elapsed();
    println!("four spawn attempts took {took:?}");
    assert!(took >= Duration::from_millis(700), "four attempts in {took:?}: no backoff");
    assert!(pool.stats().slots[0].spawn_failures <= 5, "{:?}", pool.stats().slots[0]);
    assert!(matches!(pool.create_thread(ThreadSettings::default()).await, Err(PoolError::Unavailable)));
    pool.shutdown().await;
    assert_eq!(pool.stats().slots[0].state, SlotStatus::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_output_does_not_make_a_process_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = fake_pool("garbage", &dir);
    config.health_interval = Duration::from_millis(100);
    config.health_timeout = Duration::from_millis(500);
    let pool = Pool::new(config, Arc::new(MemoryStore::new()));
    pool.ensure_started().await.unwrap();
    let pid = pool.stats().slots[0].pid;
    // Every health check gets garbage around its answer.
    wait_until("five health checks", Duration::from_secs(10), || pool.stats().slots[0].health_checks >= 5).await;
    let stats = pool.stats();
    assert_eq!(stats.slots[0].restarts, 0, "{stats:?}");
    assert!(stats.slots[0].healthy, "{stats:?}");
    assert_eq!(stats.slots[0].pid, pid);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_process_slow_to_answer_health_checks_is_not_killed() {
    // SCRIPTED FAKE: a process that keeps writing but answers each ping 2 s late, which the real
    // codex does only under a load this test cannot make on demand.
    let dir = tempfile::tempdir().unwrap();
    let mut config = fake_pool("slow-pings", &dir);
    config.health_interval = Duration::from_millis(100);
    config.health_timeout = Duration::from_millis(500);
    let pool = Pool::new(config, Arc::new(MemoryStore::new()));
    pool.ensure_started().await.unwrap();
    let pid = pool.stats().slots[0].pid;
    wait_until("three slow health checks", Duration::from_secs(20), || pool.stats().slots[0].busy_checks >= 3).await;
    let slot = &pool.stats().slots[0];
    assert_eq!((slot.restarts, slot.pid, slot.healthy), (0, pid, true), "{slot:?}");
    pool.shutdown().await;
}
