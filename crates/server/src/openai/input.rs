//! Messages as OpenAI's routes take them (Chat Completions' `messages`, the Responses API's
//! `input`), read into a transcript: the system and developer prompts, the earlier entries
//! (messages, the model's tool calls, the client's tool outputs), and what runs now: the user's
//! new message, or the outputs of the calls the model waits on. Text, and images as `data:`
//! URLs, are taken; anything else is refused, naming where it is.

use crate::openai::error::OpenAiError;
use crate::openai::tools;
use codex_pool_protocol::types::UserInput;
use codex_pool_protocol::{ToolCall, ToolOutput};
use serde_json::{json, Map, Value};

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    /// The system prompt.
    System,
    /// Developer instructions.
    Developer,
    /// The user.
    User,
    /// The model.
    Assistant,
}

impl Role {
    fn parse(role: &str) -> Option<Self> {
        Some(match role {
            "system" => Role::System,
            "developer" => Role::Developer,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            _ => return None,
        })
    }

    /// Its name on the wire.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// A message's text and its images (`data:` URLs).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Said {
    /// The text parts, joined by a new line.
    pub(crate) text: String,
    /// The images, in order.
    pub(crate) images: Vec<String>,
}

impl Said {
    /// Text alone.
    pub(crate) fn text(text: impl Into<String>) -> Self {
        Self { text: text.into(), images: Vec::new() }
    }

    /// As codex's turn input.
    pub(crate) fn input(&self) -> Vec<UserInput> {
        let mut input = vec![UserInput::text(self.text.clone())];
        input.extend(self.images.iter().map(|url| UserInput::Image { url: url.clone() }));
        input
    }
}

/// One entry of a transcript before what runs now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Entry {
    /// A user or assistant message.
    Message(Role, Said),
    /// A tool call the model made.
    Call(ToolCall),
    /// The client's output for a call.
    Output(ToolOutput),
}

impl Entry {
    /// As a Responses API item, the shape codex records.
    pub(crate) fn item(&self) -> Value {
        match self {
            Entry::Message(role, said) => item(*role, said),
            Entry::Call(call) => call.to_item(),
            Entry::Output(output) => output.to_item(),
        }
    }
}

/// What a request runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum New {
    /// A turn on the user's new message.
    Message(Said),
    /// The outputs of tool calls the model waits on.
    Outputs(Vec<ToolOutput>),
}

impl Default for New {
    fn default() -> Self {
        New::Message(Said::default())
    }
}

/// What a request's messages come to.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Transcript {
    /// The leading system messages, joined.
    pub(crate) system: Option<String>,
    /// The leading developer messages, joined.
    pub(crate) developer: Option<String>,
    /// What came before what runs now, in order.
    pub(crate) history: Vec<Entry>,
    /// What runs now: the last user message, or the trailing tool outputs.
    pub(crate) new: New,
    /// Where the first tool output is whose call is not earlier in the list (`input[3].call_id`):
    /// fine after `previous_response_id` (the call is the conversation's), refused elsewhere.
    pub(crate) orphan: Option<String>,
}

impl Transcript {
    /// Refuses (400) a tool output whose call the transcript does not hold.
    pub(crate) fn check_outputs_answer_calls(&self) -> Result<(), OpenAiError> {
        match &self.orphan {
            Some(at) => Err(OpenAiError::invalid(at, "this tool output answers no tool call earlier in the list")),
            None => Ok(()),
        }
    }
}

impl Transcript {
    /// The earlier entries as Responses API items, the shapes codex records (what a new
    /// conversation is given as history).
    pub(crate) fn history_items(&self) -> Vec<Value> {
        self.history.iter().map(Entry::item).collect()
    }
}

/// A message as codex records it.
pub(crate) fn item(role: Role, said: &Said) -> Value {
    let part = if role == Role::Assistant { "output_text" } else { "input_text" };
    let mut content = vec![json!({"type": part, "text": said.text})];
    content.extend(said.images.iter().map(|url| json!({"type": "input_image", "image_url": url})));
    json!({"type": "message", "role": role.name(), "content": content})
}

