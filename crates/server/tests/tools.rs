//! Client tools on the native API, through HTTP against the real pinned `codex app-server` and
//! the fake model: a turn stops at `tool.calls`, the outputs go to `tool_outputs`, and the same
//! stream (or the answer to the outputs) carries the rest; a call whose process was killed is
//! continued from the store.

mod common;

use codex_pool_testkit::*;
use common::*;
use hyper::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

async fn metrics_of(c: &codex_pool_server::client::Client) -> String {
    String::from_utf8(c.get("/metrics").await.unwrap().body.to_vec()).unwrap()
}

fn weather() -> Value {
    json!({"name": "weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_stops_at_its_tool_calls_and_the_same_stream_goes_on_after_the_outputs() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |_| {}).await;
    let c = &svc.client;
    let created = c.post("/v1/conversations", json!({"functions": [weather()]})).await.unwrap().json().unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["functions"], json!(["weather"]));

    let ask = json!({"text": r#"weather? [mock:tool=weather {"city":"Oslo"}]"#});
    let mut events = c.stream(&format!("/v1/conversations/{id}/turns"), ask).await.unwrap();
    let calls = loop {
        let e = events.next().await.unwrap().expect("the stream goes on to the calls");
        if e.event == "tool.calls" {
            break e.data["calls"].clone();
        }
        assert_ne!(e.event, "turn.completed");
    };
    assert_eq!(
        (calls[0]["name"].as_str(), calls[0]["arguments"].as_str()),
        (Some("weather"), Some(r#"{"city":"Oslo"}"#))
    );
    let call_id = calls[0]["call_id"].as_str().unwrap().to_owned();

    // The conversation says what waits, and refuses a new message meanwhile (naming the call).
    let got = c.get(&format!("/v1/conversations/{id}")).await.unwrap().json().unwrap();
    assert_eq!(got["pending_tool_calls"][0]["call_id"], call_id.as_str());
    let (status, body) = status_of(c.post(&format!("/v1/conversations/{id}/turns"), json!({"text": "hi"})).await);
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "tool_calls_pending");
    assert!(body["error"]["message"].as_str().unwrap().contains(&call_id), "{body}");
    // Bad outputs change nothing.
    let path = format!("/v1/conversations/{id}/tool_outputs");
    for (bad, code) in [
        (json!({"outputs": [{"call_id": "nope", "output": "x"}], "stream": false}), "unknown_tool_call"),
        (
            json!({"outputs": [{"call_id": call_id, "output": [{"type": "image", "url": "https://x/y.png"}]}]}),
            "invalid_request",
        ),
        (json!({"outputs": []}), "invalid_request"),
    ] {
        let (status, body) = status_of(c.post(&path, bad).await);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], code);
    }

    let answered = c
        .post(&path, json!({"outputs": [{"call_id": call_id, "output": "snow, -3C"}], "stream": false}))
        .await
        .unwrap();
    assert_eq!(answered.status, StatusCode::OK);
    let result = answered.json().unwrap();
    assert_eq!(
        (result["status"].as_str(), result["text"].as_str()),
        (Some("completed"), Some("tool output: snow, -3C"))
    );
    // The first stream carries the rest of the same turn.
    let rest = all(events).await;
    assert_eq!(text_of(&rest), "tool output: snow, -3C");
    assert_eq!(rest.last().unwrap().event, "turn.completed");
    let items = c.get(&format!("/v1/conversations/{id}/items")).await.unwrap().json().unwrap();
    let kinds: Vec<_> = items["data"].as_array().unwrap().iter().filter_map(|i| i["item"]["type"].as_str()).collect();
    assert_eq!(kinds, ["message", "function_call", "function_call_output", "message"]);
    let metrics = metrics_of(c).await;
    assert!(metrics.contains("codex_pool_tool_calls_total 1\n"), "{metrics}");
    assert!(metrics.contains("codex_pool_tool_outputs_total{path=\"waiting_turn\"} 1\n"), "{metrics}");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_for_a_call_whose_process_was_killed_continues_from_the_store() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |_| {}).await;
    let c = &svc.client;
    let created = c.post("/v1/conversations", json!({"functions": [weather()]})).await.unwrap().json().unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let ask = json!({"text": r#"w [mock:tool=weather {"city":"Rome"}]"#, "stream": false});
    let paused = c.post(&format!("/v1/conversations/{id}/turns"), ask).await.unwrap().json().unwrap();
    assert_eq!(paused["status"], "tool_calls", "{paused}");
    let call_id = paused["tool_calls"][0]["call_id"].as_str().unwrap().to_owned();
    let pool = c.get("/v1/pool").await.unwrap().json().unwrap();
    let victim = pool["processes"][0]["pid"].as_u64().unwrap() as u32;
    kill(victim, libc::SIGKILL);
    wait_until("the process is gone", Duration::from_secs(20), || !alive(victim)).await;

    let body = json!({"outputs": [{"call_id": call_id, "output": "sunny"}], "stream": false});
    let path = format!("/v1/conversations/{id}/tool_outputs");
    let result = loop {
        match c.post(&path, body.clone()).await {
            Ok(answer) => break answer.json().unwrap(),
            // While the process is being replaced the pool may answer 503; clients retry.
            Err(e) => {
                let (status, body) = status_of(Err::<(), _>(e));
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(
        (result["status"].as_str(), result["text"].as_str()),
        (Some("completed"), Some("tool output: sunny")),
        "{result}"
    );
    let last = env.mock.requests().last().unwrap().body.clone();
    let input = last["input"].as_array().unwrap();
    let count = |kind: &str| input.iter().filter(|i| i["type"] == kind && i["call_id"] == call_id.as_str()).count();
    assert_eq!((count("function_call"), count("function_call_output")), (1, 1), "{input:?}");
    let got = c.get(&format!("/v1/conversations/{id}")).await.unwrap().json().unwrap();
    assert_eq!(got["pending_tool_calls"], json!([]));
    let metrics = metrics_of(c).await;
    assert!(metrics.contains("codex_pool_tool_outputs_total{path=\"continued\"} 1\n"), "{metrics}");
    assert!(metrics.contains("codex_pool_turns_failed_total{reason=\"process_exited\"} 1\n"), "{metrics}");
    svc.stop().await;
}
