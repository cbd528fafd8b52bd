//! Errors of the pool: one shape per condition.

use codex_pool_process::ca::CaError;
use codex_pool_process::{ProcessError, SpawnError};
use codex_pool_protocol::RpcError;
use codex_pool_store::{ConversationId, StoreError};

/// What can go wrong in the pool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// No process could be started.
    #[error("no codex process could be started: {0}")]
    NoProcess(String),
    /// Every process is down right now (they are being restarted).
    #[error("no codex process is available right now; retry shortly")]
    Unavailable,
    /// The pool is shutting down or has shut down.
    #[error("the pool is shut down")]
    ShutDown,
    /// The conversation is not known to the pool or its store.
    #[error("unknown conversation {0}")]
    UnknownThread(ConversationId),
    /// A turn is already running on the conversation (or it is being released).
    #[error("conversation {0} already has a turn running; wait for it to end or interrupt it")]
    ThreadBusy(ConversationId),
    /// The conversation waits for the outputs of client tool calls: a new message would leave
    /// them unanswered.
    #[error(
        "conversation {thread_id} waits for the outputs of tool calls {}; send them (or declined outputs) before a new message",
        calls.join(", ")
    )]
    ToolCallsPending {
        /// The conversation.
        thread_id: ConversationId,
        /// The calls that wait.
        calls: Vec<String>,
    },
    /// Outputs were given for calls the conversation does not wait on (answered already, or
    /// never made).
    #[error("conversation {thread_id} has no pending tool call {}; nothing was changed", calls.join(", "))]
    UnknownToolCalls {
        /// The conversation.
        thread_id: ConversationId,
        /// The calls not pending.
        calls: Vec<String>,
    },
    /// The conversation continues from the store, which needs the output of every pending call
    /// at once.
    #[error(
        "conversation {thread_id} also waits for the outputs of tool calls {}; send every pending call's output together",
        calls.join(", ")
    )]
    MissingToolOutputs {
        /// The conversation.
        thread_id: ConversationId,
        /// The calls without an output.
        calls: Vec<String>,
    },
    /// No turn is running on the conversation.
    #[error("conversation {0} has no turn running")]
    NoActiveTurn(ConversationId),
    /// The conversation's process has no room for another turn.
    #[error("the codex process of conversation {thread_id} already runs {limit} turns; retry later")]
    Overloaded {
        /// The conversation.
        thread_id: ConversationId,
        /// The per-process limit.
        limit: usize,
    },
    /// The input is longer than codex takes; nothing was sent and the conversation is unchanged.
    #[error("the input has {chars} characters of text, over codex's limit of {limit}; shorten it or split it over several turns")]
    InputTooLarge {
        /// Characters of text in the input.
        chars: usize,
        /// The most codex takes in one turn.
        limit: usize,
    },
    /// The input or the turn's settings are not something codex takes: an image that is not a
    /// `data:` URL, or a turn codex refused as an invalid request. Nothing was sent, or codex
    /// took nothing; the conversation is unchanged. The message says what to send instead.
    #[error("{0}")]
    InvalidRequest(String),
    /// The conversation could not be rebuilt on a live process from its stored history.
    #[error("conversation {thread_id} could not be rebuilt on a codex process: {source}")]
    Rebuild {
        /// The conversation.
        thread_id: ConversationId,
        /// What codex answered.
        source: ProcessError,
    },
    /// codex did not take the history a new conversation was to start from (nothing was created).
    #[error("codex did not take the conversation's initial history: {0}")]
    History(ProcessError),
    /// codex failed a request (it answered with an error, timed out, or its process is gone).
    #[error(transparent)]
    Codex(ProcessError),
    /// A process could not be spawned.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// The root certificates for codex could not be set up (a bad `ca_bundle` or provider URL).
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The thread store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store holds a conversation under a profile name the pool does not know (the value is
    /// not repeated: a corrupt record may hold anything).
    #[error(
        "conversation {thread_id} is stored with a profile that is neither chat nor codex; set its profile in the \
         store (the `profile` column of its row in `threads`) to chat or codex"
    )]
    CorruptProfile {
        /// The conversation.
        thread_id: ConversationId,
    },
}

impl PoolError {
    /// A process error as the pool reports it, for a request about `conversation`: conditions
    /// the pool names itself (busy, no turn, overloaded, input too large) take the pool's shape.
    pub(crate) fn from_process(conversation: &ConversationId, e: ProcessError) -> Self {
        match e {
            ProcessError::ThreadBusy { .. } => PoolError::ThreadBusy(conversation.clone()),
            ProcessError::NoActiveTurn { .. } => PoolError::NoActiveTurn(conversation.clone()),
            ProcessError::InputTooLarge { chars, limit } => PoolError::InputTooLarge { chars, limit },
            ProcessError::InvalidInput(message) => PoolError::InvalidRequest(message),
            // What a turn carries is the client's: codex refusing it as invalid is the client's error.
            ProcessError::Rpc { method: "turn/start", error } if error.code == RpcError::INVALID_REQUEST => {
                PoolError::InvalidRequest(format!("codex refused the turn: {}", error.message))
            }
            ProcessError::Rpc { method: "turn/start", error } if error.code == RpcError::INVALID_PARAMS => {
                // Its message may quote the input: kept out of the answer.
                tracing::debug!(message = %error.message, "codex refused turn/start's params");
                PoolError::InvalidRequest(
                    "codex refused the turn's parameters as invalid (JSON-RPC -32602): check the input items and \
                     the turn's settings against the API reference"
                        .to_owned(),
                )
            }
            e => PoolError::Codex(e),
        }
    }

    /// A process error about no conversation in particular.
    pub(crate) fn codex(e: ProcessError) -> Self {
        PoolError::Codex(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codex_refusing_a_turn_as_invalid_is_the_clients_error() {
        let id = ConversationId::from("c");
        let rpc = |method, code, message: &str| ProcessError::Rpc { method, error: RpcError::new(code, message) };
        let remote = "remote image URLs are not supported; use an inline data URL instead";
        let e = PoolError::from_process(&id, rpc("turn/start", -32600, remote));
        assert!(matches!(&e, PoolError::InvalidRequest(m) if m.contains(remote)), "{e:?}");
        let e = PoolError::from_process(&id, rpc("turn/start", -32602, "invalid type: string \"secret prompt\""));
        assert!(matches!(&e, PoolError::InvalidRequest(m) if !m.contains("secret")), "{e:?}");
        // Not the client's: another method, another code.
        assert!(matches!(PoolError::from_process(&id, rpc("thread/start", -32600, "x")), PoolError::Codex(_)));
        assert!(matches!(PoolError::from_process(&id, rpc("turn/start", -32603, "x")), PoolError::Codex(_)));
    }
}