/// Reads a list of messages and items at `param` (`messages`, `input`): messages (`{role,
/// content}`, content a string, text and image parts, or `null` for an assistant's that only
/// calls tools), the Responses API's `function_call` and `function_call_output` items, Chat
/// Completions' assistant `tool_calls` and `tool` messages. System and developer messages come
/// first; the list ends with the user's message or with tool outputs.
pub(crate) fn transcript(messages: &[Value], param: &str) -> Result<Transcript, OpenAiError> {
    let mut t = Transcript::default();
    let mut said: Vec<Entry> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let at = format!("{param}[{i}]");
        let Some(fields) = message.as_object() else {
            return Err(OpenAiError::invalid(at, "each message is an object with `role` and `content`"));
        };
        match fields.get("type").and_then(Value::as_str) {
            None | Some("message") => {}
            Some("function_call") => {
                said.push(Entry::Call(function_call(fields, &at)?));
                continue;
            }
            Some("function_call_output") => {
                only(fields, &["type", "call_id", "output", "id", "status"], &at)?;
                let call_id = string(fields, "call_id", &at)?;
                orphan(&mut t, &said, &call_id, || format!("{at}.call_id"));
                let content = tools::output(fields.get("output").unwrap_or(&Value::Null), &format!("{at}.output"))?;
                said.push(Entry::Output(ToolOutput { call_id, content, success: true }));
                continue;
            }
            Some(kind) => return Err(OpenAiError::unsupported(format!("{at}.type"), unsupported_item(kind))),
        }
        let role = fields.get("role").and_then(Value::as_str);
        if role == Some("tool") {
            only(fields, &["role", "content", "tool_call_id"], &at)?;
            let call_id = string(fields, "tool_call_id", &at)?;
            orphan(&mut t, &said, &call_id, || format!("{at}.tool_call_id"));
            let content = tools::output(fields.get("content").unwrap_or(&Value::Null), &format!("{at}.content"))?;
            said.push(Entry::Output(ToolOutput { call_id, content, success: true }));
            continue;
        }
        let role = role.and_then(Role::parse).ok_or_else(|| {
            OpenAiError::invalid(format!("{at}.role"), "role is system, developer, user, assistant or tool")
        })?;
        // `id` and `status` come with output items fed back as input: they change nothing.
        let known: &[&str] = match role {
            Role::Assistant => &["role", "content", "type", "id", "status", "tool_calls", "refusal", "annotations"],
            _ => &["role", "content", "type", "id", "status"],
        };
        only(fields, known, &at)?;
        let content = fields.get("content").unwrap_or(&Value::Null);
        let calls = match fields.get("tool_calls") {
            Some(Value::Array(calls)) if role == Role::Assistant => {
                calls.iter().enumerate().map(|(j, c)| chat_call(c, &format!("{at}.tool_calls[{j}]"))).collect()
            }
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(_) => Err(OpenAiError::invalid(format!("{at}.tool_calls"), "`tool_calls` is a list")),
        }?;
        let message = if content.is_null() && role == Role::Assistant {
            Said::default()
        } else {
            said_of(content, &format!("{at}.content"), role)?
        };
        match role {
            Role::System | Role::Developer if !said.is_empty() => {
                return Err(OpenAiError::unsupported(
                    format!("{at}.role"),
                    "system and developer messages come first: a conversation's instructions are fixed when it starts",
                ))
            }
            Role::System => join(&mut t.system, message.text),
            Role::Developer => join(&mut t.developer, message.text),
            // An assistant message that only calls tools says nothing of its own.
            Role::Assistant if !calls.is_empty() && message.text.trim().is_empty() && message.images.is_empty() => {}
            Role::User | Role::Assistant => said.push(Entry::Message(role, message)),
        }
        said.extend(calls.into_iter().map(Entry::Call));
    }
    let outputs = said.iter().rev().take_while(|e| matches!(e, Entry::Output(_))).count();
    t.new = if outputs > 0 {
        let tail = said.split_off(said.len() - outputs);
        New::Outputs(tail.into_iter().filter_map(|e| if let Entry::Output(o) = e { Some(o) } else { None }).collect())
    } else {
        match said.pop() {
            Some(Entry::Message(Role::User, message)) => New::Message(message),
            _ => {
                let at = format!("{param}[{}].role", messages.len().saturating_sub(1));
                return Err(OpenAiError::invalid(
                    at,
                    "the last message must be the user's (the turn to run) or tool outputs (for the calls the model made)",
                ));
            }
        }
    };
    t.history = said;
    Ok(t)
}

/// Notes where the first output is whose call is not among the entries so far.
fn orphan(t: &mut Transcript, said: &[Entry], call_id: &str, at: impl FnOnce() -> String) {
    let called = said.iter().any(|e| matches!(e, Entry::Call(c) if c.call_id == call_id));
    if !called && t.orphan.is_none() {
        t.orphan = Some(at());
    }
}

