//! What an application's key may reach: not the operator's routes (403), and of conversations
//! only its own: any other answers 404 exactly as an unknown id does, so no key learns that
//! another's conversation exists.

use crate::error::ApiError;
use crate::keys::Auth;
use axum::http::StatusCode;
use codex_pool_store::{ApiKey, ConversationId};

/// Routes only the operator may use: they show every key's conversations, names and counts.
const OPERATOR_ONLY: &[&str] = &["/v1/pool", "/v1/nodes", "/metrics", "/v1/keys"];

/// Whether `path` is one of the operator's routes.
pub(crate) fn operator_only(path: &str) -> bool {
    OPERATOR_ONLY.iter().any(|p| path == *p || path.strip_prefix(p).is_some_and(|rest| rest.starts_with('/')))
}

/// The conversation a path names (`/v1/conversations/{id}[/...]`), if any.
pub(crate) fn conversation_of(path: &str) -> Option<ConversationId> {
    let rest = path.strip_prefix("/v1/conversations/")?;
    let id = rest.split('/').next().filter(|id| !id.is_empty())?;
    Some(ConversationId::from(id))
}

/// The answer for a conversation `key` may not see: the one for an unknown id.
pub(crate) fn unknown(id: &ConversationId) -> ApiError {
    ApiError::not_found(format!("no conversation {id}"))
}

/// Refuses what `key` may not reach at `path`.
pub(crate) async fn check(auth: &Auth, key: &ApiKey, path: &str) -> Result<(), ApiError> {
    if operator_only(path) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this route is the operator's; send the operator's token, not an API key",
        ));
    }
    if let Some(id) = conversation_of(path) {
        let record = auth.store().load(&id).await?;
        if record.is_none_or(|r| r.owner.as_deref() != Some(key.id.as_str())) {
            return Err(unknown(&id));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_conversation_and_the_operators_routes() {
        assert_eq!(conversation_of("/v1/conversations/abc/turns/t/events"), Some("abc".into()));
        assert_eq!(conversation_of("/v1/conversations/abc"), Some("abc".into()));
        assert_eq!(conversation_of("/v1/conversations"), None);
        assert_eq!(conversation_of("/v1/conversations/"), None);
        for path in ["/v1/pool", "/v1/nodes", "/metrics", "/v1/keys", "/v1/keys/key_1/usage"] {
            assert!(operator_only(path), "{path}");
        }
        for path in ["/v1/poolside", "/v1/conversations", "/v1/keysx", "/healthz"] {
            assert!(!operator_only(path), "{path}");
        }
    }
}
