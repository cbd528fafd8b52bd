//! Deciding what to answer: the echo text, the directives, tool calls.

use crate::tools::{self, ToolCall};
use serde_json::Value;
use std::time::Duration;

/// The most deltas one reply is streamed in (`[mock:deltas=N]` and [`crate::MockConfig::deltas`]
/// above it are clamped to it): every delta is an event that codex and the pool carry.
pub const MAX_DELTAS: usize = 10_000;

/// The longest wait before one delta (`[mock:delay_ms=N]` and [`crate::MockConfig::delay`] above
/// it are clamped to it).
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// How a request should fail instead of answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Answer with this HTTP status.
    Status(u16),
    /// Cut the stream after half the deltas.
    Cut,
    /// Start the stream, then send nothing more.
    Hang,
    /// Send this many deltas, then nothing more (a stream that stalls mid-reply).
    StallAfter(usize),
}

/// Directives found in a user message (`[mock:key=value]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    /// `deltas=N`
    pub deltas: Option<usize>,
    /// `delay_ms=N`
    pub delay_ms: Option<u64>,
    /// `fail=CODE` (400 to 599), `cut`, `hang`, `stall_after=N`
    pub failure: Option<Failure>,
    /// `tool=NAME ARGS`, each one in the order written (several make parallel calls)
    pub tools: Vec<ToolCall>,
}

impl Directives {
    /// Parses every `[mock:...]` directive in `text`; unknown ones, and values out of range
    /// (a status outside 400..=599, a number that is not one), are ignored. Counts and delays
    /// are clamped where they are used ([`Plan::for_request`]).
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
                "fail" => {
                    d.failure = value.trim().parse().ok().filter(|code| (400..=599).contains(code)).map(Failure::Status)
                }
                "stall_after" => d.failure = value.trim().parse().ok().map(Failure::StallAfter),
                "cut" => d.failure = Some(Failure::Cut),
                "hang" => d.failure = Some(Failure::Hang),
                "tool" => {
                    let (name, args) = value.trim().split_once(' ').unwrap_or((value.trim(), "{}"));
                    d.tools.push(ToolCall::new(name, args.trim()));
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
    /// The text of the assistant message (not sent when the response calls tools).
    pub text: String,
    /// How many deltas carry it (1 to [`MAX_DELTAS`]).
    pub deltas: usize,
    /// Delay before each delta (at most [`MAX_DELAY`]).
    pub delay: Duration,
    /// The input tokens the response reports using (10, or the request's size over four with
    /// [`MockConfig::tokens_from_size`](crate::MockConfig::tokens_from_size)).
    pub input_tokens: u64,
    /// Fail instead of answering.
    pub failure: Option<Failure>,
    /// Call these tools, in one response, instead of answering (empty: answer).
    pub tool_calls: Vec<ToolCall>,
}

impl Plan {
    /// Plans the answer to a Responses API request body, `deltas` and `delay` being the defaults
    /// that directives override; counts and delays are clamped to [`MAX_DELTAS`] and [`MAX_DELAY`].
    /// An input that ends with tool outputs is answered with them; otherwise the directives'
    /// tool calls are shaped by the request's `tool_choice` and `parallel_tool_calls`.
    pub fn for_request(body: &Value, deltas: usize, delay: Duration) -> Self {
        let deltas = deltas.clamp(1, MAX_DELTAS);
        let delay = delay.min(MAX_DELAY);
        let input = body.get("input").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
        // After tool calls, codex sends their outputs as the last input items: answer with them.
        if let Some(text) = tools::answer_to_outputs(input) {
            return Plan { text, deltas, delay, failure: None, tool_calls: Vec::new(), input_tokens: 10 };
        }
        let user = last_user_text(input).unwrap_or_default();
        // codex asks for a summary of the history (a compaction): one the tests can recognise.
        if user.starts_with(COMPACT_PROMPT) {
            let text = format!("summary of {} user messages", user_messages(input) - 1);
            return Plan { text, deltas, delay, failure: None, tool_calls: Vec::new(), input_tokens: 10 };
        }
        let d = Directives::parse(&user);
        Plan {
            text: format!("echo: {user}"),
            deltas: d.deltas.unwrap_or(deltas).clamp(1, MAX_DELTAS),
            delay: d.delay_ms.map(Duration::from_millis).unwrap_or(delay).min(MAX_DELAY),
            failure: d.failure,
            tool_calls: tools::calls_for(body, d.tools),
            input_tokens: 10,
        }
    }

    /// The reply text split into `deltas` pieces on character boundaries (some may be empty
    /// when the text is shorter than the count), made one at a time as they are read.
    pub fn pieces(&self) -> Pieces<'_> {
        Pieces { text: &self.text, cursor: Cursor::new(&self.text, self.deltas) }
    }
}

/// Where the next piece of a reply starts; owned, so a stream can keep it beside the text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor {
    /// Characters in the text.
    total: usize,
    /// Pieces in all.
    count: usize,
    /// The next piece's number.
    next: usize,
    /// Where the next piece starts: its byte offset and its character number.
    at: usize,
    chars: usize,
}

impl Cursor {
    pub(crate) fn new(text: &str, count: usize) -> Self {
        Self { total: text.chars().count(), count: count.max(1), next: 0, at: 0, chars: 0 }
    }

    /// How many pieces were taken.
    pub(crate) fn taken(&self) -> usize {
        self.next
    }

