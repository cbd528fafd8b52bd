//! The service's API with a real HTTP client, against the real pinned `codex app-server` and the
//! fake model: every status it answers, streams, re-attaching, a codex process killed mid-turn.

mod common;

use bytes::Bytes;
use codex_pool::{Pool, PoolConfig};
use codex_pool_server::client::{Client, SseEvent};
use codex_pool_server::{Service, ServiceConfig};
use codex_pool_store::MemoryStore;
use codex_pool_testkit::*;
use common::*;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_the_api_answers() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |c| {
        c.max_running_turns = 2;
        c.max_body_bytes = 2 << 20;
    })
    .await;
    let c = &svc.client;

    // 201, 200.
    let created =
        c.post("/v1/conversations", json!({"developer_instructions": "Be Ada.", "metadata": {"k": 1}})).await.unwrap();
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.json().unwrap()["id"].as_str().unwrap().to_owned();
    let got = c.get(&format!("/v1/conversations/{id}")).await.unwrap().json().unwrap();
    assert_eq!((got["state"].as_str(), got["metadata"]["k"].as_i64()), (Some("idle"), Some(1)));
    assert_eq!(c.get("/v1/conversations").await.unwrap().json().unwrap()["data"][0]["id"], id);

    // 400: malformed JSON, unknown fields, bad values, both or neither of text and input.
    for (path, body) in [
        ("/v1/conversations", "{not json"),
        ("/v1/conversations", r#"{"bogus": 1}"#),
        ("/v1/conversations", r#"{"profile": "lean"}"#),
        (
            &format!("/v1/conversations/{id}/turns") as &str,
            r#"{"text": "a", "input": [{"type": "text", "text": "b"}]}"#,
        ),
        (&format!("/v1/conversations/{id}/turns"), r#"{}"#),
        (&format!("/v1/conversations/{id}/turns"), r#"{"input": [{"type": "local_image", "path": "/etc/passwd"}]}"#),
    ] {
        let (status, body) = raw(c, Method::POST, path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(status_of(c.get("/v1/conversations?limit=0").await).0, StatusCode::BAD_REQUEST);
    assert_eq!(status_of(c.get("/v1/conversations?after=nonsense").await).0, StatusCode::BAD_REQUEST);

    // 404: an unknown conversation, turn or route, in the error shape.
    for path in [
        "/v1/conversations/nope",
        "/v1/conversations/nope/items",
        &format!("/v1/conversations/{id}/turns/nope/events"),
        "/v2/nothing",
    ] {
        let (status, body) = status_of(c.get(path).await);
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{path}");
    }
    assert_eq!(raw(c, Method::POST, "/v1/conversations/nope/turns", r#"{"text": "x"}"#).await.0, StatusCode::NOT_FOUND);
    // 405.
    assert_eq!(raw(c, Method::PUT, "/v1/conversations", "{}").await.0, StatusCode::METHOD_NOT_ALLOWED);

    // 409: interrupt with nothing running; a second turn while one runs; delete while one runs.
    assert_eq!(raw(c, Method::POST, &format!("/v1/conversations/{id}/interrupt"), "").await.0, StatusCode::CONFLICT);
    let slow_text = json!({"text": "slow [mock:deltas=40] [mock:delay_ms=50]"});
    let slow = c.stream(&format!("/v1/conversations/{id}/turns"), slow_text.clone()).await.unwrap();
    let (status, body) = raw(c, Method::POST, &format!("/v1/conversations/{id}/turns"), r#"{"text": "again"}"#).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")), "{body}");
    assert_eq!(raw(c, Method::DELETE, &format!("/v1/conversations/{id}"), "").await.0, StatusCode::CONFLICT);
    // 429: the service runs two turns at most here; a third waits for room.
    let second = svc.conversation().await;
    let other = c.stream(&format!("/v1/conversations/{second}/turns"), slow_text).await.unwrap();
    let third = svc.conversation().await;
    let answer = c
        .send(Method::POST, &format!("/v1/conversations/{third}/turns"), Some(Bytes::from(r#"{"text":"x"}"#)))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.headers["retry-after"], "1");
    for (conversation, stream) in [(&id, slow), (&second, other)] {
        assert_eq!(
            raw(c, Method::POST, &format!("/v1/conversations/{conversation}/interrupt"), "").await.0,
            StatusCode::OK
        );
        let events = all(stream).await;
        assert_eq!(events.last().unwrap().data["status"], "interrupted", "{events:?}");
    }

    // 413: a body over the limit; text over codex's limit.
    let huge = format!(r#"{{"text": "{}"}}"#, "x".repeat(3 << 20));
    assert_eq!(
        raw(c, Method::POST, &format!("/v1/conversations/{id}/turns"), &huge).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let over = format!(r#"{{"text": "{}"}}"#, "x".repeat((1 << 20) + 1));
    let (status, body) = raw(c, Method::POST, &format!("/v1/conversations/{id}/turns"), &over).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("input_too_large")));

    // Room again: a whole turn in one answer.
    let (status, body) =
        raw(c, Method::POST, &format!("/v1/conversations/{id}/turns"), r#"{"text": "fine", "stream": false}"#).await;
    assert_eq!(
        (status, body["status"].as_str(), body["text"].as_str()),
        (StatusCode::OK, Some("completed"), Some("echo: fine"))
    );

    // Release keeps it, delete forgets it.
    assert_eq!(raw(c, Method::POST, &format!("/v1/conversations/{id}/release"), "").await.0, StatusCode::OK);
    let got = c.get(&format!("/v1/conversations/{id}")).await.unwrap().json().unwrap();
    assert!(got["loaded"].is_null(), "{got}");
    assert_eq!(raw(c, Method::DELETE, &format!("/v1/conversations/{id}"), "").await.0, StatusCode::OK);
    assert_eq!(status_of(c.get(&format!("/v1/conversations/{id}")).await).0, StatusCode::NOT_FOUND);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_name_is_read_as_the_pool_reads_it() {
    // One parser for every profile name (the pool's): what the pool takes from its store and the
    // bench's --profile, the API takes too, and an unknown name is told the names there are.
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |_| {}).await;
    let c = &svc.client;
    let (status, body) = raw(c, Method::POST, "/v1/conversations", r#"{"profile": " Chat "}"#).await;
    assert_eq!((status, body["profile"].as_str()), (StatusCode::CREATED, Some("chat")), "{body}");
    // `default` is codex's own profile, in any case: refused by the operator's policy, not unknown.
    let (status, body) = raw(c, Method::POST, "/v1/conversations", r#"{"profile": "DEFAULT"}"#).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("--allow-profile codex"), "{body}");
    let (status, body) = raw(c, Method::POST, "/v1/conversations", r#"{"profile": "lean"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["message"], r#"unknown profile "lean"; use chat or codex"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_route_but_healthz_and_is_required_beyond_loopback() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |c| c.token = Some("s3cret".into())).await;
    let anonymous = Client::new(&svc.client_base(), None);
    assert_eq!(anonymous.get("/healthz").await.unwrap().status, StatusCode::OK);
    for path in ["/readyz", "/v1/pool", "/v1/conversations", "/openapi.json", "/nowhere"] {
        let (status, body) = status_of(anonymous.get(path).await);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized")),
            "{path}"
        );
    }
    let wrong = Client::new(&svc.client_base(), Some("s3creT".into()));
    assert_eq!(status_of(wrong.get("/v1/pool").await).0, StatusCode::UNAUTHORIZED);
    assert_eq!(svc.client.get("/v1/pool").await.unwrap().status, StatusCode::OK);
    svc.stop().await;

    let pool = Pool::new(PoolConfig::new(env.config()), Arc::new(MemoryStore::new()));
    let mut open = ServiceConfig::default();
    open.listen = "0.0.0.0:0".parse().unwrap();
    let err = Service::bind(pool, open).await.err().expect("refused");
    assert!(err.to_string().contains("without a token") && err.to_string().contains("--token"), "{err}");
}

impl Running {
    fn client_base(&self) -> String {
        self.client.base().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_the_pool_serves() {
    let env = Env::new().await;
    let mut process = env.config();
    process.codex_bin = "/nonexistent/codex".into();
    let mut config = PoolConfig::new(process);
    config.size = 1;
    let pool = Pool::new(config, Arc::new(MemoryStore::new()));
    let mut service = ServiceConfig::default();
    service.listen = "127.0.0.1:0".parse().unwrap();
    let service = Service::bind(pool, service).await.unwrap();
    let client = Client::new(&format!("http://{}", service.local_addr()), None);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(service.run(async move {
        let _ = stopped.await;
    }));
    assert_eq!(client.get("/healthz").await.unwrap().status, StatusCode::OK, "alive");
    let (status, body) = status_of(client.get("/readyz").await);
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("not_ready")));
    assert_eq!(status_of(client.post("/v1/conversations", json!({})).await).0, StatusCode::SERVICE_UNAVAILABLE);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_drops_a_stream_re_attaches_and_gets_the_rest_once() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |_| {}).await;
    let id = svc.conversation().await;
    let text = "long [mock:deltas=30] [mock:delay_ms=30]";
    let mut stream = svc.client.stream(&format!("/v1/conversations/{id}/turns"), json!({"text": text})).await.unwrap();
    let mut first = Vec::new();
    while first.len() < 6 {
        first.push(stream.next().await.unwrap().unwrap());
    }
    drop(stream); // the client goes away in the middle
    let turn_id = first[0].data["turn_id"].as_str().unwrap().to_owned();
    let last_seen = first.last().unwrap().id.clone().unwrap();
    let request = svc
        .client
        .builder(Method::GET, &format!("/v1/conversations/{id}/turns/{turn_id}/events"))
        .header("last-event-id", &last_seen)
        .body(Default::default())
        .unwrap();
    let rest = all(svc.client.open(request).await.unwrap()).await;
    let ids: Vec<u64> = first.iter().chain(&rest).map(|e| e.id.as_ref().unwrap().parse().unwrap()).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "every event once, in order");
    assert_eq!(rest.iter().filter(|e| e.event == "turn.completed").count(), 1);
    let all_events: Vec<SseEvent> = first.into_iter().chain(rest).collect();
    assert_eq!(text_of(&all_events), format!("echo: {text}"));
    // The turn ran to its end and was recorded, though its first client left.
    let items = svc.client.get(&format!("/v1/conversations/{id}/items")).await.unwrap().json().unwrap();
    assert_eq!(items["data"].as_array().unwrap().len(), 2, "{items}");
    // Re-attaching after the end replays nothing twice either: after the last id, nothing.
    let last = ids.len().to_string();
    let request = svc
        .client
        .builder(Method::GET, &format!("/v1/conversations/{id}/turns/{turn_id}/events"))
        .header("last-event-id", last)
        .body(Default::default())
        .unwrap();
    assert!(all(svc.client.open(request).await.unwrap()).await.is_empty());
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_codex_process_killed_while_six_turns_stream() {
    let env = Env::new().await;
    let svc = Running::start(&env, 2, |_| {}).await;
    let c = &svc.client;
    // Both processes first, so the conversations are spread over them.
    wait_all_serving(c).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        let id = svc.conversation().await;
        let reply = c
            .post(&format!("/v1/conversations/{id}/turns"), json!({"text": format!("before {id}"), "stream": false}))
            .await;
        assert_eq!(reply.unwrap().json().unwrap()["status"], "completed");
        ids.push(id);
    }
    let slot_of = |info: &Value| info["loaded"]["slot"].as_u64().unwrap();
    let mut streams = Vec::new();
    for id in &ids {
        let body = json!({"text": format!("slow {id} [mock:deltas=60] [mock:delay_ms=50]")});
        let mut s = c.stream(&format!("/v1/conversations/{id}/turns"), body).await.unwrap();
        s.next().await.unwrap(); // turn.started
        streams.push(s);
    }
    let victim_slot = slot_of(&c.get(&format!("/v1/conversations/{}", ids[0])).await.unwrap().json().unwrap());
    let mut on_victim = Vec::new();
    for id in &ids {
        on_victim
            .push(slot_of(&c.get(&format!("/v1/conversations/{id}")).await.unwrap().json().unwrap()) == victim_slot);
    }
    assert!(on_victim.contains(&false), "round_robin spread the conversations over both processes");
    let pool = c.get("/v1/pool").await.unwrap().json().unwrap();
    let pid = pool["processes"][victim_slot as usize]["pid"].as_u64().unwrap() as u32;
    let killed = Instant::now();
    kill(pid, libc::SIGKILL);
    // Each stream read on its own, so each end is timed when it arrives.
    let readers: Vec<_> = streams
        .into_iter()
        .map(|s| {
            tokio::spawn(async move {
                let events = all(s).await;
                (events.last().unwrap().clone(), killed.elapsed())
            })
        })
        .collect();
    let mut ends = Vec::new();
    for reader in readers {
        ends.push(reader.await.unwrap());
    }
    for ((end, took), victim) in ends.iter().zip(&on_victim) {
        if *victim {
            assert_eq!(
                (end.event.as_str(), end.data["error"]["kind"].as_str()),
                ("turn.failed", Some("process_exited")),
                "{end:?}"
            );
            println!("a turn on the killed process ended {took:?} after the kill");
        } else {
            assert_eq!(
                (end.event.as_str(), end.data["status"].as_str()),
                ("turn.completed", Some("completed")),
                "{end:?}"
            );
        }
    }
    let failed_within = ends.iter().zip(&on_victim).filter(|(_, v)| **v).map(|((_, t), _)| *t).max().unwrap();
    assert!(failed_within < Duration::from_secs(2), "the killed turns ended {failed_within:?} after the kill");
    // Every conversation's next turn has its history (the cut turn left nothing).
    for id in &ids {
        let reply = c
            .post(&format!("/v1/conversations/{id}/turns"), json!({"text": format!("after {id}"), "stream": false}))
            .await
            .unwrap_or_else(|e| panic!("the next turn of {id}: {e}"));
        assert_eq!(reply.json().unwrap()["text"], format!("echo: after {id}"));
        let msgs = messages(&env.requests_with(&format!("after {id}"))[0]);
        assert!(msgs.iter().any(|(r, t)| r == "assistant" && *t == format!("echo: before {id}")), "{msgs:?}");
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |_| {}).await;
    let doc = svc.client.get("/openapi.json").await.unwrap().json().unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    for path in [
        "/v1/conversations",
        "/v1/conversations/{id}",
        "/v1/conversations/{id}/items",
        "/v1/conversations/{id}/release",
        "/v1/conversations/{id}/interrupt",
        "/v1/conversations/{id}/turns",
        "/v1/conversations/{id}/turns/{turn_id}/events",
        "/v1/pool",
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/metrics",
        "/v1/responses",
        "/v1/responses/{id}",
        "/v1/chat/completions",
        "/v1/models",
        "/v1/models/{id}",
        "/v1/keys",
        "/v1/keys/{id}",
        "/v1/keys/{id}/usage",
    ] {
        assert!(paths.iter().any(|p| *p == path), "{path} missing from {paths:?}");
    }
    assert!(doc["components"]["schemas"]["CreateConversation"].is_object());
    assert!(doc["components"]["schemas"]["CreateResponse"]["properties"]["previous_response_id"].is_object(), "{doc}");
    assert!(doc["components"]["schemas"]["OpenAiErrorBody"].is_object());
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_start_a_turn_as_soon_as_their_last_ended_find_room() {
    let env = Env::new().await;
    // As many turns may run as there are conversations: none should ever be refused.
    let svc = Running::start(&env, 1, |c| c.max_running_turns = 6).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (client, id) = (svc.client.clone(), svc.conversation().await);
        tasks.spawn(async move {
            for n in 0..12 {
                let path = format!("/v1/conversations/{id}/turns");
                let events = client.stream(&path, json!({"text": format!("turn {n}")})).await;
                let events = all(events.expect("room for the next turn")).await;
                assert_eq!(events.last().unwrap().event, "turn.completed");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    svc.stop().await;
}
