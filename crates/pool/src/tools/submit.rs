//! Tool outputs reaching the pool: to the turn that waits for them, or to a new turn that
//! continues the conversation from the store.

use super::{check_tools, Delivered};
use crate::conversations::TurnOptions;
use crate::error::PoolError;
use crate::ownership::TurnLease;
use crate::pool::Pool;
use crate::turn::{Ask, PoolTurn};
use codex_pool_protocol::{ToolOutput, TurnId};
use codex_pool_store::ConversationId;
use std::time::Duration;

/// Where outputs went.
#[derive(Debug)]
#[non_exhaustive]
pub enum Submitted {
    /// The turn that waited for them took them and goes on: its events continue on the stream
    /// of whoever started it. Should that turn end aborted before anything comes of them (its
    /// process died as they came), codex took none: give them again, and they continue the
    /// conversation from the store (the service does so by itself).
    Running {
        /// That turn.
        turn_id: TurnId,
    },
    /// No turn waited for them (its process died, the pool restarted, the turn waited past
    /// its limit, another node served it, the tool list changed): this new turn continues the
    /// conversation from the store, with the calls and these outputs given to a rebuilt thread.
    Continued(Box<PoolTurn>),
}

/// How long outputs that change the tool list wait for the turn they end to give the
/// conversation back.
const TOOLS_CHANGED_WAIT: Duration = Duration::from_secs(10);

impl Pool {
    /// Gives the outputs of a conversation's pending client tool calls (see
    /// [`TurnEvent::ToolCalls`](crate::TurnEvent::ToolCalls)); the conversation goes on. A turn
    /// that waits for them takes them ([`Submitted::Running`]); with none (on this node), a new
    /// turn continues the conversation from the store, which needs the outputs of every pending
    /// call ([`PoolError::MissingToolOutputs`] otherwise). An output for a call that is not
    /// pending is [`PoolError::UnknownToolCalls`], and nothing changes. `options.tools`, when it
    /// differs from the conversation's list, ends the waiting turn and continues on a thread
    /// rebuilt with the new list.
    pub async fn submit_tool_outputs(
        &self,
        id: &ConversationId,
        outputs: Vec<ToolOutput>,
        options: TurnOptions,
    ) -> Result<Submitted, PoolError> {
        let inner = &self.inner;
        inner.check_open()?;
        if outputs.is_empty() {
            return Err(PoolError::InvalidRequest("no tool outputs were given".to_owned()));
        }
        let mut ids: Vec<&str> = outputs.iter().map(|o| o.call_id.as_str()).collect();
        ids.sort_unstable();
        if let Some(twice) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(PoolError::InvalidRequest(format!("tool call {} has two outputs", twice[0])));
        }
        if let Some(tools) = &options.tools {
            check_tools(tools)?;
        }
        let changes_tools = options.tools.as_ref().is_some_and(|t| inner.routing.tools_differ(id, t));
        let outputs = if changes_tools {
            if inner.tool_waits.tools_changed(id) {
                self.wait_until_idle(id).await?;
            }
            outputs
        } else {
            match inner.tool_waits.deliver(id, outputs) {
                Delivered::Taken(turn_id) => return Ok(Submitted::Running { turn_id }),
                Delivered::Unknown(calls) => return Err(PoolError::UnknownToolCalls { thread_id: id.clone(), calls }),
                Delivered::NotWaiting(outputs) => outputs,
            }
        };
        self.continue_with(id, outputs, options).await.map(|turn| Submitted::Continued(Box::new(turn)))
    }

    /// Whether a turn of the conversation waits on this node for tool outputs (a hint: it may
    /// end at any moment).
    pub fn waits_for_tool_outputs(&self, id: &ConversationId) -> bool {
        self.inner.tool_waits.calls(id).is_some()
    }

    /// Waits (a bounded time) for the turn that ended on a tool list change to give the
    /// conversation back.
    async fn wait_until_idle(&self, id: &ConversationId) -> Result<(), PoolError> {
        let begun = std::time::Instant::now();
        while self.inner.routing.is_running(id) {
            if begun.elapsed() > TOOLS_CHANGED_WAIT {
                return Err(PoolError::ThreadBusy(id.clone()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// A new turn of the conversation that gives codex the outputs of its pending calls.
    async fn continue_with(
        &self,
        id: &ConversationId,
        outputs: Vec<ToolOutput>,
        options: TurnOptions,
    ) -> Result<PoolTurn, PoolError> {
        let inner = &self.inner;
        let lease = inner.lease(id).await?;
        let (claim, mut claimed) = inner.claim_turn(id).await?;
        let pending: Vec<&str> = claimed.pending.iter().map(|p| p.call_id.as_str()).collect();
        let unknown: Vec<String> =
            outputs.iter().filter(|o| !pending.contains(&o.call_id.as_str())).map(|o| o.call_id.clone()).collect();
        if !unknown.is_empty() {
            return Err(PoolError::UnknownToolCalls { thread_id: id.clone(), calls: unknown });
        }
        let missing: Vec<String> =
            pending.iter().filter(|p| !outputs.iter().any(|o| o.call_id == **p)).map(|p| (*p).to_owned()).collect();
        if !missing.is_empty() {
            return Err(PoolError::MissingToolOutputs { thread_id: id.clone(), calls: missing });
        }
        let fence = lease.as_ref().map(TurnLease::fence);
        inner.apply_tools(id, &mut claimed, &options, fence);
        let loaded = inner.trusted_thread(id, &mut claimed).await;
        // The outputs in codex's order: the calls' order.
        let mut given = Vec::with_capacity(outputs.len());
        for call in &claimed.pending {
            if let Some(output) = outputs.iter().find(|o| o.call_id == call.call_id) {
                given.push(output.to_item());
            }
        }
        let sent =
            inner.place_and_send(claim, &claimed, loaded, Ask::Turn { input: &[], given: &given }, &options).await?;
        inner.remember_options(id, &options, fence);
        Ok(inner.pool_turn(id, sent, lease, &claimed.settings, Vec::new(), given))
    }
}
