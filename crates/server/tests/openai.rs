//! OpenAI's API on the service, against the real pinned `codex app-server` and the fake model:
//! Responses (streamed in order, continued, forked, read back, refused), Chat Completions
//! (a growing transcript is one conversation), models, and `/metrics`.

mod common;

use codex_pool_server::client::SseEvent;
use codex_pool_testkit::*;
use common::*;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

const SEQUENCE: [&str; 10] = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
    "",
];

async fn service(env: &Env) -> Running {
    Running::start(env, 1, |c| c.models = vec!["mock-model".into()]).await
}

/// Each (role, text) of the model request that carried `needle` as its last user message.
fn sent_for(env: &Env, needle: &str) -> Vec<(String, String)> {
    let requests = env.requests_with(needle);
    assert_eq!(requests.len(), 1, "one model request for {needle:?}");
    messages(&requests[0])
}

fn count(msgs: &[(String, String)], text: &str) -> usize {
    msgs.iter().filter(|(_, t)| t == text).count()
}

fn types(events: &[SseEvent]) -> Vec<String> {
    events.iter().map(|e| e.event.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_stream_in_order_continue_fork_and_read_back() {
    let env = Env::new().await;
    let svc = service(&env).await;
    let c = &svc.client;
    let body =
        json!({"model": "mock-model", "input": "hi [mock:deltas=3]", "instructions": "You are Ada.", "stream": true});
    let events = all(c.stream("/v1/responses", body).await.unwrap()).await;
    // The order OpenAI's clients expect, deltas repeated, and numbers from 0 with no gap.
    let mut expected: Vec<&str> = SEQUENCE[..4].to_vec();
    expected.extend(["response.output_text.delta"; 3]);
    expected.extend(&SEQUENCE[5..9]);
    assert_eq!(types(&events), expected);
    for (n, e) in events.iter().enumerate() {
        assert_eq!(
            (e.data["type"].as_str(), e.data["sequence_number"].as_u64()),
            (Some(e.event.as_str()), Some(n as u64))
        );
    }
    let done = &events.last().unwrap().data["response"];
    let first = done["id"].as_str().unwrap().to_owned();
    assert_eq!(events[0].data["response"]["id"], first, "one id throughout");
    assert_eq!(done["output"][0]["content"][0]["text"], "echo: hi [mock:deltas=3]");
    assert_eq!((done["status"].as_str(), done["instructions"].as_str()), (Some("completed"), Some("You are Ada.")));
    // The model's counts for its one call: 10 tokens in, one out per delta.
    let usage = (done["usage"]["input_tokens"].as_i64(), done["usage"]["total_tokens"].as_i64());
    assert_eq!(usage, (Some(10), Some(13)), "{done}");
    let item_id = events[2].data["item"]["id"].clone();
    assert!(events[3..8].iter().all(|e| e.data["item_id"] == item_id), "deltas name their item");

    // Continued on the same conversation: the model sees the history once, with the instructions.
    let again = c
        .post("/v1/responses", json!({"model": "mock-model", "input": "again", "previous_response_id": first}))
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(again["output"][0]["content"][0]["text"], "echo: again", "{again}");
    assert_eq!(again["previous_response_id"], first);
    let second = again["id"].as_str().unwrap().to_owned();
    let conversation = first.split('_').nth(1).unwrap();
    assert_eq!(second.split('_').nth(1).unwrap(), conversation, "the same conversation");
    let msgs = sent_for(&env, "again");
    assert_eq!((count(&msgs, "hi [mock:deltas=3]"), count(&msgs, "echo: hi [mock:deltas=3]")), (1, 1), "{msgs:?}");
    let request = &env.requests_with("again")[0];
    assert!(request.to_string().contains("You are Ada."), "{request}");

    // Read back: the latest from its events, both from the store's items.
    let got = c.get(&format!("/v1/responses/{first}")).await.unwrap().json().unwrap();
    assert_eq!(
        (got["id"].as_str(), got["output"][0]["content"][0]["text"].as_str()),
        (Some(first.as_str()), Some("echo: hi [mock:deltas=3]"))
    );
    let got = c.get(&format!("/v1/responses/{second}")).await.unwrap().json().unwrap();
    assert_eq!(
        (got["status"].as_str(), got["previous_response_id"].as_str()),
        (Some("completed"), Some(first.as_str()))
    );

    // From the first response again: a fork, with the first exchange and not the second.
    let fork = c
        .post("/v1/responses", json!({"input": "other way", "previous_response_id": first}))
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_ne!(fork["id"].as_str().unwrap().split('_').nth(1).unwrap(), conversation, "a new conversation");
    let msgs = sent_for(&env, "other way");
    assert_eq!((count(&msgs, "echo: hi [mock:deltas=3]"), count(&msgs, "again")), (1, 0), "{msgs:?}");
    // The original goes on where it was.
    let third = c
        .post("/v1/responses", json!({"input": "third", "previous_response_id": second}))
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(third["id"].as_str().unwrap().split('_').nth(1).unwrap(), conversation);
    assert_eq!(count(&sent_for(&env, "third"), "other way"), 0);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_refuse_what_they_cannot_honour_and_name_it() {
    let env = Env::new().await;
    let svc = service(&env).await;
    let c = &svc.client;
    let first =
        c.post("/v1/responses", json!({"input": "one", "instructions": "Be terse."})).await.unwrap().json().unwrap();
    let first = first["id"].as_str().unwrap().to_owned();
    for (body, status, param) in [
        (json!({"input": "x", "temperature": 0.2}), 400, "temperature"),
        (json!({"input": "x", "tools": [{"type": "web_search"}]}), 400, "tools[0].type"),
        (
            json!({"input": "x", "tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "g"}}),
            400,
            "tool_choice.name",
        ),
        (json!({"input": "x", "parallel_tool_calls": false}), 400, "parallel_tool_calls"),
        (json!({"input": "x", "tool_choice": "required"}), 400, "tool_choice"),
        (json!({"input": "x", "include": ["reasoning.encrypted_content"]}), 400, "include[0]"),
        (json!({"input": "x", "bogus": 1}), 400, "bogus"),
        (json!({}), 400, "input"),
        (json!({"input": 5}), 400, "input"),
        (json!({"input": "x", "model": "gpt-nope"}), 404, "model"),
        (json!({"input": "x", "metadata": {"k": 1}}), 400, "metadata"),
        (json!({"input": "x", "stream": "yes"}), 400, "stream"),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]}),
            400,
            "input[0].content[0].image_url",
        ),
        (json!({"input": [{"role": "assistant", "content": "last"}]}), 400, "input[0].role"),
        (json!({"input": "x", "instructions": "a", "previous_response_id": first}), 400, "instructions"),
        (json!({"input": "x", "store": false, "previous_response_id": first}), 400, "store"),
        (
            json!({"input": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], "previous_response_id": first}),
            400,
            "input",
        ),
        (json!({"input": "x", "previous_response_id": "resp_nope_nope"}), 404, "previous_response_id"),
        (json!({"input": "x", "previous_response_id": "garbage"}), 404, "previous_response_id"),
    ] {
        let (got, answer) = raw(c, Method::POST, "/v1/responses", &body.to_string()).await;
        assert_eq!(got.as_u16(), status, "{body} -> {answer}");
        let error = &answer["error"];
        assert_eq!(error["param"], param, "{body} -> {answer}");
        assert!(error["type"].is_string() && error["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
    }
    // The same instructions may be repeated.
    let ok = json!({"input": "two", "instructions": "Be terse.", "previous_response_id": first});
    assert_eq!(raw(c, Method::POST, "/v1/responses", &ok.to_string()).await.0, StatusCode::OK);
    // Malformed JSON, unknown ids, methods and routes: OpenAI's shape.
    let (status, body) = raw(c, Method::POST, "/v1/responses", "{nope").await;
    assert_eq!((status, body["error"]["type"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request_error")));
    let (status, body) = status_of(c.get("/v1/responses/resp_a_b").await);
    assert_eq!((status, body["error"]["type"].as_str()), (StatusCode::NOT_FOUND, Some("not_found_error")), "{body}");
    let (status, body) = raw(c, Method::PUT, "/v1/responses", "{}").await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("invalid_request_error"))
    );
    assert_eq!(raw(c, Method::DELETE, "/v1/chat/completions", "").await.0, StatusCode::METHOD_NOT_ALLOWED);

    // `store: false`: answered, then gone with its conversation.
    let gone = c.post("/v1/responses", json!({"input": "forget me", "store": false})).await.unwrap().json().unwrap();
    assert_eq!(
        (gone["output"][0]["content"][0]["text"].as_str(), gone["store"].as_bool()),
        (Some("echo: forget me"), Some(false))
    );
    let id = gone["id"].as_str().unwrap().to_owned();
    let conversation = id.split('_').nth(1).unwrap().to_owned();
    wait_gone(c, &format!("/v1/conversations/{conversation}")).await;
    assert_eq!(status_of(c.get(&format!("/v1/responses/{id}")).await).0, StatusCode::NOT_FOUND);
    svc.stop().await;
}

async fn wait_gone(c: &codex_pool_server::client::Client, path: &str) {
    for _ in 0..100 {
        if status_of(c.get(path).await).0 == StatusCode::NOT_FOUND {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{path} is still there");
}

fn chat(messages: &[(&str, &str)]) -> Value {
    let messages: Vec<Value> =
        messages.iter().map(|(role, content)| json!({"role": role, "content": content})).collect();
    json!({"model": "mock-model", "messages": messages})
}

fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{sample} missing from\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growing_chat_transcript_is_one_conversation() {
    let env = Env::new().await;
    let svc = service(&env).await;
    let c = &svc.client;
    let one = [("system", "You are Bob."), ("user", "line one")];
    let answer = c.post("/v1/chat/completions", chat(&one)).await.unwrap().json().unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "echo: line one", "{answer}");
    assert_eq!(
        (answer["object"].as_str(), answer["choices"][0]["finish_reason"].as_str()),
        (Some("chat.completion"), Some("stop"))
    );
    let conversation =
        answer["id"].as_str().unwrap().trim_start_matches("chatcmpl-").split('_').next().unwrap().to_owned();

    // The next request resends it all, plus one exchange (with white space a front end added).
    let two =
        [("system", "You are Bob."), ("user", "line one"), ("assistant", "echo: line one\n"), ("user", "line two")];
    let mut body = chat(&two);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let chunks = all(c.stream("/v1/chat/completions", body).await.unwrap()).await;
    let text: String = chunks.iter().filter_map(|e| e.data["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "echo: line two");
    assert!(chunks.last().unwrap().data.is_null(), "[DONE] ends it");
    let usage = &chunks[chunks.len() - 2].data;
    assert!(usage["choices"].as_array().unwrap().is_empty() && usage["usage"]["total_tokens"].is_i64(), "{usage}");
    assert_eq!(usage["usage"]["prompt_tokens"], 10, "the model's count: {usage}");
    assert!(chunks[0].data["id"].as_str().unwrap().contains(&conversation), "continued the same conversation");
    // The model got each message once: codex holds the history, the request added one message.
    let msgs = sent_for(&env, "line two");
    assert_eq!((count(&msgs, "line one"), count(&msgs, "echo: line one")), (1, 1), "{msgs:?}");
    // On the conversation's codex thread (codex names it in `prompt_cache_key`), not a new one.
    let thread = |needle: &str| env.requests_with(needle)[0]["prompt_cache_key"].clone();
    assert_eq!(thread("line two"), thread("line one"));
    let items = c.get(&format!("/v1/conversations/{conversation}/items")).await.unwrap().json().unwrap();
    assert_eq!(items["data"].as_array().unwrap().len(), 4, "{items}");

    // Regenerating the last reply (the same request again) cannot continue it: a new conversation
    // starts from the transcript, and the first one is left as it is.
    let again = c.post("/v1/chat/completions", chat(&two)).await.unwrap().json().unwrap();
    assert!(!again["id"].as_str().unwrap().contains(&conversation), "{again}");
    let requests = env.requests_with("line two");
    assert_eq!(messages(&requests[1]).iter().filter(|(_, t)| t == "line one").count(), 1, "history given once");
    // A turn through the native API on that conversation: the client's transcript lacks it, so
    // the next request cannot continue it.
    let forked = again["id"].as_str().unwrap().trim_start_matches("chatcmpl-").split('_').next().unwrap().to_owned();
    let native = json!({"text": "aside", "stream": false});
    c.post(&format!("/v1/conversations/{forked}/turns"), native).await.unwrap();
    let mut three: Vec<(&str, &str)> = two.to_vec();
    three.extend([("assistant", "echo: line two"), ("user", "line three")]);
    let after = c.post("/v1/chat/completions", chat(&three)).await.unwrap().json().unwrap();
    assert!(!after["id"].as_str().unwrap().contains(&forked), "{after}");
    assert_eq!(count(&sent_for(&env, "line three"), "aside"), 0);
    let metrics = c.get("/metrics").await.unwrap();
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    assert_eq!(metric(&text, "codex_pool_chat_requests_total{conversation=\"continued\"}"), 1.0);
    assert_eq!(metric(&text, "codex_pool_chat_requests_total{conversation=\"new\"}"), 3.0);

    for (body, param) in [
        (
            json!({"model": "mock-model", "messages": [{"role": "user", "content": "x"}], "temperature": 1}),
            "temperature",
        ),
        (json!({"model": "mock-model", "messages": [{"role": "user", "content": "x"}], "n": 2}), "n"),
        (json!({"model": "mock-model", "messages": [{"role": "user", "content": "x"}], "store": true}), "store"),
        (json!({"messages": [{"role": "user", "content": "x"}]}), "model"),
        (json!({"model": "mock-model"}), "messages"),
        (
            json!({"model": "mock-model", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": true}}),
            "stream_options",
        ),
        (
            json!({"model": "mock-model", "messages": [{"role": "tool", "content": "x", "tool_call_id": "c"}]}),
            "messages[0].tool_call_id",
        ),
        (
            json!({"model": "mock-model", "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "function", "function": {"name": "f"}}}),
            "tool_choice.function.name",
        ),
    ] {
        let (status, answer) = raw(c, Method::POST, "/v1/chat/completions", &body.to_string()).await;
        assert_eq!(
            (status, answer["error"]["param"].as_str()),
            (StatusCode::BAD_REQUEST, Some(param)),
            "{body} -> {answer}"
        );
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_and_metrics() {
    let env = Env::new().await;
    let svc = service(&env).await;
    let c = &svc.client;
    let models = c.get("/v1/models").await.unwrap().json().unwrap();
    assert_eq!(models["data"][0]["id"], "mock-model", "{models}");
    assert_eq!(c.get("/v1/models/mock-model").await.unwrap().json().unwrap()["object"], "model");
    assert_eq!(status_of(c.get("/v1/models/other").await).0, StatusCode::NOT_FOUND);

    let before = c.get("/metrics").await.unwrap();
    assert_eq!(before.headers["content-type"], "application/openmetrics-text; version=1.0.0; charset=utf-8");
    let before = String::from_utf8(before.body.to_vec()).unwrap();
    let id = svc.conversation().await;
    let done = c.post(&format!("/v1/conversations/{id}/turns"), json!({"text": "count me", "stream": false})).await;
    assert_eq!(done.unwrap().json().unwrap()["status"], "completed");
    let failed =
        c.post(&format!("/v1/conversations/{id}/turns"), json!({"text": "[mock:fail=500]", "stream": false})).await;
    assert!(failed.unwrap().json().unwrap()["error"].is_object());
    let after = String::from_utf8(c.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    let moved = |sample: &str| metric(&after, sample) - metric(&before, sample);
    assert_eq!(moved("codex_pool_turns_started_total"), 2.0);
    assert_eq!(metric(&after, "codex_pool_turns_completed_total{status=\"completed\"}"), 1.0);
    assert_eq!(metric(&after, "codex_pool_turns_failed_total{reason=\"model_error\"}"), 1.0);
    assert_eq!(moved("codex_pool_turn_duration_seconds_count"), 2.0);
    assert_eq!(moved("codex_pool_turn_first_token_seconds_count"), 1.0);
    assert_eq!(metric(&after, "codex_pool_processes{state=\"ready\"}"), 1.0);
    assert_eq!(metric(&after, "codex_pool_loaded_threads"), 1.0);
    assert_eq!(
        metric(
            &after,
            "codex_pool_http_requests_total{route=\"/v1/conversations/{id}/turns\",method=\"POST\",status=\"200\"}"
        ),
        2.0
    );
    assert!(after.ends_with('\n') && after.contains("le=\"+Inf\""));
    // A released conversation is rebuilt on its next turn: counted.
    c.post(&format!("/v1/conversations/{id}/release"), json!({})).await.unwrap();
    c.post(&format!("/v1/conversations/{id}/turns"), json!({"text": "back", "stream": false})).await.unwrap();
    let last = String::from_utf8(c.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    assert_eq!(metric(&last, "codex_pool_rebuilds_total"), 1.0);
    svc.stop().await;
}
