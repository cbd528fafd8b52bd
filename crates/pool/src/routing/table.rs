//! The routing table's data: one entry per conversation in use, and the idle index kept in
//! step with it. Every change of an entry goes through [`Table::change`], which moves the entry
//! in the index when its state, slot or last use changes.

use super::idle::{IdleIndex, IdleKey};
use super::{Loaded, SlotLoad, ThreadState};
use crate::store_writer::WriteTicket;
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_store::{ConversationId, PendingCall};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What the pool knows of one conversation.
pub(super) struct Entry {
    pub(super) settings: ThreadSettings,
    pub(super) ephemeral: bool,
    pub(super) loaded: Option<Loaded>,
    pub(super) state: ThreadState,
    pub(super) last_used: Instant,
    /// The store's answer about the last turn, which its consumer did not wait for.
    pub(super) unconfirmed: Option<WriteTicket>,
    /// Client tool calls with no output yet (as stored).
    pub(super) pending: Vec<PendingCall>,
}

impl Entry {
    /// A new conversation: idle, held by no codex thread, used now.
    pub(super) fn new(settings: ThreadSettings, ephemeral: bool) -> Self {
        Entry {
            settings,
            ephemeral,
            loaded: None,
            state: ThreadState::Idle,
            last_used: Instant::now(),
            unconfirmed: None,
            pending: Vec::new(),
        }
    }

    /// Where it sits in the idle index (`unplaced`: the set of those no codex thread holds), if
    /// it is idle.
    fn idle_key(&self, unplaced: usize) -> Option<IdleKey> {
        (self.state == ThreadState::Idle)
            .then(|| IdleKey { set: self.loaded.as_ref().map_or(unplaced, |l| l.slot), last_used: self.last_used })
    }
}

/// The table itself, behind [`Routing`]'s lock.
pub(super) struct Table {
    pub(super) threads: HashMap<ConversationId, Entry>,
    /// The idle ones of `threads`, by slot and last use; changed only with them (see
    /// [`Table::change`]).
    pub(super) idle: IdleIndex,
    pub(super) slots: Vec<SlotLoad>,
    /// codex threads no conversation uses any more, still loaded on a process: the reaper
    /// unloads them.
    pub(super) orphans: Vec<Loaded>,
    /// Wakes the reaper.
    pub(super) reap: Arc<Notify>,
}

impl Table {
    /// Adds a conversation (idle).
    pub(super) fn insert(&mut self, id: ConversationId, entry: Entry) {
        if let Some(old) = self.threads.remove(&id) {
            self.unindex(&id, &old);
        }
        self.index(&id, &entry);
        self.threads.insert(id, entry);
    }

    /// Forgets a conversation (what held it is the caller's to unload).
    pub(super) fn remove(&mut self, id: &ConversationId) -> Option<Entry> {
        let entry = self.threads.remove(id)?;
        self.unindex(id, &entry);
        Some(entry)
    }

    /// Changes a conversation with `change`, keeping the idle index in step.
    pub(super) fn change<T>(&mut self, id: &ConversationId, change: impl FnOnce(&mut Entry) -> T) -> Option<T> {
        let unplaced = self.slots.len();
        let entry = self.threads.get_mut(id)?;
        let before = entry.idle_key(unplaced);
        let answer = change(entry);
        let after = entry.idle_key(unplaced);
        if before != after {
            if let Some(key) = before {
                self.idle.remove(key, id);
            }
            if let Some(key) = after {
                if self.idle.insert(key, id.clone()) {
                    self.reap.notify_one();
                }
            }
        }
        Some(answer)
    }

    fn index(&mut self, id: &ConversationId, entry: &Entry) {
        if let Some(key) = entry.idle_key(self.slots.len()) {
            if self.idle.insert(key, id.clone()) {
                self.reap.notify_one();
            }
        }
    }

    fn unindex(&mut self, id: &ConversationId, entry: &Entry) {
        if let Some(key) = entry.idle_key(self.slots.len()) {
            self.idle.remove(key, id);
        }
    }

    /// Counts a codex thread in (`1`) or out (`-1`) of its slot's load, if it is on the
    /// slot's current process.
    pub(super) fn count(&mut self, loaded: &Option<Loaded>, delta: isize) {
        if let Some(l) = loaded {
            let slot = &mut self.slots[l.slot];
            if slot.generation == l.generation {
                slot.loaded = slot.loaded.saturating_add_signed(delta);
            }
        }
    }

    /// The conversation is now held by `loaded`; returns what held it before.
    pub(super) fn set_loaded(&mut self, id: &ConversationId, loaded: Option<Loaded>) -> Option<Loaded> {
        let old = self.change(id, |entry| std::mem::replace(&mut entry.loaded, loaded.clone()))?;
        self.count(&old, -1);
        self.count(&loaded, 1);
        old
    }
}
