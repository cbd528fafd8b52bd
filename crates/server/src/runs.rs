//! Turns run by the service. Each turn is driven to its end by a task the service owns, not by
//! the HTTP connection that asked for it: a client that goes away never cuts a turn, which runs
//! to its end and is recorded. The turn's events go to a log that clients read from any point
//! (`Last-Event-ID`), while the turn runs and for a while after it ended.
//!
//! What the logs hold is bounded: a running turn's log by [`RunLimits::turn_bytes`] (a turn whose
//! events pass it is cut, ending `turn.failed` with kind `events_too_large`), the ended turns'
//! logs all together by [`RunLimits::retained_bytes`] (the oldest go first), each ended log by
//! [`RunLimits::retention`]. Sizes are those of the events' JSON, counted once as they arrive.

mod kept;

use crate::events::{ApiEvent, EventBody, FailureKind, Mapper};
use crate::metrics::Metrics;
use codex_pool::{ConversationId, PoolTurn};
use codex_pool_protocol::TurnId;
use kept::Kept;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// One turn's events so far, and whether it has ended.
pub(crate) struct RunLog {
    /// The conversation.
    pub(crate) conversation: ConversationId,
    /// The codex turn id.
    pub(crate) turn_id: TurnId,
    /// Shared with the readers: each holds the events it has yet to send, not a copy of them.
    events: Mutex<Vec<Arc<ApiEvent>>>,
    /// The size of the events' JSON, added up as they arrive.
    bytes: AtomicUsize,
    /// How many events there are, and whether the last one is in.
    progress: watch::Sender<(usize, bool)>,
}

impl RunLog {
    fn new(conversation: ConversationId, turn_id: TurnId) -> Self {
        Self {
            conversation,
            turn_id,
            events: Mutex::new(Vec::new()),
            bytes: AtomicUsize::new(0),
            progress: watch::channel((0, false)).0,
        }
    }

