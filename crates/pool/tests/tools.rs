//! Client tools through the pool, against the real pinned `codex app-server` and the fake model:
//! the fast path (the waiting turn takes the outputs), and every way the waiting turn can be
//! gone (its process killed, the pool restarted, the wait past its limit, the tool list
//! changed), after which the outputs continue the conversation from the store. Each checks the
//! stored history and the model's requests: every call and every output exactly once, and
//! nothing codex writes for a call it cancelled.

use codex_pool::{
    AbortReason, ConversationId, Pool, PoolConfig, PoolError, PoolTurn, Submitted, ToolCall, ToolOutput, ToolSpec,
    TurnEvent, TurnOptions,
};
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::types::{TurnStatus, UserInput};
use codex_pool_store::{SqliteStore, ThreadStore};
use codex_pool_testkit::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

fn tool(name: &str) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: format!("The {name} of a city."),
        input_schema: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    }
}

fn config(env: &Env) -> PoolConfig {
    let mut c = PoolConfig::new(env.config());
    c.size = 1;
    c
}

async fn with_tools(pool: &Pool, tools: Vec<ToolSpec>) -> ConversationId {
    pool.create_thread(ThreadSettings { dynamic_tools: tools, ..Default::default() }).await.unwrap()
}

/// Reads the turn up to its tool calls.
async fn calls_of(turn: &mut PoolTurn) -> Vec<ToolCall> {
    let read = async {
        while let Some(event) = turn.next().await {
            match event {
                TurnEvent::ToolCalls { calls } => return calls,
                e if e.is_terminal() => panic!("the turn ended before its tool calls: {e:?}"),
                _ => {}
            }
        }
        panic!("the turn's stream ended")
    };
    tokio::time::timeout(Duration::from_secs(60), read).await.expect("the model calls the tools")
}

async fn ask(pool: &Pool, id: &ConversationId, text: &str) -> PoolTurn {
    pool.start_turn(id, vec![UserInput::text(text)], TurnOptions::default()).await.unwrap()
}

async fn end_of(turn: PoolTurn) -> (String, TurnEvent) {
    tokio::time::timeout(Duration::from_secs(60), turn.collect_text()).await.expect("the turn ends")
}

/// The stored history's items of a type.
async fn stored(store: &dyn ThreadStore, id: &ConversationId, kind: &str) -> Vec<Value> {
    store.history(id).await.unwrap().into_iter().filter(|i| i["type"] == kind).collect()
}

/// Checks what the store holds of a conversation whose one call got `output`: the call once,
/// its output once (the client's, not a cancellation), no pending call, no aborted-turn note.
async fn assert_clean(store: &dyn ThreadStore, id: &ConversationId, call: &ToolCall, output: &str) {
    let calls = stored(store, id, "function_call").await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["call_id"], call.call_id.as_str());
    let outputs = stored(store, id, "function_call_output").await;
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    assert_eq!((&outputs[0]["call_id"], &outputs[0]["output"]), (&json!(call.call_id), &json!(output)));
    let history = serde_json::to_string(&store.history(id).await.unwrap()).unwrap();
    assert!(!history.contains("turn_aborted") && !history.contains("cancelled"), "{history}");
    assert!(store.load(id).await.unwrap().unwrap().pending_calls.is_empty());
}

