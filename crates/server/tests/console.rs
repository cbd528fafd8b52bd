//! The operator's console without a browser: its page and assets served from the binary with no
//! token and their security headers, the API behind it still needing the token; and what the
//! console reads that other clients want too (`rss_bytes` on `/v1/pool`, `running_turn_id` on a
//! conversation). The browser's test is `crates/cli/tests/console.rs`.

mod common;

use codex_pool_server::client::Client;
use codex_pool_testkit::*;
use common::*;
use hyper::{header, Method, StatusCode};
use serde_json::{json, Value};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn header_of(answer: &codex_pool_server::client::Answer, name: header::HeaderName) -> &str {
    answer.headers.get(&name).map_or("", |v| v.to_str().unwrap())
}

fn secured(answer: &codex_pool_server::client::Answer, path: &str) {
    assert_eq!(header_of(answer, header::CONTENT_SECURITY_POLICY), CSP, "{path}");
    assert_eq!(header_of(answer, header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{path}");
    assert_eq!(header_of(answer, header::X_FRAME_OPTIONS), "DENY", "{path}");
    assert_eq!(header_of(answer, header::REFERRER_POLICY), "no-referrer", "{path}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_needs_no_token_and_the_api_behind_it_does() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |c| c.token = Some("console-secret".into())).await;
    let anonymous = Client::new(svc.client.base(), None);

    let page = anonymous.send(Method::GET, "/", None).await.unwrap();
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(header_of(&page, header::CONTENT_TYPE), "text/html; charset=utf-8");
    secured(&page, "/");
    let html = String::from_utf8(page.body.to_vec()).unwrap();
    assert!(html.contains(r#"<script type="module" src="/console/console.js"></script>"#), "{html}");
    assert!(html.contains(r#"type="password""#), "the token is asked for in a password field");
    let again = anonymous.send(Method::GET, "/console", None).await.unwrap();
    assert_eq!((again.status, again.body.clone()), (StatusCode::OK, page.body.clone()));

    // Every script and style the page and its modules load is embedded, with its content type.
    let mut wanted = vec!["console.js".to_owned(), "console.css".to_owned()];
    let mut seen = Vec::new();
    while let Some(name) = wanted.pop() {
        if seen.contains(&name) {
            continue;
        }
        let path = format!("/console/{name}");
        let answer = anonymous.send(Method::GET, &path, None).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        secured(&answer, &path);
        let kind = if name.ends_with(".js") { "text/javascript; charset=utf-8" } else { "text/css; charset=utf-8" };
        assert_eq!(header_of(&answer, header::CONTENT_TYPE), kind, "{path}");
        assert_eq!(header_of(&answer, header::CACHE_CONTROL), "no-cache", "{path}");
        let text = String::from_utf8(answer.body.to_vec()).unwrap();
        for (at, _) in text.match_indices("from \"./") {
            wanted.push(text[at + 8..].split('"').next().unwrap().to_owned());
        }
        // The browser holds this version: 304, no body.
        let tag = header_of(&answer, header::ETAG).to_owned();
        let request = anonymous.builder(Method::GET, &path).header(header::IF_NONE_MATCH, &tag);
        let fresh = anonymous.send_with(request.body(Default::default()).unwrap()).await.unwrap();
        assert_eq!((fresh.status, fresh.body.len()), (StatusCode::NOT_MODIFIED, 0), "{path}");
        seen.push(name);
    }
    assert!(seen.len() >= 8, "the modules were followed: {seen:?}");

    // Anything else under /console, or another method: the error shape, the same headers.
    for (method, path, status) in [
        (Method::GET, "/console/secrets.json", StatusCode::NOT_FOUND),
        (Method::POST, "/", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let answer = anonymous.send(method, path, None).await.unwrap();
        assert_eq!(answer.status, status, "{path}");
        assert!(answer.json().unwrap()["error"]["message"].is_string(), "{path}");
        secured(&answer, path);
    }

    // The data still needs the token.
    for path in ["/v1/pool", "/v1/conversations", "/metrics"] {
        let answer = anonymous.send(Method::GET, path, None).await.unwrap();
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    // And the console answers to the service's names only (DNS rebinding).
    let rebound = anonymous.builder(Method::GET, "/").header(header::HOST, "attacker.example");
    let answer = anonymous.send_with(rebound.body(Default::default()).unwrap()).await.unwrap();
    assert_eq!(answer.status, StatusCode::MISDIRECTED_REQUEST);

    // Each process's resident memory, where /proc shows it.
    let pool = svc.client.get("/v1/pool").await.unwrap().json().unwrap();
    for p in pool["processes"].as_array().unwrap() {
        let pid = p["pid"].as_u64().unwrap();
        if std::path::Path::new(&format!("/proc/{pid}/statm")).exists() {
            assert!(p["rss_bytes"].as_u64().is_some_and(|b| b > 1 << 20), "{p}");
        }
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_turn_is_named_on_its_conversation_for_clients_to_reattach() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |_| {}).await;
    let c = &svc.client;
    // Documented for every client.
    let doc = c.get("/openapi.json").await.unwrap().json().unwrap();
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["Conversation"]["properties"]["running_turn_id"].is_object(), "{schemas}");
    assert!(schemas["Process"]["properties"]["rss_bytes"].is_object(), "{schemas}");
    let id = svc.conversation().await;
    let path = format!("/v1/conversations/{id}");
    assert_eq!(c.get(&path).await.unwrap().json().unwrap()["running_turn_id"], Value::Null);

    let slow = json!({"text": "slow [mock:deltas=20] [mock:delay_ms=50]"});
    let mut events = c.stream(&format!("{path}/turns"), slow).await.unwrap();
    let started = events.next().await.unwrap().unwrap();
    assert_eq!(started.event, "turn.started");
    let turn_id = started.data["turn_id"].as_str().unwrap().to_owned();
    let seen = c.get(&path).await.unwrap().json().unwrap();
    assert_eq!((seen["state"].as_str(), seen["running_turn_id"].as_str()), (Some("running"), Some(turn_id.as_str())));
    let listed = c.get("/v1/conversations").await.unwrap().json().unwrap();
    assert_eq!(listed["data"][0]["running_turn_id"].as_str(), Some(turn_id.as_str()), "{listed}");

    // A second client re-attaches with it and reads the whole turn.
    let again = c.builder(Method::GET, &format!("{path}/turns/{turn_id}/events")).body(Default::default()).unwrap();
    let reattached = all(c.open(again).await.unwrap()).await;
    assert_eq!(text_of(&reattached), "echo: slow [mock:deltas=20] [mock:delay_ms=50]");
    all(events).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let seen = c.get(&path).await.unwrap().json().unwrap();
        if seen["state"] == "idle" {
            assert_eq!(seen["running_turn_id"], Value::Null, "{seen}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the turn did not end: {seen}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    svc.stop().await;
}