    /// The size of its events' JSON so far.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn push(&self, event: ApiEvent) {
        let size = event.wire_size();
        self.push_sized(Arc::new(event), size);
    }

    /// Logs an event whose wire size is `size`. An answer codex marked `hide` or `block` after
    /// its text went out (`item.moderated`, `retracted`) takes that text out of the log: its
    /// `text.delta`s stay, empty, so ids keep their places and a reader that picks the turn up
    /// later (or reads it whole) gets none of it.
    fn push_sized(&self, event: Arc<ApiEvent>, size: usize) {
        self.bytes.fetch_add(size, Ordering::Relaxed);
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if let EventBody::ItemModerated { item, retracted: true, .. } = &event.body {
            let moderated = item["id"].as_str().unwrap_or_default();
            for logged in events.iter_mut() {
                if let EventBody::TextDelta { item_id, delta } = &logged.body {
                    if item_id == moderated && !delta.is_empty() {
                        self.bytes.fetch_sub(delta.len(), Ordering::Relaxed);
                        let body = EventBody::TextDelta { item_id: item_id.clone(), delta: String::new() };
                        *logged = Arc::new(ApiEvent { id: logged.id, body });
                    }
                }
            }
        }
        events.push(event);
        let n = events.len();
        drop(events);
        self.progress.send_modify(|(len, _)| *len = n);
    }

    fn finish(&self) {
        self.progress.send_modify(|(_, done)| *done = true);
    }

    /// Events after id `after` (ids run from 1), at most [`READ_BATCH`] of them, waiting until
    /// there are some; `None` once the turn has ended and every event was read.
    pub(crate) async fn next_after(&self, after: u64) -> Option<Vec<Arc<ApiEvent>>> {
        let mut progress = self.progress.subscribe();
        let after = after as usize;
        let state = progress.wait_for(|(len, done)| *len > after || *done).await.ok().map(|s| *s)?;
        if state.0 <= after {
            return None;
        }
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        Some(events[after.min(events.len())..].iter().take(READ_BATCH).cloned().collect())
    }

    /// The events so far, and whether the turn has ended.
    pub(crate) fn snapshot(&self) -> (Vec<Arc<ApiEvent>>, bool) {
        let done = self.progress.borrow().1;
        (self.events.lock().unwrap_or_else(|p| p.into_inner()).clone(), done)
    }

    /// The events after id `after` up to the turn's next pause: its end, or tool calls it waits
    /// on (`tool.calls`), once that has come.
    pub(crate) async fn wait_pause(&self, after: u64) -> Vec<Arc<ApiEvent>> {
        let mut progress = self.progress.subscribe();
        let after = after as usize;
        let mut seen = after;
        loop {
            let done = progress.borrow_and_update().1;
            if let Some(events) = self.pause_after(after, &mut seen, done) {
                return events;
            }
            if progress.changed().await.is_err() {
                return Vec::new();
            }
        }
    }

    /// The events after `after` up to a pause at or past `seen`, if one is in (or all of them
    /// once the turn is `done`); `seen` moves past what was looked at.
    fn pause_after(&self, after: usize, seen: &mut usize, done: bool) -> Option<Vec<Arc<ApiEvent>>> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let from = (*seen).min(events.len());
        let pause =
            events[from..].iter().position(|e| e.is_terminal() || matches!(e.body, EventBody::ToolCalls { .. }));
        *seen = events.len();
        match pause {
            Some(at) => Some(events[after.min(events.len())..=from + at].to_vec()),
            None if done => Some(events[after.min(events.len())..].to_vec()),
            None => None,
        }
    }

    /// The id of the last `tool.calls` event so far (0 if none).
    pub(crate) fn last_tool_calls(&self) -> u64 {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.iter().rev().find(|e| matches!(e.body, EventBody::ToolCalls { .. })).map_or(0, |e| e.id)
    }

    /// Every event, once the turn has ended.
    pub(crate) async fn wait_all(&self) -> Vec<Arc<ApiEvent>> {
        let mut progress = self.progress.subscribe();
        let _ = progress.wait_for(|(_, done)| *done).await;
        self.events.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

type Key = (ConversationId, TurnId);

/// What runs once a turn has ended, before anyone reads its end: it gets every event of the
/// turn, the terminal one last, and answers what to wait for (a store write) before the end is
/// logged.
pub(crate) type OnEnd = Box<dyn FnOnce(&[Arc<ApiEvent>]) -> EndWork + Send>;

/// What an [`OnEnd`] does after it has read the events.
pub(crate) type EndWork = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// The most events a reader takes from a log at once: what it holds besides the log is bounded.
pub(crate) const READ_BATCH: usize = 64;

/// Why a turn could not be run.
#[derive(Debug)]
pub(crate) enum RunRefused {
    /// As many turns run as the service allows.
    TooMany(usize),
}

/// A turn's log that was kept and is no longer: its turn ended longer ago than the retention,
/// or the budget of ended logs needed its room, or it was too large to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expired;

/// How many turns run at once, and what of their events is kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunLimits {
    /// Turns running at once.
    pub(crate) max_turns: usize,
    /// How long an ended turn's events are kept.
    pub(crate) retention: Duration,
    /// Bytes (of the events' JSON) of all ended turns' logs kept; the oldest go first.
    pub(crate) retained_bytes: usize,
    /// Bytes of one turn's events: a running turn that passes it is cut (`events_too_large`).
    pub(crate) turn_bytes: usize,
}

/// The turns the service runs, and their logs.
pub(crate) struct Runs {
    logs: Mutex<Kept<Key, Arc<RunLog>>>,
    /// The turn each conversation runs now, while its task drives it.
    running_turns: Mutex<HashMap<ConversationId, TurnId>>,
    tasks: Mutex<JoinSet<()>>,
    /// Room for turns; each running turn holds one permit.
    room: Arc<Semaphore>,
    max_turns: usize,
    limits: RunLimits,
    /// Where turns are counted.
    metrics: Arc<Metrics>,
    /// Where API keys' usage is written.
    store: Arc<dyn codex_pool_store::ThreadStore>,
}

impl Runs {
    /// Turns and their logs within `limits`; turns counted in `metrics`.
    pub(crate) fn new(
        limits: RunLimits,
        metrics: Arc<Metrics>,
        store: Arc<dyn codex_pool_store::ThreadStore>,
    ) -> Arc<Self> {
        Arc::new(Self {
            logs: Mutex::new(Kept::new(limits.retained_bytes)),
            running_turns: Mutex::default(),
            tasks: Mutex::new(JoinSet::new()),
            room: Arc::new(Semaphore::new(limits.max_turns)),
            max_turns: limits.max_turns,
            limits,
            metrics,
            store,
        })
    }

    /// Room for one more turn, if there is.
    pub(crate) fn reserve(&self) -> Result<OwnedSemaphorePermit, RunRefused> {
        self.room.clone().try_acquire_owned().map_err(|_| RunRefused::TooMany(self.max_turns))
    }

