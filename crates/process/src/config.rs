//! How a `codex app-server` process is started.

use crate::ca::{CaFiles, CODEX_CA_CERT_ENV, SSL_CERT_DIR_ENV, SSL_CERT_FILE_ENV};
use crate::error::SpawnError;
use crate::policy::{DeclinePolicy, ServerRequestHandler};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

/// A Responses-API-compatible model provider that codex is pointed at with config overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelProvider {
    /// The provider id (the key under `model_providers`).
    pub id: String,
    /// The base URL, e.g. `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// How many times codex retries a failed request (codex's default is 4).
    pub request_max_retries: Option<u32>,
    /// How many times codex retries a broken stream (codex's default is 5).
    pub stream_max_retries: Option<u32>,
}

impl ModelProvider {
    /// A provider with codex's default retry behaviour.
    pub fn new(id: impl Into<String>, base_url: impl Into<String>) -> Self {
        Self { id: id.into(), base_url: base_url.into(), request_max_retries: None, stream_max_retries: None }
    }

    /// How errors name it: `provider "ID" at BASE_URL`.
    pub fn describe(&self) -> String {
        format!("provider {:?} at {}", self.id, self.base_url)
    }

    /// The config overrides that select this provider.
    pub fn overrides(&self) -> Vec<(String, String)> {
        let mut table = format!(
            "{{name={}, base_url={}, wire_api=\"responses\"",
            toml_string(&self.id),
            toml_string(&self.base_url)
        );
        if let Some(n) = self.request_max_retries {
            table.push_str(&format!(", request_max_retries={n}"));
        }
        if let Some(n) = self.stream_max_retries {
            table.push_str(&format!(", stream_max_retries={n}"));
        }
        table.push('}');
        vec![("model_provider".to_owned(), toml_string(&self.id)), (format!("model_providers.{}", self.id), table)]
    }
}

/// Quotes a string as a TOML basic string.
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Overrides every codex-pool process gets, whatever the profile: no skills reach a
/// conversation, no project docs, and nothing at start-up reaches out to the network or runs the
/// user's shell start-up files. Each was checked against the pinned CLI (an unknown key makes
/// codex send a `configWarning`; these do not).
pub const BASE_OVERRIDES: &[(&str, &str)] = &[
    // The built-in system skills are not installed, so no `<skills_instructions>` block and no
    // `$skill` mention expands into SKILL.md text.
    ("skills.bundled.enabled", "false"),
    // No skills catalog block even if some skill folder is found.
    ("skills.include_instructions", "false"),
    // No AGENTS.md or other project docs (the working directory is empty anyway).
    ("project_doc_max_bytes", "0"),
    // Plugin sync runs `git ls-remote` against a remote host at start-up.
    ("features.plugins", "false"),
    // The shell snapshot runs `bash -lc` over the user's ~/.bashrc for every thread.
    ("features.shell_snapshot", "false"),
    // Unload a thread as soon as it has no subscriber (codex's default waits 60 s): memory then
    // follows the pool's unsubscribe policy.
    ("thread_unload_delay_secs", "0"),
    ("check_for_update_on_startup", "false"),
    ("analytics.enabled", "false"),
];

