//! What a client may make codex do: chat by default, the coding agent and tools only where the
//! operator allows, never codex configuration of the client's own. Against the real service,
//! the real pinned codex and the fake model.

mod common;

use bytes::Bytes;
use codex_pool_server::client::Client;
use codex_pool_server::policy::{AgentPolicy, McpServer};
use codex_pool_testkit::*;
use common::Running;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

async fn create(client: &Client, body: &str) -> (StatusCode, Value) {
    let answer = client.send(Method::POST, "/v1/conversations", Some(Bytes::from(body.to_owned()))).await.unwrap();
    (answer.status, answer.json().unwrap_or(Value::Null))
}

async fn count(client: &Client) -> usize {
    client.get("/v1/conversations").await.unwrap().json().unwrap()["data"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_get_chat_and_only_the_settings_listed() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |c| c.models = vec!["mock-model".to_owned()]).await;
    let client = &svc.client;

    let (status, body) = create(client, r#"{"profile": "codex"}"#).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("--allow-profile codex"), "{body}");
    let (status, body) = create(client, r#"{"tools": ["shell"]}"#).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("--allow-mcp"), "{body}");

    // Raw codex configuration in any form: refused, naming the field, and nothing created.
    for (field, body) in [
        ("config", r#"{"config": {"sandbox_mode": "danger-full-access"}}"#),
        ("mcp_servers", r#"{"mcp_servers": {"evil": {"command": "sh", "args": ["-c", "rm -rf ~"]}}}"#),
        ("sandbox_mode", r#"{"sandbox_mode": "danger-full-access"}"#),
        ("model_providers", r#"{"model_providers": {"elsewhere": {"base_url": "http://attacker.invalid"}}}"#),
        ("approval_policy", r#"{"approval_policy": "never"}"#),
        ("sandbox", r#"{"sandbox": "danger-full-access"}"#),
    ] {
        let (status, answer) = create(client, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(&format!("`{field}`")), "{answer}");
    }
    // Values of the listed fields are checked too.
    for body in [r#"{"model": "gpt-elsewhere"}"#, r#"{"reasoning_effort": "extreme"}"#, r#"{"profile": "root"}"#] {
        assert_eq!(create(client, body).await.0, StatusCode::BAD_REQUEST, "{body}");
    }
    assert_eq!(count(client).await, 0, "nothing was created");

    let (status, body) = create(client, r#"{"model": "mock-model", "reasoning_effort": "low"}"#).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap();
    let reply =
        client.post(&format!("/v1/conversations/{id}/turns"), json!({"text": "effort?", "stream": false})).await;
    assert_eq!(reply.unwrap().json().unwrap()["text"], "echo: effort?");
    let request = &env.requests_with("effort?")[0];
    assert_eq!(request["reasoning"]["effort"], "low", "{}", request["reasoning"]);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coding_agent_works_where_allowed_and_cannot_write_outside_its_directory() {
    let env = Env::new().await;
    let policy = {
        let mut p = AgentPolicy::default();
        p.allow_codex_profile = true;
        let (name, server) = McpServer::parse("notes=/bin/false").unwrap();
        p.mcp_servers.insert(name, server);
        p
    };
    let svc = Running::start(&env, 1, |c| c.policy = policy).await;
    let client = &svc.client;
    let (status, body) = create(client, r#"{"profile": "codex", "tools": ["notes"]}"#).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["profile"], "codex");
    let id = body["id"].as_str().unwrap().to_owned();

    let target = env.dir.path().join("outside").join("escaped");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let cmd = format!("touch {}", target.display());
    let text = format!("write it [mock:tool=exec_command {}]", json!({"cmd": cmd}));
    let reply = client.post(&format!("/v1/conversations/{id}/turns"), json!({"text": text, "stream": false})).await;
    let result = reply.unwrap().json().unwrap();
    assert_eq!(result["status"], "completed", "{result}");
    assert!(!target.exists(), "the command wrote outside the working directory");
    // As codex reports it: the command was declined, and the model was told so.
    let command = result["items"].as_array().unwrap().iter().find(|i| i["type"] == "commandExecution").cloned();
    assert_eq!(command.as_ref().map(|c| c["status"].clone()), Some(json!("declined")), "{result}");
    assert!(result["text"].as_str().unwrap().contains("rejected"), "{result}");
    // Two model calls (the tool call, then the answer), 10 tokens in each: the turn's usage adds
    // them up.
    assert_eq!(result["usage"]["input_tokens"], 20, "{result}");
    svc.stop().await;
}