/// A Responses API `function_call` item (as fed back from an output, with its `id`, `status`
/// and the official client's `parsed_arguments`, which change nothing).
fn function_call(fields: &Map<String, Value>, at: &str) -> Result<ToolCall, OpenAiError> {
    only(fields, &["type", "call_id", "name", "arguments", "id", "status", "parsed_arguments"], at)?;
    Ok(ToolCall {
        call_id: string(fields, "call_id", at)?,
        name: string(fields, "name", at)?,
        arguments: string(fields, "arguments", at)?,
    })
}

/// A Chat Completions `tool_calls` entry: `{id, type: "function", function: {name, arguments}}`.
fn chat_call(call: &Value, at: &str) -> Result<ToolCall, OpenAiError> {
    let Some(fields) = call.as_object() else {
        return Err(OpenAiError::invalid(at, "a tool call is `{id, type, function: {name, arguments}}`"));
    };
    only(fields, &["id", "type", "function", "index"], at)?;
    if fields.get("type").and_then(Value::as_str).is_some_and(|t| t != "function") {
        return Err(OpenAiError::unsupported(format!("{at}.type"), "only function tool calls are made here"));
    }
    let at_function = format!("{at}.function");
    let function = fields
        .get("function")
        .and_then(Value::as_object)
        .ok_or_else(|| OpenAiError::invalid(&at_function, "a tool call has `function: {name, arguments}`"))?;
    Ok(ToolCall {
        call_id: string(fields, "id", at)?,
        name: string(function, "name", &at_function)?,
        arguments: string(function, "arguments", &at_function)?,
    })
}

/// The string field `key` of an object at `at`.
fn string(fields: &Map<String, Value>, key: &str, at: &str) -> Result<String, OpenAiError> {
    match fields.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(OpenAiError::invalid(format!("{at}.{key}"), format!("`{key}` is a string"))),
    }
}

/// Refuses a field of a message outside `known` (null ones aside), naming it.
fn only(fields: &Map<String, Value>, known: &[&str], at: &str) -> Result<(), OpenAiError> {
    for (key, value) in fields {
        if !known.contains(&key.as_str()) && !value.is_null() {
            let why = if key == "name" {
                "participant names are not passed to codex; put the name in the message's text"
            } else {
                "this message or item has no such field here"
            };
            return Err(OpenAiError::unsupported(format!("{at}.{key}"), why));
        }
    }
    Ok(())
}

/// Refuses (400, `too_many_items`) a list of messages at `param` with more than `max` messages
/// and content parts in all: each one becomes a JSON item that the service and codex hold
/// several copies of, so their number is bounded apart from their size.
pub(crate) fn check_items(messages: &[Value], param: &str, max: usize) -> Result<(), OpenAiError> {
    let items = messages.len()
        + messages.iter().filter_map(|m| m.get("content").and_then(Value::as_array)).map(Vec::len).sum::<usize>();
    if items <= max {
        return Ok(());
    }
    Err(OpenAiError::new(
        axum::http::StatusCode::BAD_REQUEST,
        Some("too_many_items"),
        format!(
            "`{param}` has {items} messages and content parts, over the limit of {max} (--max-input-items); \
             join text parts, or start from a shorter history"
        ),
    )
    .param(param))
}

fn join(into: &mut Option<String>, text: String) {
    match into {
        Some(all) => {
            all.push_str("\n\n");
            all.push_str(&text);
        }
        None => *into = Some(text),
    }
}

fn unsupported_item(kind: &str) -> &'static str {
    match kind {
        "custom_tool_call" | "custom_tool_call_output" => "only function tools are offered",
        _ => "only messages, `function_call` and `function_call_output` items are taken",
    }
}