/// The override that keeps the root-certificate variables codex is given ([`ProcessConfig::ca`])
/// out of the commands its tools run, which should see the system's roots. Set before the other
/// overrides, so one of the user's for the same key wins.
pub const TOOL_ENV_EXCLUDE: (&str, &str) = ("shell_environment_policy.exclude", r#"["SSL_CERT_FILE", "SSL_CERT_DIR"]"#);

/// The variables of the service's environment that codex is started with, when set: what it
/// and the commands it runs need to find programs, speak the user's language and time zone,
/// write temporary files, trust certificates and reach the network through a proxy. Nothing else
/// of the service's environment reaches codex (not `CODEX_POOL_TOKEN`, not `DATABASE_URL`):
/// codex and everything it starts get [`ProcessConfig::env`] on top of these, and `HOME`,
/// `CODEX_HOME` and `RUST_LOG` of the pool's.
pub const INHERITED_ENV: &[&str] = &[
    "PATH",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "TERM",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "CODEX_CA_CERTIFICATE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
];

/// The prefix of the locale variables codex inherits too (`LC_ALL`, `LC_CTYPE`, ...).
pub const INHERITED_ENV_PREFIX: &str = "LC_";

/// The variables codex's own OpenAI provider reads an API key from; inherited only when codex
/// uses that provider ([`ProcessConfig::provider_url`] is `None`).
pub const OPENAI_KEY_ENV: &[&str] = &["OPENAI_API_KEY", "CODEX_API_KEY", "OPENAI_BASE_URL"];

/// The variables of `vars` codex is started with (see [`INHERITED_ENV`]); `openai` adds
/// [`OPENAI_KEY_ENV`].
pub fn inherited_env(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    openai: bool,
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    vars.into_iter()
        .filter(|(key, _)| {
            let key = key.to_string_lossy();
            INHERITED_ENV.contains(&&*key)
                || key.starts_with(INHERITED_ENV_PREFIX)
                || (openai && OPENAI_KEY_ENV.contains(&&*key))
        })
        .collect()
}

/// Everything needed to start and drive one process.
#[derive(Clone)]
pub struct ProcessConfig {
    /// The native codex binary (see [`crate::discovery`]).
    pub codex_bin: PathBuf,
    /// `CODEX_HOME` of the process: where codex keeps threads, logs and login.
    pub codex_home: PathBuf,
    /// The working directory of the process and, by default, of its threads: an empty folder, so
    /// no `AGENTS.md` or project files leak into conversations.
    pub work_dir: PathBuf,
    /// `HOME` of the process. codex reads skills from `$HOME/.agents/skills`, so by default it
    /// is an empty folder of the pool's, never the user's home. `None` keeps the inherited one.
    pub home_dir: Option<PathBuf>,
    /// `-c key=value` overrides, values in TOML. Starts with [`BASE_OVERRIDES`].
    pub overrides: Vec<(String, String)>,
    /// Extra environment variables for the process. codex gets these and, of the service's own
    /// environment, only [`INHERITED_ENV`]: a variable codex needs beyond those (a model
    /// provider's API key, say) goes here.
    pub env: Vec<(String, String)>,
    /// The root certificates codex trusts: `SSL_CERT_FILE` and `SSL_CERT_DIR` (and no
    /// `CODEX_CA_CERTIFICATE`, which would win over them). `None` leaves the inherited
    /// environment alone. A pool sets it (see [`crate::ca`]).
    pub ca: Option<CaFiles>,
    /// The base URL of the model provider codex is pointed at (set by
    /// [`ProcessConfig::with_provider`]); `None` is codex's built-in OpenAI provider.
    pub provider_url: Option<String>,
    /// Notification methods to opt out of (less work for codex and for us).
    pub opt_out_notifications: Vec<String>,
    /// Fail start-up unless codex is logged in (for providers that need an OpenAI login).
    pub require_login: bool,
    /// Limit for `initialize`.
    pub handshake_timeout: Duration,
    /// Limit for every other request.
    pub request_timeout: Duration,
    /// Requests allowed in flight at once (codex answers "overloaded" past ~128 queued).
    pub max_in_flight: usize,
    /// Commands (requests, turns, interrupts) the process's actor may have queued; past it,
    /// callers get [`crate::ProcessError::CommandQueueFull`] at once.
    pub max_queued_commands: usize,
    /// Longest line accepted from the process; longer ones are skipped with a warning.
    pub max_line_bytes: usize,
    /// Events a turn's consumer may fall behind before the turn is stopped to bound memory.
    pub max_turn_backlog: usize,
    /// After an interrupt, how long to wait for codex to end the turn before giving up on it.
    pub interrupt_grace: Duration,
    /// Answers the server's requests.
    pub handler: Arc<dyn ServerRequestHandler>,
    /// Where codex sends its model requests, named in the error of a turn that cannot reach them
    /// (set by [`ProcessConfig::with_provider`]).
    pub endpoint: Option<String>,
    /// A name for logs.
    pub label: String,
    /// codex's own log filter, its `RUST_LOG` (default `warn`); codex logs to its stderr, whose
    /// last lines a failed start reports.
    pub codex_log: String,
}

impl std::fmt::Debug for ProcessConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessConfig")
            .field("codex_bin", &self.codex_bin)
            .field("codex_home", &self.codex_home)
            .field("work_dir", &self.work_dir)
            .field("overrides", &self.overrides.len())
            .field("ca", &self.ca)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl ProcessConfig {
    /// A config with sensible defaults and [`BASE_OVERRIDES`]; add the model provider with
    /// [`ProcessConfig::with_overrides`] (e.g. from [`ModelProvider::overrides`]). The isolated
    /// `HOME` is a folder `home` next to `work_dir`.
    pub fn new(codex_bin: PathBuf, codex_home: PathBuf, work_dir: PathBuf) -> Self {
        let home_dir = work_dir.parent().map(|p| p.join("home")).unwrap_or_else(|| codex_home.join("home"));
        Self {
            codex_bin,
            codex_home,
            work_dir,
            home_dir: Some(home_dir),
            overrides: BASE_OVERRIDES.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            env: Vec::new(),
            ca: None,
            provider_url: None,
            opt_out_notifications: Vec::new(),
            require_login: false,
            handshake_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            max_in_flight: 64,
            max_queued_commands: 4096,
            max_line_bytes: 256 << 20,
            max_turn_backlog: 100_000,
            interrupt_grace: Duration::from_secs(5),
            handler: Arc::new(DeclinePolicy),
            endpoint: None,
            label: "codex".to_owned(),
            codex_log: "warn".to_owned(),
        }
    }

    /// The command that starts the process: `codex app-server -c ...` with a clean environment
    /// (the [`INHERITED_ENV`] variables of ours, `HOME`, `CODEX_HOME`, the root certificates,
    /// [`ProcessConfig::env`]), the working directory, piped stdio, its own process group, and
    /// death with its parent.
    pub fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.codex_bin);
        cmd.arg("app-server");
        cmd.env_clear().envs(inherited_env(std::env::vars_os(), self.provider_url.is_none()));
        if let Some(ca) = &self.ca {
            cmd.env(SSL_CERT_FILE_ENV, &ca.cert_file).env(SSL_CERT_DIR_ENV, &ca.cert_dir).env_remove(CODEX_CA_CERT_ENV);
            let (key, value) = TOOL_ENV_EXCLUDE;
            cmd.arg("-c").arg(format!("{key}={value}"));
        }
        for (key, value) in &self.overrides {
            cmd.arg("-c").arg(format!("{key}={value}"));
        }
        match (&self.home_dir, std::env::var_os("HOME")) {
            (Some(home), _) => cmd.env("HOME", home),
            (None, Some(inherited)) => cmd.env("HOME", inherited),
            (None, None) => &mut cmd,
        };
        cmd.env("CODEX_HOME", &self.codex_home)
            .env("RUST_LOG", &self.codex_log)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.work_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // Own process group, so shutdown reaches codex's children too.
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Die with the thread that spawned us, so no codex outlives a killed pool.
                #[cfg(target_os = "linux")]
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Creates the folders the process needs; an error names the folder.
    pub fn prepare_dirs(&self) -> Result<(), SpawnError> {
        for dir in [&self.codex_home, &self.work_dir].into_iter().chain(self.home_dir.as_ref()) {
            std::fs::create_dir_all(dir).map_err(|source| SpawnError::Prepare { path: dir.clone(), source })?;
        }
        Ok(())
    }

    /// Adds a `-c key=value` override (value in TOML syntax).
    pub fn with_override(mut self, key: impl Into<String>, toml_value: impl Into<String>) -> Self {
        self.overrides.push((key.into(), toml_value.into()));
        self
    }

    /// Points codex at a model provider: its overrides, and its name in error messages.
    pub fn with_provider(mut self, provider: &ModelProvider) -> Self {
        self.endpoint = Some(provider.describe());
        self.provider_url = Some(provider.base_url.clone());
        self.with_overrides(provider.overrides())
    }

    /// Adds several overrides.
    pub fn with_overrides(mut self, overrides: impl IntoIterator<Item = (String, String)>) -> Self {
        self.overrides.extend(overrides);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_overrides_are_toml() {
        let mut p = ModelProvider::new("mock", "http://127.0.0.1:1/v1");
        p.request_max_retries = Some(0);
        let o = p.overrides();
        assert_eq!(o[0], ("model_provider".into(), "\"mock\"".into()));
        assert_eq!(
            o[1].1,
            "{name=\"mock\", base_url=\"http://127.0.0.1:1/v1\", wire_api=\"responses\", request_max_retries=0}"
        );
        assert_eq!(toml_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
    }

    #[test]
    fn codex_logs_with_the_filter_it_is_given() {
        let mut config = ProcessConfig::new("codex".into(), "/h".into(), "/w/empty".into());
        let rust_log = |config: &ProcessConfig| {
            let cmd = config.command();
            let value =
                cmd.as_std().get_envs().find(|(k, _)| *k == "RUST_LOG").and_then(|(_, v)| v.map(ToOwned::to_owned));
            value
        };
        assert_eq!(rust_log(&config), Some("warn".into()));
        config.codex_log = "codex_core=debug".to_owned();
        assert_eq!(rust_log(&config), Some("codex_core=debug".into()));
    }

    #[test]
    fn a_bundle_sets_both_variables_and_keeps_them_from_tools() {
        let config = ProcessConfig::new("codex".into(), "/h".into(), "/w/empty".into());
        fn has(cmd: &tokio::process::Command, key: &str) -> Option<Option<std::ffi::OsString>> {
            cmd.as_std().get_envs().find(|(k, _)| *k == key).map(|(_, v)| v.map(ToOwned::to_owned))
        }
        let plain = config.command();
        assert_eq!(has(&plain, "SSL_CERT_FILE"), std::env::var_os("SSL_CERT_FILE").map(Some), "inherited as is");
        assert!(!plain.as_std().get_args().any(|a| a.to_string_lossy().starts_with("shell_environment_policy")));
        let ca = CaFiles { cert_file: "/w/tls/auto.pem".into(), cert_dir: "/w/tls/empty".into() };
        let cmd = ProcessConfig { ca: Some(ca), ..config }.command();
        assert_eq!(has(&cmd, "SSL_CERT_FILE"), Some(Some("/w/tls/auto.pem".into())));
        assert_eq!(has(&cmd, "SSL_CERT_DIR"), Some(Some("/w/tls/empty".into())));
        assert!(
            !matches!(has(&cmd, "CODEX_CA_CERTIFICATE"), Some(Some(_))),
            "removed: it would win over SSL_CERT_FILE"
        );
        let args: Vec<String> = cmd.as_std().get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let exclude = args.iter().position(|a| a.starts_with("shell_environment_policy.exclude=")).unwrap();
        assert_eq!(args[exclude - 1], "-c");
        assert!(exclude < args.iter().position(|a| a.starts_with("skills.")).unwrap(), "before the other overrides");
    }

    #[test]
    fn codex_inherits_only_the_listed_variables() {
        let vars = [
            ("PATH", "/bin"),
            ("LC_ALL", "C.UTF-8"),
            ("https_proxy", "http://proxy:3128"),
            ("CODEX_POOL_TOKEN", "secret"),
            ("DATABASE_URL", "postgres://u:pw@db/x"),
            ("OPENAI_API_KEY", "sk-x"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
        ]
        .map(|(k, v)| (k.into(), v.into()));
        let names = |openai| -> Vec<String> {
            inherited_env(vars.clone(), openai).into_iter().map(|(k, _)| k.to_string_lossy().into_owned()).collect()
        };
        assert_eq!(names(false), ["PATH", "LC_ALL", "https_proxy"]);
        assert_eq!(names(true), ["PATH", "LC_ALL", "https_proxy", "OPENAI_API_KEY"]);
        let cmd = ProcessConfig::new("codex".into(), "/h".into(), "/w/empty".into()).command();
        assert!(cmd.as_std().get_envs().any(|(k, _)| k == "CODEX_HOME"));
    }
}
