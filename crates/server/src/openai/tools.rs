//! Client tools on OpenAI's routes: the `tools` a request declares (function tools only),
//! `tool_choice`, `parallel_tool_calls` and `include`, read into the list of codex dynamic tools
//! the turn runs with. The service never runs a client's tool: codex asks, the pool hands the
//! call to the client, the client sends the output back.
//!
//! How each choice is honoured on codex, which takes a list of tools per thread and no choice:
//! - `auto` (or none given): every tool is declared; the model calls any, several or none.
//! - `none`: no tool is declared for the turn, so the model can call none (the conversation's
//!   codex thread is rebuilt without them, and again with them on the next request that has them).
//! - `required`: every tool is declared, and a round that ends without a call fails (the
//!   Response `failed`, the chat completion 502 `model_error`): codex cannot make the model call
//!   a tool, so the service checks that it did rather than ignore the choice.
//! - a named function: only that tool is declared (so the model can call no other), and the
//!   round must call it, as with `required`.
//! - `parallel_tool_calls: true` (the model may call several at once) is what codex does;
//!   `false` is refused (400 naming it): codex cannot stop the model from calling several.

use crate::openai::error::OpenAiError;
use codex_pool::TurnOptions;
use codex_pool_protocol::{ToolContent, ToolSpec};
use serde_json::{json, Map, Value};

/// Which shape a route's `tools` take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// The Responses API: `{type: "function", name, description?, parameters?, strict?}`.
    Responses,
    /// Chat Completions: `{type: "function", function: {name, description?, parameters?, strict?}}`.
    Chat,
}

/// What `tool_choice` asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Choice {
    /// The model calls any tools, or none.
    #[default]
    Auto,
    /// No tool is declared.
    None,
    /// The model must call a tool.
    Required,
    /// The model must call this tool (the only one declared).
    Named(String),
}

impl Choice {
    /// Whether the round must stop at tool calls.
    pub(crate) fn must_call(&self) -> bool {
        matches!(self, Choice::Required | Choice::Named(_))
    }

    /// As a Response shows it.
    pub(crate) fn shown(&self) -> Value {
        match self {
            Choice::Auto => json!("auto"),
            Choice::None => json!("none"),
            Choice::Required => json!("required"),
            Choice::Named(name) => json!({"type": "function", "name": name}),
        }
    }
}

/// Reads a request's `tools`, `tool_choice` and `parallel_tool_calls`: the tools the turn is
/// declared with (an empty list when it has none, so that a conversation continued without
/// tools loses them, as on OpenAI, where tools are per request), and the choice.
pub(crate) fn read(
    tools: Option<Value>,
    choice: Option<Value>,
    parallel: Option<Value>,
    shape: Shape,
) -> Result<(Vec<ToolSpec>, Choice), OpenAiError> {
    let specs = match tools {
        None => Vec::new(),
        Some(Value::Array(list)) => {
            let mut specs: Vec<ToolSpec> = Vec::with_capacity(list.len());
            for (i, tool) in list.iter().enumerate() {
                let spec = spec(tool, &format!("tools[{i}]"), shape)?;
                if specs.iter().any(|s| s.name == spec.name) {
                    return Err(OpenAiError::invalid(format!("tools[{i}].name"), "two tools have this name"));
                }
                specs.push(spec);
            }
            specs
        }
        Some(_) => return Err(OpenAiError::invalid("tools", "`tools` is a list of tools")),
    };
    match parallel {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            return Err(OpenAiError::unsupported(
                "parallel_tool_calls",
                "codex lets the model call several tools at once and cannot stop it; leave it out or send `true`",
            ))
        }
        Some(_) => return Err(OpenAiError::invalid("parallel_tool_calls", "`parallel_tool_calls` is true or false")),
    }
    let no_tools = || OpenAiError::invalid("tool_choice", "a tool must be called, but `tools` declares none");
    match choice {
        None => Ok((specs, Choice::Auto)),
        Some(Value::String(c)) if c == "auto" => Ok((specs, Choice::Auto)),
        Some(Value::String(c)) if c == "none" => Ok((Vec::new(), Choice::None)),
        Some(Value::String(c)) if c == "required" && specs.is_empty() => Err(no_tools()),
        Some(Value::String(c)) if c == "required" => Ok((specs, Choice::Required)),
        Some(Value::Object(choice)) if choice.get("type").and_then(Value::as_str) == Some("function") => {
            let (name, at) = match shape {
                Shape::Responses => (choice.get("name"), "tool_choice.name"),
                Shape::Chat => (choice.get("function").and_then(|f| f.get("name")), "tool_choice.function.name"),
            };
            let name = name.and_then(Value::as_str).unwrap_or_default();
            match specs.into_iter().find(|s| s.name == name) {
                Some(spec) => Ok((vec![spec], Choice::Named(name.to_owned()))),
                None => Err(OpenAiError::invalid(at, "`tool_choice` names a function that `tools` does not declare")),
            }
        }
        Some(Value::Object(_)) => Err(OpenAiError::unsupported(
            "tool_choice.type",
            "only function tools are offered: `tool_choice` is `auto`, `none`, `required` or a function",
        )),
        Some(_) => {
            Err(OpenAiError::invalid("tool_choice", "`tool_choice` is `auto`, `none`, `required` or a function"))
        }
    }
}

