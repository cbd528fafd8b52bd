//! Client tools: functions a conversation declares (codex's dynamic tools) and its client runs.
//!
//! When the model calls some, the turn writes what it recorded so far, the calls included, to
//! the store with the calls as the conversation's pending ones, then tells its consumer
//! ([`TurnEvent::ToolCalls`](crate::TurnEvent::ToolCalls)) and waits. The outputs come back
//! through [`Pool::submit_tool_outputs`](crate::Pool::submit_tool_outputs): to the waiting turn
//! when there is one on this node ([`ToolWaits`], the fast path), or, when there is none (its
//! process died, the service restarted, the call waited past its limit, the tool list changed),
//! to a new turn that continues the conversation from the store (`submit.rs`).

mod submit;
mod wait;

pub use submit::Submitted;
pub(crate) use wait::{Delivery, Wait, WaitEnd};

use crate::error::PoolError;
use codex_pool_protocol::{ToolCall, ToolOutput, ToolSpec, TurnId};
use codex_pool_store::ConversationId;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Names of codex's own tools (in either profile; 0.169.0 and 0.171.0 offer the same): a client
/// tool may not take one, so what the model calls by such a name is always codex's.
pub const CODEX_TOOL_NAMES: &[&str] = &[
    "shell",
    "exec_command",
    "write_stdin",
    "apply_patch",
    "update_plan",
    "request_user_input",
    "view_image",
    "web_search",
    "multi_agent_v1",
    "get_goal",
    "create_goal",
    "update_goal",
];

/// Checks a list of client tools: names of 1 to 64 letters, digits, `_` or `-` (OpenAI's rule),
/// each once, none of codex's own ([`CODEX_TOOL_NAMES`]), and an object schema.
pub(crate) fn check_tools(tools: &[ToolSpec]) -> Result<(), PoolError> {
    let mut seen = std::collections::HashSet::new();
    for (i, tool) in tools.iter().enumerate() {
        let name = tool.name.as_str();
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(PoolError::InvalidRequest(format!(
                "tool {i}'s name must be 1 to 64 letters, digits, `_` or `-`"
            )));
        }
        if CODEX_TOOL_NAMES.contains(&name) {
            return Err(PoolError::InvalidRequest(format!(
                "tool name `{name}` is one of codex's own tools; give the client's tool another name"
            )));
        }
        if !seen.insert(name) {
            return Err(PoolError::InvalidRequest(format!("tool name `{name}` is declared twice")));
        }
        if !tool.input_schema.is_object() {
            return Err(PoolError::InvalidRequest(format!("tool `{name}`'s parameters must be a JSON Schema object")));
        }
    }
    Ok(())
}

/// What a turn knows of the conversation's client tools: their names (how a `function_call` of
/// the client's is told from one of codex's own tools), the calls the model made of them in the
/// response being read, and where the turn waits for outputs.
pub(crate) struct ClientTools {
    names: Vec<String>,
    calls: Vec<ToolCall>,
    pub(crate) waits: Arc<ToolWaits>,
    /// How long the turn waits for outputs before it lets the conversation go.
    pub(crate) limit: Duration,
}

impl ClientTools {
    pub(crate) fn new(tools: &[ToolSpec], waits: Arc<ToolWaits>, limit: Duration) -> Self {
        Self { names: tools.iter().map(|t| t.name.clone()).collect(), calls: Vec::new(), waits, limit }
    }

    /// codex recorded `item`: a call of a client tool is noted.
    pub(crate) fn saw(&mut self, item: &Value) {
        if let Some(call) = ToolCall::from_item(item).filter(|c| self.names.contains(&c.name)) {
            self.calls.push(call);
        }
    }

    /// The client tool calls of the model response that just ended.
    pub(crate) fn take_calls(&mut self) -> Vec<ToolCall> {
        std::mem::take(&mut self.calls)
    }
}

/// The turns of this pool that wait for tool outputs, by conversation: how an output finds the
/// turn that waits for it. Each entry is owned by its turn's [`Wait`], which removes it when it
/// ends.
#[derive(Default)]
pub(crate) struct ToolWaits {
    waiting: Mutex<HashMap<ConversationId, Waiter>>,
    serial: std::sync::atomic::AtomicU64,
}

struct Waiter {
    serial: u64,
    turn_id: TurnId,
    /// Calls with no output given yet.
    calls: Vec<String>,
    tx: mpsc::UnboundedSender<Delivery>,
}

/// What became of outputs offered to the waiting turn.
pub(crate) enum Delivered {
    /// The turn took them.
    Taken(TurnId),
    /// No turn waits (or it has just ended): the outputs, given back.
    NotWaiting(Vec<ToolOutput>),
    /// The turn waits, but not on these calls.
    Unknown(Vec<String>),
}

impl ToolWaits {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConversationId, Waiter>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A turn of `id` waits on `calls`; deliveries come on the receiver.
    pub(crate) fn register(
        &self,
        id: &ConversationId,
        turn_id: TurnId,
        calls: Vec<String>,
    ) -> (u64, mpsc::UnboundedReceiver<Delivery>) {
        let serial = self.serial.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(id.clone(), Waiter { serial, turn_id, calls, tx });
        (serial, rx)
    }

    /// The turn registered as `serial` waits no more.
    pub(crate) fn remove(&self, id: &ConversationId, serial: u64) {
        let mut waiting = self.lock();
        if waiting.get(id).is_some_and(|w| w.serial == serial) {
            waiting.remove(id);
        }
    }

    /// The calls a turn of `id` waits on here, if one does.
    pub(crate) fn calls(&self, id: &ConversationId) -> Option<Vec<String>> {
        self.lock().get(id).map(|w| w.calls.clone())
    }

    /// Offers outputs to the turn of `id` that waits on them.
    pub(crate) fn deliver(&self, id: &ConversationId, outputs: Vec<ToolOutput>) -> Delivered {
        let mut waiting = self.lock();
        let Some(waiter) = waiting.get_mut(id) else { return Delivered::NotWaiting(outputs) };
        let unknown: Vec<String> =
            outputs.iter().filter(|o| !waiter.calls.contains(&o.call_id)).map(|o| o.call_id.clone()).collect();
        if !unknown.is_empty() {
            return Delivered::Unknown(unknown);
        }
        let answered: Vec<String> = outputs.iter().map(|o| o.call_id.clone()).collect();
        if let Err(mpsc::error::SendError(Delivery::Outputs(outputs))) = waiter.tx.send(Delivery::Outputs(outputs)) {
            waiting.remove(id);
            return Delivered::NotWaiting(outputs);
        }
        waiter.calls.retain(|c| !answered.contains(c));
        Delivered::Taken(waiter.turn_id.clone())
    }

    /// Tells the waiting turn of `id`, if any, that the conversation goes on with other tools:
    /// it ends, leaving its calls pending in the store. Returns whether one waited.
    pub(crate) fn tools_changed(&self, id: &ConversationId) -> bool {
        self.lock().get(id).is_some_and(|w| w.tx.send(Delivery::ToolsChanged).is_ok())
    }
}
