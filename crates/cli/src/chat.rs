//! `codex-pool chat`: one conversation, a turn per stdin line, replies streamed to stdout.

use crate::backend::ModelArgs;
use clap::Args;
use codex_pool_process::{AppServer, TurnEvent};
use codex_pool_protocol::methods::{ThreadSettings, ThreadStartParams, TurnStartParams};
use codex_pool_protocol::types::{TurnStatus, UserInput};
use std::io::Write;
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
    /// Give up on a turn that sends nothing for this many seconds.
    #[arg(long, default_value_t = 120)]
    turn_timeout_secs: u64,
}

pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    let backend = args.model.backend().await?;
    let server = AppServer::spawn(backend.config.clone()).await?;
    let codex = server.handle().clone();
    let params = ThreadStartParams {
        settings: ThreadSettings { developer_instructions: args.instructions.clone(), ..Default::default() },
        ephemeral: None,
    };
    let thread = codex.start_thread(&params).await?.thread;
    tracing::info!(thread_id = %thread.id, "conversation started");

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut failed = false;
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let turn = codex.start_turn(TurnStartParams::new(&thread.id, vec![UserInput::text(line)])).await?;
        let mut turn = turn.with_silence_timeout(Duration::from_secs(args.turn_timeout_secs));
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
    server.shutdown(Duration::from_secs(5)).await;
    if let Some(mock) = backend.mock {
        mock.shutdown().await;
    }
    if failed {
        anyhow::bail!("some turns did not complete");
    }
    Ok(())
}
