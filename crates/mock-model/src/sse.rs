//! The SSE body of one response: the Responses API event sequence that codex consumes.

use crate::reply::{Failure, Plan};
use axum::body::Bytes;
use futures_util::Stream;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::time::Duration;

enum Step {
    Emit(Bytes),
    Sleep(Duration),
    Cut,
    Hang,
}

fn event(kind: &str, mut data: Value) -> Step {
    data["type"] = Value::String(kind.to_owned());
    Step::Emit(Bytes::from(format!("event: {kind}\ndata: {data}\n\n")))
}

fn steps(seq: u64, plan: Plan) -> VecDeque<Step> {
    let response_id = format!("resp_mock_{seq}");
    let mut steps = VecDeque::new();
    steps.push_back(event("response.created", json!({"response": {"id": response_id}})));
    if plan.failure == Some(Failure::Hang) {
        steps.push_back(Step::Hang);
        return steps;
    }
    if let Some((name, arguments)) = plan.tool_call {
        let item = json!({
            "type": "function_call", "id": format!("fc_mock_{seq}"), "call_id": format!("call_mock_{seq}"),
            "name": name, "arguments": arguments, "status": "completed",
        });
        steps.push_back(event("response.output_item.added", json!({"output_index": 0, "item": item})));
        steps.push_back(event("response.output_item.done", json!({"output_index": 0, "item": item})));
    } else {
        let item_id = format!("msg_mock_{seq}");
        let pieces = plan.pieces();
        let cut_at = (plan.failure == Some(Failure::Cut)).then_some(pieces.len() / 2);
        steps.push_back(event(
            "response.output_item.added",
            json!({"output_index": 0, "item": {"type": "message", "id": item_id, "role": "assistant", "status": "in_progress", "content": []}}),
        ));
        for (i, piece) in pieces.into_iter().enumerate() {
            if cut_at == Some(i) {
                steps.push_back(Step::Cut);
                return steps;
            }
            if !plan.delay.is_zero() {
                steps.push_back(Step::Sleep(plan.delay));
            }
            steps.push_back(event(
                "response.output_text.delta",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": piece}),
            ));
        }
        if cut_at.is_some() {
            steps.push_back(Step::Cut);
            return steps;
        }
        steps.push_back(event(
            "response.output_item.done",
            json!({"output_index": 0, "item": {
                "type": "message", "id": item_id, "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": plan.text, "annotations": []}],
            }}),
        ));
    }
    let output_tokens = plan.deltas as u64;
    steps.push_back(event(
        "response.completed",
        json!({"response": {"id": response_id, "usage": {
            "input_tokens": 10, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 10 + output_tokens,
        }}}),
    ));
    steps
}

/// The body stream for one request. A cut ends it with an error, which aborts the HTTP response.
pub(crate) fn stream(seq: u64, plan: Plan) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures_util::stream::unfold(steps(seq, plan), |mut steps| async move {
        loop {
            match steps.pop_front()? {
                Step::Emit(bytes) => return Some((Ok(bytes), steps)),
                Step::Sleep(d) => tokio::time::sleep(d).await,
                Step::Cut => {
                    let err = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "mock stream cut");
                    return Some((Err(err), steps));
                }
                Step::Hang => std::future::pending::<()>().await,
            }
        }
    })
}
