//! `codex-pool keys` and API keys across nodes: the real binary; keys created, listed and
//! revoked in a SQLite file (the secret printed once, only its prefix after); `serve` refuses
//! live keys without a token; two nodes on one PostgreSQL: a key's conversation is its own on
//! both, and a key revoked on one node is refused by the other within a second; the official
//! `openai` package with two keys.

mod common;

use codex_pool_mock_model::{MockConfig, MockModel};
use codex_pool_server::client::Client;
use codex_pool_testkit::postgres::TestPostgres;
use common::serve_with;
use hyper::{Method, StatusCode};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "keys-operator-token";

fn keys(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_codex-pool"))
        .arg("keys")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn keys_are_created_listed_and_revoked_and_the_secret_is_shown_once() {
    let data = tempfile::tempdir().unwrap();
    let created = stdout(&keys(data.path(), &["create", "--name", "app-a", "--max-conversations", "3"]));
    let secret = created.lines().find_map(|l| l.strip_prefix("secret: ")).expect(&created).to_owned();
    assert!(secret.starts_with("cpk_") && secret.len() == 47, "{secret}");
    let again = keys(data.path(), &["create", "--name", "app-a"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"), "{again:?}");
    let bad = keys(data.path(), &["create", "--name", "no spaces"]);
    assert!(!bad.status.success());

    let listed = stdout(&keys(data.path(), &["list"]));
    assert!(listed.contains("app-a") && listed.contains(&secret[..12]), "{listed}");
    assert!(!listed.contains(&secret), "the secret is shown once: {listed}");
    let row = listed.lines().find(|l| l.contains("app-a")).unwrap();
    let cols: Vec<&str> = row.split('\t').collect();
    assert_eq!((cols[5], cols[7]), ("-", "3"), "not revoked, max_conversations 3: {row}");

    // serve refuses keys without a token, naming the flag.
    let refused = Command::new(env!("CARGO_BIN_EXE_codex-pool"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env_remove("CODEX_POOL_TOKEN")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--token") && stderr.contains("API key"), "{stderr}");

    let revoked = stdout(&keys(data.path(), &["revoke", "app-a"]));
    assert!(revoked.contains("revoked app-a"), "{revoked}");
    let listed = stdout(&keys(data.path(), &["list"]));
    let row = listed.lines().find(|l| l.contains("app-a")).unwrap();
    assert_ne!(row.split('\t').nth(5), Some("-"), "revoked: {row}");
    assert!(!keys(data.path(), &["revoke", "nobody"]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_node_is_refused_by_the_other_within_a_second() {
    let Some(server) = TestPostgres::shared() else { return };
    let db = server.database().await;
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let node = |id: &str, dir: &std::path::Path| {
        let args = ["--db", db.url(), "--node-id", id, "--lease-ttl-secs", "3"];
        serve_with(dir, &model.base_url(), Some(TOKEN), Stdio::inherit(), &[], &args)
    };
    let (a, b) = (node("a", dirs[0].path()), node("b", dirs[1].path()));
    a.ready().await;
    b.ready().await;
    let mut made = Vec::new();
    for name in ["app-a", "app-b"] {
        let created = a.client.post("/v1/keys", json!({"name": name})).await.unwrap().json().unwrap();
        made.push((created["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned()));
    }
    let on = |served: &common::Served, secret: &str| Client::new(served.client.base(), Some(secret.to_owned()));
    let (key_a_on_a, key_a_on_b, key_b_on_b) = (on(&a, &made[0].1), on(&b, &made[0].1), on(&b, &made[1].1));

    // A's conversation, served by node a: its own on node b too (forwarded with its bearer),
    // unknown to the other key there.
    let conv = key_a_on_a.post("/v1/conversations", json!({})).await.unwrap().json().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/conversations/{conv}/turns");
    let body = json!({"text": "over there", "stream": false}).to_string();
    let turn = key_a_on_b.send(Method::POST, &path, Some(body.clone().into())).await.unwrap();
    assert_eq!(turn.status, StatusCode::OK, "{:?}", turn.json());
    let theirs = key_b_on_b.send(Method::POST, &path, Some(body.into())).await.unwrap();
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    let read = key_b_on_b.send(Method::GET, &format!("/v1/conversations/{conv}"), None).await.unwrap();
    assert_eq!(read.status, StatusCode::NOT_FOUND);

    // Revoked on node a: node b refuses it within a second.
    assert_eq!(key_a_on_b.get("/v1/conversations").await.unwrap().status, StatusCode::OK);
    let revoked = a.client.send(Method::DELETE, &format!("/v1/keys/{}", made[0].0), None).await.unwrap();
    assert_eq!(revoked.status, StatusCode::OK);
    let since = Instant::now();
    loop {
        let answer = key_a_on_b.send(Method::GET, "/v1/conversations", None).await.unwrap();
        if answer.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(since.elapsed() < Duration::from_secs(1), "node b still serves a key revoked on node a");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The other key, and the operator, are unaffected.
    assert_eq!(key_b_on_b.get("/v1/conversations").await.unwrap().status, StatusCode::OK);
    assert_eq!(b.client.get(&format!("/v1/conversations/{conv}")).await.unwrap().status, StatusCode::OK);
    for served in [a, b] {
        let (status, _, _) = tokio::task::spawn_blocking(move || served.terminate()).await.unwrap();
        assert!(status.success());
    }
}

/// The official `openai` package carrying applications' keys, as their users call it: the other
/// key's response is NotFoundError on read and on `previous_response_id`, a key over its
/// conversations is RateLimitError (`tests/python/keys_client.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_with_two_keys_sees_only_its_own_and_meets_its_limit() {
    let Some(venv) = common::venv() else { return };
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let served = serve_with(data.path(), &model.base_url(), Some(TOKEN), Stdio::inherit(), &[], &[]);
    served.ready().await;
    let mut secrets = Vec::new();
    for (name, limits) in [("openai-a", json!({"max_conversations": 1})), ("openai-b", json!({}))] {
        let mut body = json!({"name": name});
        body.as_object_mut().unwrap().extend(limits.as_object().unwrap().clone());
        let created = served.client.post("/v1/keys", body).await.unwrap().json().unwrap();
        secrets.push(created["secret"].as_str().unwrap().to_owned());
    }
    let script = common::python_script("keys_client.py").display().to_string();
    let args = [script, format!("{}/v1", served.client.base()), secrets[0].clone(), secrets[1].clone()];
    let python = venv.join("bin/python");
    let out = tokio::task::spawn_blocking(move || Command::new(python).args(args).output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(seen["limited"], "key_max_conversations", "{seen}");
    // The operator sees both keys' conversations: A's one, B's one.
    let all = served.client.get("/v1/conversations").await.unwrap().json().unwrap();
    assert_eq!(all["data"].as_array().unwrap().len(), 2, "{all}");
    let (status, _, _) = tokio::task::spawn_blocking(move || served.terminate()).await.unwrap();
    assert!(status.success());
}
