//! Choosing the model codex talks to, and the process settings that follow from it.

use anyhow::Context;
use clap::Args;
use codex_pool_mock_model::{MockConfig, MockModel};
use codex_pool_process::{find_checked, CaBundle, ModelProvider, ProcessConfig};
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
