//! Which chat transcript is which conversation. Chat Completions clients send the whole
//! transcript every time; the pool keeps conversations. Each conversation that Chat Completions
//! runs is indexed by a hash of its transcript so far (model, system and developer prompts,
//! then every user and assistant message, in order, each trimmed), updated after each turn. A
//! request whose messages but the last hash to an indexed conversation continues it: the new
//! message is its next turn, and the model is sent the history once, by codex.
//!
//! A conversation is taken out of the index while its turn runs, so two requests with the same
//! transcript never share one (the second starts its own), and it is indexed again under its new
//! transcript once the turn completes, or under its old one when the turn left nothing (aborted).
//! A request that goes back in a transcript (regenerate, edit) matches no conversation: a new one
//! starts from its messages, and the old one stays as it was. The index lives in memory: after
//! a restart the first request of a chat starts a new conversation, given the transcript, and
//! later ones continue it. Hashes are keyed (SipHash with a key drawn at start), so a client
//! cannot make one transcript pass for another.

use crate::openai::input::Role;
use codex_pool::ConversationId;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Mutex;

/// The index of chat transcripts.
#[derive(Debug, Default)]
pub struct Transcripts {
    keys: RandomState,
    index: Mutex<HashMap<u64, ConversationId>>,
}

/// What identifies a transcript: its model, prompts and messages.
#[derive(Debug, Clone)]
pub struct TranscriptKey<'a> {
    /// The model asked for.
    pub model: &'a str,
    /// The system prompt.
    pub system: Option<&'a str>,
    /// The developer prompt.
    pub developer: Option<&'a str>,
}

impl Transcripts {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// The hash of a transcript: `head`, then `turns` in order.
    pub fn key(&self, head: &TranscriptKey<'_>, turns: &[(Role, String)]) -> u64 {
        let mut h = self.keys.build_hasher();
        head.model.hash(&mut h);
        head.system.map(str::trim).hash(&mut h);
        head.developer.map(str::trim).hash(&mut h);
        turns.len().hash(&mut h);
        for (role, text) in turns {
            role.hash(&mut h);
            text.trim().hash(&mut h);
        }
        h.finish()
    }

    /// Takes the conversation indexed under `key` out of the index.
    pub fn take(&self, key: u64) -> Option<ConversationId> {
        self.lock().remove(&key)
    }

    /// Indexes a conversation under `key`.
    pub fn put(&self, key: u64, id: ConversationId) {
        self.lock().insert(key, id);
    }

    /// How many conversations are indexed.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ConversationId>> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transcript_is_known_by_all_it_says_and_only_that() {
        let t = Transcripts::new();
        let head = TranscriptKey { model: "m", system: Some("sys"), developer: None };
        let turns = vec![(Role::User, "hi".to_owned()), (Role::Assistant, "echo: hi".to_owned())];
        let key = t.key(&head, &turns);
        let trimmed = vec![(Role::User, " hi\n".to_owned()), (Role::Assistant, "echo: hi ".to_owned())];
        assert_eq!(t.key(&head, &trimmed), key, "surrounding white space does not count");
        let swapped = vec![(Role::Assistant, "hi".to_owned()), (Role::User, "echo: hi".to_owned())];
        assert_ne!(t.key(&head, &swapped), key);
        assert_ne!(t.key(&head, &turns[..1]), key);
        assert_ne!(t.key(&TranscriptKey { system: None, ..head.clone() }, &turns), key);
        assert_ne!(t.key(&TranscriptKey { developer: Some("sys"), system: None, ..head.clone() }, &turns), key);
        assert_ne!(t.key(&TranscriptKey { model: "n", ..head.clone() }, &turns), key);
        let joined = vec![(Role::User, "hiecho: hi".to_owned())];
        assert_ne!(t.key(&head, &joined), key);
        t.put(key, "c".into());
        assert_eq!(t.take(key), Some("c".into()));
        assert_eq!(t.take(key), None, "taken while its turn runs");
    }
}
