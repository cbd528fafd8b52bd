//! The actor that owns one process's state: requests in flight, the running turn of each thread,
//! and the server's own requests. It never awaits I/O: lines go out through the writer task and
//! come in from the reader task, so one slow party never stalls the others.

use crate::error::ProcessError;
use crate::events::{AbortReason, TurnEvent};
use crate::lines::{Line, LineReader};
use crate::policy::ServerRequestHandler;
use crate::stats::SharedStats;
use crate::turn::TurnStream;
use codex_pool_protocol::jsonrpc::{encode_line, OutgoingRequest, OutgoingResponse};
use codex_pool_protocol::methods::{Request, TurnInterrupt, TurnInterruptParams, TurnStart, TurnStartParams};
use codex_pool_protocol::notifications::ServerNotification;
use codex_pool_protocol::server_requests::ServerRequest;
use codex_pool_protocol::{Incoming, RequestId, RpcError};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::BufReader;
use tokio::process::ChildStdout;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How many ended turn ids the actor remembers to drop their late events.
const RETIRED_TURNS: usize = 4096;

/// The lifecycle of a process, published through a `watch` channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessState {
    /// Spawned, handshake not done.
    Starting,
    /// Serving.
    Ready,
    /// Shutting down: takes no new work.
    ShuttingDown,
    /// Gone, with the reason.
    Exited(String),
}

pub(crate) type CallReply = oneshot::Sender<Result<Box<RawValue>, ProcessError>>;
/// The answer to an interrupt: the turn it went to, or why it failed.
pub(crate) type InterruptReply = oneshot::Sender<Result<Option<String>, ProcessError>>;

