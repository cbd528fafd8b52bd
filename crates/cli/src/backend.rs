//! Choosing the model codex talks to, and the process settings that follow from it.

use anyhow::Context;
use clap::Args;
use codex_pool_mock_model::{MockConfig, MockModel};
use codex_pool_process::{find_checked, CaBundle, ModelProvider, ProcessConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tempfile::TempDir;

/// Which model to use and where codex lives.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Run against the built-in fake model (the default when no other model is chosen).
    #[arg(long, conflicts_with_all = ["model_base_url", "openai"])]
    mock_model: bool,
    /// Run against any OpenAI Responses-compatible server at this base URL (e.g. http://127.0.0.1:8080/v1).
    #[arg(long, value_name = "URL", conflicts_with = "openai")]
    model_base_url: Option<String>,
    /// Run against OpenAI with the account codex is logged in with (`codex login`).
    #[arg(long)]
    openai: bool,
    /// The model (default: `mock-model` for the fake and custom servers, else codex's default).
    #[arg(long, env = "CODEX_MODEL")]
    model: Option<String>,
    /// The codex binary (default: the repository's pinned install, then PATH).
    #[arg(long, value_name = "PATH", env = "CODEX_BIN")]
    codex_bin: Option<PathBuf>,
    /// How often codex retries a failed model request or a broken stream (codex's default: 4 and 5).
    #[arg(long, value_name = "N")]
    model_retries: Option<u32>,
    /// CODEX_HOME for the processes (default: a scratch folder for the fake and custom servers;
    /// $CODEX_HOME or ~/.codex with --openai, where the login is).
    #[arg(long, value_name = "DIR")]
    codex_home: Option<PathBuf>,
    /// The root certificates codex trusts for an https model: `auto` (just the roots its hosts
    /// need, found at start), `system` (codex's default: the whole system store, about twice
    /// codex's CPU per turn), or the path of a PEM file. A plain http model gets a one-certificate
    /// placeholder with `auto`.
    #[arg(long, value_name = "auto|system|PATH", default_value = "auto")]
    ca_bundle: CaBundle,
}

/// A process configuration ready to spawn, and what must live as long as it.
pub struct Backend {
    /// The configuration.
    pub config: ProcessConfig,
    /// The fake model, when it is used.
    pub mock: Option<MockModel>,
    /// What codex is pointed at, for people: `the built-in fake model`, a URL, `OpenAI`.
    pub describe: String,
    /// The model asked for (`--model`, CODEX_MODEL), or the fake model's.
    pub model: Option<String>,
    /// The root certificates for the pool (`--ca-bundle`).
    pub ca_bundle: CaBundle,
    /// Scratch folders, removed on drop (none when the folders are the caller's).
    pub _scratch: Option<TempDir>,
}

impl ModelArgs {
    /// Resolves the options: finds codex, starts the fake model if needed. codex's folders go
    /// under `dir` (`codex-home/`, `empty/`, `home/`), or a scratch folder removed on drop.
    pub async fn backend(&self, dir: Option<&std::path::Path>) -> anyhow::Result<Backend> {
        let bin = find_checked(self.codex_bin.as_deref())?;
        let (base, scratch) = match dir {
            Some(dir) => (dir.to_path_buf(), None),
            None => {
                let scratch =
                    tempfile::Builder::new().prefix("codex-pool-").tempdir().context("creating a scratch folder")?;
                (scratch.path().to_path_buf(), Some(scratch))
            }
        };
        let work_dir = base.join("empty");
        let mut mock = None;
        let (provider, default_home) = if self.openai {
            let home =
                crate::vars::default_codex_home().context("neither CODEX_HOME nor HOME is set; pass --codex-home")?;
            (None, home)
        } else {
            let base_url = match &self.model_base_url {
                Some(url) => url.clone(),
                None => {
                    let started =
                        MockModel::start(MockConfig { keep_requests: false, ..MockConfig::default() }).await?;
                    let url = started.base_url();
                    mock = Some(started);
                    url
                }
            };
            let mut provider = ModelProvider::new("codex-pool", base_url);
            provider.request_max_retries = self.model_retries;
            provider.stream_max_retries = self.model_retries;
            (Some(provider), base.join("codex-home"))
        };
        let codex_home = self.codex_home.clone().unwrap_or(default_home);
        let describe = match (&mock, &self.model_base_url, self.openai) {
            (Some(_), _, _) => "the built-in fake model".to_owned(),
            (None, Some(url), _) => url.clone(),
            _ => "OpenAI (codex's login)".to_owned(),
        };
        // Our own provider serves `mock-model` unless told otherwise; codex's login, its own default.
        let model = match &provider {
            Some(_) => Some(self.model.clone().unwrap_or_else(|| "mock-model".to_owned())),
            None => self.model.clone(),
        };
        let mut config = ProcessConfig::new(bin, codex_home, work_dir);
        config.codex_log = crate::vars::codex_log();
        match &provider {
            Some(p) => config = config.with_provider(p),
            None => config.require_login = true,
        }
        if let Some(model) = &model {
            config = config.with_override("model", codex_pool_process::toml_string(model));
        }
        Ok(Backend { config, mock, describe, model, ca_bundle: self.ca_bundle.clone(), _scratch: scratch })
    }
}

