//! `codex-pool mock-model`: the fake model as a standalone server.

use clap::Args;
use codex_pool_mock_model::{MockConfig, MockModel, TlsOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Options of `codex-pool mock-model`.
#[derive(Debug, Args)]
pub struct MockArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Text deltas per reply.
    #[arg(long, default_value_t = 4)]
    deltas: usize,
    /// Delay before each delta, in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Write every request body to DIR/NNNNNN.json.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Serve HTTPS, with a CA made at start (its certificate is written to --ca-out).
    #[arg(long)]
    tls: bool,
    /// Where to write the CA certificate (PEM) with --tls (default: a file in the temp folder).
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca_out: Option<PathBuf>,
    /// Report input tokens as a real model would (a quarter of the request's bytes), so codex's
    /// compaction threshold bites as it would; 10 a request otherwise.
    #[arg(long)]
    tokens_from_size: bool,
}

pub async fn run(args: MockArgs) -> anyhow::Result<()> {
    let tls = args.tls.then(|| TlsOptions {
        ca_path: args
            .ca_out
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("codex-pool-mock-ca-{}.pem", std::process::id()))),
    });
    let mock = MockModel::start(MockConfig {
        listen: args.listen,
        deltas: args.deltas,
        delay: Duration::from_millis(args.delay_ms),
        log_dir: args.log_dir,
        keep_requests: false,
        tls,
        tokens_from_size: args.tokens_from_size,
    })
    .await?;
    // The address comes last: whoever starts it may stop reading there.
    if let Some(ca) = mock.ca_path() {
        println!("mock model CA certificate in {}", ca.display());
    }
    println!("mock model listening at {}", mock.base_url());
    use std::io::Write;
    std::io::stdout().flush()?;
    tokio::signal::ctrl_c().await?;
    mock.shutdown().await;
    Ok(())
}
