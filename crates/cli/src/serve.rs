//! `codex-pool serve`: the pool as a local service (HTTP + SSE), on a store in a data directory
//! that outlives it.

use crate::backend::ModelArgs;
use anyhow::Context;
use clap::Args;
use codex_pool::{NodeConfig, Pool, PoolConfig, Strategy};
use codex_pool_protocol::types::SandboxMode;
use codex_pool_server::policy::{AgentPolicy, McpServer};
use codex_pool_server::{Service, ServiceConfig};
use codex_pool_store::{is_postgres_url, open_store};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Options of `codex-pool serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Where to listen. Anything but loopback needs a token.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,
    /// codex processes (default: CODEX_POOL_SIZE, else 3).
    #[arg(long, value_name = "N")]
    pub pool_size: Option<usize>,
    /// How new conversations are placed: round_robin or least_busy (default:
    /// CODEX_SELECTION_STRATEGY, else round_robin).
    #[arg(long, value_name = "S")]
    pub strategy: Option<Strategy>,
    /// The store of conversations: a SQLite file (default: DATA_DIR/threads.db), or a PostgreSQL
    /// URL (`postgres://user:password@host/db`) that several nodes share.
    #[arg(long, value_name = "PATH|URL", env = "DATABASE_URL", hide_env_values = true)]
    pub db: Option<String>,
    /// This node's id among those sharing the store (default with PostgreSQL: the host's name
    /// and a random suffix, new at each start). Setting it makes the node take leases on SQLite
    /// too. One running process per id.
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// The address other nodes send clients to for the conversations this node serves (default:
    /// http:// and the address it listens on, which must then be a specific one).
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,
    /// How long a node's lease on a conversation lasts unless renewed: how long the
    /// conversations of a node that died wait before another node takes them over.
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    pub lease_ttl_secs: u64,
    /// The token clients must send (`Authorization: Bearer ...`), needed beyond loopback.
    #[arg(long, env = "CODEX_POOL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where the service keeps its database and codex's folders (default: CODEX_POOL_DATA_DIR,
    /// else $XDG_DATA_HOME/codex-pool, else ~/.local/share/codex-pool).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Turns running at once; more are refused (429) until one ends. Never more than the pool
    /// runs: --pool-size times --max-turns-per-process.
    #[arg(long, default_value_t = 256)]
    pub max_running_turns: usize,
    /// End a turn that sends nothing for this many seconds.
    #[arg(long, default_value_t = 120)]
    pub turn_timeout_secs: u64,
    /// End a turn whose model cannot be reached for this many seconds.
    #[arg(long, default_value_t = 30)]
    pub progress_timeout_secs: u64,
    /// Let clients create coding-agent conversations (`profile: codex`): codex's own agent, which
    /// runs commands in its sandbox. Only `codex` can be named. Chat only without it.
    #[arg(long, value_name = "PROFILE", value_parser = ["codex"])]
    pub allow_profile: Vec<String>,
    /// An MCP server clients may give a conversation (`tools: ["NAME"]`): codex starts COMMAND
    /// (arguments split on spaces) for it. Repeat for more.
    #[arg(long, value_name = "NAME=COMMAND")]
    pub allow_mcp: Vec<String>,
    /// The sandbox of coding-agent conversations: read-only (the default) or workspace-write
    /// (they may write in their empty working directory).
    #[arg(long, value_name = "MODE", default_value = "read-only", value_parser = ["read-only", "workspace-write"])]
    pub agent_sandbox: String,
    /// Let coding-agent commands reach the network (with --agent-sandbox workspace-write).
    #[arg(long)]
    pub agent_network: bool,
    // Memory budgets (issue 24).
    /// Items in one turn's input (native `input`, Responses `input`, chat `messages` and their
    /// content parts); more are refused (400, too_many_items).
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_input_items: usize,
    /// Bytes of ended turns' events kept for clients to re-attach, all together; past it the
    /// oldest go (re-attaching to them gets 410, events_expired).
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20)]
    pub max_retained_event_bytes: usize,
    /// Bytes of one turn's events; a turn whose events pass it is cut (turn.failed,
    /// events_too_large).
    #[arg(long, value_name = "BYTES", default_value_t = 32 << 20)]
    pub max_turn_event_bytes: usize,
    /// How long an ended turn's events are kept for clients to re-attach.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub keep_events_secs: u64,
    /// Turns running at once on one codex process; a turn whose process runs this many is
    /// refused at once (429). The service runs at most this times --pool-size turns.
    #[arg(long, value_name = "N", default_value_t = 48)]
    pub max_turns_per_process: usize,
}

/// What clients may make codex do, from the operator's flags.
fn policy(args: &ServeArgs) -> anyhow::Result<AgentPolicy> {
    let mut policy = AgentPolicy::default();
    policy.allow_codex_profile = args.allow_profile.iter().any(|p| p == "codex");
    policy.agent_sandbox = match args.agent_sandbox.as_str() {
        "workspace-write" => SandboxMode::WorkspaceWrite,
        _ => SandboxMode::ReadOnly,
    };
    anyhow::ensure!(
        !args.agent_network || policy.agent_sandbox == SandboxMode::WorkspaceWrite,
        "--agent-network needs --agent-sandbox workspace-write (read-only commands get no network)"
    );
    policy.agent_network = args.agent_network;
    for spec in &args.allow_mcp {
        let (name, server) = McpServer::parse(spec).map_err(|e| anyhow::anyhow!("--allow-mcp: {e}"))?;
        policy.mcp_servers.insert(name, server);
    }
    Ok(policy)
}

