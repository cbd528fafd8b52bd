//! From what codex announces to what a turn's consumer sees: each notification becomes one
//! routing decision, so the actor's loop only carries it out.

use crate::events::TurnEvent;
use codex_pool_protocol::notifications::ServerNotification;
use codex_pool_protocol::{CodexThreadId, TurnId};
use serde_json::Value;

/// Where a notification goes.
#[derive(Debug, PartialEq)]
pub(crate) enum Routed {
    /// A thread was loaded in the process.
    ThreadStarted(CodexThreadId),
    /// A thread was unloaded; its running turn (if any) sees the notification.
    ThreadClosed { thread_id: CodexThreadId, event: TurnEvent },
    /// codex took up a turn: it is running, and takes interrupts.
    TurnStarted { thread_id: CodexThreadId, turn_id: TurnId },
    /// codex finished a turn: `event` ends its stream.
    TurnCompleted { thread_id: CodexThreadId, turn_id: TurnId, event: TurnEvent },
    /// An event of the thread's running turn (of turn `turn_id`, when the notification says).
    Event { thread_id: CodexThreadId, turn_id: Option<TurnId>, event: TurnEvent },
    /// About no thread: nothing to route.
    Unrouted,
}

/// Decides where a notification goes and what its consumer sees of it.
pub(crate) fn route(n: ServerNotification) -> Routed {
    let (thread_id, turn_id, event) = match n {
        ServerNotification::ThreadStarted(t) => return Routed::ThreadStarted(t.thread.id),
        ServerNotification::ThreadClosed(t) => {
            let event = TurnEvent::Notification { method: "thread/closed".to_owned(), params: Value::Null };
            return Routed::ThreadClosed { thread_id: t.thread_id, event };
        }
        ServerNotification::TurnStarted(t) => {
            return Routed::TurnStarted { thread_id: t.thread_id, turn_id: t.turn.id }
        }
        ServerNotification::TurnCompleted(t) => {
            let (turn_id, status, error) = (t.turn.id.clone(), t.turn.status, t.turn.error);
            // The usage is the turn stream's to add up: it sees every call's.
            let event = TurnEvent::Completed { turn_id, status, error, usage: Default::default() };
            return Routed::TurnCompleted { thread_id: t.thread_id, turn_id: t.turn.id, event };
        }
        ServerNotification::AgentMessageDelta(d) => {
            (d.thread_id, Some(d.turn_id), TurnEvent::AgentMessageDelta { item_id: d.item_id, delta: d.delta })
        }
        ServerNotification::ReasoningTextDelta(d) => {
            (d.thread_id, Some(d.turn_id), TurnEvent::ReasoningDelta { item_id: d.item_id, delta: d.delta })
        }
        ServerNotification::ReasoningSummaryTextDelta(d) => {
            (d.thread_id, Some(d.turn_id), TurnEvent::ReasoningSummaryDelta { item_id: d.item_id, delta: d.delta })
        }
        ServerNotification::ItemStarted(i) => (i.thread_id, Some(i.turn_id), TurnEvent::ItemStarted { item: i.item }),
        ServerNotification::ItemCompleted(i) => {
            (i.thread_id, Some(i.turn_id), TurnEvent::ItemCompleted { item: i.item })
        }
        ServerNotification::TokenUsageUpdated(u) => {
            (u.thread_id, Some(u.turn_id), TurnEvent::TokenUsage { usage: u.token_usage })
        }
        ServerNotification::Error(e) => {
            (e.thread_id, Some(e.turn_id), TurnEvent::Error { error: e.error, will_retry: e.will_retry })
        }
        ServerNotification::RawResponseItemCompleted(r) => {
            (r.thread_id, Some(r.turn_id), TurnEvent::ResponseItem { item: r.item })
        }
        ServerNotification::Other { method, params } => {
            let Some(thread_id) = params.get("threadId").and_then(Value::as_str).map(CodexThreadId::from) else {
                return Routed::Unrouted;
            };
            let turn_id = params.get("turnId").and_then(Value::as_str).map(TurnId::from);
            (thread_id, turn_id, TurnEvent::Notification { method, params })
        }
    };
    Routed::Event { thread_id, turn_id, event }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn decode(method: &str, params: &str) -> Routed {
        let raw = RawValue::from_string(params.to_owned()).unwrap();
        route(ServerNotification::decode(method, Some(&raw)))
    }

    #[test]
    fn deltas_name_their_thread_and_turn() {
        let routed = decode("item/agentMessage/delta", r#"{"threadId":"t","turnId":"u","itemId":"i","delta":"hi"}"#);
        assert_eq!(
            routed,
            Routed::Event {
                thread_id: "t".into(),
                turn_id: Some("u".into()),
                event: TurnEvent::AgentMessageDelta { item_id: "i".into(), delta: "hi".into() },
            }
        );
    }

    #[test]
    fn turn_lifecycle_and_threads_are_routed_apart() {
        let turn = r#"{"threadId":"t","turn":{"id":"u","status":"completed","items":[]}}"#;
        assert_eq!(decode("turn/started", turn), Routed::TurnStarted { thread_id: "t".into(), turn_id: "u".into() });
        assert!(matches!(
            decode("turn/completed", turn),
            Routed::TurnCompleted { event: TurnEvent::Completed { .. }, .. }
        ));
        assert_eq!(decode("thread/started", r#"{"thread":{"id":"t"}}"#), Routed::ThreadStarted("t".into()));
        assert!(matches!(decode("thread/closed", r#"{"threadId":"t"}"#), Routed::ThreadClosed { .. }));
    }

    #[test]
    fn unknown_notifications_pass_through_or_are_unrouted() {
        let routed = decode("plan/updated", r#"{"threadId":"t","turnId":"u","plan":[]}"#);
        assert!(
            matches!(&routed, Routed::Event { event: TurnEvent::Notification { method, .. }, turn_id: Some(u), .. } if method == "plan/updated" && u.as_str() == "u"),
            "{routed:?}"
        );
        assert_eq!(decode("account/updated", r#"{"x":1}"#), Routed::Unrouted);
    }
}
