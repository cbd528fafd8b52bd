//! [`Pool`]: the public face of the pool. Each job is done by its owner: the supervisors
//! (processes), the routing table (conversations), placement (where they run), the reaper
//! (memory) and the store writer (history); this file starts them, stops them, and strings them
//! together for each call.

use crate::config::PoolConfig;
use crate::error::PoolError;
use crate::placement::Placer;
use crate::profile::Profile;
use crate::routing::{Refused, Routing, ThreadState};
use crate::store_writer::StoreWriter;
use crate::supervisor::{supervise, Slot, SlotState, SlotStats, SlotStatus};
use crate::tls::{CaStats, TlsRoots};
use crate::turn::{PoolTurn, TurnClaim};
use codex_pool_protocol::methods::{ThreadSettings, TurnStartParams};
use codex_pool_protocol::types::{ApprovalPolicy, UserInput};
use codex_pool_protocol::CodexThreadId;
use codex_pool_store::{ConversationId, ThreadStore};
use serde::Serialize;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long [`Pool::shutdown`] waits for the consumers of ended turns to read or drop them (a
/// turn is recorded then), before it closes the store.
const SHUTDOWN_RECORD_WAIT: Duration = Duration::from_secs(2);

/// Per-turn options (they stick for later turns of the conversation, as codex does).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TurnOptions {
    /// Model override.
    pub model: Option<String>,
    /// Reasoning effort override.
    pub effort: Option<String>,
    /// Approval policy override.
    pub approval_policy: Option<ApprovalPolicy>,
    /// JSON Schema for the final message.
    pub output_schema: Option<Value>,
}

/// A pool of `codex app-server` processes (the seed's `CodexAppServerPool`). Cheap to clone;
/// every clone drives the same pool.
///
/// ```no_run
/// # async fn demo(config: codex_pool::PoolConfig) -> Result<(), codex_pool::PoolError> {
/// use codex_pool::{Pool, TurnOptions};
/// use codex_pool_protocol::{methods::ThreadSettings, types::UserInput};
/// let pool = Pool::new(config, std::sync::Arc::new(codex_pool_store::MemoryStore::new()));
/// pool.ensure_started().await?;
/// let conversation = pool.create_thread(ThreadSettings::default()).await?;
/// let turn = pool.start_turn(&conversation, vec![UserInput::text("hi")], TurnOptions::default()).await?;
/// let (reply, _end) = turn.collect_text().await;
/// println!("{reply}");
/// pool.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    config: Arc<PoolConfig>,
    store: Arc<dyn ThreadStore>,
    slots: Vec<Arc<Slot>>,
    routing: Arc<Routing>,
    placer: Arc<Placer>,
    writer: Arc<StoreWriter>,
    tls: Arc<TlsRoots>,
    lifecycle: Mutex<Lifecycle>,
    shutdown: watch::Sender<bool>,
}

/// Where the pool is in its life; its tasks are owned here.
enum Lifecycle {
    /// Not started: the supervisors' ends of the slot states wait here.
    New(Vec<watch::Sender<SlotState>>),
    /// Started: the supervisors and the reaper.
    Running(Vec<JoinHandle<()>>),
    /// Shut down (or shutting down).
    Stopped,
}

/// A snapshot of the pool.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PoolStats {
    /// Configured number of processes.
    pub size: usize,
    /// Processes serving now (less than `size` is reduced capacity).
    pub ready: usize,
    /// The selection strategy.
    pub strategy: &'static str,
    /// Conversations the pool routes (in memory).
    pub threads: usize,
    /// Of those, loaded on a process.
    pub loaded_threads: usize,
    /// Turns running.
    pub active_turns: usize,
    /// Each process slot.
    pub slots: Vec<SlotStats>,
    /// The root certificates the processes trust.
    pub ca: CaStats,
}