/// What handles ask of the actor.
pub(crate) enum Command {
    /// A plain request.
    Call { method: &'static str, params: Box<RawValue>, reply: CallReply },
    /// `turn/start`, with the turn registered before the request goes out so no event is missed.
    StartTurn { params: TurnStartParams, reply: oneshot::Sender<Result<TurnStream, ProcessError>> },
    /// Interrupt the running turn of a thread (only turn `turn_id`, when given). Answers with the
    /// id of the turn interrupted (`None` when it was not known yet).
    Interrupt { thread_id: String, turn_id: Option<String>, reply: InterruptReply },
    /// The consumer of a turn went away (or timed out): interrupt it and drop its events.
    Abandon { thread_id: String, turn_id: String, reason: AbortReason },
    /// The id of the thread's running turn, if known.
    CurrentTurn { thread_id: String, reply: oneshot::Sender<Option<String>> },
    /// Write a notification line.
    Notify { line: Vec<u8> },
    /// The handshake is done: start serving.
    MarkReady,
    /// End every turn, refuse new work, close stdin.
    Shutdown,
}

/// What the waiter task tells the actor.
pub(crate) enum Inbound {
    /// The process exited.
    Exited(String),
}

enum Pending {
    Call {
        method: &'static str,
        reply: CallReply,
    },
    TurnStart {
        thread_id: String,
        reply: oneshot::Sender<Result<TurnStream, ProcessError>>,
        stream: Option<TurnStream>,
    },
    /// A `turn/interrupt` a caller waits for.
    Interrupt {
        turn_id: String,
        reply: InterruptReply,
    },
    /// A request whose answer nobody waits for (interrupts sent on a consumer's behalf).
    Ignored {
        method: &'static str,
    },
}

struct ActiveTurn {
    turn_id: Option<String>,
    tx: mpsc::UnboundedSender<TurnEvent>,
    backlog: Arc<AtomicUsize>,
    /// Nobody reads the events any more; waiting for codex to end the turn until the deadline.
    abandoned_until: Option<Instant>,
    /// An interrupt was asked for before the turn id was known.
    interrupt_wanted: bool,
    /// Events that arrived before the turn id was known; delivered right after `Started`.
    early: Vec<TurnEvent>,
}

pub(crate) struct Actor {
    pub label: String,
    pub writer: Option<mpsc::Sender<Vec<u8>>>,
    pub commands: mpsc::UnboundedSender<Command>,
    pub handler: Arc<dyn ServerRequestHandler>,
    pub stats: Arc<SharedStats>,
    pub state: watch::Sender<ProcessState>,
    pub max_backlog: usize,
    pub interrupt_grace: Duration,
    next_id: i64,
    pending: HashMap<i64, Pending>,
    turns: HashMap<String, ActiveTurn>,
    loaded: HashSet<String>,
    handlers: JoinSet<Result<Value, RpcError>>,
    /// The server request each handler task answers, so a panicking handler still gets an answer.
    handled: HashMap<tokio::task::Id, (RequestId, ServerRequest)>,
    /// Turns over for us whose late events must be dropped (bounded, oldest forgotten first).
    retired: HashSet<String>,
    retired_order: VecDeque<String>,
    stdout_closed: bool,
    exited: bool,
}

impl Actor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        label: String,
        writer: mpsc::Sender<Vec<u8>>,
        commands: mpsc::UnboundedSender<Command>,
        handler: Arc<dyn ServerRequestHandler>,
        stats: Arc<SharedStats>,
        state: watch::Sender<ProcessState>,
        max_backlog: usize,
        interrupt_grace: Duration,
    ) -> Self {
        Self {
            label,
            writer: Some(writer),
            commands,
            handler,
            stats,
            state,
            max_backlog,
            interrupt_grace,
            next_id: 0,
            pending: HashMap::new(),
            turns: HashMap::new(),
            loaded: HashSet::new(),
            handlers: JoinSet::new(),
            handled: HashMap::new(),
            retired: HashSet::new(),
            retired_order: VecDeque::new(),
            stdout_closed: false,
            exited: false,
        }
    }

    /// Runs until the process has exited and its stdout is drained.
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut inbound: mpsc::Receiver<Inbound>,
        mut stdout: LineReader<BufReader<ChildStdout>>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(cmd) = commands.recv() => self.on_command(cmd),
                // Reading stdout here (not in a task of its own) saves a hand-off per message;
                // `next_line` is cancel-safe and never blocks the loop.
                line = stdout.next_line(), if !self.stdout_closed => self.on_line(line),
                msg = inbound.recv(), if !self.exited => match msg {
                    Some(Inbound::Exited(why)) => {
                        self.exited = true;
                        self.fail_everything(&why);
                    }
                    None => {
                        self.exited = true;
                        self.fail_everything("the process's waiter ended");
                    }
                },
                Some(done) = self.handlers.join_next_with_id(), if !self.handlers.is_empty() => {
                    let (task, answer) = match done {
                        Ok((task, answer)) => (task, answer),
                        Err(e) => {
                            tracing::error!(process = %self.label, error = %e, "a server request handler failed");
                            let failed = RpcError::new(RpcError::INTERNAL_ERROR, "the client's request handler failed");
                            (e.id(), Err(failed))
                        }
                    };
                    if let Some((id, request)) = self.handled.remove(&task) {
                        self.answer_server_request(id, request, answer);
                    }
                }
                _ = tick.tick() => self.housekeeping(),
            }
            if self.exited && self.stdout_closed {
                break;
            }
        }
        // Nothing will answer any more: refuse whatever is still queued.
        commands.close();
        while let Ok(cmd) = commands.try_recv() {
            self.refuse(cmd, ProcessError::Exited(self.exit_reason()));
        }
        self.handlers.abort_all();
        tracing::debug!(process = %self.label, "actor ended");
    }

    fn on_line(&mut self, line: std::io::Result<Option<Line>>) {
        match line {
            Ok(Some(Line::Complete(bytes))) => {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    return;
                }
                match Incoming::decode(&bytes) {
                    Ok(msg) => self.on_message(msg),
                    Err(e) => {
                        tracing::warn!(process = %self.label, error = %e, len = bytes.len(), "skipping a malformed line from codex");
                    }
                }
            }
            Ok(Some(Line::TooLong { len })) => {
                tracing::warn!(process = %self.label, len, "skipping a line over the length limit");
            }
            Ok(None) => {
                self.stdout_closed = true;
                self.fail_everything("stdout closed: end of file");
            }
            Err(e) => {
                self.stdout_closed = true;
                self.fail_everything(&format!("stdout closed: {e}"));
            }
        }
    }

    fn exit_reason(&self) -> String {
        match &*self.state.borrow() {
            ProcessState::Exited(why) => why.clone(),
            _ => "exited".to_owned(),
        }
    }

    fn refuse(&self, cmd: Command, err: ProcessError) {
        match cmd {
            Command::Call { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Command::Interrupt { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Command::StartTurn { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Command::CurrentTurn { reply, .. } => {
                let _ = reply.send(None);
            }
            Command::Abandon { .. } | Command::Notify { .. } | Command::MarkReady | Command::Shutdown => {}
        }
    }

    fn accepting(&self) -> Option<ProcessError> {
        match &*self.state.borrow() {
            ProcessState::Exited(why) => Some(ProcessError::Exited(why.clone())),
            ProcessState::ShuttingDown => Some(ProcessError::ShuttingDown),
            _ if self.writer.is_none() => Some(ProcessError::ShuttingDown),
            _ => None,
        }
    }

    fn on_command(&mut self, cmd: Command) {
        if !matches!(cmd, Command::Abandon { .. } | Command::Shutdown | Command::MarkReady) {
            if let Some(err) = self.accepting() {
                return self.refuse(cmd, err);
            }
        }
        match cmd {
            Command::Call { method, params, reply } => match self.send_request(method, &params) {
                Ok(id) => {
                    self.pending.insert(id, Pending::Call { method, reply });
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::StartTurn { params, reply } => self.start_turn(params, reply),
            Command::Interrupt { thread_id, turn_id: expected, reply } => {
                let turn = self.turns.get_mut(&thread_id).filter(|t| t.abandoned_until.is_none());
                let Some(turn) = turn.filter(|t| expected.is_none() || t.turn_id == expected) else {
                    let _ = reply.send(Err(ProcessError::NoActiveTurn { thread_id }));
                    return;
                };
                match turn.turn_id.clone() {
                    Some(turn_id) => {
                        let params = interrupt_params(&thread_id, &turn_id);
                        match self.send_request(TurnInterrupt::METHOD, &params) {
                            Ok(id) => {
                                self.pending.insert(id, Pending::Interrupt { turn_id, reply });
                            }
                            Err(e) => {
                                let _ = reply.send(Err(e));
                            }
                        }
                    }
                    None => {
                        // Sent as soon as the turn id is known.
                        turn.interrupt_wanted = true;
                        let _ = reply.send(Ok(None));
                    }
                }
            }
            Command::Abandon { thread_id, turn_id, reason } => self.abandon(&thread_id, Some(&turn_id), reason, None),
            Command::CurrentTurn { thread_id, reply } => {
                let _ = reply.send(self.turns.get(&thread_id).and_then(|t| t.turn_id.clone()));
            }
            Command::Notify { line } => {
                if let Err(e) = self.write(line) {
                    tracing::debug!(process = %self.label, error = %e, "could not send a notification");
                }
            }
            Command::MarkReady => {
                self.state.send_if_modified(|s| {
                    let starting = *s == ProcessState::Starting;
                    if starting {
                        *s = ProcessState::Ready;
                    }
                    starting
                });
            }
            Command::Shutdown => self.begin_shutdown(),
        }
    }

    fn start_turn(&mut self, params: TurnStartParams, reply: oneshot::Sender<Result<TurnStream, ProcessError>>) {
        let thread_id = params.thread_id.clone();
        if self.turns.contains_key(&thread_id) {
            let _ = reply.send(Err(ProcessError::ThreadBusy { thread_id }));
            return;
        }
        let raw = serde_json::value::to_raw_value(&params).expect("turn params serialize");
        let id = match self.send_request(TurnStart::METHOD, &raw) {
            Ok(id) => id,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        self.turns.insert(
            thread_id.clone(),
            ActiveTurn {
                turn_id: None,
                tx,
                backlog: backlog.clone(),
                abandoned_until: None,
                interrupt_wanted: false,
                early: Vec::new(),
            },
        );
        self.stats.active_turns.fetch_add(1, Ordering::Relaxed);
        self.stats.turns_started.fetch_add(1, Ordering::Relaxed);
        let stream = TurnStream::new(thread_id.clone(), String::new(), rx, backlog, self.commands.clone());
        self.pending.insert(id, Pending::TurnStart { thread_id, reply, stream: Some(stream) });
    }

    /// Writes a request and returns its id.
    fn send_request(&mut self, method: &'static str, params: &RawValue) -> Result<i64, ProcessError> {
        self.next_id += 1;
        let id = self.next_id;
        let line = encode_line(&OutgoingRequest { id: &RequestId::Integer(id), method, params: &params });
        self.write(line).map(|()| id)
    }

    fn write(&mut self, line: Vec<u8>) -> Result<(), ProcessError> {
        let Some(writer) = &self.writer else {
            return Err(ProcessError::ShuttingDown);
        };
        match writer.try_send(line) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(process = %self.label, "stdin queue full; codex is not reading its input");
                Err(ProcessError::StdinBacklog)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(ProcessError::ShuttingDown),
        }
    }

    fn on_message(&mut self, msg: Incoming) {
        match msg {
            Incoming::Response { id, result } => self.on_reply(id, Ok(result)),
            Incoming::Error { id, error } => self.on_reply(id, Err(error)),
            Incoming::Notification { method, params } => self.on_notification(&method, params.as_deref()),
            Incoming::Request { id, method, params } => {
                let request = ServerRequest::decode(&method, params.as_deref());
                tracing::debug!(process = %self.label, method = %request.method, "server request");
                let fut = self.handler.handle(request.clone());
                let task = self.handlers.spawn(fut).id();
                self.handled.insert(task, (id, request));
            }
        }
    }

    fn on_reply(&mut self, id: RequestId, result: Result<Box<RawValue>, RpcError>) {
        let RequestId::Integer(n) = id else {
            tracing::warn!(process = %self.label, %id, "reply with an id we never used");
            return;
        };
        let Some(pending) = self.pending.remove(&n) else {
            // A request whose caller gave up (timed out) already.
            tracing::debug!(process = %self.label, id = n, "late reply dropped");
            return;
        };
        match pending {
            Pending::Call { method, reply } => {
                let _ = reply.send(result.map_err(|error| ProcessError::Rpc { method, error }));
            }
            Pending::Interrupt { turn_id, reply } => {
                let answer = match result {
                    Ok(_) => Ok(Some(turn_id)),
                    Err(error) => Err(ProcessError::Rpc { method: TurnInterrupt::METHOD, error }),
                };
                let _ = reply.send(answer);
            }
            Pending::Ignored { method } => {
                if let Err(error) = result {
                    tracing::debug!(process = %self.label, method, %error, "background request failed");
                }
            }
            Pending::TurnStart { thread_id, reply, stream } => {
                let mut stream = stream.expect("turn stream is taken once");
                match result.map_err(|error| ProcessError::Rpc { method: TurnStart::METHOD, error }).and_then(|raw| {
                    serde_json::from_str::<<TurnStart as Request>::Response>(raw.get())
                        .map_err(|e| ProcessError::BadResponse { method: TurnStart::METHOD, reason: e.to_string() })
                }) {
                    Ok(resp) => {
                        let turn_id = resp.turn.id;
                        stream.set_turn_id(turn_id.clone());
                        self.learn_turn_id(&thread_id, &turn_id);
                        if let Err(Ok(stream)) = reply.send(Ok(stream)) {
                            // The caller is gone: interrupt the turn it started.
                            drop(stream);
                        }
                    }
                    Err(err) => {
                        if self.turns.remove(&thread_id).is_some() {
                            self.stats.active_turns.fetch_sub(1, Ordering::Relaxed);
                        }
                        stream.mark_finished();
                        let _ = reply.send(Err(err));
                    }
                }
            }
        }
    }

    fn send_interrupt(&mut self, thread_id: &str, turn_id: &str) {
        let params = interrupt_params(thread_id, turn_id);
        match self.send_request(TurnInterrupt::METHOD, &params) {
            Ok(id) => {
                self.pending.insert(id, Pending::Ignored { method: TurnInterrupt::METHOD });
            }
            Err(e) => tracing::debug!(process = %self.label, thread_id, error = %e, "could not send an interrupt"),
        }
    }

    /// Sends an event to the thread's running turn, enforcing the backlog limit.
    fn emit(&mut self, thread_id: &str, event: TurnEvent) {
        let Some(turn) = self.turns.get_mut(thread_id) else {
            return;
        };
        if turn.abandoned_until.is_some() {
            return;
        }
        let started = matches!(event, TurnEvent::Started { .. });
        if turn.turn_id.is_none() && !started {
            // `Started` must come first; hold what codex sent before the turn id was known.
            turn.early.push(event);
            return;
        }
        // Count before sending: the consumer may take (and uncount) an event at once.
        let count = 1 + if started { turn.early.len() } else { 0 };
        let backlog = turn.backlog.fetch_add(count, Ordering::Relaxed).wrapping_add(count);
        let mut ok = turn.tx.send(event).is_ok();
        if started {
            for early in turn.early.drain(..) {
                ok &= turn.tx.send(early).is_ok();
            }
        }
        if !ok {
            return;
        }
        if backlog > self.max_backlog {
            let limit = self.max_backlog;
            tracing::warn!(process = %self.label, thread_id, limit, "turn consumer lags; interrupting the turn");
            self.abandon(
                thread_id,
                None,
                AbortReason::ConsumerLagged,
                Some(format!("the consumer fell more than {limit} events behind; the turn was interrupted")),
            );
        }
    }

    /// Stops delivering a turn's events: sends a final `Aborted` (when `message` is given),
    /// interrupts the turn, and keeps the thread busy until codex ends it or the grace runs out.
    fn abandon(&mut self, thread_id: &str, turn_id: Option<&str>, reason: AbortReason, message: Option<String>) {
        let grace = self.interrupt_grace;
        let Some(turn) = self.turns.get_mut(thread_id) else {
            return;
        };
        if turn_id.is_some_and(|id| turn.turn_id.as_deref() != Some(id)) || turn.abandoned_until.is_some() {
            return;
        }
        if let Some(message) = message {
            turn.backlog.fetch_add(1, Ordering::Relaxed);
            let _ = turn.tx.send(TurnEvent::Aborted { reason, message });
        }
        turn.abandoned_until = Some(Instant::now() + grace);
        match turn.turn_id.clone() {
            Some(turn_id) => self.send_interrupt(thread_id, &turn_id),
            None => turn.interrupt_wanted = true,
        }
    }

    /// The turn id of a thread's running turn became known (from the `turn/start` answer or a
    /// notification): announce `Started` (then what arrived before it) and send a pending interrupt.
    fn learn_turn_id(&mut self, thread_id: &str, turn_id: &str) {
        let Some(turn) = self.turns.get_mut(thread_id) else { return };
        if turn.turn_id.is_some() {
            return;
        }
        turn.turn_id = Some(turn_id.to_owned());
        let interrupt = std::mem::take(&mut turn.interrupt_wanted);
        self.emit(thread_id, TurnEvent::Started { thread_id: thread_id.to_owned(), turn_id: turn_id.to_owned() });
        if interrupt {
            self.send_interrupt(thread_id, turn_id);
        }
    }

    /// Remembers a turn that is over for us, so its late events never reach a later turn.
    fn retire(&mut self, turn_id: String) {
        if self.retired.len() == RETIRED_TURNS {
            if let Some(old) = self.retired_order.pop_front() {
                self.retired.remove(&old);
            }
        }
        if self.retired.insert(turn_id.clone()) {
            self.retired_order.push_back(turn_id);
        }
    }

    fn end_turn(&mut self, thread_id: &str, event: Option<TurnEvent>) {
        if let Some(turn) = self.turns.remove(thread_id) {
            if let Some(id) = turn.turn_id.clone() {
                self.retire(id);
            }
            self.stats.active_turns.fetch_sub(1, Ordering::Relaxed);
            if let Some(event) = event.filter(|_| turn.abandoned_until.is_none()) {
                turn.backlog.fetch_add(1, Ordering::Relaxed);
                let _ = turn.tx.send(event);
            }
        }
    }

    fn on_notification(&mut self, method: &str, params: Option<&RawValue>) {
        let n = ServerNotification::decode(method, params);
        match &n {
            ServerNotification::ThreadStarted(t) => {
                self.loaded.insert(t.thread.id.clone());
                self.stats.loaded_threads.store(self.loaded.len(), Ordering::Relaxed);
            }
            ServerNotification::ThreadClosed(t) => {
                self.loaded.remove(&t.thread_id);
                self.stats.loaded_threads.store(self.loaded.len(), Ordering::Relaxed);
            }
            _ => {}
        }
        let Some(thread_id) = n.thread_id().map(str::to_owned) else {
            tracing::trace!(process = %self.label, method, "notification without a thread");
            return;
        };
        let Some(turn) = self.turns.get(&thread_id) else {
            return;
        };
        // Routed by thread and turn: events of a turn that is over for us (abandoned, released)
        // or of any turn but the running one are dropped.
        if let Some(of) = n.turn_id() {
            let other = turn.turn_id.as_deref().is_some_and(|id| id != of);
            if other || self.retired.contains(of) {
                tracing::debug!(process = %self.label, thread_id, method, "event of another turn dropped");
                return;
            }
        }
        let event = match n {
            ServerNotification::TurnStarted(t) => {
                self.learn_turn_id(&thread_id, &t.turn.id);
                return;
            }
            ServerNotification::TurnCompleted(t) => {
                // Completed before `turn/start` was answered: still announce the start first.
                self.learn_turn_id(&thread_id, &t.turn.id);
                let event = TurnEvent::Completed { turn_id: t.turn.id, status: t.turn.status, error: t.turn.error };
                self.stats.turns_completed.fetch_add(1, Ordering::Relaxed);
                return self.end_turn(&thread_id, Some(event));
            }
            ServerNotification::AgentMessageDelta(d) => {
                TurnEvent::AgentMessageDelta { item_id: d.item_id, delta: d.delta }
            }
            ServerNotification::ReasoningTextDelta(d) => {
                TurnEvent::ReasoningDelta { item_id: d.item_id, delta: d.delta }
            }
            ServerNotification::ReasoningSummaryTextDelta(d) => {
                TurnEvent::ReasoningSummaryDelta { item_id: d.item_id, delta: d.delta }
            }
            ServerNotification::ItemStarted(i) => TurnEvent::ItemStarted { item: i.item },
            ServerNotification::ItemCompleted(i) => TurnEvent::ItemCompleted { item: i.item },
            ServerNotification::TokenUsageUpdated(u) => TurnEvent::TokenUsage { usage: u.token_usage },
            ServerNotification::Error(e) => TurnEvent::Error { error: e.error, will_retry: e.will_retry },
            ServerNotification::RawResponseItemCompleted(r) => TurnEvent::ResponseItem { item: r.item },
            ServerNotification::ThreadStarted(_) => return,
            ServerNotification::ThreadClosed(_) => {
                TurnEvent::Notification { method: method.to_owned(), params: Value::Null }
            }
            ServerNotification::Other { method, params } => TurnEvent::Notification { method, params },
        };
        self.emit(&thread_id, event);
    }

    fn answer_server_request(&mut self, id: RequestId, request: ServerRequest, answer: Result<Value, RpcError>) {
        let line = match &answer {
            Ok(result) => encode_line(&OutgoingResponse { id: &id, result: Some(result), error: None }),
            Err(error) => encode_line(&OutgoingResponse { id: &id, result: None, error: Some(error) }),
        };
        if let Err(e) = self.write(line) {
            tracing::warn!(process = %self.label, method = %request.method, error = %e, "could not answer a server request");
        }
        if let Some(thread_id) = request.thread_id().map(str::to_owned) {
            let current = self.turns.get(&thread_id).and_then(|t| t.turn_id.as_deref());
            if request.turn_id().is_some_and(|of| current != Some(of)) {
                return; // asked on behalf of a turn that is over
            }
            let answer = match answer {
                Ok(result) => json!({ "result": result }),
                Err(error) => json!({ "error": error }),
            };
            self.emit(&thread_id, TurnEvent::ServerRequest { method: request.method, params: request.params, answer });
        }
    }

    fn housekeeping(&mut self) {
        // Callers that timed out dropped their receivers: forget their requests.
        let mut unanswered_turns = Vec::new();
        self.pending.retain(|_, p| match p {
            Pending::Call { reply, .. } => !reply.is_closed(),
            Pending::Interrupt { reply, .. } => !reply.is_closed(),
            // A `turn/start` its caller gave up on (timed out): free the thread for later turns.
            Pending::TurnStart { reply, thread_id, .. } if reply.is_closed() => {
                unanswered_turns.push(thread_id.clone());
                false
            }
            Pending::TurnStart { .. } | Pending::Ignored { .. } => true,
        });
        for thread_id in unanswered_turns {
            let started = self.turns.get(&thread_id).and_then(|t| t.turn_id.clone());
            match started {
                // codex did start it: interrupt it and let the usual grace run.
                Some(turn_id) => self.abandon(&thread_id, Some(&turn_id), AbortReason::Timeout, None),
                None => self.end_turn(&thread_id, None),
            }
        }
        let now = Instant::now();
        let expired: Vec<String> = self
            .turns
            .iter()
            .filter(|(_, t)| t.abandoned_until.is_some_and(|deadline| deadline <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for thread_id in expired {
            tracing::warn!(process = %self.label, thread_id, "codex did not end an interrupted turn in time; releasing the thread");
            self.end_turn(&thread_id, None);
        }
    }

    fn begin_shutdown(&mut self) {
        if matches!(*self.state.borrow(), ProcessState::Exited(_)) {
            return;
        }
        self.state.send_replace(ProcessState::ShuttingDown);
        let running: Vec<(String, Option<String>)> =
            self.turns.iter().map(|(thread, t)| (thread.clone(), t.turn_id.clone())).collect();
        for (thread_id, turn_id) in running {
            if let Some(turn_id) = turn_id {
                self.send_interrupt(&thread_id, &turn_id);
            }
            self.end_turn(
                &thread_id,
                Some(TurnEvent::Aborted {
                    reason: AbortReason::Shutdown,
                    message: "the codex process is shutting down; the turn was interrupted".to_owned(),
                }),
            );
        }
        for (_, pending) in self.pending.drain() {
            fail_pending(pending, ProcessError::ShuttingDown);
        }
        // Closing stdin asks codex to exit once it has written what it owes.
        self.writer = None;
    }

    fn fail_everything(&mut self, why: &str) {
        let previous = self.state.send_replace(ProcessState::Exited(why.to_owned()));
        match previous {
            ProcessState::Exited(first) => {
                self.state.send_replace(ProcessState::Exited(first));
            }
            ProcessState::ShuttingDown => {
                tracing::debug!(process = %self.label, reason = why, "codex process ended")
            }
            _ => tracing::warn!(process = %self.label, reason = why, "codex process is gone"),
        }
        self.writer = None;
        for (_, pending) in self.pending.drain() {
            fail_pending(pending, ProcessError::Exited(why.to_owned()));
        }
        let threads: Vec<String> = self.turns.keys().cloned().collect();
        for thread_id in threads {
            self.end_turn(
                &thread_id,
                Some(TurnEvent::Aborted {
                    reason: AbortReason::ProcessExited,
                    message: format!("the codex process running this turn died ({why})"),
                }),
            );
        }
        self.loaded.clear();
        self.stats.loaded_threads.store(0, Ordering::Relaxed);
    }
}

fn fail_pending(pending: Pending, err: ProcessError) {
    match pending {
        Pending::Call { reply, .. } => {
            let _ = reply.send(Err(err));
        }
        Pending::TurnStart { reply, stream, .. } => {
            if let Some(mut s) = stream {
                s.mark_finished();
            }
            let _ = reply.send(Err(err));
        }
        Pending::Interrupt { reply, .. } => {
            let _ = reply.send(Err(err));
        }
        Pending::Ignored { .. } => {}
    }
}

fn interrupt_params(thread_id: &str, turn_id: &str) -> Box<RawValue> {
    serde_json::value::to_raw_value(&TurnInterruptParams {
        thread_id: thread_id.to_owned(),
        turn_id: turn_id.to_owned(),
    })
    .expect("interrupt params serialize")
}
