//! API keys: the keys the operator issues to applications, kept hashed, with their limits and
//! usage, and the conversations each owns ([`KeyStore`]).
//!
//! A key's secret is 32 random bytes in base64url, as `cpk_<43 characters>`. Only its SHA-256
//! is stored (the secret has 256 bits of entropy, so no password hash is needed), and its
//! first 12 characters ([`ApiKey::prefix`]) to recognise it in lists. A request's key is found
//! by its hash ([`KeyStore::key_by_hash`]), then compared in constant time ([`ApiKey::matches`]).

use crate::{ConversationId, ListCursor, StoreFuture, ThreadRecord};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use subtle::ConstantTimeEq;

/// What every key's secret starts with.
pub const KEY_PREFIX: &str = "cpk_";

/// How many characters of a secret are kept to recognise it ([`ApiKey::prefix`]).
pub const PREFIX_CHARS: usize = 12;

/// Optional limits of a key (`None`: no limit of that kind beyond the service's own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyLimits {
    /// Turns of the key's conversations running at once (on one node).
    pub max_running_turns: Option<u32>,
    /// Conversations the key holds in the store (all nodes).
    pub max_conversations: Option<u64>,
    /// Turns the key starts per minute (all nodes, by the store's counter).
    pub turns_per_minute: Option<u32>,
}

/// An API key as stored: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Its id, `key_<random>`, which the conversations it creates record as their owner.
    pub id: String,
    /// Its name, unique among keys (metrics are labelled with it).
    pub name: String,
    /// The first [`PREFIX_CHARS`] characters of its secret, to recognise it in lists.
    pub prefix: String,
    /// The SHA-256 of its secret.
    pub sha256: [u8; 32],
    /// When it was created (ms since the epoch).
    pub created_at_ms: i64,
    /// When a request last carried it (ms since the epoch; written at most about once a minute).
    pub last_used_at_ms: Option<i64>,
    /// When it was revoked (ms since the epoch): a revoked key is refused.
    pub revoked_at_ms: Option<i64>,
    /// Its limits.
    pub limits: KeyLimits,
}

impl ApiKey {
    /// A new key named `name` with `limits`, and its secret (shown once, never stored).
    pub fn generate(name: impl Into<String>, limits: KeyLimits) -> Result<(Self, String), getrandom::Error> {
        let mut secret_bytes = [0u8; 32];
        getrandom::getrandom(&mut secret_bytes)?;
        let mut id_bytes = [0u8; 12];
        getrandom::getrandom(&mut id_bytes)?;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let secret = format!("{KEY_PREFIX}{}", b64.encode(secret_bytes));
        let key = Self {
            id: format!("key_{}", b64.encode(id_bytes)),
            name: name.into(),
            prefix: secret.chars().take(PREFIX_CHARS).collect(),
            sha256: hash_secret(&secret),
            created_at_ms: crate::now_ms(),
            last_used_at_ms: None,
            revoked_at_ms: None,
            limits,
        };
        Ok((key, secret))
    }

    /// Whether `secret` is this key's, compared in constant time.
    pub fn matches(&self, secret: &str) -> bool {
        bool::from(hash_secret(secret).ct_eq(&self.sha256))
    }

    /// Whether it was revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at_ms.is_some()
    }
}

/// The longest name a key may have.
const MAX_NAME: usize = 64;

/// Whether a key's name is one metrics labels and command lines can carry (else why not).
pub fn check_key_name(name: &str) -> Result<(), String> {
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > MAX_NAME || !name.chars().all(fine) {
        return Err(format!("a key's name is 1 to {MAX_NAME} letters, digits, `-`, `_` or `.`; pick another"));
    }
    Ok(())
}

/// The SHA-256 of a secret, as stored.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether a bearer token looks like an API key (so it is looked up among keys).
pub fn looks_like_key(token: &str) -> bool {
    token.starts_with(KEY_PREFIX)
}

