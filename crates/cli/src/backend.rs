//! Choosing the model codex talks to, and the process settings that follow from it.

use anyhow::Context;
use clap::Args;
use codex_pool_mock_model::{MockConfig, MockModel};
use codex_pool_process::{find_checked, ModelProvider, ProcessConfig};
use std::path::PathBuf;
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
    /// The model (default: CODEX_MODEL, else `mock-model` for the fake and custom servers, else codex's default).
    #[arg(long, env = "CODEX_MODEL")]
    model: Option<String>,
    /// The codex binary (default: CODEX_BIN, then the repository's pinned install, then PATH).
    #[arg(long, value_name = "PATH")]
    codex_bin: Option<PathBuf>,
    /// How often codex retries a failed model request or a broken stream (codex's default: 4 and 5).
    #[arg(long, value_name = "N")]
    model_retries: Option<u32>,
    /// CODEX_HOME for the processes (default: a scratch folder for the fake and custom servers;
    /// $CODEX_HOME or ~/.codex with --openai, where the login is).
    #[arg(long, value_name = "DIR")]
    codex_home: Option<PathBuf>,
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
    /// Scratch folders, removed on drop (none when the folders are the caller's).
    pub _scratch: Option<TempDir>,
}

impl ModelArgs {
    /// Resolves the options: finds codex, starts the fake model if needed. codex's folders go
    /// under `dir` (`codex-home/`, `empty/`, `home/`), or a scratch folder removed on drop.
    pub async fn backend(&self, dir: Option<&std::path::Path>) -> anyhow::Result<Backend> {
        let bin = find_checked(self.codex_bin.as_deref())?;
        let scratch = match dir {
            Some(_) => None,
            None => {
                Some(tempfile::Builder::new().prefix("codex-pool-").tempdir().context("creating a scratch folder")?)
            }
        };
        let base = dir.map(std::path::Path::to_path_buf).or_else(|| scratch.as_ref().map(|s| s.path().to_path_buf()));
        let base = base.expect("a folder or a scratch folder");
        let work_dir = base.join("empty");
        let mut mock = None;
        let (provider, default_home) = if self.openai {
            let home = std::env::var_os("CODEX_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".codex")))
                .context("neither CODEX_HOME nor HOME is set; pass --codex-home")?;
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
        let mut config = ProcessConfig::new(bin, codex_home, work_dir);
        match &provider {
            Some(p) => {
                config = config.with_provider(p);
                let model = self.model.clone().unwrap_or_else(|| "mock-model".to_owned());
                config = config.with_override("model", codex_pool_process::toml_string(&model));
            }
            None => {
                config.require_login = true;
                if let Some(model) = &self.model {
                    config = config.with_override("model", codex_pool_process::toml_string(model));
                }
            }
        }
        let model = match &provider {
            Some(_) => Some(self.model.clone().unwrap_or_else(|| "mock-model".to_owned())),
            None => self.model.clone(),
        };
        Ok(Backend { config, mock, describe, model, _scratch: scratch })
    }
}

/// A process configuration pointed at a Responses-compatible server, with its folders under
/// `scratch`: `codex-home/`, `empty/` (the working directory) and `home/`.
pub fn codex_process_config(bin: PathBuf, scratch: &std::path::Path, base_url: &str, model: &str) -> ProcessConfig {
    let mut provider = ModelProvider::new("codex-pool", base_url);
    provider.request_max_retries = Some(0);
    provider.stream_max_retries = Some(0);
    ProcessConfig::new(bin, scratch.join("codex-home"), scratch.join("empty"))
        .with_provider(&provider)
        .with_override("model", codex_pool_process::toml_string(model))
}

/// The fake model in a child process (`codex-pool mock-model`), so that its CPU time is not
/// counted as the pool's in benchmarks.
pub struct MockChild {
    child: tokio::process::Child,
    addr: String,
    /// The base URL to give codex.
    pub base_url: String,
}

impl MockChild {
    /// Starts `codex-pool mock-model` on a free loopback port.
    pub async fn spawn(deltas: usize) -> anyhow::Result<Self> {
        use tokio::io::AsyncBufReadExt;
        let exe = std::env::current_exe().context("locating the codex-pool executable")?;
        let mut child = tokio::process::Command::new(exe)
            .args(["mock-model", "--listen", "127.0.0.1:0", "--deltas", &deltas.to_string()])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the fake model")?;
        let stdout = child.stdout.take().context("fake model stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
            .await
            .context("the fake model did not start")??
            .context("the fake model exited")?;
        let base_url = first.rsplit(' ').next().unwrap_or_default().to_owned();
        let addr = base_url.trim_start_matches("http://").trim_end_matches("/v1").to_owned();
        Ok(Self { child, addr, base_url })
    }

    /// `(requests, request body bytes)` received so far.
    pub async fn stats(&self) -> anyhow::Result<(u64, u64)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(&self.addr).await?;
        conn.write_all(format!("GET /stats HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr).as_bytes())
            .await?;
        let mut response = String::new();
        conn.read_to_string(&mut response).await?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(body.trim()).context("fake model stats")?;
        Ok((v["requests"].as_u64().unwrap_or(0), v["body_bytes"].as_u64().unwrap_or(0)))
    }

    /// Stops the fake model.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
