//! Compaction through the service, against the real pinned `codex app-server` and the fake
//! model: a client asks for one (`POST .../compact`), the conversation keeps every turn and the
//! summary, and OpenAI's `previous_response_id` continues it from the summary after a release.

mod common;

use codex_pool_testkit::*;
use common::*;
use serde_json::{json, Value};

fn text_of(item: &Value) -> String {
    item["content"].as_array().into_iter().flatten().filter_map(|p| p["text"].as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_asked_for_is_kept_and_a_response_continues_from_its_summary() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |_| {}).await;
    let c = &svc.client;
    let first = c.post("/v1/responses", json!({"model": "mock-model", "input": "one"})).await.unwrap().json().unwrap();
    let next = json!({"model": "mock-model", "input": "two", "previous_response_id": first["id"]});
    let second = c.post("/v1/responses", next).await.unwrap().json().unwrap();
    let id = second["id"].as_str().unwrap().split('_').nth(1).unwrap().to_owned();

    let done =
        c.post(&format!("/v1/conversations/{id}/compact"), json!({"stream": false})).await.unwrap().json().unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    // A turn codex started itself has its own id, like any turn.
    let turn_id = done["turn_id"].as_str().unwrap();
    assert!(!turn_id.is_empty(), "{done}");
    let events = c.get(&format!("/v1/conversations/{id}/turns/{turn_id}/events")).await.unwrap();
    assert!(String::from_utf8_lossy(&events.body).contains("turn.completed"));
    assert!(done["items"].as_array().unwrap().iter().any(|i| i["type"] == "contextCompaction"), "{done}");
    let items = c.get(&format!("/v1/conversations/{id}/items")).await.unwrap().json().unwrap();
    let kinds: Vec<_> =
        items["data"].as_array().unwrap().iter().map(|i| i["item"]["type"].as_str().unwrap_or("?")).collect();
    assert_eq!(
        kinds,
        ["message", "message", "message", "message", "codex_pool.compaction"],
        "every turn and the summary"
    );

    c.post(&format!("/v1/conversations/{id}/release"), json!({})).await.unwrap();
    let third = json!({"model": "mock-model", "input": "three", "previous_response_id": second["id"]});
    let third = c.post("/v1/responses", third).await.unwrap().json().unwrap();
    assert_eq!(third["output"][0]["content"][0]["text"], "echo: three", "{third}");
    let sent = env.mock.requests().last().unwrap().body.clone();
    let input = sent["input"].as_array().unwrap();
    assert_eq!(input.iter().filter(|i| text_of(i).contains("\nsummary of")).count(), 1, "the summary once");
    assert!(
        !input.iter().any(|i| i["role"] == "assistant" && text_of(i) == "echo: one"),
        "the history before it is not resent"
    );
    // Forking at a response before the compaction starts from the whole transcript up to it.
    let fork = json!({"model": "mock-model", "input": "again", "previous_response_id": first["id"]});
    let fork = c.post("/v1/responses", fork).await.unwrap().json().unwrap();
    assert_eq!(fork["output"][0]["content"][0]["text"], "echo: again", "{fork}");
    let sent = env.mock.requests().last().unwrap().body.clone();
    let input = sent["input"].as_array().unwrap();
    assert!(input.iter().any(|i| i["role"] == "assistant" && text_of(i) == "echo: one"), "{input:?}");
    assert!(!input.iter().any(|i| text_of(i).contains("\nsummary of")), "{input:?}");
    svc.stop().await;
}
