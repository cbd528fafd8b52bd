//! What the tests of `codex-pool serve` share: the real binary, serving on a loopback port.

#![allow(dead_code)]

use codex_pool_server::client::Client;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `codex-pool serve` child, and the address it printed.
pub struct Served {
    pub child: Child,
    pub client: Client,
    /// The child's stdout after its first line, read through the buffer that read that line (a
    /// new reader would lose what this one already holds).
    stdout: BufReader<std::process::ChildStdout>,
}

pub fn serve(data_dir: &std::path::Path, model_url: &str) -> Served {
    serve_with(data_dir, model_url, None, Stdio::inherit(), &[], &[])
}

/// `serve` with a token, its stderr where asked, environment variables and more arguments.
pub fn serve_with(
    data_dir: &std::path::Path,
    model_url: &str,
    token: Option<&str>,
    stderr: Stdio,
    envs: &[(&str, &str)],
    args: &[&str],
) -> Served {
    let args: Vec<&str> = ["--model-base-url", model_url].into_iter().chain(args.iter().copied()).collect();
    serve_on(data_dir, token, stderr, envs, &args)
}

/// `serve` on a loopback port with the given arguments and nothing else chosen (its built-in fake
/// model unless they say otherwise; one process unless they say `--pool-size`), the token (if
/// any) in `CODEX_POOL_TOKEN`.
pub fn serve_on(
    data_dir: &std::path::Path,
    token: Option<&str>,
    stderr: Stdio,
    envs: &[(&str, &str)],
    args: &[&str],
) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_codex-pool"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(if args.contains(&"--pool-size") { &[][..] } else { &["--pool-size", "1"][..] })
        .args(args)
        .envs(token.map(|t| ("CODEX_POOL_TOKEN", t)))
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let addr = first.split_whitespace().find(|w| w.starts_with("http://")).expect(&first).to_owned();
    Served { child, client: Client::new(&addr, token.map(str::to_owned)), stdout }
}

impl Served {
    pub async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.client.get("/readyz").await.is_err() {
            assert!(Instant::now() < deadline, "not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit; returns its status and how long it took.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Duration, String) {
        let asked = Instant::now();
        // SAFETY: a plain syscall on our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        let mut rest = String::new();
        use std::io::Read;
        self.stdout.read_to_string(&mut rest).unwrap();
        (status, asked.elapsed(), rest)
    }
}

/// The Python of the tests' virtual environment (`scripts/python-venv` makes it, at
/// `CODEX_POOL_VENV`, default `target/venv` in the repository); `None` when
/// `CODEX_POOL_SKIP_PYTHON=1` says to skip the tests that need it. Missing otherwise: the test
/// fails, saying how to make it.
pub fn venv() -> Option<std::path::PathBuf> {
    if std::env::var("CODEX_POOL_SKIP_PYTHON").is_ok_and(|v| v == "1") {
        eprintln!("CODEX_POOL_SKIP_PYTHON=1: skipping a test that runs the Python clients");
        return None;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = std::env::var_os("CODEX_POOL_VENV").map_or_else(|| root.join("target/venv"), Into::into);
    assert!(
        venv.join("bin/python").is_file(),
        "no Python virtual environment at {}: create it with scripts/python-venv (it installs the pinned \
         openai, openai-agents, prometheus_client, schemathesis and playwright from tests/python/requirements.txt), point CODEX_POOL_VENV \
         at one, or set CODEX_POOL_SKIP_PYTHON=1 to skip these tests",
        venv.display()
    );
    Some(venv)
}

/// The path of a script in `tests/python`.
pub fn python_script(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python").join(name)
}

impl Drop for Served {
    /// A test that fails leaves no service behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
