//! The running turn of each thread: where its events go, whether codex has confirmed it, and
//! what happens to it when its consumer goes away. Pure state: what must be written to codex
//! comes back as [`Effect`]s for the actor to carry out.

use crate::command::{InterruptReply, StartReply};
use crate::error::ProcessError;
use crate::events::{AbortReason, TurnEvent};
use crate::stats::SharedStats;
use crate::turn::{FromStream, TurnStream};
use codex_pool_protocol::methods::TurnStartParams;
use codex_pool_protocol::{CodexThreadId, TurnId};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How many ended turn ids are remembered, to drop their late events.
const RETIRED_TURNS: usize = 4096;
/// How many times an interrupt codex refused for a running turn is asked again.
const INTERRUPT_RETRIES: u8 = 8;

/// Something the registry needs written to codex.
pub(crate) enum Effect {
    /// Send `turn/interrupt` for the turn; answer `reply` (if any) when codex does.
    Interrupt { thread_id: CodexThreadId, turn_id: TurnId, reply: Option<InterruptReply> },
    /// Send this `turn/start` now: it waited for the thread's abandoned turn to end.
    Start { params: TurnStartParams, reply: StartReply },
}

struct ActiveTurn {
    /// Known from the `turn/start` answer or a notification.
    turn_id: Option<TurnId>,
    /// codex announced `turn/started`: it takes interrupts from now on.
    confirmed: bool,
    tx: mpsc::UnboundedSender<TurnEvent>,
    backlog: Arc<AtomicUsize>,
    /// Events that came before the turn id was known, with the turn they named (if any);
    /// delivered right after `Started`, but for those that named another turn.
    early: Vec<(Option<TurnId>, TurnEvent)>,
    /// Nobody reads the events any more; codex has until then to end the turn.
    abandoned_until: Option<Instant>,
    /// An interrupt is wanted; sent once codex confirms the turn. Callers wait for its answer.
    interrupt: Option<Vec<InterruptReply>>,
    /// A new turn of the thread, waiting for this abandoned one to end.
    queued: Option<(TurnStartParams, StartReply)>,
    /// codex refused an interrupt although the turn runs: it is asked again on the turn's next
    /// event.
    recheck: bool,
    /// How many more times an interrupt may be asked again.
    retries_left: u8,
}

impl ActiveTurn {
    fn is_live(&self) -> bool {
        self.abandoned_until.is_none()
    }

    /// Sends events, counting them first (the consumer may take, and uncount, one at once).
    fn deliver(&mut self, events: impl ExactSizeIterator<Item = TurnEvent>) -> (bool, usize) {
        let n = events.len();
        let backlog = self.backlog.fetch_add(n, Ordering::Relaxed).wrapping_add(n);
        let mut ok = true;
        for event in events {
            ok &= self.tx.send(event).is_ok();
        }
        (ok, backlog)
    }
}

/// Turn ids over for us, whose late events are dropped (bounded, oldest forgotten first).
#[derive(Default)]
struct Retired {
    ids: HashSet<TurnId>,
    order: VecDeque<TurnId>,
}

impl Retired {
    fn insert(&mut self, turn_id: TurnId) {
        if self.ids.len() == RETIRED_TURNS {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        if self.ids.insert(turn_id.clone()) {
            self.order.push_back(turn_id);
        }
    }

    fn contains(&self, turn_id: &TurnId) -> bool {
        self.ids.contains(turn_id)
    }
}

/// Every running turn of a process, by thread.
pub(crate) struct TurnRegistry {
    turns: HashMap<CodexThreadId, ActiveTurn>,
    /// Abandoned turns by when their grace runs out, earliest first: the actor sleeps until the
    /// first one.
    deadlines: BTreeSet<(Instant, CodexThreadId)>,
    retired: Retired,
    stats: Arc<SharedStats>,
    abandon: mpsc::UnboundedSender<FromStream>,
    endpoint: Option<Arc<str>>,
    max_backlog: usize,
    grace: Duration,
}

impl TurnRegistry {
    pub(crate) fn new(
        stats: Arc<SharedStats>,
        abandon: mpsc::UnboundedSender<FromStream>,
        endpoint: Option<Arc<str>>,
        max_backlog: usize,
        grace: Duration,
    ) -> Self {
        Self {
            turns: HashMap::new(),
            deadlines: BTreeSet::new(),
            retired: Retired::default(),
            stats,
            abandon,
            endpoint,
            max_backlog,
            grace,
        }
    }

