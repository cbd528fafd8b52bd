//! `codex-pool bench`: C concurrent conversations of T turns against the real codex and the fake
//! model (run as a separate process, so its CPU is not counted as ours), printed as one JSON line.
//! With `--direct`, the same load also runs through a minimal raw client with no pool, in the
//! same invocation, and the line gains the direct figures and the ratios. With `--versus
//! PROFILE`, the same load also runs through the pool with another conversation profile. With
//! `--http`, `--responses` and `--chat`, through the service: its native API, OpenAI's
//! Responses API and Chat Completions.

mod direct;
pub mod hops;
mod http;
mod measure;
mod openai;

use crate::backend::{codex_process_config, MockChild};
use anyhow::Context;
use clap::Args;
use codex_pool::{ConversationId, Pool, PoolConfig, Profile, Strategy, TurnEvent, TurnOptions};
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::types::UserInput;
use codex_pool_store::SqliteStore;
use direct::DirectClient;
use http::Api;
use measure::{percentile, CpuClock, Sample};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `codex-pool bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Concurrent conversations.
    #[arg(long, default_value_t = 12)]
    convs: usize,
    /// Turns per conversation.
    #[arg(long, default_value_t = 5)]
    turns: usize,
    /// codex processes.
    #[arg(long, default_value_t = 3)]
    pool_size: usize,
    /// Also run the same load through a minimal raw client (no pool) and report the ratios.
    #[arg(long)]
    direct: bool,
    /// Also run the same load through the service (`serve`'s HTTP + SSE API, with a client in
    /// this process) and report it beside the library.
    #[arg(long)]
    http: bool,
    /// Also run the same load through the service's `/v1/responses` (streamed, each turn
    /// continuing the last with `previous_response_id`).
    #[arg(long)]
    responses: bool,
    /// Also run the same load through the service's `/v1/chat/completions` (streamed, each
    /// request resending the whole transcript).
    #[arg(long)]
    chat: bool,
    /// Repeat the load this many times; with --direct or --versus, the runs alternate (who goes
    /// first rotates too) and the figures pool all rounds of a mode.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Conversation profile: `chat` (lean, the default) or `default` (codex's own).
    #[arg(long, default_value = "chat")]
    profile: Profile,
    /// Also run the same load through the pool with this profile (rounds alternate) and report
    /// the ratios of --profile to it.
    #[arg(long, value_name = "PROFILE")]
    versus: Option<Profile>,
    /// Selection strategy of the pool.
    #[arg(long, default_value = "round_robin")]
    strategy: Strategy,
    /// Text deltas per reply of the fake model.
    #[arg(long, default_value_t = 8)]
    deltas: usize,
    /// The codex binary (default: CODEX_BIN, then the repository's pinned install, then PATH).
    #[arg(long, value_name = "PATH")]
    codex_bin: Option<PathBuf>,
    /// How often the pool pings each codex process (default: the pool's); the line reports how
    /// long the slowest answer took, to size the hang detection.
    #[arg(long, value_name = "MS")]
    health_interval_ms: Option<u64>,
    /// Time every hand-off of every turn (through the pool, the process actor and the store,
    /// and through the raw client) and report the median and 90th percentile of each.
    #[arg(long)]
    pub trace_hops: bool,
}

/// Figures of one run.
struct RunResult {
    ready: Duration,
    wall: Duration,
    samples: Vec<Sample>,
    errors: usize,
    client_cpu: Duration,
    codex_cpu: Duration,
    request_bytes: u64,
    requests: u64,
    rss_mb: f64,
    codex_rss_mb: f64,
    /// Health checks answered during the run, and the slowest answer (pool runs only).
    health: Option<(u64, f64)>,
    /// Chat requests that continued a conversation, and that started one (`--chat` only).
    chat: Option<(u64, u64)>,
}

impl RunResult {
    fn json(&self, turns: usize) -> Value {
        let lat: Vec<f64> = self.samples.iter().map(|s| s.latency.as_secs_f64() * 1e3).collect();
        let ttft: Vec<f64> = self.samples.iter().filter_map(|s| s.ttft).map(|d| d.as_secs_f64() * 1e3).collect();
        let per_turn = |d: Duration| d.as_secs_f64() * 1e3 / turns.max(1) as f64;
        let mut out = json!({
            "turns_per_s": round(turns as f64 / self.wall.as_secs_f64()),
            "lat_p50_ms": round(percentile(&lat, 50.0)),
            "lat_p95_ms": round(percentile(&lat, 95.0)),
            "ttft_p50_ms": round(percentile(&ttft, 50.0)),
            "ready_s": round(self.ready.as_secs_f64()),
            "client_cpu_ms_per_turn": round(per_turn(self.client_cpu)),
            "codex_cpu_ms_per_turn": round(per_turn(self.codex_cpu)),
            "request_bytes_per_turn": self.request_bytes / self.requests.max(1),
            "rss_mb": round(self.rss_mb),
            "codex_rss_mb": round(self.codex_rss_mb),
            "errors": self.errors,
        });
        if let Some((checks, slowest_ms)) = self.health {
            out["health_checks"] = json!(checks);
            out["health_check_max_ms"] = json!(round(slowest_ms));
        }
        if let Some((continued, new)) = self.chat {
            out["chat_continued"] = json!(continued);
            out["chat_new"] = json!(new);
        }
        out
    }
}

fn round(x: f64) -> f64 {
    if x.is_finite() {
        (x * 100.0).round() / 100.0
    } else {
        0.0
    }
}

impl RunResult {
    /// Adds another round of the same mode.
    fn absorb(&mut self, other: RunResult) {
        self.ready = self.ready.max(other.ready);
        self.wall += other.wall;
        self.samples.extend(other.samples);
        self.errors += other.errors;
        self.client_cpu += other.client_cpu;
        self.codex_cpu += other.codex_cpu;
        self.request_bytes += other.request_bytes;
        self.requests += other.requests;
        self.rss_mb = self.rss_mb.max(other.rss_mb);
        self.codex_rss_mb = self.codex_rss_mb.max(other.codex_rss_mb);
        self.health = match (self.health, other.health) {
            (Some((a, x)), Some((b, y))) => Some((a + b, x.max(y))),
            (a, b) => a.or(b),
        };
        self.chat = match (self.chat, other.chat) {
            (Some((a, x)), Some((b, y))) => Some((a + b, x + y)),
            (a, b) => a.or(b),
        };
    }
}

fn absorb(total: &mut Option<RunResult>, round: RunResult) {
    match total {
        Some(t) => t.absorb(round),
        None => *total = Some(round),
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.convs > 0 && args.turns > 0 && args.pool_size > 0,
        "--convs, --turns and --pool-size must be positive"
    );
    let bin = codex_pool_process::find_checked(args.codex_bin.as_deref())?;
    let mock = MockChild::spawn(args.deltas).await?;
    // What runs in each round: the pool with --profile, then what it is compared with.
    let mut arms = vec![Arm::Pool(args.profile)];
    if args.direct {
        arms.push(Arm::Direct);
    }
    for (asked, api) in [(args.http, Api::Native), (args.responses, Api::Responses), (args.chat, Api::Chat)] {
        if asked {
            arms.push(Arm::Http(api));
        }
    }
    if let Some(other) = args.versus {
        arms.push(Arm::Pool(other));
    }
    let mut results: Vec<Option<RunResult>> = arms.iter().map(|_| None).collect();
    for round in 0..args.rounds.max(1) {
        for k in 0..arms.len() {
            let i = (k + round) % arms.len();
            let result = match arms[i] {
                Arm::Pool(profile) => run_pool(&args, profile, &bin, &mock).await.context("pool run")?,
                Arm::Direct => run_direct(&args, &bin, &mock).await.context("direct run")?,
                Arm::Http(api) => http::run(&args, &bin, &mock, api).await.context("service run")?,
            };
            absorb(&mut results[i], result);
        }
    }
    let mut take = |arm: Arm| arms.iter().position(|a| *a == arm).and_then(|i| results[i].take());
    let pool = take(Arm::Pool(args.profile));
    let direct = take(Arm::Direct);
    let service = take(Arm::Http(Api::Native));
    let openai = [("responses", take(Arm::Http(Api::Responses))), ("chat", take(Arm::Http(Api::Chat)))];
    let versus = args.versus.and_then(|other| take(Arm::Pool(other)));
    mock.stop().await;
    let rounds = args.rounds.max(1);
    let total = args.convs * args.turns * rounds;
    let pool = pool.expect("at least one round").json(total);
    let mut line = json!({
        "mode": "pool",
        "profile": args.profile.name(),
        "strategy": args.strategy.name(),
        "convs": args.convs,
        "turns": args.turns,
        "pool_size": args.pool_size,
        "rounds": rounds,
    });
    merge(&mut line, pool.clone());
    if let Some(direct) = direct {
        let d = direct.json(total);
        line["pool_vs_direct"] = json!({
            "throughput_ratio": round(pool["turns_per_s"].as_f64().unwrap_or(0.0) / d["turns_per_s"].as_f64().unwrap_or(1.0)),
            "lat_p50_added_ms": round(pool["lat_p50_ms"].as_f64().unwrap_or(0.0) - d["lat_p50_ms"].as_f64().unwrap_or(0.0)),
            "client_cpu_added_ms_per_turn": round(pool["client_cpu_ms_per_turn"].as_f64().unwrap_or(0.0) - d["client_cpu_ms_per_turn"].as_f64().unwrap_or(0.0)),
        });
        line["direct"] = d;
    }
    if let Some(service) = service {
        let h = service.json(total);
        let get = |v: &Value, key: &str| v[key].as_f64().unwrap_or(0.0);
        line["http_vs_library"] = json!({
            "throughput_ratio": round(get(&h, "turns_per_s") / get(&pool, "turns_per_s").max(f64::MIN_POSITIVE)),
            "lat_p50_added_ms": round(get(&h, "lat_p50_ms") - get(&pool, "lat_p50_ms")),
            "client_cpu_added_ms_per_turn": round(get(&h, "client_cpu_ms_per_turn") - get(&pool, "client_cpu_ms_per_turn")),
        });
        line["http"] = h;
    }
    // OpenAI's APIs beside the native one (or, without --http, beside the library).
    let native = line.get("http").cloned().unwrap_or_else(|| pool.clone());
    for (name, result) in openai {
        let Some(result) = result else { continue };
        let o = result.json(total);
        let get = |v: &Value, key: &str| v[key].as_f64().unwrap_or(0.0);
        line[format!("{name}_vs_{}", if args.http { "http" } else { "library" })] = json!({
            "throughput_ratio": round(get(&o, "turns_per_s") / get(&native, "turns_per_s").max(f64::MIN_POSITIVE)),
            "lat_p50_added_ms": round(get(&o, "lat_p50_ms") - get(&native, "lat_p50_ms")),
            "request_bytes_ratio": round(get(&o, "request_bytes_per_turn") / get(&native, "request_bytes_per_turn").max(1.0)),
        });
        line[name] = o;
    }
    if let (Some(versus), Some(other)) = (versus, args.versus) {
        let v = versus.json(total);
        let ratio = |key: &str| round(pool[key].as_f64().unwrap_or(0.0) / v[key].as_f64().unwrap_or(0.0));
        line["profile_vs_versus"] = json!({
            "throughput_ratio": ratio("turns_per_s"),
            "lat_p50_ratio": ratio("lat_p50_ms"),
            "request_bytes_ratio": ratio("request_bytes_per_turn"),
            "codex_cpu_ratio": ratio("codex_cpu_ms_per_turn"),
        });
        line["versus"] = v;
        line["versus"]["profile"] = json!(other.name());
    }
    if let Some(hops) = hops::report() {
        line["hops"] = hops;
    }
    println!("{line}");
    Ok(())
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}

fn scratch() -> anyhow::Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new().prefix("codex-pool-bench-").tempdir()?)
}

/// One mode of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arm {
    /// Through the pool, with a profile.
    Pool(Profile),
    /// Through the minimal raw client, with --profile.
    Direct,
    /// Through the service (HTTP + SSE), with --profile, by one of its APIs.
    Http(Api),
}

/// A pool as every arm but the raw client runs it, its files under `dir`.
fn bench_pool(
    args: &BenchArgs,
    profile: Profile,
    bin: &std::path::Path,
    mock: &MockChild,
    dir: &std::path::Path,
) -> anyhow::Result<Pool> {
    let process = codex_process_config(bin.to_path_buf(), dir, &mock.base_url, "mock-model");
    let mut config = PoolConfig::new(process);
    config.size = args.pool_size;
    config.strategy = args.strategy;
    config.default_profile = profile;
    config.max_turns_per_process = config.max_turns_per_process.max(args.convs);
    if let Some(ms) = args.health_interval_ms {
        config.health_interval = Duration::from_millis(ms.max(1));
    }
    let store = Arc::new(SqliteStore::open(dir.join("threads.db"))?);
    Ok(Pool::new(config, store))
}

async fn run_pool(
    args: &BenchArgs,
    profile: Profile,
    bin: &std::path::Path,
    mock: &MockChild,
) -> anyhow::Result<RunResult> {
    let dir = scratch()?;
    let pool = bench_pool(args, profile, bin, mock, dir.path())?;
    let t0 = Instant::now();
    pool.ensure_started().await?;
    let ready = t0.elapsed();
    let mut threads = Vec::new();
    for _ in 0..args.convs {
        threads.push(pool.create_thread(ThreadSettings::default()).await?);
    }
    let pids: Vec<u32> = pool.stats().slots.iter().filter_map(|s| s.pid).collect();
    let pool_for_turns = pool.clone();
    let clock = CpuClock::start(&pids, mock).await;
    let started = Instant::now();
    let (samples, errors) = drive(threads, args.turns, move |thread, text| {
        let pool = pool_for_turns.clone();
        async move { pool_turn(&pool, &thread, &text).await }
    })
    .await;
    let wall = started.elapsed();
    let usage = clock.stop(&pids, mock).await;
    let slots = pool.stats().slots;
    let checks = slots.iter().map(|s| s.health_checks).sum();
    let slowest = slots.iter().map(|s| s.slowest_check_ms).fold(0.0, f64::max);
    pool.shutdown().await;
    Ok(RunResult { ready, wall, samples, errors, health: Some((checks, slowest)), ..usage.into_result() })
}

async fn run_direct(args: &BenchArgs, bin: &std::path::Path, mock: &MockChild) -> anyhow::Result<RunResult> {
    let dir = scratch()?;
    let process = codex_process_config(bin.to_path_buf(), dir.path(), &mock.base_url, "mock-model");
    let t0 = Instant::now();
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
    Ok(RunResult { ready, wall, samples, errors, ..usage.into_result() })
}

/// Runs `turns` turns on each conversation, all conversations at once; `turn` returns the time
/// to the first delta and the reply, which must be the fake model's echo to count.
async fn drive<C, F, Fut>(convs: Vec<C>, turns: usize, turn: F) -> (Vec<Sample>, usize)
where
    C: Clone + Send + 'static,
    F: Fn(C, String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = (Option<Duration>, String)> + Send,
{
    let mut tasks = tokio::task::JoinSet::new();
    for (c, conv) in convs.into_iter().enumerate() {
        let turn = turn.clone();
        tasks.spawn(async move {
            let (mut samples, mut errors) = (Vec::new(), 0);
            for t in 0..turns {
                let text = format!("conversation {c} turn {t}");
                let begun = Instant::now();
                let (ttft, reply) = turn(conv.clone(), text.clone()).await;
                if reply == format!("echo: {text}") {
                    samples.push(Sample { latency: begun.elapsed(), ttft });
                } else {
                    errors += 1;
                }
            }
            (samples, errors)
        });
    }
    let (mut samples, mut errors) = (Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((s, e)) => {
                samples.extend(s);
                errors += e;
            }
            Err(_) => errors += 1,
        }
    }
    (samples, errors)
}

/// One turn through the pool: (time to first delta, reply); an empty reply on failure.
async fn pool_turn(pool: &Pool, thread: &ConversationId, text: &str) -> (Option<Duration>, String) {
    let begun = Instant::now();
    let mut turn = match pool.start_turn(thread, vec![UserInput::text(text)], TurnOptions::default()).await {
        Ok(turn) => turn,
        Err(e) => {
            tracing::warn!(error = %e, "turn failed to start");
            return (None, String::new());
        }
    };
    let (mut ttft, mut reply) = (None, String::new());
    while let Some(event) = turn.next().await {
        match event {
            TurnEvent::AgentMessageDelta { delta, .. } => {
                ttft.get_or_insert_with(|| begun.elapsed());
                reply.push_str(&delta);
            }
            TurnEvent::Completed { .. } => return (ttft, reply),
            TurnEvent::Aborted { .. } => break,
            _ => {}
        }
    }
    (None, String::new())
}
