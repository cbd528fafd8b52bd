//! What a turn's events (the service's, [`ApiEvent`]) come to in OpenAI's terms: assistant
//! messages that open, grow and close, then one stop: the model's calls of the client's tools
//! (the turn waits for their outputs) or the turn's end. A turn that calls tools is answered in
//! rounds, one response each: round 0 up to the first calls, round `r` from the `r`th calls'
//! outputs on. Both OpenAI routes, streamed or not, read turns through this.

use crate::events::{ApiEvent, EventBody, FailureKind, Finished, Usage};
use crate::runs::RunLog;
use axum::response::sse::Event;
use codex_pool_protocol::{ToolCall, Withheld};
use futures_util::stream::Stream;
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

/// One step of a reply.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// The `n`th message (from 0) begins.
    Open(usize),
    /// More text of the `n`th message.
    Delta(usize, String),
    /// The `n`th message is whole; its text.
    Close(usize, String),
    /// The `n`th message is whole, and codex said to hide or block it: its text is withheld
    /// (what was streamed of it stays streamed; it ends as a refusal).
    Withheld(usize, Withheld),
    /// The model called the client's tools: the reply stops here until their outputs come.
    ToolCalls(Vec<ToolCall>),
    /// The turn ended.
    End(Ending),
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ending {
    /// codex finished it; `interrupted` when it was stopped.
    Completed {
        /// It was interrupted.
        interrupted: bool,
        /// Tokens it used.
        usage: Usage,
    },
    /// It failed: `kind` (`model_error`, `process_exited`, ...) and what happened.
    Failed {
        /// Why.
        kind: FailureKind,
        /// What happened.
        message: String,
    },
}

/// Follows a turn's events.
#[derive(Debug, Default)]
pub(crate) struct Reply {
    /// The codex item of the message being written, and its place in `messages`.
    open: Option<(String, usize)>,
    /// Messages so far (closed ones whole).
    messages: Vec<String>,
    /// The calls the round stopped at.
    calls: Vec<ToolCall>,
    /// The messages codex said to hide or block, by place.
    withheld: BTreeMap<usize, Withheld>,
    ended: Option<Ending>,
    /// The round must stop at tool calls (`tool_choice`): one that ends without fails.
    must_call: bool,
}

impl Reply {
    /// A round's reply; `must_call`: the round must stop at tool calls (one that ends without
    /// them ends `failed`, `model_error`).
    pub(crate) fn new(must_call: bool) -> Self {
        Self { must_call, ..Self::default() }
    }

    /// The steps an event makes.
    pub(crate) fn step(&mut self, event: &ApiEvent) -> Vec<Step> {
        let mut steps = Vec::new();
        match &event.body {
            EventBody::TextDelta { item_id: item, delta } => {
                if self.open.as_ref().is_some_and(|(id, _)| id != item) {
                    steps.extend(self.close());
                }
                let (_, n) = self.open.get_or_insert_with(|| {
                    let n = self.messages.len();
                    self.messages.push(String::new());
                    steps.push(Step::Open(n));
                    (item.to_owned(), n)
                });
                self.messages[*n].push_str(delta);
                steps.push(Step::Delta(*n, delta.clone()));
            }
            EventBody::ItemCompleted { item } => {
                let id = item["id"].as_str();
                if self.open.as_ref().is_some_and(|(open, _)| Some(open.as_str()) == id) {
                    steps.extend(self.close());
                }
            }
            EventBody::ItemModerated { item, mode, .. } => {
                let id = item["id"].as_str().unwrap_or_default();
                let n = match self.open.take() {
                    Some((open, n)) if open == id => n,
                    other => {
                        // Not streamed (or another message was open): it begins and ends here.
                        self.open = other;
                        steps.extend(self.close());
                        self.messages.push(String::new());
                        steps.push(Step::Open(self.messages.len() - 1));
                        self.messages.len() - 1
                    }
                };
                self.messages[n].clear();
                self.withheld.insert(n, *mode);
                steps.push(Step::Withheld(n, *mode));
            }
            EventBody::TurnCompleted { status, usage, .. } => {
                let interrupted = *status == Finished::Interrupted;
                let ending = if self.must_call && !interrupted {
                    let message = "the model answered without calling a tool, which `tool_choice` asked for";
                    Ending::Failed { kind: FailureKind::ModelError, message: message.to_owned() }
                } else {
                    Ending::Completed { interrupted, usage: *usage }
                };
                self.end(ending, &mut steps);
            }
            EventBody::TurnFailed { error, .. } => {
                self.end(Ending::Failed { kind: error.kind, message: error.message.clone() }, &mut steps);
            }
            EventBody::ToolCalls { calls } => {
                steps.extend(self.close());
                self.calls.clone_from(calls);
                steps.push(Step::ToolCalls(calls.clone()));
            }
            // Nothing OpenAI's shapes show.
            EventBody::TurnStarted { .. } | EventBody::ItemStarted { .. } | EventBody::ReasoningDelta { .. } => {}
        }
        steps
    }

    fn end(&mut self, ending: Ending, steps: &mut Vec<Step>) {
        steps.extend(self.close());
        self.ended = Some(ending.clone());
        steps.push(Step::End(ending));
    }

    fn close(&mut self) -> Option<Step> {
        self.open.take().map(|(_, n)| Step::Close(n, self.messages[n].clone()))
    }

    /// The messages so far.
    pub(crate) fn messages(&self) -> &[String] {
        &self.messages
    }

    /// Whether codex said to hide or block the `n`th message (its text is then empty).
    pub(crate) fn withheld(&self, n: usize) -> Option<Withheld> {
        self.withheld.get(&n).copied()
    }

