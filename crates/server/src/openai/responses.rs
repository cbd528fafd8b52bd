//! `POST /v1/responses` and `GET /v1/responses/{id}`: OpenAI's Responses API on the pool.
//!
//! A response is one turn of a conversation. Without `previous_response_id` it starts a
//! conversation (its `instructions`, leading system/developer messages, earlier turns and
//! `metadata` set it up); with one, the turn runs next in that response's conversation, on its
//! codex thread, or, when that response is not the conversation's latest, in a new conversation
//! forked from it (given the history up to it). Ids: `resp_<conversation>_<turn>`.

use crate::openai::error::{Fields, OpenAiBody, OpenAiError};
use crate::openai::input::{check_items, transcript, Transcript};
use crate::openai::reply::{self, Render, Reply, Step};
use crate::openai::wire::{self, output_message, response, text_part, ResponseHead};
use crate::openai::{now_secs, parse_response_id, response_id};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use codex_pool::{ConversationId, ConversationInfo, Fork, Profile, StoredItem, TurnOptions};
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::types::UserInput;
use codex_pool_protocol::TurnId;
use serde_json::{json, Map, Value};
use std::time::Instant;

/// The fields `POST /v1/responses` reads: those its request shape documents.
static KNOWN: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(wire::fields_of::<wire::CreateResponse>);

/// Why a field OpenAI has is refused here.
fn why(field: &str) -> &'static str {
    match field {
        "tools" | "tool_choice" | "parallel_tool_calls" | "max_tool_calls" => "conversations here have no tools",
        "temperature" | "top_p" | "max_output_tokens" | "top_logprobs" | "text" | "truncation" => {
            "codex chooses sampling, output limits and formats itself"
        }
        "conversation" => "conversations continue with `previous_response_id`",
        "background" => "a response runs while its request is open (streamed or not)",
        "reasoning" => "the reasoning effort is codex's",
        _ => "the pool cannot honour it",
    }
}

/// A model the service serves, or the default.
pub(crate) fn served_model(state: &AppState, asked: Option<String>) -> Result<Option<String>, OpenAiError> {
    state
        .model(asked)
        .map_err(|e| OpenAiError::new(StatusCode::NOT_FOUND, Some("model_not_found"), e.message()).param("model"))
}

