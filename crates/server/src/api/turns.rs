//! Turns: `POST /v1/conversations/{id}/turns` starts one and streams its events (SSE), or answers
//! its result at once with `"stream": false`; `GET .../turns/{turn_id}/events` re-attaches to a
//! turn's events after `Last-Event-ID`.

use crate::error::ApiError;
use crate::events::{ApiEvent, TurnResult};
use crate::extract::{ApiJson, ApiQuery};
use crate::runs::{Expired, RunLog, RunRefused};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use codex_pool::{ConversationId, TurnOptions};
use codex_pool_protocol::types::UserInput;
use codex_pool_protocol::TurnId;
use futures_util::stream::Stream;
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;
use utoipa::{IntoParams, ToSchema};

/// A new turn: the user's message, as `text` or as `input` items (not both).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartTurn {
    /// The message, as plain text.
    pub(crate) text: Option<String>,
    /// The message, as items (text and images).
    pub(crate) input: Option<Vec<InputItem>>,
    /// Stream the events (SSE, the default), or answer one JSON object at the turn's first
    /// pause: its end, or the client tool calls it waits on (status `tool_calls`).
    pub(crate) stream: Option<bool>,
    /// The conversation's functions from this turn on, if they change (its codex thread is then
    /// rebuilt with them).
    pub(crate) functions: Option<Vec<crate::api::functions::Function>>,
}

/// One piece of a message.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum InputItem {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// An image, inline as a `data:` URL (`data:image/png;base64,...`); codex takes no remote
    /// image, so any other URL is refused (400).
    Image {
        /// The image's URL.
        url: String,
    },
}

/// Where to pick a turn's events up.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// The id of the last event already read (as `Last-Event-ID`; the header wins).
    pub(crate) after: Option<u64>,
}

/// Starts a turn. Streams `text/event-stream` (events `turn.started`, `item.started`,
/// `item.completed`, `text.delta`, `reasoning.delta`, `item.moderated` (an answer codex marks
/// `hide` or `block`, in place of its `item.completed`, its text withheld), then exactly one of
/// `turn.completed` and `turn.failed`, each with an `id`), or, with `"stream": false`, answers the turn's result. A
/// client that goes away does not cut the turn: it runs to its end and is recorded.
#[utoipa::path(post, path = "/v1/conversations/{id}/turns", request_body = StartTurn, tag = "turns",
    params(("id" = String, Path, description = "The conversation")),
    responses(
        (status = 200, description = "The turn's events (SSE), or its result with `stream: false`", body = TurnResult,
         content_type = "application/json"),
        (status = 503, description = "Not ready; or another node serves the conversation and the request, forwarded to it, could not be answered (`owned_elsewhere`, `owner_unreachable`; `Retry-After`)",
         body = crate::error::ErrorBody),
        (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody),
        (status = 429, body = crate::error::ErrorBody)))]
pub(crate) async fn start(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<StartTurn>,
) -> Result<Response, ApiError> {
    state.ready()?;
    let begun = std::time::Instant::now();
    let input = match (body.text, body.input) {
        (Some(text), None) => vec![UserInput::text(text)],
        (None, Some(items)) if items.len() > state.max_input_items => {
            state.metrics.limit_refused("max_input_items");
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "too_many_items",
                format!(
                    "`input` has {} items, over the limit of {} (--max-input-items); join text items into one",
                    items.len(),
                    state.max_input_items
                ),
            ));
        }
        (None, Some(items)) if !items.is_empty() => items
            .into_iter()
            .map(|i| match i {
                InputItem::Text { text } => UserInput::Text { text },
                InputItem::Image { url } => UserInput::Image { url },
            })
            .collect(),
        _ => return Err(ApiError::invalid("send the message as `text` or as a non-empty `input`, not both")),
    };
    let id = ConversationId::from(id);
    let room = room_for(&state, &id).await?;
    let mut options = options();
    options.tools = body.functions.map(crate::api::functions::specs);
    let turn = state.pool.start_turn(&id, input, options).await?;
    let log = state.runs.run(turn, room, begun);
    if body.stream.unwrap_or(true) {
        Ok(sse(log, 0).into_response())
    } else {
        Ok(Json(TurnResult::from_events(&log.wait_pause(0).await)).into_response())
    }
}

/// How to answer a compaction.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Compact {
    /// Stream its events (SSE, the default), or answer its result once it has ended.
    pub(crate) stream: Option<bool>,
}