/// A message's content: a string, or text parts (joined by a new line) and images by `data:`
/// URL (a user's only).
fn said_of(content: &Value, param: &str, role: Role) -> Result<Said, OpenAiError> {
    match content {
        Value::String(s) => Ok(Said::text(s.clone())),
        Value::Array(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            let mut images = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
                match (kind, part.get("text").and_then(Value::as_str)) {
                    ("text" | "input_text" | "output_text", Some(text)) => texts.push(text),
                    ("text" | "input_text" | "output_text", None) => {
                        return Err(OpenAiError::invalid(format!("{param}[{j}].text"), "a text part has `text`"))
                    }
                    ("input_image", _) if role == Role::User => {
                        let url = part.get("image_url").and_then(Value::as_str);
                        images.push(tools::data_url(url, &format!("{param}[{j}].image_url"))?);
                    }
                    ("image_url", _) if role == Role::User => {
                        let url = part.get("image_url").and_then(|u| u.get("url")).and_then(Value::as_str);
                        images.push(tools::data_url(url, &format!("{param}[{j}].image_url.url"))?);
                    }
                    _ => {
                        return Err(OpenAiError::unsupported(
                            format!("{param}[{j}].type"),
                            "only text, and a user's images, are taken (no audio or files)",
                        ))
                    }
                }
            }
            Ok(Said { text: texts.join("\n"), images })
        }
        _ => Err(OpenAiError::invalid(param, "content is a string or a list of text parts")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prompts_history_and_the_new_message() {
        let messages = json!([
            {"role": "system", "content": "sys"},
            {"role": "developer", "content": [{"type": "text", "text": "dev"}]},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "echo: hi"},
            {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
        ]);
        let t = transcript(messages.as_array().unwrap(), "messages").unwrap();
        assert_eq!((t.system.as_deref(), t.developer.as_deref()), (Some("sys"), Some("dev")));
        assert_eq!(t.new, New::Message(Said::text("a\nb")));
        let expected =
            vec![Entry::Message(Role::User, Said::text("hi")), Entry::Message(Role::Assistant, Said::text("echo: hi"))];
        assert_eq!(t.history, expected);
        assert_eq!(t.history_items()[1]["content"][0]["type"], "output_text");
    }

    #[test]
    fn counts_messages_and_their_parts_against_the_item_limit() {
        let parts: Vec<Value> = (0..9).map(|_| json!({"type": "text", "text": "a"})).collect();
        let messages = vec![json!({"role": "system", "content": "s"}), json!({"role": "user", "content": parts})];
        assert!(check_items(&messages, "input", 11).is_ok());
        let e = format!("{:?}", check_items(&messages, "input", 10).unwrap_err());
        assert!(e.contains("too_many_items") && e.contains("11 messages and content parts"), "{e}");
    }

    #[test]
    fn names_what_it_refuses() {
        for (messages, param) in [
            (json!([]), "messages[0].role"),
            (json!([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]), "messages[1].role"),
            (json!([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]), "messages[1].role"),
            (json!([{"role": "tool", "content": "a"}]), "messages[0].tool_call_id"),
            (json!([{"role": "critic", "content": "a"}]), "messages[0].role"),
            (
                json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}]),
                "messages[0].content[0].image_url.url",
            ),
            (
                json!([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]),
                "messages[0].content[0].type",
            ),
            (json!([{"role": "user", "content": 5}]), "messages[0].content"),
            (json!([{"role": "user", "content": "a", "tool_calls": []}]), "messages[0].tool_calls"),
            (json!([{"role": "user", "content": "a", "name": "Ann"}]), "messages[0].name"),
            (json!([{"type": "function_call_output", "output": "x"}]), "messages[0].call_id"),
            (json!([{"type": "custom_tool_call", "input": "x"}]), "messages[0].type"),
            (json!([{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]), "messages[0].role"),
            (json!(["text"]), "messages[0]"),
        ] {
            let e = transcript(messages.as_array().unwrap(), "messages").unwrap_err();
            let body = format!("{:?}", e);
            assert!(body.contains(&format!("param: Some({param:?})")), "{messages}: {body}");
        }
    }

    #[test]
    fn reads_tool_calls_and_outputs_of_both_routes() {
        let chat = json!([
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Oslo\"}"}},
                {"id": "c2", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "rain"}]},
        ]);
        let responses = json!([
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{\"city\":\"Oslo\"}",
             "id": "fc_1", "status": "completed"},
            {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "rain"}]},
        ]);
        let a = transcript(chat.as_array().unwrap(), "messages").unwrap();
        let b = transcript(responses.as_array().unwrap(), "input").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.history.len(), 3);
        let New::Outputs(outputs) = &a.new else { panic!("{:?}", a.new) };
        assert_eq!(outputs[1], ToolOutput::text("c2", "rain"));
        let image = json!([{"role": "user", "content": [{"type": "input_text", "text": "see"},
            {"type": "input_image", "image_url": "data:image/png;base64,AA=="}]}]);
        let t = transcript(image.as_array().unwrap(), "input").unwrap();
        assert_eq!(t.new, New::Message(Said { text: "see".into(), images: vec!["data:image/png;base64,AA==".into()] }));
    }
}
