//! Several `codex-pool serve` nodes on one PostgreSQL (a throwaway server on loopback), the real
//! binary and codex, the fake model: one node serves a conversation at a time, a node killed
//! hands its conversations on (with their history) once its leases run out, and a node paused
//! past its leases writes nothing when it wakes up.

mod common;

use codex_pool_mock_model::{MockConfig, MockModel};
use codex_pool_server::client::{Client, SseEvent};
use codex_pool_testkit::postgres::TestPostgres;
use codex_pool_testkit::{kill, last_user_text, messages};
use common::{serve_with, Served};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Lease time of the nodes of these tests.
const LEASE_SECS: u64 = 3;

fn node(db: &str, model: &str, id: &str, data: &std::path::Path) -> Served {
    let lease = LEASE_SECS.to_string();
    serve_with(data, model, None, Stdio::inherit(), &[], &["--db", db, "--node-id", id, "--lease-ttl-secs", &lease])
}

async fn create(client: &Client) -> String {
    let created = client.post("/v1/conversations", json!({})).await.unwrap().json().unwrap();
    created["id"].as_str().unwrap().to_owned()
}

/// A turn, answered whole: the status and the body.
async fn turn(client: &Client, id: &str, text: &str) -> (StatusCode, Value, hyper::HeaderMap) {
    let body = serde_json::to_vec(&json!({"text": text, "stream": false})).unwrap();
    let answer = client.send(Method::POST, &format!("/v1/conversations/{id}/turns"), Some(body.into())).await.unwrap();
    (answer.status, answer.json().unwrap_or(Value::Null), answer.headers)
}

