//! What callers do with conversations: create them, run turns, interrupt, release (unload
//! from codex, keep in the store) and delete them, and read what the pool knows of them.

use crate::error::PoolError;
use crate::ownership::TurnLease;
use crate::pool::{Pool, PoolInner};
use crate::profile::Profile;
use crate::routing::{Refused, ThreadState};
use crate::turn::{Ask, PoolTurn};
use codex_pool_process::hops::hop;
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::types::{ApprovalPolicy, ReasoningEffort, UserInput};
use codex_pool_protocol::{CodexThreadId, ToolSpec};
use codex_pool_store::{ConversationId, ListCursor, StoredItem, ThreadRecord};
use serde_json::{Map, Value};

/// Per-turn options (they stick for later turns of the conversation, as codex does).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TurnOptions {
    /// Model override.
    pub model: Option<String>,
    /// Reasoning effort override.
    pub effort: Option<ReasoningEffort>,
    /// Approval policy override.
    pub approval_policy: Option<ApprovalPolicy>,
    /// JSON Schema for the final message.
    pub output_schema: Option<Value>,
    /// The conversation's client tools from this turn on (`None`: as they are). A list that
    /// differs from the conversation's is kept with it, and its codex thread is rebuilt from the
    /// store with the new list (codex takes tools when a thread starts only).
    pub tools: Option<Vec<ToolSpec>>,
    /// Refuse the turn at once ([`PoolError::Overloaded`]) when its process runs
    /// `max_turns_per_process` turns, rather than wait up to `overload_wait` for room. Services
    /// set it, to tell their client to retry at once; the default (`false`) waits. Not kept for
    /// later turns.
    pub refuse_when_full: bool,
}

/// What the pool knows of a conversation: its stored record, and what runs where now.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConversationInfo {
    /// As stored: settings, profile, metadata, times, turns.
    pub record: ThreadRecord,
    /// A turn runs (or is being started).
    pub running: bool,
    /// Where codex holds it now (slot, codex thread), if a live process does.
    pub loaded: Option<(usize, CodexThreadId)>,
}

impl ConversationInfo {
    /// The profile it was created with, as stored; a name the pool does not know (a corrupt or
    /// hand-edited record) is [`PoolError::CorruptProfile`], never taken for another profile.
    pub fn profile(&self) -> Result<Profile, PoolError> {
        Profile::stored(&self.record)
    }
}

impl Pool {
    /// Creates a conversation with the pool's default profile (see [`Pool::create_thread_with`]).
    pub async fn create_thread(&self, settings: ThreadSettings) -> Result<ConversationId, PoolError> {
        self.create_thread_with(settings, self.inner.config.default_profile).await
    }

    /// Creates a conversation on a process chosen by the strategy and stores it; returns its id,
    /// which stays the same for the conversation's whole life. The profile fills in what the
    /// settings leave unset, then the pool's defaults: `CODEX_MODEL` and the empty working
    /// directory.
    pub async fn create_thread_with(
        &self,
        settings: ThreadSettings,
        profile: Profile,
    ) -> Result<ConversationId, PoolError> {
        self.create_thread_with_metadata(settings, profile, Map::new()).await
    }

    /// [`Pool::create_thread_with`], with metadata stored beside the conversation (the pool never
    /// reads it).
    pub async fn create_thread_with_metadata(
        &self,
        settings: ThreadSettings,
        profile: Profile,
        metadata: Map<String, Value>,
    ) -> Result<ConversationId, PoolError> {
        self.create_thread_with_history(settings, profile, metadata, Vec::new()).await
    }

    /// [`Pool::create_thread_with_metadata`], starting from a history: Responses API items
    /// (`{"type":"message","role":"user","content":[{"type":"input_text","text":..}]}`, and role
    /// `assistant` with `output_text`), given to codex (`thread/inject_items`) and stored as the
    /// conversation's first items; they count as no turn. A history codex refuses fails with
    /// [`PoolError::History`], and nothing is created.
    pub async fn create_thread_with_history(
        &self,
        settings: ThreadSettings,
        profile: Profile,
        metadata: Map<String, Value>,
        history: Vec<Value>,
    ) -> Result<ConversationId, PoolError> {
        let inner = &self.inner;
        inner.check_open()?;
        crate::tools::check_tools(&settings.dynamic_tools)?;
        let mut settings = profile.apply(settings);
        if settings.model.is_none() {
            settings.model = inner.config.default_model.clone();
        }
        if settings.cwd.is_none() {
            settings.cwd = Some(inner.config.process.work_dir.display().to_string());
        }
        if let Some(limit) = inner.config.compact_token_limit(profile, settings.model.as_deref()) {
            let config = settings.config.get_or_insert_with(Map::new);
            config.entry("model_auto_compact_token_limit").or_insert_with(|| Value::from(limit));
        }
        inner.placer.create(settings, profile, metadata, history).await
    }

