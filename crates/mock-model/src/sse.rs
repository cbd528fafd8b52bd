//! The SSE body of one response: the Responses API event sequence that codex consumes, made one
//! event at a time as the body is read (a reply of many deltas is never built up front).

use crate::reply::{Cursor, Failure, Plan};
use axum::body::Bytes;
use futures_util::Stream;
use serde_json::{json, Value};

fn event(kind: &str, mut data: Value) -> Bytes {
    data["type"] = Value::String(kind.to_owned());
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

/// Where a response is in its sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Created,
    /// A tool call instead of a message.
    ToolCall,
    MessageAdded,
    /// The deltas; `slept` once the delay before the next one has passed.
    Deltas {
        slept: bool,
    },
    MessageDone,
    Completed,
    /// Cut the connection (an error ends the body).
    Cut,
    /// Send nothing more until the client goes away.
    Hang,
    Done,
}

/// One response being streamed: the plan, and where it is.
struct Response {
    seq: u64,
    plan: Plan,
    phase: Phase,
    cursor: Cursor,
}

/// What the stream does next.
enum Step {
    Emit(Vec<Bytes>),
    Sleep,
    Cut,
    Hang,
    End,
}

impl Response {
    fn response_id(&self) -> String {
        format!("resp_mock_{}", self.seq)
    }

    fn item_id(&self) -> String {
        format!("msg_mock_{}", self.seq)
    }

    /// The next step, advancing the phase.
    fn step(&mut self) -> Step {
        match self.phase {
            Phase::Created => {
                self.phase = match (&self.plan.failure, &self.plan.tool_call) {
                    (Some(Failure::Hang), _) => Phase::Hang,
                    (_, Some(_)) => Phase::ToolCall,
                    _ => Phase::MessageAdded,
                };
                Step::Emit(vec![event("response.created", json!({"response": {"id": self.response_id()}}))])
            }
            Phase::ToolCall => {
                let (name, arguments) = self.plan.tool_call.clone().unwrap_or_default();
                let seq = self.seq;
                let item = json!({
                    "type": "function_call", "id": format!("fc_mock_{seq}"), "call_id": format!("call_mock_{seq}"),
                    "name": name, "arguments": arguments, "status": "completed",
                });
                self.phase = Phase::Completed;
                Step::Emit(vec![
                    event("response.output_item.added", json!({"output_index": 0, "item": item})),
                    event("response.output_item.done", json!({"output_index": 0, "item": item})),
                ])
            }
            Phase::MessageAdded => {
                self.phase = Phase::Deltas { slept: false };
                Step::Emit(vec![event(
                    "response.output_item.added",
                    json!({"output_index": 0, "item": {"type": "message", "id": self.item_id(), "role": "assistant", "status": "in_progress", "content": []}}),
                )])
            }
            Phase::Deltas { slept } => {
                let taken = self.cursor.taken();
                let stop = match self.plan.failure {
                    Some(Failure::Cut) if taken == self.plan.deltas / 2 => Some(Phase::Cut),
                    Some(Failure::StallAfter(n)) if taken == n.min(self.plan.deltas) => Some(Phase::Hang),
                    _ => None,
                };
                if let Some(phase) = stop {
                    self.phase = phase;
                    return self.step();
                }
                if !slept && !self.plan.delay.is_zero() && taken < self.plan.deltas {
                    self.phase = Phase::Deltas { slept: true };
                    return Step::Sleep;
                }
                self.phase = Phase::Deltas { slept: false };
                match self.cursor.take(&self.plan.text) {
                    Some(piece) => Step::Emit(vec![event(
                        "response.output_text.delta",
                        json!({"item_id": self.item_id(), "output_index": 0, "content_index": 0, "delta": piece}),
                    )]),
                    None => {
                        self.phase = Phase::MessageDone;
                        self.step()
                    }
                }
            }
            Phase::MessageDone => {
                self.phase = Phase::Completed;
                Step::Emit(vec![event(
                    "response.output_item.done",
                    json!({"output_index": 0, "item": {
                        "type": "message", "id": self.item_id(), "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": self.plan.text, "annotations": []}],
                    }}),
                )])
            }
            Phase::Completed => {
                self.phase = Phase::Done;
                let output_tokens = self.plan.deltas as u64;
                Step::Emit(vec![event(
                    "response.completed",
                    json!({"response": {"id": self.response_id(), "usage": {
                        "input_tokens": 10, "input_tokens_details": {"cached_tokens": 0},
                        "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                        "total_tokens": 10 + output_tokens,
                    }}}),
                )])
            }
            Phase::Cut => {
                self.phase = Phase::Done;
                Step::Cut
            }
            Phase::Hang => Step::Hang,
            Phase::Done => Step::End,
        }
    }
}

/// The body stream for one request. A cut ends it with an error, which aborts the HTTP response.
pub(crate) fn stream(seq: u64, plan: Plan) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let cursor = Cursor::new(&plan.text, plan.deltas);
    let response = Response { seq, plan, phase: Phase::Created, cursor };
    futures_util::stream::unfold(response, |mut response| async move {
        loop {
            match response.step() {
                Step::Emit(events) => return Some((Ok(Bytes::from(events.concat())), response)),
                Step::Sleep => tokio::time::sleep(response.plan.delay).await,
                Step::Cut => {
                    let err = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "mock stream cut");
                    return Some((Err(err), response));
                }
                Step::Hang => std::future::pending::<()>().await,
                Step::End => return None,
            }
        }
    })
}
