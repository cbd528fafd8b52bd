//! Function calling on OpenAI's routes, against the real pinned `codex app-server` and the fake
//! model (`[mock:tool=NAME ARGS]` makes it call a tool; it answers `tool output: ...` after the
//! outputs): a response or a chat completion stops at the model's calls, and the outputs sent
//! back continue the same conversation, whether the client names the response it continues or
//! resends the whole transcript. The model's own requests are the oracle: each call and each
//! output reaches it exactly once.

mod common;

use codex_pool_server::client::{Client, SseEvent};
use codex_pool_testkit::*;
use common::*;
use serde_json::{json, Value};

async fn service(env: &Env) -> Running {
    Running::start(env, 1, |c| c.models = vec!["mock-model".into()]).await
}

fn weather() -> Value {
    json!({"type": "function", "name": "get_weather", "description": "The weather of a city.", "strict": true,
           "parameters": {"type": "object", "title": "Args", "additionalProperties": false,
                          "properties": {"city": {"type": "string"}}, "required": ["city"]}})
}

fn chat_tool(responses_tool: &Value) -> Value {
    let mut function = responses_tool.clone();
    function.as_object_mut().unwrap().remove("type");
    json!({"type": "function", "function": function})
}

/// The model request whose input ends with the output of `call_id`: one per round trip.
fn request_after_output(env: &Env, call_id: &str) -> Value {
    let found: Vec<Value> = env
        .mock
        .requests()
        .into_iter()
        .map(|r| r.body)
        .filter(|b| {
            let items = b["input"].as_array().cloned().unwrap_or_default();
            let mut trailing = items.iter().rev().take_while(|i| i["type"] == "function_call_output");
            trailing.any(|i| i["call_id"] == call_id)
        })
        .collect();
    assert_eq!(found.len(), 1, "one model request answers {call_id}: {found:#?}");
    found.into_iter().next().unwrap()
}

/// How many `function_call` and `function_call_output` items of `call_id` a model request has.
fn seen(body: &Value, call_id: &str) -> (usize, usize) {
    let items = body["input"].as_array().cloned().unwrap_or_default();
    let of = |kind: &str| items.iter().filter(|i| i["type"] == kind && i["call_id"] == call_id).count();
    (of("function_call"), of("function_call_output"))
}

/// The codex thread a model request came from (codex sends it as `prompt_cache_key`).
fn thread(body: &Value) -> String {
    body["prompt_cache_key"].as_str().expect("codex names its thread").to_owned()
}

fn args(call: &Value) -> Value {
    serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap()
}

