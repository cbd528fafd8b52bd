//! Set-up for tests that drive the real pinned `codex app-server` against the fake model.

use codex_pool_mock_model::{MockConfig, MockModel, TlsOptions};
use codex_pool_process::ca::SystemRoots;
use codex_pool_process::{find_checked, AppServer, ModelProvider, ProcessConfig, TurnEvent, TurnStream};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use tempfile::TempDir;

/// A fake model and a scratch folder for CODEX_HOME and the empty working directory.
pub struct Env {
    /// The fake model.
    pub mock: MockModel,
    /// Scratch folder: `codex-home/`, `empty/`, `home/`.
    pub dir: TempDir,
}

/// Logs to the test output, filtered by RUST_LOG (default warn).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

impl Env {
    /// A fake model with default settings.
    pub async fn new() -> Self {
        Self::with_mock(MockConfig::default()).await
    }

    /// A fake model with the given settings.
    pub async fn with_mock(config: MockConfig) -> Self {
        init_tracing();
        let mock = MockModel::start(config).await.expect("mock model starts");
        Env { mock, dir: tempfile::tempdir().expect("temp dir") }
    }

    /// A fake model over HTTPS, its CA written to `mock-ca.pem` in the scratch folder.
    pub async fn with_tls() -> Self {
        init_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = Some(TlsOptions { ca_path: dir.path().join("mock-ca.pem") });
        let mock = MockModel::start(MockConfig { tls, ..MockConfig::default() }).await.expect("mock model starts");
        Env { mock, dir }
    }

    /// A file that stands for the system roots in tests of HTTPS: the system's bundle (if the
    /// machine has one) plus the fake model's CA.
    pub fn system_plus_mock_ca(&self) -> PathBuf {
        let ca = self.mock.ca_der().expect("the fake model serves HTTPS");
        let path = self.dir.path().join("system-plus-mock-ca.pem");
        SystemRoots::write_with(std::slice::from_ref(ca), &path).expect("write the roots");
        path
    }

    /// A process config pointed at the fake model, with codex's retries off so failures are quick.
    pub fn config(&self) -> ProcessConfig {
        self.config_for(&self.mock.base_url())
    }

    /// [`Env::config`] pointed at another Responses API address.
    pub fn config_for(&self, base_url: &str) -> ProcessConfig {
        let bin =
            find_checked(codex_bin().as_deref()).expect("the pinned codex is installed (npm ci --prefix tools/codex)");
        let mut provider = ModelProvider::new("mock", base_url);
        provider.request_max_retries = Some(0);
        provider.stream_max_retries = Some(0);
        let mut config = ProcessConfig::new(bin, self.dir.path().join("codex-home"), self.dir.path().join("empty"))
            .with_provider(&provider)
            .with_override("model", "\"mock-model\"");
        if let Some(filter) = std::env::var("CODEX_POOL_CODEX_LOG").ok().filter(|v| !v.is_empty()) {
            config.codex_log = filter;
        }
        config
    }

    /// One process with [`Env::config`].
    pub async fn spawn(&self) -> AppServer {
        AppServer::spawn(self.config()).await.expect("codex app-server starts")
    }

    /// Request bodies the fake model received whose last user message contains `needle`.
    pub fn requests_with(&self, needle: &str) -> Vec<Value> {
        self.mock
            .requests()
            .into_iter()
            .map(|r| r.body)
            .filter(|b| last_user_text(b).is_some_and(|t| t.contains(needle)))
            .collect()
    }
}

/// The codex binary the tests were pointed at with `CODEX_BIN` (the pinned install otherwise).
pub fn codex_bin() -> Option<PathBuf> {
    std::env::var_os("CODEX_BIN").filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// The last user message of a model request body.
pub fn last_user_text(body: &Value) -> Option<String> {
    codex_pool_mock_model::last_user_text(body.get("input")?.as_array()?)
}

/// Every text of every message in a request body, in order, as (role, text).
pub fn messages(body: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for item in body["input"].as_array().into_iter().flatten() {
        let role = item.get("role").and_then(Value::as_str).unwrap_or("").to_owned();
        for part in item.get("content").and_then(Value::as_array).into_iter().flatten() {
            if let Some(t) = part.get("text").and_then(Value::as_str) {
                out.push((role.clone(), t.to_owned()));
            }
        }
    }
    out
}

/// Reads a turn to its end (with a generous bound so a broken test fails instead of hanging).
pub async fn finish(turn: TurnStream) -> (String, TurnEvent, Vec<TurnEvent>) {
    let mut turn = turn;
    let mut events = Vec::new();
    let mut text = String::new();
    let end = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(e) = turn.next().await {
            if let TurnEvent::AgentMessageDelta { delta, .. } = &e {
                text.push_str(delta);
            }
            if e.is_terminal() {
                return e;
            }
            events.push(e);
        }
        panic!("stream ended without a terminal event")
    })
    .await
    .expect("turn ends within 60 s");
    (text, end, events)
}

/// Grace for shutdowns in tests.
pub const SHUTDOWN: Duration = Duration::from_secs(5);

/// Polls `ok` every 20 ms until it holds; fails the test, naming `what`, after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !ok() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `signal` to process `pid`.
pub fn kill(pid: u32, signal: i32) {
    // SAFETY: a plain syscall.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// The value of variable `name` in the environment of process `pid`, from `/proc`.
pub fn env_of(pid: u32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    environ.split(|b| *b == 0).find_map(|var| String::from_utf8_lossy(var).strip_prefix(&prefix).map(str::to_owned))
}

/// Whether process `pid` exists (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

/// The codex processes running with `CODEX_HOME` under `dir` (so tests running at once, each in
/// its own scratch folder, count only their own), read from `/proc`.
pub fn codex_processes_under(dir: &std::path::Path) -> Vec<u32> {
    let needle = format!("CODEX_HOME={}", dir.display());
    let mut found: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| alive(*pid))
        .filter(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            environ.split(|b| *b == 0).any(|var| String::from_utf8_lossy(var).starts_with(&needle))
        })
        .collect();
    found.sort_unstable();
    found
}
