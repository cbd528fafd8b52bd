//! Where conversations run: choosing a process with the strategy, starting a conversation's
//! codex thread there, and rebuilding a conversation that no process holds from the store's
//! history (a new codex thread with the same settings, given the history with
//! `thread/inject_items`).

use crate::config::PoolConfig;
use crate::counters::Counters;
use crate::error::PoolError;
use crate::ownership::Leases;
use crate::profile::Profile;
use crate::routing::{Loaded, Routing};
use crate::store_writer::StoreWriter;
use crate::strategy::{Candidate, SelectionStrategy};
use crate::supervisor::Slot;
use codex_pool_process::{AppServerHandle, ProcessError};
use codex_pool_protocol::methods::{ThreadSettings, ThreadStartParams};
use codex_pool_protocol::CodexThreadId;
use codex_pool_store::{ConversationId, ThreadRecord, ThreadStore, TurnRecord};
use serde_json::{Map, Value};
use std::sync::Arc;

/// A conversation loaded on a live process, ready for a turn.
pub(crate) struct Placement {
    pub slot: Arc<Slot>,
    pub handle: AppServerHandle,
    pub codex_id: CodexThreadId,
}

/// Places conversations on processes.
pub(crate) struct Placer {
    slots: Vec<Arc<Slot>>,
    strategy: Box<dyn SelectionStrategy>,
    routing: Arc<Routing>,
    store: Arc<dyn ThreadStore>,
    writer: Arc<StoreWriter>,
    counters: Arc<Counters>,
    leases: Leases,
}

/// The turn id under which the history a conversation was created with is stored (see
/// [`Pool::create_thread_with_history`](crate::Pool::create_thread_with_history)).
pub const INITIAL_HISTORY_TURN: &str = "initial-history";

impl Placer {
    pub(crate) fn new(
        config: &PoolConfig,
        slots: Vec<Arc<Slot>>,
        routing: Arc<Routing>,
        store: Arc<dyn ThreadStore>,
        writer: Arc<StoreWriter>,
        counters: Arc<Counters>,
        leases: Leases,
    ) -> Self {
        Self { slots, strategy: config.strategy.build(), routing, store, writer, counters, leases }
    }

    /// The process of a codex thread, if it still serves.
    pub(crate) fn live_handle(&self, loaded: &Loaded) -> Option<AppServerHandle> {
        self.slots[loaded.slot].live(loaded.generation)
    }

    /// Chooses a ready process for new work.
    fn select(&self) -> Result<(Arc<Slot>, AppServerHandle, u64), PoolError> {
        let ready: Vec<(Arc<Slot>, AppServerHandle, u64)> =
            self.slots.iter().filter_map(|s| s.ready().map(|(h, g)| (s.clone(), h, g))).collect();
        if ready.is_empty() {
            return Err(PoolError::Unavailable);
        }
        let loads = self.routing.loads();
        let candidates: Vec<Candidate> = ready
            .iter()
            .map(|(s, _, _)| Candidate {
                slot: s.index,
                active_turns: loads[s.index].running,
                loaded_threads: loads[s.index].loaded,
            })
            .collect();
        let pick = self.strategy.select(&candidates).ok_or(PoolError::Unavailable)?;
        ready.into_iter().nth(pick).ok_or(PoolError::Unavailable)
    }

