//! Requests sent to codex and not answered yet, by id: who waits for each answer.

use crate::command::{CallReply, InterruptReply, StartReply};
use crate::error::ProcessError;
use crate::turn::TurnStream;
use codex_pool_protocol::{CodexThreadId, RequestId};
use std::collections::HashMap;

/// One request awaiting its answer.
pub(crate) enum Pending {
    /// A plain request; the raw result goes to the caller.
    Call { method: &'static str, reply: CallReply },
    /// `turn/start`: the stream goes to the caller once codex names the turn.
    TurnStart { thread_id: CodexThreadId, reply: StartReply, stream: Box<TurnStream> },
    /// `turn/interrupt`, for a caller (`reply`) or on a consumer's behalf (`None`).
    Interrupt { thread_id: CodexThreadId, reply: Option<InterruptReply> },
}

impl Pending {
    /// Tells whoever waits that no answer will come.
    pub(crate) fn fail(self, err: ProcessError) {
        match self {
            Pending::Call { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Pending::TurnStart { reply, mut stream, .. } => {
                stream.mark_finished();
                let _ = reply.send(Err(err));
            }
            Pending::Interrupt { reply, .. } => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(err));
                }
            }
        }
    }

    /// Whether nobody waits for the answer any more (the caller timed out and went away).
    fn is_orphaned(&self) -> bool {
        match self {
            Pending::Call { reply, .. } => reply.is_closed(),
            Pending::TurnStart { .. } => false,
            Pending::Interrupt { reply, .. } => reply.as_ref().is_some_and(|r| r.is_closed()),
        }
    }
}

/// The table of requests in flight. Ids are integers, allocated here, never reused.
#[derive(Default)]
pub(crate) struct PendingRequests {
    last_id: i64,
    waiting: HashMap<i64, Pending>,
}

impl PendingRequests {
    /// The id for the next request.
    pub(crate) fn next_id(&mut self) -> i64 {
        self.last_id += 1;
        self.last_id
    }

    /// Records a request that was written with `id`.
    pub(crate) fn insert(&mut self, id: i64, pending: Pending) {
        self.waiting.insert(id, pending);
    }

    /// The request an answer is for; `None` for an id we never used or already settled.
    pub(crate) fn take(&mut self, id: &RequestId) -> Option<Pending> {
        match id {
            RequestId::Integer(n) => self.waiting.remove(n),
            RequestId::String(_) => None,
        }
    }

    /// Forgets requests whose callers went away. A `turn/start` is kept even then: its answer
    /// names the turn, which is interrupted when the stream finds nobody to take it.
    pub(crate) fn sweep_orphaned(&mut self) {
        self.waiting.retain(|_, pending| matches!(pending, Pending::TurnStart { .. }) || !pending.is_orphaned());
    }

    /// Answers every request with `err`.
    pub(crate) fn fail_all(&mut self, err: &ProcessError) {
        for (_, pending) in self.waiting.drain() {
            pending.fail(err.clone());
        }
    }
}
