//! The actor driven over in-memory pipes by a scripted peer that plays codex, on paused time:
//! no codex needed, and timeouts of seconds take no time.

use crate::child::StderrTail;
use crate::config::ProcessConfig;
use crate::error::{ExitReason, ProcessError};
use crate::events::{AbortReason, TurnEvent};
use crate::handle::AppServerHandle;
use crate::lines::{Line, LineReader};
use crate::process::{wire, Connection};
use crate::turn::TurnStream;
use codex_pool_protocol::methods::TurnStartParams;
use codex_pool_protocol::types::{TurnStatus, UserInput};
use codex_pool_protocol::CodexThreadId;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The far end of the pipes: reads what the actor writes, writes what codex would.
struct Peer {
    requests: LineReader<BufReader<DuplexStream>>,
    replies: DuplexStream,
}

impl Peer {
    /// The next message the actor wrote.
    async fn recv(&mut self) -> Value {
        match self.requests.next_line().await.unwrap() {
            Some(Line::Complete(bytes)) => serde_json::from_slice(&bytes).unwrap(),
            other => panic!("expected a line, got {other:?}"),
        }
    }

    /// The next message, which must be a request for `method`; returns its id and params.
    async fn expect(&mut self, method: &str) -> (Value, Value) {
        let msg = self.recv().await;
        assert_eq!(msg["method"], method, "{msg}");
        (msg["id"].clone(), msg["params"].clone())
    }

    /// Whether the actor writes nothing for `wait` (paused time: only timers move it).
    async fn silent_for(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.recv()).await.is_err()
    }

    async fn send(&mut self, msg: Value) {
        self.raw(&serde_json::to_vec(&msg).unwrap()).await;
    }

    async fn raw(&mut self, bytes: &[u8]) {
        self.replies.write_all(bytes).await.unwrap();
        self.replies.write_all(b"\n").await.unwrap();
    }

    async fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({"method": method, "params": params})).await;
    }

    /// Answers `turn/start` (request `id`) with turn `turn`.
    async fn turn_started(&mut self, id: Value, turn: &str) {
        self.send(json!({"id": id, "result": {"turn": {"id": turn, "status": "inProgress", "items": []}}})).await;
    }

    async fn delta(&mut self, turn: &str, text: &str) {
        let params = json!({"threadId": "t", "turnId": turn, "itemId": "i", "delta": text});
        self.notify("item/agentMessage/delta", params).await;
    }

    async fn completed(&mut self, turn: &str, status: &str) {
        let params = json!({"threadId": "t", "turn": {"id": turn, "status": status, "items": []}});
        self.notify("turn/completed", params).await;
    }
}

