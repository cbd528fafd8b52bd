//! The baseline of the benchmark: a minimal raw client of `codex app-server`, with no pool, no
//! actor, no typed protocol: one reader task per process that parses each line as JSON and routes
//! replies by id and notifications by `threadId`. It does what any client must, and nothing more,
//! so the pool's overhead shows as a ratio against it.

use crate::error::{expect_some, BenchError, IoContext};
use crate::measure::CpuClock;
use crate::mock_child::{codex_process_config, MockChild};
use crate::result::RunResult;
use crate::{drive, scratch, BenchArgs};
use codex_pool_process::ca::{CaSetup, ModelHosts, SystemRoots};
use codex_pool_process::hops::hop;
use codex_pool_process::ProcessConfig;
use codex_pool_protocol::methods::ThreadSettings;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{mpsc, oneshot};

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;
type Subscribers = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Value>>>>;

/// One raw connection to one process.
pub struct DirectClient {
    child: Child,
    stdin: tokio::sync::Mutex<ChildStdin>,
    next_id: AtomicU64,
    pending: Pending,
    subscribers: Subscribers,
    reader: tokio::task::JoinHandle<()>,
}

impl DirectClient {
    /// Spawns codex exactly as the pool does and performs the handshake.
    pub async fn spawn(config: &ProcessConfig) -> Result<Self, BenchError> {
        config.prepare_dirs()?;
        let mut child = config.command().spawn().doing("spawning codex")?;
        let stdin = expect_some(child.stdin.take(), "codex has no stdin")?;
        let stdout = expect_some(child.stdout.take(), "codex has no stdout")?;
        let stderr = expect_some(child.stderr.take(), "codex has no stderr")?;
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(_)) = lines.next_line().await {}
        });
        let pending: Pending = Arc::default();
        let subscribers: Subscribers = Arc::default();
        let reader = tokio::spawn(read_loop(stdout, pending.clone(), subscribers.clone()));
        let client = Self {
            child,
            stdin: tokio::sync::Mutex::new(stdin),
            next_id: AtomicU64::new(1),
            pending,
            subscribers,
            reader,
        };
        client
            .request(
                "initialize",
                json!({
                    "clientInfo": {"name": "codex-pool-bench-direct", "version": "0"},
                    "capabilities": {"experimentalApi": true}
                }),
            )
            .await?;
        client.write(&json!({"method": "initialized"})).await?;
        Ok(client)
    }

    async fn write(&self, msg: &Value) -> Result<(), BenchError> {
        let mut line = serde_json::to_vec(msg)?;
        line.push(b'\n');
        self.stdin.lock().await.write_all(&line).await.doing("writing to codex")?;
        Ok(())
    }

    /// Sends a request and waits for its result.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, BenchError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending").insert(id, tx);
        self.write(&json!({"id": id, "method": method, "params": params})).await?;
        let reply = rx.await.map_err(|_| BenchError::Child("codex went away".to_owned()))?;
        match reply.get("error") {
            Some(e) => Err(BenchError::Child(format!("{method}: {e}"))),
            None => Ok(reply.get("result").cloned().unwrap_or(Value::Null)),
        }
    }

    /// `thread/start`; returns the thread id.
    pub async fn start_thread(&self, params: Value) -> Result<String, BenchError> {
        let result = self.request("thread/start", params).await?;
        expect_some(result["thread"]["id"].as_str().map(str::to_owned), "thread/start without an id")
    }

    /// Runs one turn to `turn/completed`; returns (time to first delta, reply text).
    pub async fn turn(&self, thread_id: &str, text: &str) -> Result<(Option<std::time::Duration>, String), BenchError> {
        let started = std::time::Instant::now();
        hop(thread_id, "direct.start");
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.subscribers.lock().expect("subscribers").insert(thread_id.to_owned(), tx);
        self.request("turn/start", json!({"threadId": thread_id, "input": [{"type": "text", "text": text}]})).await?;
        hop(thread_id, "direct.reply");
        let mut ttft = None;
        let mut reply = String::new();
        while let Some(msg) = rx.recv().await {
            match msg["method"].as_str() {
                Some("item/agentMessage/delta") => {
                    if ttft.is_none() {
                        hop(thread_id, "direct.first_delta");
                    }
                    ttft.get_or_insert_with(|| started.elapsed());
                    reply.push_str(msg["params"]["delta"].as_str().unwrap_or(""));
                }
                Some("turn/completed") => {
                    hop(thread_id, "direct.completed");
                    break;
                }
                _ => {}
            }
        }
        self.subscribers.lock().expect("subscribers").remove(thread_id);
        Ok((ttft, reply))
    }

    /// The OS pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Closes stdin and waits for the process.
    pub async fn close(mut self) {
        drop(self.stdin);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.child.wait()).await;
        let _ = self.child.kill().await;
        self.reader.abort();
    }
}

