//! The idle conversations by last use, oldest first (mini-redis's `expirations`): one ordered
//! set per process slot, and one for the conversations no codex thread holds. The routing table
//! keeps it beside its map and updates it on every change, so the reaper finds what has idled
//! out, what to unload from a slot over its cap, and when to look next, without a scan.

use codex_pool_store::ConversationId;
use std::collections::BTreeSet;
use tokio::time::Instant;

/// Where an idle conversation sits in the index: its slot (or the set of those no codex
/// thread holds) and when it was last used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IdleKey {
    pub set: usize,
    pub last_used: Instant,
}

/// Idle conversations, per slot, least recently used first.
pub(super) struct IdleIndex {
    sets: Vec<BTreeSet<(Instant, ConversationId)>>,
}

impl IdleIndex {
    /// An empty index for `sets` sets (the slots, and one more).
    pub(super) fn new(sets: usize) -> Self {
        Self { sets: vec![BTreeSet::new(); sets] }
    }

    /// Adds a conversation; returns whether it is now the least recently used of all (the
    /// next expiry came earlier, so a sleeping reaper must look again).
    pub(super) fn insert(&mut self, key: IdleKey, id: ConversationId) -> bool {
        let earliest = self.oldest().is_none_or(|oldest| key.last_used < oldest);
        self.sets[key.set].insert((key.last_used, id));
        earliest
    }

    /// Takes a conversation out.
    pub(super) fn remove(&mut self, key: IdleKey, id: &ConversationId) {
        // The key is rebuilt for the lookup only: ids are short.
        self.sets[key.set].remove(&(key.last_used, id.clone()));
    }

    /// When the least recently used idle conversation was last used.
    pub(super) fn oldest(&self) -> Option<Instant> {
        self.sets.iter().filter_map(|s| s.first()).map(|(used, _)| *used).min()
    }

    /// A slot's idle conversations, least recently used first.
    pub(super) fn oldest_on(&self, set: usize) -> impl Iterator<Item = &ConversationId> {
        self.sets[set].iter().map(|(_, id)| id)
    }

    /// Every idle conversation last used at or before `cutoff`.
    pub(super) fn used_before(&self, cutoff: Instant) -> impl Iterator<Item = &ConversationId> {
        self.sets.iter().flat_map(move |s| s.iter().take_while(move |(used, _)| *used <= cutoff).map(|(_, id)| id))
    }
}
