//! A tool turn of `bench --tools` through the service's native API: the message calls one
//! function (`[mock:tool=lookup ...]`, the fake model's directive); the bench answers the call at
//! once through `tool_outputs` and reads the rest of the turn from that answer's stream.

use codex_pool_server::client::Client;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The function every tool turn calls.
pub(crate) fn lookup() -> Value {
    json!({"name": "lookup", "description": "Looks a text up.",
           "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}})
}

/// The message of a tool turn: `text`, and the fake model's directive to call `lookup` with it.
fn tool_message(text: &str) -> String {
    format!("{text} [mock:tool=lookup {}]", json!({"q": text}))
}

/// What [`drive`] takes for a tool turn's reply: the plain load's echo when the turn ended with
/// the fake model's answer to the output the bench gave (`text` itself), nothing otherwise.
fn as_echo(text: &str, reply: &str) -> String {
    if reply == format!("tool output: {text}") {
        format!("echo: {text}")
    } else {
        String::new()
    }
}

/// One tool turn through the native API: the message, its `tool.calls`, the output posted at
/// once, and the rest of the turn from that post's stream. Returns the time to the first text
/// delta and (see [`as_echo`]) the reply; an empty reply on failure.
pub(crate) async fn tool_turn(client: &Client, id: &str, text: &str) -> (Option<Duration>, String) {
    let begun = Instant::now();
    let Some(call_id) = tool_calls(client, id, text).await else { return (None, String::new()) };
    let body = json!({"outputs": [{"call_id": call_id, "output": text}]});
    let path = format!("/v1/conversations/{id}/tool_outputs");
    let (ttft, reply) = crate::reply::streamed_reply(client, &path, body, begun).await;
    (ttft, as_echo(text, &reply))
}

/// Starts a tool turn and reads its stream to the `tool.calls` event: the call id of its one
/// call to `lookup`, or `None` when it did not come (the stream is then dropped; the service
/// keeps the turn's events for other readers).
async fn tool_calls(client: &Client, id: &str, text: &str) -> Option<String> {
    let path = format!("/v1/conversations/{id}/turns");
    let mut events = match client.stream(&path, json!({"text": tool_message(text)})).await {
        Ok(events) => events,
        Err(e) => {
            tracing::warn!(error = %e, "turn failed to start");
            return None;
        }
    };
    while let Ok(Some(event)) = events.next().await {
        match event.event.as_str() {
            "tool.calls" => {
                let calls = event.data["calls"].as_array()?;
                return match calls.as_slice() {
                    [call] if call["name"] == "lookup" => call["call_id"].as_str().map(str::to_owned),
                    _ => None,
                };
            }
            "turn.completed" | "turn.failed" => return None,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_turn_counts_only_when_the_model_answered_the_benchs_output() {
        let text = "conversation 3 turn 1";
        assert_eq!(as_echo(text, "tool output: conversation 3 turn 1"), "echo: conversation 3 turn 1");
        assert_eq!(as_echo(text, "echo: conversation 3 turn 1"), "");
        assert_eq!(as_echo(text, "tool output: conversation 3 turn 2"), "");
    }

    #[test]
    fn the_message_calls_lookup_with_the_text() {
        assert_eq!(tool_message("c 1 t 2"), r#"c 1 t 2 [mock:tool=lookup {"q":"c 1 t 2"}]"#);
    }
}
