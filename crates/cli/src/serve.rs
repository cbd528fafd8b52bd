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
    /// codex processes, 1 to 64 (default: 3).
    #[arg(long, value_name = "N", env = "CODEX_POOL_SIZE", value_parser = crate::vars::pool_size)]
    pub pool_size: Option<usize>,
    /// How new conversations are placed: round_robin or least_busy (default: round_robin).
    #[arg(long, value_name = "S", env = "CODEX_SELECTION_STRATEGY", value_parser = crate::vars::strategy)]
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
    /// The token clients must send (`Authorization: Bearer ...`), needed beyond loopback. Any
    /// user can read it in `ps`: prefer --token-file.
    #[arg(long, env = "CODEX_POOL_TOKEN", hide_env_values = true, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// A file holding the token (a trailing newline is dropped), so it is not on the command line.
    #[arg(long, value_name = "PATH", env = "CODEX_POOL_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Where the service keeps its database and codex's folders (default:
    /// $XDG_DATA_HOME/codex-pool, else ~/.local/share/codex-pool).
    #[arg(long, value_name = "DIR", env = "CODEX_POOL_DATA_DIR")]
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
    /// How long a turn waits for the outputs of the client's tool calls before it lets the
    /// conversation go (`tool_call_timeout`); the calls stay pending, and their outputs, sent
    /// later, continue the conversation.
    #[arg(long, default_value_t = 600)]
    pub tool_call_timeout_secs: u64,
    /// The compaction threshold of new conversations of a profile or a model, in tokens of
    /// history (`chat=200000`, `model:gpt-5=400000`; repeatable, a model's wins): codex
    /// summarises a conversation's history once it passes it. Otherwise codex's own for the model.
    #[arg(long, value_name = "PROFILE=TOKENS|model:NAME=TOKENS", value_parser = compact_token_limit)]
    pub compact_token_limit: Vec<(codex_pool::CompactScope, u64)>,
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
    #[arg(long, value_name = "MODE", default_value = "read-only", value_parser = agent_sandbox)]
    pub agent_sandbox: SandboxMode,
    /// Let coding-agent commands reach the network (with --agent-sandbox workspace-write).
    #[arg(long)]
    pub agent_network: bool,
    #[command(flatten)]
    pub edge: EdgeArgs,
    #[command(flatten)]
    pub budgets: BudgetArgs,
}

/// What the service may hold in memory for clients, and how many turns it admits.
#[derive(Debug, Args)]
pub struct BudgetArgs {
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

/// The limits of the HTTP edge and the names and pages it answers to.
#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// Seconds a connection has to send a request's line and headers, from its opening or its
    /// previous answer (so also how long an idle keep-alive connection is kept); then closed.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub header_timeout_secs: u64,
    /// Seconds a request's body has to arrive once its headers have (408 after).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub body_timeout_secs: u64,
    /// Connections open at once (lowered to what the open-files limit holds). Over it, a
    /// reserve answers /healthz and 503 to anything else; beyond, connections are closed at once.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub max_connections: usize,
    /// Connections beyond --max-connections that still answer /healthz (503 to anything else).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub reserve_connections: usize,
    /// A name clients may reach the service by (`Host`), besides IP addresses and
    /// localhost: NAME (any port) or NAME:PORT. Repeat for more. Others get 421.
    #[arg(long, value_name = "NAME")]
    pub allow_host: Vec<String>,
    /// A web page's origin (`https://app.example`) that may use the service from a browser
    /// (CORS). Repeat for more. Requests from other pages get 403.
    #[arg(long, value_name = "ORIGIN")]
    pub allow_origin: Vec<String>,
    /// Milliseconds another node has to accept a request forwarded to it (the node that serves
    /// the request's conversation); past it, that node is taken as unreachable.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub forward_connect_timeout_ms: u64,
    /// The largest request body taken, in bytes (413 over it).
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// The most bytes of a conversation's instructions and of its developer instructions, each
    /// (chat's system and developer messages too); more is refused (413).
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 10)]
    pub max_instructions_bytes: usize,
    /// The most metadata pairs of a conversation (400 over it).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_metadata_pairs: usize,
    /// The most characters of a metadata key.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_metadata_key_chars: usize,
    /// The most characters of a metadata value (as JSON text when it is not a string).
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub max_metadata_value_chars: usize,
    /// The most bytes of JSON in a page of a list; a page stops early (with next_after) there.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub max_page_bytes: usize,
}

