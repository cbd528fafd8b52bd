//! The pool: routing threads to processes, and carrying conversations across process failures.

use crate::config::PoolConfig;
use crate::error::PoolError;
use crate::profile::Profile;
use crate::strategy::{Candidate, SelectionStrategy};
use crate::supervisor::{supervise, SlotShared, SlotState, SlotStats};
use crate::turn::{PoolTurn, SlotTurn, TurnClaim};
use codex_pool_process::{AppServerHandle, ProcessError, TurnEvent};
use codex_pool_protocol::methods::{
    ThreadForkParams, ThreadResumeParams, ThreadSettings, ThreadStartParams, TurnStartParams,
};
use codex_pool_protocol::types::{ApprovalPolicy, UserInput};
use codex_pool_store::{ThreadRecord, ThreadStore};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

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

#[derive(Default)]
struct Routing {
    threads: HashMap<String, ThreadEntry>,
    /// Old thread id -> the id the conversation has now.
    aliases: HashMap<String, String>,
}

impl Routing {
    fn resolve(&self, id: &str) -> String {
        self.aliases.get(id).cloned().unwrap_or_else(|| id.to_owned())
    }
}

struct ThreadEntry {
    settings: ThreadSettings,
    /// The slot and process generation that loaded the thread last.
    home: Option<(usize, u64)>,
    /// Subscribed on `home` right now.
    subscribed: bool,
    /// A turn is running (or starting).
    busy: bool,
    last_used: Instant,
    /// Held by a running turn, and by the idle reaper while it unsubscribes.
    lock: TurnLock,
}