/// One tool, read at `at` (`tools[i]`).
fn spec(tool: &Value, at: &str, shape: Shape) -> Result<ToolSpec, OpenAiError> {
    let Some(fields) = tool.as_object() else {
        return Err(OpenAiError::invalid(at, "each tool is an object with `type` and `name`"));
    };
    match fields.get("type").and_then(Value::as_str) {
        Some("function") => {}
        Some(_) => {
            return Err(OpenAiError::unsupported(
                format!("{at}.type"),
                "only function tools are offered: the service runs no tool itself",
            ))
        }
        None => return Err(OpenAiError::invalid(format!("{at}.type"), "a tool has `type: \"function\"`")),
    }
    let (function, at) = match shape {
        Shape::Responses => {
            only(fields, &["type", "name", "description", "parameters", "strict"], at)?;
            (fields, at.to_owned())
        }
        Shape::Chat => {
            only(fields, &["type", "function"], at)?;
            let at = format!("{at}.function");
            match fields.get("function").and_then(Value::as_object) {
                Some(function) => {
                    only(function, &["name", "description", "parameters", "strict"], &at)?;
                    (function, at)
                }
                None => return Err(OpenAiError::invalid(at, "a function tool has `function: {name, ...}`")),
            }
        }
    };
    let name = function.get("name").and_then(Value::as_str).unwrap_or_default();
    let name_ok =
        (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !name_ok {
        return Err(OpenAiError::invalid(format!("{at}.name"), "a tool's name is 1 to 64 letters, digits, `_` or `-`"));
    }
    if codex_pool::CODEX_TOOL_NAMES.contains(&name) {
        return Err(OpenAiError::unsupported(format!("{at}.name"), "codex has a tool of this name; rename yours"));
    }
    let description = match function.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(d)) => d.clone(),
        Some(_) => return Err(OpenAiError::invalid(format!("{at}.description"), "a description is a string")),
    };
    let input_schema = match function.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(Value::Object(schema)) => Value::Object(schema.clone()),
        Some(_) => {
            return Err(OpenAiError::invalid(format!("{at}.parameters"), "`parameters` is a JSON Schema object"))
        }
    };
    match function.get("strict") {
        // codex declares client tools non-strict; a schema written for strict mode (every
        // property required, `additionalProperties: false`) holds as well without it.
        None | Some(Value::Null) | Some(Value::Bool(_)) => {}
        Some(_) => return Err(OpenAiError::invalid(format!("{at}.strict"), "`strict` is true or false")),
    }
    Ok(ToolSpec { name: name.to_owned(), description, input_schema })
}