async fn read_loop(stdout: tokio::process::ChildStdout, pending: Pending, subscribers: Subscribers) {
    let mut lines = BufReader::with_capacity(1 << 16, stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(msg) = serde_json::from_str::<Value>(&line) else { continue };
        if msg.get("method").is_none() {
            if let Some(id) = msg.get("id").and_then(Value::as_u64) {
                if let Some(tx) = pending.lock().expect("pending").remove(&id) {
                    let _ = tx.send(msg);
                }
            }
            continue;
        }
        if msg.get("id").is_some() {
            continue; // a server request: none expected under this load
        }
        let thread = msg["params"]["threadId"].as_str().map(str::to_owned);
        if let Some(thread) = thread {
            if let Some(tx) = subscribers.lock().expect("subscribers").get(&thread) {
                let _ = tx.send(msg);
            }
        }
    }
}

/// The `--direct` arm: the load through [`DirectClient`]s, one per process, with the threads
/// and root certificates the pool would use.
pub(crate) async fn run(
    args: &BenchArgs,
    system: &SystemRoots,
    bin: &std::path::Path,
    mock: &MockChild,
) -> Result<RunResult, BenchError> {
    let dir = scratch()?;
    let mut process =
        codex_process_config(bin.to_path_buf(), dir.path(), &mock.base_url, "mock-model", &args.codex_log);
    // The roots the pool would give its processes, decided the same way.
    let t0 = Instant::now();
    let ca = CaSetup {
        bundle: args.ca_bundle.clone(),
        hosts: ModelHosts::of_provider(Some(&mock.base_url))?,
        system: system.clone(),
        dir: dir.path().join("tls"),
        probe_timeout: Duration::from_secs(3),
    }
    .resolve()
    .await?;
    process.ca = ca.files.clone();
    let mut spawning = Vec::new();
    for _ in 0..args.pool_size {
        let process = process.clone();
        spawning.push(tokio::spawn(async move { DirectClient::spawn(&process).await }));
    }
    let mut clients = Vec::new();
    for s in spawning {
        clients.push(Arc::new(s.await??));
    }
    let ready = t0.elapsed();
    let settings = args
        .profile
        .apply(ThreadSettings { cwd: Some(process.work_dir.display().to_string()), ..ThreadSettings::default() });
    // The same threads the pool starts (a minimal client would not need the raw events, but the
    // comparison is of the clients, not of what codex is asked to do).
    let params = serde_json::to_value(codex_pool_protocol::methods::ThreadStartParams {
        settings,
        ephemeral: args.profile.ephemeral().then_some(true),
        experimental_raw_events: true,
    })?;
    let mut threads = Vec::new();
    for c in 0..args.convs {
        let client = clients[c % clients.len()].clone();
        let id = client.start_thread(params.clone()).await?;
        threads.push((client, id));
    }
    let pids: Vec<u32> = clients.iter().filter_map(|c| c.pid()).collect();
    let clock = CpuClock::start(&pids, mock).await;
    let started = Instant::now();
    let (samples, errors) =
        drive(threads, args.turns, |(client, thread): (Arc<DirectClient>, String), text| async move {
            client.turn(&thread, &text).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "direct turn failed");
                (None, String::new())
            })
        })
        .await;
    let wall = started.elapsed();
    let usage = clock.stop(&pids, mock).await;
    for client in clients {
        if let Ok(client) = Arc::try_unwrap(client) {
            client.close().await;
        }
    }
    Ok(RunResult { ca_bundle: ca.kind.to_string(), ready, wall, samples, errors, ..usage.into_result() })
}
