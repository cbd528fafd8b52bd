//! A scripted peer that plays `codex app-server` over in-memory pipes, for faults the real binary
//! cannot produce on demand (a process that dies in the middle of a turn, a turn that stays
//! open until the test says so). No codex is involved: [`ScriptedCodex::spawn`] gives an
//! [`AppServer`] connected ([`AppServer::connect`]) to a task that answers what the pool asks
//! (`initialize`, `thread/start`, `thread/inject_items`, health checks, ...) and hands each
//! `turn/start` to the test as a [`ScriptedTurn`], which decides what codex says next.
//!
//! Runs on paused time (`#[tokio::test(start_paused = true)]`): nothing in it waits on a clock.

use codex_pool_process::{AppServer, ExitReason, ProcessConfig, SpawnError};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, Lines};
use tokio::sync::{mpsc, watch};

/// One message a scripted process received from its client.
#[derive(Debug, Clone)]
pub struct Received {
    /// Which process got it (0 for the first one spawned, then 1, ...).
    pub process: usize,
    /// Its method.
    pub method: String,
    /// Its params (`null` when it had none).
    pub params: Value,
}

/// Spawns scripted processes and collects what they receive. Cheap to clone: clones share
/// everything.
#[derive(Clone)]
pub struct ScriptedCodex {
    inner: Arc<Shared>,
}

struct Shared {
    received: Mutex<Vec<Received>>,
    spawned: AtomicUsize,
    threads: AtomicUsize,
    die_on_turn_start: AtomicBool,
    turns_tx: mpsc::UnboundedSender<ScriptedTurn>,
    turns_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<ScriptedTurn>>,
}

/// What the test tells a scripted process to do.
enum Script {
    /// Write this message to the client.
    Send(Value),
    /// Die: close both pipes and report the exit (as SIGKILL would).
    Die,
}

/// A turn a scripted process accepted (it answered `turn/start` and sent `turn/started`); it
/// says what the test tells it to.
#[derive(Debug)]
pub struct ScriptedTurn {
    /// The process that runs it.
    pub process: usize,
    /// Its codex thread.
    pub thread_id: String,
    /// Its id.
    pub turn_id: String,
    /// The params of its `turn/start`.
    pub params: Value,
    script: mpsc::UnboundedSender<Script>,
}

impl ScriptedTurn {
    /// The first text of its input.
    pub fn text(&self) -> &str {
        self.params["input"][0]["text"].as_str().unwrap_or_default()
    }

    fn send(&self, method: &str, params: Value) {
        let _ = self.script.send(Script::Send(json!({"method": method, "params": params})));
    }

    /// Streams a piece of the answer (`item/agentMessage/delta`).
    pub fn delta(&self, text: &str) {
        let params = json!({"threadId": self.thread_id, "turnId": self.turn_id, "itemId": "msg", "delta": text});
        self.send("item/agentMessage/delta", params);
    }

    /// Completes an item of the turn (`item/completed`), as codex describes it (e.g. an
    /// `agentMessage` with its `moderation`).
    pub fn complete_item(&self, item: Value) {
        self.send("item/completed", json!({"threadId": self.thread_id, "turnId": self.turn_id, "item": item}));
    }

    /// Records an item in the thread's history (`rawResponseItem/completed`).
    pub fn record(&self, item: Value) {
        self.send(
            "rawResponseItem/completed",
            json!({"threadId": self.thread_id, "turnId": self.turn_id, "item": item}),
        );
    }

    /// Answers `reply` and completes the turn: the delta, the user's and the assistant's
    /// messages recorded, `turn/completed`.
    pub fn reply(&self, reply: &str) {
        self.delta(reply);
        self.record(message("user", self.text()));
        self.record(message("assistant", reply));
        self.complete("completed");
    }

    /// Ends the turn with `status` (`completed`, `interrupted`, `failed`).
    pub fn complete(&self, status: &str) {
        let turn = json!({"id": self.turn_id, "status": status, "items": []});
        self.send("turn/completed", json!({"threadId": self.thread_id, "turn": turn}));
    }

    /// Kills its process: both pipes close and the process reports its death, mid-turn.
    pub fn kill_process(&self) {
        let _ = self.script.send(Script::Die);
    }
}

/// A Responses API message, as codex records it.
pub fn message(role: &str, text: &str) -> Value {
    let kind = if role == "assistant" { "output_text" } else { "input_text" };
    json!({"type": "message", "role": role, "content": [{"type": kind, "text": text}]})
}

impl Default for ScriptedCodex {
    fn default() -> Self {
        Self::new()
    }
}

impl ScriptedCodex {
    /// A scripted codex that has spawned nothing yet.
    pub fn new() -> Self {
        let (turns_tx, turns_rx) = mpsc::unbounded_channel();
        let inner = Shared {
            received: Mutex::default(),
            spawned: AtomicUsize::new(0),
            threads: AtomicUsize::new(0),
            die_on_turn_start: AtomicBool::new(false),
            turns_tx,
            turns_rx: tokio::sync::Mutex::new(turns_rx),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Starts a scripted process and connects an [`AppServer`] to it (the handshake included).
    pub async fn spawn(&self, config: ProcessConfig) -> Result<AppServer, SpawnError> {
        let process = self.inner.spawned.fetch_add(1, Ordering::SeqCst);
        let (client_out, peer_in) = tokio::io::duplex(1 << 16);
        let (peer_out, client_in) = tokio::io::duplex(1 << 16);
        let (ended_tx, ended) = watch::channel(None);
        let peer = Peer {
            process,
            shared: self.inner.clone(),
            requests: BufReader::new(peer_in).lines(),
            replies: peer_out,
            turns: 0,
        };
        tokio::spawn(peer.run(ended_tx));
        AppServer::connect(config, client_in, client_out, ended).await
    }

    /// Makes the process that gets the next `turn/start` die at once, without answering it.
    pub fn die_on_next_turn_start(&self) {
        self.inner.die_on_turn_start.store(true, Ordering::SeqCst);
    }

    /// Processes spawned so far.
    pub fn spawned(&self) -> usize {
        self.inner.spawned.load(Ordering::SeqCst)
    }

    /// Everything the processes received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().expect("received lock").clone()
    }

    /// What the processes received for `method`, in order.
    pub fn received_of(&self, method: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.method == method).collect()
    }

