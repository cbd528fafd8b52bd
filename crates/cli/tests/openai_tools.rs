//! Function calling on `codex-pool serve` through real clients: the official `openai` Python
//! package (Responses and Chat Completions, streamed and not, one call and two parallel calls)
//! and the OpenAI Agents SDK (an Agent with a `@function_tool`, through `OpenAIResponsesModel`
//! and `OpenAIChatCompletionsModel`), against the real binary, the real pinned codex and the
//! fake model, whose recorded requests show that the model saw each call and each output once.

mod common;

use codex_pool_mock_model::{MockConfig, MockModel};
use common::{python_script, serve, venv};
use serde_json::{json, Value};
use std::process::Command;

/// The model requests that answer `call_id`: those whose input ends with outputs, one of them
/// for `call_id`.
fn answering(model: &MockModel, call_id: &str) -> Vec<Value> {
    let trailing_output_of = |body: &Value| {
        let items = body["input"].as_array().cloned().unwrap_or_default();
        let mut trailing = items.iter().rev().take_while(|i| i["type"] == "function_call_output");
        trailing.any(|i| i["call_id"] == call_id)
    };
    model.requests().into_iter().map(|r| r.body).filter(trailing_output_of).collect()
}

/// How many `function_call` and `function_call_output` items of `call_id` a model request has.
fn seen(body: &Value, call_id: &str) -> (usize, usize) {
    let items = body["input"].as_array().cloned().unwrap_or_default();
    let of = |kind: &str| items.iter().filter(|i| i["type"] == kind && i["call_id"] == call_id).count();
    (of("function_call"), of("function_call_output"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_clients_and_the_agents_sdk_call_tools_and_the_model_sees_each_call_and_output_once() {
    let Some(venv) = venv() else { return };
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let served = serve(data.path(), &model.base_url());
    served.ready().await;
    let (python, script) = (venv.join("bin/python"), python_script("tools_client.py"));
    let base = format!("{}/v1", served.client.base());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python).arg(script).arg(base).current_dir(std::env::temp_dir()).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let cases: Value = serde_json::from_str(&stdout).unwrap();
    let names = [
        "responses_one",
        "responses_two",
        "chat_one",
        "chat_two",
        "agents_responses",
        "agents_chat",
        "agents_required",
    ];
    for name in names {
        let calls = cases[name].as_array().unwrap_or_else(|| panic!("{name} missing: {cases}"));
        assert!(!calls.is_empty(), "{name}");
        for call in calls {
            let call = call.as_str().unwrap();
            let requests = answering(&model, call);
            assert_eq!(requests.len(), 1, "{name}: one model request answers {call}");
            assert_eq!(seen(&requests[0], call), (1, 1), "{name}: {call} once, its output once");
        }
    }
    let (status, _, _) = tokio::task::spawn_blocking(move || served.terminate()).await.unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_resent_by_a_stateless_client_after_a_restart_continue_the_conversation() {
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let served = serve(data.path(), &model.base_url());
    served.ready().await;
    let tools = json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]);
    let user = json!({"role": "user", "content": "before the restart [mock:tool=get_weather {\"city\":\"Oslo\"}]"});
    let ask = json!({"model": "mock-model", "input": [user], "tools": tools, "instructions": "Use tools."});
    let first = served.client.post("/v1/responses", ask).await.unwrap().json().unwrap();
    let call = first["output"][0].clone();
    let call_id = call["call_id"].as_str().unwrap().to_owned();
    let (status, _, _) = tokio::task::spawn_blocking(move || served.terminate()).await.unwrap();
    assert!(status.success());

    let served = serve(data.path(), &model.base_url());
    served.ready().await;
    let output = json!({"type": "function_call_output", "call_id": call_id, "output": "sunny"});
    let next =
        json!({"model": "mock-model", "input": [user, call, output], "tools": tools, "instructions": "Use tools."});
    let second = served.client.post("/v1/responses", next).await.unwrap().json().unwrap();
    assert_eq!(second["output"][0]["content"][0]["text"], "tool output: sunny", "{second}");
    let conversation = |r: &Value| r["id"].as_str().unwrap().split('_').nth(1).unwrap().to_owned();
    assert_eq!(conversation(&second), conversation(&first), "the same conversation, continued from the store");
    let requests = answering(&model, &call_id);
    assert_eq!(requests.len(), 1);
    assert_eq!(seen(&requests[0], &call_id), (1, 1), "the call and its output once each");
    let again = served.client.get(&format!("/v1/responses/{}", second["id"].as_str().unwrap())).await;
    assert_eq!(again.unwrap().json().unwrap()["output"][0]["content"][0]["text"], "tool output: sunny");
    let (status, _, _) = tokio::task::spawn_blocking(move || served.terminate()).await.unwrap();
    assert!(status.success());
}

/// Runs one step of `tests/python/tools_recovery.py` (the official `openai` package) and reads
/// what it prints.
async fn recovery_step(venv: &std::path::Path, args: Vec<String>) -> Value {
    let (python, script) = (venv.join("bin/python"), python_script("tools_recovery.py"));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python).arg(script).args(args).current_dir(std::env::temp_dir()).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_client_s_output_after_a_kill_9_of_codex_and_after_a_restart_continues_the_turn() {
    let Some(venv) = venv() else { return };
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let served = serve(data.path(), &model.base_url());
    served.ready().await;
    let base = format!("{}/v1", served.client.base());
    let ask = |base: &str, city: &str| vec!["ask".to_owned(), base.to_owned(), city.to_owned()];
    let answer = |base: &str, asked: &Value, output: &str| {
        let field = |k: &str| asked[k].as_str().unwrap().to_owned();
        vec!["answer".to_owned(), base.to_owned(), field("response_id"), field("call_id"), output.to_owned()]
    };

    // The codex process that waits on the call is killed: the output continues the turn from
    // the store, on its replacement.
    let asked = recovery_step(&venv, ask(&base, "Oslo")).await;
    let pool = served.client.get("/v1/pool").await.unwrap().json().unwrap();
    let codex = pool["processes"][0]["pid"].as_u64().unwrap() as u32;
    codex_pool_testkit::kill(codex, libc::SIGKILL);
    let done = recovery_step(&venv, answer(&base, &asked, "snow")).await;
    assert_eq!(done["text"], "tool output: snow", "{done}");
    let call = asked["call_id"].as_str().unwrap();
    assert_eq!(seen(&model.requests().last().unwrap().body, call), (1, 1), "the call and its output once each");

    // The service itself restarts while a call waits: the output, sent to the new one, goes on.
    let asked = recovery_step(&venv, ask(&base, "Rome")).await;
    let (status, _, _) = tokio::task::spawn_blocking(move || served.terminate()).await.unwrap();
    assert!(status.success());
    let served = serve(data.path(), &model.base_url());
    served.ready().await;
    let base = format!("{}/v1", served.client.base());
    let done = recovery_step(&venv, answer(&base, &asked, "sun")).await;
    assert_eq!(done["text"], "tool output: sun", "{done}");
    let call = asked["call_id"].as_str().unwrap();
    assert_eq!(seen(&model.requests().last().unwrap().body, call), (1, 1), "the call and its output once each");
    let (status, _, _) = tokio::task::spawn_blocking(move || served.terminate()).await.unwrap();
    assert!(status.success());
}
