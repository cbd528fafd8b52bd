//! `/v1/conversations`: create, list, read, release (unload from codex, keep), delete, interrupt,
//! and read a conversation's stored history.

use crate::caps::within_budget;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::policy::Asked;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use codex_pool::{ConversationId, ConversationInfo, ListCursor};
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::TurnId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};

/// The most a page holds.
const MAX_PAGE: usize = 100;

/// Items read from the store at once while a page is filled.
const ITEMS_READ_AT_ONCE: usize = 10;

/// A new conversation. Every field is optional, and these are all there are: codex's own
/// configuration is the operator's, never a client's (an unknown field is refused, naming it).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateConversation {
    /// Replaces the profile's base instructions (the system prompt).
    pub(crate) instructions: Option<String>,
    /// Developer instructions: a character to play, rules to follow.
    pub(crate) developer_instructions: Option<String>,
    /// The model: one the service serves (`GET /v1/pool` lists none; the default is the first).
    pub(crate) model: Option<String>,
    /// How hard the model reasons: `minimal`, `low`, `medium` or `high`.
    pub(crate) reasoning_effort: Option<String>,
    /// `chat` (the default: lean, no tools) or `codex` (codex's own coding agent, if the
    /// operator allows it: 403 otherwise).
    pub(crate) profile: Option<String>,
    /// MCP servers to give the conversation, by the names the operator gave them (403 for any
    /// other).
    pub(crate) tools: Option<Vec<String>>,
    /// Anything the caller wants kept with the conversation; the service never reads it.
    #[schema(value_type = Option<Object>)]
    pub(crate) metadata: Option<Map<String, Value>>,
    /// Functions the client runs: the model may call them, and its turn then waits for their
    /// outputs (`tool.calls`, then `POST .../tool_outputs`).
    pub(crate) functions: Option<Vec<crate::api::functions::Function>>,
}

/// Where codex holds a conversation now.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Placement {
    /// The process slot.
    pub(crate) slot: usize,
    /// The codex thread.
    pub(crate) codex_thread_id: String,
}

/// Who owns a conversation: the API key that created it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Owner {
    /// The key's id.
    pub(crate) key_id: String,
    /// The key's name; `null` if the store no longer has the key.
    pub(crate) key_name: Option<String>,
}

/// A conversation.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Conversation {
    /// Its id, the same for its whole life.
    pub(crate) id: String,
    /// Always `conversation`.
    pub(crate) object: &'static str,
    /// When it was created (Unix seconds).
    pub(crate) created_at: i64,
    /// When a turn last ended (Unix seconds).
    pub(crate) updated_at: i64,
    /// `chat` or `codex`.
    pub(crate) profile: String,
    /// The model.
    pub(crate) model: Option<String>,
    /// Its base instructions.
    pub(crate) instructions: Option<String>,
    /// Its developer instructions.
    pub(crate) developer_instructions: Option<String>,
    /// What its creator attached.
    #[schema(value_type = Object)]
    pub(crate) metadata: Map<String, Value>,
    /// Turns it has had.
    pub(crate) turns: u64,
    /// `idle` or `running`.
    pub(crate) state: &'static str,
    /// The running turn's id, while one runs on this node (`GET .../turns/{turn_id}/events`
    /// re-attaches to its events); `null` when none runs, or while it is being started.
    #[schema(value_type = Option<String>)]
    pub(crate) running_turn_id: Option<String>,
    /// Where codex holds it now; `null` when no process does (its next turn rebuilds it).
    pub(crate) loaded: Option<Placement>,
    /// The names of the functions the client runs for it.
    pub(crate) functions: Vec<String>,
    /// Calls of them the model made that have no output yet: `call_id`, `name`, `arguments`
    /// and `since_ms` (when the call was made).
    #[schema(value_type = Vec<Object>)]
    pub(crate) pending_tool_calls: Vec<codex_pool::PendingCall>,
    /// The API key that created it; `null`: the operator's. An application's key sees its own
    /// conversations only, so only its own id here.
    pub(crate) owner: Option<Owner>,
}

