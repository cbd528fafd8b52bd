//! `codex-pool doctor`: checks what `serve` needs, one line each, and says what to fix.

use crate::vars::{default_codex_home, default_data_dir};
use clap::Args;
use codex_pool_process::discovery::check_version;
use codex_pool_process::{find_codex, AppServer, ProcessConfig, SpawnError};
use codex_pool_store::{is_postgres_url, PostgresStore, SqliteStore, ThreadStore};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Options of `codex-pool doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The codex binary (default: the repository's pinned install, then PATH).
    #[arg(long, value_name = "PATH", env = "CODEX_BIN")]
    codex_bin: Option<PathBuf>,
    /// Check the login codex would use with `serve --openai`.
    #[arg(long)]
    openai: bool,
    /// CODEX_HOME to check the login in (default: $CODEX_HOME, else ~/.codex).
    #[arg(long, value_name = "DIR")]
    codex_home: Option<PathBuf>,
    /// The data directory `serve` would use.
    #[arg(long, value_name = "DIR", env = "CODEX_POOL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The store `serve` would use: a SQLite file (default: DATA_DIR/threads.db) or a
    /// PostgreSQL URL.
    #[arg(long, value_name = "PATH|URL", env = "DATABASE_URL", hide_env_values = true)]
    db: Option<String>,
    /// The address `serve` would listen on.
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
}

/// The outcome of one check.
enum Check {
    Ok(String),
    Problem { what: String, fix: String },
}

impl Check {
    fn print(&self) {
        match self {
            Check::Ok(what) => println!("ok       {what}"),
            Check::Problem { what, fix } => println!("PROBLEM  {what}\n         fix: {fix}"),
        }
    }
}

pub async fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let mut checks = Vec::new();
    let codex = find_codex(args.codex_bin.as_deref());
    checks.push(match &codex {
        Ok(path) => match check_version(path) {
            Ok(version) => Check::Ok(format!("codex {version} at {}", path.display())),
            Err(e) => Check::Problem { what: format!("codex at {}", path.display()), fix: e.to_string() },
        },
        Err(e) => Check::Problem { what: "no codex binary".to_owned(), fix: e.to_string() },
    });
    if args.openai {
        checks.push(login(codex.as_ref().ok(), args.codex_home.clone()).await);
    }
    let data_dir = args.data_dir.clone().map(Ok).unwrap_or_else(default_data_dir);
    match data_dir {
        Ok(dir) => {
            checks.push(writable(&dir));
            match args.db.as_deref().filter(|db| !db.is_empty()) {
                Some(url) if is_postgres_url(url) => checks.push(shared_store(url).await),
                Some(path) => checks.push(database(std::path::Path::new(path)).await),
                None => checks.push(database(&dir.join("threads.db")).await),
            }
        }
        Err(e) => checks.push(Check::Problem { what: "no data directory".to_owned(), fix: e.to_string() }),
    }
    checks.push(match std::net::TcpListener::bind(args.listen) {
        Ok(_) => Check::Ok(format!("{} is free to listen on", args.listen)),
        Err(e) => Check::Problem {
            what: format!("cannot listen on {} ({e})", args.listen),
            fix: "stop what uses it, or pick another address with `serve --listen`".to_owned(),
        },
    });
    for check in &checks {
        check.print();
    }
    let problems = checks.iter().filter(|c| matches!(c, Check::Problem { .. })).count();
    anyhow::ensure!(problems == 0, "{problems} problem(s) found");
    Ok(())
}

/// Starts codex once, as `serve --openai` would, to read its login.
async fn login(codex: Option<&PathBuf>, codex_home: Option<PathBuf>) -> Check {
    let Some(bin) = codex else {
        return Check::Problem { what: "login not checked".to_owned(), fix: "install codex first".to_owned() };
    };
    let home = codex_home.or_else(default_codex_home);
    let Some(home) = home else {
        return Check::Problem { what: "no CODEX_HOME".to_owned(), fix: "pass --codex-home".to_owned() };
    };
    let scratch = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => return Check::Problem { what: format!("no scratch folder ({e})"), fix: "free /tmp".to_owned() },
    };
    let mut config = ProcessConfig::new(bin.clone(), home.clone(), scratch.path().join("empty"));
    config.require_login = true;
    config.codex_log = crate::vars::codex_log();
    config.handshake_timeout = Duration::from_secs(20);
    match AppServer::spawn(config).await {
        Ok(server) => {
            server.shutdown(Duration::from_secs(2)).await;
            Check::Ok(format!("codex is logged in (CODEX_HOME={})", home.display()))
        }
        Err(e @ SpawnError::NotLoggedIn { .. }) => Check::Problem {
            what: format!("codex is not logged in (CODEX_HOME={})", home.display()),
            fix: e.to_string(),
        },
        Err(e) => Check::Problem { what: "codex did not start".to_owned(), fix: e.to_string() },
    }
}

fn writable(dir: &std::path::Path) -> Check {
    let probe = dir.join(".doctor-probe");
    let result = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&probe, b"ok"));
    let _ = std::fs::remove_file(&probe);
    match result {
        Ok(()) => Check::Ok(format!("data directory {} is writable", dir.display())),
        Err(e) => Check::Problem {
            what: format!("data directory {} is not writable ({e})", dir.display()),
            fix: "make it writable, or pick another with --data-dir / CODEX_POOL_DATA_DIR".to_owned(),
        },
    }
}

/// A PostgreSQL store several nodes share: it opens (its schema brought up to date, as `serve`
/// would), and what it holds.
async fn shared_store(url: &str) -> Check {
    let shown = crate::serve::shown(url);
    let store = match PostgresStore::open(url).await {
        Ok(store) => store,
        Err(e) => return Check::Problem { what: format!("PostgreSQL at {shown} does not open"), fix: e.to_string() },
    };
    match (store.count().await, store.nodes().await) {
        (Ok(n), Ok(nodes)) => {
            Check::Ok(format!("PostgreSQL at {shown} opens, {n} conversation(s), {} node(s) announced", nodes.len()))
        }
        (Err(e), _) | (_, Err(e)) => {
            Check::Problem { what: format!("PostgreSQL at {shown} cannot be read"), fix: e.to_string() }
        }
    }
}

async fn database(path: &std::path::Path) -> Check {
    let fresh = !path.exists();
    match SqliteStore::open(path) {
        Ok(store) => {
            let count = store.count().await;
            if fresh {
                drop(store);
                let _ = std::fs::remove_file(path);
                for suffix in ["-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                return Check::Ok(format!("database {} will be created on first start", path.display()));
            }
            match count {
                Ok(n) => Check::Ok(format!("database {} opens, {n} conversation(s)", path.display())),
                Err(e) => {
                    Check::Problem { what: format!("database {} cannot be read", path.display()), fix: e.to_string() }
                }
            }
        }
        Err(e) => Check::Problem { what: format!("database {} does not open", path.display()), fix: e.to_string() },
    }
}
