//! `codex-pool serve` and `doctor` end to end: the real binary, the real pinned codex, the fake
//! model; signals and restarts as an operator would do them.

mod common;

use codex_pool_mock_model::{MockConfig, MockModel};
use codex_pool_server::client::{Client, SseEvent};
use common::{serve, serve_with};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;

async fn turn(client: &Client, id: &str, text: &str) -> Vec<SseEvent> {
    let mut events = client.stream(&format!("/v1/conversations/{id}/turns"), json!({"text": text})).await.unwrap();
    let mut seen = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(60), events.next()).await.unwrap().unwrap() {
        seen.push(e);
    }
    seen
}

fn texts(body: &serde_json::Value) -> Vec<String> {
    body["input"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| i["content"].as_array().into_iter().flatten())
        .filter_map(|p| p["text"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_running_turns_and_a_restart_carries_every_conversation_on() {
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let served = serve(data.path(), &model.base_url());
    served.ready().await;
    let c = &served.client;
    let created = c.post("/v1/conversations", json!({"developer_instructions": "You are Ada."})).await.unwrap();
    let id = created.json().unwrap()["id"].as_str().unwrap().to_owned();
    let events = turn(c, &id, "remember me").await;
    assert_eq!(events.last().unwrap().event, "turn.completed", "{events:?}");

    // A turn streams when the operator stops the service: it ends with a final event.
    let mut slow = c
        .stream(
            &format!("/v1/conversations/{id}/turns"),
            json!({"text": "cut short [mock:deltas=100] [mock:delay_ms=100]"}),
        )
        .await
        .unwrap();
    while slow.next().await.unwrap().unwrap().event != "text.delta" {}
    let reader = tokio::spawn(async move {
        let mut last = None;
        while let Ok(Some(e)) = slow.next().await {
            last = Some(e);
        }
        last
    });
    let (status, took, stdout) = tokio::task::spawn_blocking(move || served.terminate()).await.unwrap();
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    assert!(stdout.contains("codex-pool stopped"), "{stdout}");
    assert!(stdout.contains("console: http://127.0.0.1:"), "it says where its console is: {stdout}");
    let last = reader.await.unwrap().expect("the stream got an end");
    assert_eq!(
        (last.event.as_str(), last.data["error"]["kind"].as_str()),
        ("turn.failed", Some("shutdown")),
        "{last:?}"
    );

    // The next service on the same data directory carries the conversation on, with its history.
    let served = serve(data.path(), &model.base_url());
    served.ready().await;
    let info = served.client.get(&format!("/v1/conversations/{id}")).await.unwrap().json().unwrap();
    assert_eq!(info["turns"], 1, "the cut turn did not count: {info}");
    let events = turn(&served.client, &id, "still there?").await;
    assert_eq!(events.last().unwrap().event, "turn.completed");
    let request = model
        .requests()
        .into_iter()
        .map(|r| r.body)
        .find(|b| texts(b).last().is_some_and(|t| t == "still there?"))
        .expect("the model got the turn");
    let seen = texts(&request);
    for said in ["You are Ada.", "remember me", "echo: remember me"] {
        assert!(seen.iter().any(|t| t.contains(said)), "{said} lost: {seen:?}");
    }
    assert!(!seen.iter().any(|t| t.starts_with("cut short")), "the cut turn left nothing: {seen:?}");
    let (status, _, _) = tokio::task::spawn_blocking(move || served.terminate()).await.unwrap();
    assert!(status.success());
}

#[test]
fn serve_refuses_to_listen_beyond_loopback_without_a_token() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_codex-pool"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .arg("--data-dir")
        .arg(data.path())
        .env_remove("CODEX_POOL_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without a token") && stderr.contains("CODEX_POOL_TOKEN"), "{stderr}");
}

#[test]
fn doctor_says_what_is_fine_and_what_to_fix() {
    let data = tempfile::tempdir().unwrap();
    let run = |listen: &str| {
        Command::new(env!("CARGO_BIN_EXE_codex-pool"))
            .args(["doctor", "--listen", listen])
            .arg("--data-dir")
            .arg(data.path())
            .output()
            .unwrap()
    };
    let out = run("127.0.0.1:0");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.lines().all(|l| l.starts_with("ok ")), "{stdout}");
    assert!(stdout.contains("codex 0.171.0"), "{stdout}");
    // A port in use is a problem with a fix.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = run(&taken.local_addr().unwrap().to_string());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("PROBLEM") && stdout.contains("fix: "), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_streams_a_turn_and_carries_the_conversation_on() {
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let served = serve(data.path(), &model.base_url());
    served.ready().await;
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/stream_turn.py");
    let url = served.client.base().to_owned();
    let run = move |args: Vec<String>| {
        let out = Command::new("python3").arg(example).args(args).env("CODEX_POOL_URL", &url).output();
        out.expect("python3 is installed (the CI machine has it)")
    };
    let first = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(vec!["hello from python".into()])
    })
    .await
    .unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert_eq!(String::from_utf8_lossy(&first.stdout), "echo: hello from python\n");
    let stderr = String::from_utf8_lossy(&first.stderr).to_string();
    let id = stderr.split_whitespace().nth(1).expect(&stderr).to_owned();
    let second =
        tokio::task::spawn_blocking(move || run(vec!["--conversation".into(), id, "and again".into()])).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&second.stdout), "echo: and again\n");
    let last = model.requests().last().map(|r| r.body.clone()).unwrap();
    assert!(texts(&last).iter().any(|t| t == "echo: hello from python"), "the conversation went on");
    let (status, _, _) = tokio::task::spawn_blocking(move || served.terminate()).await.unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_prompts_stay_out_of_logs_and_error_bodies() {
    const TOKEN: &str = "TOKEN-SECRET-123";
    const PROMPT: &str = "PROMPT-SECRET-456";
    const AUTH: &str = "AUTH-SECRET-789";
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    // codex's login file, where `serve` keeps codex's home.
    std::fs::create_dir_all(data.path().join("codex-home")).unwrap();
    std::fs::write(data.path().join("codex-home/auth.json"), format!(r#"{{"OPENAI_API_KEY": "sk-{AUTH}"}}"#)).unwrap();
    let log = data.path().join("serve.log");
    let stderr = Stdio::from(std::fs::File::create(&log).unwrap());
    // Everything above DEBUG, from every part of the program.
    let served = serve_with(data.path(), &model.base_url(), Some(TOKEN), stderr, &[("CODEX_POOL_LOG", "info")], &[]);
    served.ready().await;
    let c = &served.client;
    let mut bodies = Vec::new();
    let id = c.post("/v1/conversations", json!({"developer_instructions": PROMPT})).await.unwrap().json().unwrap()
        ["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let events = turn(c, &id, &format!("{PROMPT} hello")).await;
    assert_eq!(events.last().unwrap().event, "turn.completed");
    // Failures of every kind, with the prompt and secrets in the requests.
    let path = format!("/v1/conversations/{id}/turns");
    for body in
        [json!({"input": PROMPT}), json!({"text": PROMPT, "input": []}), json!({"text": PROMPT, "bogus": PROMPT})]
    {
        let answer = c.send(hyper::Method::POST, &path, Some(bytes::Bytes::from(body.to_string()))).await.unwrap();
        assert_eq!(answer.status, 400);
        bodies.push(String::from_utf8_lossy(&answer.body).to_string());
    }
    let over = json!({"text": format!("{PROMPT} {}", "x".repeat(1 << 20))});
    let answer = c.send(hyper::Method::POST, &path, Some(bytes::Bytes::from(over.to_string()))).await.unwrap();
    bodies.push(String::from_utf8_lossy(&answer.body).to_string());
    // An application's key: its secret is never logged either, used or revoked.
    let key = c.post("/v1/keys", json!({"name": "app"})).await.unwrap().json().unwrap();
    let key_secret = key["secret"].as_str().unwrap().to_owned();
    let app = Client::new(c.base(), Some(key_secret.clone()));
    let app_conversation = app.post("/v1/conversations", json!({})).await.unwrap().json().unwrap();
    let app_id = app_conversation["id"].as_str().unwrap().to_owned();
    assert_eq!(turn(&app, &app_id, "from the app").await.last().unwrap().event, "turn.completed");
    let forged = Client::new(c.base(), Some(format!("{key_secret}x")));
    let answer = forged.send(hyper::Method::GET, "/v1/conversations", None).await.unwrap();
    assert_eq!(answer.status, 401);
    bodies.push(String::from_utf8_lossy(&answer.body).to_string());
    let id_of_key = key["id"].as_str().unwrap();
    assert_eq!(c.send(hyper::Method::DELETE, &format!("/v1/keys/{id_of_key}"), None).await.unwrap().status, 200);
    let intruder = Client::new(c.base(), Some("WRONG-TOKEN-000".into()));
    let answer = intruder.send(hyper::Method::GET, "/v1/conversations", None).await.unwrap();
    assert_eq!(answer.status, 401);
    bodies.push(String::from_utf8_lossy(&answer.body).to_string());
    let (status, _, stdout) = tokio::task::spawn_blocking(move || served.terminate()).await.unwrap();
    assert!(status.success());
    let logs = std::fs::read_to_string(&log).unwrap() + &stdout;
    assert!(logs.contains("INFO") || logs.contains("codex-pool"), "the run logged nothing: {logs}");
    for secret in [TOKEN, PROMPT, AUTH, "WRONG-TOKEN-000", key_secret.as_str(), &key_secret[12..]] {
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
        for body in &bodies {
            assert!(!body.contains(secret), "{secret} in an error body: {body}");
        }
    }
}
