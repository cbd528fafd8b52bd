//! The library's boundary without codex: flags it cannot run are refused, as a typed error,
//! before anything starts.

use clap::Parser;
use codex_pool_bench::{run, BenchArgs, BenchError};
use std::path::Path;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn args(flags: &[&str]) -> BenchArgs {
    Cli::parse_from(std::iter::once("bench").chain(flags.iter().copied())).args
}

#[tokio::test]
async fn sizes_of_zero_are_refused_before_anything_starts() {
    // No executable to start children from: only a refusal before any child can pass.
    let nowhere = Path::new("/nonexistent/codex-pool");
    for flags in [&["--convs", "0"][..], &["--turns", "0"], &["--pool-size", "0"]] {
        let mut lines = Vec::new();
        let outcome = run(&args(flags), nowhere, &mut |line| lines.push(line.clone())).await;
        match outcome {
            Err(BenchError::Flags(message)) => assert!(message.contains("must be positive"), "{message}"),
            other => panic!("{flags:?}: {other:?}"),
        }
        assert!(lines.is_empty());
    }
}

#[tokio::test]
async fn a_history_of_zero_turns_is_refused_before_anything_starts() {
    let nowhere = Path::new("/nonexistent/codex-pool");
    let flags = ["--tools-change", "--tools-change-history", "5,0"];
    match run(&args(&flags), nowhere, &mut |_| {}).await {
        Err(BenchError::Flags(message)) => assert!(message.contains("--tools-change-history"), "{message}"),
        other => panic!("{other:?}"),
    }
}
