//! codex's `item/tool/call` requests that wait for the client's output, by thread and call id.
//! A request is held here from the moment its turn's consumer hears of it
//! ([`TurnEvent::ToolCall`](crate::TurnEvent::ToolCall)) until the output is written, or the
//! turn ends (codex stops waiting then: an interrupted turn cancels its calls itself).

use codex_pool_protocol::{CodexThreadId, RequestId};
use std::collections::HashMap;

/// The waiting calls of every thread.
#[derive(Default)]
pub(crate) struct WaitingCalls {
    by_thread: HashMap<CodexThreadId, Vec<(String, RequestId)>>,
}

impl WaitingCalls {
    /// codex waits for the output of `call_id` on request `id`.
    pub(crate) fn hold(&mut self, thread_id: CodexThreadId, call_id: String, id: RequestId) {
        self.by_thread.entry(thread_id).or_default().push((call_id, id));
    }

    /// The request waiting for `call_id`'s output, taken.
    pub(crate) fn take(&mut self, thread_id: &CodexThreadId, call_id: &str) -> Option<RequestId> {
        let calls = self.by_thread.get_mut(thread_id)?;
        let at = calls.iter().position(|(c, _)| c == call_id)?;
        let (_, id) = calls.swap_remove(at);
        if calls.is_empty() {
            self.by_thread.remove(thread_id);
        }
        Some(id)
    }

    /// The thread's turn ended: its calls wait no more.
    pub(crate) fn forget(&mut self, thread_id: &CodexThreadId) {
        self.by_thread.remove(thread_id);
    }

    /// Every turn ended.
    pub(crate) fn clear(&mut self) {
        self.by_thread.clear();
    }
}