/// The names of the usage counters a key has ([`KeyStore::add_key_usage`]).
pub mod usage {
    /// Turns that ended.
    pub const TURNS: &str = "turns";
    /// Input tokens the model reported.
    pub const INPUT_TOKENS: &str = "input_tokens";
    /// Of them, cached.
    pub const CACHED_INPUT_TOKENS: &str = "cached_input_tokens";
    /// Output tokens the model reported.
    pub const OUTPUT_TOKENS: &str = "output_tokens";
    /// Turns that failed, by reason: `failures.<reason>`.
    pub const FAILURES_PREFIX: &str = "failures.";
}

/// Keys, their usage, and conversations by owner. Every [`ThreadStore`](crate::ThreadStore)
/// gives one ([`ThreadStore::keys`](crate::ThreadStore::keys)); the contract they keep is the
/// test `contract::keys` in this crate.
pub trait KeyStore: Send + Sync {
    /// Stores a new key; fails with [`StoreError::KeyNameTaken`](crate::StoreError::KeyNameTaken)
    /// when its name is another key's.
    fn create_key<'a>(&'a self, key: &'a ApiKey) -> StoreFuture<'a, ()>;
    /// Every key, revoked ones too, by name.
    fn list_keys(&self) -> StoreFuture<'_, Vec<ApiKey>>;
    /// The key whose secret hashes to `sha256`, if any (revoked or not).
    fn key_by_hash<'a>(&'a self, sha256: &'a [u8; 32]) -> StoreFuture<'a, Option<ApiKey>>;
    /// Revokes the key with this id or name (once: a second revocation keeps the first time);
    /// returns it, or `None` when there is no such key.
    fn revoke_key<'a>(&'a self, id_or_name: &'a str) -> StoreFuture<'a, Option<ApiKey>>;
    /// Records that the key was used at `at_ms` (never earlier than what is recorded).
    fn touch_key<'a>(&'a self, id: &'a str, at_ms: i64) -> StoreFuture<'a, ()>;
    /// Adds to the key's usage counters (see [`usage`]), in one transaction.
    fn add_key_usage<'a>(&'a self, id: &'a str, counts: &'a [(String, u64)]) -> StoreFuture<'a, ()>;
    /// The key's usage counters (absent: zero).
    fn key_usage<'a>(&'a self, id: &'a str) -> StoreFuture<'a, BTreeMap<String, u64>>;
    /// Counts one turn of the key in minute `minute` (ms since the epoch / 60 000) and returns
    /// the minute's count with it, atomically (every node shares the counter); counts of minutes
    /// before `minute - 1` are dropped.
    fn count_key_turn<'a>(&'a self, id: &'a str, minute: i64) -> StoreFuture<'a, u64>;
    /// Makes `owner` the owner of a conversation that has none; returns whether it now is the
    /// owner (false: unknown conversation, or another owner).
    fn set_owner<'a>(&'a self, conversation: &'a ConversationId, owner: &'a str) -> StoreFuture<'a, bool>;
    /// The conversations `owner` owns, as [`ThreadStore::list`](crate::ThreadStore::list) lists
    /// them all.
    fn list_owned<'a>(
        &'a self,
        owner: &'a str,
        after: Option<ListCursor>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<ThreadRecord>>;
    /// How many conversations `owner` owns.
    fn count_owned<'a>(&'a self, owner: &'a str) -> StoreFuture<'a, u64>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_matches_its_key_only() {
        let (key, secret) = ApiKey::generate("a", KeyLimits::default()).unwrap();
        assert!(secret.starts_with(KEY_PREFIX) && secret.len() == 4 + 43, "{}", secret.len());
        assert!(key.id.starts_with("key_"));
        assert_eq!(key.prefix, secret[..PREFIX_CHARS]);
        assert!(key.matches(&secret));
        assert!(!key.matches(&format!("{secret}x")));
        let (_, other) = ApiKey::generate("b", KeyLimits::default()).unwrap();
        assert!(!key.matches(&other));
    }
}