impl From<ConversationInfo> for Conversation {
    fn from(info: ConversationInfo) -> Self {
        let r = info.record;
        Conversation {
            id: r.id.to_string(),
            object: "conversation",
            created_at: r.created_at_ms / 1000,
            updated_at: r.updated_at_ms / 1000,
            profile: r.profile,
            model: r.settings.model,
            instructions: r.settings.base_instructions,
            developer_instructions: r.settings.developer_instructions,
            metadata: r.metadata,
            turns: r.turns,
            state: if info.running { "running" } else { "idle" },
            running_turn_id: None,
            loaded: info.loaded.map(|(slot, codex)| Placement { slot, codex_thread_id: codex.to_string() }),
            functions: r.settings.dynamic_tools.into_iter().map(|t| t.name).collect(),
            pending_tool_calls: r.pending_calls,
            owner: r.owner.map(|key_id| Owner { key_id, key_name: None }),
        }
    }
}

/// A page of conversations, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConversationList {
    /// Always `list`.
    pub(crate) object: &'static str,
    /// The conversations.
    pub(crate) data: Vec<Conversation>,
    /// Whether more follow.
    pub(crate) has_more: bool,
    /// Pass as `after` for the next page.
    pub(crate) next_after: Option<String>,
}

/// Paging through conversations.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// At most this many (1 to 100, default 20).
    pub(crate) limit: Option<usize>,
    /// The `next_after` of the previous page.
    pub(crate) after: Option<String>,
}

/// One item of a conversation's history.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Item {
    /// Its place in the history, from 1.
    pub(crate) seq: u64,
    /// The codex turn that recorded it.
    #[schema(value_type = String)]
    pub(crate) turn_id: TurnId,
    /// The item, as the Responses API shapes it.
    #[schema(value_type = Object)]
    pub(crate) item: Value,
}

/// A page of a conversation's history, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ItemList {
    /// Always `list`.
    pub(crate) object: &'static str,
    /// The items.
    pub(crate) data: Vec<Item>,
    /// Whether more follow.
    pub(crate) has_more: bool,
    /// Pass as `after` for the next page.
    pub(crate) next_after: Option<u64>,
}

/// Paging through a history.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ItemsQuery {
    /// At most this many (1 to 100, default 100).
    pub(crate) limit: Option<usize>,
    /// The `seq` of the last item already read (default 0).
    pub(crate) after: Option<u64>,
}

/// The outcome of an action on a conversation.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Done {
    /// The conversation.
    pub(crate) id: String,
    /// What was done: `deleted`, `released` or `interrupted`.
    pub(crate) done: &'static str,
}

fn page_size(limit: Option<usize>, default: usize) -> Result<usize, ApiError> {
    match limit.unwrap_or(default) {
        n @ 1..=MAX_PAGE => Ok(n),
        n => Err(ApiError::invalid(format!("limit {n} is out of range; use 1 to {MAX_PAGE}"))),
    }
}

/// Creates a conversation.
#[utoipa::path(post, path = "/v1/conversations", request_body = CreateConversation, tag = "conversations",
    responses((status = 201, body = Conversation), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateConversation>,
) -> Result<(StatusCode, Json<Conversation>), ApiError> {
    state.ready()?;
    state.check_settings(
        &[
            ("instructions", body.instructions.as_deref()),
            ("developer_instructions", body.developer_instructions.as_deref()),
        ],
        body.metadata.as_ref().map(|m| ("metadata", m)),
        false,
    )?;
    let settings = ThreadSettings {
        base_instructions: body.instructions,
        developer_instructions: body.developer_instructions,
        model: state.model(body.model)?,
        dynamic_tools: body.functions.map(crate::api::functions::specs).unwrap_or_default(),
        ..ThreadSettings::default()
    };
    let asked =
        Asked { profile: body.profile, reasoning_effort: body.reasoning_effort, tools: body.tools.unwrap_or_default() };
    let (settings, profile) = state.policy.apply(asked, settings)?;
    let caller = crate::keys::caller();
    crate::keys::limits::new_conversation(&state, &caller).await?;
    let id = state.pool.create_thread_with_metadata(settings, profile, body.metadata.unwrap_or_default()).await?;
    if let Err(e) = crate::keys::own(&state.pool, &state.metrics, &caller, &id).await {
        let _ = state.pool.delete_thread(&id).await;
        return Err(e);
    }
    let info = state.pool.conversation(&id).await?.ok_or_else(|| ApiError::not_found("created, then gone"))?;
    let created = with_owners(vec![info.into()], &state).await?.remove(0);
    Ok((StatusCode::CREATED, Json(created)))
}

