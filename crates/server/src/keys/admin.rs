//! The operator's routes for API keys: `POST /v1/keys` (create: its secret, shown once),
//! `GET /v1/keys` (every key, with its usage), `DELETE /v1/keys/{id}` (revoke, by id or name),
//! `GET /v1/keys/{id}/usage`. An API key gets 403 on them ([`super::guard`]).

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use codex_pool_store::{ApiKey, KeyLimits};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{OpenApi, ToSchema};

/// The routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/keys", get(list).post(create))
        .route("/v1/keys/{id}", delete(revoke))
        .route("/v1/keys/{id}/usage", get(usage))
}

/// Their part of the OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(create, list, revoke, usage))]
pub(crate) struct KeysDoc;

/// A new key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKey {
    /// Its name: unique, 1 to 64 letters, digits, `-`, `_` or `.` (metrics are labelled with it).
    pub(crate) name: String,
    /// Turns of its conversations running at once on one node.
    pub(crate) max_running_turns: Option<u32>,
    /// Conversations it may hold in the store (all nodes).
    pub(crate) max_conversations: Option<u64>,
    /// Turns it may start per minute (all nodes).
    pub(crate) turns_per_minute: Option<u32>,
}

/// A key's limits (`null`: none).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Limits {
    /// Turns of its conversations running at once on one node.
    pub(crate) max_running_turns: Option<u32>,
    /// Conversations it may hold in the store.
    pub(crate) max_conversations: Option<u64>,
    /// Turns it may start per minute.
    pub(crate) turns_per_minute: Option<u32>,
}

/// A key, never its secret (but once, when it is created).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Key {
    /// Its id (`key_...`).
    pub(crate) id: String,
    /// Always `api_key`.
    pub(crate) object: &'static str,
    /// Its name.
    pub(crate) name: String,
    /// The first 12 characters of its secret.
    pub(crate) prefix: String,
    /// The secret: in the answer to its creation only; keep it, it is not shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) secret: Option<String>,
    /// When it was created (Unix seconds).
    pub(crate) created_at: i64,
    /// When a request last carried it (Unix seconds; written at most once a minute).
    pub(crate) last_used_at: Option<i64>,
    /// When it was revoked (Unix seconds).
    pub(crate) revoked_at: Option<i64>,
    /// Its limits.
    pub(crate) limits: Limits,
    /// Its usage (in the list and the usage route).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) usage: Option<Usage>,
}

/// What a key's conversations used, on every node, since it was created.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Usage {
    /// Turns that ended.
    pub(crate) turns: u64,
    /// Turns that failed, by reason.
    pub(crate) failures: BTreeMap<String, u64>,
    /// Input tokens the model reported.
    pub(crate) input_tokens: u64,
    /// Of them, cached.
    pub(crate) cached_input_tokens: u64,
    /// Output tokens the model reported.
    pub(crate) output_tokens: u64,
    /// Conversations it holds now.
    pub(crate) conversations: u64,
}

/// Keys, by name.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct KeyList {
    /// Always `list`.
    pub(crate) object: &'static str,
    /// The keys, revoked ones too.
    pub(crate) data: Vec<Key>,
}

impl Key {
    fn of(key: ApiKey, secret: Option<String>, usage: Option<Usage>) -> Self {
        let secs = |ms: i64| ms / 1000;
        Key {
            id: key.id,
            object: "api_key",
            name: key.name,
            prefix: key.prefix,
            secret,
            created_at: secs(key.created_at_ms),
            last_used_at: key.last_used_at_ms.map(secs),
            revoked_at: key.revoked_at_ms.map(secs),
            limits: Limits {
                max_running_turns: key.limits.max_running_turns,
                max_conversations: key.limits.max_conversations,
                turns_per_minute: key.limits.turns_per_minute,
            },
            usage,
        }
    }
}

async fn usage_of(state: &AppState, key: &ApiKey) -> Result<Usage, ApiError> {
    let store = state.pool.store().keys();
    let counts = store.key_usage(&key.id).await?;
    let get = |what: &str| counts.get(what).copied().unwrap_or(0);
    use codex_pool_store::usage as u;
    let failures = counts
        .iter()
        .filter_map(|(what, n)| what.strip_prefix(u::FAILURES_PREFIX).map(|reason| (reason.to_owned(), *n)))
        .collect();
    Ok(Usage {
        turns: get(u::TURNS),
        failures,
        input_tokens: get(u::INPUT_TOKENS),
        cached_input_tokens: get(u::CACHED_INPUT_TOKENS),
        output_tokens: get(u::OUTPUT_TOKENS),
        conversations: store.count_owned(&key.id).await?,
    })
}

async fn find(state: &AppState, id_or_name: &str) -> Result<ApiKey, ApiError> {
    let keys = state.pool.store().keys().list_keys().await?;
    keys.into_iter()
        .find(|k| k.id == id_or_name || k.name == id_or_name)
        .ok_or_else(|| ApiError::not_found(format!("no API key {id_or_name:?}; GET /v1/keys lists them")))
}

/// Creates an API key: its secret is in this answer only.
#[utoipa::path(post, path = "/v1/keys", request_body = CreateKey, tag = "keys",
    responses((status = 201, body = Key), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, Json<Key>), ApiError> {
    codex_pool_store::check_key_name(&body.name).map_err(ApiError::invalid)?;
    let limits = KeyLimits {
        max_running_turns: body.max_running_turns,
        max_conversations: body.max_conversations,
        turns_per_minute: body.turns_per_minute,
    };
    let (key, secret) = ApiKey::generate(body.name, limits).map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("no randomness for a key: {e}"))
    })?;
    match state.pool.store().keys().create_key(&key).await {
        Ok(()) => {}
        Err(e @ codex_pool_store::StoreError::KeyNameTaken { .. }) => {
            return Err(ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()))
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(key = %key.id, name = %key.name, "API key created");
    Ok((StatusCode::CREATED, Json(Key::of(key, Some(secret), None))))
}

/// Lists the API keys, revoked ones too, each with its usage.
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, body = KeyList), (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<KeyList>, ApiError> {
    let mut data = Vec::new();
    for key in state.pool.store().keys().list_keys().await? {
        let usage = usage_of(&state, &key).await?;
        data.push(Key::of(key, None, Some(usage)));
    }
    Ok(Json(KeyList { object: "list", data }))
}

/// Revokes an API key (by id or name): refused on every node within a second. Its
/// conversations stay, the operator's to read or delete.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "The key's id or name")),
    responses((status = 200, body = Key), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn revoke(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Key>, ApiError> {
    let key = state
        .pool
        .store()
        .keys()
        .revoke_key(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no API key {id:?}; GET /v1/keys lists them")))?;
    tracing::info!(key = %key.id, name = %key.name, "API key revoked");
    Ok(Json(Key::of(key, None, None)))
}

/// A key's usage: turns, failures by reason, tokens, conversations (every node's).
#[utoipa::path(get, path = "/v1/keys/{id}/usage", tag = "keys",
    params(("id" = String, Path, description = "The key's id or name")),
    responses((status = 200, body = Usage), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn usage(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Usage>, ApiError> {
    let key = find(&state, &id).await?;
    Ok(Json(usage_of(&state, &key).await?))
}
