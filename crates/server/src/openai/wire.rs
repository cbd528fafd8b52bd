//! OpenAI's shapes, as the official clients read them (strictly validated, too): the Response
//! object and its streamed events, chat completions and their chunks. Built as JSON; the
//! request shapes, for the OpenAPI document, are beside.

use crate::events::Usage;
use crate::openai::message_id;
use crate::openai::reply::{Ending, Reply};
use codex_pool_protocol::{ToolCall, ToolSpec, TurnId, Withheld};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

/// What a Response object says besides its output: the same for every event of a stream.
#[derive(Debug, Clone)]
pub(crate) struct ResponseHead {
    /// `resp_<conversation>_<turn>[_r<round>]`.
    pub(crate) id: String,
    /// The codex turn (message ids derive from it).
    pub(crate) turn_id: TurnId,
    /// The round of the turn (0 up to its first tool calls).
    pub(crate) round: usize,
    /// The function tools the request declared.
    pub(crate) tools: Vec<ToolSpec>,
    /// `tool_choice`, as the request chose.
    pub(crate) tool_choice: Value,
    /// Unix seconds.
    pub(crate) created_at: i64,
    /// The model.
    pub(crate) model: String,
    /// The instructions the client gave the conversation, if any.
    pub(crate) instructions: Option<String>,
    /// The conversation's metadata.
    pub(crate) metadata: Map<String, Value>,
    /// The response it continues.
    pub(crate) previous_response_id: Option<String>,
    /// Whether it is kept (`store`).
    pub(crate) store: bool,
}

/// An output message, whole or being written.
pub(crate) fn output_message(turn_id: &TurnId, round: usize, n: usize, text: Option<&str>) -> Value {
    let (status, content) = match text {
        Some(text) => ("completed", json!([text_part(text)])),
        None => ("in_progress", json!([])),
    };
    let id = message_id(turn_id, round, n);
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
}

/// What a refusal part says of an answer codex marked `hide` or `block` (never its text).
pub(crate) fn refusal_text(mode: Withheld) -> String {
    format!("The answer was withheld: the model's moderation marked it `{}`.", mode.as_str())
}

/// A `refusal` part, for an answer codex marked `hide` or `block`.
pub(crate) fn refusal_part(mode: Withheld) -> Value {
    json!({"type": "refusal", "refusal": refusal_text(mode)})
}

/// An output message whose answer codex marked `hide` or `block`: one `refusal` part.
pub(crate) fn refused_message(turn_id: &TurnId, round: usize, n: usize, mode: Withheld) -> Value {
    let id = message_id(turn_id, round, n);
    json!({"id": id, "type": "message", "status": "completed", "role": "assistant", "content": [refusal_part(mode)]})
}

/// A `function_call` output item: the model called a client tool.
pub(crate) fn function_call(call: &ToolCall) -> Value {
    json!({
        "type": "function_call",
        "id": format!("fc_{}", call.call_id),
        "call_id": call.call_id,
        "name": call.name,
        "arguments": call.arguments,
        "status": "completed",
    })
}

/// An `output_text` part.
pub(crate) fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// The Responses API's usage.
pub(crate) fn response_usage(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_input_tokens, "cache_write_tokens": 0},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_output_tokens},
        "total_tokens": u.total_tokens,
    })
}

