//! `POST /v1/chat/completions`: Chat Completions on the pool. The request's messages but the
//! last are matched against the transcripts of the conversations this route runs
//! ([`transcripts`](crate::openai::transcripts), an index in the store): when they are one's, the last
//! (user) message runs as its next turn, on its codex thread; otherwise a new conversation
//! starts, its system and developer messages as its instructions and the earlier messages given
//! to codex as history. Either way the model is sent each message once.

use crate::events::{ApiEvent, FailureKind};
use crate::metrics::ChatOutcome;
use crate::openai::error::{Fields, OpenAiBody, OpenAiError};
use crate::openai::input::{check_items, transcript, Role, Transcript};
use crate::openai::now_secs;
use crate::openai::reply::{self, Ending, Render, Reply, Step};
use crate::openai::responses::{room, served_model};
use crate::openai::transcripts::{self, TranscriptHead, CREATED_BY};
use crate::openai::wire::{self, chat_chunk, chat_completion, chat_usage};
use crate::runs::{EndWork, OnEnd};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use codex_pool::{ConversationId, PoolError, PoolTurn, Profile};
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::types::UserInput;
use codex_pool_store::TranscriptKey;
use serde_json::{json, Map, Value};
use std::time::Instant;

/// The fields `POST /v1/chat/completions` reads: those its request shape documents.
static KNOWN: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(wire::fields_of::<wire::CreateChatCompletion>);

/// Why a field OpenAI has is refused here.
fn why(field: &str) -> &'static str {
    match field {
        "tools" | "tool_choice" | "functions" | "function_call" | "parallel_tool_calls" => {
            "conversations here have no tools"
        }
        "temperature"
        | "top_p"
        | "max_tokens"
        | "max_completion_tokens"
        | "frequency_penalty"
        | "presence_penalty"
        | "logit_bias"
        | "seed"
        | "stop"
        | "logprobs"
        | "top_logprobs"
        | "response_format"
        | "reasoning_effort"
        | "verbosity"
        | "modalities"
        | "audio"
        | "prediction" => "codex chooses sampling, output limits and formats itself",
        _ => "the pool cannot honour it",
    }
}