    /// The next piece of `text` (the text the cursor was made for).
    pub(crate) fn take<'a>(&mut self, text: &'a str) -> Option<&'a str> {
        if self.next == self.count {
            return None;
        }
        self.next += 1;
        // Piece i ends at character (i + 1) * total / count; in u128, so no product overflows.
        let end = (self.next as u128 * self.total as u128 / self.count as u128) as usize;
        let rest = &text[self.at..];
        let len = rest.char_indices().nth(end - self.chars).map_or(rest.len(), |(i, _)| i);
        self.at += len;
        self.chars = end;
        Some(&rest[..len])
    }
}

/// The pieces of a reply, borrowed from its text one at a time (see [`Plan::pieces`]).
#[derive(Debug, Clone)]
pub struct Pieces<'a> {
    text: &'a str,
    cursor: Cursor,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        self.cursor.take(self.text)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.cursor.count - self.cursor.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Pieces<'_> {}

/// How codex's request for a summary of the history (a compaction) begins.
pub const COMPACT_PROMPT: &str = "You are performing a CONTEXT CHECKPOINT COMPACTION.";

/// How the user message that carries a compaction's summary begins.
const SUMMARY_PREFIX: &str = "Another language model started to solve this problem";

/// The text of a `user` message of a Responses API `input` array.
fn user_text(item: &Value) -> Option<String> {
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
}

/// The text of the last `user` message in a Responses API `input` array (a compaction's summary
/// is not one: after a compaction within a turn, the message before it is).
pub fn last_user_text(input: &[Value]) -> Option<String> {
    input.iter().rev().filter_map(user_text).find(|text| !text.starts_with(SUMMARY_PREFIX))
}

/// How many user messages an input holds (codex's context among them).
fn user_messages(input: &[Value]) -> usize {
    input.iter().filter_map(user_text).count()
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
        assert_eq!(d.tools, [ToolCall::new("shell", r#"{"command":["echo","[x]"]}"#)]);
        // Several tool directives: every one, in the order written; no arguments means {}.
        let d = Directives::parse(r#"[mock:tool=a {"x":[1]}] and [mock:tool=b] [mock:tool=c {"y":[2]}]"#);
        assert_eq!(
            d.tools,
            [ToolCall::new("a", r#"{"x":[1]}"#), ToolCall::new("b", "{}"), ToolCall::new("c", r#"{"y":[2]}"#)]
        );
        assert_eq!(Directives::parse("plain"), Directives::default());
        assert_eq!(Directives::parse("[mock:stall_after=3]").failure, Some(Failure::StallAfter(3)));
        assert_eq!(Directives::parse("[mock:fail=200]").failure, None, "only error statuses");
        assert_eq!(Directives::parse("[mock:fail=70000]").failure, None);
    }

    #[test]
    fn huge_counts_and_delays_are_clamped_and_pieces_made_lazily() {
        let body = json!({"input": [{"type": "message", "role": "user",
            "content": "x [mock:deltas=1000000000000] [mock:delay_ms=18446744073709551615]"}]});
        let plan = Plan::for_request(&body, 4, Duration::ZERO);
        assert_eq!(plan.deltas, MAX_DELTAS);
        assert_eq!(plan.delay, MAX_DELAY);
        assert_eq!(plan.pieces().len(), MAX_DELTAS);
        assert_eq!(plan.pieces().collect::<String>(), plan.text);
        // Too big for usize: not a number, so the default.
        let body =
            json!({"input": [{"type": "message", "role": "user", "content": "[mock:deltas=99999999999999999999999]"}]});
        assert_eq!(Plan::for_request(&body, 4, Duration::ZERO).deltas, 4);
        assert_eq!(Plan::for_request(&body, usize::MAX, Duration::MAX).deltas, MAX_DELTAS, "defaults too");
        // Pieces split on character boundaries, multi-byte ones included.
        let plan = Plan {
            text: "aé€😀b".into(),
            deltas: 3,
            delay: Duration::ZERO,
            failure: None,
            tool_calls: Vec::new(),
            input_tokens: 10,
        };
        assert_eq!(plan.pieces().collect::<Vec<_>>(), ["a", "é€", "😀b"]);
        let plan = Plan { text: "ab".into(), deltas: 4, ..plan };
        assert_eq!(plan.pieces().collect::<Vec<_>>(), ["", "a", "", "b"]);
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
        assert_eq!(plan.pieces().collect::<String>(), "echo: second");
        assert_eq!(plan.pieces().len(), 3);
    }

    #[test]
    fn answers_tool_output() {
        let body = json!({"input": [{"type": "function_call_output", "call_id": "c", "output": "done"}]});
        assert_eq!(Plan::for_request(&body, 1, Duration::ZERO).text, "tool output: done");
        // Tool outputs are answered whatever tool_choice says (a model forced to call again
        // would never end the turn).
        let body = json!({"tool_choice": "required", "tools": [{"type": "function", "name": "f"}],
            "input": [{"type": "function_call_output", "call_id": "c", "output": "done"}]});
        let plan = Plan::for_request(&body, 1, Duration::ZERO);
        assert_eq!((plan.text.as_str(), plan.tool_calls.len()), ("tool output: done", 0));
    }

    #[test]
    fn tool_directives_become_calls_as_tool_choice_allows() {
        let ask = r#"both [mock:tool=a {"n":1}] [mock:tool=b {"n":2}]"#;
        let body = json!({"input": [{"type": "message", "role": "user", "content": ask}]});
        let plan = Plan::for_request(&body, 1, Duration::ZERO);
        assert_eq!(plan.tool_calls, [ToolCall::new("a", r#"{"n":1}"#), ToolCall::new("b", r#"{"n":2}"#)]);
        let body = json!({"tool_choice": "none", "input": [{"type": "message", "role": "user", "content": ask}]});
        let plan = Plan::for_request(&body, 1, Duration::ZERO);
        assert_eq!((plan.text, plan.tool_calls), (format!("echo: {ask}"), Vec::new()));
    }
}
