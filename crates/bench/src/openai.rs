//! `bench --responses` and `--chat`: turns through the service's OpenAI API, as an OpenAI client
//! sends them (streamed).

use codex_pool_server::client::Client;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a conversation of the benchmark carries from turn to turn.
#[derive(Debug, Default)]
pub struct State {
    /// The native conversation id, or the last response id.
    pub id: String,
    /// The chat transcript so far.
    pub messages: Vec<Value>,
}

impl State {
    /// A conversation known by `id` (empty when it starts with its first request).
    pub fn new(id: String) -> Self {
        Self { id, messages: Vec::new() }
    }
}

/// One streamed response, continuing the last one: (time to the first text delta, reply).
pub async fn response_turn(client: &Client, state: &Arc<Mutex<State>>, text: &str) -> (Option<Duration>, String) {
    let begun = Instant::now();
    let previous = state.lock().map(|s| s.id.clone()).unwrap_or_default();
    let mut body = json!({"model": "mock-model", "input": text, "stream": true});
    if !previous.is_empty() {
        body["previous_response_id"] = json!(previous);
    }
    let Ok(mut events) = client.stream("/v1/responses", body).await else { return (None, String::new()) };
    let (mut ttft, mut reply) = (None, String::new());
    while let Ok(Some(event)) = events.next().await {
        match event.event.as_str() {
            "response.output_text.delta" => {
                ttft.get_or_insert_with(|| begun.elapsed());
                reply.push_str(event.data["delta"].as_str().unwrap_or_default());
            }
            "response.completed" => {
                if let (Ok(mut s), Some(id)) = (state.lock(), event.data["response"]["id"].as_str()) {
                    s.id = id.to_owned();
                }
                return (ttft, reply);
            }
            "response.failed" | "response.incomplete" => break,
            _ => {}
        }
    }
    (None, String::new())
}

/// One streamed chat completion of the whole transcript plus `text`: (time to the first text,
/// reply). The transcript grows by the exchange.
pub async fn chat_turn(client: &Client, state: &Arc<Mutex<State>>, text: &str) -> (Option<Duration>, String) {
    let begun = Instant::now();
    let mut messages = state.lock().map(|s| s.messages.clone()).unwrap_or_default();
    messages.push(json!({"role": "user", "content": text}));
    let body = json!({"model": "mock-model", "messages": messages, "stream": true});
    let Ok(mut events) = client.stream("/v1/chat/completions", body).await else { return (None, String::new()) };
    let (mut ttft, mut reply) = (None, String::new());
    while let Ok(Some(event)) = events.next().await {
        if event.data.is_null() {
            // `[DONE]`.
            messages.push(json!({"role": "assistant", "content": reply}));
            if let Ok(mut s) = state.lock() {
                s.messages = messages;
            }
            return (ttft, reply);
        }
        if event.data.get("error").is_some() {
            break;
        }
        if let Some(delta) = event.data["choices"][0]["delta"]["content"].as_str().filter(|d| !d.is_empty()) {
            ttft.get_or_insert_with(|| begun.elapsed());
            reply.push_str(delta);
        }
    }
    (None, String::new())
}

/// How many chat requests continued a conversation, and how many started one (from `/metrics`).
pub async fn chat_outcomes(client: &Client) -> (u64, u64) {
    let text = match client.get("/metrics").await {
        Ok(answer) => String::from_utf8_lossy(&answer.body).into_owned(),
        Err(_) => return (0, 0),
    };
    let count = |label: &str| {
        let sample = format!("codex_pool_chat_requests_total{{conversation=\"{label}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&sample)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    (count("continued"), count("new"))
}
