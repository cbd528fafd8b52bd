//! The service's limits on what a client can make it hold or run (issue 24), through HTTP
//! against the real codex: input items per turn, the events kept of ended turns and of one
//! turn, and one admission limit for running turns, told at once.

mod common;

use codex_pool_testkit::*;
use common::*;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(line_start)).and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_input_items_than_the_limit_are_refused_on_every_route() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |c| c.max_input_items = 8).await;
    let c = &svc.client;
    let id = svc.conversation().await;
    let items: Vec<Value> = (0..9).map(|_| json!({"type": "text", "text": "a"})).collect();
    let (status, body) =
        raw(c, Method::POST, &format!("/v1/conversations/{id}/turns"), &json!({"input": items}).to_string()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("too_many_items")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("--max-input-items"), "{body}");
    // Eight still run.
    let events =
        all(c.stream(&format!("/v1/conversations/{id}/turns"), json!({"input": items[..8]})).await.unwrap()).await;
    assert_eq!(events.last().unwrap().event, "turn.completed");

    // OpenAI's routes: messages and their content parts count alike.
    let parts: Vec<Value> = (0..8).map(|_| json!({"type": "input_text", "text": "a"})).collect();
    let over = json!([{"role": "user", "content": parts}]);
    for (path, body) in [
        ("/v1/responses", json!({"model": "mock-model", "input": over})),
        ("/v1/chat/completions", json!({"model": "mock-model", "messages": over})),
    ] {
        let (status, body) = raw(c, Method::POST, path, &body.to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}");
        assert_eq!(body["error"]["code"], "too_many_items", "{path} {body}");
    }
    let metrics = String::from_utf8(c.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    assert_eq!(metric(&metrics, "codex_pool_limit_refusals_total{limit=\"max_input_items\"}"), Some(3.0), "{metrics}");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_turns_past_the_budget_go_oldest_first_and_re_attaching_to_them_is_410() {
    let env = Env::new().await;
    // Each turn below holds about 4 × 50 kB of events (its message twice, the echo as deltas and
    // as an item): two do not fit.
    let svc = Running::start(&env, 1, |c| c.max_retained_event_bytes = 300_000).await;
    let c = &svc.client;
    let id = svc.conversation().await;
    let text = "x".repeat(50_000);
    let mut turns = Vec::new();
    for _ in 0..3 {
        let events =
            all(c.stream(&format!("/v1/conversations/{id}/turns"), json!({"text": text})).await.unwrap()).await;
        assert_eq!(events.last().unwrap().event, "turn.completed");
        turns.push(events[0].data["turn_id"].as_str().unwrap().to_owned());
    }
    for (turn, kept) in [(&turns[0], false), (&turns[1], false), (&turns[2], true)] {
        let got = c.get(&format!("/v1/conversations/{id}/turns/{turn}/events")).await;
        if kept {
            assert_eq!(got.unwrap().status, StatusCode::OK);
        } else {
            let (status, body) = status_of(got);
            assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::GONE, Some("events_expired")), "{body}");
        }
    }
    // A turn never run is still unknown, not expired.
    assert_eq!(status_of(c.get(&format!("/v1/conversations/{id}/turns/nope/events")).await).0, StatusCode::NOT_FOUND);
    let metrics = String::from_utf8(c.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    assert_eq!(metric(&metrics, "codex_pool_events_evicted_total{reason=\"budget\"}"), Some(2.0), "{metrics}");
    let retained = metric(&metrics, "codex_pool_events_retained_bytes").unwrap();
    assert!(retained > 150_000.0 && retained <= 300_000.0, "{metrics}");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_whose_events_pass_the_per_turn_limit_is_cut_and_its_conversation_goes_on() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |c| c.max_turn_event_bytes = 100_000).await;
    let c = &svc.client;
    let id = svc.conversation().await;
    let events =
        all(c.stream(&format!("/v1/conversations/{id}/turns"), json!({"text": "y".repeat(60_000)})).await.unwrap())
            .await;
    let end = events.last().unwrap();
    assert_eq!((end.event.as_str(), end.data["error"]["kind"].as_str()), ("turn.failed", Some("events_too_large")));
    // Not kept: re-attaching says so.
    let turn = end.data["turn_id"].as_str().unwrap();
    let (status, body) = status_of(c.get(&format!("/v1/conversations/{id}/turns/{turn}/events")).await);
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::GONE, Some("events_expired")), "{body}");
    let events = all(c.stream(&format!("/v1/conversations/{id}/turns"), json!({"text": "short"})).await.unwrap()).await;
    assert_eq!(events.last().unwrap().event, "turn.completed", "{events:?}");
    assert_eq!(text_of(&events), "echo: short");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_over_the_one_admission_limit_is_told_at_once_with_429() {
    let env = Env::new().await;
    // Two processes with room for one turn each; the service asks for more than that.
    let svc = Running::start_with(
        &env,
        |p| {
            p.size = 2;
            p.max_turns_per_process = 1;
        },
        |c| c.max_running_turns = 256,
    )
    .await;
    wait_all_serving(&svc.client).await;
    let c = &svc.client;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(svc.conversation().await);
    }
    // A long turn on the first conversation fills its process.
    let long = json!({"text": "[mock:deltas=400] [mock:delay_ms=50] long"});
    let mut first = c.stream(&format!("/v1/conversations/{}/turns", ids[0]), long.clone()).await.unwrap();
    let started = first.next().await.unwrap().unwrap();
    assert_eq!(started.event, "turn.started");
    // Round robin put the third conversation on the same process: refused at once, not after
    // the pool's 30 s wait.
    let (status, answer) = {
        let a = c
            .send(
                Method::POST,
                &format!("/v1/conversations/{}/turns", ids[2]),
                Some(json!({"text": "hi"}).to_string().into()),
            )
            .await
            .unwrap();
        (a.status, a)
    };
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{:?}", answer.body);
    assert_eq!(answer.json().unwrap()["error"]["code"], "too_many_turns");
    assert_eq!(answer.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    // The second process fills: the service's cap, now the pool's capacity (2), refuses the rest,
    // on OpenAI's routes too.
    let mut second = c.stream(&format!("/v1/conversations/{}/turns", ids[1]), long).await.unwrap();
    assert_eq!(second.next().await.unwrap().unwrap().event, "turn.started");
    for (path, body) in [
        (format!("/v1/conversations/{}/turns", ids[3]), json!({"text": "hi"})),
        (
            "/v1/chat/completions".to_owned(),
            json!({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ] {
        let a = c.send(Method::POST, &path, Some(body.to_string().into())).await.unwrap();
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{path}: {:?}", a.body);
        assert_eq!(a.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"), "{path}");
    }
    let metrics = String::from_utf8(c.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    assert_eq!(
        metric(&metrics, "codex_pool_limit_refusals_total{limit=\"max_turns_per_process\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "codex_pool_limit_refusals_total{limit=\"max_running_turns\"}"),
        Some(2.0),
        "{metrics}"
    );
    for id in [&ids[0], &ids[1]] {
        c.post(&format!("/v1/conversations/{id}/interrupt"), json!({})).await.unwrap();
    }
    let _ = (all(first).await, all(second).await);
    svc.stop().await;
}
