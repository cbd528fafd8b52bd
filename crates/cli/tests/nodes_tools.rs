//! Client tools on several `codex-pool serve` nodes sharing one PostgreSQL (a throwaway server
//! on loopback): outputs sent to a node that does not serve the conversation reach the turn that
//! waits for them on the node that does; and when that node is killed with its turn waiting,
//! the outputs sent to another node continue the conversation there, from the store.

mod common;

use codex_pool_mock_model::{MockConfig, MockModel};
use codex_pool_server::client::Client;
use codex_pool_testkit::kill;
use codex_pool_testkit::postgres::TestPostgres;
use common::{serve_with, Served};
use serde_json::{json, Value};
use std::process::Stdio;

const TOKEN: &str = "nodes-token";

fn node(db: &str, model: &str, id: &str, data: &std::path::Path) -> Served {
    let args = ["--db", db, "--node-id", id, "--lease-ttl-secs", "3"];
    serve_with(data, model, Some(TOKEN), Stdio::inherit(), &[], &args)
}

/// A turn whose message makes the fake model call `weather`: the call id it waits on.
async fn paused_turn(client: &Client, id: &str, city: &str) -> String {
    let text = format!(r#"w [mock:tool=weather {{"city":"{city}"}}]"#);
    let paused: Value = client
        .post(&format!("/v1/conversations/{id}/turns"), json!({"text": text, "stream": false}))
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(paused["status"], "tool_calls", "{paused}");
    paused["tool_calls"][0]["call_id"].as_str().unwrap().to_owned()
}

async fn give(client: &Client, id: &str, call_id: &str, output: &str) -> Value {
    let body = json!({"outputs": [{"call_id": call_id, "output": output}], "stream": false});
    client.post(&format!("/v1/conversations/{id}/tool_outputs"), body).await.unwrap().json().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_sent_to_any_node_reach_the_waiting_turn_or_continue_on_the_node_asked() {
    let Some(server) = TestPostgres::shared() else { return };
    let db = server.database().await;
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = node(db.url(), &model.base_url(), "a", dirs[0].path());
    let b = node(db.url(), &model.base_url(), "b", dirs[1].path());
    a.ready().await;
    b.ready().await;
    let weather =
        json!({"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}});
    let created = a.client.post("/v1/conversations", json!({"functions": [weather]})).await.unwrap().json().unwrap();
    let id = created["id"].as_str().unwrap().to_owned();

    // Node a runs the turn and waits; the outputs, sent to b, are forwarded to it.
    let call_id = paused_turn(&a.client, &id, "Oslo").await;
    let done = give(&b.client, &id, &call_id, "snow").await;
    assert_eq!(
        (done["status"].as_str(), done["text"].as_str()),
        (Some("completed"), Some("tool output: snow")),
        "{done}"
    );

    // Node a is killed while its turn waits: b takes the conversation over once a's lease runs
    // out, and continues it from the store with the call and the output.
    let call_id = paused_turn(&a.client, &id, "Rome").await;
    kill(a.child.id(), libc::SIGKILL);
    let done = give(&b.client, &id, &call_id, "sun").await;
    assert_eq!(
        (done["status"].as_str(), done["text"].as_str()),
        (Some("completed"), Some("tool output: sun")),
        "{done}"
    );
    let last = model.requests().last().unwrap().body.clone();
    let input = last["input"].as_array().unwrap();
    let count = |kind: &str| input.iter().filter(|i| i["type"] == kind && i["call_id"] == call_id.as_str()).count();
    assert_eq!((count("function_call"), count("function_call_output")), (1, 1), "{input:?}");
    let got = b.client.get(&format!("/v1/conversations/{id}")).await.unwrap().json().unwrap();
    assert_eq!(got["pending_tool_calls"], json!([]));
    let mut a = a;
    let _ = a.child.wait();
    let (status, _, _) = tokio::task::spawn_blocking(move || b.terminate()).await.unwrap();
    assert!(status.success());
}