impl ThreadEntry {
    fn new(settings: ThreadSettings, home: Option<(usize, u64)>) -> Self {
        Self {
            settings,
            subscribed: home.is_some(),
            home,
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

/// How a thread id is turned into a loaded thread on a live process.
struct Placement {
    slot: Arc<SlotShared>,
    handle: AppServerHandle,
    thread_id: String,
    events: Vec<TurnEvent>,
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
                started.push(tokio::spawn(write_touches(inner.store.clone(), rx, inner.shutdown.subscribe())));
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

    /// Creates a conversation on a process chosen by the strategy and stores it. The profile
    /// fills in what the settings leave unset, then the pool's defaults: `CODEX_MODEL` and the
    /// empty working directory.
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
            let params = ThreadStartParams { settings: settings.clone(), ephemeral: None };
            match handle.start_thread(&params).await {
                Ok(resp) => {
                    let id = resp.thread.id;
                    if let Err(e) = inner.store.save(ThreadRecord::new(&id, settings.clone())).await {
                        // Not stored means not created: do not leave it loaded in codex.
                        let _ = handle.unsubscribe(&id).await;
                        return Err(e.into());
                    }
                    inner.note_subscribed(&slot);
                    let entry = ThreadEntry::new(settings, Some((slot.index, generation)));
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
    /// the thread; a thread whose process died is resumed elsewhere first (history intact).
    pub async fn start_turn(
        &self,
        thread_id: &str,
        input: Vec<UserInput>,
        options: TurnOptions,
    ) -> Result<PoolTurn, PoolError> {
        let inner = &self.inner;
        inner.check_open()?;
        let (id, lock) = inner.claim_thread(thread_id).await?;
        // From here on the thread is marked busy; `Unclaim` clears it on every early return
        // (and if this future is dropped).
        let mut unclaim = Unclaim { inner, thread_id: id, armed: true };
        let thread_lock = lock.lock_owned().await;
        // Events for the caller from placement (a changed thread id), kept across attempts.
        let mut prefix = Vec::new();
        let mut attempts = 0;
        // A turn the caller dropped a moment ago may still be ending in codex.
        let busy_deadline = Instant::now() + self.inner.config.process.interrupt_grace + Duration::from_secs(1);
        loop {
            attempts += 1;
            let Placement { slot, handle, thread_id, events } = inner.place(&unclaim.thread_id).await?;
            prefix.extend(events);
            unclaim.thread_id = thread_id.clone();
            let permit =
                match tokio::time::timeout(inner.config.overload_wait, slot.turn_permits.clone().acquire_owned()).await
                {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(PoolError::ShutDown),
                    Err(_) => {
                        return Err(PoolError::Overloaded { thread_id, limit: inner.config.max_turns_per_process })
                    }
                };
            let mut params = TurnStartParams::new(&thread_id, input.clone());
            params.model = options.model.clone();
            params.effort = options.effort.clone();
            params.approval_policy = options.approval_policy;
            params.output_schema = options.output_schema.clone();
            let counted = SlotTurn::new(slot);
            match handle.start_turn(params).await {
                Ok(stream) => {
                    let stream = stream.with_silence_timeout(inner.config.turn_timeout);
                    inner.remember_options(&thread_id, &options);
                    let claim = TurnClaim {
                        pool: Arc::downgrade(inner),
                        thread_id,
                        _slot_turn: counted,
                        _permit: permit,
                        _thread_lock: thread_lock,
                    };
                    unclaim.armed = false;
                    return Ok(PoolTurn::new(prefix, stream, claim));
                }
                Err(e) if e.is_process_gone() && attempts <= inner.slots.len() => {
                    // The process died between placement and start: place again.
                    inner.thread_lost_process(&thread_id);
                }
                Err(ProcessError::ThreadBusy { .. }) if Instant::now() < busy_deadline => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(ProcessError::ThreadBusy { thread_id }) => return Err(PoolError::ThreadBusy(thread_id)),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Interrupts the running turn of a thread.
    pub async fn interrupt_turn(&self, thread_id: &str) -> Result<(), PoolError> {
        let inner = &self.inner;
        let (id, home, busy) = {
            let routing = inner.routing.lock().expect("routing lock");
            let id = routing.resolve(thread_id);
            let entry = routing.threads.get(&id).ok_or_else(|| PoolError::UnknownThread(thread_id.to_owned()))?;
            (id.clone(), entry.home, entry.busy)
        };
        if !busy {
            return Err(PoolError::NoActiveTurn(id));
        }
        let (handle, _) = home
            .and_then(|(slot, generation)| inner.slots[slot].ready().filter(|(_, g)| *g == generation))
            .ok_or_else(|| PoolError::NoActiveTurn(id.clone()))?;
        handle.interrupt(&id).await.map_err(|e| match e {
            ProcessError::NoActiveTurn { thread_id } => PoolError::NoActiveTurn(thread_id),
            e => e.into(),
        })
    }

    /// Releases a thread: unsubscribes it on its process and forgets it (routing and store).
    /// Fails with [`PoolError::ThreadBusy`] while a turn runs.
    pub async fn release_thread(&self, thread_id: &str) -> Result<(), PoolError> {
        let inner = &self.inner;
        let (id, lock) = inner.claim_thread(thread_id).await?;
        let _unclaim = Unclaim { inner, thread_id: id.clone(), armed: true };
        let _guard = lock.lock_owned().await;
        // Forget it in the store first, so a concurrent turn cannot bring it back from there.
        inner.store.delete(&id).await?;
        let entry = {
            let mut routing = inner.routing.lock().expect("routing lock");
            routing.aliases.retain(|_, to| *to != id);
            routing.threads.remove(&id)
        };
        if let Some(ThreadEntry { subscribed: true, home: Some((slot, generation)), .. }) = entry {
            if let Some((handle, g)) = inner.slots[slot].ready() {
                if g == generation {
                    inner.slots[slot].subscribed.fetch_sub(1, Ordering::Relaxed);
                    if let Err(e) = handle.unsubscribe(&id).await {
                        tracing::debug!(thread_id = %id, error = %e, "unsubscribe on release failed");
                    }
                }
            }
        }
        Ok(())
    }

    /// Ends the pool: running turns are interrupted and end with an `aborted` (`shutdown`) event,
    /// every process exits (killed if it must be), every task of the pool ends.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.shutdown.send_replace(true);
        let tasks = inner.tasks.lock().await.take();
        for task in tasks.into_iter().flatten() {
            let _ = task.await;
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
            subscribed_threads: routing.threads.values().filter(|t| t.subscribed).count(),
            active_turns: slots.iter().map(|s| s.active_turns).sum(),
            slots,
        }
    }

    /// The live process handles, by slot (for diagnostics and fault tests).
    pub fn processes(&self) -> Vec<Option<AppServerHandle>> {
        self.inner.slots.iter().map(|s| s.ready().map(|(h, _)| h)).collect()
    }

    /// The slot that holds a thread now, if it is loaded.
    pub fn slot_of(&self, thread_id: &str) -> Option<usize> {
        let routing = self.inner.routing.lock().expect("routing lock");
        routing.threads.get(&routing.resolve(thread_id)).and_then(|e| e.home.map(|(s, _)| s))
    }

    /// The id a conversation has now (after forks), if the pool knows it.
    pub fn current_thread_id(&self, thread_id: &str) -> Option<String> {
        let routing = self.inner.routing.lock().expect("routing lock");
        let id = routing.resolve(thread_id);
        routing.threads.contains_key(&id).then_some(id)
    }
}

/// Clears a thread's busy mark on an early return; disarmed once a turn's claim takes over.
struct Unclaim<'a> {
    inner: &'a Arc<PoolInner>,
    thread_id: String,
    armed: bool,
}

impl Drop for Unclaim<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.turn_ended(&self.thread_id);
        }
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
    /// returns its current id and turn lock.
    async fn claim_thread(&self, thread_id: &str) -> Result<(String, TurnLock), PoolError> {
        if let Some(claimed) = self.try_claim(thread_id)? {
            return Ok(claimed);
        }
        let record = self.store.load(thread_id).await?.ok_or_else(|| PoolError::UnknownThread(thread_id.to_owned()))?;
        {
            let mut routing = self.routing.lock().expect("routing lock");
            if record.thread_id != thread_id {
                routing.aliases.insert(thread_id.to_owned(), record.thread_id.clone());
            }
            routing.threads.entry(record.thread_id.clone()).or_insert_with(|| ThreadEntry::new(record.settings, None));
        }
        self.try_claim(thread_id)?.ok_or_else(|| PoolError::UnknownThread(thread_id.to_owned()))
    }

    fn try_claim(&self, thread_id: &str) -> Result<Option<(String, TurnLock)>, PoolError> {
        let mut routing = self.routing.lock().expect("routing lock");
        let id = routing.resolve(thread_id);
        let Some(entry) = routing.threads.get_mut(&id) else { return Ok(None) };
        if entry.busy {
            return Err(PoolError::ThreadBusy(id));
        }
        entry.busy = true;
        Ok(Some((id, entry.lock.clone())))
    }

    /// A turn of the thread ended (or never started): clear the busy mark.
    pub(crate) fn turn_ended(&self, thread_id: &str) {
        let mut routing = self.routing.lock().expect("routing lock");
        let id = routing.resolve(thread_id);
        if let Some(entry) = routing.threads.get_mut(&id) {
            entry.busy = false;
            entry.last_used = Instant::now();
        }
    }

    pub(crate) fn turn_completed(&self, thread_id: &str) {
        let _ = self.store_ops.send(StoreOp::Touch(thread_id.to_owned()));
    }

    /// Per-turn model and approval overrides stick for later turns (as codex does), so they are
    /// kept with the thread's settings, for resumes after a crash or an eviction.
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

    /// The thread's process died: its next turn must resume it elsewhere.
    pub(crate) fn thread_lost_process(&self, thread_id: &str) {
        let mut routing = self.routing.lock().expect("routing lock");
        let id = routing.resolve(thread_id);
        if let Some(entry) = routing.threads.get_mut(&id) {
            entry.subscribed = false;
        }
    }

    /// Makes sure the (claimed) thread is loaded on a live process, resuming, re-creating or
    /// forking it as needed.
    async fn place(&self, thread_id: &str) -> Result<Placement, PoolError> {
        let (settings, home, subscribed) = {
            let routing = self.routing.lock().expect("routing lock");
            let entry = routing.threads.get(thread_id).ok_or_else(|| PoolError::UnknownThread(thread_id.to_owned()))?;
            (entry.settings.clone(), entry.home, entry.subscribed)
        };
        // Still on its live process: nothing to do.
        if let Some((slot, generation)) = home {
            if let Some((handle, g)) = self.slots[slot].ready() {
                if g == generation && subscribed {
                    return Ok(Placement {
                        slot: self.slots[slot].clone(),
                        handle,
                        thread_id: thread_id.to_owned(),
                        events: vec![],
                    });
                }
            }
        }
        // Its process still lives (the thread was unsubscribed while idle): codex may still hold
        // the thread there, so rejoin it on the same process. Otherwise any process will do.
        let same_process = home.and_then(|(slot, generation)| {
            self.slots[slot].ready().filter(|(_, g)| *g == generation).map(|(h, g)| (self.slots[slot].clone(), h, g))
        });
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (slot, handle, generation) = match (&same_process, attempt) {
                (Some(p), 1) => p.clone(),
                _ => self.select()?,
            };
            match self.load_on(&handle, thread_id, &settings).await {
                Ok((new_id, events)) => {
                    self.note_subscribed(&slot);
                    let mut routing = self.routing.lock().expect("routing lock");
                    if new_id != thread_id {
                        let mut entry = routing.threads.remove(thread_id).expect("claimed thread has an entry");
                        entry.home = Some((slot.index, generation));
                        entry.subscribed = true;
                        for to in routing.aliases.values_mut().filter(|to| to.as_str() == thread_id) {
                            *to = new_id.clone();
                        }
                        routing.aliases.insert(thread_id.to_owned(), new_id.clone());
                        routing.threads.insert(new_id.clone(), entry);
                    } else if let Some(entry) = routing.threads.get_mut(thread_id) {
                        entry.home = Some((slot.index, generation));
                        entry.subscribed = true;
                    }
                    return Ok(Placement { slot, handle, thread_id: new_id, events });
                }
                Err(e) if e.is_process_gone() && attempt <= self.slots.len() => continue,
                Err(e) => return Err(PoolError::Resume { thread_id: thread_id.to_owned(), source: e }),
            }
        }
    }

    /// Loads a thread on one process: `thread/resume`; a thread that never ran a turn (nothing on
    /// disk) is started afresh with the same settings; one that another writer still holds is
    /// forked. Returns the id the conversation has now and the events that tell the caller.
    async fn load_on(
        &self,
        handle: &AppServerHandle,
        thread_id: &str,
        settings: &ThreadSettings,
    ) -> Result<(String, Vec<TurnEvent>), ProcessError> {
        let resume =
            ThreadResumeParams { thread_id: thread_id.to_owned(), settings: settings.clone(), exclude_turns: true };
        let mut writer_retries = 0;
        let err = loop {
            match handle.resume_thread(&resume).await {
                Ok(_) => {
                    tracing::debug!(thread_id, process = handle.label(), "thread resumed");
                    return Ok((thread_id.to_owned(), vec![]));
                }
                // The old process may still be on its way out, or this one still closing the
                // thread after an unsubscribe: give it a moment to let go.
                Err(e) if (is_active_writer(&e) || is_closing(&e)) && writer_retries < 20 => {
                    writer_retries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => break e,
            }
        };
        let (new_id, reason) = if is_no_rollout(&err) {
            let params = ThreadStartParams { settings: settings.clone(), ephemeral: None };
            let new_id = handle.start_thread(&params).await?.thread.id;
            (new_id, "the thread had no history on disk yet (it was unloaded, or its process died, before its first turn); started afresh with the same settings")
        } else if is_active_writer(&err) {
            let params =
                ThreadForkParams { thread_id: thread_id.to_owned(), settings: settings.clone(), exclude_turns: true };
            let new_id = handle.fork_thread(&params).await?.thread.id;
            (new_id, "another process still holds the thread; the conversation was forked with its whole history")
        } else {
            return Err(err);
        };
        tracing::warn!(old = thread_id, new = %new_id, reason, "conversation moved to a new thread id");
        let record = match self.store.load(thread_id).await {
            Ok(Some(old)) => ThreadRecord { thread_id: new_id.clone(), settings: settings.clone(), ..old },
            _ => ThreadRecord::new(&new_id, settings.clone()),
        };
        if let Err(e) = self.store.replace(thread_id, record).await {
            tracing::error!(old = thread_id, new = %new_id, error = %e, "could not record the new thread id");
        }
        let event = TurnEvent::ThreadIdChanged {
            old_thread_id: thread_id.to_owned(),
            new_thread_id: new_id.clone(),
            reason: reason.to_owned(),
        };
        Ok((new_id, vec![event]))
    }
}

fn is_no_rollout(e: &ProcessError) -> bool {
    e.rpc().is_some_and(|r| r.message.contains("no rollout found"))
}

fn is_closing(e: &ProcessError) -> bool {
    e.rpc().is_some_and(|r| r.message.contains("is closing"))
}

fn is_active_writer(e: &ProcessError) -> bool {
    e.rpc().is_some_and(|r| r.message.contains("active writer"))
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
        let candidates: Vec<(String, usize, u64, TurnLock)> = {
            let routing = self.routing.lock().expect("routing lock");
            // Per slot: the subscribed threads, least recently used first.
            let mut per_slot: Vec<Vec<(&String, &ThreadEntry)>> = vec![Vec::new(); self.slots.len()];
            let generations: Vec<Option<u64>> = self.slots.iter().map(|s| s.ready().map(|(_, g)| g)).collect();
            for (id, e) in &routing.threads {
                // Threads of a process that is gone hold nothing: they do not count.
                if let (true, Some((slot, generation))) = (e.subscribed, e.home) {
                    if generations[slot] == Some(generation) {
                        per_slot[slot].push((id, e));
                    }
                }
            }
            let mut picked = Vec::new();
            for (slot, mut threads) in per_slot.into_iter().enumerate() {
                threads.sort_by_key(|(_, e)| e.last_used);
                let mut over = threads.len().saturating_sub(cap);
                for (id, e) in threads {
                    if e.busy {
                        continue;
                    }
                    let evict = over > 0;
                    if evict || e.last_used.elapsed() >= idle_after {
                        over = over.saturating_sub(1);
                        let (_, generation) = e.home.expect("subscribed threads have a home");
                        picked.push((id.clone(), slot, generation, e.lock.clone()));
                    }
                }
            }
            picked
        };
        for (id, slot, generation, lock) in candidates {
            // A turn holds the lock: not idle after all.
            let Ok(_guard) = lock.try_lock_owned() else { continue };
            let still_idle = {
                let mut routing = self.routing.lock().expect("routing lock");
                match routing.threads.get_mut(&id) {
                    Some(e) if e.subscribed && !e.busy && e.home == Some((slot, generation)) => {
                        e.subscribed = false;
                        true
                    }
                    _ => false,
                }
            };
            if !still_idle {
                continue;
            }
            if let Some((handle, g)) = self.slots[slot].ready() {
                if g == generation {
                    self.slots[slot].subscribed.fetch_sub(1, Ordering::Relaxed);
                    if let Err(e) = handle.unsubscribe(&id).await {
                        tracing::debug!(thread_id = %id, error = %e, "idle unsubscribe failed");
                    }
                }
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
    /// A turn completed.
    Touch(String),
    /// The thread's settings changed.
    Settings(String, ThreadSettings),
}

/// Writes to the store off the turn's path: completed turns are counted and written at most a few
/// times a second (one write per thread per batch); what is queued is written on shutdown.
async fn write_touches(
    store: Arc<dyn ThreadStore>,
    mut rx: mpsc::UnboundedReceiver<StoreOp>,
    mut shutdown: watch::Receiver<bool>,
) {
    const BATCH_EVERY: Duration = Duration::from_millis(250);
    let mut open = true;
    while open {
        let first = tokio::select! {
            op = rx.recv() => op,
            _ = shutdown.changed() => {
                rx.close();
                rx.recv().await
            }
        };
        let Some(first) = first else { return };
        // Gather what arrives in the batch window.
        let mut ops = vec![first];
        let window = tokio::time::sleep(BATCH_EVERY);
        tokio::pin!(window);
        loop {
            tokio::select! {
                op = rx.recv() => match op {
                    Some(op) => ops.push(op),
                    None => { open = false; break; }
                },
                _ = &mut window => break,
                _ = shutdown.changed() => { rx.close(); }
            }
        }
        let mut turns: HashMap<String, u64> = HashMap::new();
        for op in ops {
            let result = match op {
                StoreOp::Touch(id) => {
                    *turns.entry(id).or_default() += 1;
                    Ok(())
                }
                StoreOp::Settings(id, settings) => match store.load(&id).await {
                    Ok(Some(record)) => store.save(ThreadRecord { settings, ..record }).await,
                    other => other.map(|_| ()),
                },
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "could not update the thread store");
            }
        }
        for (id, n) in turns {
            if let Err(e) = store.touch(&id, n).await {
                tracing::warn!(thread_id = %id, error = %e, "could not record completed turns");
            }
        }
    }
}
