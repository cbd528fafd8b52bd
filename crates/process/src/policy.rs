//! Answering the requests codex sends the client. Every request gets an answer, so no turn waits
//! on a client that never replies.

use codex_pool_protocol::server_requests::{ServerRequest, ServerRequestKind};
use codex_pool_protocol::RpcError;
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;

/// A boxed future, as returned by [`ServerRequestHandler::handle`].
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Decides the answer to a server request. Each request is handled in a task of its own, so a
/// slow handler (one that asks a person, say) never stalls other threads of the process.
pub trait ServerRequestHandler: Send + Sync + 'static {
    /// The JSON-RPC result to send, or the error.
    fn handle(&self, request: ServerRequest) -> BoxFuture<Result<Value, RpcError>>;
}

/// The default policy: decline every approval, answer no questions, report client tools as
/// unavailable, tell the time, and refuse what codex-pool cannot do (token refresh, attestation).
#[derive(Debug, Clone, Copy, Default)]
pub struct DeclinePolicy;

impl DeclinePolicy {
    /// The answer for a request, decided at once.
    pub fn answer(request: &ServerRequest) -> Result<Value, RpcError> {
        match request.kind {
            ServerRequestKind::CommandExecutionApproval | ServerRequestKind::FileChangeApproval => {
                Ok(json!({"decision": "decline"}))
            }
            ServerRequestKind::ExecCommandApproval | ServerRequestKind::ApplyPatchApproval => {
                Ok(json!({"decision": {"denied": {"rejection": "declined by the codex-pool policy"}}}))
            }
            ServerRequestKind::PermissionsApproval => Ok(json!({"permissions": {}, "scope": "turn"})),
            ServerRequestKind::ToolRequestUserInput => Ok(json!({"answers": {}})),
            ServerRequestKind::McpElicitation => Ok(json!({"action": "decline"})),
            ServerRequestKind::DynamicToolCall => {
                let tool = request.params.get("tool").and_then(Value::as_str).unwrap_or("?");
                Ok(json!({
                    "success": false,
                    "contentItems": [{"type": "inputText", "text": format!("tool `{tool}` is not available to this conversation")}],
                }))
            }
            // codex 0.171.0 no longer sends it; an older codex (0.169.0) may.
            ServerRequestKind::CurrentTimeRead => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                Ok(json!({"currentTimeAt": now.as_secs()}))
            }
            ServerRequestKind::ChatgptAuthTokensRefresh
            | ServerRequestKind::AttestationGenerate
            | ServerRequestKind::Unknown => {
                Err(RpcError::new(RpcError::METHOD_NOT_FOUND, format!("codex-pool does not handle {}", request.method)))
            }
        }
    }
}

impl ServerRequestHandler for DeclinePolicy {
    fn handle(&self, request: ServerRequest) -> BoxFuture<Result<Value, RpcError>> {
        let answer = Self::answer(&request);
        Box::pin(async move { answer })
    }
}

impl<F> ServerRequestHandler for F
where
    F: Fn(ServerRequest) -> BoxFuture<Result<Value, RpcError>> + Send + Sync + 'static,
{
    fn handle(&self, request: ServerRequest) -> BoxFuture<Result<Value, RpcError>> {
        self(request)
    }
}