    fn count(&self) {
        self.stats.active_turns.store(self.turns.len(), Ordering::Relaxed);
    }

    /// Takes a new turn of a thread. Returns its stream when the request is to go out now; a
    /// turn queued behind an abandoned turn that codex has not ended yet goes out when that one
    /// ends ([`Effect::Start`]); one refused while a turn runs is answered here.
    pub(crate) fn admit(
        &mut self,
        params: TurnStartParams,
        reply: StartReply,
    ) -> Option<(TurnStartParams, StartReply, TurnStream)> {
        let thread_id = params.thread_id.clone();
        if let Some(turn) = self.turns.get_mut(&thread_id) {
            if turn.is_live() || turn.queued.is_some() {
                let _ = reply.send(Err(ProcessError::ThreadBusy { thread_id }));
            } else {
                turn.queued = Some((params, reply));
            }
            return None;
        }
        let stream = self.register(thread_id);
        Some((params, reply, stream))
    }

    /// Takes a compaction of a thread (a turn codex starts itself): its stream, or `None` when a
    /// turn runs or waits on the thread (answered here).
    pub(crate) fn admit_compaction(
        &mut self,
        thread_id: CodexThreadId,
        reply: StartReply,
    ) -> Option<(StartReply, TurnStream)> {
        if self.turns.contains_key(&thread_id) {
            let _ = reply.send(Err(ProcessError::ThreadBusy { thread_id }));
            return None;
        }
        let stream = self.register(thread_id);
        Some((reply, stream))
    }

    fn register(&mut self, thread_id: CodexThreadId) -> TurnStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        self.turns.insert(
            thread_id.clone(),
            ActiveTurn {
                turn_id: None,
                confirmed: false,
                tx,
                backlog: backlog.clone(),
                early: Vec::new(),
                abandoned_until: None,
                interrupt: None,
                queued: None,
                recheck: false,
                retries_left: INTERRUPT_RETRIES,
            },
        );
        self.stats.turns_started.fetch_add(1, Ordering::Relaxed);
        self.count();
        TurnStream::new(thread_id, rx, backlog, self.abandon.clone(), self.endpoint.clone())
    }

    /// `turn/start` failed: the turn never existed.
    pub(crate) fn start_failed(&mut self, thread_id: &CodexThreadId, effects: &mut Vec<Effect>) {
        self.remove(thread_id, None, effects);
    }

    /// The id of the thread's turn became known (from the `turn/start` answer or a notification):
    /// `Started` goes out first, then what arrived before it. `confirmed` when it came with
    /// `turn/started`: codex takes interrupts for the turn from then on.
    pub(crate) fn learn_turn_id(
        &mut self,
        thread_id: &CodexThreadId,
        turn_id: &TurnId,
        confirmed: bool,
        effects: &mut Vec<Effect>,
    ) {
        let Some(turn) = self.turns.get_mut(thread_id) else { return };
        if turn.turn_id.is_none() {
            turn.turn_id = Some(turn_id.clone());
            let started = TurnEvent::Started { thread_id: thread_id.to_string(), turn_id: turn_id.clone() };
            // What another turn's id named is not this turn's (codex names the items of
            // `thread/inject_items` after that request, and they may come while `turn/start` waits).
            let early = std::mem::take(&mut turn.early)
                .into_iter()
                .filter(|(of, _)| of.as_ref().is_none_or(|of| of == turn_id))
                .map(|(_, event)| event);
            if turn.is_live() {
                let (ok, backlog) = turn.deliver(std::iter::once(started).chain(early).collect::<Vec<_>>().into_iter());
                self.after_delivery(thread_id, ok, backlog, effects);
            }
        }
        if confirmed {
            self.confirm(thread_id, effects);
        }
    }

