//! A key's limits: conversations in the store, turns per minute (the store's counter, so all
//! nodes), running turns (per node). Over one, the client gets 429 with `Retry-After`.

use crate::error::ApiError;
use crate::keys::Caller;
use crate::state::AppState;
use axum::http::StatusCode;

/// Refuses a new conversation when the key holds its `max_conversations` already.
pub(crate) async fn new_conversation(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    let Some(key) = caller.key() else { return Ok(()) };
    let Some(max) = key.limits.max_conversations else { return Ok(()) };
    let held = state.pool.store().keys().count_owned(&key.id).await?;
    if held >= max {
        state.metrics.limit_refused("key_max_conversations");
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "key_max_conversations",
            format!("this API key holds {held} conversations, its limit (max_conversations {max}); delete some first"),
        )
        .retry_after(60));
    }
    Ok(())
}
