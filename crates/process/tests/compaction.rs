//! Context compaction on the real pinned `codex app-server` against the fake model (a custom
//! provider): what a compaction reports, and that a thread rebuilt from the compacted history
//! sends the model what the compacted thread sends, with no compaction of its own.

use codex_pool_testkit as common;

use codex_pool_process::{AppServer, TurnEvent};
use codex_pool_protocol::methods::{ThreadStartParams, TurnStartParams};
use codex_pool_protocol::types::UserInput;
use common::*;
use serde_json::{json, Value};

/// The user message codex sends to have the history summarised (its compact prompt's start).
const COMPACT_PROMPT: &str = "You are performing a CONTEXT CHECKPOINT COMPACTION.";

/// What codex puts before the summary in the user message that replaces the history.
const SUMMARY_PREFIX: &str = "Another language model started to solve this problem and produced a summary of its \
thinking process. You also have access to the state of the tools that were used by that language model. Use this to \
build on the work that has already been done and avoid duplicating work. Here is the summary produced by the other \
language model, use the information in this summary to assist with your own analysis:";

/// The compaction threshold of these tests, in tokens. codex weighs a history at about four
/// bytes a token: the whole transcript below (some 57,000 bytes with codex's context) is over it,
/// the compacted history and a turn (some 16,000 bytes) under it. A compacted history over the
/// threshold would be compacted again on every rebuild.
const LIMIT: &str = "8000";

fn message(role: &str, text: &str) -> Value {
    let kind = if role == "assistant" { "output_text" } else { "input_text" };
    json!({"type": "message", "role": role, "content": [{"type": kind, "text": text}]})
}

/// About 1,100 characters, tagged.
fn long(tag: &str) -> String {
    format!("{tag} {}", "lorem ipsum dolor sit amet ".repeat(40))
}

fn text_of(item: &Value) -> String {
    item["content"].as_array().into_iter().flatten().filter_map(|p| p["text"].as_str()).collect()
}

/// Whether a request item is context codex writes by itself for every new thread.
fn is_codex_context(item: &Value) -> bool {
    let text = text_of(item);
    item["role"] == "developer" || text.starts_with("<environment_context>") || text.starts_with("<permissions")
}

/// A request's conversation: its input without codex's own context, without ids.
fn conversation(body: &Value) -> Vec<Value> {
    let input = body["input"].as_array().cloned().unwrap_or_default();
    input
        .into_iter()
        .filter(|item| !is_codex_context(item))
        .map(|mut item| {
            if let Some(fields) = item.as_object_mut() {
                fields.remove("id");
            }
            item
        })
        .collect()
}

fn is_compaction_request(body: &Value) -> bool {
    last_user_text(body).is_some_and(|t| t.starts_with(COMPACT_PROMPT))
}