/// A Response object: `in_progress` until the round stops (at tool calls, or at the turn's
/// end), then with its messages and calls.
pub(crate) fn response(head: &ResponseHead, reply: &Reply) -> Value {
    let mut output: Vec<Value> = reply
        .messages()
        .iter()
        .enumerate()
        .map(|(n, text)| match reply.withheld(n) {
            Some(mode) => refused_message(&head.turn_id, head.round, n, mode),
            None => output_message(&head.turn_id, head.round, n, Some(text)),
        })
        .collect();
    output.extend(reply.calls().iter().map(function_call));
    let ending = reply.ending();
    let (status, usage, error) = match ending {
        // Usage is counted when the turn ends: a round that stops at tool calls has none yet.
        None if !reply.calls().is_empty() => ("completed", response_usage(&Usage::default()), Value::Null),
        None => ("in_progress", Value::Null, Value::Null),
        Some(Ending::Completed { interrupted: false, usage }) => ("completed", response_usage(usage), Value::Null),
        Some(Ending::Completed { interrupted: true, usage }) => ("incomplete", response_usage(usage), Value::Null),
        Some(Ending::Failed { kind, message }) => {
            ("failed", Value::Null, json!({"code": "server_error", "message": format!("{kind}: {message}")}))
        }
    };
    json!({
        "id": head.id,
        "object": "response",
        "created_at": head.created_at,
        "status": status,
        "error": error,
        "incomplete_details": Value::Null,
        "instructions": head.instructions,
        "metadata": head.metadata,
        "model": head.model,
        "output": if reply.stopped() { json!(output) } else { json!([]) },
        "parallel_tool_calls": true,
        "previous_response_id": head.previous_response_id,
        "store": head.store,
        "text": {"format": {"type": "text"}},
        "tool_choice": head.tool_choice,
        "tools": crate::openai::tools::shown(&head.tools),
        "truncation": "disabled",
        "usage": usage,
    })
}

/// The event type that ends a stream with `ending`.
pub(crate) fn terminal_event(ending: &Ending) -> &'static str {
    match ending {
        Ending::Completed { interrupted: false, .. } => "response.completed",
        Ending::Completed { interrupted: true, .. } => "response.incomplete",
        Ending::Failed { .. } => "response.failed",
    }
}

/// Chat Completions' usage.
pub(crate) fn chat_usage(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_output_tokens},
    })
}

/// Chat Completions' `tool_calls` of a message (streamed: with their `index`).
pub(crate) fn chat_tool_calls(calls: &[ToolCall], indexed: bool) -> Value {
    let call = |(index, call): (usize, &ToolCall)| {
        let mut c = json!({"id": call.call_id, "type": "function",
                           "function": {"name": call.name, "arguments": call.arguments}});
        if indexed {
            c["index"] = json!(index);
        }
        c
    };
    Value::Array(calls.iter().enumerate().map(call).collect())
}

/// A whole chat completion: the reply's text, and the tool calls it stopped at.
pub(crate) fn chat_completion(id: &str, created: i64, model: &str, reply: &Reply, usage: &Usage) -> Value {
    let text = reply.text();
    let mut message = json!({"role": "assistant", "content": text, "refusal": Value::Null, "annotations": []});
    let finish = if reply.calls().is_empty() {
        if reply.any_withheld() {
            if text.is_empty() {
                message["content"] = Value::Null;
            }
            "content_filter"
        } else {
            "stop"
        }
    } else {
        if text.is_empty() {
            message["content"] = Value::Null;
        }
        message["tool_calls"] = chat_tool_calls(reply.calls(), false);
        "tool_calls"
    };
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": Value::Null,
            "finish_reason": finish,
        }],
        "usage": chat_usage(usage),
        "system_fingerprint": Value::Null,
    })
}

/// A chat completion chunk with one choice, `delta` and `finish_reason`; or, with `usage`, the
/// last chunk that carries only it.
pub(crate) fn chat_chunk(
    id: &str,
    created: i64,
    model: &str,
    delta: Value,
    finish: Option<&str>,
    usage: Option<Value>,
) -> Value {
    let choices = match usage {
        Some(_) => json!([]),
        None => json!([{"index": 0, "delta": delta, "logprobs": Value::Null, "finish_reason": finish}]),
    };
    let mut chunk = json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": Value::Null,
        "choices": choices,
    });
    if let Some(usage) = usage {
        chunk["usage"] = usage;
    }
    chunk
}

