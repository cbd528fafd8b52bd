//! The events' JSON as clients get it, pinned byte for byte: names, key order, escaping.

use super::*;
use codex_pool::AbortReason;
use codex_pool_protocol::types::{ThreadTokenUsage, TokenUsageBreakdown, TurnError, TurnStatus};
use serde_json::json;

/// What goes on the wire for an event: its SSE `id`, `event` and `data`.
fn wire(event: &ApiEvent) -> String {
    let data = serde_json::to_string(&event.body).unwrap();
    assert_eq!(event.wire_size(), data.len() + event.body.name().len() + 32, "{data}");
    format!("{} {} {}", event.id, event.body.name(), data)
}

fn mapper() -> Mapper {
    Mapper::new(ConversationId::from("c1"), "u1".into())
}

fn usage(input: i64, output: i64, calls: i64) -> TokenUsageBreakdown {
    TokenUsageBreakdown {
        input_tokens: input,
        cached_input_tokens: calls,
        output_tokens: output,
        reasoning_output_tokens: 2 * calls,
        total_tokens: input + output,
    }
}

/// A model call's usage: the turn's end carries their sum, so the service shows none of them.
fn call(input: i64, output: i64) -> TurnEvent {
    let last = usage(input, output, 1);
    TurnEvent::TokenUsage { usage: ThreadTokenUsage { last, total: last, model_context_window: None } }
}

fn completed(status: TurnStatus, error: Option<TurnError>, usage: TokenUsageBreakdown) -> TurnEvent {
    TurnEvent::Completed { turn_id: "u1".into(), status, error, usage }
}

#[test]
fn a_completed_turn_is_written_as_it_always_was() {
    let mut m = mapper();
    let item = json!({"type": "agentMessage", "id": "m1", "text": ""});
    let events = [
        TurnEvent::Started { thread_id: "t".into(), turn_id: "u1".into() },
        TurnEvent::ItemStarted { item: item.clone() },
        TurnEvent::AgentMessageDelta { item_id: "m1".into(), delta: "he said \"hi\"\n\u{e9}".into() },
        TurnEvent::ReasoningDelta { item_id: "r1".into(), delta: "think".into() },
        TurnEvent::ReasoningSummaryDelta { item_id: "r1".into(), delta: "sum".into() },
        call(10, 3),
        TurnEvent::ItemCompleted { item },
        call(5, 4),
        completed(TurnStatus::Completed, None, usage(15, 7, 2)),
    ];
    let written: Vec<String> = events.into_iter().flat_map(|e| m.map(e)).map(|e| wire(&e)).collect();
    assert_eq!(
        written,
        [
            r#"1 turn.started {"conversation_id":"c1","turn_id":"u1","type":"turn.started"}"#,
            r#"2 item.started {"item":{"id":"m1","text":"","type":"agentMessage"},"type":"item.started"}"#,
            "3 text.delta {\"delta\":\"he said \\\"hi\\\"\\n\u{e9}\",\"item_id\":\"m1\",\"type\":\"text.delta\"}",
            r#"4 reasoning.delta {"delta":"think","item_id":"r1","summary":false,"type":"reasoning.delta"}"#,
            r#"5 reasoning.delta {"delta":"sum","item_id":"r1","summary":true,"type":"reasoning.delta"}"#,
            r#"6 item.completed {"item":{"id":"m1","text":"","type":"agentMessage"},"type":"item.completed"}"#,
            concat!(
                r#"7 turn.completed {"conversation_id":"c1","status":"completed","turn_id":"u1","type":"turn.completed","#,
                r#""usage":{"cached_input_tokens":2,"input_tokens":15,"output_tokens":7,"reasoning_output_tokens":4,"total_tokens":22}}"#
            ),
        ]
    );
    assert!(m.ended());
}

