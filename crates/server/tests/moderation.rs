//! An answer codex marks `hide` or `block` (0.171.0: `agentMessage.moderation.display.mode`)
//! reaches no client as ordinary text, on any route: the native events say `item.moderated`
//! (with `retracted` when its deltas went out first), a native turn's result leaves its text
//! out, the Responses API answers a `refusal` part, Chat Completions `finish_reason:
//! "content_filter"`; `/metrics` counts them by mode.
//!
//! codex is the scripted app-server here, not the real binary: codex 0.171.0 sets an answer's
//! moderation from its ChatGPT backend's moderation metadata, and the fake model's Responses
//! stream cannot make it do so (tried with `openai_chatgpt_moderation_metadata` on
//! `response.completed` and on the output item, in the shapes of the schema: codex reports
//! `moderation: null` and no `turn/moderationMetadata`).

mod common;

use codex_pool::Spawner;
use codex_pool_process::BoxFuture;
use codex_pool_testkit::scripted::{message, ScriptedCodex, ScriptedTurn};
use codex_pool_testkit::Env;
use common::*;
use hyper::Method;
use serde_json::{json, Value};

const SECRET: &str = "words the moderation withholds";

async fn service(env: &Env, codex: &ScriptedCodex) -> Running {
    let codex = codex.clone();
    Running::start_with(
        env,
        move |pool| {
            pool.size = 1;
            pool.spawner = Spawner::custom(move |process| -> BoxFuture<_> {
                let codex = codex.clone();
                Box::pin(async move { codex.spawn(process).await })
            });
        },
        |_| {},
    )
    .await
}

/// codex's side of a turn whose answer it marks `mode`; `streamed`: its text went out in deltas
/// first (as codex does: the mark comes with the completed item).
fn answer_marked(turn: &ScriptedTurn, mode: &str, streamed: bool) {
    if streamed {
        turn.delta(SECRET);
    }
    let display = match mode {
        "hide" => json!({"mode": "hide", "version": 1, "replacement": {"kind": "wellbeingPromptHelpline"}}),
        "block" => json!({"mode": "block", "version": 1, "reason": {"kind": "cyber"}}),
        _ => json!({"mode": "show", "version": 1, "trustedContacts": "skip"}),
    };
    turn.complete_item(json!({
        "type": "agentMessage", "id": "msg", "text": SECRET,
        "moderation": {"moderated": true, "display": display},
    }));
    turn.record(message("user", turn.text()));
    let mut recorded = message("assistant", SECRET);
    recorded["id"] = json!("msg");
    turn.record(recorded);
    turn.complete("completed");
}

