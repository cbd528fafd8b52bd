//! `codex-pool bench`: C concurrent conversations of T turns against the real codex and the fake
//! model (run as a separate process, so its CPU is not counted as ours), printed as one JSON line.
//! With `--direct`, the same load also runs through a minimal raw client with no pool, in the
//! same invocation, and the line gains the direct figures and the ratios. With `--versus
//! PROFILE` (or `--versus-ca-bundle CA`), the same load also runs through the pool with another
//! conversation profile (or other root certificates). With `--tls` the fake model serves HTTPS
//! with a CA of its own, which every run's "system roots" (the system bundle) then include. With
//! `--http`, `--responses` and `--chat`, through the service: its native API, OpenAI's Responses
//! API and Chat Completions. With `--tools`, the native API again with every turn calling a
//! client tool; with `--tools-change`, what a rebuild for a changed tool list costs. With
//! `--long`, instead, what a rebuild costs against a conversation's length.
//!
//! The `codex-pool` command parses [`BenchArgs`] and calls [`run`] with its own executable,
//! whose `mock-model` and `serve` subcommands the benchmark runs as children.

#![deny(missing_docs)]

mod balancer;
mod direct;
mod error;
pub mod hops;
mod http;
mod long;
mod measure;
mod mock_child;
mod nodes;
mod openai;
mod reply;
mod report;
mod result;
mod soak;
mod tool_turn;
mod tools;

pub use error::BenchError;