    /// Starts a new conversation on a process the strategy picks and stores it; its id is the
    /// id of its first codex thread, and stays the same for the conversation's whole life.
    /// `history` (Responses API items) is given to codex and stored as where the conversation
    /// starts from; it counts as no turn.
    pub(crate) async fn create(
        &self,
        settings: ThreadSettings,
        profile: Profile,
        metadata: Map<String, Value>,
        history: Vec<Value>,
    ) -> Result<ConversationId, PoolError> {
        let ephemeral = profile.ephemeral();
        let mut last_err = PoolError::Unavailable;
        for _ in 0..self.slots.len().max(1) {
            let (slot, handle, generation) = self.select()?;
            match rebuild_on(&handle, &settings, ephemeral, &history).await {
                Ok(codex_id) => {
                    let id = ConversationId::from(codex_id.as_str());
                    if !ephemeral {
                        name_on_disk(&handle, &codex_id, &id).await;
                    }
                    let record = ThreadRecord {
                        ephemeral,
                        profile: profile.name().to_owned(),
                        metadata,
                        ..ThreadRecord::new(id.clone(), settings.clone())
                    };
                    // This arm returns either way, so the history and metadata move.
                    if let Err(e) = self.save_new(record, history).await {
                        // Not stored means not created: do not leave it loaded in codex.
                        let _ = handle.unsubscribe(&codex_id).await;
                        return Err(e);
                    }
                    let loaded = Loaded { slot: slot.index, generation, codex_id };
                    self.routing.insert_created(id.clone(), settings, ephemeral, loaded);
                    tracing::debug!(conversation = %id, slot = slot.index, "conversation created");
                    return Ok(id);
                }
                Err(e) if e.is_process_gone() => last_err = PoolError::codex(e),
                Err(e) if history.is_empty() => return Err(PoolError::codex(e)),
                Err(e) => return Err(PoolError::History(e)),
            }
        }
        Err(last_err)
    }

    /// Stores a new conversation and the history it starts from (or neither); a node sharing
    /// the store takes its lease first.
    async fn save_new(&self, record: ThreadRecord, history: Vec<Value>) -> Result<(), PoolError> {
        let id = record.id.clone();
        let fence = self.leases.take_new(&id).await?;
        if let Err(e) = self.store.save(record).await {
            self.let_go(&id).await;
            return Err(e.into());
        }
        if history.is_empty() {
            return Ok(());
        }
        let initial =
            TurnRecord { completed: false, fence, ..TurnRecord::completed(id.clone(), INITIAL_HISTORY_TURN, history) };
        if let Err(e) = self.store.record_turns(&[initial]).await {
            let _ = self.store.delete(&id).await;
            self.let_go(&id).await;
            return Err(e.into());
        }
        Ok(())
    }

    /// Gives back this node's lease on a conversation it no longer holds (several nodes only).
    pub(crate) async fn let_go(&self, id: &ConversationId) {
        self.leases.release(id).await;
    }

