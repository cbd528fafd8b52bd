//! Tool calls: which functions a response calls (the `[mock:tool=...]` directives, the request's
//! `tool_choice` and `parallel_tool_calls`), and the answer to the tool outputs that follow them.

use serde_json::Value;

/// One function call the fake model makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The function's name.
    pub name: String,
    /// Its arguments, as the JSON text the model writes.
    pub arguments: String,
}

impl ToolCall {
    /// A call of `name` with the JSON arguments `arguments`.
    pub fn new(name: impl Into<String>, arguments: impl Into<String>) -> Self {
        Self { name: name.into(), arguments: arguments.into() }
    }
}

/// A request's `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ToolChoice {
    /// `"auto"`, absent, or a shape the mock does not know: call what the directives say.
    Auto,
    /// `"none"`: call nothing.
    None,
    /// `"required"`: call something.
    Required,
    /// `{"type":"function","name":N}` (or Chat Completions' `{"function":{"name":N}}`): call N.
    Named(String),
}

impl ToolChoice {
    fn of(body: &Value) -> Self {
        match body.get("tool_choice") {
            Some(Value::String(s)) if s == "none" => ToolChoice::None,
            Some(Value::String(s)) if s == "required" => ToolChoice::Required,
            Some(choice @ Value::Object(_)) if choice.get("type").and_then(Value::as_str) == Some("function") => {
                match function_name(choice) {
                    Some(name) => ToolChoice::Named(name.to_owned()),
                    None => ToolChoice::Auto,
                }
            }
            _ => ToolChoice::Auto,
        }
    }
}

/// The name of a function tool or a named `tool_choice`, in the Responses shape (`name`) or
/// the Chat Completions one (`function.name`).
fn function_name(value: &Value) -> Option<&str> {
    value.get("name").or_else(|| value.get("function")?.get("name")).and_then(Value::as_str)
}

/// The calls a response to `body` makes, given the calls its directives ask for: none with
/// `tool_choice: "none"`; with no directive, the first function of `tools` for `"required"` and
/// the named function for a named choice, each with `{}`; only the first with
/// `parallel_tool_calls: false`.
pub(crate) fn calls_for(body: &Value, mut directed: Vec<ToolCall>) -> Vec<ToolCall> {
    match ToolChoice::of(body) {
        ToolChoice::None => return Vec::new(),
        ToolChoice::Required if directed.is_empty() => {
            let tools = body.get("tools").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
            let first = tools
                .iter()
                .filter(|t| t.get("type").and_then(Value::as_str).is_none_or(|kind| kind == "function"))
                .find_map(function_name);
            directed.extend(first.map(|name| ToolCall::new(name, "{}")));
        }
        ToolChoice::Named(name) if directed.is_empty() => directed.push(ToolCall::new(name, "{}")),
        _ => {}
    }
    if body.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        directed.truncate(1);
    }
    directed
}

/// When `input` ends with a `function_call_output` item, the answer to it: `tool output: ` and
/// the outputs of every `function_call_output` item after the last message, in input order,
/// joined with `"; "` (a call and its output may come in pairs or all calls first).
pub(crate) fn answer_to_outputs(input: &[Value]) -> Option<String> {
    let is_output = |item: &Value| item.get("type").and_then(Value::as_str) == Some("function_call_output");
    if !input.last().is_some_and(is_output) {
        return None;
    }
    let is_message = |item: &Value| {
        item.get("type").and_then(Value::as_str).map_or(item.get("role").is_some(), |kind| kind == "message")
    };
    let start = input.iter().rposition(is_message).map_or(0, |i| i + 1);
    let outputs: Vec<String> =
        input[start..].iter().filter(|item| is_output(item)).map(|item| output_text(item.get("output"))).collect();
    Some(format!("tool output: {}", outputs.join("; ")))
}

