//! Reading a turn's streamed answer from the service's native API, as the bench's clients do.

use codex_pool_server::client::Client;
use std::time::{Duration, Instant};

/// Posts `body` to `path` and reads the streamed answer to the turn's end: (time from `begun` to
/// the first text delta, reply). A turn that fails, or stops at tool calls, or a post refused,
/// gives `(None, "")`.
pub(crate) async fn streamed_reply(
    client: &Client,
    path: &str,
    body: serde_json::Value,
    begun: Instant,
) -> (Option<Duration>, String) {
    let mut events = match client.stream(path, body).await {
        Ok(events) => events,
        Err(e) => {
            tracing::warn!(error = %e, path, "the service refused a turn's request");
            return (None, String::new());
        }
    };
    let (mut ttft, mut reply) = (None, String::new());
    while let Ok(Some(event)) = events.next().await {
        match event.event.as_str() {
            "text.delta" => {
                ttft.get_or_insert_with(|| begun.elapsed());
                reply.push_str(event.data["delta"].as_str().unwrap_or_default());
            }
            "turn.completed" => return (ttft, reply),
            "turn.failed" | "tool.calls" => break,
            _ => {}
        }
    }
    (None, String::new())
}
