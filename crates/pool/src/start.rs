//! Starting a turn, step by step: the conversation's lease (several nodes), its claim, its
//! place on a live process (rebuilt there from the store if no process holds it), room on that
//! process, and the `turn/start`. [`Pool::start_turn`](crate::Pool::start_turn) strings them
//! together; whatever step fails or is dropped, the claim gives the conversation back as the
//! step requires ([`Ending`]).

use crate::conversations::TurnOptions;
use crate::error::PoolError;
use crate::ownership::TurnLease;
use crate::placement::Placement;
use crate::pool::PoolInner;
use crate::routing::{Claimed, Loaded, Refused};
use crate::tools::ClientTools;
use crate::turn::{Ask, Claim, Ending, Held, PoolTurn, Running};
use codex_pool_process::hops::hop;
use codex_pool_process::TurnStream;
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::methods::TurnStartParams;
use codex_pool_protocol::types::UserInput;
use codex_pool_store::{ConversationId, Fence};
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// A turn codex took: its stream, its claim (ending as [`Ending::Rebuild`] from now on), the
/// room it holds on its process, and the roots that process was spawned with.
pub(crate) struct Sent {
    pub claim: Claim,
    pub stream: TurnStream,
    pub permit: OwnedSemaphorePermit,
    pub ca_epoch: u64,
}

/// Why a turn got no room on its process.
pub(crate) enum NoRoom {
    /// The process runs as many turns as it may, and no room was made within the wait (or the
    /// turn would not wait).
    Full,
    /// The pool is shutting down.
    ShutDown,
}

impl PoolInner {
    /// Several nodes: this node's lease on the conversation (its fence, for the turn's writes),
    /// taken or renewed if need be; fails with `StoreError::OwnedElsewhere` while another node
    /// holds it. A lease new to this node means another node may have served the conversation
    /// meanwhile: what this node knew of it is forgotten, and read from the store again.
    pub(crate) async fn lease(&self, id: &ConversationId) -> Result<Option<TurnLease>, PoolError> {
        let lease = self.leases.for_turn(id).await?;
        if lease.as_ref().is_some_and(TurnLease::changed) {
            self.routing.evict_if_idle(id);
        }
        Ok(lease)
    }

    /// Takes the conversation for a turn (`TurnRunning` until the [`Claim`] is dropped),
    /// reading it from the store if the pool does not know it. For an id the store does not
    /// know either, the lease taken for it is given back.
    pub(crate) async fn claim_turn(&self, id: &ConversationId) -> Result<(Claim, Claimed), PoolError> {
        for _ in 0..2 {
            match self.routing.claim_turn(id).await {
                Ok(claimed) => return Ok((Claim::new(self.routing.clone(), id.clone()), claimed)),
                Err(Refused::Busy) => return Err(PoolError::ThreadBusy(id.clone())),
                Err(Refused::Unknown) => {
                    // Settings a turn changed before the conversation was unloaded may still be
                    // queued: they are in the store before it is read.
                    self.writer.flush().await;
                    match self.store.load(id).await? {
                        Some(record) => self.routing.insert_stored(record),
                        None => break,
                    }
                }
            }
        }
        self.placer.let_go(id).await;
        Err(PoolError::UnknownThread(id.clone()))
    }

    /// The conversation's lease and claim for a turn that brings new input (a message, a
    /// compaction): refused with [`PoolError::ToolCallsPending`] while tool calls wait for
    /// their outputs, here or in the store.
    pub(crate) async fn claim_for_new_input(
        &self,
        id: &ConversationId,
    ) -> Result<(Option<TurnLease>, Claim, Claimed), PoolError> {
        if let Some(calls) = self.tool_waits.calls(id) {
            return Err(PoolError::ToolCallsPending { thread_id: id.clone(), calls });
        }
        let lease = self.lease(id).await?;
        let (claim, claimed) = self.claim_turn(id).await?;
        if !claimed.pending.is_empty() {
            let calls = claimed.pending.iter().map(|p| p.call_id.clone()).collect();
            return Err(PoolError::ToolCallsPending { thread_id: id.clone(), calls });
        }
        Ok((lease, claim, claimed))
    }