impl EdgeArgs {
    /// Sets the edge's part of the service's settings.
    fn apply(&self, config: &mut ServiceConfig) -> anyhow::Result<()> {
        anyhow::ensure!(self.header_timeout_secs >= 1, "--header-timeout-secs must be at least 1");
        anyhow::ensure!(self.body_timeout_secs >= 1, "--body-timeout-secs must be at least 1");
        anyhow::ensure!(self.max_connections >= 1, "--max-connections must be at least 1");
        for origin in &self.allow_origin {
            anyhow::ensure!(
                (origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.trim_end_matches('/').split_once("://").is_some_and(|(_, a)| a.contains('/')),
                "--allow-origin {origin:?} is not an origin; write it as scheme://host[:port], e.g. https://app.example"
            );
        }
        anyhow::ensure!(self.max_body_bytes >= 1024, "--max-body-bytes must be at least 1024");
        config.max_body_bytes = self.max_body_bytes;
        anyhow::ensure!(self.forward_connect_timeout_ms >= 1, "--forward-connect-timeout-ms must be at least 1");
        config.forward_connect_timeout = Duration::from_millis(self.forward_connect_timeout_ms);
        config.header_timeout = Duration::from_secs(self.header_timeout_secs);
        config.body_timeout = Duration::from_secs(self.body_timeout_secs);
        config.max_connections = self.max_connections;
        config.reserve_connections = self.reserve_connections;
        config.allowed_hosts = self.allow_host.clone();
        config.allowed_origins = self.allow_origin.clone();
        config.caps.instructions_bytes = self.max_instructions_bytes;
        config.caps.metadata_pairs = self.max_metadata_pairs;
        config.caps.metadata_key_chars = self.max_metadata_key_chars;
        config.caps.metadata_value_chars = self.max_metadata_value_chars;
        config.caps.page_bytes = self.max_page_bytes.max(1);
        Ok(())
    }
}

/// What clients may make codex do, from the operator's flags.
fn policy(args: &ServeArgs) -> anyhow::Result<AgentPolicy> {
    let mut policy = AgentPolicy::default();
    policy.allow_codex_profile = args.allow_profile.iter().any(|p| p == "codex");
    policy.agent_sandbox = args.agent_sandbox;
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

/// `--agent-sandbox`: the sandboxes offered to coding-agent conversations (never
/// danger-full-access).
fn compact_token_limit(text: &str) -> Result<(codex_pool::CompactScope, u64), String> {
    let (scope, tokens) = text.rsplit_once('=').ok_or("give PROFILE=TOKENS or model:NAME=TOKENS, e.g. chat=200000")?;
    let scope = match scope.strip_prefix("model:") {
        Some(model) if !model.is_empty() => codex_pool::CompactScope::Model(model.to_owned()),
        Some(_) => return Err("name the model: model:NAME=TOKENS".to_owned()),
        None => {
            codex_pool::CompactScope::Profile(scope.parse().map_err(|e: codex_pool::UnknownProfile| e.to_string())?)
        }
    };
    let tokens = tokens.trim().parse().ok().filter(|t| *t > 0).ok_or("TOKENS is a whole number above 0")?;
    Ok((scope, tokens))
}

fn agent_sandbox(name: &str) -> Result<SandboxMode, String> {
    match name {
        "read-only" => Ok(SandboxMode::ReadOnly),
        "workspace-write" => Ok(SandboxMode::WorkspaceWrite),
        other => Err(format!(
            "{other:?} is not a sandbox coding-agent conversations may get; use read-only or workspace-write"
        )),
    }
}

/// The token, from --token (or CODEX_POOL_TOKEN) or --token-file (or CODEX_POOL_TOKEN_FILE).
fn token(args: &ServeArgs) -> anyhow::Result<Option<String>> {
    let Some(path) = &args.token_file else { return Ok(args.token.clone()) };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {} (--token-file)", path.display()))?;
    let token = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    Ok(Some(token.to_owned()))
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    few_malloc_arenas();
    let policy = policy(&args)?;
    let token = token(&args)?;
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => crate::vars::default_data_dir()?,
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let db =
        args.db.clone().filter(|d| !d.is_empty()).unwrap_or_else(|| data_dir.join("threads.db").display().to_string());
    let shared = is_postgres_url(&db);
    let store = open_store(&db).await.with_context(|| format!("opening the store {}", shown(&db)))?;
    check_token_for_keys(store.as_ref(), token.is_some()).await?;
    let backend = args.model.backend(Some(&data_dir)).await?;
    let mut config = PoolConfig::new(backend.config.clone());
    config.default_model.clone_from(&backend.model);
    config.ca_bundle = backend.ca_bundle.clone();
    if let Some(size) = args.pool_size {
        config.size = size;
    }
    if let Some(strategy) = args.strategy {
        config.strategy = strategy;
    }
    config.turn_timeout = Duration::from_secs(args.turn_timeout_secs);
    config.progress_timeout = Duration::from_secs(args.progress_timeout_secs);
    config.tool_call_timeout = Duration::from_secs(args.tool_call_timeout_secs);
    config.compact_token_limits.clone_from(&args.compact_token_limit);
    config.max_turns_per_process = args.budgets.max_turns_per_process.max(1);
    let mut service_config = ServiceConfig::default();
    service_config.listen = args.listen;
    service_config.token = token.clone();
    service_config.max_running_turns = args.max_running_turns.max(1);
    service_config.models = backend.model.clone().into_iter().collect();
    service_config.policy = policy;
    args.edge.apply(&mut service_config)?;
    service_config.max_input_items = args.budgets.max_input_items.max(1);
    service_config.max_retained_event_bytes = args.budgets.max_retained_event_bytes;
    service_config.max_turn_event_bytes = args.budgets.max_turn_event_bytes.max(1);
    service_config.keep_events_for = Duration::from_secs(args.budgets.keep_events_secs);
    let listener = Service::listen(&service_config).await?;
    let addr = listener.local_addr()?;
    if shared || args.node_id.is_some() {
        config.node = Some(node(&args, addr)?);
    }
    let node = config.node.as_ref().map(|n| format!("; node {} at {}", n.id, n.address)).unwrap_or_default();
    let pool = Pool::new(config, store);
    let service = Service::on(listener, pool, service_config);
    let auth = if token.is_some() { " -H \"Authorization: Bearer $CODEX_POOL_TOKEN\"" } else { "" };
    println!(
        "codex-pool serving on http://{addr} (model: {}; data: {}; store: {}{node})",
        backend.describe,
        data_dir.display(),
        shown(&db)
    );
    println!(
        "try: id=$(curl -s{auth} -X POST http://{addr}/v1/conversations | sed -E 's/.*\"id\":\"([^\"]+)\".*/\\1/'); \
         curl -sN{auth} -H 'Content-Type: application/json' http://{addr}/v1/conversations/$id/turns -d \
         '{{\"text\":\"hello\"}}'"
    );
    println!("console: http://{addr}/ (open it in a browser)");
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

/// Keys work only with an operator token: refuses to serve a store that has live keys without one.
async fn check_token_for_keys(store: &dyn codex_pool_store::ThreadStore, has_token: bool) -> anyhow::Result<()> {
    if has_token {
        return Ok(());
    }
    let live = store.keys().list_keys().await?.iter().filter(|k| !k.is_revoked()).count();
    if live > 0 {
        anyhow::bail!(
            "the store holds {live} API key(s), which work only with an operator token: pass --token (or \
             --token-file, or set CODEX_POOL_TOKEN), or revoke the keys (codex-pool keys revoke NAME)"
        );
    }
    Ok(())
}
