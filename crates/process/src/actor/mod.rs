//! The actor that owns one process's state. It never awaits I/O on a caller's behalf: lines go
//! out through the writer task, come in from the reader it polls, and every decision is made by
//! one of its parts:
//!
//! - [`pending`]: requests in flight, by id;
//! - [`registry`]: the running turn of each thread, and what happens when its consumer leaves;
//! - [`mapping`]: where each notification goes;
//! - [`answers`]: the answers to codex's own requests, decided in tasks of their own;
//! - [`tool_calls`]: codex's client tool calls, waiting for the output the turn's owner gives.
//!
//! - [`outbox`]: what it writes to codex's stdin, at once when the pipe has room.
//!
//! It is generic over its reader and writer, so its unit tests drive it over in-memory pipes.

mod answers;
mod compact;
mod mapping;
mod outbox;
mod pending;
mod registry;
mod requests;
#[cfg(test)]
mod tests;
mod tool_calls;

use crate::command::{Command, InterruptReply, StartReply};
use crate::error::{ExitReason, ProcessError};
use crate::events::{AbortReason, TurnEvent};
use crate::lines::{Line, LineReader};
use crate::policy::ServerRequestHandler;
use crate::stats::SharedStats;
use crate::turn::{Abandoned, FromStream};
use answers::Answers;
use codex_pool_protocol::jsonrpc::{encode_line, OutgoingRequest};
use codex_pool_protocol::methods::{Request, TurnInterrupt, TurnInterruptParams, TurnStart, TurnStartParams};
use codex_pool_protocol::notifications::ServerNotification;
use codex_pool_protocol::{CodexThreadId, Incoming, RequestId, RpcError, TurnId};
use mapping::Routed;
use outbox::Outbox;
use pending::{Pending, PendingRequests};
use registry::{Effect, TurnRegistry};
use serde_json::value::RawValue;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tool_calls::WaitingCalls;

/// The lifecycle of a process, published through a `watch` channel.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessState {
    /// Spawned, handshake not done.
    Starting,
    /// Serving.
    Ready,
    /// Shutting down: takes no new work.
    ShuttingDown,
    /// Gone, and how.
    Exited(ExitReason),
}

/// What the actor is started with.
pub(crate) struct ActorSettings {
    /// A name for logs.
    pub label: String,
    pub handler: Arc<dyn ServerRequestHandler>,
    pub stats: Arc<SharedStats>,
    /// Where codex sends model requests, for error messages.
    pub endpoint: Option<Arc<str>>,
    /// Events a turn's consumer may fall behind before the turn is stopped.
    pub max_backlog: usize,
    /// How long codex gets to end a turn whose consumer left.
    pub interrupt_grace: Duration,
}

/// The channels the actor listens on.
pub(crate) struct Inputs<R> {
    pub commands: mpsc::Receiver<Command>,
    pub abandoned: mpsc::UnboundedReceiver<FromStream>,
    /// Set once the OS process has been reaped; dropped unset if its waiter ended without
    /// knowing.
    pub reaped: watch::Receiver<Option<ExitReason>>,
    pub stdout: LineReader<R>,
}

pub(crate) struct Actor<W> {
    label: String,
    out: Outbox<W>,
    state: watch::Sender<ProcessState>,
    stats: Arc<SharedStats>,
    pending: PendingRequests,
    turns: TurnRegistry,
    answers: Answers,
    tool_calls: WaitingCalls,
    /// Threads codex announced as loaded and has not closed.
    loaded: HashSet<CodexThreadId>,
    /// What the registry asked to have written, carried out after each message.
    effects: Vec<Effect>,
    stdout_closed: bool,
    exited: bool,
}

impl<W: AsyncWrite + Unpin> Actor<W> {
    pub(crate) fn new(
        settings: ActorSettings,
        stdin: W,
        state: watch::Sender<ProcessState>,
        abandon: mpsc::UnboundedSender<FromStream>,
    ) -> Self {
        let turns = TurnRegistry::new(
            settings.stats.clone(),
            abandon,
            settings.endpoint,
            settings.max_backlog,
            settings.interrupt_grace,
        );
        Self {
            label: settings.label,
            out: Outbox::new(stdin),
            state,
            stats: settings.stats,
            pending: PendingRequests::default(),
            turns,
            answers: Answers::new(settings.handler),
            tool_calls: WaitingCalls::default(),
            loaded: HashSet::new(),
            effects: Vec::new(),
            stdout_closed: false,
            exited: false,
        }
    }

