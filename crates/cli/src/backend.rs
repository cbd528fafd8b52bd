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
    /// Scratch folders, removed on drop.
    pub _scratch: TempDir,
}

impl ModelArgs {
    /// Resolves the options: finds codex, starts the fake model if needed.
    pub async fn backend(&self) -> anyhow::Result<Backend> {
        let bin = find_checked(self.codex_bin.as_deref())?;
        let scratch = tempfile::Builder::new().prefix("codex-pool-").tempdir().context("creating a scratch folder")?;
        let work_dir = scratch.path().join("empty");
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
            (Some(ModelProvider::new("codex-pool", base_url)), scratch.path().join("codex-home"))
        };
        let codex_home = self.codex_home.clone().unwrap_or(default_home);
        let mut config = ProcessConfig::new(bin, codex_home, work_dir);
        match &provider {
            Some(p) => {
                config = config.with_overrides(p.overrides());
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
        Ok(Backend { config, mock, _scratch: scratch })
    }
}
