//! OpenAI's API on `codex-pool serve`, end to end: the real binary, the real pinned codex, the
//! fake model, and real clients: the official `openai` Python package, Prometheus' text parser,
//! and schemathesis driven by `/openapi.json`. Response ids survive a restart.

mod common;

use codex_pool_mock_model::{MockConfig, MockModel};
use codex_pool_server::client::Client;
use common::{python_script, serve, venv};
use serde_json::{json, Value};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Every (role, text) of a model request body.
fn said(body: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for item in body["input"].as_array().into_iter().flatten() {
        let role = item["role"].as_str().unwrap_or_default().to_owned();
        for part in item["content"].as_array().into_iter().flatten() {
            if let Some(text) = part["text"].as_str() {
                out.push((role.clone(), text.to_owned()));
            }
        }
    }
    out
}

/// The one model request whose last message is `last`.
fn body_ending_with(model: &MockModel, last: &str) -> Value {
    let found: Vec<Value> = model
        .requests()
        .into_iter()
        .map(|r| r.body)
        .filter(|b| said(b).last().is_some_and(|(_, t)| t == last))
        .collect();
    assert_eq!(found.len(), 1, "one model request ends with {last:?}");
    found.into_iter().next().unwrap()
}

/// What the model request whose last message is `last` said.
fn request_ending_with(model: &MockModel, last: &str) -> Vec<(String, String)> {
    said(&body_ending_with(model, last))
}

/// The codex thread that sent the model request whose last message is `last` (codex sends its
/// thread id as `prompt_cache_key`): the same for every turn of a codex thread, so two turns
/// that share it ran on one conversation's thread, not on a new one given the history.
fn thread_of(model: &MockModel, last: &str) -> String {
    body_ending_with(model, last)["prompt_cache_key"].as_str().expect("codex names its thread").to_owned()
}

fn times(said: &[(String, String)], text: &str) -> usize {
    said.iter().filter(|(_, t)| t == text).count()
}

/// Runs a program of the virtual environment, in the system's temporary folder (schemathesis
/// leaves a folder of its own where it runs).
async fn run(program: std::path::PathBuf, args: Vec<String>) -> Output {
    let output = move || Command::new(&program).args(&args).current_dir(std::env::temp_dir()).output().expect("runs");
    tokio::task::spawn_blocking(output).await.unwrap()
}

