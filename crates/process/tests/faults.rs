//! Faults the real `codex app-server` cannot produce on demand, injected with a SCRIPTED FAKE
//! app-server (`tests/fixtures/fake-app-server.sh`): garbage output, huge lines, death and silence
//! during the handshake.

use codex_pool_testkit as common;

use codex_pool_process::{AppServer, ProcessConfig, ProcessError, SpawnError};
use codex_pool_protocol::methods::{ThreadLoadedList, ThreadLoadedListParams};
use serde_json::value::RawValue;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn fake(scenario: &str, dir: &tempfile::TempDir) -> ProcessConfig {
    common::init_tracing();
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-app-server.sh");
    let mut config = ProcessConfig::new(bin, dir.path().join("home"), dir.path().join("empty"));
    config.env.push(("FAKE_SCENARIO".into(), scenario.into()));
    config
}

#[tokio::test]
async fn garbage_lines_are_skipped_and_requests_still_answered() {
    let dir = tempfile::tempdir().unwrap();
    let server = AppServer::spawn(fake("garbage", &dir)).await.expect("handshake survives garbage");
    for _ in 0..3 {
        let loaded = server.handle().request::<ThreadLoadedList>(&ThreadLoadedListParams::default()).await.unwrap();
        assert!(loaded.data.is_empty());
    }
    // An unknown method gets the fake's error, as a typed RPC error.
    let err = server
        .handle()
        .call("no/such", RawValue::from_string("{}".into()).unwrap(), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err.rpc().map(|e| e.code), Some(-32601), "{err}");
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_64_mib_line_is_read_and_an_absurd_one_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = fake("huge-line", &dir);
    config.env.push(("FAKE_HUGE_BYTES".into(), (64 << 20).to_string()));
    let server = AppServer::spawn(config).await.unwrap();
    let result = server
        .handle()
        .call("fake/huge", RawValue::from_string("{}".into()).unwrap(), Duration::from_secs(60))
        .await
        .expect("a 64 MiB answer arrives whole");
    assert!(result.get().len() > 64 << 20);
    server.shutdown(Duration::from_secs(2)).await;

    // With a 1 MiB cap, the same line is skipped: the request times out, the process lives on.
    let mut config = fake("huge-line", &dir);
    config.env.push(("FAKE_HUGE_BYTES".into(), (8 << 20).to_string()));
    config.max_line_bytes = 1 << 20;
    let server = AppServer::spawn(config).await.unwrap();
    let err = server
        .handle()
        .call("fake/huge", RawValue::from_string("{}".into()).unwrap(), Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(matches!(err, ProcessError::Timeout { .. }), "{err}");
    let loaded = server.handle().request::<ThreadLoadedList>(&ThreadLoadedListParams::default()).await;
    assert!(loaded.is_ok(), "the process still answers after the skipped line: {loaded:?}");
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn death_during_the_handshake_is_reported_at_once_with_what_codex_said() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let err = AppServer::spawn(fake("die-in-handshake", &dir)).await.err().expect("spawn fails");
    assert!(matches!(&err, SpawnError::Died { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("exit status: 3") && text.contains("dying during the handshake"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn silence_during_the_handshake_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = fake("hang-in-handshake", &dir);
    config.handshake_timeout = Duration::from_millis(500);
    let err = AppServer::spawn(config).await.err().expect("spawn fails");
    assert!(matches!(&err, SpawnError::Handshake(ProcessError::Timeout { .. })), "{err}");
}

#[tokio::test]
async fn a_missing_binary_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = ProcessConfig::new("/nonexistent/codex".into(), dir.path().join("h"), dir.path().join("e"));
    let err = AppServer::spawn(config).await.err().expect("spawn fails");
    assert!(matches!(&err, SpawnError::Spawn { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/codex"), "{err}");
}

#[tokio::test]
async fn a_process_that_closes_stdout_but_lingers_is_killed_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let server = AppServer::spawn(fake("close-stdout", &dir)).await.unwrap();
    let handle = server.handle().clone();
    let why = tokio::time::timeout(Duration::from_secs(5), handle.exited()).await.expect("closed stdout is noticed");
    assert!(matches!(why, codex_pool_process::ExitReason::StdoutClosed { .. }), "{why}");
    assert_eq!(handle.exit_status(), None, "the process itself still runs");
    let started = Instant::now();
    server.shutdown(Duration::from_millis(300)).await;
    assert_eq!(handle.exit_status(), Some(codex_pool_process::ExitReason::Signal(libc::SIGKILL)));
    assert!(started.elapsed() < Duration::from_secs(10), "shutdown took {:?}", started.elapsed());
}