    /// The next turn a process accepts (waits for it, a minute at most: on paused time, no
    /// time at all once nothing else can happen).
    pub async fn next_turn(&self) -> ScriptedTurn {
        let mut turns = self.inner.turns_rx.lock().await;
        let next = tokio::time::timeout(Duration::from_secs(60), turns.recv()).await;
        next.expect("no turn reached the scripted codex").expect("the scripted codex keeps its sender")
    }
}

/// One scripted process: answers its client until it dies or its client closes its input.
struct Peer {
    process: usize,
    shared: Arc<Shared>,
    requests: Lines<BufReader<DuplexStream>>,
    replies: DuplexStream,
    turns: usize,
}

impl Peer {
    async fn run(mut self, ended: watch::Sender<Option<ExitReason>>) {
        let (script_tx, mut script) = mpsc::unbounded_channel();
        let why = loop {
            tokio::select! {
                line = self.requests.next_line() => match line {
                    Ok(Some(line)) => {
                        let Ok(msg) = serde_json::from_str::<Value>(&line) else { continue };
                        if let Some(reply) = self.answer(msg, &script_tx) {
                            if self.write(&reply).await.is_err() {
                                break ExitReason::Code(1);
                            }
                        }
                    }
                    // The client closed our input: exit as codex does.
                    _ => break ExitReason::Code(0),
                },
                Some(step) = script.recv() => match step {
                    Script::Send(msg) => {
                        if self.write(&msg).await.is_err() {
                            break ExitReason::Code(1);
                        }
                    }
                    Script::Die => break ExitReason::Signal(libc::SIGKILL),
                },
            }
        };
        // Both pipes close with `self`, then the death is reported, as a reaper would.
        drop(self);
        let _ = ended.send(Some(why));
    }

    async fn write(&mut self, msg: &Value) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(msg).expect("json");
        line.push(b'\n');
        self.replies.write_all(&line).await
    }

    /// The answer to a request (`None` for a notification); `turn/start` also hands the turn
    /// to the test, after its `turn/started`.
    fn answer(&mut self, msg: Value, script: &mpsc::UnboundedSender<Script>) -> Option<Value> {
        let method = msg["method"].as_str().unwrap_or_default().to_owned();
        let params = msg["params"].clone();
        self.shared.received.lock().expect("received lock").push(Received {
            process: self.process,
            method: method.clone(),
            params: params.clone(),
        });
        let id = msg.get("id")?.clone();
        let thread_id = params["threadId"].clone();
        let result = match method.as_str() {
            "initialize" => json!({"codexHome": "/scripted", "userAgent": "scripted-codex/0",
                "platformFamily": "unix", "platformOs": "linux"}),
            "account/read" => json!({"account": {"type": "apiKey"}, "requiresOpenaiAuth": true}),
            "thread/start" => {
                let thread =
                    format!("scripted-{}-{}", self.process, self.shared.threads.fetch_add(1, Ordering::SeqCst));
                json!({"thread": {"id": thread}, "model": "mock-model", "modelProvider": "mock", "cwd": "/scripted"})
            }
            "thread/loaded/list" | "thread/list" => json!({"data": []}),
            "thread/unsubscribe" => json!({"status": "unsubscribed"}),
            "thread/inject_items" | "thread/name/set" | "thread/delete" => json!({}),
            "turn/interrupt" => {
                let turn = json!({"id": params["turnId"], "status": "interrupted", "items": []});
                let done = json!({"method": "turn/completed", "params": {"threadId": thread_id, "turn": turn}});
                let _ = script.send(Script::Send(done));
                json!({})
            }
            "turn/start" if self.shared.die_on_turn_start.swap(false, Ordering::SeqCst) => {
                let _ = script.send(Script::Die);
                return None;
            }
            "turn/start" => {
                self.turns += 1;
                let turn_id = format!("turn-{}-{}", self.process, self.turns);
                let turn = json!({"id": turn_id, "status": "inProgress", "items": []});
                let started = json!({"method": "turn/started", "params": {"threadId": thread_id, "turn": turn}});
                let _ = script.send(Script::Send(started));
                let _ = self.shared.turns_tx.send(ScriptedTurn {
                    process: self.process,
                    thread_id: thread_id.as_str().unwrap_or_default().to_owned(),
                    turn_id,
                    params,
                    script: script.clone(),
                });
                return Some(json!({"id": id, "result": {"turn": turn}}));
            }
            _ => {
                let error = json!({"code": -32601, "message": format!("the scripted codex has no {method}")});
                return Some(json!({"id": id, "error": error}));
            }
        };
        Some(json!({"id": id, "result": result}))
    }
}
