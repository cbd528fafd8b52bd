//! A turn's wait for the outputs of the client tool calls it made: the deliveries it gets, the
//! outputs codex has not asked for yet, and the limit on the wait.

use super::ToolWaits;
use codex_pool_process::TurnStream;
use codex_pool_protocol::{ToolOutput, TurnId};
use codex_pool_store::ConversationId;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Sleep;

/// What reaches a waiting turn.
pub(crate) enum Delivery {
    /// Outputs of some of its calls.
    Outputs(Vec<ToolOutput>),
    /// The conversation goes on with another tool list: the turn ends.
    ToolsChanged,
}

/// Why a wait ends the turn.
pub(crate) enum WaitEnd {
    /// The outputs did not all come within the limit.
    Expired(Duration),
    /// The tool list changed.
    ToolsChanged,
}

/// One turn's wait, registered in [`ToolWaits`] from its start to its drop.
pub(crate) struct Wait {
    waits: Arc<ToolWaits>,
    conversation: ConversationId,
    serial: u64,
    rx: mpsc::UnboundedReceiver<Delivery>,
    /// Calls given no output yet.
    unanswered: Vec<String>,
    /// Outputs given before codex asked for them.
    held: Vec<ToolOutput>,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
}

impl Wait {
    /// The turn `turn_id` of `conversation` waits on `calls`, for at most `limit`.
    pub(crate) fn new(
        waits: Arc<ToolWaits>,
        conversation: ConversationId,
        turn_id: TurnId,
        calls: Vec<String>,
        limit: Duration,
    ) -> Self {
        let (serial, rx) = waits.register(&conversation, turn_id, calls.clone());
        Self {
            waits,
            conversation,
            serial,
            rx,
            unanswered: calls,
            held: Vec::new(),
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
        }
    }

    /// Whether every call has its output and codex has each one.
    pub(crate) fn is_over(&self) -> bool {
        self.unanswered.is_empty() && self.held.is_empty()
    }

    /// Takes what was delivered: outputs codex asked for go to it at once, the others wait in
    /// [`Wait::held`] for codex's request ([`Wait::asked`]). Ready with an end when the turn is to
    /// end; pending otherwise.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>, stream: &mut TurnStream) -> Poll<WaitEnd> {
        while let Poll::Ready(Some(delivery)) = self.rx.poll_recv(cx) {
            match delivery {
                Delivery::Outputs(outputs) => {
                    for output in outputs {
                        self.unanswered.retain(|c| *c != output.call_id);
                        if !stream.answer_tool_call(&output.call_id, output.to_response()) {
                            self.held.push(output);
                        }
                    }
                }
                Delivery::ToolsChanged => return Poll::Ready(WaitEnd::ToolsChanged),
            }
        }
        if self.unanswered.is_empty() {
            // Every output is in: codex's own pace from here on.
            return Poll::Pending;
        }
        self.deadline.as_mut().poll(cx).map(|()| WaitEnd::Expired(self.limit))
    }

    /// codex asks for the output of `call_id`: given now if the client gave it already.
    pub(crate) fn asked(&mut self, call_id: &str, stream: &mut TurnStream) {
        if let Some(at) = self.held.iter().position(|o| o.call_id == call_id) {
            let output = self.held.remove(at);
            stream.answer_tool_call(call_id, output.to_response());
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        self.waits.remove(&self.conversation, self.serial);
    }
}
