//! OpenAI's APIs on several `codex-pool serve` nodes of one store (SQLite with `--node-id`): the
//! real binary, codex and the fake model. The store says which conversation a Chat Completions
//! transcript is, so a transcript resent to any node, or to a node restarted, goes on in its
//! conversation, and the model is sent each message once; and it says which turn is a
//! conversation's latest, so a response continued from an earlier one forks on any node.

mod common;

use codex_pool_mock_model::{MockConfig, MockModel};
use codex_pool_server::client::Client;
use codex_pool_testkit::postgres::TestPostgres;
use common::{serve_with, Served};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use std::process::Stdio;

fn node(db: &str, model: &str, id: &str, data: &std::path::Path) -> Served {
    serve_with(data, model, None, Stdio::inherit(), &[], &["--db", db, "--node-id", id])
}

/// The chat completion request of the transcript `said` (user and assistant turns by turns),
/// then `last`.
fn request(said: &[&str], last: &str) -> Value {
    let mut messages = vec![json!({"role": "system", "content": "You are Bob."})];
    for (n, text) in said.iter().enumerate() {
        messages.push(json!({"role": if n % 2 == 0 { "user" } else { "assistant" }, "content": text}));
    }
    messages.push(json!({"role": "user", "content": last}));
    json!({"model": "mock-model", "messages": messages})
}

/// The conversation a chat completion's id names, and its reply.
fn answered(answer: &Value) -> (String, String) {
    let id = answer["id"].as_str().unwrap_or_else(|| panic!("{answer}"));
    let conversation = id.trim_start_matches("chatcmpl-").split('_').next().unwrap().to_owned();
    (conversation, answer["choices"][0]["message"]["content"].as_str().unwrap().to_owned())
}

/// Sends the transcript `said`, then `last`; answers the conversation and the reply.
async fn chat(client: &Client, said: &[&str], last: &str) -> (String, String) {
    answered(&client.post("/v1/chat/completions", request(said, last)).await.unwrap().json().unwrap())
}

/// Lets go of the conversation on the node that served it, so the next node can take its lease.
/// (The load balancer's tests cover a request that meets another node's lease.)
async fn release(client: &Client, id: &str) {
    let released = client.post(&format!("/v1/conversations/{id}/release"), json!({})).await.unwrap();
    assert_eq!(released.status, 200, "{:?}", released.json());
}

/// Every (role, text) of the model request whose last message is `last`.
fn model_request_ending_with(model: &MockModel, last: &str) -> Vec<String> {
    let bodies: Vec<Vec<String>> = model
        .requests()
        .into_iter()
        .map(|r| {
            let items = r.body["input"].as_array().cloned().unwrap_or_default();
            items
                .iter()
                .flat_map(|i| i["content"].as_array().cloned().unwrap_or_default())
                .filter_map(|p| p["text"].as_str().map(str::to_owned))
                .collect()
        })
        .filter(|said: &Vec<String>| said.last().is_some_and(|t| t == last))
        .collect();
    assert_eq!(bodies.len(), 1, "one model request ends with {last:?}");
    bodies.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcript_sent_to_one_node_then_another_stays_one_conversation_even_across_a_restart() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let db = dirs[2].path().join("threads.db");
    transcript_across_nodes(db.to_str().unwrap(), &dirs).await;
}

/// The same on PostgreSQL (a throwaway server on loopback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcript_stays_one_conversation_across_nodes_on_postgresql_too() {
    let Some(server) = TestPostgres::shared() else { return };
    let db = server.database().await;
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    transcript_across_nodes(db.url(), &dirs).await;
}

