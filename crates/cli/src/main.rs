//! `codex-pool`: run conversations on a pool of `codex app-server` processes.

mod backend;
mod chat;
mod doctor;
mod keys;
mod mock;
mod serve;
mod vars;

use clap::builder::FalseyValueParser;
use clap::{Parser, Subcommand};

/// Run many Codex conversations at once on a pool of `codex app-server` processes.
#[derive(Debug, Parser)]
#[command(name = "codex-pool", version, about)]
struct Cli {
    /// On an error, also print where in codex-pool it happened (a backtrace).
    #[arg(short, long, global = true, env = "CODEX_POOL_BACKTRACE", value_parser = FalseyValueParser::new())]
    verbose: bool,
    /// Which logs go to stderr: a tracing filter such as `info` or `codex_pool=debug`
    /// (default: warnings).
    #[arg(long, global = true, value_name = "FILTER", env = "CODEX_POOL_LOG")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the pool over HTTP with streaming (SSE), on a store that survives restarts.
    Serve(Box<serve::ServeArgs>),
    /// Check what `serve` needs (codex, its login, the data directory, the port).
    Doctor(doctor::DoctorArgs),
    /// One conversation on stdin/stdout: each line is a turn, the reply streams back.
    Chat(chat::ChatArgs),
    /// Create, list and revoke the API keys applications use (in the store `serve` uses).
    Keys(keys::KeysArgs),
    /// Serve the fake OpenAI Responses API model that tests and demos use.
    MockModel(mock::MockArgs),
    /// Measure the pool on the real codex and the fake model; prints one JSON line.
    Bench(codex_pool_bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli: Cli = vars::parse();
    init_logs(cli.log.as_deref(), matches!(&cli.command, Command::Bench(args) if args.trace_hops));
    let backtrace = cli.verbose;
    match run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", report(&error, backtrace));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by `--log` (default, or when it does not parse: warnings); with
/// `hops`, the hop events of every turn are recorded too (`bench --trace-hops`).
fn init_logs(filter: Option<&str>, hops: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = filter.and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok()).unwrap_or_else(|| "warn".into());
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter);
    let hops = hops.then(|| {
        let only_hops = |m: &tracing::Metadata<'_>| m.target() == codex_pool_process::hops::HOPS_TARGET;
        codex_pool_bench::hops::layer().with_filter(tracing_subscriber::filter::filter_fn(only_hops))
    });
    tracing_subscriber::registry().with(logs).with(hops).init();
}

fn run(command: Command) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Doctor(args) => doctor::run(args).await,
            Command::Chat(args) => chat::run(args).await,
            Command::Keys(args) => keys::run(args).await,
            Command::MockModel(args) => mock::run(args).await,
            Command::Bench(args) => bench(&args).await,
        }
    })
}

/// `codex-pool bench`: the benchmark (`codex-pool-bench`) with this executable as the fake
/// model's and the soak's, its lines on stdout.
async fn bench(args: &codex_pool_bench::BenchArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let exe = std::env::current_exe().context("locating the codex-pool executable")?;
    let report = codex_pool_bench::run(args, &exe, &mut |line| println!("{line}")).await?;
    println!("{report}");
    Ok(())
}

/// An error as a command prints it: the message, then each cause on a line of its own, then
/// (when asked for) the backtrace captured with it.
fn report(error: &anyhow::Error, backtrace: bool) -> String {
    let mut out = format!("error: {error}");
    for cause in error.chain().skip(1) {
        out.push_str(&format!("\n  caused by: {cause}"));
    }
    if backtrace {
        let trace = error.backtrace();
        if trace.status() == std::backtrace::BacktraceStatus::Captured {
            out.push_str(&format!("\n\nbacktrace:\n{trace}"));
        } else {
            out.push_str("\n\n(no backtrace was captured; set RUST_BACKTRACE=1 as well)");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::report;

    #[test]
    fn errors_print_their_causes_and_no_backtrace_unless_asked() {
        let error = anyhow::anyhow!("the disk is full").context("could not save the conversation");
        let text = report(&error, false);
        assert_eq!(text, "error: could not save the conversation\n  caused by: the disk is full");
        assert!(report(&error, true).contains("backtrace"));
    }
}
