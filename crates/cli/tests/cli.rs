//! The `codex-pool` command end to end, with the real pinned codex and the built-in fake model.

use std::io::Write;
use std::process::{Command, Stdio};

fn codex_pool() -> Command {
    Command::new(env!("CARGO_BIN_EXE_codex-pool"))
}

/// Runs `codex-pool chat ARGS` with `input` on stdin, to the end.
fn chat(args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = codex_pool()
        .arg("chat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn chat_streams_a_reply_per_line_on_the_fake_model() {
    let out = chat(&["--mock-model"], b"alpha\nbeta\n");
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "echo: alpha\necho: beta\n");
}

#[test]
fn chat_reports_a_failing_model_and_exits_non_zero() {
    let out = chat(&["--mock-model", "--model-retries", "0"], b"boom [mock:fail=500]\n");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("turn ended: Failed") || stderr.contains("codex error"), "{stderr}");
}

#[test]
fn a_missing_codex_binary_is_a_clear_error() {
    // RUST_BACKTRACE is common on developers' machines: the error still reads like a command's.
    let out = codex_pool()
        .args(["chat", "--codex-bin", "/nonexistent/codex"])
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/codex") && stderr.contains("npm ci --prefix tools/codex"), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
    // Asked for, the backtrace comes.
    let out = codex_pool()
        .args(["-v", "chat", "--codex-bin", "/nonexistent/codex"])
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("backtrace:"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bad_pool_settings_are_clear_errors() {
    let out = codex_pool().args(["bench", "--profile", "lean"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("use chat or codex"));
    let out = chat(&["--ca-bundle", "/nonexistent/roots.pem"], b"hi\n");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/roots.pem") && stderr.contains("--ca-bundle system"), "{stderr}");
}

#[test]
fn bench_compares_two_ca_bundles_over_https() {
    let args = ["bench", "--convs", "2", "--turns", "1", "--pool-size", "1", "--tls", "--direct"];
    let out = codex_pool().args(args).args(["--versus-ca-bundle", "system"]).output().unwrap();
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&line["tls"], &line["ca_bundle"]), (&serde_json::json!(true), &serde_json::json!("auto")));
    assert_eq!(line["direct"]["ca_bundle"], "auto", "the raw client gets the same roots");
    assert_eq!(line["versus"]["ca_bundle"], "system");
    for arm in [&line, &line["direct"], &line["versus"]] {
        assert_eq!(arm["errors"], 0, "{line}");
        assert!(arm["request_bytes_per_turn"].as_u64().unwrap() > 0, "the fake model's stats over HTTPS: {line}");
    }
    for key in ["throughput_ratio", "lat_p50_ratio", "codex_cpu_ratio"] {
        assert!(line["ca_vs_versus"][key].as_f64().is_some_and(|r| r > 0.0), "{key} in {line}");
    }
    // Over plain HTTP, auto is the one-certificate placeholder.
    let out = codex_pool().args(["bench", "--convs", "1", "--turns", "1", "--pool-size", "1"]).output().unwrap();
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&line["tls"], &line["ca_bundle"]), (&serde_json::json!(false), &serde_json::json!("minimal")));
}

