//! A compaction the client asks for (`thread/compact/start`): a turn codex starts itself, whose
//! events (`turn/started`, the `contextCompaction` item, `turn/completed`) go to a stream
//! registered before the request goes out, as a turn's do.

use super::pending::Pending;
use super::Actor;
use crate::command::StartReply;
use crate::error::ProcessError;
use crate::turn::TurnStream;
use codex_pool_protocol::methods::{Request, ThreadCompactStart, ThreadIdParams};
use codex_pool_protocol::{CodexThreadId, RpcError};
use serde_json::value::RawValue;
use tokio::io::AsyncWrite;

impl<W: AsyncWrite + Unpin> Actor<W> {
    /// Registers the compaction's turn and sends the request.
    pub(super) fn compact(&mut self, thread_id: CodexThreadId, reply: StartReply) {
        let Some((reply, mut stream)) = self.turns.admit_compaction(thread_id.clone(), reply) else { return };
        let params = ThreadIdParams { thread_id: thread_id.clone() };
        let sent = serde_json::value::to_raw_value(&params)
            .map_err(|e| ProcessError::BadResponse {
                method: ThreadCompactStart::METHOD,
                reason: format!("params: {e}"),
            })
            .and_then(|raw| self.send_request(ThreadCompactStart::METHOD, &raw));
        match sent {
            Ok(id) => self.pending.insert(id, Pending::Compact { thread_id, reply, stream: Box::new(stream) }),
            Err(e) => {
                self.turns.start_failed(&thread_id, &mut self.effects);
                stream.mark_finished();
                let _ = reply.send(Err(e));
            }
        }
    }

    /// codex answered the request: the stream goes to the caller (the turn names itself with
    /// `turn/started`), or the refusal does.
    pub(super) fn compact_answered(
        &mut self,
        thread_id: CodexThreadId,
        reply: StartReply,
        mut stream: TurnStream,
        result: Result<Box<RawValue>, RpcError>,
    ) {
        match result {
            Ok(_) => {
                let _ = reply.send(Ok(stream));
            }
            Err(error) => {
                self.turns.start_failed(&thread_id, &mut self.effects);
                stream.mark_finished();
                let _ = reply.send(Err(ProcessError::Rpc { method: ThreadCompactStart::METHOD, error }));
            }
        }
    }
}
