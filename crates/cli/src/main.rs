//! `codex-pool`: run conversations on a pool of `codex app-server` processes.

mod backend;
mod bench;
mod chat;
mod mock;

use clap::{Parser, Subcommand};

/// Run many Codex conversations at once on a pool of `codex app-server` processes.
#[derive(Debug, Parser)]
#[command(name = "codex-pool", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One conversation on stdin/stdout: each line is a turn, the reply streams back.
    Chat(chat::ChatArgs),
    /// Serve the fake OpenAI Responses API model that tests and demos use.
    MockModel(mock::MockArgs),
    /// Measure the pool on the real codex and the fake model; prints one JSON line.
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CODEX_POOL_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Chat(args) => chat::run(args).await,
            Command::MockModel(args) => mock::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    })
}