#[test]
fn bench_prints_one_json_line_with_every_figure() {
    let out = codex_pool()
        .args(["bench", "--convs", "2", "--turns", "2", "--pool-size", "1", "--direct", "--http", "--trace-hops"])
        .args(["--responses", "--chat"])
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let line: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for key in [
        "turns_per_s",
        "lat_p50_ms",
        "lat_p95_ms",
        "ttft_p50_ms",
        "ready_s",
        "client_cpu_ms_per_turn",
        "codex_cpu_ms_per_turn",
        "request_bytes_per_turn",
        "rss_mb",
    ] {
        assert!(line[key].is_number(), "{key} missing in {line}");
        assert!(line["direct"][key].is_number(), "direct {key} missing in {line}");
        for api in ["http", "responses", "chat"] {
            assert!(line[api][key].is_number(), "{api} {key} missing in {line}");
        }
    }
    for api in ["responses", "chat"] {
        assert_eq!(line[api]["errors"], 0, "{line}");
        assert!(line[format!("{api}_vs_http")]["throughput_ratio"].is_number(), "{line}");
    }
    // Each conversation's first chat request started it; the next continued it.
    assert_eq!((line["chat"]["chat_new"].as_u64(), line["chat"]["chat_continued"].as_u64()), (Some(2), Some(2)));
    assert_eq!(line["errors"], 0);
    assert_eq!(line["direct"]["errors"], 0);
    assert_eq!(line["http"]["errors"], 0);
    assert!(line["http_vs_library"]["throughput_ratio"].is_number());
    // The HTTP client's CPU is told apart from the service's: both counted, summing to the
    // process's.
    for api in ["http", "responses", "chat"] {
        let (client, service) = (&line[api]["http_client_cpu_ms_per_turn"], &line[api]["service_cpu_ms_per_turn"]);
        let (client, service) = (client.as_f64().unwrap(), service.as_f64().unwrap());
        assert!(client > 0.0 && service > 0.0, "{api}: {line}");
        let total = line[api]["client_cpu_ms_per_turn"].as_f64().unwrap();
        assert!((client + service - total).abs() < 0.02, "{api}: {client} + {service} != {total}");
    }
    assert!(line["http_vs_library"]["service_cpu_added_ms_per_turn"].is_number());
    assert!(line["health_checks"].is_number() && line["health_check_max_ms"].is_number());
    // Every hand-off of a turn through the pool was timed, the store's write among them.
    let hops = line["hops"].as_object().expect("hops");
    for hop in ["pool.start → pool.placed", "turn.completed → store.batch", "store.batch → store.written"] {
        assert!(hops[hop]["n"].as_u64().unwrap() > 0, "{hop} missing in {hops:?}");
    }
    assert!(line["turns_per_s"].as_f64().unwrap() > 0.0);
    assert!(line["request_bytes_per_turn"].as_u64().unwrap() > 0);
    assert!(line["pool_vs_direct"]["throughput_ratio"].is_number());
}

#[test]
fn bench_versus_compares_two_profiles_on_the_same_load() {
    let out = codex_pool()
        .args(["bench", "--convs", "2", "--turns", "1", "--pool-size", "1", "--versus", "codex"])
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["profile"], "chat");
    assert_eq!(line["versus"]["profile"], "codex", "`default` is codex's own profile, named `codex`");
    assert_eq!(line["versus"]["errors"], 0);
    for key in ["throughput_ratio", "lat_p50_ratio", "request_bytes_ratio", "codex_cpu_ratio"] {
        assert!(line["profile_vs_versus"][key].as_f64().is_some_and(|r| r > 0.0), "{key} in {line}");
    }
    // The chat profile's request is the smaller one.
    assert!(line["profile_vs_versus"]["request_bytes_ratio"].as_f64().unwrap() < 0.34, "{line}");
}

/// Child processes of `pid`, from /proc.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    // A zombie has exited; only a live process counts.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