/// A process configuration pointed at a Responses-compatible server, with its folders under
/// `scratch`: `codex-home/`, `empty/` (the working directory) and `home/`.
pub fn codex_process_config(bin: PathBuf, scratch: &std::path::Path, base_url: &str, model: &str) -> ProcessConfig {
    let mut provider = ModelProvider::new("codex-pool", base_url);
    provider.request_max_retries = Some(0);
    provider.stream_max_retries = Some(0);
    let mut config = ProcessConfig::new(bin, scratch.join("codex-home"), scratch.join("empty"))
        .with_provider(&provider)
        .with_override("model", codex_pool_process::toml_string(model));
    config.codex_log = crate::vars::codex_log();
    config
}

/// The fake model in a child process (`codex-pool mock-model`), so that its CPU time is not
/// counted as the pool's in benchmarks.
pub struct MockChild {
    child: tokio::process::Child,
    addr: String,
    /// The base URL to give codex.
    pub base_url: String,
    /// With HTTPS: a client that trusts the fake model's CA.
    tls: Option<tokio_rustls::TlsConnector>,
}

impl MockChild {
    /// Starts `codex-pool mock-model` on a free loopback port; with `ca_out`, over HTTPS, its CA
    /// written there.
    pub async fn spawn(deltas: usize, ca_out: Option<&Path>) -> anyhow::Result<Self> {
        use tokio::io::AsyncBufReadExt;
        let exe = std::env::current_exe().context("locating the codex-pool executable")?;
        let mut command = tokio::process::Command::new(exe);
        command.args(["mock-model", "--listen", "127.0.0.1:0", "--deltas", &deltas.to_string()]);
        if let Some(ca) = ca_out {
            command.arg("--tls").arg("--ca-out").arg(ca);
        }
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the fake model")?;
        let stdout = child.stdout.take().context("fake model stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let listening = async {
            loop {
                match lines.next_line().await? {
                    Some(line) if line.starts_with("mock model listening at ") => return Ok(Some(line)),
                    Some(_) => continue,
                    None => return Ok::<_, std::io::Error>(None),
                }
            }
        };
        let line = tokio::time::timeout(std::time::Duration::from_secs(10), listening)
            .await
            .context("the fake model did not start")??
            .context("the fake model exited")?;
        let base_url = line.rsplit(' ').next().unwrap_or_default().to_owned();
        let addr = base_url.split_once("://").map_or("", |(_, a)| a).trim_end_matches("/v1").to_owned();
        let tls = ca_out.map(trusting).transpose()?;
        Ok(Self { child, addr, base_url, tls })
    }

    /// `(requests, request body bytes)` received so far.
    pub async fn stats(&self) -> anyhow::Result<(u64, u64)> {
        use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
        async fn get<S: AsyncRead + AsyncWrite + Unpin>(mut conn: S, host: &str) -> std::io::Result<String> {
            conn.write_all(format!("GET /stats HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
                .await?;
            let mut response = Vec::new();
            // A TLS peer may close without close_notify once it has answered: what was read counts.
            match conn.read_to_end(&mut response).await {
                Err(e) if e.kind() != std::io::ErrorKind::UnexpectedEof => Err(e),
                _ => Ok(String::from_utf8_lossy(&response).into_owned()),
            }
        }
        let conn = tokio::net::TcpStream::connect(&self.addr).await?;
        let response = match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
                get(tls.connect(name, conn).await?, &self.addr).await?
            }
            None => get(conn, &self.addr).await?,
        };
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(body.trim()).context("fake model stats")?;
        Ok((v["requests"].as_u64().unwrap_or(0), v["body_bytes"].as_u64().unwrap_or(0)))
    }

    /// Stops the fake model.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A TLS client that trusts the certificates in `ca`.
fn trusting(ca: &Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = codex_pool_process::ca::read_certs(ca).with_context(|| format!("reading {}", ca.display()))?;
    roots.add_parsable_certificates(certs);
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