impl Pool {
    /// A pool that has not started yet; call [`Pool::ensure_started`].
    pub fn new(config: PoolConfig, store: Arc<dyn ThreadStore>) -> Self {
        let routing = Arc::new(Routing::new(config.size, config.max_loaded_threads_per_process));
        let (mut senders, mut slots) = (Vec::new(), Vec::new());
        for index in 0..config.size {
            let (tx, rx) = watch::channel(SlotState::Starting);
            senders.push(tx);
            slots.push(Arc::new(Slot::new(index, rx, config.max_turns_per_process)));
        }
        let writer = Arc::new(StoreWriter::new(store.clone()));
        let placer = Arc::new(Placer::new(&config, slots.clone(), routing.clone(), store.clone(), writer.clone()));
        let tls = Arc::new(TlsRoots::new(&config));
        Pool {
            inner: Arc::new(PoolInner {
                tls,
                config: Arc::new(config),
                store,
                slots,
                routing,
                placer,
                writer,
                lifecycle: Mutex::new(Lifecycle::New(senders)),
                shutdown: watch::channel(false).0,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// Starts every process (in parallel) and waits for each one's first attempt. Idempotent and
    /// safe under concurrent callers. Succeeds when at least one process serves (fewer than
    /// configured is reported in the log and in [`Pool::stats`]); fails when none does, or when
    /// the CA bundle setting cannot be used ([`PoolError::Ca`]). The root certificates are
    /// decided first (for `auto` over https, a handshake with each of the provider's hosts).
    pub async fn ensure_started(&self) -> Result<PoolStats, PoolError> {
        let inner = &self.inner;
        inner.check_open()?;
        inner.tls.resolve().await?;
        inner.start()?;
        for slot in &inner.slots {
            let mut rx = slot.state.clone();
            let _ = rx.wait_for(|s| !matches!(s, SlotState::Starting)).await;
        }
        let stats = self.stats();
        if stats.ready == 0 {
            let reasons: Vec<String> = stats.slots.iter().filter_map(|s| s.down_reason.clone()).collect();
            return Err(PoolError::NoProcess(reasons.join("; ")));
        }
        if stats.ready < stats.size {
            tracing::warn!(ready = stats.ready, size = stats.size, "pool started with reduced capacity");
        } else {
            tracing::info!(size = stats.size, strategy = stats.strategy, "pool started");
        }
        Ok(stats)
    }

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
        let inner = &self.inner;
        inner.check_open()?;
        let mut settings = profile.apply(settings);
        if settings.model.is_none() {
            settings.model = inner.config.default_model.clone();
        }
        if settings.cwd.is_none() {
            settings.cwd = Some(inner.config.process.work_dir.display().to_string());
        }
        inner.placer.create(settings, profile.ephemeral()).await
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
        inner.check_open()?;
        codex_pool_process::check_input(&input).map_err(|e| PoolError::from_process(id, e))?;
        let mut claimed = inner.claim_turn(id).await?;
        // From here on the conversation is `TurnRunning`; the guard makes it `Idle` again on
        // every early return (and if this future is dropped).
        let mut guard = ClaimGuard { routing: &inner.routing, id, sent: false, armed: true };
        if let Some(ticket) = claimed.unconfirmed.take() {
            // The previous turn's consumer left before the store answered: if the store did not
            // keep it, codex's copy of the conversation holds a turn the store lacks.
            if let Err(e) = ticket.await {
                tracing::warn!(conversation = %id, error = %e, "the last turn was not kept; rebuilding from the store");
                inner.routing.forget_codex_thread(id);
                claimed.loaded = None;
            }
        }
        let mut loaded = claimed.loaded;
        for attempt in 1.. {
            let placement = inner.placer.place(id, &claimed.settings, claimed.ephemeral, loaded.take()).await?;
            let permit = match tokio::time::timeout(
                inner.config.overload_wait,
                placement.slot.turn_permits.clone().acquire_owned(),
            )
            .await
            {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Err(PoolError::ShutDown),
                Err(_) => {
                    return Err(PoolError::Overloaded {
                        thread_id: id.clone(),
                        limit: inner.config.max_turns_per_process,
                    })
                }
            };
            inner.routing.turn_placed(id, placement.slot.index);
            let mut params = TurnStartParams::new(&placement.codex_id, input.clone());
            params.model.clone_from(&options.model);
            params.effort.clone_from(&options.effort);
            params.approval_policy = options.approval_policy;
            params.output_schema.clone_from(&options.output_schema);
            // The roots its process was spawned with, read before the turn can reach it.
            let ca_epoch = placement.slot.ca_epoch.load(Ordering::Relaxed);
            guard.sent = true;
            match placement.handle.start_turn(params).await {
                Ok(stream) => {
                    inner.remember_options(id, &options);
                    guard.armed = false;
                    let stream = stream
                        .with_silence_timeout(inner.config.turn_timeout)
                        .with_progress_timeout(inner.config.progress_timeout);
                    let claim = TurnClaim::new(inner.routing.clone(), inner.writer.clone(), id.clone(), input, permit);
                    let tls = inner.tls.for_turn(ca_epoch);
                    return Ok(PoolTurn::new(id.clone(), stream, claim, tls));
                }
                // Its process died under it: place it again (rebuilt elsewhere).
                Err(e) if e.is_process_gone() && attempt <= inner.slots.len() => {
                    inner.routing.forget_codex_thread(id);
                    guard.sent = false;
                }
                Err(e) => {
                    // codex answered: it did not take the turn. Anything else: it may have.
                    guard.sent = e.rpc().is_none();
                    return Err(PoolError::from_process(id, e));
                }
            }
        }
        unreachable!("the loop returns")
    }

    /// Interrupts the running turn of a conversation.
    pub async fn interrupt_turn(&self, id: &ConversationId) -> Result<(), PoolError> {
        let inner = &self.inner;
        let no_turn = || PoolError::NoActiveTurn(id.clone());
        let Some((loaded, state)) = inner.routing.get(id) else {
            return match inner.store.load(id).await? {
                Some(_) => Err(no_turn()),
                None => Err(PoolError::UnknownThread(id.clone())),
            };
        };
        if !matches!(state, ThreadState::TurnRunning { .. }) {
            return Err(no_turn());
        }
        let loaded = loaded.ok_or_else(no_turn)?;
        let handle = inner.placer.live_handle(&loaded).ok_or_else(no_turn)?;
        handle.interrupt(&loaded.codex_id).await.map_err(|e| PoolError::from_process(id, e))
    }

    /// Releases a conversation: unloads it from codex and forgets it, in the store too (its
    /// history goes with it). Fails with [`PoolError::ThreadBusy`] while a turn runs.
    pub async fn release_thread(&self, id: &ConversationId) -> Result<(), PoolError> {
        let inner = &self.inner;
        let known = match inner.routing.claim_release(id).await {
            Ok(known) => known,
            Err(_) => return Err(PoolError::ThreadBusy(id.clone())),
        };
        // What is queued for it is written first, so nothing brings it back from the store.
        inner.writer.flush().await;
        match inner.store.delete(id).await {
            Ok(existed) => {
                let loaded = inner.routing.finish_release(id, true);
                if let Some(loaded) = loaded {
                    inner.placer.unload(&loaded, "release").await;
                }
                if known || existed {
                    Ok(())
                } else {
                    Err(PoolError::UnknownThread(id.clone()))
                }
            }
            Err(e) => {
                inner.routing.finish_release(id, false);
                Err(e.into())
            }
        }
    }

    /// Ends the pool: running turns are interrupted and end with an `aborted` (`shutdown`) event,
    /// every process exits (killed if it must be), what the store still has to write is written,
    /// every task of the pool ends.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.shutdown.send_replace(true);
        let tasks = match std::mem::replace(&mut *inner.lifecycle(), Lifecycle::Stopped) {
            Lifecycle::Running(tasks) => tasks,
            Lifecycle::New(_) | Lifecycle::Stopped => Vec::new(),
        };
        for task in tasks {
            let _ = task.await;
        }
        // Turns end (and are recorded) when their consumers read or drop them: give them a moment.
        let mut running = inner.routing.running();
        let _ = tokio::time::timeout(SHUTDOWN_RECORD_WAIT, running.wait_for(|n| *n == 0)).await;
        inner.writer.close().await;
        tracing::info!("pool shut down");
    }

    /// Load and health of every process.
    pub fn stats(&self) -> PoolStats {
        let inner = &self.inner;
        let loads = inner.routing.loads();
        let slots: Vec<SlotStats> = inner
            .slots
            .iter()
            .map(|s| {
                let load = loads[s.index];
                let (running, loaded) = match s.ready() {
                    Some((_, generation)) if generation == load.generation => (load.running, load.loaded),
                    _ => (load.running, 0),
                };
                s.stats(running, loaded)
            })
            .collect();
        let (threads, _) = inner.routing.counts();
        PoolStats {
            size: inner.config.size,
            ready: slots.iter().filter(|s| s.state == SlotStatus::Ready).count(),
            strategy: inner.config.strategy.name(),
            threads,
            loaded_threads: slots.iter().map(|s| s.loaded_threads).sum(),
            active_turns: slots.iter().map(|s| s.active_turns).sum(),
            slots,
            ca: inner.tls.stats(),
        }
    }

    /// The slot whose process holds a conversation now, if one does.
    pub fn slot_of(&self, id: &ConversationId) -> Option<usize> {
        let (loaded, _) = self.inner.routing.get(id)?;
        loaded.filter(|l| self.inner.placer.live_handle(l).is_some()).map(|l| l.slot)
    }

    /// The codex thread that holds a conversation now, if one does (the conversation's own id
    /// until the pool first rebuilds it; for diagnostics).
    pub fn codex_thread_id(&self, id: &ConversationId) -> Option<CodexThreadId> {
        let (loaded, _) = self.inner.routing.get(id)?;
        loaded.filter(|l| self.inner.placer.live_handle(l).is_some()).map(|l| l.codex_id)
    }
}

/// Makes a claimed conversation `Idle` again on an early return. Once a `turn/start` may have
/// reached codex, codex's copy of the conversation is not trusted either: the next turn
/// rebuilds it from the store.
struct ClaimGuard<'a> {
    routing: &'a Routing,
    id: &'a ConversationId,
    sent: bool,
    armed: bool,
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            if self.sent {
                self.routing.forget_codex_thread(self.id);
            }
            self.routing.end_turn(self.id, None);
        }
    }
}