    /// Runs a started turn to its end in a task of the service's; returns its log. `begun` is
    /// when the turn was asked for (its latency is counted from there).
    pub(crate) fn run(self: &Arc<Self>, turn: PoolTurn, room: OwnedSemaphorePermit, begun: Instant) -> Arc<RunLog> {
        self.run_with(turn, room, begun, None)
    }

    /// [`Runs::run`], with `on_end` run once the turn has ended, before its end is logged: a
    /// client that reads the end and asks again at once finds what `on_end` did.
    pub(crate) fn run_with(
        self: &Arc<Self>,
        turn: PoolTurn,
        room: OwnedSemaphorePermit,
        begun: Instant,
        on_end: Option<OnEnd>,
    ) -> Arc<RunLog> {
        let log = Arc::new(RunLog::new(turn.conversation_id().clone(), turn.turn_id().clone()));
        let key = (log.conversation.clone(), log.turn_id.clone());
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), log.clone());
        self.running_turns.lock().unwrap_or_else(|p| p.into_inner()).insert(key.0.clone(), key.1.clone());
        let (runs, driven) = (Arc::downgrade(self), log.clone());
        let (limits, metrics) = (self.limits, self.metrics.clone());
        // The key whose request started the turn: its usage is written at the turn's end, before
        // the end is logged (a client that reads the end finds it counted).
        let on_end = match crate::keys::caller().key().cloned() {
            Some(key) => Some(crate::keys::usage::counting(key, self.store.clone(), metrics.keys.clone(), on_end)),
            None => on_end,
        };
        metrics.turn_started();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        // Ended tasks are reaped here, so the set holds only live ones.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let keep = |bytes| runs.upgrade().and_then(|runs| runs.ended(key.clone(), bytes));
            let kept = drive(turn, &driven, &metrics, begun, room, on_end, limits.turn_bytes, keep).await;
            drop(driven);
            if let Some(runs) = runs.upgrade() {
                runs.turn_over(&key);
            }
            let Some(seq) = kept else { return };
            tokio::time::sleep(limits.retention).await;
            if let Some(runs) = runs.upgrade() {
                let mut logs = runs.logs.lock().unwrap_or_else(|p| p.into_inner());
                logs.expire(seq);
                runs.metrics.events_retained(logs.bytes());
            }
        });
        log
    }

    /// Runs `then` once the turn of `log` has ended, in a task of the service's (so a client
    /// that goes away does not cancel it).
    pub(crate) fn after_end<F>(&self, log: Arc<RunLog>, then: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.spawn(async move {
            log.wait_all().await;
            then.await;
        });
    }

    /// Runs `work` in a task of the service's (a client that goes away does not cancel it; it
    /// ends with the service's tasks).
    pub(crate) fn task<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        while tasks.try_join_next().is_some() {}
        tasks.spawn(work);
    }

    /// The log of a turn, while it is kept: `Ok(None)` for a turn it does not know, `Err` for
    /// one whose log it kept and no longer does.
    pub(crate) fn log(&self, conversation: &ConversationId, turn_id: &TurnId) -> Result<Option<Arc<RunLog>>, Expired> {
        let logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        logs.get(&(conversation.clone(), turn_id.clone())).map_err(|()| Expired)
    }

    /// A turn's log of `bytes` ended: kept within the budget (the oldest ended logs make room),
    /// or dropped if it is larger than the whole budget or not to be kept (`None`: its turn was
    /// cut). Its place in the end order, if kept.
    fn ended(&self, key: Key, bytes: Option<usize>) -> Option<u64> {
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let (seq, evicted) = logs.ended(key, bytes);
        let retained = logs.bytes();
        drop(logs);
        self.metrics.events_retained(retained);
        self.metrics.events_evicted("budget", evicted.budget);
        self.metrics.events_evicted("too_large", evicted.too_large);
        seq
    }

    /// The id of the turn the conversation runs now through this service, if one does.
    pub(crate) fn running_turn(&self, conversation: &ConversationId) -> Option<TurnId> {
        self.running_turns.lock().unwrap_or_else(|p| p.into_inner()).get(conversation).cloned()
    }

    /// The turn of `key` is over: no longer the conversation's running turn (unless a newer
    /// one already is).
    fn turn_over(&self, (conversation, turn_id): &Key) {
        let mut running = self.running_turns.lock().unwrap_or_else(|p| p.into_inner());
        if running.get(conversation) == Some(turn_id) {
            running.remove(conversation);
        }
    }

    /// Turns running now.
    pub(crate) fn running(&self) -> usize {
        self.max_turns - self.room.available_permits()
    }

    /// Waits (at most `limit`) for running turns to end, then stops keeping logs. The pool's
    /// shutdown ends every turn, so this is quick once it has begun.
    pub(crate) async fn shutdown(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.room.acquire_many(self.max_turns as u32)).await;
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

