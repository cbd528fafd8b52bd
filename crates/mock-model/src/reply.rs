//! Deciding what to answer: the echo text, the directives, tool calls.

use serde_json::Value;
use std::time::Duration;

/// How a request should fail instead of answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Answer with this HTTP status.
    Status(u16),
    /// Cut the stream after half the deltas.
    Cut,
    /// Start the stream, then send nothing more.
    Hang,
}

/// Directives found in a user message (`[mock:key=value]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    /// `deltas=N`
    pub deltas: Option<usize>,
    /// `delay_ms=N`
    pub delay_ms: Option<u64>,
    /// `fail=CODE`, `cut`, `hang`
    pub failure: Option<Failure>,
    /// `tool=NAME ARGS`
    pub tool: Option<(String, String)>,
}

impl Directives {
    /// Parses every `[mock:...]` directive in `text`; unknown ones are ignored.
    pub fn parse(text: &str) -> Self {
        let mut d = Directives::default();
        let mut rest = text;
        while let Some(start) = rest.find("[mock:") {
            let after = &rest[start + 6..];
            let Some(end) = after.find(']') else { break };
            // Tool arguments are JSON and may hold `]`: take up to the last `]` that balances.
            let body =
                if after.starts_with("tool=") { balanced(after).unwrap_or(&after[..end]) } else { &after[..end] };
            let (key, value) = body.split_once('=').unwrap_or((body, ""));
            match key.trim() {
                "deltas" => d.deltas = value.trim().parse().ok(),
                "delay_ms" => d.delay_ms = value.trim().parse().ok(),
                "fail" => d.failure = value.trim().parse().ok().map(Failure::Status),
                "cut" => d.failure = Some(Failure::Cut),
                "hang" => d.failure = Some(Failure::Hang),
                "tool" => {
                    let (name, args) = value.trim().split_once(' ').unwrap_or((value.trim(), "{}"));
                    d.tool = Some((name.to_owned(), args.trim().to_owned()));
                }
                _ => {}
            }
            rest = &after[body.len().min(after.len())..];
        }
        d
    }
}

/// Returns the text of a `tool=NAME {json}` directive up to the `]` that closes it, counting the
/// brackets and braces of the JSON.
fn balanced(s: &str) -> Option<&str> {
    let mut depth = 0i32;
    for (i, c) in s.char_indices() {
        match c {
            '{' | '[' => depth += 1,
            '}' => depth -= 1,
            ']' if depth == 0 => return Some(&s[..i]),
            ']' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// What one response will be.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The text of the assistant message (empty for a tool call).
    pub text: String,
    /// How many deltas carry it.
    pub deltas: usize,
    /// Delay before each delta.
    pub delay: Duration,
    /// Fail instead of answering.
    pub failure: Option<Failure>,
    /// Call this tool (name, JSON arguments) instead of answering.
    pub tool_call: Option<(String, String)>,
}

impl Plan {
    /// Plans the answer to a Responses API request body.
    pub fn for_request(body: &Value, deltas: usize, delay: Duration) -> Self {
        let input = body.get("input").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
        // After a tool call, codex sends its output as the last input item: answer with it.
        if let Some(last) = input.last() {
            if last.get("type").and_then(Value::as_str) == Some("function_call_output") {
                let output = match last.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                return Plan {
                    text: format!("tool output: {output}"),
                    deltas: deltas.max(1),
                    delay,
                    failure: None,
                    tool_call: None,
                };
            }
        }
        let user = last_user_text(input).unwrap_or_default();
        let d = Directives::parse(&user);
        Plan {
            text: format!("echo: {user}"),
            deltas: d.deltas.unwrap_or(deltas).max(1),
            delay: d.delay_ms.map(Duration::from_millis).unwrap_or(delay),
            failure: d.failure,
            tool_call: d.tool,
        }
    }

    /// The reply text split into `deltas` pieces on character boundaries (some may be empty
    /// when the text is shorter than the count).
    pub fn pieces(&self) -> Vec<String> {
        let chars: Vec<char> = self.text.chars().collect();
        let n = self.deltas.max(1);
        (0..n).map(|i| chars[i * chars.len() / n..(i + 1) * chars.len() / n].iter().collect()).collect()
    }
}

/// The text of the last `user` message in a Responses API `input` array.
pub fn last_user_text(input: &[Value]) -> Option<String> {
    input.iter().rev().find_map(|item| {
        let is_user_message = item.get("role").and_then(Value::as_str) == Some("user")
            && item.get("type").and_then(Value::as_str).is_none_or(|t| t == "message");
        if !is_user_message {
            return None;
        }
        match item.get("content")? {
            Value::String(s) => Some(s.clone()),
            Value::Array(parts) => {
                Some(parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(""))
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_directives() {
        let d = Directives::parse("hi [mock:deltas=3] [mock:delay_ms=20] [mock:fail=429] [mock:nope]");
        assert_eq!(d.deltas, Some(3));
        assert_eq!(d.delay_ms, Some(20));
        assert_eq!(d.failure, Some(Failure::Status(429)));
        let d = Directives::parse(r#"run [mock:tool=shell {"command":["echo","[x]"]}] please"#);
        assert_eq!(d.tool, Some(("shell".into(), r#"{"command":["echo","[x]"]}"#.into())));
        assert_eq!(Directives::parse("plain"), Directives::default());
    }

    #[test]
    fn echoes_last_user_message() {
        let body = json!({"input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "first"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "echo: first"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "second"}]},
        ]});
        let plan = Plan::for_request(&body, 3, Duration::ZERO);
        assert_eq!(plan.text, "echo: second");
        assert_eq!(plan.pieces().concat(), "echo: second");
        assert_eq!(plan.pieces().len(), 3);
    }

    #[test]
    fn answers_tool_output() {
        let body = json!({"input": [{"type": "function_call_output", "call_id": "c", "output": "done"}]});
        assert_eq!(Plan::for_request(&body, 1, Duration::ZERO).text, "tool output: done");
    }
}
