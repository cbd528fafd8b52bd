//! Client tools through a real `codex-pool serve`: a tool call left pending across a restart of
//! the service is answered afterwards, and the conversation goes on with the call and its output
//! each seen once by the model.

mod common;

use codex_pool_mock_model::{MockConfig, MockModel};
use common::*;
use serde_json::{json, Value};

/// How many times the model's last request holds an item of `kind` for `call_id`.
fn seen(model: &MockModel, kind: &str, call_id: &str) -> usize {
    let last = model.requests().last().unwrap().body.clone();
    last["input"].as_array().unwrap().iter().filter(|i| i["type"] == kind && i["call_id"] == call_id).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_pending_across_a_restart_of_the_service_is_answered_after_it() {
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let served = serve(data.path(), &model.base_url());
    served.ready().await;
    let c = &served.client;
    let weather =
        json!({"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}});
    let created = c.post("/v1/conversations", json!({"functions": [weather]})).await.unwrap().json().unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let ask = json!({"text": r#"w [mock:tool=weather {"city":"Nice"}]"#, "stream": false});
    let paused: Value = c.post(&format!("/v1/conversations/{id}/turns"), ask).await.unwrap().json().unwrap();
    assert_eq!(paused["status"], "tool_calls", "{paused}");
    let call_id = paused["tool_calls"][0]["call_id"].as_str().unwrap().to_owned();
    // SIGTERM while the turn waits: it ends (`shutdown`), the call stays pending in the store.
    let (status, _, _) = tokio::task::spawn_blocking(move || served.terminate()).await.unwrap();
    assert!(status.success());

    let served = serve(data.path(), &model.base_url());
    served.ready().await;
    let c = &served.client;
    let got = c.get(&format!("/v1/conversations/{id}")).await.unwrap().json().unwrap();
    assert_eq!(got["pending_tool_calls"][0]["call_id"], call_id.as_str(), "{got}");
    let outputs = json!({"outputs": [{"call_id": call_id, "output": "warm"}], "stream": false});
    let done = c.post(&format!("/v1/conversations/{id}/tool_outputs"), outputs).await.unwrap().json().unwrap();
    assert_eq!(
        (done["status"].as_str(), done["text"].as_str()),
        (Some("completed"), Some("tool output: warm")),
        "{done}"
    );
    assert_eq!((seen(&model, "function_call", &call_id), seen(&model, "function_call_output", &call_id)), (1, 1));
    let next = json!({"text": "thanks", "stream": false});
    let done = c.post(&format!("/v1/conversations/{id}/turns"), next).await.unwrap().json().unwrap();
    assert_eq!(done["text"], "echo: thanks");
    assert_eq!((seen(&model, "function_call", &call_id), seen(&model, "function_call_output", &call_id)), (1, 1));
    let items = c.get(&format!("/v1/conversations/{id}/items")).await.unwrap().json().unwrap();
    let kinds: Vec<_> = items["data"].as_array().unwrap().iter().filter_map(|i| i["item"]["type"].as_str()).collect();
    assert_eq!(kinds, ["message", "function_call", "function_call_output", "message", "message", "message"]);
    let (status, _, _) = tokio::task::spawn_blocking(move || served.terminate()).await.unwrap();
    assert!(status.success());
}
