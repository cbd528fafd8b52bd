//! Which transcript is which conversation. Chat Completions clients, and stateless Responses
//! clients (agent frameworks), send the whole transcript every time; the pool keeps
//! conversations. Each conversation these routes run is indexed by the key of its transcript so
//! far (model, system and developer prompts, then every user and assistant message, each
//! trimmed, every tool call with its arguments as a JSON value, every tool output, in order),
//! updated after each round (a turn's end, or the tool calls it stops at). A request whose
//! entries but the new ones (the last user message, or the trailing tool outputs) have an
//! indexed conversation's key continues it: the new message is its next turn, or the outputs go
//! to the calls it waits on; the model is sent the history once, by codex.
//!
//! The index is in the store ([`ThreadStore::take_transcript`](codex_pool_store::ThreadStore::take_transcript)),
//! so a transcript resent to any node of a store, or to a node restarted, finds its
//! conversation at once. Keys are SHA-256 hashes of an unambiguous encoding
//! ([`TranscriptHasher`]): the same on every node, and a client cannot make one transcript
//! pass for another.
//!
//! A conversation is taken out of the index while its round runs, so two requests with the same
//! transcript never share one (the second starts its own), and it is indexed again under its new
//! transcript once the round stops, before the client reads the stop, or under its old one when
//! the turn left nothing (aborted) or could not start. A request that goes back in a transcript (regenerate, edit) matches no
//! conversation: a new one starts from its messages, and the old one stays as it was. Each entry
//! also holds how many turns the conversation had then: one that had more since (a turn through
//! the native API) is not continued, since the client's transcript lacks them. Entries go with
//! their conversation.

use crate::openai::input::Entry;
use crate::openai::tools;
use codex_pool::{ConversationId, Pool, PoolError};
use codex_pool_protocol::ToolContent;
use codex_pool_store::{TranscriptEntry, TranscriptHasher, TranscriptKey};

/// The metadata that marks a conversation as one Chat Completions runs.
pub(crate) const CREATED_BY: (&str, &str) = ("created_by", "chat.completions");

/// What identifies a transcript besides its messages: its model and prompts.
#[derive(Debug, Clone)]
pub(crate) struct TranscriptHead<'a> {
    /// The model asked for.
    pub(crate) model: &'a str,
    /// The system prompt.
    pub(crate) system: Option<&'a str>,
    /// The developer prompt.
    pub(crate) developer: Option<&'a str>,
    /// The API key it belongs to (`None`: the operator's, whose keys are as before keys).
    pub(crate) owner: Option<&'a str>,
}

/// The key of a transcript: `head`, then `turns` in order: each message's role and text
/// (trimmed) and its images, each tool call's id, name and arguments (as a JSON value: spacing
/// and key order do not count), each tool output's call id and parts.
pub(crate) fn key(head: &TranscriptHead<'_>, turns: &[Entry]) -> TranscriptKey {
    let mut h = TranscriptHasher::new();
    h.text(head.model).optional(head.system.map(str::trim)).optional(head.developer.map(str::trim));
    if let Some(owner) = head.owner {
        h.text("owner").text(owner);
    }
    h.number(turns.len() as u64);
    for entry in turns {
        match entry {
            Entry::Message(role, said) => {
                h.text(role.name());
                h.text(said.text.trim());
                for url in &said.images {
                    h.text("image").text(url);
                }
            }
            Entry::Call(call) => {
                h.text("call").text(&call.call_id).text(&call.name).text(&tools::canonical(&call.arguments));
            }
            Entry::Output(output) => {
                h.text("output").text(&output.call_id).number(output.content.len() as u64);
                for part in &output.content {
                    match part {
                        ToolContent::InputText { text } => h.text("text").text(text.trim()),
                        ToolContent::InputImage { image_url } => h.text("image").text(image_url),
                    };
                }
            }
        }
    }
    h.finish()
}

