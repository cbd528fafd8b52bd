//! What handles and turn streams ask of a process's actor, over one bounded channel.

use crate::error::ProcessError;
use crate::turn::TurnStream;
use codex_pool_protocol::methods::TurnStartParams;
use codex_pool_protocol::tools::DynamicToolCallResponse;
use codex_pool_protocol::CodexThreadId;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

/// The answer to a plain request: its raw result, or why there is none.
pub(crate) type CallReply = oneshot::Sender<Result<Box<RawValue>, ProcessError>>;
/// The answer to `turn/start`: the new turn's event stream.
pub(crate) type StartReply = oneshot::Sender<Result<TurnStream, ProcessError>>;
/// The answer to an interrupt (done: the turn was interrupted, or ended meanwhile) or to a tool
/// call's output (written to codex), or why not.
pub(crate) type InterruptReply = oneshot::Sender<Result<(), ProcessError>>;

/// One thing asked of the actor.
pub(crate) enum Command {
    /// A plain request.
    Call { method: &'static str, params: Box<RawValue>, reply: CallReply },
    /// `turn/start`, with the turn registered before the request goes out so no event is missed.
    StartTurn { params: TurnStartParams, reply: StartReply },
    /// Interrupt the running turn of a thread.
    Interrupt { thread_id: CodexThreadId, reply: InterruptReply },
    /// `thread/compact/start`, with its turn registered before the request goes out.
    Compact { thread_id: CodexThreadId, reply: StartReply },
    /// Answer codex's waiting `item/tool/call` with the client's output.
    AnswerToolCall { thread_id: CodexThreadId, call_id: String, answer: DynamicToolCallResponse, reply: InterruptReply },
    /// Write a notification line.
    Notify { line: Vec<u8> },
    /// The handshake is done: start serving.
    MarkReady,
    /// End every turn, refuse new work, close stdin.
    Shutdown,
}

impl Command {
    /// Answers the command with `err` (or drops it, for commands nobody waits on).
    pub(crate) fn refuse(self, err: ProcessError) {
        match self {
            Command::Call { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Command::StartTurn { reply, .. } | Command::Compact { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Command::Interrupt { reply, .. } | Command::AnswerToolCall { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Command::Notify { .. } | Command::MarkReady | Command::Shutdown => {}
        }
    }
}

/// The sending side of the actor's command queue: cheap to clone, never waits.
#[derive(Clone)]
pub(crate) struct Commands {
    tx: mpsc::Sender<Command>,
}

impl Commands {
    /// A queue holding at most `capacity` commands, and its receiving end.
    pub(crate) fn channel(capacity: usize) -> (Self, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Self { tx }, rx)
    }

    /// Queues a command. A full queue is an error the caller sees at once (the actor is far
    /// behind); a closed one means the actor has ended.
    pub(crate) fn send(&self, cmd: Command) -> Result<(), ProcessError> {
        self.tx.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ProcessError::CommandQueueFull { capacity: self.tx.max_capacity() },
            mpsc::error::TrySendError::Closed(_) => ProcessError::ShuttingDown,
        })
    }
}