/// Refuses a key of `fields` outside `known` (null ones aside), naming it.
fn only(fields: &Map<String, Value>, known: &[&str], at: &str) -> Result<(), OpenAiError> {
    match fields.iter().find(|(k, v)| !known.contains(&k.as_str()) && !v.is_null()) {
        Some((key, _)) => Err(OpenAiError::unsupported(format!("{at}.{key}"), "a function tool has no such field")),
        None => Ok(()),
    }
}

/// Turn options that make `specs` the conversation's tools from this turn on (a list that
/// differs from the conversation's rebuilds its codex thread: codex takes tools at
/// `thread/start` only).
pub(crate) fn turn_options(specs: &[ToolSpec]) -> TurnOptions {
    let mut options = crate::api::turns::options();
    options.tools = Some(specs.to_vec());
    options
}

/// `include`: only an empty list (what the OpenAI Agents SDK sends every time).
pub(crate) fn include(include: Option<Value>) -> Result<(), OpenAiError> {
    match include {
        None => Ok(()),
        Some(Value::Array(list)) => match list.first() {
            None => Ok(()),
            Some(_) => Err(OpenAiError::unsupported(
                "include[0]",
                "responses carry no extra output data here (no encrypted reasoning, logprobs or search results)",
            )),
        },
        Some(_) => Err(OpenAiError::invalid("include", "`include` is a list")),
    }
}

/// The tools as a Response shows them (`tools`).
pub(crate) fn shown(specs: &[ToolSpec]) -> Value {
    Value::Array(
        specs
            .iter()
            .map(|s| {
                json!({"type": "function", "name": s.name, "description": s.description,
                       "parameters": s.input_schema, "strict": false})
            })
            .collect(),
    )
}

/// An image given by URL at `param`: only a `data:` URL (codex takes inline images, and the
/// service fetches nothing).
pub(crate) fn data_url(url: Option<&str>, param: &str) -> Result<String, OpenAiError> {
    match url {
        Some(url) if url.starts_with("data:image/") => Ok(url.to_owned()),
        Some(_) => Err(OpenAiError::unsupported(
            param,
            "images are taken inline only, as a `data:image/...;base64,` URL (the service fetches nothing)",
        )),
        None => Err(OpenAiError::invalid(param, "an image part has its URL")),
    }
}

/// A tool's output as the client gave it (`function_call_output`'s `output`, a `tool`
/// message's `content`): a string, or text and image parts.
pub(crate) fn output(value: &Value, param: &str) -> Result<Vec<ToolContent>, OpenAiError> {
    match value {
        Value::String(text) => Ok(vec![ToolContent::InputText { text: text.clone() }]),
        Value::Array(parts) => {
            let mut content = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let at = format!("{param}[{j}]");
                match part.get("type").and_then(Value::as_str).unwrap_or_default() {
                    "text" | "input_text" | "output_text" => match part.get("text").and_then(Value::as_str) {
                        Some(text) => content.push(ToolContent::InputText { text: text.to_owned() }),
                        None => return Err(OpenAiError::invalid(format!("{at}.text"), "a text part has `text`")),
                    },
                    "input_image" => {
                        let url = data_url(part.get("image_url").and_then(Value::as_str), &format!("{at}.image_url"))?;
                        content.push(ToolContent::InputImage { image_url: url });
                    }
                    "image_url" => {
                        let url = part.get("image_url").and_then(|u| u.get("url")).and_then(Value::as_str);
                        let url = data_url(url, &format!("{at}.image_url.url"))?;
                        content.push(ToolContent::InputImage { image_url: url });
                    }
                    _ => {
                        return Err(OpenAiError::unsupported(format!("{at}.type"), "a tool output is text and images"))
                    }
                }
            }
            Ok(content)
        }
        _ => Err(OpenAiError::invalid(param, "a tool output is a string or a list of text and image parts")),
    }
}

