//! `codex-pool serve` at its HTTP edge, as an operator starts it and a careless or hostile client
//! reaches it: the token from a file, tokens no client can send, the `Bearer` scheme in any case,
//! a history position past what SQLite's integers hold.

mod common;

use codex_pool_mock_model::{MockConfig, MockModel};
use codex_pool_server::client::Client;
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
        &["--token-file", file.to_str().unwrap()],
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