struct Rig {
    handle: AppServerHandle,
    peer: Peer,
    _reaped: watch::Sender<Option<ExitReason>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn rig_with(config: impl FnOnce(&mut ProcessConfig)) -> Rig {
    rig_over(1 << 16, config)
}

/// A rig whose pipe to the peer holds `pipe` bytes.
fn rig_over(pipe: usize, config: impl FnOnce(&mut ProcessConfig)) -> Rig {
    let mut c = ProcessConfig::new("codex".into(), "/nonexistent/home".into(), "/nonexistent/work".into());
    c.endpoint = Some("provider \"mock\" at http://127.0.0.1:9/v1".into());
    config(&mut c);
    let (actor_out, peer_in) = tokio::io::duplex(pipe);
    let (peer_out, actor_in) = tokio::io::duplex(1 << 16);
    let (reaped_tx, reaped) = watch::channel(None);
    let stderr_tail: StderrTail = Default::default();
    let conn = Connection { stdout: actor_in, stdin: actor_out, reaped, stderr_tail, pid: 0, label: "test".into() };
    let (handle, tasks) = wire(&c, conn);
    let peer = Peer { requests: LineReader::new(BufReader::new(peer_in), 1 << 20), replies: peer_out };
    Rig { handle, peer, _reaped: reaped_tx, tasks }
}

fn rig() -> Rig {
    rig_with(|_| {})
}

fn thread() -> CodexThreadId {
    CodexThreadId::from("t")
}

fn turn_params(text: &str) -> TurnStartParams {
    TurnStartParams::new("t", vec![UserInput::text(text)])
}

/// Starts a turn that the peer accepts as `turn` (with `turn/started` when `confirm`).
async fn start(rig: &mut Rig, turn: &str, confirm: bool) -> TurnStream {
    let handle = rig.handle.clone();
    let starting = tokio::spawn(async move { handle.start_turn(turn_params("hi")).await });
    let (id, params) = rig.peer.expect("turn/start").await;
    assert_eq!(params["threadId"], "t");
    rig.peer.turn_started(id, turn).await;
    if confirm {
        let params = json!({"threadId": "t", "turn": {"id": turn, "status": "inProgress", "items": []}});
        rig.peer.notify("turn/started", params).await;
    }
    starting.await.unwrap().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_silent_turn_is_interrupted_and_ends_with_a_timeout() {
    let mut rig = rig();
    let mut turn = start(&mut rig, "u1", true).await.with_silence_timeout(Duration::from_secs(30));
    assert!(matches!(turn.next().await, Some(TurnEvent::Started { .. })));
    let began = tokio::time::Instant::now();
    let end = turn.next().await.unwrap();
    assert!(matches!(end, TurnEvent::Aborted { reason: AbortReason::Timeout, .. }), "{end:?}");
    assert_eq!(began.elapsed(), Duration::from_secs(30));
    let (_, params) = rig.peer.expect("turn/interrupt").await;
    assert_eq!(params, json!({"threadId": "t", "turnId": "u1"}));
    assert!(turn.next().await.is_none(), "nothing after the terminal event");
}

#[tokio::test(start_paused = true)]
async fn retries_that_make_no_progress_end_the_turn_naming_the_endpoint() {
    let mut rig = rig();
    let mut turn = start(&mut rig, "u1", true)
        .await
        .with_silence_timeout(Duration::from_secs(120))
        .with_progress_timeout(Duration::from_secs(30));
    assert!(matches!(turn.next().await, Some(TurnEvent::Started { .. })));
    // codex announces a retry every 10 s: events, but no progress.
    let peer = &mut rig.peer;
    let retry = json!({"threadId": "t", "turnId": "u1", "willRetry": true,
        "error": {"message": "Reconnecting... 1/5 (Connection failed: error sending request)"}});
    let began = tokio::time::Instant::now();
    let (events, (end, ended_after)) = tokio::join!(
        async {
            for _ in 0..5 {
                peer.notify("error", retry.clone()).await;
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        },
        async {
            loop {
                let event = turn.next().await.unwrap();
                if event.is_terminal() {
                    return (event, began.elapsed());
                }
                assert!(matches!(event, TurnEvent::Error { will_retry: true, .. }), "{event:?}");
            }
        }
    );
    let () = events;
    // Retries every 10 s kept the silence timer quiet; the last progress was `Started`.
    assert_eq!(ended_after, Duration::from_secs(30));
    let TurnEvent::Aborted { reason: AbortReason::ModelUnreachable, message } = end else { panic!("{end:?}") };
    assert!(message.contains("http://127.0.0.1:9/v1") && message.contains("Connection failed"), "{message}");
    rig.peer.expect("turn/interrupt").await;
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_goes_silent_after_some_text_ends_as_stalled_not_unreachable() {
    let mut rig = rig();
    let mut turn = start(&mut rig, "u1", true)
        .await
        .with_silence_timeout(Duration::from_secs(120))
        .with_progress_timeout(Duration::from_secs(30));
    assert!(matches!(turn.next().await, Some(TurnEvent::Started { .. })));
    for piece in ["a", "b", "c"] {
        rig.peer.delta("u1", piece).await;
        assert!(matches!(turn.next().await, Some(TurnEvent::AgentMessageDelta { .. })));
    }
    // Then nothing at all: no retry announced, the model's stream is simply silent.
    let began = tokio::time::Instant::now();
    let end = turn.next().await.unwrap();
    assert_eq!(began.elapsed(), Duration::from_secs(30));
    let TurnEvent::Aborted { reason: AbortReason::ModelStalled, message } = end else { panic!("{end:?}") };
    assert!(message.contains("stalled") && message.contains("after 3 text deltas"), "{message}");
    assert!(message.contains("http://127.0.0.1:9/v1") && !message.contains("retrying requests"), "{message}");
    rig.peer.expect("turn/interrupt").await;
}

#[tokio::test(start_paused = true)]
async fn a_new_turn_waits_for_an_abandoned_one_until_codex_ends_it() {
    let mut rig = rig();
    let turn = start(&mut rig, "u1", true).await;
    drop(turn);
    rig.peer.expect("turn/interrupt").await;
    // A new turn of the thread is held back while codex ends the old one...
    let handle = rig.handle.clone();
    let next = tokio::spawn(async move { handle.start_turn(turn_params("next")).await });
    assert!(rig.peer.silent_for(Duration::from_secs(1)).await, "sent while the old turn ran");
    // ... and goes out as soon as it has.
    rig.peer.completed("u1", "interrupted").await;
    let (id, params) = rig.peer.expect("turn/start").await;
    assert_eq!(params["input"][0]["text"], "next");
    rig.peer.turn_started(id, "u2").await;
    let mut stream = next.await.unwrap().unwrap();
    assert!(matches!(stream.next().await, Some(TurnEvent::Started { turn_id, .. }) if turn_id.as_str() == "u2"));
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_turn_codex_never_ends_frees_its_thread_after_the_grace() {
    let mut rig = rig_with(|c| c.interrupt_grace = Duration::from_secs(5));
    let turn = start(&mut rig, "u1", true).await;
    // Off any round period: the actor wakes when the grace runs out, not on a tick after.
    tokio::time::sleep(Duration::from_millis(1234)).await;
    let dropped = tokio::time::Instant::now();
    drop(turn);
    rig.peer.expect("turn/interrupt").await;
    let handle = rig.handle.clone();
    let next = tokio::spawn(async move { handle.start_turn(turn_params("next")).await });
    rig.peer.expect("turn/start").await;
    assert_eq!(dropped.elapsed(), Duration::from_secs(5));
    // Late events of the abandoned turn reach nobody.
    rig.peer.delta("u1", "late").await;
    next.abort();
}

#[tokio::test(start_paused = true)]
async fn a_second_turn_while_one_runs_is_refused() {
    let mut rig = rig();
    let _turn = start(&mut rig, "u1", true).await;
    let err = rig.handle.start_turn(turn_params("again")).await.unwrap_err();
    assert!(matches!(err, ProcessError::ThreadBusy { ref thread_id } if *thread_id == thread()), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_consumer_that_lags_gets_its_turn_interrupted() {
    let mut rig = rig_with(|c| c.max_turn_backlog = 5);
    let mut turn = start(&mut rig, "u1", true).await;
    for n in 0..10 {
        rig.peer.delta("u1", &n.to_string()).await;
    }
    rig.peer.expect("turn/interrupt").await;
    let mut events = Vec::new();
    while let Some(e) = turn.next().await {
        events.push(e);
    }
    let end = events.last().unwrap();
    assert!(matches!(end, TurnEvent::Aborted { reason: AbortReason::ConsumerLagged, .. }), "{events:?}");
    assert!(events.len() <= 8, "delivery stopped at the limit: {events:?}");
}

#[tokio::test(start_paused = true)]
async fn events_before_the_turn_start_answer_come_after_started_in_order_and_others_are_dropped() {
    let mut rig = rig();
    let handle = rig.handle.clone();
    let starting = tokio::spawn(async move { handle.start_turn(turn_params("hi")).await });
    let (id, _) = rig.peer.expect("turn/start").await;
    rig.peer.delta("u1", "a").await;
    // Another turn's event (codex names `thread/inject_items`' items after that request).
    rig.peer.delta("inject-1", "not this turn's").await;
    rig.peer.delta("u1", "b").await;
    rig.peer.turn_started(id, "u1").await;
    rig.peer.completed("u1", "completed").await;
    let mut turn = starting.await.unwrap().unwrap();
    let mut seen = Vec::new();
    while let Some(e) = turn.next().await {
        seen.push(match e {
            TurnEvent::Started { turn_id, .. } => format!("started {turn_id}"),
            TurnEvent::AgentMessageDelta { delta, .. } => delta,
            TurnEvent::Completed { status: TurnStatus::Completed, .. } => "completed".into(),
            other => panic!("{other:?}"),
        });
    }
    assert_eq!(seen, ["started u1", "a", "b", "completed"]);
}

#[tokio::test(start_paused = true)]
async fn garbage_and_replies_to_unknown_ids_are_skipped() {
    let mut rig = rig();
    let handle = rig.handle.clone();
    let call = tokio::spawn(async move {
        handle.request::<codex_pool_protocol::methods::ThreadLoadedList>(&Default::default()).await
    });
    let (id, _) = rig.peer.expect("thread/loaded/list").await;
    rig.peer.raw(b"this is not json").await;
    rig.peer.raw(b"\x00\xff binary").await;
    rig.peer.raw(br#"{"neither":"request nor response"}"#).await;
    rig.peer.send(json!({"id": 999_999, "result": {}})).await;
    rig.peer.send(json!({"id": "a-string-id", "result": {}})).await;
    rig.peer.send(json!({"id": id, "result": {"data": ["t"]}})).await;
    let loaded = call.await.unwrap().unwrap();
    assert_eq!(loaded.data, vec![thread()]);
}

#[tokio::test(start_paused = true)]
async fn an_interrupt_waits_until_codex_has_taken_up_the_turn() {
    let mut rig = rig();
    let mut turn = start(&mut rig, "u1", false).await;
    let handle = rig.handle.clone();
    let interrupting = tokio::spawn(async move { handle.interrupt(&thread()).await });
    assert!(rig.peer.silent_for(Duration::from_secs(1)).await, "interrupt sent before turn/started");
    let params = json!({"threadId": "t", "turn": {"id": "u1", "status": "inProgress", "items": []}});
    rig.peer.notify("turn/started", params).await;
    let (id, params) = rig.peer.expect("turn/interrupt").await;
    assert_eq!(params["turnId"], "u1");
    rig.peer.send(json!({"id": id, "result": {}})).await;
    interrupting.await.unwrap().unwrap();
    rig.peer.completed("u1", "interrupted").await;
    let mut last = None;
    while let Some(e) = turn.next().await {
        last = Some(e);
    }
    assert!(matches!(last, Some(TurnEvent::Completed { status: TurnStatus::Interrupted, .. })), "{last:?}");
    let err = rig.handle.interrupt(&thread()).await.unwrap_err();
    assert!(matches!(err, ProcessError::NoActiveTurn { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn closed_stdout_ends_turns_and_refuses_requests() {
    let mut rig = rig();
    let mut turn = start(&mut rig, "u1", true).await;
    rig.peer.replies.shutdown().await.unwrap();
    let mut last = None;
    while let Some(e) = turn.next().await {
        last = Some(e);
    }
    assert!(matches!(last, Some(TurnEvent::Aborted { reason: AbortReason::ProcessExited, .. })), "{last:?}");
    let why = rig.handle.exited().await;
    assert_eq!(why, ExitReason::StdoutClosed { error: None });
    let err = rig.handle.ping(Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(err, ProcessError::Exited(ExitReason::StdoutClosed { .. })), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_full_command_queue_is_a_clear_error() {
    let rig = rig_with(|c| c.max_queued_commands = 1);
    let h = &rig.handle;
    // Polled one after the other without yielding: the actor has no chance to take the first.
    let (a, b) = tokio::join!(h.ping(Duration::from_secs(1)), h.ping(Duration::from_secs(1)));
    let err = b.unwrap_err();
    assert!(matches!(err, ProcessError::CommandQueueFull { capacity: 1 }), "{err}");
    assert!(err.to_string().contains("retry later"));
    drop(a);
}

#[tokio::test(start_paused = true)]
async fn oversized_input_is_refused_before_it_is_sent() {
    let mut rig = rig();
    let text = "x".repeat(crate::MAX_INPUT_CHARS + 1);
    let err = rig.handle.start_turn(turn_params(&text)).await.unwrap_err();
    assert!(matches!(err, ProcessError::InputTooLarge { limit: 1_048_576, .. }), "{err}");
    assert!(err.to_string().contains("1048576"), "{err}");
    assert!(rig.peer.silent_for(Duration::from_secs(1)).await, "nothing reached codex");
}

#[tokio::test(start_paused = true)]
async fn a_request_larger_than_the_pipe_goes_out_whole_as_codex_reads() {
    let mut rig = rig_over(1024, |_| {});
    let items: Vec<Value> = (0..200).map(|n| json!({"type": "message", "text": "x".repeat(500), "n": n})).collect();
    let handle = rig.handle.clone();
    let injecting = tokio::spawn(async move { handle.inject_items(&thread(), items).await });
    // Then a small request, which must come after it, not inside it.
    let handle = rig.handle.clone();
    let pinging = tokio::spawn(async move { handle.ping(Duration::from_secs(60)).await });
    let (id, params) = rig.peer.expect("thread/inject_items").await;
    assert_eq!(params["items"].as_array().unwrap().len(), 200);
    assert_eq!(params["items"][199]["n"], 199);
    rig.peer.send(json!({"id": id, "result": {}})).await;
    let (id, _) = rig.peer.expect("thread/loaded/list").await;
    rig.peer.send(json!({"id": id, "result": {"data": []}})).await;
    injecting.await.unwrap().unwrap();
    pinging.await.unwrap().unwrap();
}

/// Lines codex could send and lines it never would: bytes, JSON of any shape, notifications and
/// server requests with odd params, replies to ids nobody asked with. None names turn `u1`.
fn noise() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[ -~é\\u{0}]{0,8}".prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-zA-Z]{1,9}", inner, 0..4).prop_map(|m| json!(m)),
        ]
    });
    let method = prop_oneof![
        Just("turn/started"),
        Just("turn/completed"),
        Just("item/started"),
        Just("item/completed"),
        Just("item/agentMessage/delta"),
        Just("item/reasoning/textDelta"),
        Just("thread/tokenUsage/updated"),
        Just("error"),
        Just("rawResponseItem/completed"),
        Just("thread/closed"),
        Just("thread/started"),
        Just("item/commandExecution/requestApproval"),
        Just("item/tool/call"),
        Just("brand/new"),
    ];
    let thread = prop_oneof![Just(json!("t")), Just(json!("x")), Just(json!(5))];
    let turn = prop_oneof![
        Just(json!("zz")),
        Just(json!({"id": "zz", "status": "completed", "items": []})),
        Just(Value::Null)
    ];
    let params = (proptest::collection::btree_map("[a-zA-Z]{1,9}", value.clone(), 0..3), thread, turn).prop_map(
        |(fields, thread, turn)| {
            let mut p = json!(fields);
            p["threadId"] = thread;
            p["turnId"] = turn.get("id").cloned().unwrap_or_else(|| turn.clone());
            p["turn"] = turn;
            p
        },
    );
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..48).prop_map(|mut b| {
            b.retain(|c| *c != b'\n');
            b
        }),
        value.clone().prop_map(|v| v.to_string().into_bytes()),
        (method.clone(), params.clone()).prop_map(|(m, p)| json!({"method": m, "params": p}).to_string().into_bytes()),
        (1_000i64..2_000, method, params)
            .prop_map(|(id, m, p)| json!({"id": id, "method": m, "params": p}).to_string().into_bytes()),
        (any::<i64>(), value).prop_map(|(id, v)| json!({"id": id, "result": v}).to_string().into_bytes()),
        any::<i64>().prop_map(|id| json!({"id": id, "error": {"code": -1, "message": "x"}}).to_string().into_bytes()),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever else codex sends while a turn runs, the actor neither panics nor mixes it into
    /// the turn: the turn ends as codex ends it, and the actor goes on answering.
    #[test]
    fn any_message_leaves_the_actor_and_the_running_turn_intact(lines in proptest::collection::vec(noise(), 0..24)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        runtime.block_on(async move {
            let mut rig = rig();
            let mut turn = start(&mut rig, "u1", true).await;
            for line in &lines {
                rig.peer.raw(line).await;
            }
            rig.peer.delta("u1", "ok").await;
            rig.peer.completed("u1", "completed").await;
            let (mut text, mut end) = (String::new(), None);
            while let Some(event) = turn.next().await {
                match event {
                    TurnEvent::AgentMessageDelta { delta, .. } => text.push_str(&delta),
                    e if e.is_terminal() => end = Some(e),
                    _ => {}
                }
            }
            assert_eq!(text, "ok");
            assert!(matches!(end, Some(TurnEvent::Completed { status: TurnStatus::Completed, .. })), "{end:?}");
            let handle = rig.handle.clone();
            let call = tokio::spawn(async move {
                handle.request::<codex_pool_protocol::methods::ThreadLoadedList>(&Default::default()).await
            });
            let id = loop {
                // Answers to the server requests among the noise come first.
                let msg = rig.peer.recv().await;
                if msg["method"] == "thread/loaded/list" {
                    break msg["id"].clone();
                }
            };
            rig.peer.send(json!({"id": id, "result": {"data": ["t"]}})).await;
            assert_eq!(call.await.unwrap().unwrap().data, vec![thread()]);
        });
    }
}