#[test]
fn failed_cut_and_interrupted_turns_are_written_as_they_always_were() {
    let failed = TurnError { message: "bad".into(), codex_error_info: None, additional_details: Some("very".into()) };
    let ends = [
        completed(TurnStatus::Failed, Some(failed), usage(1, 1, 1)),
        completed(TurnStatus::Failed, None, TokenUsageBreakdown::default()),
        TurnEvent::Aborted { reason: AbortReason::LeaseLost, message: "taken".into() },
        completed(TurnStatus::Interrupted, None, TokenUsageBreakdown::default()),
    ];
    let written: Vec<String> = ends.into_iter().flat_map(|e| mapper().map(e)).map(|e| wire(&e)).collect();
    let failed = |kind: &str, message: &str| {
        format!(
            r#"1 turn.failed {{"conversation_id":"c1","error":{{"kind":"{kind}","message":"{message}"}},"turn_id":"u1","type":"turn.failed"}}"#
        )
    };
    assert_eq!(
        written,
        [
            failed("model_error", "bad: very"),
            failed("model_error", "the model failed the turn"),
            failed("lease_lost", "taken"),
            concat!(
                r#"1 turn.completed {"conversation_id":"c1","status":"interrupted","turn_id":"u1","type":"turn.completed","#,
                r#""usage":{"cached_input_tokens":0,"input_tokens":0,"output_tokens":0,"reasoning_output_tokens":0,"total_tokens":0}}"#
            )
            .to_owned(),
        ]
    );
    let mut m = mapper();
    m.map(TurnEvent::Started { thread_id: "t".into(), turn_id: "u1".into() });
    assert!(!m.ended());
    assert_eq!(
        wire(&m.abort(FailureKind::EventsTooLarge, "too big".into())),
        failed("events_too_large", "too big").replacen('1', "2", 1)
    );
    assert_eq!(wire(&mapper().lost()), failed("internal", "the turn's events ended without an end"));
}

#[test]
fn a_whole_turn_is_answered_as_it_always_was() {
    let mut m = mapper();
    let events: Vec<ApiEvent> = [
        TurnEvent::Started { thread_id: "t".into(), turn_id: "u1".into() },
        TurnEvent::AgentMessageDelta { item_id: "m1".into(), delta: "he".into() },
        TurnEvent::AgentMessageDelta { item_id: "m1".into(), delta: "y".into() },
        TurnEvent::ItemCompleted { item: json!({"id": "m1", "type": "agentMessage", "text": "hey"}) },
        call(3, 2),
        completed(TurnStatus::Completed, None, usage(3, 2, 1)),
    ]
    .into_iter()
    .flat_map(|e| m.map(e))
    .collect();
    assert_eq!(
        serde_json::to_string(&TurnResult::from_events(&events)).unwrap(),
        concat!(
            r#"{"conversation_id":"c1","turn_id":"u1","status":"completed","text":"hey","#,
            r#""items":[{"id":"m1","text":"hey","type":"agentMessage"}],"#,
            r#""usage":{"input_tokens":3,"cached_input_tokens":1,"output_tokens":2,"reasoning_output_tokens":2,"total_tokens":5}}"#
        )
    );
    let failed = TurnResult::from_events(&[mapper().abort(FailureKind::Aborted(AbortReason::Timeout), "slow".into())]);
    assert_eq!(
        serde_json::to_string(&failed).unwrap(),
        concat!(
            r#"{"conversation_id":"c1","turn_id":"u1","status":"failed","text":"","items":[],"#,
            r#""usage":{"input_tokens":0,"cached_input_tokens":0,"output_tokens":0,"reasoning_output_tokens":0,"total_tokens":0},"#,
            r#""error":{"kind":"timeout","message":"slow"}}"#
        )
    );
}

#[test]
fn tool_calls_are_written_with_the_model_s_own_arguments() {
    let mut m = mapper();
    let call = codex_pool_protocol::ToolCall {
        call_id: "call_1".into(),
        name: "weather".into(),
        arguments: r#"{"city": "Paris"}"#.into(),
    };
    let event = m.map(TurnEvent::ToolCalls { calls: vec![call] }).unwrap();
    assert_eq!(
        wire(&event),
        r#"1 tool.calls {"calls":[{"arguments":"{\"city\": \"Paris\"}","call_id":"call_1","name":"weather"}],"type":"tool.calls"}"#
    );
    assert!(!m.ended());
}
