//! The events of one turn: a single typed stream, serializable as is (one JSON object per event,
//! tagged by `type`), so an SSE endpoint can forward it unchanged.

use codex_pool_protocol::types::{ThreadTokenUsage, TokenUsageBreakdown, TurnError, TurnStatus};
use codex_pool_protocol::TurnId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a turn ended without codex finishing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AbortReason {
    /// The codex process died (or its pipes broke) during the turn.
    ProcessExited,
    /// The turn produced no event for the silence timeout; it was interrupted.
    Timeout,
    /// codex kept retrying the model (it could not reach it, or it kept failing) and made no
    /// progress for the progress timeout; the turn was interrupted.
    ModelUnreachable,
    /// The model's stream went silent: no event at all (no retry announced either) for the
    /// progress timeout, codex still waiting on a stream it believed alive; the turn was
    /// interrupted.
    ModelStalled,
    /// The pool or process is shutting down; the turn was interrupted.
    Shutdown,
    /// The consumer fell too far behind; the turn was interrupted to bound memory.
    ConsumerLagged,
    /// codex finished the turn, but the conversation's store could not keep it; the turn was
    /// dropped everywhere, so the conversation goes on as if it had not happened.
    StoreFailed,
    /// codex could not verify the model's certificate with the reduced set of root certificates
    /// it had: the pool gave its processes the system roots and restarted them. Nothing of the
    /// turn was kept; send it again.
    CaBundleReplaced,
    /// codex finished the turn, but another node had taken the conversation over meanwhile (a
    /// pool sharing its store with others had not renewed its lease in time): the store refused
    /// the turn, and nothing of it was kept. Send it again; the node that owns the conversation
    /// now serves it.
    LeaseLost,
    /// The turn waited for the outputs of client tool calls longer than the pool's limit: it was
    /// let go, its calls stay pending in the store (nothing false is written there), and their
    /// outputs, whenever they come, continue the conversation.
    ToolCallTimeout,
    /// The conversation went on with another list of client tools while the turn waited on
    /// calls: the turn was let go, and the outputs continue the conversation on a thread rebuilt
    /// with the new list.
    ToolsChanged,
}

impl AbortReason {
    /// The reason as it is serialized (`process_exited`, `timeout`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AbortReason::ProcessExited => "process_exited",
            AbortReason::Timeout => "timeout",
            AbortReason::ModelUnreachable => "model_unreachable",
            AbortReason::ModelStalled => "model_stalled",
            AbortReason::Shutdown => "shutdown",
            AbortReason::ConsumerLagged => "consumer_lagged",
            AbortReason::StoreFailed => "store_failed",
            AbortReason::CaBundleReplaced => "ca_bundle_replaced",
            AbortReason::LeaseLost => "lease_lost",
            AbortReason::ToolCallTimeout => "tool_call_timeout",
            AbortReason::ToolsChanged => "tools_changed",
        }
    }
}

