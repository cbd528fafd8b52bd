//! codex's own requests: a client tool call goes to its turn's consumer, which gives the output
//! ([`Actor::answer_tool_call`]); everything else is decided by the policy and answered when
//! it is ([`Actor::answer`]).

use super::Actor;
use crate::error::ProcessError;
use crate::events::TurnEvent;
use codex_pool_protocol::jsonrpc::{encode_line, OutgoingResponse};
use codex_pool_protocol::server_requests::{ServerRequest, ServerRequestKind};
use codex_pool_protocol::tools::{DynamicToolCallParams, DynamicToolCallResponse};
use codex_pool_protocol::{CodexThreadId, RequestId, RpcError, TurnId};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::io::AsyncWrite;

impl<W: AsyncWrite + Unpin> Actor<W> {
    /// A request from codex.
    pub(super) fn on_server_request(&mut self, id: RequestId, method: &str, params: Option<&RawValue>) {
        let request = ServerRequest::decode(method, params);
        tracing::debug!(process = %self.label, method = %request.method, "server request");
        match self.tool_call_for_a_reader(&request) {
            Some(call) => {
                let thread_id = call.thread_id.clone();
                let turn_id = call.turn_id.clone();
                self.tool_calls.hold(thread_id.clone(), call.call_id.clone(), id);
                self.turns.emit(&thread_id, Some(&turn_id), TurnEvent::ToolCall { request: call }, &mut self.effects);
            }
            None => self.answers.ask(id, request),
        }
    }

    /// A client tool call whose turn has a consumer to give its output; any other server
    /// request (and a tool call no turn reads) is for the policy.
    fn tool_call_for_a_reader(&self, request: &ServerRequest) -> Option<DynamicToolCallParams> {
        if request.kind != ServerRequestKind::DynamicToolCall {
            return None;
        }
        let call: DynamicToolCallParams = serde_json::from_value(request.params.clone()).ok()?;
        self.turns.is_reading(&call.thread_id, &call.turn_id).then_some(call)
    }

    /// Writes the output of a waiting tool call.
    pub(super) fn answer_tool_call(
        &mut self,
        thread_id: &CodexThreadId,
        call_id: String,
        answer: &DynamicToolCallResponse,
    ) -> Result<(), ProcessError> {
        let Some(id) = self.tool_calls.take(thread_id, &call_id) else {
            return Err(ProcessError::NoSuchToolCall { thread_id: thread_id.clone(), call_id });
        };
        let answer = serde_json::to_value(answer).expect("a tool answer serializes");
        self.write(encode_line(&OutgoingResponse { id: &id, result: Some(&answer), error: None }))
    }

    pub(super) fn answer(&mut self, id: RequestId, request: ServerRequest, answer: Result<Value, RpcError>) {
        let line = match &answer {
            Ok(result) => encode_line(&OutgoingResponse { id: &id, result: Some(result), error: None }),
            Err(error) => encode_line(&OutgoingResponse { id: &id, result: None, error: Some(error) }),
        };
        if let Err(e) = self.write(line) {
            tracing::warn!(process = %self.label, method = %request.method, error = %e, "could not answer a server request");
        }
        let Some(thread_id) = request.thread_id().map(CodexThreadId::from) else { return };
        let turn_id = request.turn_id().map(TurnId::from);
        let answer = match answer {
            Ok(result) => json!({ "result": result }),
            Err(error) => json!({ "error": error }),
        };
        let event = TurnEvent::ServerRequest { method: request.method, params: request.params, answer };
        self.turns.emit(&thread_id, turn_id.as_ref(), event, &mut self.effects);
    }
}