/// The model's last request holds the call and the output exactly once each.
fn assert_model_saw_once(env: &Env, call: &ToolCall) {
    let last = env.mock.requests().last().unwrap().body.clone();
    let input = last["input"].as_array().unwrap();
    let count =
        |kind: &str| input.iter().filter(|i| i["type"] == kind && i["call_id"] == call.call_id.as_str()).count();
    assert_eq!((count("function_call"), count("function_call_output")), (1, 1), "{input:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiting_turn_takes_the_outputs_and_goes_on() {
    let env = Env::new().await;
    let store = Arc::new(SqliteStore::open(env.dir.path().join("db.sqlite")).unwrap());
    let pool = Pool::new(config(&env), store.clone());
    pool.ensure_started().await.unwrap();
    let id = with_tools(&pool, vec![tool("weather"), tool("time")]).await;
    let mut turn = ask(&pool, &id, r#"two [mock:tool=weather {"city":"Oslo"}] [mock:tool=time {"city":"Oslo"}]"#).await;
    let calls = calls_of(&mut turn).await;
    assert_eq!(calls.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["weather", "time"]);
    // In the chat profile the model is offered the client's tools and none of codex's own.
    let first = env.requests_with("two [mock:tool=weather").remove(0);
    let offered: Vec<_> = first["tools"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(offered, ["weather", "time"]);
    // Stored before the client heard of them, pending and since when.
    let record = store.load(&id).await.unwrap().unwrap();
    let pending: Vec<_> = record.pending_calls.iter().map(|p| p.call_id.clone()).collect();
    assert_eq!(pending, calls.iter().map(|c| c.call_id.clone()).collect::<Vec<_>>());
    assert!(record.pending_calls[0].since_ms > 0);
    // A new message now would leave them unanswered.
    let refused = pool.start_turn(&id, vec![UserInput::text("and?")], TurnOptions::default()).await;
    assert!(matches!(&refused, Err(PoolError::ToolCallsPending { calls, .. }) if calls.len() == 2), "{refused:?}");
    // An output for no pending call changes nothing.
    let unknown = pool.submit_tool_outputs(&id, vec![ToolOutput::text("nope", "x")], TurnOptions::default()).await;
    assert!(matches!(unknown, Err(PoolError::UnknownToolCalls { .. })), "{unknown:?}");

    let outputs = vec![ToolOutput::text(&calls[1].call_id, "noon"), ToolOutput::text(&calls[0].call_id, "snow")];
    let taken = pool.submit_tool_outputs(&id, outputs, TurnOptions::default()).await.unwrap();
    assert!(matches!(taken, Submitted::Running { .. }), "{taken:?}");
    let (text, end) = end_of(turn).await;
    assert_eq!(text, "tool output: snow; noon");
    assert!(matches!(end, TurnEvent::Completed { status: TurnStatus::Completed, .. }), "{end:?}");
    assert_eq!(stored(&*store, &id, "function_call").await.len(), 2);
    assert_eq!(stored(&*store, &id, "function_call_output").await.len(), 2);
    assert!(store.load(&id).await.unwrap().unwrap().pending_calls.is_empty());
    let (text, _) = end_of(ask(&pool, &id, "thanks").await).await;
    assert_eq!(text, "echo: thanks");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_after_a_kill_9_of_the_waiting_process_continues_from_the_store() {
    let env = Env::new().await;
    let store = Arc::new(SqliteStore::open(env.dir.path().join("db.sqlite")).unwrap());
    let pool = Pool::new(config(&env), store.clone());
    pool.ensure_started().await.unwrap();
    let id = with_tools(&pool, vec![tool("weather")]).await;
    let mut turn = ask(&pool, &id, r#"w [mock:tool=weather {"city":"Rome"}]"#).await;
    let call = calls_of(&mut turn).await.remove(0);
    let victim = pool.stats().slots[0].pid.unwrap();
    kill(victim, libc::SIGKILL);
    let (_, end) = end_of(turn).await;
    assert!(matches!(end, TurnEvent::Aborted { reason: AbortReason::ProcessExited, .. }), "{end:?}");
    wait_until("the process is replaced", Duration::from_secs(20), || {
        pool.stats().slots[0].pid.is_some_and(|pid| pid != victim)
    })
    .await;
    let output = vec![ToolOutput::text(&call.call_id, "sunny")];
    let Submitted::Continued(continued) = pool.submit_tool_outputs(&id, output, TurnOptions::default()).await.unwrap()
    else {
        panic!("no turn waits any more")
    };
    let (text, end) = end_of(*continued).await;
    assert_eq!(text, "tool output: sunny");
    assert!(matches!(end, TurnEvent::Completed { status: TurnStatus::Completed, .. }), "{end:?}");
    assert_clean(&*store, &id, &call, "sunny").await;
    assert_model_saw_once(&env, &call);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_unanswered_past_its_limit_lets_go_and_a_late_output_still_continues() {
    let env = Env::new().await;
    let store = Arc::new(SqliteStore::open(env.dir.path().join("db.sqlite")).unwrap());
    let mut c = config(&env);
    c.tool_call_timeout = Duration::from_millis(500);
    let pool = Pool::new(c, store.clone());
    pool.ensure_started().await.unwrap();
    let id = with_tools(&pool, vec![tool("weather")]).await;
    let mut turn = ask(&pool, &id, r#"w [mock:tool=weather {"city":"Lima"}]"#).await;
    let call = calls_of(&mut turn).await.remove(0);
    let (_, end) = end_of(turn).await;
    assert!(matches!(end, TurnEvent::Aborted { reason: AbortReason::ToolCallTimeout, .. }), "{end:?}");
    // Still pending, in the store, with nothing false written.
    assert_eq!(store.load(&id).await.unwrap().unwrap().pending_calls.len(), 1);
    assert!(stored(&*store, &id, "function_call_output").await.is_empty());

    let output = vec![ToolOutput::text(&call.call_id, "mild")];
    let Submitted::Continued(continued) = pool.submit_tool_outputs(&id, output, TurnOptions::default()).await.unwrap()
    else {
        panic!("the turn let go")
    };
    assert_eq!(end_of(*continued).await.0, "tool output: mild");
    assert_clean(&*store, &id, &call, "mild").await;
    assert_model_saw_once(&env, &call);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_after_a_restart_continues_and_a_changed_tool_list_rebuilds() {
    let env = Env::new().await;
    let path = env.dir.path().join("db.sqlite");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let pool = Pool::new(config(&env), store.clone());
    pool.ensure_started().await.unwrap();
    let id = with_tools(&pool, vec![tool("weather")]).await;
    let mut turn = ask(&pool, &id, r#"w [mock:tool=weather {"city":"Kyiv"}]"#).await;
    let call = calls_of(&mut turn).await.remove(0);
    drop(turn);
    pool.shutdown().await;
    drop(pool);
    drop(store);

    // A new pool on the same store; the client also adds a tool.
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let pool = Pool::new(config(&env), store.clone());
    pool.ensure_started().await.unwrap();
    let mut options = TurnOptions::default();
    options.tools = Some(vec![tool("weather"), tool("news")]);
    let output = vec![ToolOutput::text(&call.call_id, "cold")];
    let Submitted::Continued(continued) = pool.submit_tool_outputs(&id, output, options).await.unwrap() else {
        panic!("a new pool has no waiting turn")
    };
    assert_eq!(end_of(*continued).await.0, "tool output: cold");
    assert_clean(&*store, &id, &call, "cold").await;
    assert_model_saw_once(&env, &call);
    let last = env.mock.requests().last().unwrap().body.clone();
    let names: Vec<_> = last["tools"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.contains(&"news") && names.contains(&"weather"), "{names:?}");
    let settings = store.load(&id).await.unwrap().unwrap().settings;
    assert_eq!(settings.dynamic_tools.len(), 2);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tools_cannot_take_codex_s_names() {
    let env = Env::new().await;
    let pool = Pool::new(config(&env), Arc::new(codex_pool_store::MemoryStore::new()));
    pool.ensure_started().await.unwrap();
    let refused = pool.create_thread(ThreadSettings { dynamic_tools: vec![tool("shell")], ..Default::default() }).await;
    assert!(matches!(&refused, Err(PoolError::InvalidRequest(m)) if m.contains("shell")), "{refused:?}");
    let twice =
        pool.create_thread(ThreadSettings { dynamic_tools: vec![tool("a"), tool("a")], ..Default::default() }).await;
    assert!(matches!(twice, Err(PoolError::InvalidRequest(_))), "{twice:?}");
    let id = pool.create_thread(ThreadSettings::default()).await.unwrap();
    let mut options = TurnOptions::default();
    options.tools = Some(vec![tool("exec_command")]);
    let refused = pool.start_turn(&id, vec![UserInput::text("x")], options).await;
    assert!(matches!(&refused, Err(PoolError::InvalidRequest(m)) if m.contains("exec_command")), "{refused:?}");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_wait_keeps_nothing_of_codex_s_cancellation_and_the_outputs_still_continue() {
    let env = Env::new().await;
    let store = Arc::new(SqliteStore::open(env.dir.path().join("db.sqlite")).unwrap());
    let pool = Pool::new(config(&env), store.clone());
    pool.ensure_started().await.unwrap();
    let id = with_tools(&pool, vec![tool("weather")]).await;
    let mut turn = ask(&pool, &id, r#"w [mock:tool=weather {"city":"Graz"}]"#).await;
    let call = calls_of(&mut turn).await.remove(0);
    pool.interrupt_turn(&id).await.unwrap();
    let (_, end) = end_of(turn).await;
    assert!(matches!(end, TurnEvent::Completed { status: TurnStatus::Interrupted, .. }), "{end:?}");
    assert_eq!(store.load(&id).await.unwrap().unwrap().pending_calls.len(), 1);
    assert!(stored(&*store, &id, "function_call_output").await.is_empty());

    let output = vec![ToolOutput::text(&call.call_id, "rain")];
    let Submitted::Continued(continued) = pool.submit_tool_outputs(&id, output, TurnOptions::default()).await.unwrap()
    else {
        panic!("the interrupted turn waits no more")
    };
    assert_eq!(end_of(*continued).await.0, "tool output: rain");
    assert_clean(&*store, &id, &call, "rain").await;
    assert_model_saw_once(&env, &call);
    pool.shutdown().await;
}