use clap::Args;
use codex_pool::{ConversationId, Pool, PoolConfig, Profile, Strategy, TurnEvent, TurnOptions};
use codex_pool_process::{CaBundle, SystemRoots};
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::types::UserInput;
use codex_pool_store::SqliteStore;
use error::{read_pem, IoContext};
use http::Api;
use measure::{CpuClock, Sample};
use mock_child::{codex_process_config, MockChild};
use result::{absorb, Health, RunResult};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `codex-pool bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Concurrent conversations.
    #[arg(long, default_value_t = 12)]
    pub(crate) convs: usize,
    /// Turns per conversation.
    #[arg(long, default_value_t = 5)]
    pub(crate) turns: usize,
    /// codex processes.
    #[arg(long, default_value_t = 3)]
    pub(crate) pool_size: usize,
    /// Also run the same load through a minimal raw client (no pool) and report the ratios.
    #[arg(long)]
    pub(crate) direct: bool,
    /// Also run the same load through the service (`serve`'s HTTP + SSE API, with a client in
    /// this process) and report it beside the library.
    #[arg(long)]
    pub(crate) http: bool,
    /// Also run the same load through the service's `/v1/responses` (streamed, each turn
    /// continuing the last with `previous_response_id`).
    #[arg(long)]
    pub(crate) responses: bool,
    /// Also run the same load through the service's `/v1/chat/completions` (streamed, each
    /// request resending the whole transcript).
    #[arg(long)]
    pub(crate) chat: bool,
    /// Also run the load through the native API with every turn calling one client tool (the
    /// bench answers it at once through `tool_outputs`), rounds alternating with the plain load
    /// through the same API; report what a tool round trip adds.
    #[arg(long)]
    pub(crate) tools: bool,
    /// Also measure what a changed tool list costs: per conversation, after K turns, a turn
    /// sending its list against one sending another list (which rebuilds its thread), --rounds
    /// pairs each.
    #[arg(long)]
    pub(crate) tools_change: bool,
    /// The history lengths K of --tools-change.
    #[arg(long, value_name = "K,...", value_delimiter = ',', default_value = "5,20,50")]
    pub(crate) tools_change_history: Vec<usize>,
    /// Also run the same load through N services (nodes) sharing the PostgreSQL store of --db,
    /// the processes split between them, and through one node on it with all of them; report
    /// both and their ratio, with the store's round trips per turn.
    #[arg(long, value_name = "N", requires = "db")]
    pub(crate) nodes: Option<usize>,
    /// The PostgreSQL database of --nodes (`postgres://user@host/db`; it gets the bench's
    /// conversations).
    #[arg(long, value_name = "URL")]
    pub(crate) db: Option<String>,
    /// How --nodes' requests reach the nodes: `owner` (each conversation's to the node that
    /// owns it, N nodes against one), `balancer` (every request through HAProxy with
    /// deploy/haproxy.cfg, N nodes against one), or `other` (each to a node that does not own
    /// the conversation, so every turn is forwarded, against each to its owner, N nodes both).
    #[arg(long, value_name = "owner|balancer|other", default_value = "owner", requires = "nodes")]
    pub(crate) via: balancer::Via,
    /// The HAProxy configuration of `--via balancer` (default: the example deployment's).
    #[arg(long, value_name = "PATH", default_value_os_t = balancer::default_config())]
    pub(crate) haproxy_config: PathBuf,
    /// Repeat the load this many times; with --direct or --versus, the runs alternate (who goes
    /// first rotates too) and the figures pool all rounds of a mode.
    #[arg(long, default_value_t = 1)]
    pub(crate) rounds: usize,
    /// Conversation profile: `chat` (lean, the default) or `default` (codex's own).
    #[arg(long, default_value = "chat")]
    pub(crate) profile: Profile,
    /// Also run the same load through the pool with this profile (rounds alternate) and report
    /// the ratios of --profile to it.
    #[arg(long, value_name = "PROFILE")]
    pub(crate) versus: Option<Profile>,
    /// Selection strategy of the pool.
    #[arg(long, default_value = "round_robin")]
    pub(crate) strategy: Strategy,
    /// Text deltas per reply of the fake model.
    #[arg(long, default_value_t = 8)]
    pub(crate) deltas: usize,
    /// The codex binary (default: the repository's pinned install, then PATH).
    #[arg(long, value_name = "PATH", env = "CODEX_BIN")]
    pub(crate) codex_bin: Option<PathBuf>,
    /// codex's own log filter (its `RUST_LOG`), as for `serve`.
    #[arg(long, value_name = "FILTER", env = "CODEX_POOL_CODEX_LOG", default_value = "warn")]
    pub(crate) codex_log: String,
    /// The root certificates codex trusts: `auto` (a one-certificate placeholder over plain
    /// http, just the fake model's CA with --tls), `system`, or the path of a PEM file.
    #[arg(long, value_name = "auto|system|PATH", default_value = "auto")]
    pub(crate) ca_bundle: CaBundle,
    /// Also run the same load through the pool with these root certificates (rounds alternate)
    /// and report the ratios of --ca-bundle to it.
    #[arg(long, value_name = "auto|system|PATH")]
    pub(crate) versus_ca_bundle: Option<CaBundle>,
    /// Serve the fake model over HTTPS with a CA of its own; the system roots of every run are
    /// the system bundle plus that CA.
    #[arg(long)]
    pub(crate) tls: bool,
    /// How often the pool pings each codex process (default: the pool's); the line reports how
    /// long the slowest answer took, to size the hang detection.
    #[arg(long, value_name = "MS")]
    pub(crate) health_interval_ms: Option<u64>,
    /// Time every hand-off of every turn (through the pool, the process actor and the store,
    /// and through the raw client) and report the median and 90th percentile of each.
    #[arg(long)]
    pub trace_hops: bool,
    /// Soak instead: a real `serve` child held N seconds under --sse-clients readers and a
    /// stream of big turns, its memory printed every 5 s and in a final line.
    #[arg(long, value_name = "N")]
    pub(crate) soak_secs: Option<u64>,
    /// Soak: SSE readers held open (re-attached to long-running turns).
    #[arg(long, default_value_t = 2000)]
    pub(crate) sse_clients: usize,
    /// Soak: characters of each big turn's message.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) big_turn_bytes: usize,
    /// Soak: serve's --keep-events-secs.
    #[arg(long, default_value_t = 60)]
    pub(crate) keep_events_secs: u64,
    /// Soak: serve's --max-retained-event-bytes.
    #[arg(long, default_value_t = 256 << 20)]
    pub(crate) max_retained_event_bytes: usize,
    /// `--long` and `--long-threshold`: what a rebuild costs against a conversation's length.
    #[command(flatten)]
    pub(crate) long: long::LongArgs,
}

