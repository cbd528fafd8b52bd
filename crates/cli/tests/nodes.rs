//! Several `codex-pool serve` nodes on one PostgreSQL (a throwaway server on loopback), with a
//! token, the real binary and codex, the fake model: one node serves a conversation at a time,
//! and any node answers any request about it (forwarded to the node that serves it, as if asked
//! there; never twice); a node killed hands its conversations on (with their history) once its
//! leases run out, with no error for the client; a node paused past its leases writes nothing
//! when it wakes up.

mod common;

use bytes::Bytes;
use codex_pool_mock_model::{MockConfig, MockModel};
use codex_pool_server::client::{Client, SseEvent};
use codex_pool_testkit::postgres::TestPostgres;
use codex_pool_testkit::{kill, last_user_text, messages};
use common::{python_script, serve_with, venv, Served};
use http_body_util::Full;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Lease time of the nodes of these tests.
const LEASE_SECS: u64 = 3;

/// The nodes' token: every deployment beyond loopback has one.
const TOKEN: &str = "nodes-token";

fn node(db: &str, model: &str, id: &str, data: &std::path::Path) -> Served {
    node_with(db, model, id, data, &[])
}

fn node_with(db: &str, model: &str, id: &str, data: &std::path::Path, more: &[&str]) -> Served {
    let lease = LEASE_SECS.to_string();
    let mut args = vec!["--db", db, "--node-id", id, "--lease-ttl-secs", &lease];
    args.extend(more);
    serve_with(data, model, Some(TOKEN), Stdio::inherit(), &[], &args)
}

