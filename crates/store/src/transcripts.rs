//! The chat transcript index: which conversation a Chat Completions transcript is. Its keys are
//! SHA-256 hashes of an unambiguous encoding of what identifies a transcript, so every node
//! computes the same key for the same transcript, and a client cannot make one transcript pass
//! for another without finding a collision of SHA-256.

use crate::ConversationId;
use sha2::{Digest, Sha256};
use std::fmt;

/// What every key's encoding starts with: the index's name and the encoding's version.
const DOMAIN: &[u8] = b"codex-pool chat transcript v1\0";

/// The key of a transcript in the index ([`ThreadStore::take_transcript`](crate::ThreadStore::take_transcript)):
/// the SHA-256 hash a [`TranscriptHasher`] makes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TranscriptKey([u8; 32]);

impl TranscriptKey {
    /// The key with these bytes (as read back from a database).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Its 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for TranscriptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TranscriptKey(")?;
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "…)")
    }
}

/// Makes a [`TranscriptKey`] from a transcript's parts, written in order. Each part is written
/// with a tag and, for text, its length first, so no two different sequences of parts have the
/// same encoding (`"ab", "c"` is not `"a", "bc"`; an absent part is not an empty one).
#[derive(Clone)]
pub struct TranscriptHasher(Sha256);

impl Default for TranscriptHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl TranscriptHasher {
    /// A hasher with nothing written yet.
    pub fn new() -> Self {
        let mut hash = Sha256::new();
        hash.update(DOMAIN);
        Self(hash)
    }

    /// Writes a text.
    pub fn text(&mut self, text: &str) -> &mut Self {
        self.0.update([1]);
        self.0.update((text.len() as u64).to_be_bytes());
        self.0.update(text.as_bytes());
        self
    }

    /// Writes a text that may be absent.
    pub fn optional(&mut self, text: Option<&str>) -> &mut Self {
        match text {
            Some(text) => self.text(text),
            None => {
                self.0.update([0]);
                self
            }
        }
    }

    /// Writes a number.
    pub fn number(&mut self, n: u64) -> &mut Self {
        self.0.update([2]);
        self.0.update(n.to_be_bytes());
        self
    }

    /// The key of what was written.
    pub fn finish(&self) -> TranscriptKey {
        TranscriptKey(self.0.clone().finalize().into())
    }
}

/// What the index holds under a transcript's key: the conversation, and how many turns it had
/// when the transcript was indexed (one that had more since went on without the transcript).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptEntry {
    /// The conversation.
    pub conversation: ConversationId,
    /// Its turns then.
    pub turns: u64,
}

impl TranscriptEntry {
    /// An entry.
    pub fn new(conversation: impl Into<ConversationId>, turns: u64) -> Self {
        Self { conversation: conversation.into(), turns }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_same_in_every_process_and_tell_every_difference() {
        let key = |parts: &[Option<&str>]| {
            let mut h = TranscriptHasher::new();
            for part in parts {
                h.optional(*part);
            }
            h.finish()
        };
        // A fixed value: the key does not depend on the process, the machine or the build
        // (SHA-256 of the encoding; this value is Python's hashlib.sha256 of it), so every node
        // computes the same one.
        let hex: String = key(&[Some("m"), None, Some("hi")]).as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "c6a50a967b04ddc726f80aefa731e2f1155af62164048b5067e96f90a24f9ef3");
        assert_ne!(key(&[Some("ab"), Some("c")]), key(&[Some("a"), Some("bc")]));
        assert_ne!(key(&[None]), key(&[Some("")]));
        assert_ne!(key(&[Some("a")]), key(&[Some("a"), None]));
        assert_ne!(TranscriptHasher::new().number(1).finish(), TranscriptHasher::new().text("1").finish());
    }
}