    /// The codex thread that holds the claimed conversation, if its copy can be trusted. When
    /// the previous turn's consumer left before the store answered, that answer comes first:
    /// a turn the store did not keep is in codex's copy only, so the copy is dropped and the
    /// conversation rebuilt from the store.
    pub(crate) async fn trusted_thread(&self, id: &ConversationId, claimed: &mut Claimed) -> Option<Loaded> {
        if let Some(ticket) = claimed.unconfirmed.take() {
            if let Err(e) = ticket.await {
                tracing::warn!(conversation = %id, error = %e, "the last turn was not kept; rebuilding from the store");
                self.routing.forget_codex_thread(id);
                return None;
            }
        }
        claimed.loaded.take()
    }

    /// Places the claimed conversation on a live process (where `loaded` holds it, else
    /// rebuilt from the store on one the strategy picks), waits for room there and sends the
    /// turn. The loop has one reason: a process that dies under the `turn/start` did not run
    /// the turn, so the turn is placed again, rebuilt on another process, at most once per
    /// process. Any other failure gives the conversation back: with its codex thread if codex
    /// refused the turn, without it if the turn may have reached codex.
    pub(crate) async fn place_and_send(
        &self,
        mut claim: Claim,
        claimed: &Claimed,
        mut loaded: Option<Loaded>,
        ask: Ask<'_>,
        options: &TurnOptions,
    ) -> Result<Sent, PoolError> {
        let id = claim.conversation().clone();
        let mut retries = self.slots.len();
        loop {
            let placement = self.placer.place(&id, &claimed.settings, claimed.ephemeral, loaded.take()).await?;
            let permit = self.room(&id, &placement, options).await?;
            self.routing.turn_placed(&id, placement.slot.index);
            hop(id.as_str(), "pool.placed");
            // The roots its process was spawned with, read before the turn can reach it.
            let ca_epoch = placement.slot.ca_epoch.load(Ordering::Relaxed);
            // From here on the turn may reach codex.
            let sent = claim.ending(Ending::Rebuild);
            let started = match ask {
                Ask::Turn { input, given: [] } => {
                    placement.handle.start_turn(turn_params(&placement, input, options)).await
                }
                // What the turn gives codex before it runs (tool outputs), in codex's history.
                Ask::Turn { input, given } => {
                    match placement.handle.inject_items(&placement.codex_id, given.to_vec()).await {
                        Ok(()) => placement.handle.start_turn(turn_params(&placement, input, options)).await,
                        Err(e) => Err(e),
                    }
                }
                Ask::Compact => placement.handle.compact_thread(&placement.codex_id).await,
            };
            match started {
                Ok(stream) => {
                    hop(id.as_str(), "pool.stream");
                    return Ok(Sent { claim: sent, stream, permit, ca_epoch });
                }
                Err(e) if e.is_process_gone() && retries > 0 => {
                    retries -= 1;
                    self.routing.forget_codex_thread(&id);
                    claim = sent.ending(Ending::Kept);
                }
                Err(e) => {
                    // codex answered: it did not take the turn. Anything else: it may have.
                    sent.end(if e.rpc().is_some() { Ending::Kept } else { Ending::Rebuild });
                    return Err(PoolError::from_process(&id, e));
                }
            }
        }
    }

    /// Room for the turn on its placement's process (see [`PoolInner::turn_permit`]); a turn
    /// that finds none is [`PoolError::Overloaded`].
    async fn room(
        &self,
        id: &ConversationId,
        placement: &Placement,
        options: &TurnOptions,
    ) -> Result<OwnedSemaphorePermit, PoolError> {
        match self.turn_permit(&placement.slot.turn_permits, !options.refuse_when_full).await {
            Ok(permit) => Ok(permit),
            Err(NoRoom::ShutDown) => Err(PoolError::ShutDown),
            Err(NoRoom::Full) => {
                Err(PoolError::Overloaded { thread_id: id.clone(), limit: self.config.max_turns_per_process })
            }
        }
    }

