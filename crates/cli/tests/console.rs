//! The operator's console in a real browser: `codex-pool serve` with a token and two codex
//! processes on the built-in fake model, and `tests/python/console_test.py`, which drives Debian's
//! chromium with Playwright (launched with that executable: no browser download). It checks the
//! page loads with no console error and no request off the service's origin, the token flow, every
//! pid shown, a codex process killed with SIGKILL replaced on the page without a reload, a
//! playground message streamed back, a hostile message shown as text, the security headers, and a
//! turn another client runs streamed into the opened conversation and stopped with Interrupt, a
//! tool call a turn waits on shown with its age, the metrics' counts and charts; then, logged in
//! with an application's key (made here with the operator's token), the pool refused on the page,
//! that key's conversations only, and its playground. It leaves screenshots of the pool view and
//! the playground in `target/screenshots/`.

mod common;

use common::{python_script, serve_on, venv};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "console-test-token";

/// Debian's chromium (`scripts/install-chromium`), or `CODEX_POOL_CHROMIUM`.
fn chromium() -> PathBuf {
    let path = std::env::var_os("CODEX_POOL_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), Into::into);
    assert!(
        path.is_file(),
        "no chromium at {}: install it with scripts/install-chromium (Debian's chromium), point CODEX_POOL_CHROMIUM \
         at one, or set CODEX_POOL_SKIP_PYTHON=1 to skip the tests that need the Python environment",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium_shows_the_pool_live_and_streams_the_playground() {
    let Some(venv) = venv() else { return };
    let chromium = chromium();
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    for name in ["pool.png", "playground.png"] {
        let _ = std::fs::remove_file(shots.join(name));
    }
    let data = tempfile::tempdir().unwrap();
    let served = serve_on(data.path(), Some(TOKEN), Stdio::inherit(), &[], &["--pool-size", "2"]);
    served.ready().await;
    // Both processes serve, so the page has both pids to show.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pool = served.client.get("/v1/pool").await.unwrap().json().unwrap();
        if pool["processes"].as_array().is_some_and(|p| p.len() == 2 && p.iter().all(|p| p["healthy"] == true)) {
            break;
        }
        assert!(Instant::now() < deadline, "not every process serves: {pool}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An application's key, for the page logged in with it.
    let key = served.client.post("/v1/keys", serde_json::json!({"name": "console-app"})).await.unwrap();
    assert_eq!(key.status, hyper::StatusCode::CREATED);
    let key = key.json().unwrap()["secret"].as_str().unwrap().to_owned();

    let took = Instant::now();
    let base = served.client.base().to_owned();
    let (script, out_dir) = (python_script("console_test.py"), shots.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(venv.join("bin/python"))
            .arg(script)
            .args([&base, TOKEN])
            .arg(&out_dir)
            .arg(&key)
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .env("CODEX_POOL_CHROMIUM", chromium)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    eprintln!("the browser's checks took {:.1} s", took.elapsed().as_secs_f64());

    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(report["token"], "in sessionStorage only", "{report}");
    assert_eq!(report["hostile"], "shown as text", "{report}");
    assert_eq!((&report["listed"], &report["interrupted"]), (&Value::Bool(true), &Value::Bool(true)), "{report}");
    assert_ne!(report["replaced"]["killed"], report["replaced"]["replacement"], "{report}");
    assert!(report["playground"]["pieces_seen"].as_u64().unwrap() >= 2, "{report}");
    assert!(report["pending_call"].as_str().is_some_and(|age| age.ends_with(" s")), "{report}");
    assert!(report["metrics"].as_u64().is_some_and(|turns| turns > 0), "{report}");
    // With the key: no pool, its two conversations (one made by its playground) only.
    assert_eq!((&report["key"]["pool"], &report["key"]["conversations"]), (&"not shown".into(), &2.into()), "{report}");
    // The killed process was replaced in the service too: the slot counts the restart.
    let pool = served.client.get("/v1/pool").await.unwrap().json().unwrap();
    assert_eq!(pool["processes"][0]["pid"], report["replaced"]["replacement"], "{pool}");
    assert_eq!(pool["processes"][0]["restarts"], 1, "{pool}");
    for name in ["pool.png", "playground.png"] {
        let png = std::fs::read(shots.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name} is a PNG");
    }
    let (status, _, _) = tokio::task::spawn_blocking(move || served.terminate()).await.unwrap();
    assert!(status.success());
}