#[test]
fn no_codex_outlives_a_killed_pool() {
    use std::io::{BufRead, BufReader};
    let mut child = codex_pool()
        .args(["chat", "--mock-model"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"are you there\n").unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert_eq!(first, "echo: are you there\n");
    let codex = children(child.id());
    assert_eq!(codex.len(), 1, "one codex process expected, found {codex:?}");
    assert!(
        std::fs::read_link(format!("/proc/{}/exe", codex[0])).unwrap().ends_with("codex"),
        "the native binary runs"
    );
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while alive(codex[0]) {
        assert!(std::time::Instant::now() < deadline, "codex {} outlived the killed pool", codex[0]);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(stdin);
}

#[test]
fn bench_tools_reports_the_round_trip_and_the_rebuild_beside_the_plain_load() {
    let out = codex_pool()
        .args(["bench", "--convs", "2", "--turns", "2", "--pool-size", "1", "--rounds", "2", "--tools"])
        .args(["--tools-change", "--tools-change-history", "3,1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Every tool turn called the function once and ended with the answer to the bench's output:
    // two model requests where the plain load makes one.
    for arm in ["http", "tools"] {
        assert_eq!(line[arm]["errors"], 0, "{arm}: {line}");
        assert!(line[arm]["service_cpu_ms_per_turn"].is_number(), "{arm}: {line}");
    }
    let versus = &line["tools_vs_http"];
    assert_eq!(
        (versus["model_requests_per_turn_plain"].as_f64(), versus["model_requests_per_turn_tools"].as_f64()),
        (Some(1.0), Some(2.0)),
        "{line}"
    );
    for key in ["lat_p50_added_ms", "lat_p95_added_ms", "service_cpu_added_ms_per_round_trip", "throughput_ratio"] {
        assert!(versus[key].is_number(), "{key} in {line}");
    }
    // Each history length once, ascending; each rebuilt turn (2 conversations x 2 rounds) rebuilt
    // its thread, and no normal turn did.
    let points = line["tools_change"].as_array().expect("tools_change");
    let history: Vec<_> = points.iter().map(|p| p["history_turns"].as_u64().unwrap()).collect();
    assert_eq!(history, [1, 5], "{line}");
    for p in points {
        assert_eq!((p["normal"]["rebuilds"].as_u64(), p["rebuilt"]["rebuilds"].as_u64()), (Some(0), Some(4)), "{p}");
        assert_eq!((&p["normal"]["errors"], &p["rebuilt"]["errors"]), (&serde_json::json!(0), &serde_json::json!(0)));
        assert!(p["rebuild_lat_p50_added_ms"].is_number() && p["rebuild_service_cpu_added_ms"].is_number(), "{p}");
    }
}

#[test]
fn bench_long_shows_no_compaction_when_a_compacted_conversation_is_rebuilt() {
    // 6,500 tokens (the fake model counts a quarter of a request's bytes): a 12-turn history is
    // over it, so its first turn compacts; a 1-turn history never gets there in three rounds.
    let out = codex_pool()
        .args(["bench", "--long", "12,1", "--long-threshold", "6500", "--pool-size", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&line["mode"], &line["threshold_tokens"]), (&serde_json::json!("long"), &serde_json::json!(6500)));
    let points = line["long"].as_array().expect("long");
    let lengths: Vec<_> = points.iter().map(|p| p["history_turns"].as_u64().unwrap()).collect();
    assert_eq!(lengths, [1, 12], "{line}");
    for p in points {
        let rounds = p["rounds"].as_array().unwrap();
        assert_eq!(rounds.len(), 3, "{p}");
        for (i, r) in rounds.iter().enumerate() {
            assert_eq!((&r["ok"], &r["model_requests"]), (&serde_json::json!(true), &serde_json::json!(1)), "{r}");
            // The first turn runs on the thread made at creation; each after a release rebuilds.
            assert_eq!(r["rebuilt"], i > 0, "{r}");
        }
        let compactions: Vec<_> = rounds.iter().map(|r| r["compactions"].as_u64().unwrap()).collect();
        let expected: &[u64] = if p["history_turns"] == 1 { &[0, 0, 0] } else { &[1, 0, 0] };
        assert_eq!(compactions, expected, "{p}");
        assert_eq!(p["compactions_kept"], expected[0], "{p}");
    }
    // After the compaction, a rebuilt thread sends the summary and what followed, not the whole
    // transcript.
    for r in &points[1]["rounds"].as_array().unwrap()[1..] {
        assert!(r["request_bytes"].as_u64() < r["transcript_bytes"].as_u64(), "{r}");
    }
}