/// Takes the conversation indexed under `key` out of the index, with its turns then.
pub(crate) async fn take(pool: &Pool, key: &TranscriptKey) -> Result<Option<(ConversationId, u64)>, PoolError> {
    let entry = pool.store().take_transcript(key).await?;
    Ok(entry.map(|e| (e.conversation, e.turns)))
}

/// Indexes a conversation, which has had `turns` turns, under `key`. A store that fails is
/// logged: the transcript's next request then starts a new conversation, given the transcript.
pub(crate) async fn put(pool: &Pool, key: TranscriptKey, id: ConversationId, turns: u64) {
    let entry = TranscriptEntry { conversation: id, turns };
    if let Err(e) = pool.store().put_transcript(&key, &entry).await {
        tracing::warn!(conversation = %entry.conversation, error = %e,
            "a chat transcript could not be indexed; its next request starts a new conversation");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::input::{Role, Said};
    use codex_pool_protocol::{ToolCall, ToolOutput};

    fn m(role: Role, text: &str) -> Entry {
        Entry::Message(role, Said::text(text))
    }

    #[test]
    fn a_transcript_is_known_by_all_it_says_and_only_that() {
        let head = TranscriptHead { model: "m", system: Some("sys"), developer: None, owner: None };
        let turns = vec![m(Role::User, "hi"), m(Role::Assistant, "echo: hi")];
        let k = key(&head, &turns);
        let trimmed = vec![m(Role::User, " hi\n"), m(Role::Assistant, "echo: hi ")];
        assert_eq!(key(&head, &trimmed), k, "surrounding white space does not count");
        let swapped = vec![m(Role::Assistant, "hi"), m(Role::User, "echo: hi")];
        assert_ne!(key(&head, &swapped), k);
        assert_ne!(key(&head, &turns[..1]), k);
        assert_ne!(key(&TranscriptHead { system: None, ..head.clone() }, &turns), k);
        assert_ne!(key(&TranscriptHead { developer: Some("sys"), system: None, ..head.clone() }, &turns), k);
        assert_ne!(key(&TranscriptHead { model: "n", ..head.clone() }, &turns), k);
        let joined = vec![m(Role::User, "hiecho: hi")];
        assert_ne!(key(&head, &joined), k);
        let image = vec![
            Entry::Message(Role::User, Said { text: "hi".into(), images: vec!["data:image/png;base64,AA==".into()] }),
            m(Role::Assistant, "echo: hi"),
        ];
        assert_ne!(key(&head, &image), k);
    }

    #[test]
    fn tool_calls_count_by_their_arguments_value() {
        let head = TranscriptHead { model: "m", system: None, developer: None, owner: None };
        let call = |args: &str| Entry::Call(ToolCall { call_id: "c".into(), name: "f".into(), arguments: args.into() });
        let turns = |args: &str| vec![m(Role::User, "hi"), call(args), Entry::Output(ToolOutput::text("c", "out"))];
        let k = key(&head, &turns("{\"a\":1,\"b\":[2]}"));
        assert_eq!(key(&head, &turns("{ \"b\": [2], \"a\": 1 }")), k);
        assert_ne!(key(&head, &turns("{\"a\":2,\"b\":[2]}")), k);
        let mut other = turns("{\"a\":1,\"b\":[2]}");
        other[2] = Entry::Output(ToolOutput::text("c", "other"));
        assert_ne!(key(&head, &other), k);
        assert_ne!(key(&head, &turns("{\"a\":1,\"b\":[2]}")[..2]), k);
    }

    #[test]
    fn every_node_computes_the_same_key() {
        // A fixed value (Python's hashlib.sha256 of the encoding): no key drawn per process, so a transcript
        // sent to any node of a store has the same key there (and the same as before tool calls were keyed).
        let head = TranscriptHead { model: "mock-model", system: Some("You are Bob."), developer: None, owner: None };
        let hex: String = key(&head, &[m(Role::User, "one")]).as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "88188e2d9ab44e846fd08f849785dbdc00a4ce93c0259aa7c5ce0f931369850e");
    }
}