    /// Makes sure a (claimed) conversation is loaded on a live process: where it is, or else
    /// rebuilt on a process the strategy picks.
    pub(crate) async fn place(
        &self,
        id: &ConversationId,
        settings: &ThreadSettings,
        ephemeral: bool,
        loaded: Option<Loaded>,
    ) -> Result<Placement, PoolError> {
        if let Some(loaded) = loaded {
            if let Some(handle) = self.live_handle(&loaded) {
                return Ok(Placement { slot: self.slots[loaded.slot].clone(), handle, codex_id: loaded.codex_id });
            }
        }
        // No process serves (or the pool never started): say so before waiting on the store.
        if self.slots.iter().all(|s| s.ready().is_none()) {
            return Err(PoolError::Unavailable);
        }
        // What earlier turns added must be in the store before it is read.
        self.writer.flush().await;
        let history = self.store.history(id).await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (slot, handle, generation) = self.select()?;
            match rebuild_on(&handle, settings, ephemeral, &history).await {
                Ok(codex_id) => {
                    tracing::debug!(
                        conversation = %id,
                        %codex_id,
                        process = handle.label(),
                        items = history.len(),
                        "conversation rebuilt from the store"
                    );
                    self.counters.rebuilt();
                    if !ephemeral {
                        name_on_disk(&handle, &codex_id, id).await;
                    }
                    let loaded = Loaded { slot: slot.index, generation, codex_id: codex_id.clone() };
                    self.routing.set_loaded(id, Some(loaded));
                    return Ok(Placement { slot, handle, codex_id });
                }
                Err(e) if e.is_process_gone() && attempt <= self.slots.len() => continue,
                Err(e) => return Err(PoolError::Rebuild { thread_id: id.clone(), source: e }),
            }
        }
    }

    /// Unloads a codex thread the pool no longer routes to (with the unload delay of 0 in the
    /// base overrides, codex then drops it from memory). Nothing to do if its process is gone.
    pub(crate) async fn unload(&self, loaded: &Loaded, why: &'static str) {
        let Some(handle) = self.live_handle(loaded) else { return };
        if let Err(e) = handle.unsubscribe(&loaded.codex_id).await {
            tracing::debug!(codex_thread_id = %loaded.codex_id, why, error = %e, "unsubscribe failed");
        }
    }

    /// Deletes a conversation's codex threads for good: the loaded one, and those codex keeps on
    /// disk for a coding-agent conversation (every one named after it, see [`name_on_disk`], and
    /// its first, whose id is the conversation's). `thread/delete` removes a thread's rollout
    /// file and its rows in codex's databases, loaded or not (the processes share `CODEX_HOME`);
    /// an ephemeral thread (nothing on disk, and codex refuses to delete it) is unsubscribed.
    pub(crate) async fn delete(&self, id: &ConversationId, loaded: Option<&Loaded>) {
        if let Some((loaded, handle)) = loaded.and_then(|l| Some((l, self.live_handle(l)?))) {
            if let Err(e) = handle.delete_thread(&loaded.codex_id).await {
                tracing::debug!(codex_thread_id = %loaded.codex_id, error = %e, "thread/delete refused; unsubscribing");
                if let Err(e) = handle.unsubscribe(&loaded.codex_id).await {
                    tracing::debug!(codex_thread_id = %loaded.codex_id, error = %e, "unsubscribe failed");
                }
            }
        }
        let Some((handle, _)) = self.slots.iter().find_map(|s| s.ready()) else { return };
        let mut on_disk = match handle.threads_named(&disk_name(id)).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(conversation = %id, error = %e, "cannot list codex's threads of a deleted conversation");
                Vec::new()
            }
        };
        on_disk.push(CodexThreadId::from(id.as_str()));
        on_disk.retain(|c| loaded.is_none_or(|l| l.codex_id != *c));
        on_disk.dedup();
        for codex_id in on_disk {
            // A chat conversation's first thread was never on disk: codex says so.
            if let Err(e) = handle.delete_thread(&codex_id).await {
                tracing::debug!(%codex_id, error = %e, "thread/delete of an unloaded thread refused");
            }
        }
    }
}

/// The name of every codex thread of a conversation that codex keeps on disk (coding-agent
/// conversations): how a delete finds them all, and how codex's own tools list them.
fn disk_name(id: &ConversationId) -> String {
    format!("codex-pool {id}")
}

/// Names a codex thread kept on disk after its conversation (see [`disk_name`]). A thread left
/// unnamed is found by a delete only if it is the conversation's first (same id) or loaded.
async fn name_on_disk(handle: &AppServerHandle, codex_id: &CodexThreadId, id: &ConversationId) {
    if let Err(e) = handle.set_thread_name(codex_id, &disk_name(id)).await {
        tracing::warn!(conversation = %id, %codex_id, error = %e, "cannot name a codex thread; a delete may miss it");
    }
}

/// `thread/start` params for a conversation: its settings, in memory only if it is ephemeral,
/// and with every history item reported, so the store keeps the history.
pub(crate) fn start_params(settings: &ThreadSettings, ephemeral: bool) -> ThreadStartParams {
    ThreadStartParams {
        settings: settings.clone(),
        ephemeral: ephemeral.then_some(true),
        experimental_raw_events: true,
    }
}

/// Starts a codex thread with the conversation's settings and gives it the history.
async fn rebuild_on(
    handle: &AppServerHandle,
    settings: &ThreadSettings,
    ephemeral: bool,
    history: &[Value],
) -> Result<CodexThreadId, ProcessError> {
    let codex_id = handle.start_thread(&start_params(settings, ephemeral)).await?.thread.id;
    // What the model saw last: after a compaction, its summary and what followed.
    let history = crate::compaction::model_history(history);
    if !history.is_empty() {
        if let Err(e) = handle.inject_items(&codex_id, history).await {
            // Half a conversation is no conversation: do not leave it loaded.
            let _ = handle.unsubscribe(&codex_id).await;
            return Err(e);
        }
    }
    Ok(codex_id)
}
