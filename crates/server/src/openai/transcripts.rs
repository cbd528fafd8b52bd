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
//! starts from its messages, and the old one stays as it was. Each entry also holds how many
//! turns the conversation had then: one that had more since (a turn through the native API)
//! is not continued, since the client's transcript lacks them. The index lives in memory and is
//! rebuilt from the store when the service starts ([`rebuild`]), in the background: a chat's
//! request that comes before its conversation is indexed again starts a new one. Hashes are
//! keyed (SipHash with a key drawn at start), so a client cannot make one transcript pass for
//! another.

use crate::openai::input::Role;
use codex_pool::{ConversationId, Pool, PoolError, Profile};
use serde_json::Value;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Mutex;

/// The metadata that marks a conversation as one Chat Completions runs.
pub const CREATED_BY: (&str, &str) = ("created_by", "chat.completions");

/// The most conversations [`rebuild`] looks at (the newest).
const REBUILD_LIMIT: usize = 10_000;

/// The index of chat transcripts.
#[derive(Debug, Default)]
pub struct Transcripts {
    keys: RandomState,
    index: Mutex<Index>,
}

#[derive(Debug, Default)]
struct Index {
    /// Transcript hash to the conversation, and its turns then.
    by_key: HashMap<u64, (ConversationId, u64)>,
    /// Conversations a request took or indexed since the start: [`rebuild`] leaves them be.
    touched: HashSet<ConversationId>,
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

    /// Takes the conversation indexed under `key` out of the index, with its turns then.
    pub fn take(&self, key: u64) -> Option<(ConversationId, u64)> {
        let mut index = self.lock();
        let taken = index.by_key.remove(&key)?;
        index.touched.insert(taken.0.clone());
        Some(taken)
    }

    /// Indexes a conversation, which has had `turns` turns, under `key`.
    pub fn put(&self, key: u64, id: ConversationId, turns: u64) {
        let mut index = self.lock();
        index.touched.insert(id.clone());
        index.by_key.insert(key, (id, turns));
    }

    /// [`Transcripts::put`], unless a request took or indexed the conversation meanwhile.
    fn put_untouched(&self, key: u64, id: ConversationId, turns: u64) {
        let mut index = self.lock();
        if !index.touched.contains(&id) {
            index.by_key.insert(key, (id, turns));
        }
    }

    /// How many conversations are indexed.
    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Indexes again the conversations Chat Completions ran (the newest, up to 10,000), from their
/// stored settings and history. Those a request took or indexed meanwhile are left be; those
/// whose last turn did not end with a reply (or that run a turn now) are not indexed.
pub async fn rebuild(pool: &Pool, transcripts: &Transcripts) -> Result<usize, PoolError> {
    let (mut after, mut seen, mut indexed) = (None, 0, 0);
    while seen < REBUILD_LIMIT {
        let page = pool.conversations(after.take(), 100).await?;
        let Some(last) = page.last() else { break };
        after = Some(codex_pool::ListCursor { created_at_ms: last.record.created_at_ms, id: last.record.id.clone() });
        seen += page.len();
        for info in page {
            let record = &info.record;
            if info.running || record.metadata.get(CREATED_BY.0).and_then(Value::as_str) != Some(CREATED_BY.1) {
                continue;
            }
            let turns = transcript_of(pool, &record.id).await?;
            if !matches!(turns.last(), Some((Role::Assistant, _))) {
                continue;
            }
            let system = record.settings.base_instructions.as_deref().filter(|i| !Profile::is_default_instructions(i));
            let model = record.settings.model.as_deref().unwrap_or_default();
            let head = TranscriptKey { model, system, developer: record.settings.developer_instructions.as_deref() };
            transcripts.put_untouched(transcripts.key(&head, &turns), record.id.clone(), record.turns);
            indexed += 1;
        }
    }
    Ok(indexed)
}

/// A conversation's messages as a chat client sees them: user and assistant text, the
/// assistant's messages of one turn joined as their reply was.
async fn transcript_of(pool: &Pool, id: &ConversationId) -> Result<Vec<(Role, String)>, PoolError> {
    let (mut turns, mut last_turn) = (Vec::<(Role, String)>::new(), String::new());
    for stored in pool.all_items(id).await? {
        let item = &stored.item;
        let role = match (item["type"].as_str(), item["role"].as_str()) {
            (Some("message"), Some("user")) => Role::User,
            (Some("message"), Some("assistant")) => Role::Assistant,
            _ => continue,
        };
        let parts = item["content"].as_array().map(Vec::as_slice).unwrap_or_default();
        let text: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        let same_reply = role == Role::Assistant && stored.turn_id == last_turn;
        match turns.last_mut() {
            Some((Role::Assistant, reply)) if same_reply => reply.push_str(&text.concat()),
            _ => turns.push((role, if role == Role::User { text.join("\n") } else { text.concat() })),
        }
        last_turn = stored.turn_id;
    }
    Ok(turns)
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
        t.put(key, "c".into(), 1);
        assert_eq!(t.take(key), Some(("c".into(), 1)));
        assert_eq!(t.take(key), None, "taken while its turn runs");
        t.put_untouched(key, "c".into(), 0);
        assert_eq!(t.take(key), None, "a rebuild leaves what requests touched");
        t.put_untouched(key, "d".into(), 0);
        assert_eq!(t.take(key), Some(("d".into(), 0)));
    }
}
