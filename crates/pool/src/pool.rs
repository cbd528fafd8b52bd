//! [`Pool`]: the public face of the pool. Each job is done by its owner: the supervisors
//! (processes), the routing table (conversations), placement (where they run), the reaper
//! (memory) and the store writer (history); this file starts them, stops them, and strings them
//! together for each call.

use crate::config::PoolConfig;
use crate::counters::{Counters, PoolCounters};
use crate::error::PoolError;
use crate::ownership::Leases;
use crate::placement::Placer;
use crate::routing::{Loaded, Routing, ThreadState};
use crate::store_writer::StoreWriter;
use crate::supervisor::{supervise, Slot, SlotState, SlotStats, SlotStatus};
use crate::tls::{CaStats, TlsRoots};
use codex_pool_protocol::CodexThreadId;
use codex_pool_store::{ConversationId, NodeStatus, ThreadStore};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long [`Pool::shutdown`] waits for the consumers of ended turns to read or drop them (a
/// turn is recorded then), before it closes the store.
const SHUTDOWN_RECORD_WAIT: Duration = Duration::from_secs(2);

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
    pub(crate) inner: Arc<PoolInner>,
}

/// The owners of the pool's jobs, shared by every clone of a [`Pool`].
pub(crate) struct PoolInner {
    pub config: Arc<PoolConfig>,
    pub store: Arc<dyn ThreadStore>,
    pub slots: Vec<Arc<Slot>>,
    pub routing: Arc<Routing>,
    pub placer: Arc<Placer>,
    pub writer: Arc<StoreWriter>,
    pub tls: Arc<TlsRoots>,
    pub counters: Arc<Counters>,
    /// This node's leases (none when the pool is alone on its store).
    pub leases: Leases,
    /// Turns waiting for client tool outputs, by conversation.
    pub tool_waits: Arc<crate::tools::ToolWaits>,
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
    /// Conversations the pool routes (in memory): those in use; one unloaded from codex (idle, over
    /// the cap, released) is not counted until its next turn.
    pub threads: usize,
    /// Of those, loaded on a process.
    pub loaded_threads: usize,
    /// Turns running.
    pub active_turns: usize,
    /// Each process slot.
    pub slots: Vec<SlotStats>,
    /// The root certificates the processes trust.
    pub ca: CaStats,
    /// What the pool counted since it was made: rebuilds, waits for room.
    pub counters: PoolCounters,
    /// This node, when several share the store.
    pub node: Option<NodeStats>,
}

/// This node, as [`PoolStats`] shows it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct NodeStats {
    /// Its id.
    pub id: String,
    /// The address it announces.
    pub address: String,
    /// Conversations it holds a lease on.
    pub leases: usize,
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
        let counters = Arc::new(Counters::default());
        let leases = Leases::new(config.node.as_ref(), config.idle_unsubscribe_after, store.clone());
        let placer = Arc::new(Placer::new(
            &config,
            slots.clone(),
            routing.clone(),
            store.clone(),
            writer.clone(),
            counters.clone(),
            leases.clone(),
        ));
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
                counters,
                leases,
                tool_waits: Arc::default(),
                lifecycle: Mutex::new(Lifecycle::New(senders)),
                shutdown: watch::channel(false).0,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// Turns the pool runs at once at most: `max_turns_per_process` on each of its processes.
    /// A conversation's turns run on its own process, so a turn can find its process full
    /// before the pool is.
    pub fn turn_capacity(&self) -> usize {
        self.inner.config.size.saturating_mul(self.inner.config.max_turns_per_process)
    }

    /// The store that holds every conversation.
    pub fn store(&self) -> &Arc<dyn ThreadStore> {
        &self.inner.store
    }

    /// Whether the pool has started and at least one process serves.
    pub fn is_ready(&self) -> bool {
        self.inner.slots.iter().any(|s| s.ready().is_some())
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
        inner.leases.register().await?;
        inner.start()?;
        for slot in &inner.slots {
            let mut rx = slot.state.clone();
            let _ = rx.wait_for(|s| !matches!(s, SlotState::Starting)).await;
        }
        let stats = self.stats();
        if stats.ready == 0 {
            let reasons: Vec<String> =
                stats.slots.iter().filter_map(|s| s.down_reason.as_ref()).map(|r| r.to_string()).collect();
            return Err(PoolError::NoProcess(reasons.join("; ")));
        }
        if stats.ready < stats.size {
            tracing::warn!(ready = stats.ready, size = stats.size, "pool started with reduced capacity");
        } else {
            tracing::info!(size = stats.size, strategy = stats.strategy, "pool started");
        }
        Ok(stats)
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
        if inner.leases.shared() {
            // Written first, under the leases; then other nodes may take the conversations.
            inner.writer.flush().await;
            inner.leases.release_all().await;
        }
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
            counters: inner.counters.snapshot(),
            node: inner.leases.stats(),
        }
    }

    /// The nodes sharing the store (with their heartbeats and leases); empty for a pool alone
    /// on its store.
    pub async fn nodes(&self) -> Result<Vec<NodeStatus>, PoolError> {
        if !self.inner.leases.shared() {
            return Ok(Vec::new());
        }
        Ok(self.inner.store.nodes().await?)
    }

    /// The slot whose process holds a conversation now, if one does.
    pub fn slot_of(&self, id: &ConversationId) -> Option<usize> {
        self.inner.live_loaded(id).0.map(|l| l.slot)
    }

    /// The codex thread that holds a conversation now, if one does (the conversation's own id
    /// until the pool first rebuilds it; for diagnostics).
    pub fn codex_thread_id(&self, id: &ConversationId) -> Option<CodexThreadId> {
        self.inner.live_loaded(id).0.map(|l| l.codex_id)
    }
}

impl PoolInner {
    /// Where a conversation is loaded, if on a process that is still the slot's current one,
    /// and its state (`None` for a conversation the routing table does not know).
    pub(crate) fn live_loaded(&self, id: &ConversationId) -> (Option<Loaded>, Option<ThreadState>) {
        match self.routing.get(id) {
            Some((loaded, state)) => (loaded.filter(|l| self.placer.live_handle(l).is_some()), Some(state)),
            None => (None, None),
        }
    }

    fn lifecycle(&self) -> std::sync::MutexGuard<'_, Lifecycle> {
        self.lifecycle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn check_open(&self) -> Result<(), PoolError> {
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
        tasks.push(tokio::spawn(self.leases.clone().renew(self.routing.clone(), self.shutdown.subscribe())));
        *lifecycle = Lifecycle::Running(tasks);
        Ok(())
    }
}