/// Has codex compact the conversation's history now, whatever its threshold: a turn codex runs
/// by itself (events `turn.started`, a `contextCompaction` item, then the end). Its summary is
/// kept with the conversation, and later rebuilds start from it rather than from the whole
/// transcript.
#[utoipa::path(post, path = "/v1/conversations/{id}/compact", request_body = Compact, tag = "turns",
    params(("id" = String, Path, description = "The conversation")),
    responses(
        (status = 200, description = "Its events (SSE), or its result with `stream: false`", body = TurnResult,
         content_type = "application/json"),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
        (status = 429, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn compact(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Compact>,
) -> Result<Response, ApiError> {
    state.ready()?;
    let begun = std::time::Instant::now();
    let id = ConversationId::from(id);
    let room = room_for(&state, &id).await?;
    let turn = state.pool.compact(&id).await?;
    let log = state.runs.run(turn, room, begun);
    if body.stream.unwrap_or(true) {
        Ok(sse(log, 0).into_response())
    } else {
        Ok(Json(TurnResult::from_events(&log.wait_all().await)).into_response())
    }
}

/// Re-attaches to a turn's events: those after `Last-Event-ID` (or `after`), then the rest as
/// they come, while the turn runs and for a while after it ended.
#[utoipa::path(get, path = "/v1/conversations/{id}/turns/{turn_id}/events", tag = "turns",
    params(("id" = String, Path, description = "The conversation"), ("turn_id" = String, Path, description = "The turn"),
           ("Last-Event-ID" = Option<u64>, Header, description = "The id of the last event already read"), EventsQuery),
    responses((status = 200, description = "The turn's events (SSE)", content_type = "text/event-stream"),
              (status = 503, description = "Not ready; or another node serves the conversation and the request, forwarded to it, could not be answered (`owned_elsewhere`, `owner_unreachable`; `Retry-After`)",
               body = crate::error::ErrorBody),
              (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 410, description = "The turn's events are no longer kept (`events_expired`)",
               body = crate::error::ErrorBody)))]
pub(crate) async fn events(
    State(state): State<AppState>,
    Path((id, turn_id)): Path<(String, TurnId)>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let after = match headers.get("last-event-id") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::invalid("Last-Event-ID must be the id of an event of this turn"))?,
        None => query.after.unwrap_or(0),
    };
    let conversation = ConversationId::from(id.as_str());
    let expired = || {
        ApiError::new(
            StatusCode::GONE,
            "events_expired",
            format!(
                "the events of turn {turn_id} are no longer kept (its turn ended too long ago, newer turns needed \
                 the room, or it was too large); read what the conversation kept: GET /v1/conversations/{id}/items"
            ),
        )
    };
    let Some(log) = state.runs.log(&conversation, &turn_id).map_err(|Expired| expired())? else {
        // Turns run, and keep their events, on the node that serves the conversation.
        state.pool.check_served_here(&conversation).await?;
        return Err(ApiError::not_found(format!(
            "no events of turn {turn_id} of conversation {id} are kept (unknown, or ended too long ago)"
        )));
    };
    Ok(sse(log, after).into_response())
}

/// Room for one more turn in the service: 429 with `Retry-After` when it runs as many as it
/// may (`max_running_turns`, never more than the pool's capacity).
pub(crate) fn room(state: &AppState) -> Result<OwnedSemaphorePermit, ApiError> {
    state.runs.reserve().map_err(|RunRefused::TooMany(n)| too_many(state, n))
}

/// [`room`] for a turn of `conversation`: when this node is full, a conversation another node
/// serves is forwarded there all the same (its turn takes that node's room, not this one's).
pub(crate) async fn room_for(
    state: &AppState,
    conversation: &ConversationId,
) -> Result<OwnedSemaphorePermit, ApiError> {
    match state.runs.reserve() {
        Ok(room) => Ok(room),
        Err(RunRefused::TooMany(n)) => {
            state.pool.check_served_here(conversation).await?;
            Err(too_many(state, n))
        }
    }
}

fn too_many(state: &AppState, running: usize) -> ApiError {
    state.metrics.limit_refused("max_running_turns");
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_turns",
        format!("{running} turns already run; retry shortly"),
    )
    .retry_after(1)
}

/// The options of every turn the service starts: a turn whose process is full is refused at
/// once (429), never left waiting in the pool.
pub(crate) fn options() -> TurnOptions {
    let mut options = TurnOptions::default();
    options.refuse_when_full = true;
    options
}

/// A turn's events from after `after`, as SSE, ending after the terminal one.
pub(crate) fn sse(log: Arc<RunLog>, after: u64) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    crate::sse::from_log(log, after, AsTheyAre)
}

/// The native API's stream: each event as it is.
struct AsTheyAre;

impl crate::sse::Writer for AsTheyAre {
    fn write(&mut self, event: &ApiEvent, out: &mut VecDeque<Event>) -> bool {
        out.push_back(event.to_sse());
        false
    }
}
