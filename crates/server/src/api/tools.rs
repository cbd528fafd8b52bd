//! Tool outputs given to a conversation: the run whose events go on (stand-in for the lead's module; the merge of i27-core replaces it).
use crate::error::ApiError;
use crate::events::EventBody;
use crate::runs::RunLog;
use crate::state::AppState;
use codex_pool::{ConversationId, Submitted, TurnOptions};
use codex_pool_protocol::ToolOutput;
use std::sync::Arc;
use std::time::Instant;

/// The run log whose events continue the conversation, and the event to read after.
pub(crate) struct Resumed {
    /// The log.
    pub log: Arc<RunLog>,
    /// Read after this event.
    pub after: u64,
}

/// Gives the outputs.
pub(crate) async fn submit(
    state: &AppState,
    id: &ConversationId,
    outputs: Vec<ToolOutput>,
    options: TurnOptions,
) -> Result<Resumed, ApiError> {
    let begun = Instant::now();
    let room = crate::api::turns::room(state)?;
    match state.pool.submit_tool_outputs(id, outputs, options).await? {
        Submitted::Running { turn_id } => {
            let log = state.runs.log(id, &turn_id).ok().flatten().ok_or_else(|| ApiError::not_found("no log"))?;
            let (events, _) = log.snapshot();
            let after = events
                .iter()
                .filter(|e| matches!(e.body, EventBody::ToolCalls { .. }))
                .map(|e| e.id)
                .next_back()
                .unwrap_or(0);
            Ok(Resumed { log, after })
        }
        Submitted::Continued(turn) => Ok(Resumed { log: state.runs.run(*turn, room, begun), after: 0 }),
        _ => Err(ApiError::invalid("unknown")),
    }
}
