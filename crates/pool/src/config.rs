//! Pool settings, with the seed's environment variables.

use crate::ownership::NodeConfig;
use crate::profile::Profile;
use crate::strategy::Strategy;
use codex_pool_process::{AppServer, BoxFuture, CaBundle, ProcessConfig, SpawnError, SystemRoots};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `CODEX_POOL_SIZE`: number of processes (default 3).
pub const ENV_POOL_SIZE: &str = "CODEX_POOL_SIZE";
/// `CODEX_SELECTION_STRATEGY`: `round_robin` (default) or `least_busy`.
pub const ENV_STRATEGY: &str = "CODEX_SELECTION_STRATEGY";
/// `CODEX_MODEL`: the default model of new threads.
pub const ENV_MODEL: &str = "CODEX_MODEL";

/// A configuration value that does not parse.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not a positive whole number.
    #[error("{var}={value:?} is not a pool size; use a whole number from 1 to 64")]
    PoolSize {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// Not a known strategy.
    #[error("{var}: {source}")]
    Strategy {
        /// The variable.
        var: &'static str,
        /// The parse error.
        source: crate::strategy::UnknownStrategy,
    },
}

/// What a compaction threshold applies to ([`PoolConfig::compact_token_limits`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompactScope {
    /// Conversations of a profile.
    Profile(Profile),
    /// Conversations of a model.
    Model(String),
}

impl PoolConfig {
    /// The compaction threshold of a new conversation of `profile` on `model`, if one is set.
    pub fn compact_token_limit(&self, profile: Profile, model: Option<&str>) -> Option<u64> {
        let of_model = self.compact_token_limits.iter().find_map(|(scope, limit)| match scope {
            CompactScope::Model(m) => (Some(m.as_str()) == model).then_some(*limit),
            CompactScope::Profile(_) => None,
        });
        of_model.or_else(|| {
            self.compact_token_limits.iter().find_map(|(scope, limit)| match scope {
                CompactScope::Profile(p) => (*p == profile).then_some(*limit),
                CompactScope::Model(_) => None,
            })
        })
    }
}