/// A JSON text in one canonical form (keys sorted, no spaces), so arguments a client
/// re-serialized with other spacing or key order compare equal; text that is not JSON is kept
/// as it is.
pub(crate) fn canonical(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => {
            let mut out = String::with_capacity(text.len());
            write_canonical(&value, &mut out);
            out
        }
        Err(_) => text.to_owned(),
    }
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(list) => {
            out.push('[');
            for (i, v) in list.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_shapes_and_the_fields_agents_send() {
        let responses = json!([{"type": "function", "name": "get_weather", "description": "d", "strict": true,
            "parameters": {"type": "object", "title": "T", "additionalProperties": false,
                           "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
        let chat = json!([{"type": "function", "function": {"name": "get_weather", "description": "d",
            "parameters": responses[0]["parameters"].clone(), "strict": true}}]);
        let a = read(Some(responses), Some(json!("auto")), Some(json!(true)), Shape::Responses).unwrap();
        let b = read(Some(chat), None, None, Shape::Chat).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.0[0].input_schema["title"], "T");
        let two = json!([{"type": "function", "name": "f"}, {"type": "function", "name": "g"}]);
        let none = read(Some(two.clone()), Some(json!("none")), None, Shape::Responses).unwrap();
        assert_eq!(none, (Vec::new(), Choice::None));
        let required = read(Some(two.clone()), Some(json!("required")), None, Shape::Responses).unwrap();
        assert_eq!((required.0.len(), required.1.must_call()), (2, true));
        let named = read(Some(two), Some(json!({"type": "function", "name": "g"})), None, Shape::Responses).unwrap();
        assert_eq!((named.0.len(), named.0[0].name.as_str(), named.1), (1, "g", Choice::Named("g".into())));
    }

    #[test]
    fn names_what_it_refuses() {
        let f = json!([{"type": "function", "name": "f"}]);
        for (tools, choice, parallel, param) in [
            (json!([{"type": "web_search"}]), None, None, "tools[0].type"),
            (json!([{"type": "function", "name": "a b"}]), None, None, "tools[0].name"),
            (json!([{"type": "function", "name": "shell"}]), None, None, "tools[0].name"),
            (json!([{"type": "function", "name": "f", "x": 1}]), None, None, "tools[0].x"),
            (
                json!([{"type": "function", "name": "f"}, {"type": "function", "name": "f"}]),
                None,
                None,
                "tools[1].name",
            ),
            (json!([]), Some(json!("required")), None, "tool_choice"),
            (f.clone(), Some(json!({"type": "function", "name": "g"})), None, "tool_choice.name"),
            (f.clone(), Some(json!({"type": "allowed_tools"})), None, "tool_choice.type"),
            (f.clone(), None, Some(json!(false)), "parallel_tool_calls"),
        ] {
            let e = format!("{:?}", read(Some(tools.clone()), choice, parallel, Shape::Responses).unwrap_err());
            assert!(e.contains(&format!("param: Some({param:?})")), "{tools}: {e}");
        }
        let e = format!("{:?}", include(Some(json!(["reasoning.encrypted_content"]))).unwrap_err());
        assert!(e.contains("include[0]"), "{e}");
        assert!(include(Some(json!([]))).is_ok());
        let e = format!(
            "{:?}",
            output(&json!([{"type": "input_image", "image_url": "https://x/y.png"}]), "o").unwrap_err()
        );
        assert!(e.contains("o[0].image_url"), "{e}");
    }

    #[test]
    fn arguments_compare_as_json_values() {
        assert_eq!(
            canonical("{\"b\": 1, \"a\": [1, {\"d\":2,\"c\":3}]}"),
            canonical("{\"a\":[1,{\"c\":3,\"d\":2}],\"b\":1}")
        );
        assert_ne!(canonical("{\"a\":1}"), canonical("{\"a\":2}"));
        assert_eq!(canonical("not json"), "not json");
    }
}
