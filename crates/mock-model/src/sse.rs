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
    /// The tool calls instead of a message: the next one's index.
    ToolCall(usize),
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

    /// The item id and call id of call `index`: `fc_mock_{seq}` and `call_mock_{seq}` when the
    /// response makes one call, `fc_mock_{seq}_{index}` and `call_mock_{seq}_{index}` when several
    /// (unique for the mock's life, since `seq` is).
    fn call_ids(&self, index: usize) -> (String, String) {
        let seq = self.seq;
        if self.plan.tool_calls.len() == 1 {
            (format!("fc_mock_{seq}"), format!("call_mock_{seq}"))
        } else {
            (format!("fc_mock_{seq}_{index}"), format!("call_mock_{seq}_{index}"))
        }
    }

    /// The next step, advancing the phase.
    fn step(&mut self) -> Step {
        match self.phase {
            Phase::Created => {
                self.phase = match self.plan.failure {
                    Some(Failure::Hang) => Phase::Hang,
                    _ if !self.plan.tool_calls.is_empty() => Phase::ToolCall(0),
                    _ => Phase::MessageAdded,
                };
                Step::Emit(vec![event("response.created", json!({"response": {"id": self.response_id()}}))])
            }
            Phase::ToolCall(index) => {
                let Some(call) = self.plan.tool_calls.get(index) else {
                    self.phase = Phase::Completed;
                    return self.step();
                };
                let (id, call_id) = self.call_ids(index);
                let item = json!({
                    "type": "function_call", "id": id, "call_id": call_id,
                    "name": call.name, "arguments": call.arguments, "status": "completed",
                });
                self.phase = Phase::ToolCall(index + 1);
                Step::Emit(vec![
                    event("response.output_item.added", json!({"output_index": index, "item": item})),
                    event("response.output_item.done", json!({"output_index": index, "item": item})),
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
                        "input_tokens": self.plan.input_tokens, "input_tokens_details": {"cached_tokens": 0},
                        "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                        "total_tokens": self.plan.input_tokens + output_tokens,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ToolCall;
    use futures_util::StreamExt;
    use std::time::Duration;

    /// The events of a whole response, as (type, data).
    async fn events(seq: u64, plan: Plan) -> Vec<(String, Value)> {
        let chunks: Vec<_> = stream(seq, plan).collect().await;
        let body: String = chunks.into_iter().map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap()).collect();
        body.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
                let data: Value = serde_json::from_str(data).unwrap();
                (data["type"].as_str().unwrap().to_owned(), data)
            })
            .collect()
    }

    fn plan(tool_calls: Vec<ToolCall>) -> Plan {
        Plan { text: "echo: x".into(), deltas: 2, delay: Duration::ZERO, failure: None, tool_calls, input_tokens: 10 }
    }

    #[tokio::test]
    async fn one_call_keeps_its_ids() {
        let events = events(7, plan(vec![ToolCall::new("f", r#"{"a":1}"#)])).await;
        let kinds: Vec<_> = events.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds,
            ["response.created", "response.output_item.added", "response.output_item.done", "response.completed"]
        );
        let item = &events[2].1["item"];
        assert_eq!((item["id"].as_str(), item["call_id"].as_str()), (Some("fc_mock_7"), Some("call_mock_7")));
        assert_eq!((item["name"].as_str(), item["arguments"].as_str()), (Some("f"), Some(r#"{"a":1}"#)));
        assert_eq!(events[2].1["output_index"], 0);
    }

    #[tokio::test]
    async fn several_calls_come_in_one_response_each_with_its_index_and_ids() {
        let calls = vec![ToolCall::new("f", "{}"), ToolCall::new("g", r#"{"b":2}"#), ToolCall::new("f", "{}")];
        let events = events(3, plan(calls.clone())).await;
        assert_eq!(events.first().map(|(k, _)| k.as_str()), Some("response.created"));
        assert_eq!(events.last().map(|(k, _)| k.as_str()), Some("response.completed"));
        assert_eq!(events.iter().filter(|(k, _)| k == "response.completed").count(), 1);
        assert!(!events.iter().any(|(k, _)| k.starts_with("response.output_text")), "no message");
        let done: Vec<_> = events.iter().filter(|(k, _)| k == "response.output_item.done").map(|(_, d)| d).collect();
        assert_eq!(done.len(), 3);
        for (i, (data, call)) in done.iter().zip(&calls).enumerate() {
            assert_eq!(data["output_index"], i);
            assert_eq!(data["item"]["id"], format!("fc_mock_3_{i}"));
            assert_eq!(data["item"]["call_id"], format!("call_mock_3_{i}"));
            assert_eq!(
                (data["item"]["name"].as_str(), data["item"]["arguments"].as_str()),
                (Some(&*call.name), Some(&*call.arguments))
            );
        }
        // Each item is announced before it is done, at the same index.
        let added: Vec<_> =
            events.iter().filter(|(k, _)| k == "response.output_item.added").map(|(_, d)| &d["output_index"]).collect();
        assert_eq!(added, [0, 1, 2]);
    }

    #[tokio::test]
    async fn no_call_streams_the_message() {
        let events = events(1, plan(Vec::new())).await;
        let text: String = events
            .iter()
            .filter(|(k, _)| k == "response.output_text.delta")
            .map(|(_, d)| d["delta"].as_str().unwrap())
            .collect();
        assert_eq!(text, "echo: x");
    }
}