/// The text of one tool output: a string as it is; a list of content parts as their texts
/// joined, `[image]` for each image part; anything else as its JSON.
fn output_text(output: Option<&Value>) -> String {
    match output {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("input_image" | "image_url" | "image" | "output_image") => "[image]".to_owned(),
                _ => part.get("text").and_then(Value::as_str).map_or_else(|| part.to_string(), str::to_owned),
            })
            .collect(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn calls(body: Value, directed: &[(&str, &str)]) -> Vec<(String, String)> {
        let directed = directed.iter().map(|(n, a)| ToolCall::new(*n, *a)).collect();
        calls_for(&body, directed).into_iter().map(|c| (c.name, c.arguments)).collect()
    }

    fn pair(name: &str, args: &str) -> (String, String) {
        (name.to_owned(), args.to_owned())
    }

    #[test]
    fn tool_choice_and_parallel_tool_calls_shape_the_calls() {
        let tools = json!([{"type": "web_search"}, {"type": "function", "name": "lookup"}, {"type": "function", "name": "other"}]);
        let two = [("a", "{\"x\":1}"), ("b", "{}")];
        // auto (explicit or absent): the directives, all of them.
        assert_eq!(
            calls(json!({"tool_choice": "auto", "tools": tools}), &two),
            [pair("a", "{\"x\":1}"), pair("b", "{}")]
        );
        assert_eq!(calls(json!({"tools": tools}), &[]), []);
        // none: nothing, whatever the directives say.
        assert_eq!(calls(json!({"tool_choice": "none", "tools": tools}), &two), []);
        // required: the directives, else the first function tool with {}.
        assert_eq!(calls(json!({"tool_choice": "required", "tools": tools}), &two).len(), 2);
        assert_eq!(calls(json!({"tool_choice": "required", "tools": tools}), &[]), [pair("lookup", "{}")]);
        assert_eq!(calls(json!({"tool_choice": "required", "tools": []}), &[]), [], "no tool to call");
        let chat_tools = json!([{"type": "function", "function": {"name": "fn1"}}]);
        assert_eq!(calls(json!({"tool_choice": "required", "tools": chat_tools}), &[]), [pair("fn1", "{}")]);
        // A named function: the directives, else that function with {}.
        let named = json!({"type": "function", "name": "other"});
        assert_eq!(calls(json!({"tool_choice": named, "tools": tools}), &[]), [pair("other", "{}")]);
        assert_eq!(calls(json!({"tool_choice": named, "tools": tools}), &two[1..]), [pair("b", "{}")]);
        let chat_named = json!({"type": "function", "function": {"name": "fn1"}});
        assert_eq!(calls(json!({"tool_choice": chat_named}), &[]), [pair("fn1", "{}")]);
        // parallel_tool_calls: false keeps the first call only; true changes nothing.
        assert_eq!(calls(json!({"parallel_tool_calls": false}), &two), [pair("a", "{\"x\":1}")]);
        assert_eq!(calls(json!({"parallel_tool_calls": true}), &two).len(), 2);
    }

    #[test]
    fn answers_every_output_after_the_last_message() {
        let user = json!({"type": "message", "role": "user", "content": "go"});
        let call = |id: &str| json!({"type": "function_call", "call_id": id, "name": "f", "arguments": "{}"});
        let output = |id: &str, out: Value| json!({"type": "function_call_output", "call_id": id, "output": out});
        // One output: exactly as before.
        let input = [user.clone(), call("1"), output("1", json!("done"))];
        assert_eq!(answer_to_outputs(&input).as_deref(), Some("tool output: done"));
        // Calls first, then outputs; or in pairs: every output, in input order.
        let input = [user.clone(), call("1"), call("2"), output("1", json!("a")), output("2", json!("b"))];
        assert_eq!(answer_to_outputs(&input).as_deref(), Some("tool output: a; b"));
        let input = [user.clone(), call("1"), output("1", json!("a")), call("2"), output("2", json!("b"))];
        assert_eq!(answer_to_outputs(&input).as_deref(), Some("tool output: a; b"));
        // Outputs of an earlier exchange, before a message, are not repeated.
        let reply = json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "x"}]});
        let input = [call("0"), output("0", json!("old")), reply, user.clone(), call("1"), output("1", json!("new"))];
        assert_eq!(answer_to_outputs(&input).as_deref(), Some("tool output: new"));
        // Content parts: the texts, and [image] for an image.
        let parts = json!([
            {"type": "input_text", "text": "seen "},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
            {"type": "input_text", "text": " done"},
        ]);
        let input = [user.clone(), call("1"), output("1", parts)];
        assert_eq!(answer_to_outputs(&input).as_deref(), Some("tool output: seen [image] done"));
        // Not ending with an output: no answer from here.
        assert_eq!(answer_to_outputs(&[user.clone(), call("1")]), None);
        assert_eq!(answer_to_outputs(&[user]), None);
        assert_eq!(answer_to_outputs(&[]), None);
    }
}
