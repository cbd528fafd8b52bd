//! `POST /v1/chat/completions`: Chat Completions on the pool. The request's messages but the
//! last user message (or but the trailing `tool` messages) are matched against the transcripts
//! of the conversations this route runs ([`transcripts`](crate::openai::transcripts), an index
//! in the store; tool calls and results are part of a transcript): when they are one's, the
//! last user message runs as its next turn, on its codex thread, or the tool results go to the
//! calls it waits on and the model goes on; otherwise a new conversation starts, its system and
//! developer messages as its instructions and the earlier messages given to codex as history.
//! Either way the model is sent each message once. A reply that stops at tool calls ends with
//! `finish_reason: "tool_calls"`.

use crate::events::{FailureKind, Usage};
use crate::openai::error::{Fields, OpenAiBody, OpenAiError};
use crate::openai::input::{check_items, transcript};
use crate::openai::reply::{self, Ending, Render, Reply, Step};
use crate::openai::responses::served_model;
use crate::openai::rounds::{self, Creation, Head};
use crate::openai::tools::{self, Shape};
use crate::openai::transcripts::CREATED_BY;
use crate::openai::wire::{self, chat_chunk, chat_completion, chat_tool_calls, chat_usage};
use crate::openai::{completion_id, now_secs};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use codex_pool_protocol::methods::ThreadSettings;
use serde_json::{json, Map, Value};
use std::time::Instant;

/// The fields `POST /v1/chat/completions` reads: those its request shape documents.
static KNOWN: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(wire::fields_of::<wire::CreateChatCompletion>);

/// Why a field OpenAI has is refused here.
fn why(field: &str) -> &'static str {
    match field {
        "functions" | "function_call" => "use `tools` and `tool_choice` (the older `functions` shape is not taken)",
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
    let (specs, choice) =
        tools::read(f.take("tools"), f.take("tool_choice"), f.take("parallel_tool_calls"), Shape::Chat)?;
    let must_call = choice.must_call();
    check_items(&messages, "messages", state.max_input_items)
        .inspect_err(|_| state.metrics.limit_refused("max_input_items"))?;
    let said = transcript(&messages, "messages")?;
    said.check_outputs_answer_calls()?;
    state.check_settings(
        &[("messages", said.system.as_deref()), ("messages", said.developer.as_deref())],
        None,
        false,
    )?;
    let served = served_model(&state, Some(model.clone()))?;
    let head = Head {
        model: model.clone(),
        system: said.system.clone(),
        developer: said.developer.clone(),
        owner: crate::keys::caller().key_id().map(str::to_owned),
    };
    let settings = ThreadSettings {
        base_instructions: said.system.clone(),
        developer_instructions: said.developer.clone(),
        model: served,
        dynamic_tools: specs.clone(),
        ..ThreadSettings::default()
    };
    let mut metadata = Map::new();
    metadata.insert(CREATED_BY.0.to_owned(), json!(CREATED_BY.1));
    let creation = Creation { settings, metadata };
    let started = rounds::begin(&state, &head, &said, tools::turn_options(&specs), creation, begun).await?;
    state.metrics.chat_request(started.outcome);
    let completion_id = completion_id(&started.conversation, &started.log.turn_id, started.round());
    let indexed = rounds::index_when_stopped(&state, &started, Some(head), said, (true, must_call));
    let created = now_secs();
    if stream {
        let render = Chunks { id: completion_id, created, model, include_usage, calls: false, filtered: false };
        return Ok(rounds::stream(started.log, (started.after, must_call), render, indexed).into_response());
    }
    let reply = match indexed.await {
        Ok(reply) => reply,
        Err(_) => reply::settle(&started.log, started.after, Reply::new(must_call)).await,
    };
    match reply.ending() {
        Some(Ending::Completed { usage, .. }) => {
            Ok(Json(chat_completion(&completion_id, created, &model, &reply, usage)).into_response())
        }
        None if !reply.calls().is_empty() => {
            Ok(Json(chat_completion(&completion_id, created, &model, &reply, &Usage::default())).into_response())
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

/// Chat Completions chunks.
struct Chunks {
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
    /// The round stopped at tool calls.
    calls: bool,
    /// codex said to hide or block an answer of the round: it ends with `content_filter`.
    filtered: bool,
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
            Step::Open(_) | Step::Close(..) => Vec::new(),
            Step::Withheld(..) => {
                self.filtered = true;
                Vec::new()
            }
            Step::ToolCalls(calls) => {
                self.calls = true;
                let mut out = vec![self.chunk(json!({"tool_calls": chat_tool_calls(&calls, true)}), None, None)];
                out.push(self.chunk(json!({}), Some("tool_calls"), None));
                if self.include_usage {
                    out.push(self.chunk(json!({}), None, Some(chat_usage(&Usage::default()))));
                }
                out.push(Event::default().data("[DONE]"));
                out
            }
            Step::End(Ending::Completed { usage, .. }) => {
                let finish = if self.filtered { "content_filter" } else { "stop" };
                let mut out = vec![self.chunk(json!({}), Some(finish), None)];
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