    fn confirm(&mut self, thread_id: &CodexThreadId, effects: &mut Vec<Effect>) {
        let Some(turn) = self.turns.get_mut(thread_id) else { return };
        turn.confirmed = true;
        if let (Some(waiters), Some(turn_id)) = (turn.interrupt.take(), turn.turn_id.clone()) {
            let mut waiters = waiters.into_iter();
            let first = waiters.next();
            // One interrupt goes out; the other callers are answered when the turn ends.
            turn.interrupt = Some(waiters.collect());
            effects.push(Effect::Interrupt { thread_id: thread_id.clone(), turn_id, reply: first });
        }
    }

    /// Delivers an event of the thread's turn. `of` is the turn the event names, if any: events of
    /// another turn, or of one already over for us, are dropped.
    pub(crate) fn emit(
        &mut self,
        thread_id: &CodexThreadId,
        of: Option<&TurnId>,
        event: TurnEvent,
        effects: &mut Vec<Effect>,
    ) {
        let Some(turn) = self.turns.get_mut(thread_id) else { return };
        if let Some(of) = of {
            if turn.turn_id.as_ref().is_some_and(|id| id != of) || self.retired.contains(of) {
                tracing::debug!(%thread_id, "event of another turn dropped");
                return;
            }
        }
        let turn = if std::mem::take(&mut turn.recheck) {
            self.confirm(thread_id, effects);
            let Some(turn) = self.turns.get_mut(thread_id) else { return };
            turn
        } else {
            turn
        };
        if !turn.is_live() {
            return;
        }
        if turn.turn_id.is_none() {
            // `Started` must come first; hold what codex sent before the turn id was known.
            turn.early.push((of.cloned(), event));
            return;
        }
        let (ok, backlog) = turn.deliver(std::iter::once(event));
        self.after_delivery(thread_id, ok, backlog, effects);
    }

    fn after_delivery(&mut self, thread_id: &CodexThreadId, ok: bool, backlog: usize, effects: &mut Vec<Effect>) {
        if !ok {
            // The stream is gone; its own notice may still be on the way.
            self.abandon(thread_id, None, AbortReason::Shutdown, None, effects);
        } else if backlog > self.max_backlog {
            let limit = self.max_backlog;
            tracing::warn!(%thread_id, limit, "turn consumer lags; interrupting the turn");
            let message = format!("the consumer fell more than {limit} events behind; the turn was interrupted");
            self.abandon(thread_id, None, AbortReason::ConsumerLagged, Some(message), effects);
        }
    }

    /// codex finished the turn (`turn/completed`): the event ends the stream.
    pub(crate) fn complete(
        &mut self,
        thread_id: &CodexThreadId,
        turn_id: &TurnId,
        event: TurnEvent,
        effects: &mut Vec<Effect>,
    ) {
        let Some(turn) = self.turns.get(thread_id) else { return };
        if turn.turn_id.as_ref().is_some_and(|id| id != turn_id) || self.retired.contains(turn_id) {
            return;
        }
        self.stats.turns_completed.fetch_add(1, Ordering::Relaxed);
        self.remove(thread_id, Some(event), effects);
    }

    /// A caller asks to interrupt the thread's turn. Sent now if codex has confirmed the turn,
    /// else as soon as it does.
    pub(crate) fn interrupt(&mut self, thread_id: CodexThreadId, reply: InterruptReply, effects: &mut Vec<Effect>) {
        let Some(turn) = self.turns.get_mut(&thread_id).filter(|t| t.is_live()) else {
            let _ = reply.send(Err(ProcessError::NoActiveTurn { thread_id }));
            return;
        };
        match (&turn.turn_id, turn.confirmed) {
            (Some(turn_id), true) => effects.push(Effect::Interrupt {
                thread_id: thread_id.clone(),
                turn_id: turn_id.clone(),
                reply: Some(reply),
            }),
            _ => turn.interrupt.get_or_insert_with(Vec::new).push(reply),
        }
    }

    /// codex refused an interrupt although the turn still runs for us (it had not taken the turn
    /// up yet): it is asked again on the turn's next event, a few times at most. Returns `reply`
    /// when it will not be.
    pub(crate) fn interrupt_refused(
        &mut self,
        thread_id: &CodexThreadId,
        reply: Option<InterruptReply>,
    ) -> Option<InterruptReply> {
        let Some(turn) = self.turns.get_mut(thread_id) else {
            // Over meanwhile: nothing is left to interrupt.
            if let Some(reply) = reply {
                let _ = reply.send(Ok(()));
            }
            return None;
        };
        if turn.retries_left == 0 {
            return reply;
        }
        turn.retries_left -= 1;
        turn.recheck = true;
        turn.interrupt.get_or_insert_with(Vec::new).extend(reply);
        None
    }

