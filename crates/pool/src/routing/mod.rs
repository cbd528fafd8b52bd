//! The routing table: every conversation in use, where codex holds it now, and what is
//! happening to it. It is the one owner of these facts, and of the counts made from them (turns
//! running and threads loaded, per process), so they never disagree.
//!
//! A conversation is in exactly one [`ThreadState`]; every change of state goes through a method
//! here, under one short lock that is never held across an `.await`. Whoever waits for a state
//! to change waits on a notification, not a timer.
//!
//! The table holds the conversations in use, not every one ever served: one unloaded from codex
//! (idle, over a cap, released) is dropped, and its next turn reads it from the store again.
//! Beside the map, the idle ones are kept ordered by last use ([`idle`]), so the reaper takes
//! what has idled out and sleeps until the next one would, without walking the table.

use crate::store_writer::WriteTicket;
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::CodexThreadId;
use codex_pool_store::{ConversationId, PendingCall, ThreadRecord};
use idle::IdleIndex;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use table::{Entry, Table};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// A codex thread holding a conversation: on which process (slot and generation), under which id.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Loaded {
    pub slot: usize,
    pub generation: u64,
    pub codex_id: CodexThreadId,
}

/// What is happening to a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ThreadState {
    /// Nothing: it takes a turn, or can be unloaded or released.
    Idle,
    /// A turn is being started or runs (on `slot`, once placed).
    TurnRunning { slot: Option<usize> },
    /// The reaper is unloading it from codex; a turn waits until it is done.
    Unloading,
    /// It is being deleted; gone when that succeeds.
    Deleting,
}

/// Load of one process slot, as the routing table sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SlotLoad {
    /// The slot's current process; only threads loaded on it count.
    pub generation: u64,
    /// Conversations loaded on it.
    pub loaded: usize,
    /// Turns running on it.
    pub running: usize,
}

/// What a turn gets with its claim: what is needed to place the conversation.
pub(crate) struct Claimed {
    pub settings: ThreadSettings,
    pub ephemeral: bool,
    pub loaded: Option<Loaded>,
    /// The store's answer about the previous turn, if nobody waited for it.
    pub unconfirmed: Option<WriteTicket>,
    /// Client tool calls with no output yet.
    pub pending: Vec<PendingCall>,
}

/// Why a claim was refused.
pub(crate) enum Refused {
    /// The pool does not know the conversation (it may be in the store).
    Unknown,
    /// A turn runs, or the conversation is being deleted.
    Busy,
}

/// The table, with its notifications.
pub(crate) struct Routing {
    table: Mutex<Table>,
    /// A conversation left `Unloading` (waiting turns and releases look again).
    unloaded: Notify,
    /// Turns running in the whole pool (shutdown waits for none).
    running: watch::Sender<usize>,
    /// Wakes the reaper: a process went over its cap of loaded threads, or orphans wait.
    reap: Arc<Notify>,
    cap: usize,
}