/// One event of a turn. A stream of them ends with exactly one terminal event
/// ([`TurnEvent::Completed`] or [`TurnEvent::Aborted`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TurnEvent {
    /// codex accepted the turn.
    Started {
        /// The thread, by the id its stream's owner knows it by: the codex thread id from a
        /// process, the conversation id from a pool.
        thread_id: String,
        /// The turn.
        turn_id: TurnId,
    },
    /// A piece of the assistant's reply.
    AgentMessageDelta {
        /// The message item.
        item_id: String,
        /// The text.
        delta: String,
    },
    /// A piece of raw reasoning text.
    ReasoningDelta {
        /// The reasoning item.
        item_id: String,
        /// The text.
        delta: String,
    },
    /// A piece of a reasoning summary.
    ReasoningSummaryDelta {
        /// The reasoning item.
        item_id: String,
        /// The text.
        delta: String,
    },
    /// An item began (user message, agent message, reasoning, tool call, ...).
    ItemStarted {
        /// The item, as codex describes it.
        item: Value,
    },
    /// An item is complete; for an agent message, `item.text` is the whole reply.
    ItemCompleted {
        /// The item, as codex describes it.
        item: Value,
    },
    /// Token usage after a model call.
    TokenUsage {
        /// The counts.
        usage: ThreadTokenUsage,
    },
    /// codex reported an error in the turn; with `will_retry` it tries again by itself.
    Error {
        /// What went wrong.
        error: TurnError,
        /// Whether codex retries.
        will_retry: bool,
    },
    /// The model called a client tool (`item/tool/call`): codex waits for its output, which the
    /// turn's owner gives with
    /// [`AppServerHandle::answer_tool_call`](crate::AppServerHandle::answer_tool_call). The
    /// turn goes on once it has it (or ends if it is interrupted meanwhile).
    ToolCall {
        /// The call, as codex asked it.
        request: codex_pool_protocol::tools::DynamicToolCallParams,
    },
    /// The model called client tools and the turn waits for their outputs: every call the model
    /// made in one response, once the pool has stored them (a pool's turn emits it, in place of
    /// the process's [`TurnEvent::ToolCall`]s; a process's stream never does). The outputs go
    /// to [`Pool::submit_tool_outputs`](../codex_pool/struct.Pool.html#method.submit_tool_outputs).
    ToolCalls {
        /// The calls, in the order the model made them.
        calls: Vec<codex_pool_protocol::ToolCall>,
    },
    /// codex asked the client something (an approval, user input, a tool call with no turn
    /// reading its events) and the process's policy answered it.
    ServerRequest {
        /// The request method.
        method: String,
        /// Its params.
        params: Value,
        /// What was answered (`result`, or `error` with the JSON-RPC error).
        answer: Value,
    },
    /// An item was recorded in the thread's model-visible history: a Responses API item (the
    /// user's message, the assistant's reply, reasoning, a tool call or its output). Only for
    /// threads started with `experimental_raw_events`; what a store keeps to rebuild the thread.
    ResponseItem {
        /// The item, as codex recorded it.
        item: Value,
    },
    /// Any other notification about this thread, passed through untouched.
    Notification {
        /// The method.
        method: String,
        /// Its params.
        params: Value,
    },
    /// Terminal: codex finished the turn.
    Completed {
        /// The turn.
        turn_id: TurnId,
        /// `completed`, `interrupted` or `failed`.
        status: TurnStatus,
        /// What went wrong, for a failed or interrupted turn.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<TurnError>,
        /// Tokens the turn used: every model call of it (its [`TurnEvent::TokenUsage`] events),
        /// added up by the [`TurnStream`](crate::TurnStream) that yields this event.
        #[serde(default)]
        usage: TokenUsageBreakdown,
    },
    /// Terminal: the turn ended without codex finishing it.
    Aborted {
        /// Why.
        reason: AbortReason,
        /// A human-readable explanation.
        message: String,
    },
}

impl TurnEvent {
    /// Whether this event ends the stream.
    pub fn is_terminal(&self) -> bool {
        matches!(self, TurnEvent::Completed { .. } | TurnEvent::Aborted { .. })
    }

    /// Whether this event shows the turn moving on. Everything does but an error codex will
    /// retry by itself: a turn whose model cannot be reached sends nothing else.
    pub fn is_progress(&self) -> bool {
        !matches!(self, TurnEvent::Error { will_retry: true, .. })
    }
}

/// Reads a turn's events to the end; returns the concatenated reply text and the terminal event.
pub async fn collect_text<S>(mut events: S) -> (String, TurnEvent)
where
    S: futures_core::Stream<Item = TurnEvent> + Unpin,
{
    let mut text = String::new();
    while let Some(event) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut events).poll_next(cx)).await {
        match event {
            TurnEvent::AgentMessageDelta { delta, .. } => text.push_str(&delta),
            e if e.is_terminal() => return (text, e),
            _ => {}
        }
    }
    let end = TurnEvent::Aborted { reason: AbortReason::ProcessExited, message: "the event stream ended early".into() };
    (text, end)
}
