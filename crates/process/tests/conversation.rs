//! The real pinned `codex app-server` against the fake model: conversations, concurrency,
//! interrupts, server requests.

use codex_pool_testkit as common;

use codex_pool_process::TurnEvent;
use codex_pool_protocol::methods::{ThreadStartParams, TurnStartParams};
use codex_pool_protocol::types::{TurnStatus, UserInput};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_turn_conversation_carries_history() {
    let env = Env::new().await;
    let server = env.spawn().await;
    let codex = server.handle().clone();
    let thread = codex.start_thread(&ThreadStartParams::default()).await.unwrap().thread;

    let turn = codex.start_turn(TurnStartParams::new(&thread.id, vec![UserInput::text("alpha")])).await.unwrap();
    let (text, end, events) = finish(turn).await;
    assert_eq!(text, "echo: alpha");
    assert!(matches!(end, TurnEvent::Completed { status: TurnStatus::Completed, .. }), "{end:?}");
    assert!(matches!(events.first(), Some(TurnEvent::Started { .. })), "{events:?}");

    let turn = codex.start_turn(TurnStartParams::new(&thread.id, vec![UserInput::text("beta")])).await.unwrap();
    let (text, _, _) = finish(turn).await;
    assert_eq!(text, "echo: beta");

    let second = env.requests_with("beta");
    assert_eq!(second.len(), 1);
    let msgs = messages(&second[0]);
    assert!(msgs.iter().any(|(r, t)| r == "user" && t == "alpha"), "{msgs:?}");
    assert!(msgs.iter().any(|(r, t)| r == "assistant" && t == "echo: alpha"), "{msgs:?}");
    server.shutdown(SHUTDOWN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_turns_on_one_process_never_mix() {
    let env = Env::new().await;
    let server = env.spawn().await;
    let codex = server.handle().clone();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let codex = codex.clone();
        tasks.spawn(async move {
            let thread = codex.start_thread(&ThreadStartParams::default()).await.unwrap().thread;
            let word = format!("conversation-{i} [mock:deltas=8] [mock:delay_ms=5]");
            let turn = codex.start_turn(TurnStartParams::new(&thread.id, vec![UserInput::text(&word)])).await.unwrap();
            let (text, end, events) = finish(turn).await;
            (word, text, end, events)
        });
    }
    let mut n = 0;
    while let Some(done) = tasks.join_next().await {
        let (word, text, end, events) = done.unwrap();
        assert_eq!(text, format!("echo: {word}"), "a stream got text of another turn");
        assert!(matches!(end, TurnEvent::Completed { status: TurnStatus::Completed, .. }), "{end:?}");
        let completed_items: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                TurnEvent::ItemCompleted { item } if item["type"] == "agentMessage" => item["text"].as_str(),
                _ => None,
            })
            .collect();
        assert_eq!(completed_items, vec![text.as_str()]);
        n += 1;
    }
    assert_eq!(n, 20);
    server.shutdown(SHUTDOWN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_ends_a_slow_turn_quickly() {
    let env = Env::new().await;
    let server = env.spawn().await;
    let codex = server.handle().clone();
    let thread = codex.start_thread(&ThreadStartParams::default()).await.unwrap().thread;
    // 100 deltas, 100 ms apart: ten seconds if left alone.
    let slow = "slow [mock:deltas=100] [mock:delay_ms=100]";
    let mut turn = codex.start_turn(TurnStartParams::new(&thread.id, vec![UserInput::text(slow)])).await.unwrap();
    // Wait for the reply to start streaming.
    loop {
        match turn.next().await.expect("turn goes on") {
            TurnEvent::AgentMessageDelta { .. } => break,
            e => assert!(!e.is_terminal(), "{e:?}"),
        }
    }
    let asked = std::time::Instant::now();
    codex.interrupt(&thread.id).await.unwrap();
    let (_, end, _) = finish(turn).await;
    let took = asked.elapsed();
    assert!(matches!(end, TurnEvent::Completed { status: TurnStatus::Interrupted, .. }), "{end:?}");
    println!("interrupt took {took:?}");
    assert!(took < std::time::Duration::from_secs(1), "interrupt took {took:?}");

    // The thread takes a new turn afterwards.
    let turn = codex.start_turn(TurnStartParams::new(&thread.id, vec![UserInput::text("after")])).await.unwrap();
    assert_eq!(finish(turn).await.0, "echo: after");
    server.shutdown(SHUTDOWN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_turn_on_a_busy_thread_is_refused() {
    let env = Env::new().await;
    let server = env.spawn().await;
    let codex = server.handle().clone();
    let thread = codex.start_thread(&ThreadStartParams::default()).await.unwrap().thread;
    let slow = "slow [mock:deltas=20] [mock:delay_ms=50]";
    let turn = codex.start_turn(TurnStartParams::new(&thread.id, vec![UserInput::text(slow)])).await.unwrap();
    let err = codex.start_turn(TurnStartParams::new(&thread.id, vec![UserInput::text("x")])).await.unwrap_err();
    assert!(matches!(err, codex_pool_process::ProcessError::ThreadBusy { .. }), "{err}");
    let (text, _, _) = finish(turn).await;
    assert_eq!(text, format!("echo: {slow}"));
    server.shutdown(SHUTDOWN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_skills_text_reaches_the_model() {
    let env = Env::new().await;
    let server = env.spawn().await;
    let codex = server.handle().clone();
    let thread = codex.start_thread(&ThreadStartParams::default()).await.unwrap().thread;
    // Mentions that would expand into SKILL.md bodies if skills were loaded.
    for text in ["hello", "use $imagegen and $skill-creator please"] {
        let turn = codex.start_turn(TurnStartParams::new(&thread.id, vec![UserInput::text(text)])).await.unwrap();
        finish(turn).await;
    }
    let requests = env.mock.requests();
    assert_eq!(requests.len(), 2);
    for r in requests {
        let body = r.body.to_string();
        for needle in ["skills_instructions", "SKILL.md", "<skill>", "## Skills"] {
            assert!(!body.contains(needle), "request {} carries {needle:?}", r.seq);
        }
    }
    // codex installed no system skills into its home either.
    assert!(!env.dir.path().join("codex-home/skills/.system").exists());
    server.shutdown(SHUTDOWN).await;

    // Control: without the two skills overrides, the same conversation does carry skills text,
    // so the check above can fail and the overrides are what removes it.
    let control = Env::new().await;
    let mut config = control.config();
    config.overrides.retain(|(k, _)| !k.starts_with("skills."));
    let server = codex_pool_process::AppServer::spawn(config).await.unwrap();
    let codex = server.handle().clone();
    let thread = codex.start_thread(&ThreadStartParams::default()).await.unwrap().thread;
    finish(codex.start_turn(TurnStartParams::new(&thread.id, vec![UserInput::text("hello")])).await.unwrap()).await;
    assert!(control.mock.requests()[0].body.to_string().contains("skills_instructions"));
    server.shutdown(SHUTDOWN).await;
}

/// On a thread whose approval policy is `untrusted`, has the fake model call `exec_command` to
/// create `file` (so codex must ask the client first); returns the finished turn.
async fn run_a_command_needing_approval(
    codex: &codex_pool_process::AppServerHandle,
    file: &str,
) -> (String, TurnEvent, Vec<TurnEvent>) {
    use codex_pool_protocol::methods::ThreadSettings;
    use codex_pool_protocol::types::ApprovalPolicy;
    let params = ThreadStartParams {
        settings: ThreadSettings { approval_policy: Some(ApprovalPolicy::Untrusted), ..Default::default() },
        ..Default::default()
    };
    let thread = codex.start_thread(&params).await.unwrap().thread;
    let ask = format!(r#"run it [mock:tool=exec_command {{"cmd":"touch {file}"}}]"#);
    finish(codex.start_turn(TurnStartParams::new(&thread.id, vec![UserInput::text(ask)])).await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_request_is_declined_by_policy_and_the_turn_completes() {
    let env = Env::new().await;
    let server = env.spawn().await;
    let codex = server.handle().clone();
    let (text, end, events) = run_a_command_needing_approval(&codex, "approved.txt").await;
    assert!(matches!(end, TurnEvent::Completed { status: TurnStatus::Completed, .. }), "{end:?}");
    let asked: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            TurnEvent::ServerRequest { method, answer, .. } => Some((method.as_str(), answer)),
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 1, "{events:?}");
    assert_eq!(asked[0].0, "item/commandExecution/requestApproval");
    assert_eq!(asked[0].1["result"]["decision"], "decline");
    // The model was told the command was rejected, and answered with that.
    assert!(text.starts_with("tool output:"), "{text}");
    assert!(text.contains("rejected"), "{text}");
    assert!(!env.dir.path().join("empty/approved.txt").exists(), "the declined command ran");
    server.shutdown(SHUTDOWN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_failures_end_the_turn_as_failed_and_the_thread_goes_on() {
    let env = Env::new().await;
    let server = env.spawn().await;
    let codex = server.handle().clone();
    let thread = codex.start_thread(&ThreadStartParams::default()).await.unwrap().thread;
    for fault in ["[mock:fail=500]", "[mock:fail=429]", "[mock:cut]"] {
        let turn = codex.start_turn(TurnStartParams::new(&thread.id, vec![UserInput::text(fault)])).await.unwrap();
        let (_, end, events) = finish(turn).await;
        match end {
            TurnEvent::Completed { status: TurnStatus::Failed, error: Some(error), .. } => {
                assert!(!error.message.is_empty(), "{fault}");
            }
            other => panic!("{fault}: expected a failed turn, got {other:?} after {events:?}"),
        }
    }
    let turn = codex.start_turn(TurnStartParams::new(&thread.id, vec![UserInput::text("fine")])).await.unwrap();
    assert_eq!(finish(turn).await.0, "echo: fine");
    server.shutdown(SHUTDOWN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_request_handler_still_gets_the_request_answered() {
    use codex_pool_process::{AppServer, BoxFuture, ServerRequestHandler};
    use codex_pool_protocol::server_requests::ServerRequest;
    use codex_pool_protocol::RpcError;
    use std::sync::Arc;

    struct Panics;
    impl ServerRequestHandler for Panics {
        fn handle(&self, _: ServerRequest) -> BoxFuture<Result<serde_json::Value, RpcError>> {
            Box::pin(async { panic!("handler bug") })
        }
    }
    let env = Env::new().await;
    let mut config = env.config();
    config.handler = Arc::new(Panics);
    let server = AppServer::spawn(config).await.unwrap();
    let codex = server.handle().clone();
    let (_, end, events) = run_a_command_needing_approval(&codex, "x.txt").await;
    assert!(matches!(end, TurnEvent::Completed { status: TurnStatus::Completed, .. }), "{end:?}");
    assert!(events
        .iter()
        .any(|e| matches!(e, TurnEvent::ServerRequest { answer, .. } if answer.get("error").is_some())));
    server.shutdown(SHUTDOWN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_refuses_remote_image_urls_so_they_are_refused_before_they_are_sent() {
    use codex_pool_process::ProcessError;
    use codex_pool_protocol::methods::TurnStart;
    let env = Env::new().await;
    let server = env.spawn().await;
    let codex = server.handle().clone();
    let thread = codex.start_thread(&ThreadStartParams::default()).await.unwrap().thread;
    let image = |url: &str| vec![UserInput::text("look"), UserInput::Image { url: url.to_owned() }];
    // What codex itself answers, sent around the check: an invalid request (-32600).
    for url in ["https://example.com/cat.png", "http://example.com/cat.png"] {
        let raw = codex.request::<TurnStart>(&TurnStartParams::new(&thread.id, image(url))).await;
        let Err(ProcessError::Rpc { error, .. }) = raw else { panic!("codex took {url}: {raw:?}") };
        assert_eq!(error.code, -32600, "{error:?}");
        assert!(error.message.contains("remote image URLs are not supported"), "{error:?}");
    }
    // The check refuses every URL but `data:` before anything is sent, without quoting it.
    for url in ["https://example.com/cat.png", "ftp://example.com/cat.png", "cat.png"] {
        let err = codex.start_turn(TurnStartParams::new(&thread.id, image(url))).await.unwrap_err();
        let ProcessError::InvalidInput(message) = &err else { panic!("{err:?}") };
        assert!(message.contains("data:image/png;base64") && !message.contains("cat.png"), "{message}");
    }
    // The thread goes on.
    let turn = codex.start_turn(TurnStartParams::new(&thread.id, vec![UserInput::text("after")])).await.unwrap();
    assert_eq!(finish(turn).await.0, "echo: after");
    server.shutdown(SHUTDOWN).await;
}

/// The fake model's parallel calls (several `[mock:tool=...]` in one message) through the real
/// codex: one model response with two calls, both run, and the next request carries each call
/// and each output once, which the model answers with both outputs in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tool_calls_in_one_response_both_run_and_the_model_sees_each_once() {
    use codex_pool_protocol::methods::ThreadSettings;
    use codex_pool_protocol::types::ApprovalPolicy;
    let env = Env::new().await;
    let server = env.spawn().await;
    let codex = server.handle().clone();
    let params = ThreadStartParams {
        settings: ThreadSettings { approval_policy: Some(ApprovalPolicy::Never), ..Default::default() },
        ..Default::default()
    };
    let thread = codex.start_thread(&params).await.unwrap().thread;
    let ask = r#"both [mock:tool=exec_command {"cmd":"echo first-call"}] [mock:tool=exec_command {"cmd":"echo second-call"}]"#;
    let (text, end, _) =
        finish(codex.start_turn(TurnStartParams::new(&thread.id, vec![UserInput::text(ask)])).await.unwrap()).await;
    assert!(matches!(end, TurnEvent::Completed { status: TurnStatus::Completed, .. }), "{end:?}");
    let (first, second) = (text.find("first-call"), text.find("second-call"));
    assert!(text.starts_with("tool output:") && text.contains("; "), "{text}");
    assert!(first.is_some() && second.is_some() && first < second, "{text}");
    // Two model requests: the calls, then the outputs.
    let requests = env.requests_with("both [mock:tool");
    assert_eq!(requests.len(), 2, "{requests:?}");
    let input = requests[1]["input"].as_array().unwrap();
    let ids = |kind: &str| -> Vec<String> {
        input.iter().filter(|i| i["type"] == kind).map(|i| i["call_id"].as_str().unwrap().to_owned()).collect()
    };
    let (calls, outputs) = (ids("function_call"), ids("function_call_output"));
    assert_eq!(calls.len(), 2, "{input:?}");
    assert_ne!(calls[0], calls[1], "each call has its own id");
    assert!(calls.iter().all(|id| id.starts_with("call_mock_")), "{calls:?}");
    assert_eq!(outputs, calls, "each call's output once, in the calls' order");
    server.shutdown(SHUTDOWN).await;
}