    /// Runs until the process has exited and its stdout is drained.
    pub(crate) async fn run<R: AsyncBufRead + Unpin>(mut self, inputs: Inputs<R>) {
        let Inputs { mut commands, mut abandoned, mut reaped, mut stdout } = inputs;
        // Sleeps until the next abandoned turn's grace runs out (re-armed when that changes);
        // with no abandoned turn, nothing wakes the actor but its inputs.
        let grace_ends = tokio::time::sleep_until(Instant::now());
        tokio::pin!(grace_ends);
        let mut armed: Option<Instant> = None;
        loop {
            tokio::select! {
                Some(cmd) = commands.recv() => self.on_command(cmd),
                Some(told) = abandoned.recv() => self.told_by_stream(told),
                // Reading stdout here (not in a task of its own) saves a hand-off per message;
                // `next_line` is cancel-safe.
                line = stdout.next_line(), if !self.stdout_closed => self.on_line(line),
                changed = reaped.changed(), if !self.exited => {
                    self.exited = true;
                    let why = match changed {
                        Ok(()) => reaped.borrow().clone().unwrap_or(ExitReason::Unknown),
                        Err(_) => ExitReason::Unknown,
                    };
                    self.fail_everything(why);
                }
                Some((id, request, answer)) = self.answers.next(), if !self.answers.is_empty() => {
                    self.answer(id, request, answer);
                }
                written = std::future::poll_fn(|cx| self.out.poll_flush(cx)), if self.out.is_busy() => {
                    if let Err(e) = written {
                        tracing::debug!(process = %self.label, error = %e, "stdin closed");
                    }
                }
                () = &mut grace_ends, if armed.is_some() => {
                    armed = None;
                    self.turns.expire(Instant::now(), &mut self.effects);
                }
            }
            self.carry_out();
            let next = self.turns.next_deadline();
            if next != armed {
                if let Some(deadline) = next {
                    grace_ends.as_mut().reset(deadline);
                }
                armed = next;
            }
            if self.exited && self.stdout_closed {
                break;
            }
        }
        // Nothing will answer any more: refuse whatever is still queued.
        commands.close();
        let why = self.exit_reason();
        while let Ok(cmd) = commands.try_recv() {
            cmd.refuse(ProcessError::Exited(why.clone()));
        }
        self.answers.abort_all();
        tracing::debug!(process = %self.label, "actor ended");
    }

    fn told_by_stream(&mut self, told: FromStream) {
        match told {
            FromStream::Abandoned(Abandoned { thread_id, turn_id, reason }) => {
                self.turns.abandon(&thread_id, Some(&turn_id), reason, None, &mut self.effects);
            }
            FromStream::ToolOutput { thread_id, call_id, answer } => {
                if let Err(e) = self.answer_tool_call(&thread_id, call_id, &answer) {
                    tracing::debug!(process = %self.label, %thread_id, error = %e, "a tool output found no waiting call");
                }
            }
        }
    }

    fn exit_reason(&self) -> ExitReason {
        match &*self.state.borrow() {
            ProcessState::Exited(why) => why.clone(),
            _ => ExitReason::Unknown,
        }
    }

    /// Why new work is refused, if it is.
    fn refusal(&self) -> Option<ProcessError> {
        match &*self.state.borrow() {
            ProcessState::Exited(why) => Some(ProcessError::Exited(why.clone())),
            ProcessState::ShuttingDown => Some(ProcessError::ShuttingDown),
            _ if !self.out.is_open() => Some(ProcessError::ShuttingDown),
            _ => None,
        }
    }

