//! `codex-pool keys`: the API keys applications use, created, listed and revoked in the store
//! `serve` uses (`--db`, `--data-dir`), so every node sharing it sees them at once.

use anyhow::Context;
use clap::{Args, Subcommand};
use codex_pool_store::{check_key_name, open_store, ApiKey, KeyLimits, StoreError, ThreadStore};
use std::path::PathBuf;

/// Which store, and what to do with its keys.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// The store: a SQLite file (default: DATA_DIR/threads.db), or a PostgreSQL URL.
    #[arg(long, value_name = "PATH|URL", env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub db: Option<String>,
    /// The data directory `serve` uses (default: $XDG_DATA_HOME/codex-pool, else
    /// ~/.local/share/codex-pool).
    #[arg(long, value_name = "DIR", env = "CODEX_POOL_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub action: Action,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Creates a key and prints its secret, once: keep it, only its prefix is shown again.
    Create {
        /// Its name: unique, letters, digits, `-`, `_` or `.` (metrics are labelled with it).
        #[arg(long)]
        name: String,
        /// Turns of its conversations running at once, per node.
        #[arg(long, value_name = "N")]
        max_running_turns: Option<u32>,
        /// Conversations it may hold in the store.
        #[arg(long, value_name = "N")]
        max_conversations: Option<u64>,
        /// Turns it may start per minute (all nodes).
        #[arg(long, value_name = "N")]
        turns_per_minute: Option<u32>,
    },
    /// Lists the keys: id, name, prefix, when created and last used, whether revoked, limits.
    List,
    /// Revokes a key (by name or id): every node refuses it within a second.
    Revoke {
        /// The key's name or id.
        key: String,
    },
}

async fn store(args: &KeysArgs) -> anyhow::Result<std::sync::Arc<dyn ThreadStore>> {
    let db = match args.db.clone().filter(|d| !d.is_empty()) {
        Some(db) => db,
        None => {
            let dir = match &args.data_dir {
                Some(dir) => dir.clone(),
                None => crate::vars::default_data_dir()?,
            };
            std::fs::create_dir_all(&dir).with_context(|| format!("creating the data directory {}", dir.display()))?;
            dir.join("threads.db").display().to_string()
        }
    };
    open_store(&db).await.with_context(|| format!("opening the store {}", crate::serve::shown(&db)))
}

fn time(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |ms| format!("{}", ms / 1000))
}

fn limit<T: std::fmt::Display>(n: Option<T>) -> String {
    n.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// Runs `codex-pool keys ...`.
pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let store = store(&args).await?;
    let keys = store.keys();
    match args.action {
        Action::Create { name, max_running_turns, max_conversations, turns_per_minute } => {
            check_key_name(&name).map_err(anyhow::Error::msg)?;
            let limits = KeyLimits { max_running_turns, max_conversations, turns_per_minute };
            let (key, secret) = ApiKey::generate(name, limits).context("drawing the key's random bytes")?;
            match keys.create_key(&key).await {
                Err(e @ StoreError::KeyNameTaken { .. }) => return Err(e.into()),
                other => other.context("storing the key")?,
            }
            println!("id:     {}\nname:   {}\nsecret: {secret}", key.id, key.name);
            eprintln!("keep the secret: it is not shown again (only its prefix, {})", key.prefix);
        }
        Action::List => {
            println!("id\tname\tprefix\tcreated_at\tlast_used_at\trevoked_at\tmax_running_turns\tmax_conversations\tturns_per_minute");
            for key in keys.list_keys().await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    key.id,
                    key.name,
                    key.prefix,
                    key.created_at_ms / 1000,
                    time(key.last_used_at_ms),
                    time(key.revoked_at_ms),
                    limit(key.limits.max_running_turns),
                    limit(key.limits.max_conversations),
                    limit(key.limits.turns_per_minute),
                );
            }
        }
        Action::Revoke { key } => {
            let revoked = keys.revoke_key(&key).await?.with_context(|| {
                format!("no API key named {key:?} or with that id; `codex-pool keys list` lists them")
            })?;
            println!("revoked {} ({})", revoked.name, revoked.id);
        }
    }
    store.close().await?;
    Ok(())
}
