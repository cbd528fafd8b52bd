//! What the operator's console reads that other clients want too: `running_turn_id` on a
//! conversation, `rss_bytes` on `/v1/pool`.

mod common;

use codex_pool_testkit::*;
use common::*;
use hyper::Method;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_turn_is_named_on_its_conversation_for_clients_to_reattach() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |_| {}).await;
    let c = &svc.client;
    // Documented for every client.
    let doc = c.get("/openapi.json").await.unwrap().json().unwrap();
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["Conversation"]["properties"]["running_turn_id"].is_object(), "{schemas}");
    assert!(schemas["Process"]["properties"]["rss_bytes"].is_object(), "{schemas}");
    let id = svc.conversation().await;
    let path = format!("/v1/conversations/{id}");
    assert_eq!(c.get(&path).await.unwrap().json().unwrap()["running_turn_id"], Value::Null);

    let slow = json!({"text": "slow [mock:deltas=20] [mock:delay_ms=50]"});
    let mut events = c.stream(&format!("{path}/turns"), slow).await.unwrap();
    let started = events.next().await.unwrap().unwrap();
    assert_eq!(started.event, "turn.started");
    let turn_id = started.data["turn_id"].as_str().unwrap().to_owned();
    let seen = c.get(&path).await.unwrap().json().unwrap();
    assert_eq!((seen["state"].as_str(), seen["running_turn_id"].as_str()), (Some("running"), Some(turn_id.as_str())));
    let listed = c.get("/v1/conversations").await.unwrap().json().unwrap();
    assert_eq!(listed["data"][0]["running_turn_id"].as_str(), Some(turn_id.as_str()), "{listed}");

    // A second client re-attaches with it and reads the whole turn.
    let again = c.builder(Method::GET, &format!("{path}/turns/{turn_id}/events")).body(Default::default()).unwrap();
    let reattached = all(c.open(again).await.unwrap()).await;
    assert_eq!(text_of(&reattached), "echo: slow [mock:deltas=20] [mock:delay_ms=50]");
    all(events).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let seen = c.get(&path).await.unwrap().json().unwrap();
        if seen["state"] == "idle" {
            assert_eq!(seen["running_turn_id"], Value::Null, "{seen}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the turn did not end: {seen}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    svc.stop().await;
}
