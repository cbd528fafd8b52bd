//! What a real `codex-pool serve` holds after clients sent it much to hold (issue 24): its
//! resident memory (VmRSS), measured before and after, stays within its budgets.

mod common;

use codex_pool_mock_model::{MockConfig, MockModel};
use codex_pool_server::client::Client;
use common::serve_with;
use hyper::Method;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;

/// The resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

async fn big_turn(client: Client, text: String) {
    let id =
        client.post("/v1/conversations", json!({})).await.unwrap().json().unwrap()["id"].as_str().unwrap().to_owned();
    let mut events = client.stream(&format!("/v1/conversations/{id}/turns"), json!({"text": text})).await.unwrap();
    let mut last = None;
    while let Some(e) = tokio::time::timeout(Duration::from_secs(120), events.next()).await.unwrap().unwrap() {
        last = Some(e);
    }
    assert_eq!(last.unwrap().event, "turn.completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_turns_and_many_items_leave_serve_within_its_budgets() {
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let budget = 32 << 20;
    let args = ["--max-retained-event-bytes", &budget.to_string()];
    let mut served = serve_with(data.path(), &model.base_url(), None, Stdio::inherit(), &[], &args);
    served.ready().await;
    let pid = served.child.id();
    let c = served.client.clone();
    // Warm up: one small turn, so what follows measures what clients made it hold.
    big_turn(c.clone(), "warm up".to_owned()).await;
    let before = rss(pid);

    // 130,000 one-character items in a 4 MB body: once about 850 MB held for five minutes.
    let id = c.post("/v1/conversations", json!({})).await.unwrap().json().unwrap()["id"].as_str().unwrap().to_owned();
    let items: Vec<Value> = (0..130_000).map(|_| json!({"type": "text", "text": "a"})).collect();
    let body = json!({"input": items}).to_string();
    for _ in 0..3 {
        let a =
            c.send(Method::POST, &format!("/v1/conversations/{id}/turns"), Some(body.clone().into())).await.unwrap();
        assert_eq!(a.status, 400, "{:?}", a.json());
    }
    // 60 turns of a million characters, two at a time: about 4.6 MB of events each, 276 MB in
    // all, once held for five minutes; the budget keeps 32 MiB of them. (Measured: serve levels
    // off at 88-97 MB once the budget is full: the budget, two turns in flight, and what the
    // allocator keeps.)
    let text = "z".repeat(1_000_000);
    let mut series = Vec::new();
    for _ in 0..30 {
        let (a, b) = (big_turn(c.clone(), text.clone()), big_turn(c.clone(), text.clone()));
        tokio::join!(a, b);
        series.push(rss(pid) >> 20);
    }
    let metrics = String::from_utf8(c.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    let retained: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("codex_pool_events_retained_bytes "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    let after = rss(pid);
    eprintln!(
        "serve RSS before {} MB, after each pair of turns {series:?} MB; events retained {} MB",
        before >> 20,
        retained as u64 >> 20
    );
    assert!(retained <= budget as f64, "{metrics}");
    // The budget, two turns in flight, and room for what the allocator keeps: far below the
    // 276 MB the turns' events come to.
    assert!(after < before + (150 << 20), "serve grew from {} MB to {} MB", before >> 20, after >> 20);
    let _ = served.child.kill();
    let _ = served.child.wait();
}