/// Room for one more turn in the service (429 when it runs as many as it may).
pub(crate) fn room(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, OpenAiError> {
    Ok(crate::api::turns::room(state)?)
}

/// Where a response's turn runs.
struct Plan {
    conversation: ConversationId,
    /// The conversation was made for this request (deleted again if the turn cannot start).
    created: bool,
    options: TurnOptions,
    head: ResponseHead,
}

/// Creates a response: runs the turn, and streams its events (`stream: true`) or answers the
/// Response once it has ended. A client that goes away does not cut the turn.
#[utoipa::path(post, path = "/v1/responses", request_body = wire::CreateResponse, tag = "openai",
    responses(
        (status = 200, description = "The Response (JSON), or its events (`text/event-stream`) with `stream: true`",
         content_type = "application/json", body = Object),
        (status = 400, body = crate::openai::error::OpenAiErrorBody), (status = 404, body = crate::openai::error::OpenAiErrorBody),
        (status = 409, body = crate::openai::error::OpenAiErrorBody), (status = 429, body = crate::openai::error::OpenAiErrorBody),
        (status = 503, description = "Not ready; or another node serves the conversation `previous_response_id` \
         continues, and the request, forwarded to it, could not be answered (`owned_elsewhere`, `owner_unreachable`; \
         `Retry-After`)", body = crate::openai::error::OpenAiErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    OpenAiBody(body): OpenAiBody,
) -> Result<Response, OpenAiError> {
    state.ready()?;
    let begun = Instant::now();
    let mut f = Fields::new(body, &KNOWN, why)?;
    let model = f.string("model")?;
    let input =
        f.take("input").ok_or_else(|| OpenAiError::invalid("input", "`input` is required: the user's message"))?;
    let instructions = f.string("instructions")?;
    let previous = f.string("previous_response_id")?;
    let store = f.boolean("store")?.unwrap_or(true);
    let metadata = f.metadata("metadata")?;
    let stream = f.boolean("stream")?.unwrap_or(false);
    let said = match input {
        Value::String(text) => Transcript { last: text, ..Transcript::default() },
        Value::Array(items) => {
            check_items(&items, "input", state.max_input_items)
                .inspect_err(|_| state.metrics.limit_refused("max_input_items"))?;
            transcript(&items, "input")?
        }
        _ => return Err(OpenAiError::invalid("input", "`input` is a string or a list of messages")),
    };
    state.check_settings(
        &[
            ("instructions", instructions.as_deref()),
            ("input", said.system.as_deref()),
            ("input", said.developer.as_deref()),
        ],
        metadata.as_ref().map(|m| ("metadata", m)),
        true,
    )?;
    let model = served_model(&state, model)?;
    let room = match previous.as_deref().and_then(parse_response_id) {
        Some((conversation, _)) => crate::api::turns::room_for(&state, &conversation).await?,
        None => room(&state)?,
    };
    let mut plan = match previous {
        Some(previous) => continuing(&state, previous, &said, instructions, metadata, store, model).await?,
        None => starting(&state, &said, instructions, metadata, store, model).await?,
    };
    let input = vec![UserInput::text(said.last)];
    let turn = match state.pool.start_turn(&plan.conversation, input, plan.options.clone()).await {
        Ok(turn) => turn,
        Err(e) => {
            if plan.created {
                let _ = state.pool.delete_thread(&plan.conversation).await;
            }
            return Err(e.into());
        }
    };
    plan.head.turn_id = turn.turn_id().clone();
    plan.head.id = response_id(&plan.conversation, &plan.head.turn_id);
    let log = state.runs.run(turn, room, begun);
    if !store {
        let (pool, id) = (state.pool.clone(), plan.conversation.clone());
        state.runs.after_end(log.clone(), async move {
            if let Err(e) = pool.delete_thread(&id).await {
                tracing::warn!(conversation = %id, error = %e, "could not delete a `store: false` conversation");
            }
        });
    }
    if stream {
        return Ok(reply::sse(log, Responses { head: plan.head, seq: 0 }).into_response());
    }
    let reply = Reply::of(&log.wait_all().await);
    Ok(Json(response(&plan.head, reply.messages(), reply.ending())).into_response())
}

fn head(
    model: Option<String>,
    instructions: Option<String>,
    metadata: Map<String, Value>,
    store: bool,
) -> ResponseHead {
    ResponseHead {
        id: String::new(),
        turn_id: TurnId::default(),
        created_at: now_secs(),
        model: model.unwrap_or_else(|| "codex".to_owned()),
        instructions: instructions.filter(|i| !Profile::is_default_instructions(i)),
        metadata,
        previous_response_id: None,
        store,
    }
}

/// A new conversation for the response.
async fn starting(
    state: &AppState,
    said: &Transcript,
    instructions: Option<String>,
    metadata: Option<Map<String, Value>>,
    store: bool,
    model: Option<String>,
) -> Result<Plan, OpenAiError> {
    let base_instructions = match (instructions, said.system.clone()) {
        (Some(_), Some(_)) => {
            return Err(OpenAiError::unsupported(
                "instructions",
                "give the system prompt once: as `instructions` or as a system message",
            ))
        }
        (a, b) => a.or(b),
    };
    let settings = ThreadSettings {
        base_instructions: base_instructions.clone(),
        developer_instructions: said.developer.clone(),
        model: model.clone(),
        ..ThreadSettings::default()
    };
    let metadata = metadata.unwrap_or_default();
    let id =
        state.pool.create_thread_with_history(settings, Profile::Chat, metadata.clone(), said.history_items()).await?;
    Ok(Plan {
        conversation: id,
        created: true,
        options: crate::api::turns::options(),
        head: head(model, base_instructions, metadata, store),
    })
}

/// The turn after `previous`: next in its conversation, or in a fork of it.
async fn continuing(
    state: &AppState,
    previous: String,
    said: &Transcript,
    instructions: Option<String>,
    metadata: Option<Map<String, Value>>,
    store: bool,
    model: Option<String>,
) -> Result<Plan, OpenAiError> {
    let message = format!("no response {previous:?} is kept here");
    let unknown = || OpenAiError::not_found(Some("previous_response_id"), message.clone());
    if !store {
        return Err(OpenAiError::unsupported(
            "store",
            "a turn after a kept response is kept with its conversation; `store: false` only starts a conversation, \
             deleted once its turn has ended",
        ));
    }
    if said.system.is_some() || said.developer.is_some() || !said.history.is_empty() {
        return Err(OpenAiError::unsupported(
            "input",
            "with `previous_response_id`, `input` is the user's next message only (user messages)",
        ));
    }
    let (id, turn) = parse_response_id(&previous).ok_or_else(unknown)?;
    // Another node serves it: forwarded there before its history is read here for nothing.
    state.pool.check_served_here(&id).await?;
    let info = state.pool.conversation(&id).await?.ok_or_else(unknown)?;
    let record = &info.record;
    if instructions.as_ref().is_some_and(|i| Some(i) != record.settings.base_instructions.as_ref()) {
        return Err(OpenAiError::unsupported(
            "instructions",
            "a conversation's instructions are set when it starts; leave them out (or repeat them) to continue it",
        ));
    }
    if metadata.as_ref().is_some_and(|m| *m != record.metadata) {
        return Err(OpenAiError::unsupported("metadata", "metadata is the conversation's, set when it starts"));
    }
    let mut options = crate::api::turns::options();
    if model.is_some() && model != record.settings.model {
        options.model.clone_from(&model);
    }
    let mut head = head(
        model.or(record.settings.model.clone()),
        record.settings.base_instructions.clone(),
        record.metadata.clone(),
        true,
    );
    head.previous_response_id = Some(previous);
    // The conversation's latest turn, as its record says: no need to read its history.
    if record.last_turn.as_ref() == Some(&turn) {
        return Ok(Plan { conversation: id, created: false, options, head });
    }
    // An earlier response: a new conversation goes on from it, the original is left as it is.
    match state.pool.fork_at(&id, &turn).await? {
        Fork::Latest => Ok(Plan { conversation: id, created: false, options, head }),
        Fork::New(fork) => Ok(Plan { conversation: fork, created: true, options, head }),
        Fork::NoSuchTurn => Err(unknown()),
    }
}

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
    let (conversation, turn) = parse_response_id(&id).ok_or_else(unknown)?;
    let info = state.pool.conversation(&conversation).await?.ok_or_else(unknown)?;
    let kept = state.runs.log(&conversation, &turn);
    if !matches!(kept, Ok(Some(_))) {
        // The node that serves the conversation keeps its turns' events (a running turn's too):
        // asked there (forwarded), as if asked of it.
        state.pool.check_served_here(&conversation).await?;
    }
    let items = state.pool.all_items(&conversation).await?;
    let head = stored_head(&info, &id, &turn, &items);
    if let Ok(Some(log)) = kept {
        let (events, _) = log.snapshot();
        let reply = Reply::of(&events);
        return Ok(Json(response(&head, reply.messages(), reply.ending())));
    }
    let texts: Vec<String> =
        items.iter().filter(|i| i.turn_id == turn).filter_map(|i| assistant_text(&i.item)).collect();
    if !items.iter().any(|i| i.turn_id == turn) {
        return Err(unknown());
    }
    let output: Vec<Value> = texts.iter().enumerate().map(|(n, t)| output_message(&turn, n, Some(t))).collect();
    let mut body = response(&head, &[], None);
    body["status"] = json!("completed");
    body["output"] = json!(output);
    Ok(Json(body))
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
    head.created_at = record.updated_at_ms / 1000;
    head.previous_response_id =
        before.filter(|t| t.as_str() != codex_pool::INITIAL_HISTORY_TURN).map(|t| response_id(&conversation, t));
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

/// The Responses API's events, numbered.
struct Responses {
    head: ResponseHead,
    seq: u64,
}

impl Responses {
    fn event(&mut self, kind: &'static str, mut data: Value) -> Event {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        Event::default().event(kind).data(data.to_string())
    }
}

impl Render for Responses {
    fn start(&mut self) -> Vec<Event> {
        let now = response(&self.head, &[], None);
        vec![
            self.event("response.created", json!({"response": now})),
            self.event("response.in_progress", json!({"response": now})),
        ]
    }

    fn step(&mut self, step: Step, reply: &Reply) -> Vec<Event> {
        let turn = self.head.turn_id.clone();
        let at =
            |n: usize| json!({"item_id": crate::openai::message_id(&turn, n), "output_index": n, "content_index": 0});
        let with = |mut base: Value, extra: Value| {
            if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
                b.extend(e);
            }
            base
        };
        match step {
            // Unreachable until this route takes `tools` (a conversation without client tools
            // makes no tool calls).
            Step::ToolCalls(_) => Vec::new(),
            Step::Open(n) => vec![
                self.event(
                    "response.output_item.added",
                    json!({"output_index": n, "item": output_message(&turn, n, None)}),
                ),
                self.event("response.content_part.added", with(at(n), json!({"part": text_part("")}))),
            ],
            Step::Delta(n, delta) => {
                vec![self.event("response.output_text.delta", with(at(n), json!({"delta": delta, "logprobs": []})))]
            }
            Step::Close(n, text) => vec![
                self.event("response.output_text.done", with(at(n), json!({"text": text, "logprobs": []}))),
                self.event("response.content_part.done", with(at(n), json!({"part": text_part(&text)}))),
                self.event(
                    "response.output_item.done",
                    json!({"output_index": n, "item": output_message(&turn, n, Some(&text))}),
                ),
            ],
            Step::End(ending) => {
                let body = response(&self.head, reply.messages(), Some(&ending));
                vec![self.event(wire::terminal_event(&ending), json!({"response": body}))]
            }
        }
    }
}