async fn all(mut events: codex_pool_server::client::EventStream) -> Vec<SseEvent> {
    let mut seen = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(60), events.next()).await.unwrap() {
        seen.push(e);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_conversations_and_hand_them_on_when_one_dies_or_stalls() {
    let Some(server) = TestPostgres::shared() else { return };
    let db = server.database().await;
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = node(db.url(), &model.base_url(), "a", dirs[0].path());
    let b = node(db.url(), &model.base_url(), "b", dirs[1].path());
    a.ready().await;
    b.ready().await;

    // Conversations through both nodes.
    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    for _ in 0..3 {
        on_a.push(create(&a.client).await);
        on_b.push(create(&b.client).await);
    }
    for (served, ids) in [(&a, &on_a), (&b, &on_b)] {
        for id in ids {
            let (status, body, _) = turn(&served.client, id, &format!("before {id}")).await;
            assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("completed")), "{body}");
        }
    }

    // Each node names itself, and sees the other.
    let pool = a.client.get("/v1/pool").await.unwrap().json().unwrap();
    assert_eq!((&pool["node"]["id"], &pool["node"]["leases"]), (&json!("a"), &json!(3)), "{pool}");
    let nodes = b.client.get("/v1/nodes").await.unwrap().json().unwrap();
    let listed: Vec<(Value, Value)> =
        nodes["nodes"].as_array().unwrap().iter().map(|n| (n["id"].clone(), n["conversations"].clone())).collect();
    assert_eq!(listed, vec![(json!("a"), json!(3)), (json!("b"), json!(3))], "{nodes}");
    assert_eq!(nodes["this_node"], "b");
    let metrics = String::from_utf8(a.client.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    assert!(metrics.contains(&format!("codex_pool_node_info{{node=\"a\",address=\"{}\"}} 1", a.client.base())));

    // A node asked about a conversation the other serves sends the client there.
    let (status, body, headers) = turn(&b.client, &on_a[0], "wrong node").await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT, "{body}");
    assert_eq!(body["error"]["code"], "owned_elsewhere");
    let expected = format!("{}/v1/conversations/{}/turns", a.client.base(), on_a[0]);
    assert_eq!(headers["location"], expected.as_str());
    // So do requests about its turns: they run, and keep their events, where it is served.
    for (method, path) in [
        (Method::POST, format!("/v1/conversations/{}/interrupt", on_a[0])),
        (Method::GET, format!("/v1/conversations/{}/turns/some-turn/events", on_a[0])),
    ] {
        let answer = b.client.send(method, &path, None).await.unwrap();
        assert_eq!(answer.status, StatusCode::TEMPORARY_REDIRECT, "{path}");
        assert_eq!(answer.headers["location"], format!("{}{path}", a.client.base()).as_str());
    }
    // On its owner, no turn runs: 409, and the lease stays where it was.
    let answer = a.client.send(Method::POST, &format!("/v1/conversations/{}/interrupt", on_a[0]), None).await.unwrap();
    assert_eq!(answer.status, StatusCode::CONFLICT);

    // A dies. Until its leases run out, its conversations are still sent to it (never served
    // by two nodes); then B takes each over, rebuilt from the store with its history.
    let killed = Instant::now();
    kill(a.child.id(), libc::SIGKILL);
    let mut took_over = None;
    for id in &on_a {
        let text = format!("after {id}");
        loop {
            let (status, body, _) = turn(&b.client, id, &text).await;
            if status == StatusCode::TEMPORARY_REDIRECT {
                assert!(killed.elapsed() < Duration::from_secs(LEASE_SECS + 5), "still redirected: {body}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            assert_eq!((status, &body["text"]), (StatusCode::OK, &json!(format!("echo: {text}"))), "{body}");
            took_over.get_or_insert(killed.elapsed());
            break;
        }
        let request =
            model.requests().into_iter().map(|r| r.body).rfind(|b| last_user_text(b).as_deref() == Some(&text));
        let sent = messages(&request.unwrap());
        assert!(sent.iter().any(|(_, t)| *t == format!("echo: before {id}")), "history lost: {sent:?}");
    }
    let took_over = took_over.unwrap();
    println!("B took A's conversations over {took_over:?} after A was killed (leases of {LEASE_SECS} s)");
    assert!(took_over >= Duration::from_secs(LEASE_SECS - 1), "taken over before A's lease ran out");

    // B stalls (SIGSTOP) in the middle of a turn, past its lease; C takes the conversation
    // over. When B wakes up, codex has finished its turn, but the store refuses B's write.
    let x = &on_b[0];
    let mut slow = b
        .client
        .stream(
            &format!("/v1/conversations/{x}/turns"),
            json!({"text": "stalled words [mock:deltas=20] [mock:delay_ms=100]"}),
        )
        .await
        .unwrap();
    assert_eq!(slow.next().await.unwrap().unwrap().event, "turn.started");
    kill(b.child.id(), libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(LEASE_SECS + 1)).await;
    let c = node(db.url(), &model.base_url(), "c", dirs[2].path());
    c.ready().await;
    let (status, body, _) = turn(&c.client, x, "new owner words").await;
    assert_eq!((status, &body["text"]), (StatusCode::OK, &json!("echo: new owner words")), "{body}");
    kill(b.child.id(), libc::SIGCONT);
    let events = all(slow).await;
    let end = events.last().unwrap();
    assert_eq!((end.event.as_str(), &end.data["error"]["kind"]), ("turn.failed", &json!("lease_lost")), "{end:?}");
    let items = c.client.get(&format!("/v1/conversations/{x}/items?limit=100")).await.unwrap().json().unwrap();
    let items = items.to_string();
    assert!(items.contains("new owner words") && items.contains(&format!("before {x}")), "{items}");
    assert!(!items.contains("stalled words"), "B's turn was written: {items}");
    // B, awake, sends the conversation's next turn to C.
    let (status, _, headers) = turn(&b.client, x, "to c").await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    assert!(headers["location"].to_str().unwrap().starts_with(c.client.base()));

    for served in [b, c] {
        let (status, _, _) = tokio::task::spawn_blocking(move || served.terminate()).await.unwrap();
        assert!(status.success(), "{status}");
    }
}