/// One transcript through nodes a and b of the store `db` (their data in `dirs`), then through a
/// restarted: one conversation throughout.
async fn transcript_across_nodes(db: &str, dirs: &[tempfile::TempDir]) {
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let a = node(db, &model.base_url(), "a", dirs[0].path());
    let b = node(db, &model.base_url(), "b", dirs[1].path());
    a.ready().await;
    b.ready().await;

    let (id, one) = chat(&a.client, &[], "one").await;
    assert_eq!(one, "echo: one");
    // Node b asked while node a holds the conversation: whatever b answers (a 307 to a today;
    // the request served through b once nodes forward), the entry b took is not lost, and the
    // conversation goes on, once, where it is served.
    let body = serde_json::to_vec(&request(&["one", &one], "two")).unwrap();
    let through_b = b.client.send(Method::POST, "/v1/chat/completions", Some(body.into())).await.unwrap();
    let (on_b, two) = if through_b.status == StatusCode::OK {
        answered(&through_b.json().unwrap())
    } else {
        assert_eq!(through_b.status, StatusCode::TEMPORARY_REDIRECT, "{:?}", through_b.json());
        chat(&a.client, &["one", &one], "two").await
    };
    assert_eq!(on_b, id, "continued where it is served");
    release(&a.client, &id).await;
    let (on_b, three) = chat(&b.client, &["one", &one, "two", &two], "three").await;
    assert_eq!(on_b, id, "node b continued the conversation node a began");
    release(&b.client, &id).await;
    let (on_a, four) = chat(&a.client, &["one", &one, "two", &two, "three", &three], "four").await;
    assert_eq!(on_a, id, "and node a continued it again");

    let listed = b.client.get("/v1/conversations").await.unwrap().json().unwrap();
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1), "one conversation: {listed}");
    // Each message went to the model once: the conversation's history, not the transcript again.
    let sent = model_request_ending_with(&model, "four");
    for text in ["one", "echo: one", "two", "echo: two", "three", "echo: three"] {
        assert_eq!(sent.iter().filter(|t| *t == text).count(), 1, "{text}: {sent:?}");
    }

    // Node a restarted knows the transcript at once: its first request continues it.
    let (status, _, _) = tokio::task::spawn_blocking(move || a.terminate()).await.unwrap();
    assert!(status.success());
    let a = node(db, &model.base_url(), "a", dirs[0].path());
    a.ready().await;
    let said = ["one", &one, "two", &two, "three", &three, "four", &four];
    let (after, _) = chat(&a.client, &said, "five").await;
    assert_eq!(after, id, "continued by the restarted node");
    assert_eq!(model_request_ending_with(&model, "five").iter().filter(|t| *t == "one").count(), 1);
}

/// A response's id, and its conversation (`resp_<conversation>_<turn>`).
async fn respond(client: &Client, input: &str, previous: Option<&str>) -> (String, String) {
    let mut body = json!({"model": "mock-model", "input": input});
    if let Some(previous) = previous {
        body["previous_response_id"] = json!(previous);
    }
    let answer: Value = client.post("/v1/responses", body).await.unwrap().json().unwrap();
    let id = answer["id"].as_str().unwrap_or_else(|| panic!("{answer}")).to_owned();
    let conversation = id.trim_start_matches("resp_").split('_').next().unwrap().to_owned();
    (id, conversation)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_continued_from_an_earlier_turn_forks_whichever_node_ran_the_later_one() {
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let db = dirs[2].path().join("threads.db");
    let db = db.to_str().unwrap();
    let a = node(db, &model.base_url(), "a", dirs[0].path());
    let b = node(db, &model.base_url(), "b", dirs[1].path());
    a.ready().await;
    b.ready().await;

    let (first, id) = respond(&a.client, "first", None).await;
    release(&a.client, &id).await;
    let (_, on_b) = respond(&b.client, "second, on b", Some(&first)).await;
    assert_eq!(on_b, id, "the latest response continues its conversation");
    release(&b.client, &id).await;
    // Node a ran `first`, but `first` is no longer the conversation's latest turn: going on
    // from it forks, and the fork's history ends with it.
    let (_, forked) = respond(&a.client, "third, from first", Some(&first)).await;
    assert_ne!(forked, id, "an earlier response forks");
    let sent = model_request_ending_with(&model, "third, from first");
    assert!(sent.iter().any(|t| t == "first"), "{sent:?}");
    assert!(!sent.iter().any(|t| t == "second, on b"), "the fork holds nothing after `first`: {sent:?}");
}
