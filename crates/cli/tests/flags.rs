//! How `codex-pool` reads its settings, before it starts anything: the flags, the environment
//! variables behind them, and values it refuses.

use std::process::{Command, Output, Stdio};

fn codex_pool(args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_codex-pool"))
        .args(args)
        .env_remove("CODEX_POOL_TOKEN")
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_agent_sandbox_is_one_of_those_offered() {
    let out = codex_pool(&["serve", "--agent-sandbox", "danger-full-access"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("use read-only or workspace-write"), "{}", stderr(&out));
    // The default is read-only, where commands get no network.
    let out = codex_pool(&["serve", "--agent-network"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--agent-network needs --agent-sandbox workspace-write"), "{}", stderr(&out));
}

#[test]
fn every_variable_is_listed_beside_its_flag() {
    let help = String::from_utf8(codex_pool(&["serve", "--help"], &[]).stdout).unwrap();
    for var in [
        "CODEX_POOL_SIZE",
        "CODEX_SELECTION_STRATEGY",
        "CODEX_MODEL",
        "CODEX_BIN",
        "CODEX_POOL_DATA_DIR",
        "DATABASE_URL",
        "CODEX_POOL_TOKEN",
        "CODEX_POOL_TOKEN_FILE",
        "CODEX_POOL_LOG",
        "CODEX_POOL_BACKTRACE",
    ] {
        assert!(help.contains(&format!("[env: {var}")), "{var} in {help}");
    }
    let help = String::from_utf8(codex_pool(&["doctor", "--help"], &[]).stdout).unwrap();
    for var in ["CODEX_BIN", "CODEX_POOL_DATA_DIR", "DATABASE_URL"] {
        assert!(help.contains(&format!("[env: {var}")), "{var} in {help}");
    }
    let help = String::from_utf8(codex_pool(&["bench", "--help"], &[]).stdout).unwrap();
    assert!(help.contains("[env: CODEX_BIN"), "{help}");
}

#[test]
fn a_flag_wins_over_its_variable_an_empty_variable_is_unset_and_a_bad_one_is_named() {
    // Each run stops at the first setting that does not hold, before anything starts.
    let out = codex_pool(&["serve"], &[("CODEX_POOL_SIZE", "0")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("1 to 64 (--pool-size or CODEX_POOL_SIZE)"), "{}", stderr(&out));
    let out = codex_pool(&["serve"], &[("CODEX_SELECTION_STRATEGY", "random")]);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(text.contains("round_robin or least_busy") && text.contains("CODEX_SELECTION_STRATEGY"), "{text}");
    let past_the_settings = "--agent-network needs --agent-sandbox workspace-write";
    let flags_win = [("CODEX_POOL_SIZE", "0"), ("CODEX_SELECTION_STRATEGY", "random")];
    let out = codex_pool(&["serve", "--pool-size", "2", "--strategy", "least_busy", "--agent-network"], &flags_win);
    assert!(stderr(&out).contains(past_the_settings), "{}", stderr(&out));
    let empty = [("CODEX_POOL_SIZE", ""), ("CODEX_SELECTION_STRATEGY", ""), ("CODEX_POOL_LOG", "")];
    let out = codex_pool(&["serve", "--agent-network"], &empty);
    assert!(stderr(&out).contains(past_the_settings), "{}", stderr(&out));
    // But an empty token is a mistake, never "no token" (beyond loopback, where serve refuses
    // to run without one, so that this ends either way).
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let out = codex_pool(&["serve", "--listen", "0.0.0.0:0", "--data-dir", dir], &[("CODEX_POOL_TOKEN", "")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("the token is empty"), "{}", stderr(&out));
}

#[test]
fn codex_bin_and_the_backtrace_come_from_their_variables() {
    let missing = [("CODEX_BIN", "/nonexistent/codex"), ("RUST_BACKTRACE", "1")];
    let out = codex_pool(&["chat"], &[missing[0], missing[1], ("CODEX_POOL_BACKTRACE", "1")]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(text.contains("/nonexistent/codex") && text.contains("backtrace:"), "{text}");
    let out = codex_pool(&["chat"], &[missing[0], missing[1], ("CODEX_POOL_BACKTRACE", "0")]);
    let text = stderr(&out);
    assert!(text.contains("/nonexistent/codex") && !text.contains("backtrace"), "{text}");
    // The flag wins over the variable.
    let out = codex_pool(&["chat", "--codex-bin", "/elsewhere/codex"], &missing);
    assert!(stderr(&out).contains("/elsewhere/codex"), "{}", stderr(&out));
}

/// What `chat --mock-model` logs for one turn, with `vars` set.
fn chat_logs(vars: &[(&str, &str)]) -> String {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_codex-pool"))
        .args(["chat", "--mock-model"])
        .env_remove("CODEX_POOL_CODEX_LOG")
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stderr(&out)
}

#[test]
fn codex_logs_as_codex_pool_codex_log_says() {
    // codex's stderr only, as the pool logs it.
    let stderr_only = ("CODEX_POOL_LOG", "codex_pool::codex_stderr=debug");
    let chatty = chat_logs(&[stderr_only, ("CODEX_POOL_CODEX_LOG", "info")]);
    assert!(chatty.contains(" INFO"), "{chatty}");
    let quiet = chat_logs(&[stderr_only]);
    assert!(quiet.contains("codex_stderr") && !quiet.contains(" INFO"), "{quiet}");
}

#[test]
fn serve_gives_codex_the_root_certificates_it_is_told() {
    // A bundle that does not exist is what the pool says it cannot read, naming it: the flag
    // reaches the pool (it was once dropped on the way, and serve ran on `auto` whatever it was
    // told). serve itself stays up, answering 503 until a process serves.
    use std::io::BufRead;
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_codex-pool"))
        .args(["serve", "--listen", "127.0.0.1:0", "--ca-bundle", "/nonexistent/roots.pem", "--data-dir"])
        .arg(data.path())
        .env_remove("CODEX_POOL_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("cannot read the CA bundle /nonexistent/roots.pem") => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(found, "serve never tried the bundle it was given: {seen:#?}");
}