    /// Stops delivering a turn's events: sends a final `Aborted` first when `message` is given,
    /// interrupts the turn, and keeps the thread taken until codex ends it or the grace runs out.
    /// `turn_id` limits this to that turn.
    pub(crate) fn abandon(
        &mut self,
        thread_id: &CodexThreadId,
        turn_id: Option<&TurnId>,
        reason: AbortReason,
        message: Option<String>,
        effects: &mut Vec<Effect>,
    ) {
        let Some(turn) = self.turns.get_mut(thread_id) else { return };
        if turn_id.is_some_and(|id| turn.turn_id.as_ref() != Some(id)) || !turn.is_live() {
            return;
        }
        if let Some(message) = message {
            turn.deliver(std::iter::once(TurnEvent::Aborted { reason, message }));
        }
        let deadline = Instant::now() + self.grace;
        turn.abandoned_until = Some(deadline);
        self.deadlines.insert((deadline, thread_id.clone()));
        turn.interrupt.get_or_insert_with(Vec::new);
        if turn.confirmed {
            self.confirm(thread_id, effects);
        }
    }

    /// Ends turns whose consumers are gone and which codex did not end within the grace.
    pub(crate) fn expire(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        while self.deadlines.first().is_some_and(|(deadline, _)| *deadline <= now) {
            let Some((_, thread_id)) = self.deadlines.pop_first() else { break };
            tracing::warn!(%thread_id, "codex did not end an interrupted turn in time; releasing the thread");
            self.remove(&thread_id, None, effects);
        }
    }

    /// When the next abandoned turn's grace runs out, if any turn is abandoned.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }

    /// Ends every turn with `event` (the process is going away).
    pub(crate) fn end_all(&mut self, event: impl Fn() -> TurnEvent, err: impl Fn() -> ProcessError) {
        self.deadlines.clear();
        for (_, turn) in self.turns.drain() {
            let mut turn = turn;
            if turn.is_live() {
                turn.deliver(std::iter::once(event()));
            }
            for reply in turn.interrupt.take().into_iter().flatten() {
                let _ = reply.send(Ok(()));
            }
            if let Some((_, reply)) = turn.queued.take() {
                let _ = reply.send(Err(err()));
            }
        }
        self.count();
    }

    /// Whether a turn of the thread runs with a consumer reading it, and (when `turn_id` is
    /// given and the turn's id known) is that turn.
    pub(crate) fn is_reading(&self, thread_id: &CodexThreadId, turn_id: &TurnId) -> bool {
        self.turns.get(thread_id).is_some_and(|t| t.is_live() && t.turn_id.as_ref().is_none_or(|id| id == turn_id))
    }

    /// The turns running now: thread, and turn id when known.
    pub(crate) fn running(&self) -> Vec<(CodexThreadId, Option<TurnId>)> {
        self.turns.iter().map(|(thread, t)| (thread.clone(), t.turn_id.clone())).collect()
    }

    /// Forgets a thread's turn, delivering `event` if its consumer still reads; a new turn that
    /// waited for it goes out now.
    fn remove(&mut self, thread_id: &CodexThreadId, event: Option<TurnEvent>, effects: &mut Vec<Effect>) {
        let Some(mut turn) = self.turns.remove(thread_id) else { return };
        if let Some(deadline) = turn.abandoned_until {
            self.deadlines.remove(&(deadline, thread_id.clone()));
        }
        if let Some(id) = turn.turn_id.take() {
            self.retired.insert(id);
        }
        if let Some(event) = event.filter(|_| turn.is_live()) {
            turn.deliver(std::iter::once(event));
        }
        // Whoever asked for an interrupt got what they wanted: the turn is over.
        for reply in turn.interrupt.take().into_iter().flatten() {
            let _ = reply.send(Ok(()));
        }
        if let Some((params, reply)) = turn.queued.take() {
            effects.push(Effect::Start { params, reply });
        }
        self.count();
    }
}
