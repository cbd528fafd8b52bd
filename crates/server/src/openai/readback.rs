//! `GET /v1/responses/{id}`: a response read back, from its turn's events while the service
//! keeps them, else from the conversation's stored items, round by round.

use crate::openai::error::OpenAiError;
use crate::openai::reply::Reply;
use crate::openai::responses::head;
use crate::openai::wire::{self, output_message, response, ResponseHead};
use crate::openai::{parse_response_id, response_id};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::Json;
use codex_pool::{ConversationInfo, StoredItem};
use codex_pool_protocol::{ToolCall, ToolOutput, TurnId};
use serde_json::{json, Value};

/// Reads a response back: from the turn's events while the service keeps them (status and usage
/// as they were), else rebuilt from the conversation's stored items of that turn (`completed`,
/// no usage: the store keeps items only).
#[utoipa::path(get, path = "/v1/responses/{id}", tag = "openai",
    params(("id" = String, Path, description = "The response (`resp_...`)")),
    responses((status = 200, description = "The Response", body = Object),
              (status = 404, body = crate::openai::error::OpenAiErrorBody)))]
pub(crate) async fn retrieve(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, OpenAiError> {
    let unknown = || OpenAiError::not_found(None, format!("no response {id:?} is kept here"));
    let (conversation, turn, round) = parse_response_id(&id).ok_or_else(unknown)?;
    let info = state.pool.conversation(&conversation).await?.ok_or_else(unknown)?;
    if !crate::keys::caller().owns(info.record.owner.as_deref()) {
        return Err(unknown());
    }
    let kept = state.runs.log(&conversation, &turn);
    if !matches!(kept, Ok(Some(_))) {
        // The node that serves the conversation keeps its turns' events (a running turn's too):
        // asked there (forwarded), as if asked of it.
        state.pool.check_served_here(&conversation).await?;
    }
    let items = state.pool.all_items(&conversation).await?;
    let mut head = stored_head(&info, &id, &turn, &items);
    head.round = round;
    if let Ok(Some(log)) = kept {
        let (events, _) = log.snapshot();
        let rounds = events.iter().filter(|e| matches!(e.body, crate::events::EventBody::ToolCalls { .. })).count();
        if round > rounds {
            return Err(unknown());
        }
        let reply = Reply::of_round(&events, round);
        return Ok(Json(response(&head, &reply)));
    }
    if !items.iter().any(|i| i.turn_id == turn) {
        return Err(unknown());
    }
    let (texts, calls) = stored_round(&items, &turn, round).ok_or_else(unknown)?;
    let mut output: Vec<Value> =
        texts.iter().enumerate().map(|(n, t)| output_message(&turn, round, n, Some(t))).collect();
    output.extend(calls.iter().map(wire::function_call));
    let mut body = response(&head, &Reply::default());
    body["status"] = json!("completed");
    body["output"] = json!(output);
    Ok(Json(body))
}

/// The assistant's messages and the tool calls of round `round` of a stored turn: the rounds
/// are parted by the client's tool outputs. `None` when the turn has no such round.
fn stored_round(items: &[StoredItem], turn: &TurnId, round: usize) -> Option<(Vec<String>, Vec<ToolCall>)> {
    let (mut at, mut after_outputs, mut said_any) = (0, false, false);
    let (mut texts, mut calls) = (Vec::new(), Vec::new());
    for item in items.iter().filter(|i| &i.turn_id == turn).map(|i| &i.item) {
        if ToolOutput::call_id_of(item).is_some() {
            after_outputs = true;
            continue;
        }
        if after_outputs && said_any {
            at += 1;
        }
        (after_outputs, said_any) = (false, true);
        if at == round {
            texts.extend(assistant_text(item));
            calls.extend(ToolCall::from_item(item));
        }
    }
    (round <= at).then_some((texts, calls))
}

/// What the store says of a response: its conversation's settings, and the turn before it.
fn stored_head(info: &ConversationInfo, id: &str, turn: &TurnId, items: &[StoredItem]) -> ResponseHead {
    let record = &info.record;
    let mut turns: Vec<&TurnId> = Vec::new();
    for item in items {
        if turns.last() != Some(&&item.turn_id) {
            turns.push(&item.turn_id);
        }
    }
    let before = match turns.iter().position(|t| *t == turn) {
        Some(at) => at.checked_sub(1).map(|b| turns[b]),
        None => turns.last().copied(),
    };
    let conversation = record.id.clone();
    let mut head =
        head(record.settings.model.clone(), record.settings.base_instructions.clone(), record.metadata.clone(), true);
    head.id = id.to_owned();
    head.turn_id = turn.clone();
    head.tools.clone_from(&record.settings.dynamic_tools);
    head.created_at = record.updated_at_ms / 1000;
    head.previous_response_id =
        before.filter(|t| t.as_str() != codex_pool::INITIAL_HISTORY_TURN).map(|t| response_id(&conversation, t, 0));
    head
}

/// The text of an assistant message item.
fn assistant_text(item: &Value) -> Option<String> {
    if item["type"] != "message" || item["role"] != "assistant" {
        return None;
    }
    let parts = item["content"].as_array()?;
    Some(parts.iter().filter(|p| p["type"] == "output_text").filter_map(|p| p["text"].as_str()).collect())
}
