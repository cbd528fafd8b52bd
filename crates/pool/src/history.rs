//! What of a turn belongs in a conversation's history: the turn's own items, not the context
//! codex writes by itself for every new thread, nor history it reports again after a rebuild.

use codex_pool_protocol::types::UserInput;
use codex_pool_protocol::ToolOutput;
use serde_json::Value;

/// The type of the item the store keeps where codex compacted the history (see
/// `compaction.rs`): `{"type": "codex_pool.compaction", "summary"}`.
pub(crate) const MARKER_TYPE: &str = "codex_pool.compaction";

/// The field the store adds to an assistant message codex marked `hide` or `block` (its
/// `agentMessage.moderation`, which codex's recorded item does not carry): `"hide"` or
/// `"block"`. The text stays, as codex keeps it; readers of the history withhold it, and the
/// field is taken off what a rebuilt thread is given.
pub const MODERATION_FIELD: &str = "codex_pool_moderation";

/// Marks a recorded assistant message as one codex said to hide or block.
pub(crate) fn mark_moderated(item: &mut Value, mode: codex_pool_protocol::Withheld) {
    if let Some(fields) = item.as_object_mut() {
        fields.insert(MODERATION_FIELD.to_owned(), Value::String(mode.as_str().to_owned()));
    }
}

/// An item as codex is given it: without the store's moderation mark.
pub(crate) fn for_codex(item: &Value) -> Value {
    let mut item = item.clone();
    if let Some(fields) = item.as_object_mut() {
        fields.remove(MODERATION_FIELD);
    }
    item
}

/// Whether an item is a compaction's marker.
pub(crate) fn is_marker(item: &Value) -> bool {
    item["type"] == MARKER_TYPE
}

/// Whether an item is context codex writes by itself for a thread (developer instructions,
/// permissions, environment, user instructions) rather than part of the conversation.
pub(crate) fn is_codex_context(item: &Value) -> bool {
    if item["type"] != "message" {
        return false;
    }
    let first = item["content"][0]["text"].as_str().unwrap_or_default();
    item["role"] == "developer"
        || (item["role"] == "user"
            && ["<environment_context>", "<user_instructions>", "<permissions"]
                .iter()
                .any(|tag| first.starts_with(tag)))
}

/// Keeps the turn's own items: its user message and what followed. What codex records before
/// it belongs to the codex thread, not to the turn: the context codex writes for a new thread
/// (developer instructions, permissions, environment), which it writes again on every rebuild;
/// and, on a rebuilt thread, the injected history, which codex may report again in the first
/// turn. The turn's message is the last user message holding the input's first text (or, for
/// an input of images only, an image): a repeated message appears earlier only as history. If
/// none is found, codex's own context is left out and the rest kept.
pub(crate) fn own_items(items: &mut Vec<Value>, input: &[UserInput]) {
    if input.is_empty() {
        // A turn codex ran by itself (a compaction): all but its context is the turn's.
        items.retain(|item| !is_codex_context(item));
        return;
    }
    let text = input.iter().find_map(|i| match i {
        UserInput::Text { text } => Some(text.as_str()),
        _ => None,
    });
    let holds_input = |item: &Value| {
        let parts = item["content"].as_array().map(Vec::as_slice).unwrap_or_default();
        item["type"] == "message"
            && item["role"] == "user"
            && parts.iter().any(|part| match text {
                Some(text) => part["type"] == "input_text" && part["text"] == text,
                None => part["type"] == "input_image",
            })
    };
    match items.iter().rposition(holds_input) {
        Some(start) => {
            // A compaction before the turn's message is the turn's (its marker stays in place).
            let markers: Vec<Value> = items.drain(..start).filter(is_marker).collect();
            items.splice(0..0, markers);
        }
        None => {
            tracing::warn!("the turn's own message was not among its history items");
            items.retain(|item| !is_codex_context(item));
        }
    }
}

/// Keeps a continuation turn's own items: what codex recorded after the tool outputs the turn
/// gave it (`given`, `function_call_output` items). A rebuilt thread may report its injected
/// history (the outputs among it) again first; codex's own context is never the turn's.
pub(crate) fn own_items_after(items: &mut Vec<Value>, given: &[Value]) {
    let ids: Vec<&str> = given.iter().filter_map(ToolOutput::call_id_of).collect();
    let is_given = |item: &Value| ToolOutput::call_id_of(item).is_some_and(|id| ids.contains(&id));
    if let Some(last) = items.iter().rposition(is_given) {
        let markers: Vec<Value> = items.drain(..=last).filter(is_marker).collect();
        items.splice(0..0, markers);
    }
    items.retain(|item| !is_codex_context(item));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(role: &str, text: &str) -> Value {
        let kind = if role == "assistant" { "output_text" } else { "input_text" };
        json!({"type": "message", "role": role, "content": [{"type": kind, "text": text}]})
    }

    #[test]
    fn only_the_turns_own_items_are_kept() {
        let call = json!({"type": "function_call", "name": "f", "arguments": "{}", "call_id": "c"});
        // A rebuilt thread: context, re-reported history with the same text, then the turn.
        let mut items = vec![
            msg("developer", "You are Ada."),
            msg("user", "<environment_context>...</environment_context>"),
            msg("user", "hi"),
            msg("assistant", "echo: hi"),
            msg("user", "hi"),
            call.clone(),
            msg("assistant", "echo: hi"),
        ];
        own_items(&mut items, &[UserInput::text("hi")]);
        assert_eq!(items, vec![msg("user", "hi"), call, msg("assistant", "echo: hi")]);
    }

    #[test]
    fn images_are_found_in_the_turns_message() {
        // codex puts a text tag before each image.
        let with_image = json!({"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "<image name=[Image #1]>"},
            {"type": "input_image", "image_url": "data:..."},
            {"type": "input_text", "text": "what is this?"},
        ]});
        let input = [UserInput::Image { url: "data:...".into() }, UserInput::text("what is this?")];
        let mut items = vec![msg("developer", "ctx"), with_image.clone(), msg("assistant", "a cat")];
        own_items(&mut items, &input);
        assert_eq!(items, vec![with_image.clone(), msg("assistant", "a cat")]);

        let mut items = vec![msg("developer", "ctx"), with_image.clone()];
        own_items(&mut items, &[UserInput::Image { url: "data:...".into() }]);
        assert_eq!(items, vec![with_image]);
    }

    #[test]
    fn without_the_input_codex_context_is_still_left_out() {
        let mut items = vec![msg("developer", "ctx"), msg("user", "<environment_context>x"), msg("assistant", "x")];
        own_items(&mut items, &[UserInput::text("not there")]);
        assert_eq!(items, vec![msg("assistant", "x")]);
    }

    #[test]
    fn a_continuation_keeps_what_followed_the_outputs_it_gave() {
        let call = json!({"type": "function_call", "name": "f", "arguments": "{}", "call_id": "c"});
        let output = json!({"type": "function_call_output", "call_id": "c", "output": "x"});
        let mut items = vec![
            msg("developer", "You are Ada."),
            msg("user", "hi"),
            call.clone(),
            output.clone(),
            msg("assistant", "tool output: x"),
        ];
        own_items_after(&mut items, std::slice::from_ref(&output));
        assert_eq!(items, vec![msg("assistant", "tool output: x")]);
        // Nothing reported again: all but codex's context is the turn's.
        let mut items = vec![msg("developer", "You are Ada."), msg("assistant", "tool output: x")];
        own_items_after(&mut items, &[output]);
        assert_eq!(items, vec![msg("assistant", "tool output: x")]);
    }
}