    /// Starts a turn and returns its event stream. Follow-up turns go to the process that holds
    /// the conversation; one that no process holds (its process died, it idled out, the pool
    /// restarted) is rebuilt first on a process the strategy picks, from the store's history.
    /// Input longer than codex takes is refused with [`PoolError::InputTooLarge`] before anything
    /// changes.
    pub async fn start_turn(
        &self,
        id: &ConversationId,
        input: Vec<UserInput>,
        options: TurnOptions,
    ) -> Result<PoolTurn, PoolError> {
        let inner = &self.inner;
        hop(id.as_str(), "pool.start");
        inner.check_open()?;
        codex_pool_process::check_input(&input).map_err(|e| PoolError::from_process(id, e))?;
        // Several nodes: the lease first, so what is read next is what its last owner left.
        if let Some(tools) = &options.tools {
            crate::tools::check_tools(tools)?;
        }
        let (lease, claim, mut claimed) = inner.claim_for_new_input(id).await?;
        let fence = lease.as_ref().map(TurnLease::fence);
        inner.apply_tools(id, &mut claimed, &options, fence);
        let loaded = inner.trusted_thread(id, &mut claimed).await;
        let sent =
            inner.place_and_send(claim, &claimed, loaded, Ask::Turn { input: &input, given: &[] }, &options).await?;
        inner.remember_options(id, &options, fence);
        Ok(inner.pool_turn(id, sent, lease, &claimed.settings, input, Vec::new()))
    }

    /// Has codex compact a conversation's history now (`thread/compact/start`), whatever its
    /// threshold: a turn codex runs itself, whose events this returns (a `contextCompaction`
    /// item, then the end). Its summary is kept like an automatic compaction's, and later
    /// rebuilds start from it. Fails like [`Pool::start_turn`] (busy, pending tool calls, ...).
    pub async fn compact(&self, id: &ConversationId) -> Result<PoolTurn, PoolError> {
        let inner = &self.inner;
        inner.check_open()?;
        let (lease, claim, mut claimed) = inner.claim_for_new_input(id).await?;
        let loaded = inner.trusted_thread(id, &mut claimed).await;
        // The compaction adds to the history but is no turn: its items go with the latest turn.
        inner.writer.flush().await;
        let latest = inner.store.load(id).await?.and_then(|r| r.last_turn);
        let options = TurnOptions::default();
        let sent = inner.place_and_send(claim, &claimed, loaded, Ask::Compact, &options).await?;
        let turn = inner.pool_turn(id, sent, lease, &claimed.settings, Vec::new(), Vec::new());
        let turn = match latest {
            Some(latest) => turn.record_as(latest),
            None => turn,
        };
        Ok(turn.named().await)
    }

    /// Interrupts the running turn of a conversation. With several nodes, a turn running on
    /// another node fails with `StoreError::OwnedElsewhere`, naming it.
    pub async fn interrupt_turn(&self, id: &ConversationId) -> Result<(), PoolError> {
        let inner = &self.inner;
        let no_turn = || PoolError::NoActiveTurn(id.clone());
        let Some((loaded, state)) = inner.routing.get(id) else {
            return match inner.store.load(id).await? {
                Some(_) => {
                    inner.check_elsewhere(id).await?;
                    Err(no_turn())
                }
                None => Err(PoolError::UnknownThread(id.clone())),
            };
        };
        if !matches!(state, ThreadState::TurnRunning { .. }) {
            inner.check_elsewhere(id).await?;
            return Err(no_turn());
        }
        let loaded = loaded.ok_or_else(no_turn)?;
        let handle = inner.placer.live_handle(&loaded).ok_or_else(no_turn)?;
        handle.interrupt(&loaded.codex_id).await.map_err(|e| PoolError::from_process(id, e))
    }

    /// Releases a conversation from the pool (the seed's `release_thread`): codex unloads it,
    /// the store keeps it, and its next turn rebuilds it on a process the strategy picks. Fails
    /// with [`PoolError::ThreadBusy`] while a turn runs.
    pub async fn release_thread(&self, id: &ConversationId) -> Result<(), PoolError> {
        let inner = &self.inner;
        match inner.routing.claim_unload(id).await {
            Ok(loaded) => {
                if let Some(loaded) = loaded {
                    inner.placer.unload(&loaded, "release").await;
                }
                inner.placer.let_go(id).await;
                inner.routing.unloaded(id);
                Ok(())
            }
            Err(Refused::Busy) => Err(PoolError::ThreadBusy(id.clone())),
            // Not in memory: nothing is loaded; it must exist in the store, though.
            Err(Refused::Unknown) => match inner.store.load(id).await? {
                Some(_) => Ok(()),
                None => Err(PoolError::UnknownThread(id.clone())),
            },
        }
    }