fn ok(out: &Output) -> &str {
    let stdout = std::str::from_utf8(&out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// `/metrics` as Prometheus' own parser reads it: sample (`name{labels}`) to value.
async fn scrape(venv: &std::path::Path, client: &Client) -> serde_json::Map<String, Value> {
    let args = vec![python_script("metrics_check.py").display().to_string(), format!("{}/metrics", client.base())];
    let out = run(venv.join("bin/python"), args).await;
    serde_json::from_str::<Value>(ok(&out)).unwrap().as_object().unwrap().clone()
}

fn sample(samples: &serde_json::Map<String, Value>, name: &str) -> f64 {
    samples.get(name).and_then(Value::as_f64).unwrap_or_else(|| panic!("{name} missing: {samples:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_streams_continues_and_chats_and_metrics_move() {
    let Some(venv) = venv() else { return };
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let served = serve(data.path(), &model.base_url());
    served.ready().await;
    let before = scrape(&venv, &served.client).await;
    let args = vec![python_script("openai_client.py").display().to_string(), format!("{}/v1", served.client.base())];
    let out = run(venv.join("bin/python"), args).await;
    let seen: Value = serde_json::from_str(ok(&out)).unwrap();
    assert_eq!(seen["models"], json!(["mock-model"]));

    // previous_response_id continued the conversation: one conversation, its history sent once.
    let (first, second) = (seen["first"].as_str().unwrap(), seen["second"].as_str().unwrap());
    assert_eq!(first.split('_').nth(1), second.split('_').nth(1), "{seen}");
    let sent = request_ending_with(&model, "and then?");
    assert_eq!((times(&sent, "hello from openai"), times(&sent, "echo: hello from openai")), (1, 1), "{sent:?}");
    assert_eq!(thread_of(&model, "and then?"), thread_of(&model, "hello from openai"), "on its thread");
    // The growing chat transcript ran as one conversation: each message reached the model once.
    let sent = request_ending_with(&model, "second chat line");
    assert_eq!((times(&sent, "first chat line"), times(&sent, "echo: first chat line")), (1, 1), "{sent:?}");
    let sent = request_ending_with(&model, "third");
    assert_eq!((times(&sent, "first chat line"), times(&sent, "echo: second chat line")), (1, 1), "{sent:?}");
    // ... and on one codex thread: each request continued the conversation, none started anew.
    let thread = thread_of(&model, "first chat line");
    assert_eq!((thread_of(&model, "second chat line"), thread_of(&model, "third")), (thread.clone(), thread));

    // Prometheus' parser reads /metrics, and the counters moved with the turns.
    let after = scrape(&venv, &served.client).await;
    let moved = |name: &str| sample(&after, name) - before.get(name).and_then(Value::as_f64).unwrap_or(0.0);
    assert_eq!(moved("codex_pool_turns_started_total{}"), 6.0, "{after:?}");
    assert_eq!(moved("codex_pool_turns_completed_total{status=\"completed\"}"), 6.0);
    assert_eq!(moved("codex_pool_chat_requests_total{conversation=\"continued\"}"), 2.0);
    assert_eq!(moved("codex_pool_chat_requests_total{conversation=\"new\"}"), 1.0);
    assert_eq!(moved("codex_pool_turn_duration_seconds_count{}"), 6.0);
    assert!(moved("codex_pool_http_requests_total{method=\"POST\",route=\"/v1/responses\",status=\"200\"}") >= 3.0);
    assert_eq!(sample(&after, "codex_pool_processes{state=\"ready\"}"), 1.0);
    let (status, _, _) = tokio::task::spawn_blocking(move || served.terminate()).await.unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_ids_survive_a_restart() {
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let served = serve(data.path(), &model.base_url());
    served.ready().await;
    let c = &served.client;
    let first = c.post("/v1/responses", json!({"input": "before the restart", "instructions": "You are Ada."})).await;
    let first = first.unwrap().json().unwrap()["id"].as_str().unwrap().to_owned();
    let next = json!({"input": "still before", "previous_response_id": first});
    let second = c.post("/v1/responses", next).await.unwrap().json().unwrap()["id"].as_str().unwrap().to_owned();
    let chat = |messages: Value| json!({"model": "mock-model", "messages": messages});
    let one = json!([{"role": "system", "content": "You are Bob."}, {"role": "user", "content": "chat before"}]);
    let answer = c.post("/v1/chat/completions", chat(one)).await.unwrap().json().unwrap();
    let chat_conversation =
        answer["id"].as_str().unwrap().trim_start_matches("chatcmpl-").split('_').next().unwrap().to_owned();
    let (status, _, _) = tokio::task::spawn_blocking(move || served.terminate()).await.unwrap();
    assert!(status.success());

    let served = serve(data.path(), &model.base_url());
    served.ready().await;
    let c = &served.client;
    for (id, text) in [(&first, "echo: before the restart"), (&second, "echo: still before")] {
        let got = c.get(&format!("/v1/responses/{id}")).await.unwrap().json().unwrap();
        assert_eq!(
            (got["id"].as_str(), got["output"][0]["content"][0]["text"].as_str()),
            (Some(id.as_str()), Some(text))
        );
    }
    let got = c.get(&format!("/v1/responses/{second}")).await.unwrap().json().unwrap();
    assert_eq!(
        (got["previous_response_id"].as_str(), got["instructions"].as_str()),
        (Some(first.as_str()), Some("You are Ada."))
    );
    // The chat transcript continues its conversation after the restart too, at once: its
    // index is in the store.
    let two = json!([{"role": "system", "content": "You are Bob."}, {"role": "user", "content": "chat before"},
        {"role": "assistant", "content": "echo: chat before"}, {"role": "user", "content": "chat after"}]);
    let answer = c.post("/v1/chat/completions", chat(two)).await.unwrap().json().unwrap();
    assert!(answer["id"].as_str().unwrap().contains(&chat_conversation), "continued: {answer}");
    assert_eq!(times(&request_ending_with(&model, "chat after"), "chat before"), 1);
    let after = json!({"input": "after the restart", "previous_response_id": second});
    let third = c.post("/v1/responses", after).await.unwrap().json().unwrap();
    assert_eq!(third["output"][0]["content"][0]["text"], "echo: after the restart");
    let sent = request_ending_with(&model, "after the restart");
    for text in ["before the restart", "echo: before the restart", "still before", "echo: still before"] {
        assert_eq!(times(&sent, text), 1, "{text}: {sent:?}");
    }
    let (status, _, _) = tokio::task::spawn_blocking(move || served.terminate()).await.unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_every_conversation_is_intact_after() {
    let Some(venv) = venv() else { return };
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let served = serve(data.path(), &model.base_url());
    served.ready().await;
    let c = &served.client;
    // Two conversations before: a native one and a chat.
    let native =
        c.post("/v1/conversations", json!({})).await.unwrap().json().unwrap()["id"].as_str().unwrap().to_owned();
    let turn = json!({"text": "native before", "stream": false});
    c.post(&format!("/v1/conversations/{native}/turns"), turn).await.unwrap();
    let chat = |messages: Value| json!({"model": "mock-model", "messages": messages});
    let first = json!([{"role": "user", "content": "chat before"}]);
    c.post("/v1/chat/completions", chat(first)).await.unwrap();

    let began = Instant::now();
    let args: Vec<String> = [
        "run",
        &format!("{}/openapi.json", c.base()),
        "--checks",
        "not_a_server_error",
        "--max-examples",
        "25",
        "--seed",
        "1",
        "--phases",
        "examples,coverage,fuzzing",
        "--generation-database",
        "none",
        "--request-timeout",
        "60",
        "--no-color",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = run(venv.join("bin/schemathesis"), args).await;
    let took = began.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schemathesis found problems:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    println!("schemathesis took {took:?}: {}", stdout.lines().rev().take(3).collect::<Vec<_>>().join(" | "));
    assert!(took < Duration::from_secs(240), "{took:?}");

    // Every conversation from before is intact: same history, and it goes on with it.
    let items = c.get(&format!("/v1/conversations/{native}/items")).await.unwrap().json().unwrap();
    assert_eq!(items["data"].as_array().unwrap().len(), 2, "{items}");
    let turn = json!({"text": "native after", "stream": false});
    let done = c.post(&format!("/v1/conversations/{native}/turns"), turn).await.unwrap().json().unwrap();
    assert_eq!(done["text"], "echo: native after");
    assert_eq!(times(&request_ending_with(&model, "native after"), "echo: native before"), 1);
    let second = json!([{"role": "user", "content": "chat before"}, {"role": "assistant", "content": "echo: chat before"},
        {"role": "user", "content": "chat after"}]);
    let answer = c.post("/v1/chat/completions", chat(second)).await.unwrap().json().unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "echo: chat after");
    assert_eq!(times(&request_ending_with(&model, "chat after"), "chat before"), 1);
    let metrics = String::from_utf8(c.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    assert!(metrics.contains("codex_pool_chat_requests_total{conversation=\"continued\"} 1\n"), "{metrics}");
    // No 5xx at all (but the readiness probe's 503 while the pool started).
    let server_errors: Vec<&str> =
        metrics.lines().filter(|l| l.contains("status=\"5") && !l.contains("route=\"/readyz\"")).collect();
    assert!(server_errors.is_empty(), "{server_errors:?}");
    let (status, _, _) = tokio::task::spawn_blocking(move || served.terminate()).await.unwrap();
    assert!(status.success());
}
