//! Client tools on the native API: the functions a conversation declares (`functions` when it is
//! created or with a turn), and `POST /v1/conversations/{id}/tool_outputs`, which gives the
//! outputs of the calls a turn stopped at (`tool.calls`) and streams what follows.

use crate::api::functions::{specs, Function};
use crate::error::ApiError;
use crate::events::{EventBody, FailureKind, TurnResult};
use crate::extract::ApiJson;
use crate::metrics::OutputsPath;
use crate::runs::RunLog;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use codex_pool::{ConversationId, Submitted, ToolContent, ToolOutput, TurnOptions};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use utoipa::ToSchema;

/// The outputs of tool calls a turn waits on.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ToolOutputs {
    /// One per call (the outputs of every call of a `tool.calls` event, or some of them).
    pub(crate) outputs: Vec<OutputBody>,
    /// The conversation's functions from now on, if they change (its codex thread is then
    /// rebuilt with them).
    pub(crate) functions: Option<Vec<Function>>,
    /// Stream what follows (SSE, the default), or answer one JSON object at the next pause.
    pub(crate) stream: Option<bool>,
}

/// The output of one call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutputBody {
    /// The call (`call_id` of the `tool.calls` event).
    pub(crate) call_id: String,
    /// The output: text, or a list of parts (`{"type":"text","text"}`, `{"type":"image","url"}`
    /// with a `data:` URL).
    #[schema(value_type = Object)]
    pub(crate) output: Value,
    /// `false` when the function could not run (the output says why); `true` by default.
    pub(crate) success: Option<bool>,
}

/// An output as the pool takes it; images by `data:` URL only.
fn output(body: OutputBody, at: usize) -> Result<ToolOutput, ApiError> {
    let bad = |what: &str| ApiError::invalid(format!("outputs[{at}].output: {what}"));
    let content = match body.output {
        Value::String(text) => vec![ToolContent::InputText { text }],
        Value::Array(parts) if !parts.is_empty() => parts
            .into_iter()
            .map(|part| match (part["type"].as_str(), part["text"].as_str(), part["url"].as_str()) {
                (Some("text"), Some(text), _) => Ok(ToolContent::InputText { text: text.to_owned() }),
                (Some("image"), _, Some(url)) if url.starts_with("data:") => {
                    Ok(ToolContent::InputImage { image_url: url.to_owned() })
                }
                (Some("image"), _, _) => Err(bad("an image is given inline, as a `data:` URL in `url`")),
                _ => Err(bad("a part is `{\"type\":\"text\",\"text\":...}` or `{\"type\":\"image\",\"url\":...}`")),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad("give a string, or a non-empty list of parts")),
    };
    Ok(ToolOutput { call_id: body.call_id, content, success: body.success.unwrap_or(true) })
}

/// Where the conversation's events go on after outputs: a run's log, read after an event id.
pub(crate) struct Resumed {
    /// The log.
    pub(crate) log: Arc<RunLog>,
    /// Read its events after this id.
    pub(crate) after: u64,
}

/// Gives outputs to the pool; returns where the conversation's events go on: the waiting turn's
/// log after its `tool.calls`, or the log of a new turn that continues from the store.
pub(crate) async fn submit(
    state: &AppState,
    id: &ConversationId,
    outputs: Vec<ToolOutput>,
    options: TurnOptions,
) -> Result<Resumed, ApiError> {
    let begun = std::time::Instant::now();
    // A turn that waits here holds its own room; a continuation needs some, taken first.
    let mut room = match state.pool.waits_for_tool_outputs(id) {
        true => None,
        false => Some(crate::api::turns::room_for(state, id).await?),
    };
    // A waiting turn that dies as the outputs reach it (its process killed) keeps none of
    // them: they are given again, and continue the conversation from the store.
    for _ in 0..2 {
        match state.pool.submit_tool_outputs(id, outputs.clone(), options.clone()).await? {
            Submitted::Running { turn_id } => {
                let log = state.runs.log(id, &turn_id).ok().flatten().ok_or_else(|| {
                    let message = format!("the events of turn {turn_id} are no longer kept");
                    ApiError::new(StatusCode::CONFLICT, "conflict", message)
                })?;
                let after = log.last_tool_calls();
                if !died_at_once(&log, after).await {
                    state.metrics.tool_outputs(OutputsPath::WaitingTurn, outputs.len());
                    return Ok(Resumed { log, after });
                }
                tracing::debug!(conversation = %id, %turn_id, "the waiting turn died as its outputs came; continuing from the store");
            }
            Submitted::Continued(turn) => {
                // (The waiting turn went away since it was looked for: room now, or 429 and the
                // new turn dropped, which keeps nothing: the calls stay pending.)
                let room = match room.take() {
                    Some(room) => room,
                    None => crate::api::turns::room_for(state, id).await?,
                };
                state.metrics.tool_outputs(OutputsPath::Continued, outputs.len());
                return Ok(Resumed { log: state.runs.run(*turn, room, begun), after: 0 });
            }
            _ => break,
        }
    }
    Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the tool outputs found no turn to continue"))
}

/// Whether the turn ends, aborted by the pool (its process died, the service is shutting
/// down), before anything comes of the outputs: codex took none of them then. (What codex
/// announced before it asked for them, `item.started` of the calls, says nothing either way.)
async fn died_at_once(log: &RunLog, mut after: u64) -> bool {
    while let Some(events) = log.next_after(after).await {
        for e in events {
            match &e.body {
                EventBody::ItemStarted { .. } => after = e.id,
                EventBody::TurnFailed { error, .. } => return matches!(error.kind, FailureKind::Aborted(_)),
                _ => return false,
            }
        }
    }
    false
}

/// Gives the outputs of tool calls a turn waits on (its `tool.calls` event), and streams what
/// follows: the same turn going on, or (when that turn is gone: its process died, the service
/// restarted, it waited past `--tool-call-timeout-secs`, another node now serves the
/// conversation) a new turn that continues from the store with the calls and these outputs.
/// With `"stream": false`, answers the result at the next pause (the turn's end, or more calls).
#[utoipa::path(post, path = "/v1/conversations/{id}/tool_outputs", request_body = ToolOutputs, tag = "turns",
    params(("id" = String, Path, description = "The conversation")),
    responses(
        (status = 200, description = "What follows (SSE), or its result with `stream: false`", body = TurnResult,
         content_type = "application/json"),
        (status = 400, description = "Bad outputs, an output for a call that is not pending (`unknown_tool_call`), or a continuation missing some (`missing_tool_outputs`)",
         body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
        (status = 429, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn submit_outputs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ToolOutputs>,
) -> Result<Response, ApiError> {
    state.ready()?;
    let outputs = body.outputs.into_iter().enumerate().map(|(at, o)| output(o, at)).collect::<Result<Vec<_>, _>>()?;
    let mut options = crate::api::turns::options();
    options.tools = body.functions.map(specs);
    let resumed = submit(&state, &ConversationId::from(id), outputs, options).await?;
    if body.stream.unwrap_or(true) {
        Ok(crate::api::turns::sse(resumed.log, resumed.after).into_response())
    } else {
        Ok(Json(TurnResult::from_events(&resumed.log.wait_pause(resumed.after).await)).into_response())
    }
}