/// `POST /v1/responses`: what it takes. Any other field is refused (400, naming it).
#[expect(dead_code, reason = "the handler reads the body field by field, with the names `fields_of` lists")]
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CreateResponse {
    /// A model the service serves (`GET /v1/models`; default: the first).
    pub(crate) model: Option<String>,
    /// The user's message: a string, or items: messages (`{role, content}`, text, and a user's
    /// images as `data:` URLs), `function_call` and `function_call_output` items. Without
    /// `previous_response_id`, a list that extends a conversation's history continues it (its
    /// trailing `function_call_output` items answer the calls it waits on); any other starts one.
    /// With it: the user's next message, or the outputs of the calls that response stopped at.
    #[schema(value_type = String)]
    pub(crate) input: Value,
    /// The conversation's system prompt; fixed when it starts (later requests may repeat it).
    pub(crate) instructions: Option<String>,
    /// Continue the conversation of this response, on its codex thread.
    pub(crate) previous_response_id: Option<String>,
    /// `false`: the conversation is deleted once the turn has ended (only when starting one).
    pub(crate) store: Option<bool>,
    /// Up to 16 string pairs, kept with the conversation.
    #[schema(value_type = Option<Object>)]
    pub(crate) metadata: Option<Map<String, Value>>,
    /// Stream the Responses events (SSE) instead of answering the Response once it has ended.
    pub(crate) stream: Option<bool>,
    /// Function tools (`{type: "function", name, description?, parameters?, strict?}`) the model
    /// may call; the client runs them. Per request: one without tools runs without.
    #[schema(value_type = Option<Vec<Object>>)]
    pub(crate) tools: Option<Vec<Value>>,
    /// `auto` (the default), `none` (no tool declared for this turn), `required` (a reply that
    /// calls none fails) or `{"type": "function", "name"}` (only that tool declared; a reply that
    /// calls none fails).
    #[schema(value_type = Option<String>)]
    pub(crate) tool_choice: Option<Value>,
    /// Only `true` (the default): the model may call several tools at once.
    pub(crate) parallel_tool_calls: Option<bool>,
    /// Only an empty list.
    #[schema(value_type = Option<Vec<String>>)]
    pub(crate) include: Option<Vec<Value>>,
}

/// `POST /v1/chat/completions`: what it takes. Any other field is refused (400, naming it).
#[expect(dead_code, reason = "the handler reads the body field by field, with the names `fields_of` lists")]
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CreateChatCompletion {
    /// A model the service serves (`GET /v1/models`).
    pub(crate) model: String,
    /// The whole transcript: leading system/developer messages, then user and assistant
    /// messages (an assistant's with `tool_calls`, `content` null), `tool` messages
    /// (`tool_call_id`), ending with the user's new message or with the tool results. Text,
    /// and a user's images as `data:` URLs.
    #[schema(value_type = Vec<Object>)]
    pub(crate) messages: Vec<Value>,
    /// Function tools (`{type: "function", function: {name, description?, parameters?,
    /// strict?}}`) the model may call; the client runs them.
    #[schema(value_type = Option<Vec<Object>>)]
    pub(crate) tools: Option<Vec<Value>>,
    /// `auto` (the default), `none`, `required` or `{"type": "function", "function": {"name"}}`:
    /// as on `/v1/responses` (a reply that calls no tool when one is required fails).
    #[schema(value_type = Option<String>)]
    pub(crate) tool_choice: Option<Value>,
    /// Only `true` (the default).
    pub(crate) parallel_tool_calls: Option<bool>,
    /// Stream chunks (SSE, ending with `[DONE]`).
    pub(crate) stream: Option<bool>,
    /// `{"include_usage": bool}`: a last chunk with the usage.
    #[schema(value_type = Option<Object>)]
    pub(crate) stream_options: Option<Value>,
    /// Only 1.
    pub(crate) n: Option<u32>,
    /// Only `false`: stored chat completions are not offered (the transcript is kept as a
    /// conversation either way).
    pub(crate) store: Option<bool>,
}

/// The fields a request shape takes, as its OpenAPI schema names them: the one list a handler
/// checks a body against (any other field is refused, naming it), so the document and the
/// handler cannot disagree on what a route takes.
pub(crate) fn fields_of<T: utoipa::PartialSchema>() -> Vec<String> {
    match T::schema() {
        utoipa::openapi::RefOr::T(utoipa::openapi::Schema::Object(object)) => {
            object.properties.keys().cloned().collect()
        }
        _ => Vec::new(),
    }
}
