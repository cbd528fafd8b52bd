//! The service's HTTP edge against careless and hostile clients, over real sockets, with the real
//! codex and the fake model: one error shape for every answer, `Retry-After` on OpenAI's 429,
//! OpenAI's 404 for an unknown model.

mod common;

use codex_pool_testkit::*;
use common::*;
use hyper::{header, Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_in_the_error_shape() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |c| {
        c.max_running_turns = 1;
        c.models = vec!["mock-model".into()];
    })
    .await;
    let c = &svc.client;

    // A path parameter that is not UTF-8 once decoded: axum answered text/plain.
    for (path, openai) in [
        ("/v1/conversations/%ff", false),
        ("/v1/conversations/%ff/items", false),
        ("/v1/responses/%ff%fe", true),
        ("/v1/models/%c3%28", true),
    ] {
        let answer = c.send(Method::GET, path, None).await.unwrap();
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}");
        let kind = answer.headers.get(header::CONTENT_TYPE).unwrap().to_str().unwrap().to_owned();
        assert!(kind.starts_with("application/json"), "{path}: {kind}");
        let body = answer.json().unwrap();
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{path}: {body}");
        let expected = if openai { "invalid_request_error" } else { "invalid_request" };
        let field = if openai { "type" } else { "code" };
        assert_eq!(body["error"][field], expected, "{path}: {body}");
    }

    // An unknown model on OpenAI's routes: 404 `model_not_found`, as OpenAI answers.
    for (path, body) in [
        ("/v1/responses", json!({"input": "x", "model": "gpt-nope"})),
        ("/v1/chat/completions", json!({"model": "gpt-nope", "messages": [{"role": "user", "content": "x"}]})),
    ] {
        let (status, answer) = raw(c, Method::POST, path, &body.to_string()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {answer}");
        assert_eq!(
            (answer["error"]["code"].as_str(), answer["error"]["param"].as_str()),
            (Some("model_not_found"), Some("model"))
        );
    }

    // OpenAI's 429 says when to retry, as the native one does.
    let id = svc.conversation().await;
    let slow = json!({"text": "slow [mock:deltas=40] [mock:delay_ms=50]"});
    let running = c.stream(&format!("/v1/conversations/{id}/turns"), slow).await.unwrap();
    for (path, body) in [
        ("/v1/responses", json!({"input": "x"})),
        ("/v1/chat/completions", json!({"model": "mock-model", "messages": [{"role": "user", "content": "x"}]})),
        (&format!("/v1/conversations/{}/turns", svc.conversation().await) as &str, json!({"text": "x"})),
    ] {
        let answer = c.send(Method::POST, path, Some(body.to_string().into())).await.unwrap();
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS, "{path}");
        assert_eq!(answer.headers.get(header::RETRY_AFTER).map(|v| v.to_str().unwrap()), Some("1"), "{path}");
    }
    assert_eq!(all(running).await.last().unwrap().event, "turn.completed");
    svc.stop().await;
}
