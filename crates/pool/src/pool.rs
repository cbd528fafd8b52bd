//! The pool: routing threads to processes, and carrying conversations across process failures.

use crate::config::PoolConfig;
use crate::error::PoolError;
use crate::profile::Profile;
use crate::strategy::{Candidate, SelectionStrategy};
use crate::supervisor::{supervise, SlotShared, SlotState, SlotStats};
use crate::turn::{PoolTurn, SlotTurn, TurnClaim};
use codex_pool_process::{AppServerHandle, ProcessError};
use codex_pool_protocol::methods::{ThreadSettings, ThreadStartParams, TurnStartParams};
use codex_pool_protocol::types::{ApprovalPolicy, UserInput};
use codex_pool_store::{StoreError, ThreadRecord, ThreadStore, TurnRecord};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long [`Pool::shutdown`] waits for the consumers of ended turns to read or drop them (a
/// turn is recorded then), before it closes the store.
const SHUTDOWN_RECORD_WAIT: Duration = Duration::from_secs(2);

/// Per-turn options (they stick for later turns of the thread, as codex does).
#[derive(Debug, Clone, Default)]
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
/// let thread = pool.create_thread(ThreadSettings::default()).await?;
/// let turn = pool.start_turn(&thread, vec![UserInput::text("hi")], TurnOptions::default()).await?;
/// let (reply, _end) = turn.collect_text().await;
/// println!("{reply}");
/// pool.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

pub(crate) struct PoolInner {
    config: Arc<PoolConfig>,
    strategy: Box<dyn SelectionStrategy>,
    store: Arc<dyn ThreadStore>,
    slots: Vec<Arc<SlotShared>>,
    routing: Mutex<Routing>,
    /// The supervisors' ends of the slot states, until `ensure_started` hands them over.
    senders: Mutex<Vec<watch::Sender<SlotState>>>,
    tasks: tokio::sync::Mutex<Option<Vec<JoinHandle<()>>>>,
    shutdown: watch::Sender<bool>,
    store_ops: mpsc::UnboundedSender<StoreOp>,
    /// Wakes the reaper when a process goes over its cap of loaded threads.
    evict: Arc<tokio::sync::Notify>,
    store_rx: Mutex<Option<mpsc::UnboundedReceiver<StoreOp>>>,
}

/// A thread's turn lock: held by its running turn, and by the idle reaper while it unsubscribes.
type TurnLock = Arc<tokio::sync::Mutex<()>>;

/// Conversation id -> what the pool knows of it now.
#[derive(Default)]
struct Routing {
    threads: HashMap<String, ThreadEntry>,
}

struct ThreadEntry {
    settings: ThreadSettings,
    /// codex keeps the thread in memory only.
    ephemeral: bool,
    /// The codex thread that holds the conversation now, if one does.
    loaded: Option<Loaded>,
    /// A turn is running (or starting).
    busy: bool,
    last_used: Instant,
    /// Held by a running turn, and by the idle reaper while it unsubscribes.
    lock: TurnLock,
}

/// A codex thread holding a conversation: on which process (slot and generation), under which id.
#[derive(Debug, Clone, PartialEq)]
struct Loaded {
    slot: usize,
    generation: u64,
    codex_id: String,
}

impl ThreadEntry {
    fn new(settings: ThreadSettings, ephemeral: bool, loaded: Option<Loaded>) -> Self {
        Self {
            settings,
            ephemeral,
            loaded,
            busy: false,
            last_used: Instant::now(),
            lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }
}

/// A snapshot of the pool.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStats {
    /// Configured number of processes.
    pub size: usize,
    /// Processes serving now (less than `size` is reduced capacity).
    pub ready: usize,
    /// The selection strategy.
    pub strategy: &'static str,
    /// Conversations the pool routes (in memory).
    pub threads: usize,
    /// Of those, subscribed on a process.
    pub subscribed_threads: usize,
    /// Turns running.
    pub active_turns: usize,
    /// Each process slot.
    pub slots: Vec<SlotStats>,
}

/// A conversation loaded on a live process, ready for a turn.
struct Placement {
    slot: Arc<SlotShared>,
    handle: AppServerHandle,
    codex_id: String,
}

impl Pool {
    /// A pool that has not started yet; call [`Pool::ensure_started`].
    pub fn new(config: PoolConfig, store: Arc<dyn ThreadStore>) -> Self {
        let (mut senders, mut slots) = (Vec::new(), Vec::new());
        for index in 0..config.size {
            let (tx, rx) = watch::channel(SlotState::Starting);
            senders.push(tx);
            slots.push(Arc::new(SlotShared::new(index, rx, config.max_turns_per_process)));
        }
        let (store_ops, store_rx) = mpsc::unbounded_channel();
        Pool {
            inner: Arc::new(PoolInner {
                strategy: config.strategy.build(),
                config: Arc::new(config),
                store,
                slots,
                routing: Mutex::new(Routing::default()),
                senders: Mutex::new(senders),
                tasks: tokio::sync::Mutex::new(None),
                shutdown: watch::channel(false).0,
                store_ops,
                evict: Arc::new(tokio::sync::Notify::new()),
                store_rx: Mutex::new(Some(store_rx)),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// Starts every process (in parallel) and waits for each one's first attempt. Idempotent and
    /// safe under concurrent callers. Succeeds when at least one process serves (fewer than
    /// configured is reported in the log and in [`Pool::stats`]); fails when none does.
    pub async fn ensure_started(&self) -> Result<PoolStats, PoolError> {
        let inner = &self.inner;
        {
            let mut tasks = inner.tasks.lock().await;
            if *inner.shutdown.borrow() {
                return Err(PoolError::ShutDown);
            }
            if tasks.is_none() {
                let senders = std::mem::take(&mut *inner.senders.lock().expect("senders lock"));
                let mut started = Vec::new();
                for (slot, tx) in inner.slots.iter().zip(senders) {
                    started.push(tokio::spawn(supervise(
                        slot.clone(),
                        tx,
                        inner.config.clone(),
                        inner.shutdown.subscribe(),
                    )));
                }
                started.push(tokio::spawn(reap_idle(Arc::downgrade(inner), inner.shutdown.subscribe())));
                let rx = inner.store_rx.lock().expect("store lock").take().expect("store receiver taken once");
                started.push(tokio::spawn(write_store(inner.store.clone(), rx)));
                *tasks = Some(started);
            }
        }
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
    pub async fn create_thread(&self, settings: ThreadSettings) -> Result<String, PoolError> {
        self.create_thread_with(settings, self.inner.config.default_profile).await
    }

    /// Creates a conversation on a process chosen by the strategy and stores it; returns its id,
    /// which stays the same for the conversation's whole life. The profile fills in what the
    /// settings leave unset, then the pool's defaults: `CODEX_MODEL` and the empty working
    /// directory.
    pub async fn create_thread_with(&self, settings: ThreadSettings, profile: Profile) -> Result<String, PoolError> {
        let inner = &self.inner;
        inner.check_open()?;
        let mut settings = profile.apply(settings);
        if settings.model.is_none() {
            settings.model = inner.config.default_model.clone();
        }
        if settings.cwd.is_none() {
            settings.cwd = Some(inner.config.process.work_dir.display().to_string());
        }
        let mut last_err = PoolError::Unavailable;
        for _ in 0..inner.slots.len().max(1) {
            let (slot, handle, generation) = inner.select()?;
            match handle.start_thread(&start_params(&settings, profile.ephemeral())).await {
                Ok(resp) => {
                    let id = resp.thread.id;
                    let record =
                        ThreadRecord { ephemeral: profile.ephemeral(), ..ThreadRecord::new(&id, settings.clone()) };
                    if let Err(e) = inner.store.save(record).await {
                        // Not stored means not created: do not leave it loaded in codex.
                        let _ = handle.unsubscribe(&id).await;
                        return Err(e.into());
                    }
                    inner.note_subscribed(&slot);
                    let loaded = Loaded { slot: slot.index, generation, codex_id: id.clone() };
                    let entry = ThreadEntry::new(settings, profile.ephemeral(), Some(loaded));
                    inner.routing.lock().expect("routing lock").threads.insert(id.clone(), entry);
                    tracing::debug!(thread_id = %id, slot = slot.index, "thread created");
                    return Ok(id);
                }
                Err(e) if e.is_process_gone() => last_err = e.into(),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last_err)
    }

    /// Starts a turn and returns its event stream. Follow-up turns go to the process that holds
    /// the conversation; one that no process holds (its process died, it idled out, the pool
    /// restarted) is rebuilt first on a process the strategy picks, from the store's history.
    pub async fn start_turn(
        &self,
        thread_id: &str,
        input: Vec<UserInput>,
        options: TurnOptions,
    ) -> Result<PoolTurn, PoolError> {
        let inner = &self.inner;
        inner.check_open()?;
        let lock = inner.claim_thread(thread_id).await?;
        // From here on the thread is marked busy; `Unclaim` clears it on every early return
        // (and if this future is dropped).
        let unclaim = Unclaim { inner, thread_id, armed: true };
        let thread_lock = lock.lock_owned().await;
        let mut attempts = 0;
        // A turn the caller dropped a moment ago may still be ending in codex.
        let busy_deadline = Instant::now() + self.inner.config.process.interrupt_grace + Duration::from_secs(1);
        loop {
            attempts += 1;
            let Placement { slot, handle, codex_id } = inner.place(thread_id).await?;
            let permit =
                match tokio::time::timeout(inner.config.overload_wait, slot.turn_permits.clone().acquire_owned()).await
                {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(PoolError::ShutDown),
                    Err(_) => {
                        return Err(PoolError::Overloaded {
                            thread_id: thread_id.to_owned(),
                            limit: inner.config.max_turns_per_process,
                        })
                    }
                };
            let mut params = TurnStartParams::new(&codex_id, input.clone());
            params.model = options.model.clone();
            params.effort = options.effort.clone();
            params.approval_policy = options.approval_policy;
            params.output_schema = options.output_schema.clone();
            let counted = SlotTurn::new(slot);
            match handle.start_turn(params).await {
                Ok(stream) => {
                    let stream = stream.with_silence_timeout(inner.config.turn_timeout);
                    inner.remember_options(thread_id, &options);
                    let claim = TurnClaim {
                        pool: Arc::downgrade(inner),
                        record: TurnRecord {
                            thread_id: thread_id.to_owned(),
                            turn_id: stream.turn_id().to_owned(),
                            items: Vec::new(),
                            completed: false,
                        },
                        input,
                        _slot_turn: counted,
                        _permit: permit,
                        _thread_lock: thread_lock,
                    };
                    let mut unclaim = unclaim;
                    unclaim.armed = false;
                    return Ok(PoolTurn::new(thread_id, stream, claim));
                }
                Err(e) if e.is_process_gone() && attempts <= inner.slots.len() => {
                    // The process died between placement and start: place again.
                    inner.thread_lost_process(thread_id);
                }
                Err(ProcessError::ThreadBusy { .. }) if Instant::now() < busy_deadline => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(ProcessError::ThreadBusy { .. }) => return Err(PoolError::ThreadBusy(thread_id.to_owned())),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Interrupts the running turn of a thread.
    pub async fn interrupt_turn(&self, thread_id: &str) -> Result<(), PoolError> {
        let inner = &self.inner;
        let (loaded, busy) = {
            let routing = inner.routing.lock().expect("routing lock");
            let entry = routing.threads.get(thread_id).ok_or_else(|| PoolError::UnknownThread(thread_id.to_owned()))?;
            (entry.loaded.clone(), entry.busy)
        };
        let no_turn = || PoolError::NoActiveTurn(thread_id.to_owned());
        if !busy {
            return Err(no_turn());
        }
        let loaded = loaded.ok_or_else(no_turn)?;
        let handle = inner.live_handle(&loaded).ok_or_else(no_turn)?;
        handle.interrupt(&loaded.codex_id).await.map_err(|e| match e {
            ProcessError::NoActiveTurn { .. } => no_turn(),
            e => e.into(),
        })
    }

    /// Releases a thread: unsubscribes it on its process and forgets it (routing and store).
    /// Fails with [`PoolError::ThreadBusy`] while a turn runs.
    pub async fn release_thread(&self, thread_id: &str) -> Result<(), PoolError> {
        let inner = &self.inner;
        let lock = inner.claim_thread(thread_id).await?;
        let _unclaim = Unclaim { inner, thread_id, armed: true };
        let _guard = lock.lock_owned().await;
        // Forget it in the store first (after what is queued for it), so a concurrent turn cannot
        // bring it back from there.
        inner.flush_store().await?;
        inner.store.delete(thread_id).await?;
        let entry = inner.routing.lock().expect("routing lock").threads.remove(thread_id);
        if let Some(loaded) = entry.and_then(|e| e.loaded) {
            inner.unload(&loaded, "release").await;
        }
        Ok(())
    }

    /// Ends the pool: running turns are interrupted and end with an `aborted` (`shutdown`) event,
    /// every process exits (killed if it must be), what the store still has to write is written,
    /// every task of the pool ends.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.shutdown.send_replace(true);
        let mut tasks = inner.tasks.lock().await.take().unwrap_or_default();
        // The store writer (started last) goes last: turns ending now still queue their writes.
        let writer = tasks.pop();
        for task in tasks {
            let _ = task.await;
        }
        // Turns end (and are recorded) when their consumers read or drop them: give them a moment.
        let deadline = Instant::now() + SHUTDOWN_RECORD_WAIT;
        while inner.routing.lock().expect("routing lock").threads.values().any(|t| t.busy) && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = inner.store_ops.send(StoreOp::Close);
        if let Some(writer) = writer {
            let _ = writer.await;
        }
        tracing::info!("pool shut down");
    }

    /// Load and health of every process.
    pub fn stats(&self) -> PoolStats {
        let inner = &self.inner;
        let slots: Vec<SlotStats> = inner.slots.iter().map(|s| s.stats()).collect();
        let routing = inner.routing.lock().expect("routing lock");
        PoolStats {
            size: inner.config.size,
            ready: slots.iter().filter(|s| s.state == "ready").count(),
            strategy: inner.config.strategy.name(),
            threads: routing.threads.len(),
            subscribed_threads: routing
                .threads
                .values()
                .filter(|t| t.loaded.as_ref().is_some_and(|l| inner.live_handle(l).is_some()))
                .count(),
            active_turns: slots.iter().map(|s| s.active_turns).sum(),
            slots,
        }
    }

    /// The live process handles, by slot (for diagnostics and fault tests).
    pub fn processes(&self) -> Vec<Option<AppServerHandle>> {
        self.inner.slots.iter().map(|s| s.ready().map(|(h, _)| h)).collect()
    }

    /// The slot whose process holds a conversation now, if one does.
    pub fn slot_of(&self, thread_id: &str) -> Option<usize> {
        self.loaded(thread_id).map(|l| l.slot)
    }

    /// The id of the codex thread that holds a conversation now, if one does (the conversation's
    /// own id until the pool first rebuilds it; for diagnostics).
    pub fn codex_thread_id(&self, thread_id: &str) -> Option<String> {
        self.loaded(thread_id).map(|l| l.codex_id)
    }

    fn loaded(&self, thread_id: &str) -> Option<Loaded> {
        let routing = self.inner.routing.lock().expect("routing lock");
        routing.threads.get(thread_id).and_then(|e| e.loaded.clone())
    }
}

/// Clears a thread's busy mark on an early return; disarmed once a turn's claim takes over.
struct Unclaim<'a> {
    inner: &'a Arc<PoolInner>,
    thread_id: &'a str,
    armed: bool,
}

impl Drop for Unclaim<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.turn_ended(self.thread_id);
        }
    }
}

/// `thread/start` params for a conversation: its settings, in memory only if it is ephemeral,
/// and with every history item reported, so the store keeps the history.
fn start_params(settings: &ThreadSettings, ephemeral: bool) -> ThreadStartParams {
    ThreadStartParams {
        settings: settings.clone(),
        ephemeral: ephemeral.then_some(true),
        experimental_raw_events: true,
    }
}

impl PoolInner {
    fn check_open(&self) -> Result<(), PoolError> {
        if *self.shutdown.borrow() {
            Err(PoolError::ShutDown)
        } else {
            Ok(())
        }
    }

    /// Chooses a ready process for new work.
    fn select(&self) -> Result<(Arc<SlotShared>, AppServerHandle, u64), PoolError> {
        let ready: Vec<(Arc<SlotShared>, AppServerHandle, u64)> =
            self.slots.iter().filter_map(|s| s.ready().map(|(h, g)| (s.clone(), h, g))).collect();
        if ready.is_empty() {
            return Err(PoolError::Unavailable);
        }
        let candidates: Vec<Candidate> = ready
            .iter()
            .map(|(s, _, _)| Candidate {
                slot: s.index,
                active_turns: s.active_turns.load(Ordering::Relaxed),
                loaded_threads: s.subscribed.load(Ordering::Relaxed),
            })
            .collect();
        let pick = self.strategy.select(&candidates).ok_or(PoolError::Unavailable)?;
        ready.into_iter().nth(pick).ok_or(PoolError::Unavailable)
    }

    /// Marks a thread busy (loading it from the store if the pool does not know it yet) and
    /// returns its turn lock.
    async fn claim_thread(&self, thread_id: &str) -> Result<TurnLock, PoolError> {
        if let Some(lock) = self.try_claim(thread_id)? {
            return Ok(lock);
        }
        let record = self.store.load(thread_id).await?.ok_or_else(|| PoolError::UnknownThread(thread_id.to_owned()))?;
        self.routing
            .lock()
            .expect("routing lock")
            .threads
            .entry(record.thread_id)
            .or_insert_with(|| ThreadEntry::new(record.settings, record.ephemeral, None));
        self.try_claim(thread_id)?.ok_or_else(|| PoolError::UnknownThread(thread_id.to_owned()))
    }

    fn try_claim(&self, thread_id: &str) -> Result<Option<TurnLock>, PoolError> {
        let mut routing = self.routing.lock().expect("routing lock");
        let Some(entry) = routing.threads.get_mut(thread_id) else { return Ok(None) };
        if entry.busy {
            return Err(PoolError::ThreadBusy(thread_id.to_owned()));
        }
        entry.busy = true;
        Ok(Some(entry.lock.clone()))
    }

    /// A turn of the thread ended (or never started): clear the busy mark.
    pub(crate) fn turn_ended(&self, thread_id: &str) {
        let mut routing = self.routing.lock().expect("routing lock");
        if let Some(entry) = routing.threads.get_mut(thread_id) {
            entry.busy = false;
            entry.last_used = Instant::now();
        }
    }

    /// A turn's items (and whether codex finished it) go to the store, in order.
    pub(crate) fn record_turn(&self, record: TurnRecord) {
        let _ = self.store_ops.send(StoreOp::Turn(record));
    }

    /// Per-turn model and approval overrides stick for later turns (as codex does), so they are
    /// kept with the thread's settings, for rebuilds after a crash or an eviction.
    fn remember_options(&self, thread_id: &str, options: &TurnOptions) {
        if options.model.is_none() && options.approval_policy.is_none() {
            return;
        }
        let settings = {
            let mut routing = self.routing.lock().expect("routing lock");
            let Some(entry) = routing.threads.get_mut(thread_id) else { return };
            if options.model.is_some() {
                entry.settings.model.clone_from(&options.model);
            }
            if options.approval_policy.is_some() {
                entry.settings.approval_policy = options.approval_policy;
            }
            entry.settings.clone()
        };
        let _ = self.store_ops.send(StoreOp::Settings(thread_id.to_owned(), settings));
    }

    /// The thread's process died: its next turn must rebuild it elsewhere.
    pub(crate) fn thread_lost_process(&self, thread_id: &str) {
        let mut routing = self.routing.lock().expect("routing lock");
        if let Some(entry) = routing.threads.get_mut(thread_id) {
            entry.loaded = None;
        }
    }

    /// The handle of the process a codex thread lives on, if that process still serves.
    fn live_handle(&self, loaded: &Loaded) -> Option<AppServerHandle> {
        self.slots[loaded.slot].ready().filter(|(_, g)| *g == loaded.generation).map(|(h, _)| h)
    }

    /// Unsubscribes a codex thread the pool no longer routes to (with the unload delay of 0 in
    /// the base overrides, codex then drops it from memory).
    async fn unload(&self, loaded: &Loaded, why: &'static str) {
        let Some(handle) = self.live_handle(loaded) else { return };
        self.slots[loaded.slot].subscribed.fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = handle.unsubscribe(&loaded.codex_id).await {
            tracing::debug!(codex_thread_id = %loaded.codex_id, why, error = %e, "unsubscribe failed");
        }
    }

    /// Makes sure the (claimed) conversation is loaded on a live process: where it is, or else
    /// rebuilt on a process the strategy picks.
    async fn place(&self, thread_id: &str) -> Result<Placement, PoolError> {
        let (settings, ephemeral, loaded) = {
            let routing = self.routing.lock().expect("routing lock");
            let entry = routing.threads.get(thread_id).ok_or_else(|| PoolError::UnknownThread(thread_id.to_owned()))?;
            (entry.settings.clone(), entry.ephemeral, entry.loaded.clone())
        };
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
        self.flush_store().await?;
        let mut history = self.store.history(thread_id).await?;
        if history.is_empty() {
            history = self.import_legacy_history(thread_id).await?;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (slot, handle, generation) = self.select()?;
            match self.rebuild_on(&handle, &settings, ephemeral, &history).await {
                Ok(codex_id) => {
                    tracing::debug!(
                        thread_id,
                        %codex_id,
                        process = handle.label(),
                        items = history.len(),
                        "conversation rebuilt from the store"
                    );
                    self.note_subscribed(&slot);
                    let loaded = Loaded { slot: slot.index, generation, codex_id: codex_id.clone() };
                    if let Some(entry) = self.routing.lock().expect("routing lock").threads.get_mut(thread_id) {
                        entry.loaded = Some(loaded);
                    }
                    return Ok(Placement { slot, handle, codex_id });
                }
                Err(e) if e.is_process_gone() && attempt <= self.slots.len() => continue,
                Err(e) => return Err(PoolError::Rebuild { thread_id: thread_id.to_owned(), source: e }),
            }
        }
    }

    /// Starts a codex thread with the conversation's settings and gives it the history.
    async fn rebuild_on(
        &self,
        handle: &AppServerHandle,
        settings: &ThreadSettings,
        ephemeral: bool,
        history: &[Value],
    ) -> Result<String, ProcessError> {
        let codex_id = handle.start_thread(&start_params(settings, ephemeral)).await?.thread.id;
        if !history.is_empty() {
            if let Err(e) = handle.inject_items(&codex_id, history.to_vec()).await {
                // Half a conversation is no conversation: do not leave it loaded.
                let _ = handle.unsubscribe(&codex_id).await;
                return Err(e);
            }
        }
        Ok(codex_id)
    }

    /// Waits until every store write queued so far is done (or the writer is gone); fails if
    /// one of them failed, so no conversation is rebuilt without a turn it had.
    async fn flush_store(&self) -> Result<(), PoolError> {
        if self.store_rx.lock().expect("store lock").is_some() {
            // The writer has not started (the pool has not): nothing is being written.
            return Ok(());
        }
        let (done, wait) = oneshot::channel();
        if self.store_ops.send(StoreOp::Flush(done)).is_ok() {
            if let Ok(Err(e)) = wait.await {
                return Err(StoreError::Worker(format!("an earlier write of turns failed: {e}")).into());
            }
        }
        Ok(())
    }

    /// A conversation of the first release (turns but no history in the store) gets its history
    /// from codex's rollout, once: it is written to the store and used for the rebuild.
    async fn import_legacy_history(&self, thread_id: &str) -> Result<Vec<Value>, PoolError> {
        let Some(record) = self.store.load(thread_id).await? else { return Ok(Vec::new()) };
        if record.turns == 0 || record.ephemeral {
            return Ok(Vec::new());
        }
        let home = self.config.process.codex_home.clone();
        let id = thread_id.to_owned();
        let found = tokio::task::spawn_blocking(move || crate::legacy::rollout_items(&home, &id))
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?;
        match found {
            Ok(Some(items)) if !items.is_empty() => {
                tracing::info!(thread_id, items = items.len(), "history imported from codex's rollout");
                let record = TurnRecord {
                    thread_id: thread_id.to_owned(),
                    turn_id: "rollout".to_owned(),
                    items,
                    completed: false,
                };
                let items = record.items.clone();
                self.store.record_turns(vec![record]).await?;
                Ok(items)
            }
            Ok(_) => {
                tracing::warn!(
                    thread_id,
                    turns = record.turns,
                    "no history for this conversation, in the store or in codex's rollouts; it goes on without it"
                );
                Ok(Vec::new())
            }
            Err(e) => Err(StoreError::Worker(format!("reading codex's rollout of {thread_id}: {e}")).into()),
        }
    }
}

/// Keeps codex's memory bounded: unsubscribes (and so unloads, see `thread_unload_delay_secs` in
/// the base overrides) threads idle longer than the configured time, and the least recently used
/// idle threads of a process that holds more than its cap. Runs on a timer and when a process
/// gains threads.
async fn reap_idle(pool: Weak<PoolInner>, mut shutdown: watch::Receiver<bool>) {
    let Some((period, wake)) = pool.upgrade().map(|p| {
        let period = (p.config.idle_unsubscribe_after / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
        (period, p.evict.clone())
    }) else {
        return;
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = wake.notified() => {}
            _ = shutdown.changed() => return,
        }
        let Some(pool) = pool.upgrade() else { return };
        pool.unsubscribe_idle().await;
    }
}

impl PoolInner {
    async fn unsubscribe_idle(&self) {
        let idle_after = self.config.idle_unsubscribe_after;
        let cap = self.config.max_loaded_threads_per_process;
        let candidates: Vec<(String, Loaded, TurnLock)> = {
            let routing = self.routing.lock().expect("routing lock");
            // Per slot: the loaded threads, least recently used first.
            let mut per_slot: Vec<Vec<(&String, &ThreadEntry, &Loaded)>> = vec![Vec::new(); self.slots.len()];
            let generations: Vec<Option<u64>> = self.slots.iter().map(|s| s.ready().map(|(_, g)| g)).collect();
            for (id, e) in &routing.threads {
                // Threads of a process that is gone hold nothing: they do not count.
                if let Some(l) = e.loaded.as_ref().filter(|l| generations[l.slot] == Some(l.generation)) {
                    per_slot[l.slot].push((id, e, l));
                }
            }
            let mut picked = Vec::new();
            for mut threads in per_slot {
                threads.sort_by_key(|(_, e, _)| e.last_used);
                let mut over = threads.len().saturating_sub(cap);
                for (id, e, loaded) in threads {
                    if e.busy {
                        continue;
                    }
                    if over > 0 || e.last_used.elapsed() >= idle_after {
                        over = over.saturating_sub(1);
                        picked.push((id.clone(), loaded.clone(), e.lock.clone()));
                    }
                }
            }
            picked
        };
        for (id, loaded, lock) in candidates {
            // A turn holds the lock: not idle after all.
            let Ok(_guard) = lock.try_lock_owned() else { continue };
            let still_idle = {
                let mut routing = self.routing.lock().expect("routing lock");
                match routing.threads.get_mut(&id) {
                    Some(e) if !e.busy && e.loaded.as_ref() == Some(&loaded) => {
                        e.loaded = None;
                        true
                    }
                    _ => false,
                }
            };
            if still_idle {
                self.unload(&loaded, "idle").await;
            }
        }
    }

    /// A process gained a thread: wake the reaper if it is over its cap.
    fn note_subscribed(&self, slot: &SlotShared) {
        let n = slot.subscribed.fetch_add(1, Ordering::Relaxed) + 1;
        if n > self.config.max_loaded_threads_per_process {
            self.evict.notify_one();
        }
    }
}

/// A store write done off the turn's path.
pub(crate) enum StoreOp {
    /// What a turn added.
    Turn(TurnRecord),
    /// The thread's settings changed.
    Settings(String, ThreadSettings),
    /// Answer once everything queued before is written: `Err` if a write of turns failed since
    /// the last flush.
    Flush(oneshot::Sender<Result<(), String>>),
    /// Write everything queued before, then end.
    Close,
}

/// Writes to the store off the turn's path, in the order asked: whatever is queued when the
/// writer gets to it goes in one batch (so under load many turns share one transaction). It ends
/// on [`StoreOp::Close`] (sent by [`Pool::shutdown`]) or when the pool is dropped, after writing
/// what was queued before.
async fn write_store(store: Arc<dyn ThreadStore>, mut rx: mpsc::UnboundedReceiver<StoreOp>) {
    let mut open = true;
    // The last failed write of turns, until a flush reports it.
    let mut failed: Option<String> = None;
    while open {
        let Some(first) = rx.recv().await else { return };
        let mut ops = vec![first];
        while let Ok(op) = rx.try_recv() {
            ops.push(op);
        }
        let mut turns = Vec::new();
        for op in ops {
            match op {
                StoreOp::Turn(record) => turns.push(record),
                StoreOp::Settings(id, settings) => {
                    write_turns(&*store, &mut turns, &mut failed).await;
                    if let Err(e) = store.update_settings(&id, settings).await {
                        tracing::warn!(thread_id = %id, error = %e, "could not update the thread's settings");
                    }
                }
                StoreOp::Flush(done) => {
                    write_turns(&*store, &mut turns, &mut failed).await;
                    let _ = done.send(failed.take().map_or(Ok(()), Err));
                }
                StoreOp::Close => open = false,
            }
        }
        write_turns(&*store, &mut turns, &mut failed).await;
    }
}

async fn write_turns(store: &dyn ThreadStore, turns: &mut Vec<TurnRecord>, failed: &mut Option<String>) {
    if turns.is_empty() {
        return;
    }
    let batch = std::mem::take(turns);
    let n = batch.len();
    if let Err(e) = store.record_turns(batch).await {
        tracing::error!(turns = n, error = %e, "could not record turns in the thread store");
        *failed = Some(e.to_string());
    }
}