fn is_compaction_item(event: &TurnEvent) -> bool {
    matches!(event, TurnEvent::ItemStarted { item } | TurnEvent::ItemCompleted { item }
        if item["type"] == "contextCompaction")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_rebuilt_from_the_compacted_history_sends_what_the_compacted_one_does_and_does_not_compact() {
    let env = Env::new().await;
    let config = env.config().with_override("model_auto_compact_token_limit", LIMIT);
    let server = AppServer::spawn(config).await.expect("codex app-server starts");
    let codex = server.handle().clone();
    let params = ThreadStartParams { experimental_raw_events: true, ..Default::default() };

    // A thread rebuilt from a whole transcript of eight turns with long replies: over the
    // threshold, so codex compacts it before the turn (what issue 31 saw on every rebuild).
    let transcript: Vec<Value> = (1..=8)
        .flat_map(|i| {
            let said = long(&format!("H{i}"));
            [message("user", &said), message("assistant", &said.repeat(5))]
        })
        .collect();
    let whole = codex.start_thread(&params).await.unwrap().thread;
    codex.inject_items(&whole.id, transcript.clone()).await.unwrap();
    let x1 = long("X1");
    let turn = codex.start_turn(TurnStartParams::new(&whole.id, vec![UserInput::text(&x1)])).await.unwrap();
    let (text, _, events) = finish(turn).await;
    assert_eq!(text, format!("echo: {x1}"));

    // The compaction is a normal Responses request (not /responses/compact): the history, then
    // the compact prompt as the last user message, with no tools.
    let requests: Vec<Value> = env.mock.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(requests.len(), 2, "one compaction, then the turn");
    assert!(is_compaction_request(&requests[0]), "{:?}", last_user_text(&requests[0]));
    assert_eq!(requests[0]["tools"], json!([]));
    assert!(!is_compaction_request(&requests[1]));

    // What the turn reports: a contextCompaction item around the summariser's answer, reported as
    // an assistant message; the summary message that replaces the history is never reported.
    let start = events.iter().position(|e| is_compaction_item(e) && matches!(e, TurnEvent::ItemStarted { .. }));
    let end = events.iter().position(|e| is_compaction_item(e) && matches!(e, TurnEvent::ItemCompleted { .. }));
    let (start, end) = (start.expect("a contextCompaction item starts"), end.expect("and completes"));
    let during: Vec<&Value> = events[start..end]
        .iter()
        .filter_map(|e| match e {
            TurnEvent::ResponseItem { item } => Some(item),
            _ => None,
        })
        .collect();
    assert_eq!(during.len(), 1, "{during:?}");
    assert_eq!(during[0]["role"], "assistant");
    let answer = text_of(during[0]);
    assert!(answer.starts_with("summary of "), "the fake model answers a compaction with a summary: {answer}");
    let raw: Vec<&Value> = events
        .iter()
        .filter_map(|e| match e {
            TurnEvent::ResponseItem { item } => Some(item),
            _ => None,
        })
        .collect();
    assert!(!raw.iter().any(|item| text_of(item).starts_with(SUMMARY_PREFIX)), "no summary item is reported");

    // The compacted history, as the next request shows it: the user messages (all eight fit in
    // codex's budget), then the summary (the prefix, a newline, the summariser's answer), then
    // the turn. The assistant's replies are gone.
    let summary = message("user", &format!("{SUMMARY_PREFIX}\n{answer}"));
    let mut compacted: Vec<Value> = transcript.iter().filter(|item| item["role"] == "user").cloned().collect();
    compacted.push(summary);
    let mut expected = compacted.clone();
    expected.push(message("user", &x1));
    assert_eq!(conversation(&requests[1]), expected);

    // The next turn on the compacted thread: no compaction (a live thread weighs its history by
    // the usage the model reported last, which the fake model keeps at 14 tokens).
    let reply = events
        .iter()
        .rev()
        .find_map(|e| match e {
            TurnEvent::ResponseItem { item } if item["role"] == "assistant" => Some(item.clone()),
            _ => None,
        })
        .expect("the turn's reply");
    let x2 = long("X2");
    let turn = codex.start_turn(TurnStartParams::new(&whole.id, vec![UserInput::text(&x2)])).await.unwrap();
    let (_, _, events) = finish(turn).await;
    assert!(!events.iter().any(is_compaction_item), "one compaction only");

    // A new thread given the compacted history and the turn since (what a store would keep):
    // its next turn sends the same conversation, and no compaction.
    let mut kept = compacted;
    kept.push(message("user", &x1));
    kept.push(reply);
    let rebuilt = codex.start_thread(&params).await.unwrap().thread;
    codex.inject_items(&rebuilt.id, kept).await.unwrap();
    let turn = codex.start_turn(TurnStartParams::new(&rebuilt.id, vec![UserInput::text(&x2)])).await.unwrap();
    let (text, _, events) = finish(turn).await;
    assert_eq!(text, format!("echo: {x2}"));
    assert!(!events.iter().any(is_compaction_item), "the rebuilt thread does not compact");

    let requests: Vec<Value> = env.mock.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(requests.len(), 4, "no compaction request since the first");
    assert!(!requests[2..].iter().any(is_compaction_request));
    let (compacted_thread, rebuilt_thread) = (&requests[2], &requests[3]);
    assert_eq!(conversation(rebuilt_thread), conversation(compacted_thread));
    // Codex's own context is there once in each, only at another place.
    let context = |body: &Value| body["input"].as_array().into_iter().flatten().filter(|i| is_codex_context(i)).count();
    assert_eq!(context(rebuilt_thread), context(compacted_thread));
    // And no more bytes than the compacted thread sent.
    let bytes: Vec<usize> = env.mock.requests().iter().map(|r| r.body_bytes).collect();
    println!(
        "request bytes: compaction {}, its turn {}, the next turn {}, the rebuilt thread's {}",
        bytes[0], bytes[1], bytes[2], bytes[3]
    );
    assert!(bytes[3] <= bytes[2], "{bytes:?}");
    server.shutdown(SHUTDOWN).await;
}