    /// Deletes a conversation: deletes its codex threads (for a coding-agent conversation,
    /// codex's rollout files of them too: the loaded one, its first, and those rebuilt since the
    /// pool started) and forgets it, in the store
    /// too, with its history. Fails with [`PoolError::ThreadBusy`] while a turn runs.
    pub async fn delete_thread(&self, id: &ConversationId) -> Result<(), PoolError> {
        let inner = &self.inner;
        let known = match inner.routing.claim_delete(id).await {
            Ok(known) => known,
            Err(_) => return Err(PoolError::ThreadBusy(id.clone())),
        };
        // What is queued for it is written first, so nothing brings it back from the store.
        inner.writer.flush().await;
        match inner.store.delete(id).await {
            Ok(existed) => {
                inner.leases.forget(id);
                let loaded = inner.routing.finish_delete(id, true);
                inner.placer.delete(id, loaded.as_ref()).await;
                if known || existed {
                    Ok(())
                } else {
                    Err(PoolError::UnknownThread(id.clone()))
                }
            }
            Err(e) => {
                inner.routing.finish_delete(id, false);
                Err(e.into())
            }
        }
    }

    /// Several nodes: fails with `StoreError::OwnedElsewhere` (naming the node and its address)
    /// if another node serves the conversation now; a pool alone on its store never fails.
    pub async fn check_served_here(&self, id: &ConversationId) -> Result<(), PoolError> {
        self.inner.check_elsewhere(id).await
    }

    /// What the pool knows of a conversation; `None` for an unknown id.
    pub async fn conversation(&self, id: &ConversationId) -> Result<Option<ConversationInfo>, PoolError> {
        let Some(record) = self.inner.store.load(id).await? else { return Ok(None) };
        Ok(Some(self.info(record)))
    }

    /// Conversations, newest first: at most `limit`, after `after` (the last of the previous
    /// page).
    pub async fn conversations(
        &self,
        after: Option<ListCursor>,
        limit: usize,
    ) -> Result<Vec<ConversationInfo>, PoolError> {
        let records = self.inner.store.list(after, limit).await?;
        Ok(records.into_iter().map(|r| self.info(r)).collect())
    }

    /// The conversations API key `owner` owns, newest first, as [`Pool::conversations`] lists
    /// them all.
    pub async fn conversations_owned(
        &self,
        owner: &str,
        after: Option<ListCursor>,
        limit: usize,
    ) -> Result<Vec<ConversationInfo>, PoolError> {
        let records = self.inner.store.keys().list_owned(owner, after, limit).await?;
        Ok(records.into_iter().map(|r| self.info(r)).collect())
    }

    /// A page of a conversation's stored history: at most `limit` items after position
    /// `after_seq`, oldest first. Fails for an unknown id.
    pub async fn items(&self, id: &ConversationId, after_seq: u64, limit: usize) -> Result<Vec<StoredItem>, PoolError> {
        let inner = &self.inner;
        // What finished turns queued is in the store before it is read.
        inner.writer.flush().await;
        if inner.store.load(id).await?.is_none() {
            return Err(PoolError::UnknownThread(id.clone()));
        }
        Ok(inner.store.items(id, after_seq, limit).await?)
    }

    /// A conversation's whole stored history, oldest first: every page of [`Pool::items`],
    /// read after one flush and one check that the conversation exists. Fails for an unknown id.
    pub async fn all_items(&self, id: &ConversationId) -> Result<Vec<StoredItem>, PoolError> {
        const PAGE: usize = 500;
        let mut all = self.items(id, 0, PAGE).await?;
        let mut more = all.len() == PAGE;
        while more {
            let page = self.inner.store.items(id, all.last().map_or(0, |i| i.seq), PAGE).await?;
            more = page.len() == PAGE;
            all.extend(page);
        }
        Ok(all)
    }

    fn info(&self, record: ThreadRecord) -> ConversationInfo {
        let (loaded, state) = self.inner.live_loaded(&record.id);
        let running = matches!(state, Some(ThreadState::TurnRunning { .. }));
        ConversationInfo { record, running, loaded: loaded.map(|l| (l.slot, l.codex_id)) }
    }
}

impl PoolInner {
    /// Several nodes: fails with `StoreError::OwnedElsewhere` if another node serves the
    /// conversation (its turns run there).
    async fn check_elsewhere(&self, id: &ConversationId) -> Result<(), PoolError> {
        Ok(self.leases.check_elsewhere(id).await?)
    }
}