/// What a benchmark prints last: one JSON line (the figures of every arm, or the soak's
/// summary).
#[derive(Debug, Clone)]
pub struct Report(pub serde_json::Value);

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Runs the benchmark `args` asks for. `exe` is the `codex-pool` executable: the fake model
/// and the soak's service run as its `mock-model` and `serve` children, so that their CPU is
/// not counted as the bench's. `progress` gets the lines a soak prints while it runs (its
/// memory every 5 s); the line returned is the last.
pub async fn run(
    args: &BenchArgs,
    exe: &Path,
    progress: &mut (dyn FnMut(&serde_json::Value) + Send),
) -> Result<Report, BenchError> {
    if !(args.convs > 0 && args.turns > 0 && args.pool_size > 0) {
        return Err(BenchError::Flags("--convs, --turns and --pool-size must be positive".to_owned()));
    }
    if args.tools_change {
        tools::history_points(&args.tools_change_history)?;
    }
    let bin = codex_pool_process::find_checked(args.codex_bin.as_deref())?;
    if let Some(lengths) = &args.long.long {
        return long::run(args, lengths, exe, &bin).await.map(Report);
    }
    if let Some(secs) = args.soak_secs {
        return soak::run(args, secs, (exe, &bin), progress).await.map(Report);
    }
    let shared = scratch()?;
    let ca_out = args.tls.then(|| shared.path().join("mock-ca.pem"));
    let mock = MockChild::spawn(exe, args.deltas, ca_out.as_deref()).await?;
    let system = match &ca_out {
        Some(ca) => SystemRoots::File(system_plus(ca, shared.path())?),
        None => SystemRoots::Inherited,
    };
    // What runs in each round: the pool with --profile, then what it is compared with.
    let mut arms = vec![Arm::Pool(args.profile, args.ca_bundle.clone())];
    if args.direct {
        arms.push(Arm::Direct);
    }
    let apis = [
        (args.http || args.tools, Api::Native),
        (args.tools, Api::Tools),
        (args.responses, Api::Responses),
        (args.chat, Api::Chat),
    ];
    for (asked, api) in apis {
        if asked {
            arms.push(Arm::Http(api));
        }
    }
    if let Some(n) = args.nodes {
        if n < 2 {
            return Err(BenchError::Flags(format!("--nodes {n}: compare at least 2 nodes with one")));
        }
        if !args.db.as_deref().is_some_and(codex_pool_store::is_postgres_url) {
            return Err(BenchError::Flags("--nodes needs --db postgres://... (the store the nodes share)".to_owned()));
        }
        if args.via == balancer::Via::Balancer && n > 3 {
            let config = args.haproxy_config.display();
            return Err(BenchError::Flags(format!("--via balancer: {config} names at most 3 nodes")));
        }
        match args.via {
            balancer::Via::Other => arms.push(Arm::Nodes(n, balancer::Via::Owner)),
            via => arms.push(Arm::Nodes(1, via)),
        }
        arms.push(Arm::Nodes(n, args.via));
    }
    if args.versus.is_some() || args.versus_ca_bundle.is_some() {
        let profile = args.versus.unwrap_or(args.profile);
        arms.push(Arm::Pool(profile, args.versus_ca_bundle.clone().unwrap_or_else(|| args.ca_bundle.clone())));
    }
    let mut results: Vec<Option<RunResult>> = arms.iter().map(|_| None).collect();
    for round in 0..args.rounds.max(1) {
        for k in 0..arms.len() {
            let i = (k + round) % arms.len();
            let result = match &arms[i] {
                Arm::Pool(profile, ca) => {
                    run_pool(args, *profile, ca, &system, &bin, &mock).await.map_err(|e| e.in_arm("pool"))?
                }
                Arm::Direct => direct::run(args, &system, &bin, &mock).await.map_err(|e| e.in_arm("direct"))?,
                Arm::Http(api) => http::run(args, &system, &bin, &mock, *api).await.map_err(|e| e.in_arm("service"))?,
                Arm::Nodes(n, via) => {
                    let db = args.db.as_deref().unwrap_or_default();
                    nodes::run(args, &system, &bin, &mock, (*n, db, *via)).await.map_err(|e| e.in_arm("nodes"))?
                }
            };
            absorb(&mut results[i], result);
        }
    }
    let change = match args.tools_change {
        true => Some(tools::change(args, &system, &bin, &mock).await.map_err(|e| e.in_arm("tools-change"))?),
        false => None,
    };
    mock.stop().await;
    let mut line = report::line(args, &arms, results);
    if let Some(change) = change {
        line["tools_change"] = change;
    }
    Ok(Report(line))
}

