//! Messages as OpenAI's routes take them (Chat Completions' `messages`, the Responses API's
//! `input`), read into a transcript: the system and developer prompts, the earlier turns, and the
//! user's new message. Only text is taken; anything else is refused, naming where it is.

use crate::openai::error::OpenAiError;
use serde_json::{json, Value};

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

/// What a request's messages come to.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Transcript {
    /// The leading system messages, joined.
    pub(crate) system: Option<String>,
    /// The leading developer messages, joined.
    pub(crate) developer: Option<String>,
    /// The user and assistant messages before the new one, in order.
    pub(crate) history: Vec<(Role, String)>,
    /// The user's new message: the last one.
    pub(crate) last: String,
}

impl Transcript {
    /// The earlier turns as Responses API items, the shapes codex records (what a new
    /// conversation is given as history).
    pub(crate) fn history_items(&self) -> Vec<Value> {
        self.history.iter().map(|(role, text)| item(*role, text)).collect()
    }
}

/// A message as codex records it.
pub(crate) fn item(role: Role, text: &str) -> Value {
    let part = if role == Role::Assistant { "output_text" } else { "input_text" };
    json!({"type": "message", "role": role.name(), "content": [{"type": part, "text": text}]})
}

/// Reads a list of messages (`{role, content}`, content a string or text parts) at `param`
/// (`messages`, `input`). System and developer messages must come first; the last message must
/// be the user's.
pub(crate) fn transcript(messages: &[Value], param: &str) -> Result<Transcript, OpenAiError> {
    let mut t = Transcript::default();
    let mut said = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let at = format!("{param}[{i}]");
        let Some(fields) = message.as_object() else {
            return Err(OpenAiError::invalid(at, "each message is an object with `role` and `content`"));
        };
        if let Some(kind) = fields.get("type").and_then(Value::as_str).filter(|k| *k != "message") {
            return Err(OpenAiError::unsupported(format!("{at}.type"), unsupported_item(kind)));
        }
        let role = fields.get("role").and_then(Value::as_str).and_then(Role::parse).ok_or_else(|| {
            OpenAiError::invalid(format!("{at}.role"), "role is system, developer, user or assistant")
        })?;
        for key in fields.keys() {
            // `id` and `status` come with output items fed back as input: they change nothing.
            if !["role", "content", "type", "id", "status"].contains(&key.as_str()) && !fields[key].is_null() {
                let why = if key == "name" {
                    "participant names are not passed to codex; put the name in the message's text"
                } else {
                    "messages carry text only (no tool calls)"
                };
                return Err(OpenAiError::unsupported(format!("{at}.{key}"), why));
            }
        }
        let text = text_of(fields.get("content").unwrap_or(&Value::Null), &format!("{at}.content"))?;
        match role {
            Role::System | Role::Developer if !said.is_empty() => {
                return Err(OpenAiError::unsupported(
                    format!("{at}.role"),
                    "system and developer messages come first: a conversation's instructions are fixed when it starts",
                ))
            }
            Role::System => join(&mut t.system, text),
            Role::Developer => join(&mut t.developer, text),
            Role::User | Role::Assistant => said.push((role, text)),
        }
    }
    match said.pop() {
        Some((Role::User, text)) => t.last = text,
        _ => {
            let at = format!("{param}[{}].role", messages.len().saturating_sub(1));
            return Err(OpenAiError::invalid(at, "the last message must be the user's: it is the turn to run"));
        }
    }
    t.history = said;
    Ok(t)
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
        "function_call" | "function_call_output" | "custom_tool_call" | "custom_tool_call_output" => {
            "tools are not offered: conversations here have none"
        }
        _ => "only messages are taken",
    }
}

/// The text of a message's content: a string, or text parts joined by a new line.
fn text_of(content: &Value, param: &str) -> Result<String, OpenAiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
                match (kind, part.get("text").and_then(Value::as_str)) {
                    ("text" | "input_text" | "output_text", Some(text)) => texts.push(text),
                    ("text" | "input_text" | "output_text", None) => {
                        return Err(OpenAiError::invalid(format!("{param}[{j}].text"), "a text part has `text`"))
                    }
                    _ => {
                        return Err(OpenAiError::unsupported(
                            format!("{param}[{j}].type"),
                            "only text is taken (no images, audio or files)",
                        ))
                    }
                }
            }
            Ok(texts.join("\n"))
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
        assert_eq!((t.system.as_deref(), t.developer.as_deref(), t.last.as_str()), (Some("sys"), Some("dev"), "a\nb"));
        assert_eq!(t.history, vec![(Role::User, "hi".into()), (Role::Assistant, "echo: hi".into())]);
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
            (json!([{"role": "tool", "content": "a"}]), "messages[0].role"),
            (
                json!([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
                "messages[0].content[0].type",
            ),
            (json!([{"role": "user", "content": 5}]), "messages[0].content"),
            (json!([{"role": "user", "content": "a", "tool_calls": []}]), "messages[0].tool_calls"),
            (json!([{"role": "user", "content": "a", "name": "Ann"}]), "messages[0].name"),
            (json!([{"type": "function_call_output", "output": "x"}]), "messages[0].type"),
            (json!(["text"]), "messages[0]"),
        ] {
            let e = transcript(messages.as_array().unwrap(), "messages").unwrap_err();
            let body = format!("{:?}", e);
            assert!(body.contains(&format!("param: Some({param:?})")), "{messages}: {body}");
        }
    }
}
