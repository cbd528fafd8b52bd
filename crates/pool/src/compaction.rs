//! Compactions: codex summarising a conversation's history when it passes the thread's token
//! threshold (`model_auto_compact_token_limit`), to go on from the summary and the newest user
//! messages. The store keeps both histories: the whole transcript (what clients read), with a
//! marker item where a compaction happened ([`marker`], holding the summary), and, derived from
//! it, what the model sees ([`model_history`]), which a rebuilt thread is given so it starts
//! where the compacted thread was, with no compaction of its own.
//!
//! What codex reports of a compaction (0.169.0 and 0.171.0, measured in `crates/process/tests/compaction.rs`):
//! a `contextCompaction` item starts, the summariser's answer comes as a raw assistant message,
//! the item completes. The history codex goes on from is never reported; it is, in order: the
//! newest user messages up to [`KEPT_USER_BYTES`], then the summary as a user message
//! ([`SUMMARY_PREFIX`] and the summary), then what comes after.

use crate::history::{for_codex, is_codex_context, is_marker, MARKER_TYPE};
use serde_json::{json, Value};

/// What codex puts before the summary in the user message that replaces the history.
pub(crate) const SUMMARY_PREFIX: &str = "Another language model started to solve this problem and produced a summary \
of its thinking process. You also have access to the state of the tools that were used by that language model. Use \
this to build on the work that has already been done and avoid duplicating work. Here is the summary produced by the \
other language model, use the information in this summary to assist with your own analysis:";

/// How much of the user messages before a compaction codex keeps: 20,000 tokens, which it weighs
/// at about four bytes each.
pub(crate) const KEPT_USER_BYTES: usize = 80_000;

/// The marker of a compaction whose summariser answered `summary_item` (a raw assistant
/// message).
pub(crate) fn marker(summary_item: &Value) -> Value {
    json!({"type": MARKER_TYPE, "summary": text_of(summary_item)})
}

fn text_of(item: &Value) -> String {
    item["content"].as_array().into_iter().flatten().filter_map(|p| p["text"].as_str()).collect()
}

/// Whether an item is a user message of the conversation (not codex's context, not a summary).
fn is_user_message(item: &Value) -> bool {
    item["type"] == "message"
        && item["role"] == "user"
        && !is_codex_context(item)
        && !text_of(item).starts_with(SUMMARY_PREFIX)
}

/// What the model sees of a stored history: after its last compaction, the user messages codex
/// kept, the summary and what followed; with none, the history itself. Markers are never sent,
/// nor the store's moderation marks (codex keeps a moderated answer's text as it is).
pub(crate) fn model_history(history: &[Value]) -> Vec<Value> {
    let Some(last) = history.iter().rposition(is_marker) else {
        return history.iter().filter(|i| !is_marker(i)).map(for_codex).collect();
    };
    let mut kept = Vec::new();
    let mut bytes = 0;
    for item in history[..last].iter().rev().filter(|i| is_user_message(i)) {
        bytes += text_of(item).len();
        if bytes > KEPT_USER_BYTES {
            break;
        }
        kept.push(item.clone());
    }
    kept.reverse();
    let summary = history[last]["summary"].as_str().unwrap_or_default();
    let summary = json!({"type": "message", "role": "user",
        "content": [{"type": "input_text", "text": format!("{SUMMARY_PREFIX}\n{summary}")}]});
    kept.push(summary);
    kept.extend(history[last + 1..].iter().filter(|i| !is_marker(i)).map(for_codex));
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, text: &str) -> Value {
        let kind = if role == "assistant" { "output_text" } else { "input_text" };
        json!({"type": "message", "role": role, "content": [{"type": kind, "text": text}]})
    }

    #[test]
    fn a_history_without_compaction_is_what_the_model_sees() {
        let history = vec![msg("user", "a"), msg("assistant", "b")];
        assert_eq!(model_history(&history), history);
    }

    #[test]
    fn after_a_compaction_the_model_sees_the_user_messages_the_summary_and_what_followed() {
        let summary = marker(&msg("assistant", "they talked"));
        let history = vec![
            msg("user", "one"),
            msg("assistant", "echo one"),
            json!({"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}),
            msg("user", "<environment_context>x</environment_context>"),
            msg("user", "two"),
            summary,
            msg("user", "three"),
            msg("assistant", "echo three"),
        ];
        let seen = model_history(&history);
        assert_eq!(seen.len(), 5, "{seen:?}");
        assert_eq!((&seen[0], &seen[1]), (&msg("user", "one"), &msg("user", "two")));
        assert_eq!(text_of(&seen[2]), format!("{SUMMARY_PREFIX}\nthey talked"));
        assert_eq!((&seen[3], &seen[4]), (&msg("user", "three"), &msg("assistant", "echo three")));
    }

    #[test]
    fn only_the_newest_user_messages_within_the_budget_are_kept_and_only_the_last_summary() {
        let big = "x".repeat(KEPT_USER_BYTES / 2 + 1);
        let history = vec![
            msg("user", &format!("old {big}")),
            marker(&msg("assistant", "first")),
            msg("user", &format!("mid {big}")),
            msg("user", "new"),
            marker(&msg("assistant", "second")),
        ];
        let seen = model_history(&history);
        let texts: Vec<String> = seen.iter().map(text_of).collect();
        assert_eq!(texts.len(), 3, "{texts:?}");
        assert!(texts[0].starts_with("mid ") && texts[1] == "new", "{texts:?}");
        assert!(texts[2].ends_with("\nsecond"));
    }
}