/// Everything the pool needs.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Template for each process; every process shares its `CODEX_HOME` (and so codex's login)
    /// and working directory.
    pub process: ProcessConfig,
    /// Number of processes.
    pub size: usize,
    /// How a process is chosen for a new thread.
    pub strategy: Strategy,
    /// Default model for new threads (`CODEX_MODEL`); `None` keeps codex's configuration.
    pub default_model: Option<String>,
    /// Profile of conversations created without one.
    pub default_profile: Profile,
    /// A turn that produces no event for this long is interrupted and ends with a timeout.
    pub turn_timeout: Duration,
    /// A turn whose last progress (anything but codex announcing it will retry the model) is
    /// this old is interrupted and ends as `model_unreachable`, naming the model's address.
    pub progress_timeout: Duration,
    /// The compaction threshold of new conversations, by profile or by model (a model's wins):
    /// codex summarises a conversation's history once it weighs this many tokens
    /// (`model_auto_compact_token_limit`, kept with the conversation's settings, so every rebuild
    /// has it too). A conversation matched by none keeps codex's own threshold for its model.
    /// Role-play wants long memory, a cheap chat short.
    pub compact_token_limits: Vec<(CompactScope, u64)>,
    /// How long a turn waits for the outputs of the client tool calls it made before it lets
    /// the conversation go (ending as `tool_call_timeout`); the calls stay pending in the store,
    /// and outputs given later continue the conversation.
    pub tool_call_timeout: Duration,
    /// Turns running at once on one process; more wait up to `overload_wait`, then fail (or
    /// fail at once, with [`crate::TurnOptions::refuse_when_full`], as the service asks).
    pub max_turns_per_process: usize,
    /// How long a turn waits for room on its process before failing with an overload error
    /// (Rust callers that would rather wait than retry; the service never waits).
    pub overload_wait: Duration,
    /// Threads unused for this long are unloaded from codex (and rebuilt from the store on their
    /// next turn).
    pub idle_unsubscribe_after: Duration,
    /// Threads a process keeps loaded at most; past it, the least recently used idle threads are
    /// unloaded, to be rebuilt on their next turn.
    pub max_loaded_threads_per_process: usize,
    /// How often each process is pinged.
    pub health_interval: Duration,
    /// A ping unanswered for this long, while the process wrote nothing for this long either,
    /// marks it hung: it is killed and replaced. A hang is found within `health_interval +
    /// health_timeout`.
    pub health_timeout: Duration,
    /// First delay before restarting a failed process; doubles per failure in a row.
    pub restart_backoff: Duration,
    /// Longest delay between restarts.
    pub restart_backoff_max: Duration,
    /// A process that lived this long resets the failure count.
    pub stable_after: Duration,
    /// Time given to processes to exit on shutdown before they are killed.
    pub shutdown_grace: Duration,
    /// The root certificates codex trusts for an `https` provider (`auto`, the default: just
    /// the roots its hosts need; a plain `http` provider gets a minimal bundle). See
    /// [`codex_pool_process::ca`].
    pub ca_bundle: CaBundle,
    /// Where the system roots come from (the inherited environment, or a file that stands for
    /// them: what `system` gives codex and what `auto` verifies against).
    pub system_roots: SystemRoots,
    /// The pool's own folder for its CA bundle (by default `tls/` next to the working
    /// directory).
    pub ca_dir: PathBuf,
    /// Time allowed for each TLS handshake the pool makes to find or check the roots.
    pub tls_probe_timeout: Duration,
    /// This node, when several nodes share the store: each conversation is then served by one
    /// node at a time, under a lease with a fence (see [`NodeConfig`]). `None` (the default): the
    /// pool is alone on its store and takes no leases.
    pub node: Option<NodeConfig>,
    /// How each slot gets its process: the pinned codex binary (the default), or a function
    /// (a scripted peer in tests, for faults the real binary cannot produce on demand).
    pub spawner: Spawner,
}

/// Starts one process for a slot, from the slot's process settings (its label and root
/// certificates filled in). Implemented by every `Fn(ProcessConfig) -> BoxFuture<...>`.
pub trait Spawn: Send + Sync {
    /// Starts the process and performs its handshake.
    fn spawn(&self, process: ProcessConfig) -> BoxFuture<Result<AppServer, SpawnError>>;
}

impl<F> Spawn for F
where
    F: Fn(ProcessConfig) -> BoxFuture<Result<AppServer, SpawnError>> + Send + Sync,
{
    fn spawn(&self, process: ProcessConfig) -> BoxFuture<Result<AppServer, SpawnError>> {
        self(process)
    }
}

/// How the pool starts its processes (see [`PoolConfig::spawner`]).
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Spawner {
    /// [`AppServer::spawn`]: the codex binary of [`ProcessConfig::codex_bin`] as a child process.
    #[default]
    Codex,
    /// Another way to get a process, such as [`AppServer::connect`] to a scripted peer.
    Custom(Arc<dyn Spawn>),
}

impl Spawner {
    /// A spawner that calls `spawn` for each process.
    pub fn custom(spawn: impl Spawn + 'static) -> Self {
        Spawner::Custom(Arc::new(spawn))
    }

    /// Starts one process.
    pub(crate) async fn spawn(&self, process: ProcessConfig) -> Result<AppServer, SpawnError> {
        match self {
            Spawner::Codex => AppServer::spawn(process).await,
            Spawner::Custom(spawn) => spawn.spawn(process).await,
        }
    }
}

