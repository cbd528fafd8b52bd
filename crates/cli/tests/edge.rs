//! `codex-pool serve` at its HTTP edge, as an operator starts it and a careless or hostile client
//! reaches it: the token from a file, tokens no client can send, the `Bearer` scheme in any case,
//! a history position past what SQLite's integers hold, the body limit as a flag.

mod common;

use codex_pool_mock_model::{MockConfig, MockModel};
use codex_pool_server::client::{Client, ClientError};
use common::serve_with;
use hyper::{Method, StatusCode};
use serde_json::json;
use std::process::{Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_comes_from_a_file_and_stays_out_of_ps() {
    const TOKEN: &str = "FILE-TOKEN-4242";
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let served = serve_with(
        data.path(),
        &model.base_url(),
        None,
        Stdio::inherit(),
        &[],
        &["--token-file", file.to_str().unwrap(), "--max-body-bytes", "4096"],
    );
    let pid = served.child.id();
    let c = Client::new(served.client.base(), Some(TOKEN.into()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while c.get("/readyz").await.is_err() {
        assert!(std::time::Instant::now() < deadline, "not ready");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(TOKEN), "the token is on the command line");
    // The file's token, its newline dropped; none is 401.
    assert_eq!(c.get("/v1/conversations").await.unwrap().status, StatusCode::OK);
    let anonymous = Client::new(c.base(), None);
    assert_eq!(anonymous.send(Method::GET, "/v1/conversations", None).await.unwrap().status, StatusCode::UNAUTHORIZED);
    // The scheme's name in any case (RFC 7235).
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let request = hyper::Request::get(format!("{}/v1/conversations", c.base()))
            .header("authorization", format!("{scheme} {TOKEN}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        assert_eq!(anonymous.send_with(request).await.unwrap().status, StatusCode::OK, "{scheme}");
    }

    // --max-body-bytes: a body over it is 413 and makes nothing.
    let big =
        c.post("/v1/conversations", json!({"metadata": {"k": "x".repeat(500)}, "instructions": "y".repeat(5000)}));
    match big.await {
        Err(ClientError::Status { status, body }) => {
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
            assert_eq!(body["error"]["code"], "payload_too_large");
        }
        other => panic!("a body over --max-body-bytes: {other:?}"),
    }
    let listed = c.get("/v1/conversations").await.unwrap().json().unwrap();
    assert_eq!(listed["data"], json!([]), "{listed}");

    // A position past i64::MAX reads nothing (it wrapped to -1: the whole history).
    let id = c.post("/v1/conversations", json!({})).await.unwrap().json().unwrap()["id"].as_str().unwrap().to_owned();
    let answer = c.post(&format!("/v1/conversations/{id}/turns"), json!({"text": "hello", "stream": false})).await;
    assert_eq!(answer.unwrap().json().unwrap()["status"], "completed");
    let all = c.get(&format!("/v1/conversations/{id}/items")).await.unwrap().json().unwrap();
    assert!(!all["data"].as_array().unwrap().is_empty(), "{all}");
    for after in [u64::MAX, i64::MAX as u64 + 1] {
        let page = c.get(&format!("/v1/conversations/{id}/items?after={after}")).await.unwrap().json().unwrap();
        assert_eq!(page["data"], json!([]), "after={after}: {page}");
    }
    let (status, _, _) = tokio::task::spawn_blocking(move || served.terminate()).await.unwrap();
    assert!(status.success());
}

#[test]
fn tokens_no_client_can_send_are_refused_at_start() {
    let data = tempfile::tempdir().unwrap();
    let blank = data.path().join("blank");
    std::fs::write(&blank, " \n").unwrap();
    for args in [
        vec!["--token", ""],
        vec!["--token", "   "],
        vec!["--token", " padded "],
        vec!["--token-file", blank.to_str().unwrap()],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_codex-pool"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data.path())
            .args(&args)
            .env_remove("CODEX_POOL_TOKEN")
            .env_remove("CODEX_POOL_TOKEN_FILE")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no client can send"), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_beyond_the_open_files_limit_leave_the_service_reachable() {
    use std::os::unix::process::CommandExt;
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("serve.log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_codex-pool"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--pool-size", "1", "--model-base-url", &model.base_url()])
        .arg("--data-dir")
        .arg(data.path())
        .env_remove("CODEX_POOL_TOKEN")
        .env("CODEX_POOL_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: setrlimit only, between fork and exec. A low hard limit, as `ulimit -n` gives.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 320, rlim_max: 320 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut first).unwrap();
    let base = first.split_whitespace().find(|w| w.starts_with("http://")).expect(&first).to_owned();
    let c = Client::new(&base, None);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while c.get("/readyz").await.is_err() {
        assert!(std::time::Instant::now() < deadline, "not ready");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // More idle, unauthenticated sockets than serve has descriptors.
    let mut idle = Vec::new();
    for _ in 0..400 {
        idle.push(tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await.unwrap());
    }
    // /healthz still answers (from the reserve, once its silent sockets are closed)...
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let fresh = Client::new(&base, None);
        let answer = tokio::time::timeout(std::time::Duration::from_secs(5), fresh.get("/healthz")).await;
        if answer.is_ok_and(|a| a.is_ok_and(|a| a.status == StatusCode::OK)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "/healthz unreachable with idle sockets open");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // ...and once they go, everything does.
    drop(idle);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let fresh = Client::new(&base, None);
        let answer = tokio::time::timeout(std::time::Duration::from_secs(5), fresh.get("/v1/pool")).await;
        if answer.is_ok_and(|a| a.is_ok()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the service did not serve again");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // SAFETY: a plain syscall on our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success());
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("capping them"), "the lowered cap was not logged: {logs}");
}
