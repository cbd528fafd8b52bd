//! Answering the requests codex sends the client: each is decided by the process's
//! [`ServerRequestHandler`] in a task of its own, so a slow decision never stalls other threads,
//! and a handler that panics still gets its request answered.

use crate::policy::ServerRequestHandler;
use codex_pool_protocol::server_requests::ServerRequest;
use codex_pool_protocol::{RequestId, RpcError};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::task::JoinSet;

/// The server requests being decided, and the tasks deciding them.
pub(crate) struct Answers {
    handler: Arc<dyn ServerRequestHandler>,
    tasks: JoinSet<Result<Value, RpcError>>,
    /// Which request each task answers.
    asked: HashMap<tokio::task::Id, (RequestId, ServerRequest)>,
}

impl Answers {
    pub(crate) fn new(handler: Arc<dyn ServerRequestHandler>) -> Self {
        Self { handler, tasks: JoinSet::new(), asked: HashMap::new() }
    }

    /// Starts deciding a request.
    pub(crate) fn ask(&mut self, id: RequestId, request: ServerRequest) {
        let decision = self.handler.handle(request.clone());
        let task = self.tasks.spawn(decision).id();
        self.asked.insert(task, (id, request));
    }

    /// Whether no decision is under way (the loop then does not wait on [`Answers::next`]).
    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The next decision made: the request and its answer (an internal error if the handler
    /// panicked). Pending while none is; `None` when none is under way.
    pub(crate) async fn next(&mut self) -> Option<(RequestId, ServerRequest, Result<Value, RpcError>)> {
        let (task, answer) = match self.tasks.join_next_with_id().await? {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "a server request handler failed");
                (e.id(), Err(RpcError::new(RpcError::INTERNAL_ERROR, "the client's request handler failed")))
            }
        };
        let (id, request) = self.asked.remove(&task)?;
        Some((id, request, answer))
    }

    /// Stops every decision under way.
    pub(crate) fn abort_all(&mut self) {
        self.tasks.abort_all();
    }
}