impl std::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Spawner::Codex => f.write_str("Codex"),
            Spawner::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl PoolConfig {
    /// Defaults around a process template (size 3, round robin, 120 s turn timeout).
    pub fn new(process: ProcessConfig) -> Self {
        let ca_dir = match process.work_dir.parent() {
            Some(parent) if parent != std::path::Path::new("") => parent.join("tls"),
            _ => process.codex_home.join("codex-pool-tls"),
        };
        Self {
            ca_bundle: CaBundle::Auto,
            system_roots: SystemRoots::Inherited,
            ca_dir,
            tls_probe_timeout: Duration::from_secs(3),
            process,
            size: 3,
            strategy: Strategy::RoundRobin,
            default_model: None,
            default_profile: Profile::Chat,
            turn_timeout: Duration::from_secs(120),
            progress_timeout: Duration::from_secs(30),
            tool_call_timeout: Duration::from_secs(600),
            compact_token_limits: Vec::new(),
            max_turns_per_process: 48,
            overload_wait: Duration::from_secs(30),
            idle_unsubscribe_after: Duration::from_secs(600),
            max_loaded_threads_per_process: 256,
            health_interval: Duration::from_secs(1),
            health_timeout: Duration::from_secs(4),
            restart_backoff: Duration::from_millis(250),
            restart_backoff_max: Duration::from_secs(30),
            stable_after: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            node: None,
            spawner: Spawner::Codex,
        }
    }

    /// Applies `CODEX_POOL_SIZE`, `CODEX_SELECTION_STRATEGY` and `CODEX_MODEL` from the
    /// environment. Unset or empty variables keep the current values; bad ones are an error.
    /// A convenience for programs that embed the pool: the `codex-pool` binary does not call it,
    /// its flags read the same variables (`--pool-size`, `--strategy`, `--model`).
    pub fn with_env(self) -> Result<Self, ConfigError> {
        self.with_vars(|name| std::env::var(name).ok())
    }

    /// [`PoolConfig::with_env`] with variables from a function (for tests and other sources).
    pub fn with_vars(mut self, var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name| var(name).filter(|v: &String| !v.trim().is_empty());
        if let Some(v) = get(ENV_POOL_SIZE) {
            self.size = v
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or(ConfigError::PoolSize { var: ENV_POOL_SIZE, value: v })?;
        }
        if let Some(v) = get(ENV_STRATEGY) {
            self.strategy = v.parse().map_err(|source| ConfigError::Strategy { var: ENV_STRATEGY, source })?;
        }
        if let Some(v) = get(ENV_MODEL) {
            self.default_model = Some(v.trim().to_owned());
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> PoolConfig {
        PoolConfig::new(ProcessConfig::new("codex".into(), "/h".into(), "/w".into()))
    }

    #[test]
    fn env_overrides_and_errors() {
        fn with(pairs: &[(&str, &str)]) -> Result<PoolConfig, ConfigError> {
            let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            base().with_vars(move |n| pairs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()))
        }
        let c = with(&[(ENV_POOL_SIZE, "5"), (ENV_STRATEGY, "least_busy"), (ENV_MODEL, "gpt-x")]).unwrap();
        assert_eq!((c.size, c.strategy, c.default_model.as_deref()), (5, Strategy::LeastBusy, Some("gpt-x")));
        assert_eq!(with(&[(ENV_POOL_SIZE, "")]).unwrap().size, 3);
        for bad in ["0", "-1", "three", "1000"] {
            let err = with(&[(ENV_POOL_SIZE, bad)]).unwrap_err();
            assert!(err.to_string().contains(ENV_POOL_SIZE), "{err}");
        }
        let err = with(&[(ENV_STRATEGY, "random")]).unwrap_err();
        assert!(err.to_string().contains("round_robin or least_busy"), "{err}");
    }

    #[test]
    fn a_model_s_compaction_threshold_wins_over_its_profile_s() {
        let mut c = base();
        assert_eq!(c.compact_token_limit(Profile::Chat, Some("m")), None);
        c.compact_token_limits =
            vec![(CompactScope::Profile(Profile::Chat), 100), (CompactScope::Model("m".into()), 7)];
        assert_eq!(c.compact_token_limit(Profile::Chat, Some("m")), Some(7));
        assert_eq!(c.compact_token_limit(Profile::Chat, Some("n")), Some(100));
        assert_eq!(c.compact_token_limit(Profile::Codex, None), None);
    }
}