impl Routing {
    pub(crate) fn new(slots: usize, cap: usize) -> Self {
        let reap = Arc::new(Notify::new());
        Self {
            table: Mutex::new(Table {
                threads: HashMap::new(),
                idle: IdleIndex::new(slots + 1),
                slots: vec![SlotLoad::default(); slots],
                orphans: Vec::new(),
                reap: reap.clone(),
            }),
            unloaded: Notify::new(),
            running: watch::channel(0).0,
            reap,
            cap,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What wakes the reaper.
    pub(crate) fn reap_signal(&self) -> Arc<Notify> {
        self.reap.clone()
    }

    /// Turns running in the pool, as they change.
    pub(crate) fn running(&self) -> watch::Receiver<usize> {
        self.running.subscribe()
    }

    /// A slot has a new process: nothing is loaded on it yet.
    pub(crate) fn slot_restarted(&self, slot: usize, generation: u64) {
        let mut table = self.lock();
        let load = &mut table.slots[slot];
        load.generation = generation;
        load.loaded = 0;
    }

    /// The load of every slot.
    pub(crate) fn loads(&self) -> Vec<SlotLoad> {
        self.lock().slots.clone()
    }

    /// A conversation just created on a process.
    pub(crate) fn insert_created(&self, id: ConversationId, settings: ThreadSettings, ephemeral: bool, loaded: Loaded) {
        let mut table = self.lock();
        table.insert(id.clone(), Entry::new(settings, ephemeral));
        table.set_loaded(&id, Some(loaded));
        self.wake_if_over_cap(&table);
    }

    /// A conversation read from the store, unless the pool knows it already.
    pub(crate) fn insert_stored(&self, record: ThreadRecord) {
        let mut table = self.lock();
        if !table.threads.contains_key(&record.id) {
            let mut entry = Entry::new(record.settings, record.ephemeral);
            entry.pending = record.pending_calls;
            table.insert(record.id, entry);
        }
    }

    /// Runs `decide` under the table's lock until it answers; `None` means the conversation is
    /// being unloaded, and `decide` runs again once an unload has ended.
    async fn decide<T>(&self, mut decide: impl FnMut(&mut Table) -> Option<T>) -> T {
        loop {
            let unloaded = self.unloaded.notified();
            tokio::pin!(unloaded);
            unloaded.as_mut().enable();
            if let Some(answer) = decide(&mut self.lock()) {
                return answer;
            }
            unloaded.await;
        }
    }

    /// Takes the conversation for a turn: `Idle` becomes `TurnRunning`. A conversation being
    /// unloaded is waited for.
    pub(crate) async fn claim_turn(&self, id: &ConversationId) -> Result<Claimed, Refused> {
        let claimed = self
            .decide(|table| {
                let claim = |entry: &mut Entry| match entry.state {
                    ThreadState::Idle => {
                        entry.state = ThreadState::TurnRunning { slot: None };
                        Some(Ok(Claimed {
                            settings: entry.settings.clone(),
                            ephemeral: entry.ephemeral,
                            loaded: entry.loaded.clone(),
                            unconfirmed: entry.unconfirmed.take(),
                            pending: entry.pending.clone(),
                        }))
                    }
                    ThreadState::TurnRunning { .. } | ThreadState::Deleting => Some(Err(Refused::Busy)),
                    ThreadState::Unloading => None,
                };
                table.change(id, claim).unwrap_or(Some(Err(Refused::Unknown)))
            })
            .await;
        if claimed.is_ok() {
            self.running.send_modify(|n| *n += 1);
        }
        claimed
    }

    /// The claimed conversation's turn runs on `slot` (placed again after its process died: it
    /// moves).
    pub(crate) fn turn_placed(&self, id: &ConversationId, slot: usize) {
        let mut table = self.lock();
        let Some(entry) = table.threads.get_mut(id) else { return };
        let ThreadState::TurnRunning { slot: placed } = &mut entry.state else { return };
        let before = placed.replace(slot);
        if let Some(before) = before {
            table.slots[before].running -= 1;
        }
        table.slots[slot].running += 1;
    }

    /// The conversation's turn ended (or never started): it is `Idle` again. `unconfirmed` is
    /// the store's answer about the turn when nobody waited for it.
    pub(crate) fn end_turn(&self, id: &ConversationId, unconfirmed: Option<WriteTicket>) {
        let mut table = self.lock();
        let ended = table.change(id, |entry| {
            let ThreadState::TurnRunning { slot } = entry.state else { return None };
            entry.state = ThreadState::Idle;
            entry.last_used = Instant::now();
            entry.unconfirmed = unconfirmed;
            Some(slot)
        });
        let Some(Some(slot)) = ended else { return };
        if let Some(slot) = slot {
            table.slots[slot].running -= 1;
        }
        drop(table);
        self.running.send_modify(|n| *n -= 1);
    }

    /// The conversation is now held by `loaded` (or by no codex thread).
    pub(crate) fn set_loaded(&self, id: &ConversationId, loaded: Option<Loaded>) {
        let mut table = self.lock();
        table.set_loaded(id, loaded);
        self.wake_if_over_cap(&table);
    }

    /// The conversation's codex thread can no longer be trusted (its process died, or it holds a
    /// turn the store could not keep): the next turn rebuilds the conversation from the store,
    /// and the reaper unloads the old thread if its process still runs.
    pub(crate) fn forget_codex_thread(&self, id: &ConversationId) {
        let mut table = self.lock();
        if let Some(old) = table.set_loaded(id, None) {
            table.orphans.push(old);
            drop(table);
            self.reap.notify_one();
        }
    }

    /// Another node has served the conversation, or may have: if it is idle, the pool forgets
    /// it (settings and codex thread, which the reaper unloads), and its next turn reads it from
    /// the store again. A running turn keeps it: the store refuses that turn's write by its
    /// fence, which drops the codex thread then.
    pub(crate) fn evict_if_idle(&self, id: &ConversationId) {
        let mut table = self.lock();
        if !table.threads.get(id).is_some_and(|e| e.state == ThreadState::Idle) {
            return;
        }
        let old = table.set_loaded(id, None);
        table.remove(id);
        if let Some(old) = old {
            table.orphans.push(old);
            drop(table);
            self.reap.notify_one();
        }
    }

    /// codex threads to unload.
    pub(crate) fn take_orphans(&self) -> Vec<Loaded> {
        std::mem::take(&mut self.lock().orphans)
    }

    fn wake_if_over_cap(&self, table: &Table) {
        if table.slots.iter().any(|s| s.loaded > self.cap) {
            self.reap.notify_one();
        }
    }

    /// Picks the conversations to unload: on each slot, the least recently used idle ones past
    /// the cap, and every one idle for `idle_after` (held by a codex thread or not). They become
    /// `Unloading`, held by no codex thread; the caller unloads the thread each one had, then
    /// calls [`Routing::unloaded`], which forgets it. Nothing here walks the table: the idle
    /// index gives the oldest first.
    pub(crate) fn take_idle(&self, idle_after: Duration) -> Vec<(ConversationId, Option<Loaded>)> {
        let mut table = self.lock();
        let mut picked = Vec::new();
        for (slot, load) in table.slots.iter().enumerate() {
            let mut over = load.loaded.saturating_sub(self.cap);
            for id in table.idle.oldest_on(slot) {
                if over == 0 {
                    break;
                }
                // One held on a process that is gone counts for nothing, but goes too.
                if table.threads[id].loaded.as_ref().is_some_and(|l| l.generation == load.generation) {
                    over -= 1;
                }
                picked.push(id.clone());
            }
        }
        if let Some(cutoff) = Instant::now().checked_sub(idle_after) {
            picked.extend(table.idle.used_before(cutoff).cloned());
        }
        let mut unloading = Vec::new();
        for id in picked {
            let taken = table.change(&id, |entry| {
                let idle = entry.state == ThreadState::Idle;
                if idle {
                    entry.state = ThreadState::Unloading;
                }
                idle
            });
            if taken == Some(true) {
                let old = table.set_loaded(&id, None);
                unloading.push((id, old));
            }
        }
        unloading
    }

    /// When the least recently used idle conversation will have been idle for `idle_after`
    /// (`None` when none is idle): the reaper sleeps until then, or until woken.
    pub(crate) fn next_expiry(&self, idle_after: Duration) -> Option<Instant> {
        // An expiry past what an `Instant` holds never comes.
        self.lock().idle.oldest().and_then(|used| used.checked_add(idle_after))
    }

    /// Takes the conversation for unloading on request: `Idle` becomes `Unloading`, held by no
    /// codex thread; returns the one that held it. The caller unloads it, then calls
    /// [`Routing::unloaded`]. A conversation being unloaded already is waited for.
    pub(crate) async fn claim_unload(&self, id: &ConversationId) -> Result<Option<Loaded>, Refused> {
        self.decide(|table| {
            let claim = |entry: &mut Entry| match entry.state {
                ThreadState::Idle => {
                    entry.state = ThreadState::Unloading;
                    Some(Ok(()))
                }
                ThreadState::TurnRunning { .. } | ThreadState::Deleting => Some(Err(Refused::Busy)),
                ThreadState::Unloading => None,
            };
            match table.change(id, claim) {
                None => Some(Err(Refused::Unknown)),
                Some(Some(Ok(()))) => Some(Ok(table.set_loaded(id, None))),
                Some(Some(Err(refused))) => Some(Err(refused)),
                Some(None) => None,
            }
        })
        .await
    }

    /// The conversation is unloaded: the table forgets it (settings included: the store has
    /// them), and its next turn reads it from the store again.
    pub(crate) fn unloaded(&self, id: &ConversationId) {
        let mut table = self.lock();
        if table.threads.get(id).is_some_and(|e| e.state == ThreadState::Unloading) {
            table.remove(id);
        }
        drop(table);
        self.unloaded.notify_waiters();
    }

    /// Takes the conversation for deletion: `Idle` becomes `Deleting`; returns whether the pool
    /// knew it. A conversation being unloaded is waited for.
    pub(crate) async fn claim_delete(&self, id: &ConversationId) -> Result<bool, Refused> {
        self.decide(|table| {
            let claim = |entry: &mut Entry| match entry.state {
                ThreadState::Idle => {
                    entry.state = ThreadState::Deleting;
                    Some(Ok(true))
                }
                ThreadState::TurnRunning { .. } | ThreadState::Deleting => Some(Err(Refused::Busy)),
                ThreadState::Unloading => None,
            };
            table.change(id, claim).unwrap_or(Some(Ok(false)))
        })
        .await
    }

    /// The deletion is over: the conversation is forgotten (the codex thread that held it is
    /// returned, to be unloaded), or, when it failed, `Idle` again.
    pub(crate) fn finish_delete(&self, id: &ConversationId, deleted: bool) -> Option<Loaded> {
        let mut table = self.lock();
        if !deleted {
            table.change(id, |entry| {
                entry.state = ThreadState::Idle;
                entry.last_used = Instant::now();
            });
            return None;
        }
        let old = table.set_loaded(id, None);
        table.remove(id);
        old
    }

    /// Per-turn overrides that stick: kept with the settings for rebuilds; returns the new
    /// settings.
    pub(crate) fn update_settings(
        &self,
        id: &ConversationId,
        update: impl FnOnce(&mut ThreadSettings),
    ) -> Option<ThreadSettings> {
        self.lock().change(id, |entry| {
            update(&mut entry.settings);
            entry.settings.clone()
        })
    }

    /// The conversation's client tool calls with no output, as its store now holds them.
    pub(crate) fn set_pending(&self, id: &ConversationId, pending: Vec<PendingCall>) {
        self.lock().change(id, |entry| entry.pending = pending);
    }

    /// Whether `tools` differ from the client tools of the conversation as the pool knows it
    /// (`false` for a conversation it does not know).
    pub(crate) fn tools_differ(&self, id: &ConversationId, tools: &[codex_pool_protocol::ToolSpec]) -> bool {
        self.lock().threads.get(id).is_some_and(|e| e.settings.dynamic_tools != tools)
    }

    /// Where the conversation is loaded and its state.
    pub(crate) fn get(&self, id: &ConversationId) -> Option<(Option<Loaded>, ThreadState)> {
        self.lock().threads.get(id).map(|e| (e.loaded.clone(), e.state))
    }

    /// Whether a turn of the conversation runs (or is being started).
    pub(crate) fn is_running(&self, id: &ConversationId) -> bool {
        self.lock().threads.get(id).is_some_and(|e| matches!(e.state, ThreadState::TurnRunning { .. }))
    }

    /// Conversations in the table (in use: not unloaded), and of those, loaded on a slot's current
    /// process.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let table = self.lock();
        (table.threads.len(), table.slots.iter().map(|s| s.loaded).sum())
    }
}

mod idle;
mod table;
#[cfg(test)]
mod tests;