/// Reads the turn to its end, logging what clients see of it and counting it.
/// The turn's room in the service is given back before its end is logged, so a client that
/// reads the end and at once starts another turn finds the room; so is the log's size given to
/// `keep` (which decides whether the ended log is kept, and answers its place among the kept),
/// so a client that reads the end and re-attaches finds it kept or not, as it will stay.
#[allow(clippy::too_many_arguments)]
async fn drive(
    mut turn: PoolTurn,
    log: &RunLog,
    metrics: &Metrics,
    begun: Instant,
    room: OwnedSemaphorePermit,
    on_end: Option<OnEnd>,
    max_bytes: usize,
    keep: impl FnMut(Option<usize>) -> Option<u64>,
) -> Option<u64> {
    let mut mapper = Mapper::new(turn.conversation_id().clone(), turn.turn_id().clone());
    let mut recorder =
        Recorder { log, metrics, begun, first_text: true, room: Some(room), on_end, keep, kept: None, cut: false };
    while let Some(event) = turn.next().await {
        if let Some(api_event) = mapper.map(event) {
            recorder.record(api_event).await;
        }
        if !mapper.ended() && log.bytes() > max_bytes {
            // Dropping the turn below abandons it: codex is interrupted, nothing is recorded.
            metrics.limit_refused("max_turn_event_bytes");
            tracing::warn!(conversation = %log.conversation, turn = %log.turn_id, bytes = log.bytes(), limit = max_bytes,
                "a turn's events passed the per-turn limit: the turn is cut");
            let message = format!(
                "the turn's events passed {max_bytes} bytes, the most the service keeps of one turn \
                 (--max-turn-event-bytes); the turn was cut and is not kept. Ask for a shorter reply"
            );
            recorder.cut = true;
            recorder.record(mapper.abort(FailureKind::EventsTooLarge, message)).await;
            break;
        }
    }
    if !mapper.ended() {
        // The pool ends every turn with one terminal event; should that ever fail, clients
        // still get an end.
        recorder.record(mapper.lost()).await;
    }
    log.finish();
    recorder.kept
}

/// What [`drive`] does with each event, the end's work included.
struct Recorder<'a, K> {
    log: &'a RunLog,
    metrics: &'a Metrics,
    begun: Instant,
    first_text: bool,
    room: Option<OwnedSemaphorePermit>,
    on_end: Option<OnEnd>,
    keep: K,
    kept: Option<u64>,
    cut: bool,
}

impl<K: FnMut(Option<usize>) -> Option<u64>> Recorder<'_, K> {
    /// Logs an event; the terminal one after `on_end`'s work, with the turn's room given back
    /// and its log's size given to `keep` first.
    async fn record(&mut self, event: ApiEvent) {
        observe(&event, self.metrics, self.begun, &mut self.first_text);
        if !event.is_terminal() {
            self.log.push(event);
            return;
        }
        let event = Arc::new(event);
        if let Some(on_end) = self.on_end.take() {
            let mut events = self.log.snapshot().0;
            events.push(event.clone());
            on_end(&events).await;
        }
        self.room.take();
        let size = event.wire_size();
        self.kept = (self.keep)(Some(self.log.bytes() + size).filter(|_| !self.cut));
        self.log.push_sized(event, size);
        self.log.finish();
    }
}

/// Counts what an event says: the first text, the end, tool calls, an answer withheld.
fn observe(event: &ApiEvent, metrics: &Metrics, begun: Instant, first_text: &mut bool) {
    match &event.body {
        EventBody::TextDelta { .. } if *first_text => {
            *first_text = false;
            metrics.first_token(begun.elapsed());
        }
        EventBody::TurnCompleted { status, .. } => metrics.turn_ended(false, status.as_str(), begun.elapsed()),
        EventBody::TurnFailed { error, .. } => metrics.turn_ended(true, error.kind.as_str(), begun.elapsed()),
        EventBody::ToolCalls { calls } => metrics.tool_calls(calls.len()),
        EventBody::ItemModerated { mode, .. } => metrics.answer_moderated(*mode),
        _ => {}
    }
}
