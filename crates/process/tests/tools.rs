//! Client tools on the real pinned `codex app-server`: a turn whose model calls a client tool
//! hands the call to its consumer and waits for the output it is given.

use codex_pool_testkit as common;

use codex_pool_process::{ProcessError, TurnEvent, TurnStream};
use codex_pool_protocol::methods::{ThreadSettings, ThreadStartParams, TurnStartParams};
use codex_pool_protocol::tools::DynamicToolCallParams;
use codex_pool_protocol::types::{TurnStatus, UserInput};
use codex_pool_protocol::{ToolOutput, ToolSpec};
use common::*;
use serde_json::json;

fn weather() -> ToolSpec {
    ToolSpec {
        name: "weather".into(),
        description: "The weather in a city.".into(),
        input_schema: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    }
}

/// Reads the turn until codex asks for a tool's output.
async fn until_tool_call(turn: &mut TurnStream) -> DynamicToolCallParams {
    while let Some(event) = turn.next().await {
        match event {
            TurnEvent::ToolCall { request } => return request,
            e if e.is_terminal() => panic!("the turn ended before its tool call: {e:?}"),
            _ => {}
        }
    }
    panic!("the stream ended before the tool call")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_tool_call_waits_for_its_output_and_the_turn_goes_on() {
    let env = Env::new().await;
    let server = env.spawn().await;
    let codex = server.handle().clone();
    let settings = ThreadSettings { dynamic_tools: vec![weather()], ..Default::default() };
    let params = ThreadStartParams { settings, experimental_raw_events: true, ..Default::default() };
    let thread = codex.start_thread(&params).await.unwrap().thread;

    let ask = r#"weather? [mock:tool=weather {"city":"Paris"}]"#;
    let mut turn = codex.start_turn(TurnStartParams::new(&thread.id, vec![UserInput::text(ask)])).await.unwrap();
    let call = until_tool_call(&mut turn).await;
    assert_eq!((call.tool.as_str(), &call.arguments), ("weather", &json!({"city": "Paris"})));
    assert_eq!(call.thread_id, thread.id);
    // The model saw the tool declared.
    let first = env.requests_with("weather?");
    assert!(first[0]["tools"].as_array().unwrap().iter().any(|t| t["name"] == "weather"), "{}", first[0]["tools"]);

    let output = ToolOutput::text(&call.call_id, "sunny, 21C");
    codex.answer_tool_call(&thread.id, &call.call_id, output.to_response()).await.unwrap();
    // Once answered, the call waits no more.
    let again = codex.answer_tool_call(&thread.id, &call.call_id, output.to_response()).await;
    assert!(matches!(again, Err(ProcessError::NoSuchToolCall { .. })), "{again:?}");

    let (text, end, events) = finish(turn).await;
    assert_eq!(text, "tool output: sunny, 21C");
    assert!(matches!(end, TurnEvent::Completed { status: TurnStatus::Completed, .. }), "{end:?}");
    let recorded: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            TurnEvent::ResponseItem { item } => item["type"].as_str(),
            _ => None,
        })
        .collect();
    // (The `function_call` item came before the request, read by `until_tool_call`.)
    assert_eq!(recorded, ["function_call_output", "message"]);
    server.shutdown(SHUTDOWN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_ends_a_turn_that_waits_on_a_tool_and_its_call_waits_no_more() {
    let env = Env::new().await;
    let server = env.spawn().await;
    let codex = server.handle().clone();
    let settings = ThreadSettings { dynamic_tools: vec![weather()], ..Default::default() };
    let thread = codex.start_thread(&ThreadStartParams { settings, ..Default::default() }).await.unwrap().thread;
    let ask = r#"weather? [mock:tool=weather {"city":"Oslo"}]"#;
    let mut turn = codex.start_turn(TurnStartParams::new(&thread.id, vec![UserInput::text(ask)])).await.unwrap();
    let call = until_tool_call(&mut turn).await;
    codex.interrupt(&thread.id).await.unwrap();
    let (_, end, _) = finish(turn).await;
    assert!(matches!(end, TurnEvent::Completed { status: TurnStatus::Interrupted, .. }), "{end:?}");
    let late =
        codex.answer_tool_call(&thread.id, &call.call_id, ToolOutput::text(&call.call_id, "x").to_response()).await;
    assert!(matches!(late, Err(ProcessError::NoSuchToolCall { .. })), "{late:?}");
    server.shutdown(SHUTDOWN).await;
}
