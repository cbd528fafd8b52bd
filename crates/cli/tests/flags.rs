//! How `codex-pool` reads its settings, before it starts anything: the flags, the environment
//! variables behind them, and values it refuses.

use std::process::{Command, Output, Stdio};

fn codex_pool(args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_codex-pool"))
        .args(args)
        .envs(vars.iter().copied())
        .env_remove("CODEX_POOL_TOKEN")
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