/// The body of every event but the `text.delta`s, as one string.
fn shown(events: &[codex_pool_server::client::SseEvent]) -> String {
    events.iter().filter(|e| e.event != "text.delta").map(|e| e.data.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_or_blocked_answer_reaches_no_client_as_text() {
    let env = Env::new().await;
    let codex = ScriptedCodex::new();
    let svc = service(&env, &codex).await;
    let c = svc.client.clone();

    // Native, streamed: the deltas went out, then the mark retracts them.
    let id = svc.conversation().await;
    let stream = tokio::spawn({
        let c = c.clone();
        let path = format!("/v1/conversations/{id}/turns");
        async move { all(c.stream(&path, json!({"text": "one"})).await.unwrap()).await }
    });
    answer_marked(&codex.next_turn().await, "hide", true);
    let events = stream.await.unwrap();
    let moderated: Vec<&Value> = events.iter().filter(|e| e.event == "item.moderated").map(|e| &e.data).collect();
    assert_eq!(moderated.len(), 1, "{events:?}");
    assert_eq!((moderated[0]["mode"].as_str(), moderated[0]["retracted"].as_bool()), (Some("hide"), Some(true)));
    assert_eq!(moderated[0]["item"]["text"], "");
    assert!(!events.iter().any(|e| e.event == "item.completed" && e.data["item"]["type"] == "agentMessage"));
    assert!(!shown(&events).contains(SECRET), "{events:?}");
    // Read again from its log: the retracted deltas are empty.
    let turn = events[0].data["turn_id"].as_str().unwrap();
    let conversation = events[0].data["conversation_id"].as_str().unwrap();
    let path = format!("/v1/conversations/{conversation}/turns/{turn}/events");
    let request = c.builder(Method::GET, &path).body(Default::default()).unwrap();
    let again = all(c.open(request).await.unwrap()).await;
    assert_eq!(again.len(), events.len(), "{again:?}");
    assert!(!again.iter().any(|e| e.data.to_string().contains(SECRET)), "{again:?}");
    // The stored history keeps codex's text, marked; a client reading it gets a refusal.
    let items = c.get(&format!("/v1/conversations/{conversation}/items")).await.unwrap().json().unwrap();
    let answer = items["data"].as_array().unwrap().iter().find(|i| i["item"]["role"] == "assistant").unwrap();
    assert_eq!(answer["item"]["content"][0]["type"], "refusal", "{items}");
    assert_eq!(answer["item"][codex_pool::MODERATION_FIELD], "hide", "{items}");
    assert!(!items.to_string().contains(SECRET), "{items}");
    // A thread rebuilt from the store is given the history as codex kept it, without the mark.
    let path = format!("/v1/conversations/{conversation}/release");
    c.post(&path, json!({})).await.unwrap();
    let next = tokio::spawn({
        let (c, path) = (c.clone(), format!("/v1/conversations/{conversation}/turns"));
        async move { c.post(&path, json!({"text": "after", "stream": false})).await.unwrap().json().unwrap() }
    });
    codex.next_turn().await.reply("fine");
    let _: Value = next.await.unwrap();
    let injected = codex.received_of("thread/inject_items");
    let given = injected.last().expect("a rebuild").params["items"].to_string();
    assert!(given.contains(SECRET) && !given.contains(codex_pool::MODERATION_FIELD), "{given}");

    // Native, not streamed: the result leaves the text out.
    let id = svc.conversation().await;
    let result = tokio::spawn({
        let c = c.clone();
        async move {
            c.post(&format!("/v1/conversations/{id}/turns"), json!({"text": "two", "stream": false}))
                .await
                .unwrap()
                .json()
                .unwrap()
        }
    });
    answer_marked(&codex.next_turn().await, "block", true);
    let result = result.await.unwrap();
    assert_eq!(result["text"], "", "{result}");
    assert!(!result.to_string().contains(SECRET), "{result}");

    // Responses, whole: a refusal part, no output_text.
    let answer = tokio::spawn({
        let c = c.clone();
        async move { c.post("/v1/responses", json!({"input": "three"})).await.unwrap().json().unwrap() }
    });
    answer_marked(&codex.next_turn().await, "block", false);
    let answer: Value = answer.await.unwrap();
    let content = &answer["output"][0]["content"];
    assert_eq!(content[0]["type"], "refusal", "{answer}");
    assert!(!answer.to_string().contains(SECRET), "{answer}");
    let id = answer["id"].as_str().unwrap().to_owned();
    let read = c.get(&format!("/v1/responses/{id}")).await.unwrap().json().unwrap();
    assert_eq!(read["output"][0]["content"][0]["type"], "refusal", "{read}");

    // Responses, streamed: the message ends as a refusal.
    let events = tokio::spawn({
        let c = c.clone();
        async move { all(c.stream("/v1/responses", json!({"input": "four", "stream": true})).await.unwrap()).await }
    });
    answer_marked(&codex.next_turn().await, "hide", true);
    let events = events.await.unwrap();
    let done: Vec<&Value> = events.iter().filter(|e| e.event == "response.output_item.done").map(|e| &e.data).collect();
    assert_eq!(done.len(), 1, "{events:?}");
    assert_eq!(done[0]["item"]["content"][0]["type"], "refusal");
    assert!(events.iter().any(|e| e.event == "response.refusal.done"));
    let end = events.iter().find(|e| e.event == "response.completed").expect("completed");
    assert_eq!(end.data["response"]["output"][0]["content"][0]["type"], "refusal");
    let not_deltas: String =
        events.iter().filter(|e| e.event != "response.output_text.delta").map(|e| e.data.to_string()).collect();
    assert!(!not_deltas.contains(SECRET), "{events:?}");

    // Chat Completions, whole and streamed: content_filter.
    let messages = json!([{"role": "user", "content": "five"}]);
    let chat = |stream: bool| json!({"model": "mock-model", "messages": messages, "stream": stream});
    let answer = tokio::spawn({
        let (c, body) = (c.clone(), chat(false));
        async move { c.post("/v1/chat/completions", body).await.unwrap().json().unwrap() }
    });
    answer_marked(&codex.next_turn().await, "hide", false);
    let answer: Value = answer.await.unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], "content_filter", "{answer}");
    assert_eq!(answer["choices"][0]["message"]["content"], Value::Null, "{answer}");
    let chunks = tokio::spawn({
        let (c, body) = (c.clone(), chat(true));
        async move { all(c.stream("/v1/chat/completions", body).await.unwrap()).await }
    });
    answer_marked(&codex.next_turn().await, "block", true);
    let chunks = chunks.await.unwrap();
    let finish: Vec<&str> = chunks.iter().filter_map(|e| e.data["choices"][0]["finish_reason"].as_str()).collect();
    assert_eq!(finish, ["content_filter"], "{chunks:?}");

    // An answer codex says to show is text as ever.
    let id = svc.conversation().await;
    let stream = tokio::spawn({
        let c = c.clone();
        let path = format!("/v1/conversations/{id}/turns");
        async move { all(c.stream(&path, json!({"text": "six"})).await.unwrap()).await }
    });
    answer_marked(&codex.next_turn().await, "show", true);
    let events = stream.await.unwrap();
    assert!(events.iter().any(|e| e.event == "item.completed" && e.data["item"]["text"] == SECRET), "{events:?}");
    assert!(!events.iter().any(|e| e.event == "item.moderated"));

    // Counted by mode, on every route: three of each above; the answer shown is not.
    let metrics = String::from_utf8(c.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    for mode in ["hide", "block"] {
        let line = format!("codex_pool_moderated_answers_total{{mode=\"{mode}\"}} 3");
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in\n{metrics}");
    }
    svc.stop().await;
}
