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
    /// `thread/compact/start`: the stream goes to the caller once codex takes it (its turn is
    /// named by `turn/started`).
    Compact { thread_id: CodexThreadId, reply: StartReply, stream: Box<TurnStream> },
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
            Pending::TurnStart { reply, mut stream, .. } | Pending::Compact { reply, mut stream, .. } => {
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
            Pending::TurnStart { .. } | Pending::Compact { .. } => false,
            Pending::Interrupt { reply, .. } => reply.as_ref().is_some_and(|r| r.is_closed()),
        }
    }
}

/// Below this many requests in flight, the table is not swept for orphans.
const SWEEP_FLOOR: usize = 64;

/// The table of requests in flight. Ids are integers, allocated here, never reused.
#[derive(Default)]
pub(crate) struct PendingRequests {
    last_id: i64,
    waiting: HashMap<i64, Pending>,
    /// The size at which the table is next swept for requests whose callers went away: twice
    /// what was left after the last sweep, so the sweeps cost O(1) per request, on no timer.
    sweep_at: usize,
}

impl PendingRequests {
    /// The id for the next request.
    pub(crate) fn next_id(&mut self) -> i64 {
        self.last_id += 1;
        self.last_id
    }

    /// Records a request that was written with `id`.
    pub(crate) fn insert(&mut self, id: i64, pending: Pending) {
        if self.waiting.len() >= self.sweep_at.max(SWEEP_FLOOR) {
            self.sweep_orphaned();
            self.sweep_at = self.waiting.len() * 2;
        }
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
    fn sweep_orphaned(&mut self) {
        self.waiting.retain(|_, pending| {
            matches!(pending, Pending::TurnStart { .. } | Pending::Compact { .. }) || !pending.is_orphaned()
        });
    }

    /// Answers every request with `err`.
    pub(crate) fn fail_all(&mut self, err: &ProcessError) {
        for (_, pending) in self.waiting.drain() {
            pending.fail(err.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[test]
    fn requests_whose_callers_went_away_do_not_pile_up() {
        let mut pending = PendingRequests::default();
        let mut waiting = Vec::new();
        for n in 0..10_000 {
            let (reply, answer) = oneshot::channel();
            let id = pending.next_id();
            pending.insert(id, Pending::Call { method: "thread/read", reply });
            // One caller in ten still waits; the others timed out and went away.
            if n % 10 == 0 {
                waiting.push((id, answer));
            }
        }
        assert!(
            pending.waiting.len() < 3 * waiting.len(),
            "{} kept for {} callers",
            pending.waiting.len(),
            waiting.len()
        );
        for (id, _) in &waiting {
            assert!(pending.take(&RequestId::Integer(*id)).is_some(), "a waiting caller's request was dropped");
        }
    }
}
