//! A key's limits: conversations in the store, turns per minute (the store's counter, so all
//! nodes), running turns (per node). Over one, the client gets 429 with `Retry-After`.

use crate::error::ApiError;
use crate::keys::Caller;
use crate::metrics::Metrics;
use crate::state::AppState;
use axum::http::StatusCode;
use codex_pool_store::{ApiKey, ThreadStore};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Refuses a new conversation when the key holds its `max_conversations` already (before it is
/// made: the common case costs nothing).
pub(crate) async fn new_conversation(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    let Some(key) = caller.key() else { return Ok(()) };
    conversations_within(state.pool.store().as_ref(), &state.metrics, key, 0).await
}

/// Refuses a conversation just made and owned by `key` when the key now holds more than its
/// `max_conversations` (its creator deletes it). Creates at the same moment all pass
/// [`new_conversation`]; each counts again once its own is owned, so whichever counts last sees
/// the others: the key never stays over its limit (creates racing at the limit may all be
/// refused, never all kept).
pub(crate) async fn conversation_made(
    store: &dyn ThreadStore,
    metrics: &Metrics,
    key: &ApiKey,
) -> Result<(), ApiError> {
    conversations_within(store, metrics, key, 1).await
}

/// Refuses when the key holds more than `max_conversations - 1 + new` conversations (`new`: 1
/// when one it holds is the one being made).
async fn conversations_within(
    store: &dyn ThreadStore,
    metrics: &Metrics,
    key: &ApiKey,
    new: u64,
) -> Result<(), ApiError> {
    let Some(max) = key.limits.max_conversations else { return Ok(()) };
    let held = store.keys().count_owned(&key.id).await?;
    if held + 1 > max + new {
        metrics.limit_refused("key_max_conversations");
        let held = held.saturating_sub(new);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "key_max_conversations",
            format!("this API key holds {held} conversations, its limit (max_conversations {max}); delete some first"),
        )
        .retry_after(60));
    }
    Ok(())
}

/// Whether a request may start a turn (and so counts against a key's turn limits): a message,
/// tool outputs, a compaction, a response, a chat completion.
pub(crate) fn starts_turn(method: &axum::http::Method, path: &str) -> bool {
    if method != axum::http::Method::POST {
        return false;
    }
    if path == "/v1/responses" || path == "/v1/chat/completions" {
        return true;
    }
    let Some(rest) = path.strip_prefix("/v1/conversations/") else { return false };
    matches!(rest.split('/').nth(1), Some("turns" | "tool_outputs" | "compact")) && rest.split('/').count() == 2
}

/// The requests that run turns of each key on this node now.
#[derive(Default)]
pub(crate) struct Running {
    counts: Mutex<HashMap<String, usize>>,
}

/// One request of a key's that runs a turn: counted until it is dropped (with the answer's body,
/// so a streamed turn counts until its stream ends).
pub(crate) struct RunningSlot {
    running: Arc<Running>,
    key: String,
}

impl Drop for RunningSlot {
    fn drop(&mut self) {
        let mut counts = self.running.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// Admits a request of `key` that starts a turn, or refuses it (429) when the key is over its
/// turns per minute (the store's counter: every node's) or its running turns (this node's).
pub(crate) async fn admit_turn(
    store: &dyn ThreadStore,
    running: &Arc<Running>,
    metrics: &Metrics,
    key: &ApiKey,
) -> Result<Option<RunningSlot>, ApiError> {
    let slot = match key.limits.max_running_turns {
        None => None,
        Some(max) => {
            let mut counts = running.counts.lock().unwrap_or_else(|p| p.into_inner());
            let n = counts.entry(key.id.clone()).or_default();
            if *n >= max as usize {
                drop(counts);
                metrics.limit_refused("key_max_running_turns");
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "key_max_running_turns",
                    format!(
                        "this API key runs {max} turns on this node already, its limit (max_running_turns); retry when one ends"
                    ),
                )
                .retry_after(1));
            }
            *n += 1;
            Some(RunningSlot { running: running.clone(), key: key.id.clone() })
        }
    };
    if let Some(max) = key.limits.turns_per_minute {
        let now = codex_pool_store::now_ms();
        let counted = store.keys().count_key_turn(&key.id, now / 60_000).await?;
        if counted > u64::from(max) {
            metrics.limit_refused("key_turns_per_minute");
            let retry = (60 - (now / 1000) % 60).max(1) as u64;
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "key_turns_per_minute",
                format!(
                    "this API key started {max} turns this minute, its limit (turns_per_minute); retry in {retry} s"
                ),
            )
            .retry_after(retry));
        }
    }
    Ok(slot)
}