fn scratch() -> Result<tempfile::TempDir, BenchError> {
    tempfile::Builder::new().prefix("codex-pool-bench-").tempdir().doing("creating a scratch directory")
}

/// A file that stands for the system roots with --tls: the system bundle plus the fake
/// model's CA.
fn system_plus(mock_ca: &Path, dir: &Path) -> Result<PathBuf, BenchError> {
    let ca = read_pem(mock_ca)?;
    let path = dir.join("system-plus-mock-ca.pem");
    SystemRoots::write_with(&ca, &path).doing("writing the system roots plus the fake model's CA")?;
    Ok(path)
}

/// One mode of the benchmark.
#[derive(Debug, Clone, PartialEq)]
enum Arm {
    /// Through the pool, with a profile and root certificates.
    Pool(Profile, CaBundle),
    /// Through the minimal raw client, with --profile and --ca-bundle.
    Direct,
    /// Through the service (HTTP + SSE), with --profile and --ca-bundle, by one of its APIs.
    Http(Api),
    /// Through this many services sharing the PostgreSQL store of --db, reached this way.
    Nodes(usize, balancer::Via),
}

/// A pool as every arm but the raw client runs it, its files under `dir`.
fn bench_pool(
    args: &BenchArgs,
    setup: (Profile, &CaBundle, &SystemRoots),
    bin: &std::path::Path,
    mock: &MockChild,
    dir: &std::path::Path,
) -> Result<Pool, BenchError> {
    let config = pool_config(args, setup, bin, mock, dir);
    let store = Arc::new(SqliteStore::open(dir.join("threads.db"))?);
    Ok(Pool::new(config, store))
}

/// The settings of [`bench_pool`].
fn pool_config(
    args: &BenchArgs,
    (profile, ca, system): (Profile, &CaBundle, &SystemRoots),
    bin: &std::path::Path,
    mock: &MockChild,
    dir: &std::path::Path,
) -> PoolConfig {
    let process = codex_process_config(bin.to_path_buf(), dir, &mock.base_url, "mock-model", &args.codex_log);
    let mut config = PoolConfig::new(process);
    config.ca_bundle = ca.clone();
    config.system_roots = system.clone();
    config.size = args.pool_size;
    config.strategy = args.strategy;
    config.default_profile = profile;
    config.max_turns_per_process = config.max_turns_per_process.max(args.convs);
    if let Some(ms) = args.health_interval_ms {
        config.health_interval = Duration::from_millis(ms.max(1));
    }
    config
}

async fn run_pool(
    args: &BenchArgs,
    profile: Profile,
    ca: &CaBundle,
    system: &SystemRoots,
    bin: &std::path::Path,
    mock: &MockChild,
) -> Result<RunResult, BenchError> {
    let dir = scratch()?;
    let pool = bench_pool(args, (profile, ca, system), bin, mock, dir.path())?;
    let t0 = Instant::now();
    let ca_bundle = pool.ensure_started().await?.ca.bundle;
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
    let health = Health::of(&pool);
    pool.shutdown().await;
    Ok(RunResult { ca_bundle, ready, wall, samples, errors, health: Some(health), ..usage.into_result() })
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