    fn on_command(&mut self, cmd: Command) {
        if !matches!(cmd, Command::Shutdown | Command::MarkReady) {
            if let Some(err) = self.refusal() {
                return cmd.refuse(err);
            }
        }
        match cmd {
            Command::Call { method, params, reply } => match self.send_request(method, &params) {
                Ok(id) => self.pending.insert(id, Pending::Call { method, reply }),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::StartTurn { params, reply } => self.start_turn(params, reply),
            Command::Compact { thread_id, reply } => self.compact(thread_id, reply),
            Command::Interrupt { thread_id, reply } => self.turns.interrupt(thread_id, reply, &mut self.effects),
            Command::AnswerToolCall { thread_id, call_id, answer, reply } => {
                let _ = reply.send(self.answer_tool_call(&thread_id, call_id, &answer));
            }
            Command::Notify { line } => {
                if let Err(e) = self.write(line) {
                    tracing::debug!(process = %self.label, error = %e, "could not write a notification");
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

    fn start_turn(&mut self, params: TurnStartParams, reply: StartReply) {
        crate::hops::hop(params.thread_id.as_str(), "actor.start");
        let Some((params, reply, mut stream)) = self.turns.admit(params, reply) else { return };
        let thread_id = params.thread_id.clone();
        let sent = serde_json::value::to_raw_value(&params)
            .map_err(|e| ProcessError::BadResponse { method: TurnStart::METHOD, reason: format!("params: {e}") })
            .and_then(|raw| self.send_request(TurnStart::METHOD, &raw));
        match sent {
            Ok(id) => self.pending.insert(id, Pending::TurnStart { thread_id, reply, stream: Box::new(stream) }),
            Err(e) => {
                self.turns.start_failed(&thread_id, &mut self.effects);
                stream.mark_finished();
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Writes a request and returns its id.
    fn send_request(&mut self, method: &'static str, params: &RawValue) -> Result<i64, ProcessError> {
        let id = self.pending.next_id();
        let line = encode_line(&OutgoingRequest { id: &RequestId::Integer(id), method, params: &params });
        self.write(line).map(|()| id)
    }

    fn write(&mut self, line: Vec<u8>) -> Result<(), ProcessError> {
        let written = self.out.write(&line);
        if let Err(ProcessError::StdinBacklog) = &written {
            tracing::warn!(process = %self.label, "codex is not reading its input");
        }
        written
    }

    /// Carries out what the registry asked for.
    fn carry_out(&mut self) {
        while !self.effects.is_empty() {
            for effect in std::mem::take(&mut self.effects) {
                self.carry_out_one(effect);
            }
        }
    }

    fn carry_out_one(&mut self, effect: Effect) {
        {
            match effect {
                Effect::Interrupt { thread_id, turn_id, reply } => self.send_interrupt(thread_id, turn_id, reply),
                Effect::Start { params, reply } => match self.refusal() {
                    Some(err) => {
                        let _ = reply.send(Err(err));
                    }
                    None => self.start_turn(params, reply),
                },
            }
        }
    }

    fn send_interrupt(&mut self, thread_id: CodexThreadId, turn_id: TurnId, reply: Option<InterruptReply>) {
        let params = serde_json::value::to_raw_value(&TurnInterruptParams { thread_id: thread_id.clone(), turn_id })
            .expect("interrupt params serialize");
        match self.send_request(TurnInterrupt::METHOD, &params) {
            Ok(id) => self.pending.insert(id, Pending::Interrupt { thread_id, reply }),
            Err(e) => {
                tracing::debug!(process = %self.label, %thread_id, error = %e, "could not send an interrupt");
                if let Some(reply) = reply {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }

    fn on_line(&mut self, line: std::io::Result<Option<Line>>) {
        if let Ok(Some(_)) = &line {
            self.stats.heard();
        }
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
                self.fail_everything(ExitReason::StdoutClosed { error: None });
            }
            Err(e) => {
                self.stdout_closed = true;
                self.fail_everything(ExitReason::StdoutClosed { error: Some(e.to_string()) });
            }
        }
    }

    fn on_message(&mut self, msg: Incoming) {
        match msg {
            Incoming::Response { id, result } => self.on_reply(id, Ok(result)),
            Incoming::Error { id, error } => self.on_reply(id, Err(error)),
            Incoming::Notification { method, params } => {
                self.on_notification(ServerNotification::decode(&method, params.as_deref()))
            }
            Incoming::Request { id, method, params } => self.on_server_request(id, &method, params.as_deref()),
        }
    }

    fn on_reply(&mut self, id: RequestId, result: Result<Box<RawValue>, RpcError>) {
        let Some(pending) = self.pending.take(&id) else {
            // A request whose caller gave up already, or an id we never used.
            tracing::debug!(process = %self.label, %id, "reply to no request in flight dropped");
            return;
        };
        match pending {
            Pending::Call { method, reply } => {
                let _ = reply.send(result.map_err(|error| ProcessError::Rpc { method, error }));
            }
            Pending::Interrupt { thread_id, reply } => match result {
                Ok(_) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(()));
                    }
                }
                Err(error) => {
                    tracing::debug!(process = %self.label, %thread_id, %error, "interrupt refused");
                    if let Some(reply) = self.turns.interrupt_refused(&thread_id, reply) {
                        let _ = reply.send(Err(ProcessError::Rpc { method: TurnInterrupt::METHOD, error }));
                    }
                }
            },
            Pending::Compact { thread_id, reply, stream } => self.compact_answered(thread_id, reply, *stream, result),
            Pending::TurnStart { thread_id, reply, mut stream } => {
                let answer =
                    result.map_err(|error| ProcessError::Rpc { method: TurnStart::METHOD, error }).and_then(|raw| {
                        serde_json::from_str::<<TurnStart as Request>::Response>(raw.get())
                            .map_err(|e| ProcessError::BadResponse { method: TurnStart::METHOD, reason: e.to_string() })
                    });
                match answer {
                    Ok(resp) => {
                        crate::hops::hop(thread_id.as_str(), "actor.reply");
                        self.turns.learn_turn_id(&thread_id, &resp.turn.id, false, &mut self.effects);
                        stream.set_turn_id(resp.turn.id);
                        // A caller that is gone drops the stream, which interrupts the turn.
                        let _ = reply.send(Ok(*stream));
                    }
                    Err(err) => {
                        self.turns.start_failed(&thread_id, &mut self.effects);
                        stream.mark_finished();
                        let _ = reply.send(Err(err));
                    }
                }
            }
        }
    }

    fn on_notification(&mut self, n: ServerNotification) {
        let effects = &mut self.effects;
        match mapping::route(n) {
            Routed::ThreadStarted(thread_id) => {
                self.loaded.insert(thread_id);
                self.stats.loaded_threads.store(self.loaded.len(), Ordering::Relaxed);
            }
            Routed::ThreadClosed { thread_id, event } => {
                self.loaded.remove(&thread_id);
                self.tool_calls.forget(&thread_id);
                self.stats.loaded_threads.store(self.loaded.len(), Ordering::Relaxed);
                self.turns.emit(&thread_id, None, event, effects);
            }
            Routed::TurnStarted { thread_id, turn_id } => self.turns.learn_turn_id(&thread_id, &turn_id, true, effects),
            Routed::TurnCompleted { thread_id, turn_id, event } => {
                crate::hops::hop(thread_id.as_str(), "actor.completed");
                // Completed before `turn/start` was answered: `Started` still comes first.
                self.turns.learn_turn_id(&thread_id, &turn_id, false, effects);
                self.tool_calls.forget(&thread_id);
                self.turns.complete(&thread_id, &turn_id, event, effects);
            }
            Routed::Event { thread_id, turn_id, event } => {
                self.turns.emit(&thread_id, turn_id.as_ref(), event, effects)
            }
            Routed::Unrouted => {}
        }
    }

    fn begin_shutdown(&mut self) {
        if matches!(*self.state.borrow(), ProcessState::Exited(_)) {
            return;
        }
        self.state.send_replace(ProcessState::ShuttingDown);
        for (thread_id, turn_id) in self.turns.running() {
            if let Some(turn_id) = turn_id {
                self.send_interrupt(thread_id, turn_id, None);
            }
        }
        self.turns.end_all(
            || TurnEvent::Aborted {
                reason: AbortReason::Shutdown,
                message: "the codex process is shutting down; the turn was interrupted".to_owned(),
            },
            || ProcessError::ShuttingDown,
        );
        self.pending.fail_all(&ProcessError::ShuttingDown);
        self.tool_calls.clear();
        // Closing stdin asks codex to exit once it has written what it owes.
        self.out.close();
    }

    fn fail_everything(&mut self, why: ExitReason) {
        let previous = self.state.send_replace(ProcessState::Exited(why.clone()));
        let why = match previous {
            ProcessState::Exited(first) => {
                self.state.send_replace(ProcessState::Exited(first.clone()));
                first
            }
            ProcessState::ShuttingDown => {
                tracing::debug!(process = %self.label, reason = %why, "codex process ended");
                why
            }
            _ => {
                tracing::warn!(process = %self.label, reason = %why, "codex process is gone");
                why
            }
        };
        self.out.close();
        self.pending.fail_all(&ProcessError::Exited(why.clone()));
        let message = format!("the codex process running this turn died ({why})");
        self.turns.end_all(
            || TurnEvent::Aborted { reason: AbortReason::ProcessExited, message: message.clone() },
            || ProcessError::Exited(why.clone()),
        );
        self.loaded.clear();
        self.tool_calls.clear();
        self.stats.loaded_threads.store(0, Ordering::Relaxed);
    }
}