/// Lists conversations, newest first.
#[utoipa::path(get, path = "/v1/conversations", params(ListQuery), tag = "conversations",
    responses((status = 200, body = ConversationList), (status = 400, body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<ConversationList>, ApiError> {
    let limit = page_size(query.limit, 20)?;
    let after = query.after.as_deref().map(parse_cursor).transpose()?;
    let mut page = match crate::keys::caller().key_id() {
        Some(key) => state.pool.conversations_owned(key, after, limit + 1).await?,
        None => state.pool.conversations(after, limit + 1).await?,
    };
    let more_stored = page.len() > limit;
    page.truncate(limit);
    let cursors: Vec<String> = page.iter().map(|c| format!("{}.{}", c.record.created_at_ms, c.record.id)).collect();
    let page = with_owners(page.into_iter().map(|c| with_running_turn(c.into(), &state)).collect(), &state).await?;
    let (data, cut) = within_budget(page, state.caps.page_bytes);
    let has_more = more_stored || cut;
    let next_after = if has_more { cursors.get(data.len().wrapping_sub(1)).cloned() } else { None };
    Ok(Json(ConversationList { object: "list", data, has_more, next_after }))
}

fn parse_cursor(text: &str) -> Result<ListCursor, ApiError> {
    let bad = || ApiError::invalid(format!("{text:?} is not a cursor; pass the `next_after` of the previous page"));
    let (ms, id) = text.split_once('.').ok_or_else(bad)?;
    Ok(ListCursor { created_at_ms: ms.parse().map_err(|_| bad())?, id: ConversationId::from(id) })
}

/// Reads a conversation: its settings, state, turns and where it is loaded.
#[utoipa::path(get, path = "/v1/conversations/{id}", tag = "conversations",
    params(("id" = String, Path, description = "The conversation")),
    responses((status = 200, body = Conversation), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Conversation>, ApiError> {
    let id = ConversationId::from(id);
    let info = state.pool.conversation(&id).await?.ok_or_else(|| unknown(&id))?;
    let conversation = with_owners(vec![with_running_turn(info.into(), &state)], &state).await?.remove(0);
    Ok(Json(conversation))
}

/// The conversations with their owners named, as the caller may see them: the operator every
/// key's id and name; a key its own only (never another key's id, should one be there).
async fn with_owners(mut list: Vec<Conversation>, state: &AppState) -> Result<Vec<Conversation>, ApiError> {
    let names: HashMap<String, String> = match crate::keys::caller().key() {
        Some(key) => {
            for conversation in &mut list {
                if conversation.owner.as_ref().is_some_and(|o| o.key_id != key.id) {
                    conversation.owner = None;
                }
            }
            HashMap::from([(key.id.clone(), key.name.clone())])
        }
        None if list.iter().any(|c| c.owner.is_some()) => {
            state.pool.store().keys().list_keys().await?.into_iter().map(|k| (k.id, k.name)).collect()
        }
        None => HashMap::new(),
    };
    for owner in list.iter_mut().filter_map(|c| c.owner.as_mut()) {
        owner.key_name = names.get(&owner.key_id).cloned();
    }
    Ok(list)
}

/// The conversation with its running turn's id, while it runs.
fn with_running_turn(mut conversation: Conversation, state: &AppState) -> Conversation {
    if conversation.state == "running" {
        let id = ConversationId::from(conversation.id.as_str());
        conversation.running_turn_id = state.runs.running_turn(&id).map(|t| t.to_string());
    }
    conversation
}

fn unknown(id: &ConversationId) -> ApiError {
    ApiError::not_found(format!("no conversation {id}"))
}

/// An item as clients read it: an answer codex marked `hide` or `block` (the store's
/// [`codex_pool::MODERATION_FIELD`]) has its content replaced by one `refusal` part; the store
/// keeps the text, as codex does.
fn withheld(mut item: Value) -> Value {
    let mark = item.get(codex_pool::MODERATION_FIELD).and_then(Value::as_str);
    if let Some(mode) =
        mark.map(|m| codex_pool_protocol::Withheld::parse(m).unwrap_or(codex_pool_protocol::Withheld::Hide))
    {
        item["content"] = Value::Array(vec![crate::openai::wire::refusal_part(mode)]);
    }
    item
}

/// Reads a page of a conversation's stored history.
#[utoipa::path(get, path = "/v1/conversations/{id}/items", params(("id" = String, Path, description = "The conversation"), ItemsQuery),
    tag = "conversations",
    responses((status = 200, body = ItemList), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn items(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ItemsQuery>,
) -> Result<Json<ItemList>, ApiError> {
    let limit = page_size(query.limit, MAX_PAGE)?;
    let id = ConversationId::from(id);
    // Read a few at a time, so that a page of large items is never all held at once beyond its
    // byte budget.
    let (mut data, mut used, mut after) = (Vec::new(), 0usize, query.after.unwrap_or(0));
    let has_more = 'page: loop {
        let want = (limit - data.len()).min(ITEMS_READ_AT_ONCE);
        let batch = state.pool.items(&id, after, want + 1).await?;
        let more_stored = batch.len() > want;
        for stored in batch.into_iter().take(want) {
            let item = Item { seq: stored.seq, turn_id: stored.turn_id, item: withheld(stored.item) };
            let size = serde_json::to_vec(&item).map_or(0, |v| v.len() + 1);
            if !data.is_empty() && used + size > state.caps.page_bytes {
                break 'page true;
            }
            (used, after) = (used + size, item.seq);
            data.push(item);
        }
        if !more_stored {
            break false;
        }
        if data.len() == limit {
            break true;
        }
    };
    let next_after = data.last().filter(|_| has_more).map(|i| i.seq);
    Ok(Json(ItemList { object: "list", data, has_more, next_after }))
}

/// Deletes a conversation: gone from codex and from the store, with its history.
#[utoipa::path(delete, path = "/v1/conversations/{id}", tag = "conversations",
    params(("id" = String, Path, description = "The conversation")),
    responses((status = 200, body = Done), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Done>, ApiError> {
    state.ready()?;
    let id = ConversationId::from(id);
    // Where it is served, so that node unloads it (forwarded there).
    state.pool.check_served_here(&id).await?;
    state.pool.delete_thread(&id).await?;
    Ok(Json(Done { id: id.to_string(), done: "deleted" }))
}

/// Releases a conversation: codex unloads it, the store keeps it; its next turn rebuilds it.
#[utoipa::path(post, path = "/v1/conversations/{id}/release", tag = "conversations",
    params(("id" = String, Path, description = "The conversation")),
    responses((status = 200, body = Done), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn release(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Done>, ApiError> {
    state.ready()?;
    let id = ConversationId::from(id);
    // Where it is loaded (forwarded there): this node has nothing of it to release.
    state.pool.check_served_here(&id).await?;
    state.pool.release_thread(&id).await?;
    Ok(Json(Done { id: id.to_string(), done: "released" }))
}

/// Interrupts the conversation's running turn (which then ends with `turn.completed`, status
/// `interrupted`).
#[utoipa::path(post, path = "/v1/conversations/{id}/interrupt", tag = "turns",
    params(("id" = String, Path, description = "The conversation")),
    responses((status = 200, body = Done),
              (status = 503, description = "Not ready; or another node serves the conversation and the request, forwarded to it, could not be answered (`owned_elsewhere`, `owner_unreachable`; `Retry-After`)",
               body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn interrupt(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Done>, ApiError> {
    state.ready()?;
    let id = ConversationId::from(id);
    state.pool.interrupt_turn(&id).await?;
    Ok(Json(Done { id: id.to_string(), done: "interrupted" }))
}