async fn all(c: &Client, path: &str, body: Value) -> Vec<SseEvent> {
    let mut stream = c.stream(path, body).await.unwrap();
    let mut events = Vec::new();
    while let Some(e) = stream.next().await.unwrap() {
        events.push(e);
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_stops_at_a_call_and_its_output_continues_the_same_turn() {
    let env = Env::new().await;
    let svc = service(&env).await;
    let c = &svc.client;
    let ask = json!({"model": "mock-model", "input": "weather? [mock:tool=get_weather {\"city\":\"Oslo\"}]",
                     "tools": [weather()], "tool_choice": "auto", "include": [], "store": true});
    let first = c.post("/v1/responses", ask).await.unwrap().json().unwrap();
    assert_eq!(first["status"], "completed", "{first}");
    let call = &first["output"][0];
    assert_eq!((call["type"].as_str(), call["name"].as_str()), (Some("function_call"), Some("get_weather")), "{first}");
    assert_eq!(args(call), json!({"city": "Oslo"}));
    assert_eq!(first["tools"][0]["name"], "get_weather");
    let call_id = call["call_id"].as_str().unwrap().to_owned();
    let first_id = first["id"].as_str().unwrap().to_owned();

    let output = json!([{"type": "function_call_output", "call_id": call_id, "output": "sunny"}]);
    let next = json!({"model": "mock-model", "previous_response_id": first_id, "input": output, "tools": [weather()]});
    let second = c.post("/v1/responses", next).await.unwrap().json().unwrap();
    assert_eq!(second["output"][0]["content"][0]["text"], "tool output: sunny", "{second}");
    assert_eq!(second["id"].as_str().unwrap(), format!("{first_id}_r1"), "the same turn's next round");
    assert_eq!(second["previous_response_id"], first_id.as_str());
    // Both rounds read back.
    let again = c.get(&format!("/v1/responses/{first_id}_r1")).await.unwrap().json().unwrap();
    assert_eq!(again["output"][0]["content"][0]["text"], "tool output: sunny", "{again}");
    let back = c.get(&format!("/v1/responses/{first_id}")).await.unwrap().json().unwrap();
    assert_eq!(back["output"][0]["call_id"], call_id.as_str(), "{back}");
    // The model saw the call and its output once each.
    assert_eq!(seen(&request_after_output(&env, &call_id), &call_id), (1, 1));
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_client_resending_everything_continues_two_parallel_calls() {
    let env = Env::new().await;
    let svc = service(&env).await;
    let c = &svc.client;
    let tools = json!([weather(), {"type": "function", "name": "get_time", "parameters": {"type": "object"}}]);
    let user =
        json!({"role": "user", "content": "both [mock:tool=get_weather {\"city\":\"Oslo\"}] [mock:tool=get_time]"});
    let ask =
        json!({"model": "mock-model", "input": [user], "tools": tools, "stream": true, "instructions": "Be brief."});
    let events = all(c, "/v1/responses", ask).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    let per_call = [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ];
    let mut expected = vec!["response.created", "response.in_progress"];
    expected.extend(per_call);
    expected.extend(per_call);
    expected.push("response.completed");
    assert_eq!(kinds, expected);
    let done = &events.last().unwrap().data["response"];
    let calls = done["output"].as_array().unwrap().clone();
    assert_eq!(calls.len(), 2, "{done}");
    assert_eq!(events[3].data["delta"], calls[0]["arguments"], "the arguments streamed");
    let first_conversation = done["id"].as_str().unwrap().split('_').nth(1).unwrap().to_owned();

    // As the OpenAI Agents SDK resends it: everything, the calls with their ids and status, the
    // arguments re-serialized with other spacing.
    let mut input = vec![user.clone()];
    for call in &calls {
        let mut call = call.clone();
        call["arguments"] = json!(serde_json::to_string_pretty(&args(&call)).unwrap());
        input.push(call);
    }
    input.push(json!({"type": "function_call_output", "call_id": calls[0]["call_id"], "output": "sunny"}));
    input.push(json!({"type": "function_call_output", "call_id": calls[1]["call_id"],
                      "output": [{"type": "input_text", "text": "noon"}]}));
    let next = json!({"model": "mock-model", "input": input, "tools": tools, "instructions": "Be brief."});
    let second = c.post("/v1/responses", next).await.unwrap().json().unwrap();
    assert_eq!(second["output"][0]["content"][0]["text"], "tool output: sunny; noon", "{second}");
    assert_eq!(second["id"].as_str().unwrap().split('_').nth(1).unwrap(), first_conversation, "one conversation");
    for call in &calls {
        let id = call["call_id"].as_str().unwrap();
        assert_eq!(seen(&request_after_output(&env, id), id), (1, 1), "{id}");
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_transcript_that_grows_by_tool_calls_and_results_is_one_conversation() {
    let env = Env::new().await;
    let svc = service(&env).await;
    let c = &svc.client;
    let tools = json!([chat_tool(&weather())]);
    let user = json!({"role": "user", "content": "weather? [mock:tool=get_weather {\"city\":\"Oslo\"}]"});
    let ask = json!({"model": "mock-model", "messages": [user], "tools": tools, "parallel_tool_calls": true});
    let first = c.post("/v1/chat/completions", ask).await.unwrap().json().unwrap();
    let choice = &first["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{first}");
    assert!(choice["message"]["content"].is_null(), "{first}");
    let call = choice["message"]["tool_calls"][0].clone();
    assert_eq!((call["type"].as_str(), call["function"]["name"].as_str()), (Some("function"), Some("get_weather")));
    let call_id = call["id"].as_str().unwrap().to_owned();

    // The results, streamed back.
    let assistant = json!({"role": "assistant", "content": null, "tool_calls": [call]});
    let result = json!({"role": "tool", "tool_call_id": call_id, "content": "sunny"});
    let messages = json!([user, assistant, result]);
    let next = json!({"model": "mock-model", "messages": messages, "tools": tools, "stream": true,
                      "stream_options": {"include_usage": true}});
    let chunks = all(c, "/v1/chat/completions", next).await;
    let text: String =
        chunks.iter().filter_map(|e| e.data["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
    assert_eq!(text, "tool output: sunny");
    let finish: Vec<&str> = chunks.iter().filter_map(|e| e.data["choices"][0]["finish_reason"].as_str()).collect();
    assert_eq!(finish, ["stop"]);
    let after = request_after_output(&env, &call_id);
    assert_eq!(seen(&after, &call_id), (1, 1));

    // A call streamed: its delta names it, and the transcript goes on on the same thread.
    let mut messages = messages.as_array().unwrap().clone();
    messages.push(json!({"role": "assistant", "content": "tool output: sunny"}));
    messages.push(json!({"role": "user", "content": "and Bergen? [mock:tool=get_weather {\"city\":\"Bergen\"}]"}));
    let third = json!({"model": "mock-model", "messages": messages, "tools": tools, "stream": true});
    let chunks = all(c, "/v1/chat/completions", third).await;
    let delta = chunks.iter().find_map(|e| e.data["choices"][0]["delta"]["tool_calls"].as_array().cloned()).unwrap();
    assert_eq!((delta[0]["index"].as_u64(), delta[0]["function"]["name"].as_str()), (Some(0), Some("get_weather")));
    assert_eq!(args(&delta[0]["function"]), json!({"city": "Bergen"}));
    let finish: Vec<&str> = chunks.iter().filter_map(|e| e.data["choices"][0]["finish_reason"].as_str()).collect();
    assert_eq!(finish, ["tool_calls"]);
    let bergen = env.requests_with("and Bergen?");
    assert_eq!(bergen.len(), 1);
    assert_eq!(thread(&bergen[0]), thread(&after), "one codex thread throughout");
    assert_eq!(seen(&bergen[0], &call_id), (1, 1), "the earlier call and result once each");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_wait_refuse_a_new_message_and_a_changed_tool_list_rebuilds_the_thread() {
    let env = Env::new().await;
    let svc = service(&env).await;
    let c = &svc.client;
    let ask = json!({"model": "mock-model", "input": "weather? [mock:tool=get_weather {\"city\":\"Oslo\"}]",
                     "tools": [weather()]});
    let first = c.post("/v1/responses", ask).await.unwrap().json().unwrap();
    let call_id = first["output"][0]["call_id"].as_str().unwrap().to_owned();
    let first_id = first["id"].as_str().unwrap().to_owned();

    // A message while the call waits: 409, naming it.
    let message = json!({"model": "mock-model", "previous_response_id": first_id, "input": "never mind",
                         "tools": [weather()]});
    let refused = c.post("/v1/responses", message).await.unwrap_err();
    let codex_pool_server::client::ClientError::Status { status, body } = refused else { panic!("{refused:?}") };
    assert_eq!(status.as_u16(), 409, "{body}");
    assert_eq!(body["error"]["code"], "tool_calls_pending", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains(&call_id), "{body}");

    // The output comes with one more tool: the thread is rebuilt with both, and goes on.
    let time = json!({"type": "function", "name": "get_time", "parameters": {"type": "object"}});
    let output = json!([{"type": "function_call_output", "call_id": call_id, "output": "sunny"}]);
    let next = json!({"model": "mock-model", "previous_response_id": first_id, "input": output,
                      "tools": [weather(), time]});
    let second = c.post("/v1/responses", next).await.unwrap().json().unwrap();
    assert_eq!(second["output"][0]["content"][0]["text"], "tool output: sunny", "{second}");
    assert_eq!(second["tools"].as_array().map(Vec::len), Some(2), "{second}");
    let after = request_after_output(&env, &call_id);
    assert_eq!(seen(&after, &call_id), (1, 1));
    let names: Vec<&str> = after["tools"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.contains(&"get_time") && names.contains(&"get_weather"), "{names:?}");
    assert_eq!(second["id"].as_str().unwrap().split('_').nth(1), first_id.split('_').nth(1), "one conversation");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_go_inline_as_data_urls_in_messages_and_tool_outputs() {
    let env = Env::new().await;
    let svc = service(&env).await;
    let c = &svc.client;
    let png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
    let user = json!({"role": "user", "content": [
        {"type": "text", "text": "look [mock:tool=get_weather {\"city\":\"Oslo\"}]"},
        {"type": "image_url", "image_url": {"url": png}}]});
    let ask = json!({"model": "mock-model", "messages": [user], "tools": [chat_tool(&weather())]});
    let first = c.post("/v1/chat/completions", ask).await.unwrap().json().unwrap();
    let message = first["choices"][0]["message"].clone();
    let call_id = message["tool_calls"][0]["id"].as_str().unwrap().to_owned();
    let sent = env.requests_with("look [mock:tool");
    let image_parts = |body: &Value| {
        let items = body["input"].as_array().cloned().unwrap_or_default();
        let parts: Vec<Value> =
            items.iter().flat_map(|i| i["content"].as_array().cloned().unwrap_or_default()).collect();
        parts.iter().filter(|p| p["type"] == "input_image").count()
    };
    assert_eq!(image_parts(&sent[0]), 1, "the image reached the model");
    let result = json!({"role": "tool", "tool_call_id": call_id, "content": [
        {"type": "text", "text": "seen "}, {"type": "image_url", "image_url": {"url": png}}]});
    let next = json!({"model": "mock-model", "messages": [user, message, result], "tools": [chat_tool(&weather())]});
    let second = c.post("/v1/chat/completions", next).await.unwrap().json().unwrap();
    assert_eq!(second["choices"][0]["message"]["content"], "tool output: seen [image]", "{second}");
    // A remote URL is refused, naming where it is.
    let remote = json!({"model": "mock-model", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]});
    let refused = c.post("/v1/chat/completions", remote).await.unwrap_err();
    let codex_pool_server::client::ClientError::Status { status, body } = refused else { panic!("{refused:?}") };
    assert_eq!((status.as_u16(), body["error"]["param"].as_str()), (400, Some("messages[0].content[0].image_url.url")));
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_or_named_tool_choice_is_kept_or_the_reply_fails() {
    let env = Env::new().await;
    let svc = service(&env).await;
    let c = &svc.client;
    let time = json!({"type": "function", "name": "get_time", "parameters": {"type": "object"}});
    // `required`, and the model answers without a call: the response fails, saying so.
    let ask = json!({"model": "mock-model", "input": "just talk", "tools": [weather()], "tool_choice": "required"});
    let failed = c.post("/v1/responses", ask).await.unwrap().json().unwrap();
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["error"]["message"].as_str().unwrap().contains("tool_choice"), "{failed}");
    assert_eq!(failed["tool_choice"], "required");
    // Named: only that tool is declared to the model, and the call it makes stops the reply.
    let chat = json!({"model": "mock-model", "stream": true,
        "messages": [{"role": "user", "content": "the time [mock:tool=get_time]"}],
        "tools": [chat_tool(&weather()), chat_tool(&time)],
        "tool_choice": {"type": "function", "function": {"name": "get_time"}}});
    let chunks = all(c, "/v1/chat/completions", chat).await;
    let finish: Vec<&str> = chunks.iter().filter_map(|e| e.data["choices"][0]["finish_reason"].as_str()).collect();
    assert_eq!(finish, ["tool_calls"]);
    let sent = env.requests_with("the time [mock:tool=get_time]");
    let names: Vec<&str> = sent[0]["tools"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.contains(&"get_time") && !names.contains(&"get_weather"), "{names:?}");
    // Named, and the model answers without a call: the chat completion fails (502).
    let chat = json!({"model": "mock-model", "messages": [{"role": "user", "content": "no call"}],
        "tools": [chat_tool(&time)], "tool_choice": {"type": "function", "function": {"name": "get_time"}}});
    let refused = c.post("/v1/chat/completions", chat).await.unwrap_err();
    let codex_pool_server::client::ClientError::Status { status, body } = refused else { panic!("{refused:?}") };
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (502, Some("model_error")), "{body}");
    svc.stop().await;
}