    /// Whether codex said to hide or block any message.
    pub(crate) fn any_withheld(&self) -> bool {
        !self.withheld.is_empty()
    }

    /// Every message's text, joined.
    pub(crate) fn text(&self) -> String {
        self.messages.concat()
    }

    /// How the turn ended, once it has.
    pub(crate) fn ending(&self) -> Option<&Ending> {
        self.ended.as_ref()
    }

    /// The tool calls the round stopped at (none when it did not).
    pub(crate) fn calls(&self) -> &[ToolCall] {
        &self.calls
    }

    /// Whether the round has stopped: at tool calls, or at the turn's end.
    pub(crate) fn stopped(&self) -> bool {
        self.ended.is_some() || !self.calls.is_empty()
    }

    /// Round `round` of a turn's events (from the start of the turn), read up to its stop.
    pub(crate) fn of_round<E: std::borrow::Borrow<ApiEvent>>(events: &[E], round: usize) -> Self {
        let start = match round {
            0 => 0,
            r => match calls_at(events).get(r - 1) {
                Some(&at) => at + 1,
                None => events.len(),
            },
        };
        let mut reply = Reply::default();
        for e in &events[start..] {
            reply.step(e.borrow());
            if reply.stopped() {
                break;
            }
        }
        reply
    }
}

/// Where in `events` each `tool.calls` event is.
fn calls_at<E: std::borrow::Borrow<ApiEvent>>(events: &[E]) -> Vec<usize> {
    let calls = |(i, e): (usize, &E)| matches!(e.borrow().body, EventBody::ToolCalls { .. }).then_some(i);
    events.iter().enumerate().filter_map(calls).collect()
}

/// The round that begins after event `after` of a log (0 from the start; `r` after the `r`th
/// `tool.calls` event).
pub(crate) fn round_after(log: &RunLog, after: u64) -> usize {
    let (events, _) = log.snapshot();
    events.iter().filter(|e| e.id <= after && matches!(e.body, EventBody::ToolCalls { .. })).count()
}

/// The round that begins after event `after` of a log, once it has stopped (the log's end
/// without a stop leaves it as it was).
pub(crate) async fn settle(log: &RunLog, mut after: u64, mut reply: Reply) -> Reply {
    while let Some(events) = log.next_after(after).await {
        for event in events {
            after = event.id;
            reply.step(&event);
            if reply.stopped() {
                return reply;
            }
        }
    }
    reply
}

/// How a route writes a reply as server-sent events.
pub(crate) trait Render: Send + 'static {
    /// What goes out before the turn's first event.
    fn start(&mut self) -> Vec<Event>;
    /// What a step of the reply makes (`reply` is the reply so far, this step included).
    fn step(&mut self, step: Step, reply: &Reply) -> Vec<Event>;
}

/// A round of a turn's reply from its log, after event `after`, as events written by `render`;
/// the stream ends at the round's stop (tool calls, or the turn's end). The turn runs on
/// whether or not anyone reads it.
pub(crate) fn events<R: Render>(
    log: Arc<RunLog>,
    after: u64,
    reply: Reply,
    render: R,
) -> impl Stream<Item = Result<Event, Infallible>> {
    crate::sse::events(log, after, Replying { reply, render })
}

/// A reply told step by step to a [`Render`].
struct Replying<R> {
    reply: Reply,
    render: R,
}

impl<R: Render> crate::sse::Writer for Replying<R> {
    fn start(&mut self) -> Vec<Event> {
        self.render.start()
    }

    fn write(&mut self, event: &ApiEvent, out: &mut VecDeque<Event>) -> bool {
        // The round stopped: what follows (the next round, once outputs came) is another's.
        if self.reply.stopped() {
            return true;
        }
        let mut done = false;
        for step in self.reply.step(event) {
            done |= matches!(step, Step::End(_) | Step::ToolCalls(_));
            out.extend(self.render.step(step, &self.reply));
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codex_pool::ConversationId;
    use codex_pool_protocol::TurnId;
    use serde_json::json;

    fn ev(body: EventBody) -> ApiEvent {
        ApiEvent { id: 0, body }
    }

    fn delta(item_id: &str, delta: &str) -> ApiEvent {
        ev(EventBody::TextDelta { item_id: item_id.into(), delta: delta.into() })
    }

    #[test]
    fn messages_open_grow_and_close_then_the_turn_ends() {
        let mut r = Reply::default();
        let mut steps = Vec::new();
        let (conversation_id, turn_id) = (ConversationId::from("c"), TurnId::from("u"));
        let usage = Usage { input_tokens: 3, output_tokens: 2, total_tokens: 5, ..Usage::default() };
        for e in [
            ev(EventBody::TurnStarted { conversation_id: conversation_id.clone(), turn_id: turn_id.clone() }),
            delta("a", "he"),
            delta("a", "y"),
            ev(EventBody::ItemCompleted { item: json!({"id": "a"}) }),
            delta("b", "!"),
            ev(EventBody::TurnCompleted { conversation_id, turn_id, status: Finished::Completed, usage }),
        ] {
            steps.extend(r.step(&e));
        }
        assert_eq!(
            &steps[..5],
            &[
                Step::Open(0),
                Step::Delta(0, "he".into()),
                Step::Delta(0, "y".into()),
                Step::Close(0, "hey".into()),
                Step::Open(1),
            ]
        );
        assert_eq!(steps[6], Step::Close(1, "!".into()));
        assert!(
            matches!(&steps[7], Step::End(Ending::Completed { interrupted: false, usage }) if usage.total_tokens == 5)
        );
        assert_eq!(r.text(), "hey!");
    }
}