/// Answers a chat completion, streamed (chunks, then `[DONE]`) or whole. A client that goes
/// away does not cut the turn, and its conversation goes on with the reply.
#[utoipa::path(post, path = "/v1/chat/completions", request_body = wire::CreateChatCompletion, tag = "openai",
    responses(
        (status = 200, description = "The chat completion (JSON), or its chunks (`text/event-stream`) with `stream: true`",
         content_type = "application/json", body = Object),
        (status = 400, body = crate::openai::error::OpenAiErrorBody), (status = 429, body = crate::openai::error::OpenAiErrorBody),
        (status = 502, body = crate::openai::error::OpenAiErrorBody), (status = 503, body = crate::openai::error::OpenAiErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    OpenAiBody(body): OpenAiBody,
) -> Result<Response, OpenAiError> {
    state.ready()?;
    let begun = Instant::now();
    let mut f = Fields::new(body, &KNOWN, why)?;
    let model = f.string("model")?.ok_or_else(|| OpenAiError::invalid("model", "`model` is required"))?;
    let messages = match f.take("messages") {
        Some(Value::Array(messages)) => messages,
        Some(_) => return Err(OpenAiError::invalid("messages", "`messages` is a list of messages")),
        None => return Err(OpenAiError::invalid("messages", "`messages` is required")),
    };
    let stream = f.boolean("stream")?.unwrap_or(false);
    let include_usage = stream_options(f.take("stream_options"), stream)?;
    if f.take("n").is_some_and(|n| n != json!(1)) {
        return Err(OpenAiError::unsupported("n", "one choice per request: a conversation has one reply"));
    }
    if f.boolean("store")? == Some(true) {
        return Err(OpenAiError::unsupported(
            "store",
            "stored chat completions are not offered; the transcript is kept as a conversation (/v1/conversations)",
        ));
    }
    check_items(&messages, "messages", state.max_input_items)
        .inspect_err(|_| state.metrics.limit_refused("max_input_items"))?;
    let said = transcript(&messages, "messages")?;
    state.check_settings(
        &[("messages", said.system.as_deref()), ("messages", said.developer.as_deref())],
        None,
        false,
    )?;
    let served = served_model(&state, Some(model.clone()))?;
    let room = room(&state)?;
    let head = TranscriptHead { model: &model, system: said.system.as_deref(), developer: said.developer.as_deref() };
    let key = transcripts::key(&head, &said.history);
    let (id, turn, outcome, turns) = start(&state, key, &said, served).await?;
    state.metrics.chat_request(outcome);
    let completion_id = format!("chatcmpl-{id}_{}", turn.turn_id());
    let on_end = reindex(&state, (key, turns), id, said, model.clone());
    let log = state.runs.run_with(turn, room, begun, Some(on_end));
    let created = now_secs();
    if stream {
        let render = Chunks { id: completion_id, created, model, include_usage };
        return Ok(reply::sse(log, render).into_response());
    }
    let reply = Reply::of(&log.wait_all().await);
    match reply.ending() {
        Some(Ending::Completed { usage, .. }) => {
            Ok(Json(chat_completion(&completion_id, created, &model, &reply.text(), usage)).into_response())
        }
        Some(Ending::Failed { kind, message }) => Err(failed(*kind, message)),
        None => Err(failed(FailureKind::Internal, "the turn ended without an end")),
    }
}

fn failed(kind: FailureKind, message: &str) -> OpenAiError {
    OpenAiError::new(StatusCode::BAD_GATEWAY, Some(kind.as_str()), format!("the turn failed ({kind}): {message}"))
}

/// `stream_options`: only `include_usage`, only when streaming.
fn stream_options(options: Option<Value>, stream: bool) -> Result<bool, OpenAiError> {
    let Some(options) = options else { return Ok(false) };
    if !stream {
        return Err(OpenAiError::invalid("stream_options", "`stream_options` goes with `stream: true`"));
    }
    let Value::Object(options) = options else {
        return Err(OpenAiError::invalid("stream_options", "`stream_options` is an object"));
    };
    let mut include_usage = false;
    for (key, value) in options {
        match (key.as_str(), value) {
            ("include_usage", Value::Bool(b)) => include_usage = b,
            (_, Value::Null) | ("include_obfuscation", Value::Bool(false)) => {}
            (key, _) => {
                return Err(OpenAiError::unsupported(format!("stream_options.{key}"), "only `include_usage` is"))
            }
        }
    }
    Ok(include_usage)
}

/// Starts the turn: next in the conversation whose transcript the request extends, or first in
/// a new conversation given the earlier messages.
async fn start(
    state: &AppState,
    key: TranscriptKey,
    said: &Transcript,
    model: Option<String>,
) -> Result<(ConversationId, PoolTurn, ChatOutcome, u64), OpenAiError> {
    let input = vec![UserInput::text(said.last.clone())];
    if let Some((id, turns)) = transcripts::take(&state.pool, &key).await? {
        match continue_turn(state, &id, turns, input.clone()).await {
            Ok(Some(turn)) => return Ok((id, turn, ChatOutcome::Continued, turns)),
            // Gone, or gone on without the transcript: a new conversation takes over.
            Ok(None) => {}
            // A turn runs on it through the native API: a new conversation, this one kept.
            Err(PoolError::ThreadBusy(_)) => transcripts::put(&state.pool, key, id, turns).await,
            // Any other error (another node serves it, the store failed): the entry goes back,
            // so the request tried again, here or on that node, finds it.
            Err(e) => {
                transcripts::put(&state.pool, key, id, turns).await;
                return Err(e.into());
            }
        }
    }
    let settings = ThreadSettings {
        base_instructions: said.system.clone(),
        developer_instructions: said.developer.clone(),
        model,
        ..ThreadSettings::default()
    };
    let mut metadata = Map::new();
    metadata.insert(CREATED_BY.0.to_owned(), json!(CREATED_BY.1));
    let id = state.pool.create_thread_with_history(settings, Profile::Chat, metadata, said.history_items()).await?;
    match state.pool.start_turn(&id, input, crate::api::turns::options()).await {
        Ok(turn) => Ok((id, turn, ChatOutcome::New, 0)),
        Err(e) => {
            let _ = state.pool.delete_thread(&id).await;
            Err(e.into())
        }
    }
}

/// The next turn of a conversation a transcript's entry named, if it is as the transcript left
/// it (`turns` turns): a turn through the native API since would be news to the client. `None`
/// when it is not, or was deleted.
async fn continue_turn(
    state: &AppState,
    id: &ConversationId,
    turns: u64,
    input: Vec<UserInput>,
) -> Result<Option<PoolTurn>, PoolError> {
    match state.pool.conversation(id).await? {
        Some(info) if info.record.turns == turns => {}
        Some(_) => {
            tracing::debug!(conversation = %id, "a chat conversation went on elsewhere; starting a new one");
            return Ok(None);
        }
        None => return Ok(None),
    }
    match state.pool.start_turn(id, input, crate::api::turns::options()).await {
        Ok(turn) => Ok(Some(turn)),
        // Deleted meanwhile.
        Err(PoolError::UnknownThread(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Once the turn has ended (before its end reaches the client), indexes the conversation under
/// its transcript: with the new message and the reply when the turn completed; as it was when
/// the turn left nothing (aborted); not at all when it holds a failed or interrupted turn that no
/// client transcript will match. `before` is the transcript's key and the conversation's turns
/// before this one.
fn reindex(
    state: &AppState,
    before: (TranscriptKey, u64),
    id: ConversationId,
    said: Transcript,
    model: String,
) -> OnEnd {
    let (key, turns_before) = before;
    let pool = state.pool.clone();
    Box::new(move |events: &[std::sync::Arc<ApiEvent>]| -> EndWork {
        let reply = Reply::of(events);
        let entry = match reply.ending() {
            Some(Ending::Completed { interrupted: false, .. }) => {
                let mut turns = said.history;
                turns.push((Role::User, said.last));
                turns.push((Role::Assistant, reply.text()));
                let head = TranscriptHead {
                    model: &model,
                    system: said.system.as_deref(),
                    developer: said.developer.as_deref(),
                };
                Some((transcripts::key(&head, &turns), turns_before + 1))
            }
            // Cut short: the conversation holds nothing of the turn.
            Some(Ending::Failed { kind: FailureKind::Aborted(_) | FailureKind::EventsTooLarge, .. }) => {
                Some((key, turns_before))
            }
            // It holds a turn no client's transcript will match.
            Some(Ending::Failed { kind: FailureKind::ModelError | FailureKind::Internal, .. })
            | Some(Ending::Completed { interrupted: true, .. })
            | None => None,
        };
        Box::pin(async move {
            if let Some((key, turns)) = entry {
                transcripts::put(&pool, key, id, turns).await;
            }
        })
    })
}

/// Chat Completions chunks.
struct Chunks {
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
}

impl Chunks {
    fn chunk(&self, delta: Value, finish: Option<&str>, usage: Option<Value>) -> Event {
        let mut chunk = chat_chunk(&self.id, self.created, &self.model, delta, finish, usage);
        if self.include_usage && chunk.get("usage").is_none() {
            chunk["usage"] = Value::Null;
        }
        Event::default().data(chunk.to_string())
    }
}

impl Render for Chunks {
    fn start(&mut self) -> Vec<Event> {
        vec![self.chunk(json!({"role": "assistant", "content": ""}), None, None)]
    }

    fn step(&mut self, step: Step, _reply: &Reply) -> Vec<Event> {
        match step {
            Step::Delta(_, delta) => vec![self.chunk(json!({"content": delta}), None, None)],
            // Unreachable until this route takes `tools` (a conversation without client tools
            // makes no tool calls).
            Step::Open(_) | Step::Close(..) | Step::ToolCalls(_) => Vec::new(),
            Step::End(Ending::Completed { usage, .. }) => {
                let mut out = vec![self.chunk(json!({}), Some("stop"), None)];
                if self.include_usage {
                    out.push(self.chunk(json!({}), None, Some(chat_usage(&usage))));
                }
                out.push(Event::default().data("[DONE]"));
                out
            }
            Step::End(Ending::Failed { kind, message }) => {
                let error = serde_json::to_string(&failed(kind, &message).into_body()).unwrap_or_default();
                vec![Event::default().data(error), Event::default().data("[DONE]")]
            }
        }
    }
}