/// One sample of a node's `/metrics` (0 when it has not been written).
async fn metric(client: &Client, sample: &str) -> f64 {
    let text = String::from_utf8(client.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    let line = text.lines().find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')));
    line.map_or(0.0, |v| v.parse().unwrap())
}

fn forwarded(outcome: &str) -> String {
    format!("codex_pool_forwarded_requests_total{{outcome=\"{outcome}\"}}")
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
async fn any_node_answers_as_the_owner_would() {
    let Some(server) = TestPostgres::shared() else { return };
    let db = server.database().await;
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = node(db.url(), &model.base_url(), "a", dirs[0].path());
    let b = node_with(db.url(), &model.base_url(), "b", dirs[1].path(), &["--max-running-turns", "1"]);
    a.ready().await;
    b.ready().await;
    let x = create(&a.client).await;
    let (status, body, _) = turn(&a.client, &x, "first on a").await;
    assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("completed")), "{body}");

    // A turn through B runs on A, which serves the conversation, with its history.
    let (status, body, headers) = turn(&b.client, &x, "through b").await;
    assert_eq!((status, &body["text"]), (StatusCode::OK, &json!("echo: through b")), "{body}");
    assert!(!headers.contains_key("location"));
    let sent = messages(
        &model
            .requests()
            .into_iter()
            .map(|r| r.body)
            .rfind(|b| last_user_text(b).as_deref() == Some("through b"))
            .unwrap(),
    );
    assert!(sent.iter().any(|(_, t)| t == "echo: first on a"), "history lost: {sent:?}");
    assert_eq!(metric(&a.client, "codex_pool_turns_started_total").await, 2.0);
    assert_eq!(metric(&b.client, "codex_pool_turns_started_total").await, 0.0);
    assert_eq!(metric(&b.client, &forwarded("ok")).await, 1.0);

    // B, full (one turn at a time, and one runs), still forwards a turn that runs on A.
    let y = create(&b.client).await;
    let busy = json!({"text": "busy b [mock:deltas=20] [mock:delay_ms=100]"});
    let mut on_b = b.client.stream(&format!("/v1/conversations/{y}/turns"), busy).await.unwrap();
    assert_eq!(on_b.next().await.unwrap().unwrap().event, "turn.started");
    let (status, body, _) = turn(&b.client, &x, "while b is full").await;
    assert_eq!((status, &body["text"]), (StatusCode::OK, &json!("echo: while b is full")), "{body}");
    assert_eq!(all(on_b).await.last().unwrap().event, "turn.completed");

    // A streamed turn through B; the stream picked up again through B after `Last-Event-ID`,
    // and the turn interrupted through B: each as A answers it.
    let path = format!("/v1/conversations/{x}/turns");
    let slow = json!({"text": "slow words [mock:deltas=40] [mock:delay_ms=100]"});
    let mut first = b.client.stream(&path, slow).await.unwrap();
    let started = first.next().await.unwrap().unwrap();
    assert_eq!(started.event, "turn.started");
    let turn_id = started.data["turn_id"].as_str().unwrap().to_owned();
    let mut read = vec![started];
    while read.len() < 3 {
        read.push(first.next().await.unwrap().unwrap());
    }
    let last_read = read.last().unwrap().id.clone().unwrap();
    let request = b
        .client
        .builder(Method::GET, &format!("/v1/conversations/{x}/turns/{turn_id}/events"))
        .header("last-event-id", &last_read)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut again = b.client.open(request).await.unwrap();
    let picked_up = again.next().await.unwrap().unwrap();
    assert_eq!(picked_up.id.as_deref(), Some((last_read.parse::<u64>().unwrap() + 1).to_string().as_str()));
    let answer = b.client.send(Method::POST, &format!("/v1/conversations/{x}/interrupt"), None).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json());
    read.extend(all(first).await);
    let mut rest = vec![picked_up];
    rest.extend(all(again).await);
    for events in [&read, &rest] {
        let end = events.last().unwrap();
        assert_eq!((end.event.as_str(), &end.data["status"]), ("turn.completed", &json!("interrupted")), "{end:?}");
    }
    // The re-attached stream is the rest of the first one, event for event.
    let ids = |events: &[SseEvent]| events.iter().map(|e| e.id.clone().unwrap()).collect::<Vec<_>>();
    assert_eq!(ids(&read[3..]), ids(&rest));

    // A forwarded request that reaches a node which does not serve the conversation is not
    // forwarded again: 503, retry.
    let request = b
        .client
        .builder(Method::POST, &path)
        .header("content-type", "application/json")
        .header("x-codex-pool-forwarded-by", "c")
        .body(Full::new(Bytes::from(json!({"text": "looped", "stream": false}).to_string())))
        .unwrap();
    let answer = b.client.send_with(request).await.unwrap();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json().unwrap()["error"]["code"], "owned_elsewhere");
    assert_eq!(answer.headers["retry-after"], "1");
    assert_eq!(metric(&b.client, &forwarded("loop")).await, 1.0);
    let forwarded_ok = metric(&b.client, &forwarded("ok")).await;

    // A client with a wrong token gets 401 from B, and nothing goes on to A.
    let turns_on_a = metric(&a.client, "codex_pool_turns_started_total").await;
    let wrong = Client::new(b.client.base(), Some("wrong".to_owned()));
    let body = Bytes::from(json!({"text": "no token", "stream": false}).to_string());
    let answer = wrong.send(Method::POST, &path, Some(body)).await.unwrap();
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(metric(&b.client, &forwarded("ok")).await, forwarded_ok);
    assert_eq!(metric(&a.client, "codex_pool_turns_started_total").await, turns_on_a);

    // OpenAI's Responses: a response continued through B runs on A, and reads back through B.
    let created = a.client.post("/v1/responses", json!({"input": "resp one"})).await.unwrap().json().unwrap();
    let next = json!({"input": "resp two", "previous_response_id": created["id"]});
    let answer = b.client.post("/v1/responses", next).await.unwrap().json().unwrap();
    assert_eq!(answer["output"][0]["content"][0]["text"], "echo: resp two", "{answer}");
    let read_back = b.client.get(&format!("/v1/responses/{}", answer["id"].as_str().unwrap())).await.unwrap();
    let read_back = read_back.json().unwrap();
    assert_eq!((&read_back["status"], &read_back["usage"]), (&json!("completed"), &answer["usage"]), "{read_back}");
    assert_eq!(
        metric(&b.client, "codex_pool_turns_started_total").await,
        1.0,
        "only its own conversation's turn ran on B"
    );

    // Released through B: A unloads it.
    let loaded = |pool: Value| {
        pool["processes"].as_array().unwrap().iter().map(|p| p["loaded_threads"].as_u64().unwrap()).sum::<u64>()
    };
    let before = loaded(a.client.get("/v1/pool").await.unwrap().json().unwrap());
    b.client.post(&format!("/v1/conversations/{x}/release"), json!({})).await.unwrap();
    assert_eq!(loaded(a.client.get("/v1/pool").await.unwrap().json().unwrap()), before - 1);
    // Deleted through B: A, which took it again for a turn (a released conversation goes to
    // the first node asked), unloads it and deletes it.
    let (status, body, _) = turn(&a.client, &x, "loaded again").await;
    assert_eq!((status, &body["text"]), (StatusCode::OK, &json!("echo: loaded again")), "{body}");
    assert_eq!(loaded(a.client.get("/v1/pool").await.unwrap().json().unwrap()), before);
    let answer = b.client.send(Method::DELETE, &format!("/v1/conversations/{x}"), None).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json());
    assert_eq!(loaded(a.client.get("/v1/pool").await.unwrap().json().unwrap()), before - 1);
    let answer = a.client.send(Method::GET, &format!("/v1/conversations/{x}"), None).await.unwrap();
    assert_eq!(answer.status, StatusCode::NOT_FOUND);

    // The official `openai` package, with the token, continues through B what it began on A
    // (streamed and not): one conversation, every turn on A.
    let Some(venv) = venv() else { return };
    let turns_on_a = metric(&a.client, "codex_pool_turns_started_total").await;
    let script = python_script("nodes_client.py").display().to_string();
    let args = [script, format!("{}/v1", a.client.base()), format!("{}/v1", b.client.base()), TOKEN.to_owned()];
    let python = venv.join("bin/python");
    let out = tokio::task::spawn_blocking(move || std::process::Command::new(python).args(args).output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_str(&stdout).unwrap();
    let conversation = |key: &str| seen[key].as_str().unwrap().split('_').nth(1).unwrap().to_owned();
    assert_eq!((conversation("second"), conversation("third")), (conversation("first"), conversation("first")));
    assert_eq!(metric(&a.client, "codex_pool_turns_started_total").await, turns_on_a + 3.0);
    assert_eq!(metric(&b.client, "codex_pool_turns_started_total").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_alive_but_out_of_reach_is_waited_for_then_retry_after() {
    let Some(server) = TestPostgres::shared() else { return };
    let db = server.database().await;
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    // A renews its leases, but tells the other nodes an address where nothing listens.
    let a = node_with(db.url(), &model.base_url(), "a", dirs[0].path(), &["--advertise", "http://127.0.0.1:1"]);
    let b = node(db.url(), &model.base_url(), "b", dirs[1].path());
    a.ready().await;
    b.ready().await;
    let x = create(&a.client).await;
    let (status, body, _) = turn(&a.client, &x, "on a").await;
    assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("completed")), "{body}");

    // B waits as long as a lease lasts, the lease is still A's: 503, retry when it may run out.
    let (status, body, headers) = turn(&b.client, &x, "through b").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!("owner_unreachable")),
        "{body}"
    );
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=LEASE_SECS).contains(&retry), "{retry}");
    assert_eq!(metric(&b.client, &forwarded("unreachable")).await, 1.0);
    assert_eq!(metric(&b.client, "codex_pool_turns_started_total").await, 0.0);
    // Nothing of it reached the conversation.
    let items = a.client.get(&format!("/v1/conversations/{x}/items")).await.unwrap().json().unwrap();
    assert!(!items.to_string().contains("through b"), "{items}");
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

    // A dies. Its conversations, asked of B, wait until A's leases run out (never served by two
    // nodes); then B takes each over, rebuilt from the store with its history. The client sees
    // no error.
    let killed = Instant::now();
    kill(a.child.id(), libc::SIGKILL);
    let mut took_over = None;
    for id in &on_a {
        let text = format!("after {id}");
        let (status, body, _) = turn(&b.client, id, &text).await;
        assert_eq!((status, &body["text"]), (StatusCode::OK, &json!(format!("echo: {text}"))), "{body}");
        took_over.get_or_insert(killed.elapsed());
        let request =
            model.requests().into_iter().map(|r| r.body).rfind(|b| last_user_text(b).as_deref() == Some(&text));
        let sent = messages(&request.unwrap());
        assert!(sent.iter().any(|(_, t)| *t == format!("echo: before {id}")), "history lost: {sent:?}");
    }
    let took_over = took_over.unwrap();
    println!("B took A's conversations over {took_over:?} after A was killed (leases of {LEASE_SECS} s)");
    assert!(took_over >= Duration::from_secs(LEASE_SECS - 1), "taken over before A's lease ran out");
    assert!(metric(&b.client, &forwarded("unreachable")).await >= 1.0);

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
    // B, awake, forwards the conversation's next turn to C.
    let (status, body, _) = turn(&b.client, x, "to c").await;
    assert_eq!((status, &body["text"]), (StatusCode::OK, &json!("echo: to c")), "{body}");

    for served in [b, c] {
        let (status, _, _) = tokio::task::spawn_blocking(move || served.terminate()).await.unwrap();
        assert!(status.success(), "{status}");
    }
}