/// The data directory the service uses when none is given.
pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CODEX_POOL_DATA_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("codex-pool"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/codex-pool"))
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    few_malloc_arenas();
    let policy = policy(&args)?;
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => default_data_dir()?,
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let db =
        args.db.clone().filter(|d| !d.is_empty()).unwrap_or_else(|| data_dir.join("threads.db").display().to_string());
    let shared = is_postgres_url(&db);
    let store = open_store(&db).await.with_context(|| format!("opening the store {}", shown(&db)))?;
    let backend = args.model.backend(Some(&data_dir)).await?;
    let mut config = PoolConfig::new(backend.config.clone()).with_env()?;
    if let Some(size) = args.pool_size {
        anyhow::ensure!((1..=64).contains(&size), "--pool-size {size} is out of range; use 1 to 64");
        config.size = size;
    }
    if let Some(strategy) = args.strategy {
        config.strategy = strategy;
    }
    config.turn_timeout = Duration::from_secs(args.turn_timeout_secs);
    config.progress_timeout = Duration::from_secs(args.progress_timeout_secs);
    config.max_turns_per_process = args.max_turns_per_process.max(1);
    let mut service_config = ServiceConfig::default();
    service_config.listen = args.listen;
    service_config.token = args.token.clone().filter(|t| !t.is_empty());
    service_config.max_running_turns = args.max_running_turns.max(1);
    service_config.models = backend.model.clone().into_iter().collect();
    service_config.policy = policy;
    service_config.max_input_items = args.max_input_items.max(1);
    service_config.max_retained_event_bytes = args.max_retained_event_bytes;
    service_config.max_turn_event_bytes = args.max_turn_event_bytes.max(1);
    service_config.keep_events_for = Duration::from_secs(args.keep_events_secs);
    let listener = Service::listen(&service_config).await?;
    let addr = listener.local_addr()?;
    if shared || args.node_id.is_some() {
        config.node = Some(node(&args, addr)?);
    }
    let node = config.node.as_ref().map(|n| format!("; node {} at {}", n.id, n.address)).unwrap_or_default();
    let pool = Pool::new(config, store);
    let service = Service::on(listener, pool, service_config);
    let auth = if args.token.is_some() { " -H \"Authorization: Bearer $CODEX_POOL_TOKEN\"" } else { "" };
    println!(
        "codex-pool serving on http://{addr} (model: {}; data: {}; store: {}{node})",
        backend.describe,
        data_dir.display(),
        shown(&db)
    );
    println!(
        "try: id=$(curl -s{auth} -X POST http://{addr}/v1/conversations | sed -E 's/.*\"id\":\"([^\"]+)\".*/\\1/'); \
         curl -sN{auth} http://{addr}/v1/conversations/$id/turns -d '{{\"text\":\"hello\"}}'"
    );
    use std::io::Write;
    std::io::stdout().flush()?;
    let result = service.run(shutdown_signal()).await;
    if let Some(mock) = backend.mock {
        mock.shutdown().await;
    }
    result?;
    println!("codex-pool stopped");
    Ok(())
}

/// Caps glibc's malloc at two arenas (its default is eight per core). Turns' large events are
/// allocated and freed on whichever thread runs them; with many arenas, freed memory stays
/// scattered over all of them, and serve's memory crept up by about 1 MB per big turn under a
/// full event budget (`bench --soak-secs`), where with two it stays level.
fn few_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: a malloc tuning call, made before the runtime's threads allocate much.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// This node, when several share the store.
fn node(args: &ServeArgs, listening: SocketAddr) -> anyhow::Result<NodeConfig> {
    let address = match &args.advertise {
        Some(url) => {
            anyhow::ensure!(
                url.starts_with("http://") || url.starts_with("https://"),
                "--advertise {url:?} is not an http:// or https:// URL"
            );
            url.trim_end_matches('/').to_owned()
        }
        None if listening.ip().is_unspecified() => anyhow::bail!(
            "listening on {listening}, this node cannot tell other nodes where to send clients: pass --advertise \
             http://<this host's address>:{}",
            listening.port()
        ),
        None => format!("http://{listening}"),
    };
    anyhow::ensure!(args.lease_ttl_secs >= 1, "--lease-ttl-secs must be at least 1");
    let id = match &args.node_id {
        Some(id) if id.trim().is_empty() => anyhow::bail!("--node-id is empty"),
        Some(id) => id.trim().to_owned(),
        None => format!("{}-{:06x}", hostname(), rand_suffix()),
    };
    let mut node = NodeConfig::new(id, address);
    node.lease_ttl = Duration::from_secs(args.lease_ttl_secs);
    Ok(node)
}

/// The host's name (`node` if it has none).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned())
}

/// A few random bits, so a restarted node is a new node (its old leases run out, or were given
/// back when it stopped).
fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    (hasher.finish() & 0xff_ffff) as u32
}

/// The store as the log shows it: a URL without its password.
pub(crate) fn shown(db: &str) -> String {
    if !is_postgres_url(db) {
        return db.to_owned();
    }
    match (db.find("://"), db.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user_part = &db[scheme + 3..at];
            let user = user_part.split(':').next().unwrap_or_default();
            format!("{}{user}@{}", &db[..scheme + 3], &db[at + 1..])
        }
        _ => db.to_owned(),
    }
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
