//! `codex-pool chat`: one conversation on a pool of one process; a turn per stdin line, the reply
//! streamed to stdout.

use crate::backend::ModelArgs;
use clap::Args;
use codex_pool::{Pool, PoolConfig, Profile, TurnEvent, TurnOptions};
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::types::{TurnStatus, UserInput};
use codex_pool_store::MemoryStore;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Options of `codex-pool chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Developer instructions for the conversation (e.g. a character to play).
    #[arg(long)]
    instructions: Option<String>,
    /// Conversation profile: `chat` (lean, no tools) or `default` (codex's own coding agent).
    #[arg(long, default_value = "chat")]
    profile: Profile,
    /// Give up on a turn that sends nothing for this many seconds.
    #[arg(long, default_value_t = 120)]
    turn_timeout_secs: u64,
    /// Give up on a turn whose model cannot be reached (codex only announces retries) for this
    /// many seconds.
    #[arg(long, default_value_t = 30)]
    progress_timeout_secs: u64,
}

pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    let backend = args.model.backend(None).await?;
    let mut config = PoolConfig::new(backend.config.clone());
    config.size = 1;
    config.ca_bundle = backend.ca_bundle.clone();
    config.turn_timeout = Duration::from_secs(args.turn_timeout_secs);
    config.progress_timeout = Duration::from_secs(args.progress_timeout_secs);
    let pool = Pool::new(config, Arc::new(MemoryStore::new()));
    let result = converse(&pool, &args).await;
    pool.shutdown().await;
    if let Some(mock) = backend.mock {
        mock.shutdown().await;
    }
    result
}

async fn converse(pool: &Pool, args: &ChatArgs) -> anyhow::Result<()> {
    pool.ensure_started().await?;
    let settings = ThreadSettings { developer_instructions: args.instructions.clone(), ..Default::default() };
    let thread = pool.create_thread_with(settings, args.profile).await?;
    tracing::info!(thread_id = %thread, "conversation started");

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut failed = false;
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let mut turn = pool.start_turn(&thread, vec![UserInput::text(line)], TurnOptions::default()).await?;
        let mut stdout = std::io::stdout().lock();
        while let Some(event) = turn.next().await {
            match event {
                TurnEvent::AgentMessageDelta { delta, .. } => {
                    stdout.write_all(delta.as_bytes())?;
                    stdout.flush()?;
                }
                TurnEvent::Error { error, will_retry } => {
                    eprintln!("\n[codex error{}: {}]", if will_retry { ", retrying" } else { "" }, error.message);
                }
                TurnEvent::Completed { status: TurnStatus::Completed, .. } => writeln!(stdout)?,
                TurnEvent::Completed { status, error, .. } => {
                    writeln!(stdout)?;
                    let why = error.map(|e| e.message).unwrap_or_default();
                    eprintln!("[turn ended: {status:?} {why}]");
                    failed = true;
                }
                TurnEvent::Aborted { message, .. } => {
                    writeln!(stdout)?;
                    eprintln!("[turn aborted: {message}]");
                    failed = true;
                }
                _ => {}
            }
        }
    }
    anyhow::ensure!(!failed, "some turns did not complete");
    Ok(())
}