impl PoolInner {
    fn lifecycle(&self) -> std::sync::MutexGuard<'_, Lifecycle> {
        self.lifecycle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_open(&self) -> Result<(), PoolError> {
        if *self.shutdown.borrow() {
            Err(PoolError::ShutDown)
        } else {
            Ok(())
        }
    }

    /// Starts the supervisors, the reaper and the store writer, once.
    fn start(&self) -> Result<(), PoolError> {
        let mut lifecycle = self.lifecycle();
        let senders = match std::mem::replace(&mut *lifecycle, Lifecycle::Stopped) {
            Lifecycle::New(senders) => senders,
            other => {
                let stopped = matches!(other, Lifecycle::Stopped);
                *lifecycle = other;
                return if stopped { Err(PoolError::ShutDown) } else { Ok(()) };
            }
        };
        if *self.shutdown.borrow() {
            return Err(PoolError::ShutDown);
        }
        self.writer.start();
        let mut tasks = Vec::new();
        for (slot, tx) in self.slots.iter().zip(senders) {
            tasks.push(tokio::spawn(supervise(
                slot.clone(),
                tx,
                self.config.clone(),
                self.routing.clone(),
                self.tls.subscribe(),
                self.shutdown.subscribe(),
            )));
        }
        tasks.push(tokio::spawn(crate::tls::watch_failures(self.tls.clone(), self.shutdown.subscribe())));
        tasks.push(tokio::spawn(crate::reaper::reap(
            self.routing.clone(),
            self.placer.clone(),
            self.config.idle_unsubscribe_after,
            self.shutdown.subscribe(),
        )));
        *lifecycle = Lifecycle::Running(tasks);
        Ok(())
    }

    /// Takes the conversation for a turn, reading it from the store if the pool does not know it.
    async fn claim_turn(&self, id: &ConversationId) -> Result<crate::routing::Claimed, PoolError> {
        for _ in 0..2 {
            match self.routing.claim_turn(id).await {
                Ok(claimed) => return Ok(claimed),
                Err(Refused::Busy) => return Err(PoolError::ThreadBusy(id.clone())),
                Err(Refused::Unknown) => {
                    let record = self.store.load(id).await?.ok_or_else(|| PoolError::UnknownThread(id.clone()))?;
                    self.routing.insert_stored(record);
                }
            }
        }
        Err(PoolError::UnknownThread(id.clone()))
    }

    /// Per-turn model and approval overrides stick for later turns (as codex does), so they are
    /// kept with the conversation's settings, for rebuilds after a crash or an eviction.
    fn remember_options(&self, id: &ConversationId, options: &TurnOptions) {
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
            self.writer.update_settings(id.clone(), settings);
        }
    }
}