    /// Room for a turn on a process: at once, or (`wait`) after a wait of at most
    /// `overload_wait` (counted).
    pub(crate) async fn turn_permit(
        &self,
        permits: &Arc<Semaphore>,
        wait: bool,
    ) -> Result<OwnedSemaphorePermit, NoRoom> {
        match permits.clone().try_acquire_owned() {
            Ok(permit) => return Ok(permit),
            Err(TryAcquireError::Closed) => return Err(NoRoom::ShutDown),
            Err(TryAcquireError::NoPermits) if !wait => {
                self.counters.refused_full();
                return Err(NoRoom::Full);
            }
            Err(TryAcquireError::NoPermits) => {}
        }
        let begun = std::time::Instant::now();
        let waited = tokio::time::timeout(self.config.overload_wait, permits.clone().acquire_owned()).await;
        self.counters.waited(begun.elapsed(), matches!(waited, Ok(Ok(_))));
        match waited {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(NoRoom::ShutDown),
            Err(_) => Err(NoRoom::Full),
        }
    }

    /// A turn's tool list, when it differs from the conversation's, becomes the conversation's:
    /// kept with its settings, and its codex thread (started with the old list) let go, so the
    /// turn runs on one rebuilt from the store with the new list.
    pub(crate) fn apply_tools(
        &self,
        id: &ConversationId,
        claimed: &mut Claimed,
        options: &TurnOptions,
        fence: Option<Fence>,
    ) {
        let Some(tools) = options.tools.as_ref().filter(|t| **t != claimed.settings.dynamic_tools) else { return };
        claimed.settings.dynamic_tools.clone_from(tools);
        if let Some(settings) = self.routing.update_settings(id, |s| s.dynamic_tools.clone_from(tools)) {
            self.writer.update_settings(id.clone(), settings, fence);
        }
        claimed.loaded = None;
        self.routing.forget_codex_thread(id);
    }

    /// The pool's turn of a `turn/start` codex took: its stream under the pool's watchdogs, what
    /// it holds, and what its record is to hold (`input`, and `given`: the items the turn gave
    /// codex before it ran).
    pub(crate) fn pool_turn(
        &self,
        id: &ConversationId,
        sent: Sent,
        lease: Option<TurnLease>,
        settings: &ThreadSettings,
        input: Vec<UserInput>,
        given: Vec<Value>,
    ) -> PoolTurn {
        let stream = sent
            .stream
            .with_silence_timeout(self.config.turn_timeout)
            .with_progress_timeout(self.config.progress_timeout);
        let held = Held::new(sent.claim, lease, sent.permit);
        let running = Running::new(held, self.writer.clone(), input, given, self.client_tools(settings));
        PoolTurn::new(id.clone(), stream, running, self.tls.for_turn(sent.ca_epoch))
    }

    /// What a turn of a conversation with `settings` knows of its client tools.
    pub(crate) fn client_tools(&self, settings: &ThreadSettings) -> ClientTools {
        ClientTools::new(&settings.dynamic_tools, self.tool_waits.clone(), self.config.tool_call_timeout)
    }

    /// Per-turn model and approval overrides stick for later turns (as codex does), so they are
    /// kept with the conversation's settings, for rebuilds after a crash or an eviction.
    pub(crate) fn remember_options(&self, id: &ConversationId, options: &TurnOptions, fence: Option<Fence>) {
        if options.model.is_none() && options.approval_policy.is_none() {
            return;
        }
        let settings = self.routing.update_settings(id, |settings| {
            if options.model.is_some() {
                settings.model.clone_from(&options.model);
            }
            if options.approval_policy.is_some() {
                settings.approval_policy = options.approval_policy;
            }
        });
        if let Some(settings) = settings {
            self.writer.update_settings(id.clone(), settings, fence);
        }
    }
}

/// The `turn/start` of `input` on the placed codex thread, with the turn's overrides.
fn turn_params(placement: &Placement, input: &[UserInput], options: &TurnOptions) -> TurnStartParams {
    let mut params = TurnStartParams::new(&placement.codex_id, input.to_vec());
    params.model.clone_from(&options.model);
    params.effort.clone_from(&options.effort);
    params.approval_policy = options.approval_policy;
    params.output_schema.clone_from(&options.output_schema);
    params
}
