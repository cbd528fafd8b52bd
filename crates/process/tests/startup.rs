//! Several processes started at once on one `CODEX_HOME`, as a pool starts its slots (each slot's
//! supervisor spawns the same `ProcessConfig`, so every process shares the home: its login and
//! its SQLite state, `state_5.sqlite`). Others running several app-servers on one home report
//! "failed to initialize sqlite state runtime" now and then; this counts such failures over
//! many rounds, each on a fresh home (the first start creates and migrates the databases, the
//! most contended moment), with every process starting threads and turns at once.
//!
//! `CODEX_POOL_STARTUP_PROCESSES` (default 6), `CODEX_POOL_STARTUP_ROUNDS` (default 5) and
//! `CODEX_POOL_STARTUP_THREADS` (per process, default 2) scale it up for a measurement.

use codex_pool_testkit as common;

use codex_pool_process::{AppServer, ProcessConfig, ProcessError};
use codex_pool_protocol::methods::{ThreadStartParams, TurnStartParams};
use codex_pool_protocol::types::UserInput;
use common::*;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One process: started, `threads` threads with a turn each at once, shut down. Any failure,
/// or codex saying it could not open its state, comes back as text.
async fn start_and_use(config: ProcessConfig, threads: usize) -> Result<(), String> {
    let server = AppServer::spawn(config).await.map_err(|e| format!("start: {e}"))?;
    let mut work = tokio::task::JoinSet::new();
    for n in 0..threads {
        let codex = server.handle().clone();
        work.spawn(async move {
            let thread = codex.start_thread(&ThreadStartParams::default()).await?.thread;
            let text = format!("start {n}");
            let turn = codex.start_turn(TurnStartParams::new(&thread.id, vec![UserInput::text(&text)])).await?;
            let (answer, _, _) = finish(turn).await;
            Ok::<_, ProcessError>(answer == format!("echo: {text}"))
        });
    }
    let mut result = Ok(());
    while let Some(done) = work.join_next().await {
        match done.expect("no panic") {
            Ok(true) => {}
            Ok(false) => result = Err("a turn did not answer".to_owned()),
            Err(e) => result = Err(format!("thread or turn: {e}")),
        }
    }
    let stderr = server.handle().stderr_tail();
    server.shutdown(SHUTDOWN).await;
    if stderr.contains("sqlite") {
        return Err(format!("codex's stderr: {stderr}"));
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_started_at_once_on_one_codex_home_all_start_and_keep_their_state() {
    let env = Env::new().await;
    let processes = setting("CODEX_POOL_STARTUP_PROCESSES", 6);
    let rounds = setting("CODEX_POOL_STARTUP_ROUNDS", 5);
    let threads = setting("CODEX_POOL_STARTUP_THREADS", 2);
    let mut failures = Vec::new();
    for round in 0..rounds {
        let mut config = env.config();
        config.codex_home = env.dir.path().join(format!("codex-home-{round}"));
        let mut starts = tokio::task::JoinSet::new();
        for slot in 0..processes {
            let mut config = config.clone();
            config.label = format!("codex#{slot}");
            starts.spawn(start_and_use(config, threads));
        }
        while let Some(done) = starts.join_next().await {
            if let Err(e) = done.expect("no panic") {
                failures.push(format!("round {round}: {e}"));
            }
        }
    }
    eprintln!(
        "start-up failures: {} of {} starts ({processes} at once, {rounds} rounds)",
        failures.len(),
        processes * rounds
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
