//! `codex-pool bench --soak-secs N`: a real `codex-pool serve` (this executable, as a child) on
//! the fake model (another child), held under load for N seconds: `--sse-clients` readers
//! re-attached to long-running turns, and a stream of turns of `--big-turn-bytes` characters.
//! Prints serve's resident memory (VmRSS) and the bytes of events it keeps every few seconds,
//! one JSON line each, then a final JSON line: memory must level off once the retention budget
//! is full.

use crate::error::{expect_some, BenchError, IoContext};
use crate::mock_child::MockChild;
use crate::{scratch, BenchArgs};
use codex_pool_server::client::Client;
use hyper::Method;
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

/// Readers per long-running turn.
const READERS_PER_TURN: usize = 100;
/// How often serve's memory is sampled.
const EVERY: Duration = Duration::from_secs(5);

/// What the load did so far.
#[derive(Default)]
struct Counts {
    big_turns: AtomicU64,
    big_failed: AtomicU64,
    sse_open: AtomicUsize,
    sse_failed: AtomicU64,
}

/// Runs the soak with `exe` (the `codex-pool` executable) and codex at `bin`; `progress` gets
/// each memory sample; returns the final line.
pub(crate) async fn run(
    args: &BenchArgs,
    secs: u64,
    (exe, bin): (&Path, &Path),
    progress: &mut (dyn FnMut(&serde_json::Value) + Send),
) -> Result<serde_json::Value, BenchError> {
    raise_open_files();
    let mock = MockChild::spawn(exe, args.deltas, None).await?;
    let dir = scratch()?;
    let mut serve = tokio::process::Command::new(exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--model-base-url", &mock.base_url])
        .args(["--pool-size", &args.pool_size.to_string()])
        .args(["--keep-events-secs", &args.keep_events_secs.to_string()])
        .args(["--max-retained-event-bytes", &args.max_retained_event_bytes.to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .env("CODEX_BIN", bin)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .doing("starting codex-pool serve")?;
    let mut lines = tokio::io::BufReader::new(expect_some(serve.stdout.take(), "serve has no stdout")?).lines();
    let first = lines.next_line().await.doing("reading serve's output")?;
    let first = expect_some(first, "serve exited at start")?;
    let addr = expect_some(first.split_whitespace().find(|w| w.starts_with("http://")), "serve printed no address")?;
    let pid = expect_some(serve.id(), "serve exited at start")?;
    let client = Client::new(addr, None);
    let ready_by = Instant::now() + Duration::from_secs(60);
    while client.get("/readyz").await.is_err() {
        if Instant::now() >= ready_by {
            return Err(BenchError::Child("serve did not get ready in 60 s".to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start_rss = rss(pid)?;
    let counts = Arc::new(Counts::default());
    let end = Instant::now() + Duration::from_secs(secs);

    // Long turns that outlast the soak (a delta every 500 ms), each with its readers.
    let holders = args.sse_clients.div_ceil(READERS_PER_TURN).max(1);
    let long = json!({"text": format!("hold [mock:deltas={}] [mock:delay_ms=500]", secs * 2 + 120)});
    let mut held = Vec::new();
    for _ in 0..holders {
        let id = create(&client).await?;
        let mut stream = client.stream(&format!("/v1/conversations/{id}/turns"), long.clone()).await?;
        let started = expect_some(stream.next().await?, "a long turn ended at once")?;
        let turn = expect_some(started.data["turn_id"].as_str(), "turn.started without turn_id")?.to_owned();
        held.push((id, turn, stream));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..args.sse_clients {
        let (id, turn, _) = &held[n % holders];
        let path = format!("/v1/conversations/{id}/turns/{turn}/events");
        let (client, counts) = (client.clone(), counts.clone());
        tasks.spawn(async move {
            let request = client.builder(Method::GET, &path).body(Default::default()).expect("a request");
            let Ok(mut events) = client.open(request).await else {
                counts.sse_failed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            counts.sse_open.fetch_add(1, Ordering::Relaxed);
            while let Ok(Some(_)) = events.next().await {}
            counts.sse_open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    // Big turns, two at a time, each on a new conversation, answered whole.
    let text = "z".repeat(args.big_turn_bytes);
    for _ in 0..2 {
        let (client, counts, text) = (client.clone(), counts.clone(), text.clone());
        tasks.spawn(async move {
            while Instant::now() < end {
                let body = json!({"text": text, "stream": false}).to_string();
                let ok = match create(&client).await {
                    Ok(id) => client
                        .send(Method::POST, &format!("/v1/conversations/{id}/turns"), Some(body.into()))
                        .await
                        .is_ok_and(|a| a.status.is_success()),
                    Err(_) => false,
                };
                let counter = if ok { &counts.big_turns } else { &counts.big_failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    let begun = Instant::now();
    let mut samples = Vec::new();
    while Instant::now() < end {
        tokio::time::sleep(EVERY).await;
        let retained = retained_bytes(&client).await.unwrap_or(-1.0);
        let sample = json!({
            "t_secs": begun.elapsed().as_secs(),
            "serve_rss_mb": mb(rss(pid)?),
            "events_retained_mb": (retained / 1048576.0 * 10.0).round() / 10.0,
            "sse_open": counts.sse_open.load(Ordering::Relaxed),
            "big_turns": counts.big_turns.load(Ordering::Relaxed),
        });
        progress(&sample);
        samples.push((begun.elapsed().as_secs(), rss(pid)?, retained));
    }

    for (id, _, _) in &held {
        let _ = client.post(&format!("/v1/conversations/{id}/interrupt"), json!({})).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    // SAFETY: a plain syscall on our own child.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let _ = tokio::time::timeout(Duration::from_secs(20), serve.wait()).await;
    mock.stop().await;
    Ok(summary(args, secs, start_rss, &samples, &counts))
}

/// The final line: memory at start, once the budget was full, and at the end.
fn summary(args: &BenchArgs, secs: u64, start: u64, samples: &[(u64, u64, f64)], counts: &Counts) -> serde_json::Value {
    // Full: the first sample holding 90% of the budget; the samples from then on must be flat.
    let full = samples.iter().position(|s| s.2 >= args.max_retained_event_bytes as f64 * 0.9);
    let after: Vec<u64> = full.map(|i| samples[i..].iter().map(|s| s.1).collect()).unwrap_or_default();
    json!({
        "soak_secs": secs,
        "sse_clients": args.sse_clients,
        "sse_failed": counts.sse_failed.load(Ordering::Relaxed),
        "big_turn_bytes": args.big_turn_bytes,
        "big_turns": counts.big_turns.load(Ordering::Relaxed),
        "big_turns_failed": counts.big_failed.load(Ordering::Relaxed),
        "keep_events_secs": args.keep_events_secs,
        "max_retained_event_bytes": args.max_retained_event_bytes,
        "serve_rss_mb_start": mb(start),
        "budget_full_at_secs": full.map(|i| samples[i].0),
        "serve_rss_mb_once_full_min": after.iter().min().copied().map(mb),
        "serve_rss_mb_once_full_max": after.iter().max().copied().map(mb),
        "serve_rss_mb_end": samples.last().map(|s| mb(s.1)),
    })
}

async fn create(client: &Client) -> Result<String, BenchError> {
    let created = client.post("/v1/conversations", json!({})).await?.json()?;
    Ok(expect_some(created["id"].as_str(), "no conversation id")?.to_owned())
}

async fn retained_bytes(client: &Client) -> Option<f64> {
    let answer = client.get("/metrics").await.ok()?;
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    text.lines().find_map(|l| l.strip_prefix("codex_pool_events_retained_bytes ")).and_then(|v| v.trim().parse().ok())
}

fn mb(bytes: u64) -> u64 {
    bytes >> 20
}

/// The resident memory of a process, in bytes (`VmRSS` of `/proc/PID/status`).
fn rss(pid: u32) -> Result<u64, BenchError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).doing("reading serve's /proc status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| BenchError::Child("no VmRSS in serve's /proc status".to_owned()))?;
    Ok(kb * 1024)
}

/// Raises the open-files soft limit to the hard limit (inherited by serve): thousands of
/// loopback connections need a descriptor at each end.
fn raise_open_files() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
