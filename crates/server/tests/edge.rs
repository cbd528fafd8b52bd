//! The service's HTTP edge against careless and hostile clients, over real sockets, with the real
//! codex and the fake model: one error shape for every answer, `Retry-After` on OpenAI's 429,
//! OpenAI's 404 for an unknown model.

mod common;

use codex_pool_testkit::*;
use common::*;
use hyper::{header, Method, StatusCode};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// A raw connection to the service.
async fn connect(c: &codex_pool_server::client::Client) -> TcpStream {
    TcpStream::connect(c.base().trim_start_matches("http://")).await.unwrap()
}

/// Reads until the service closes the connection (a bound keeps a failing test from hanging).
async fn until_closed(socket: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), socket.read(&mut buffer)).await {
            Err(_) => panic!("the service kept the connection open; it sent: {}", String::from_utf8_lossy(&seen)),
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&seen).into_owned(),
            Ok(Ok(n)) => seen.extend_from_slice(&buffer[..n]),
        }
    }
}

/// Reads one answer whose body is `Content-Length` long; returns its head and body.
async fn one_answer(socket: &mut TcpStream) -> (String, String) {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0usize);
            if body.len() >= length {
                return (head.to_owned(), body.to_owned());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(30), socket.read(&mut buffer)).await.unwrap().unwrap();
        assert!(n > 0, "closed before a whole answer: {text}");
        seen.extend_from_slice(&buffer[..n]);
    }
}

fn metric(text: &str, sample: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(sample).map(|v| v.trim().parse().unwrap())).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_and_bodies_and_idle_connections_are_closed_but_streams_are_not() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |c| {
        c.header_timeout = Duration::from_secs(1);
        c.body_timeout = Duration::from_secs(1);
    })
    .await;
    let c = &svc.client;
    let host = c.base().trim_start_matches("http://").to_owned();

    // Half a request line, then nothing: closed (it was held forever), with no answer.
    let mut half = connect(c).await;
    half.write_all(b"GET /heal").await.unwrap();
    assert!(!until_closed(&mut half).await.contains("200"));

    // A body announced and never sent: 408 in the error shape, then closed.
    let mut slow = connect(c).await;
    let head = format!(
        "POST /v1/conversations HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let answer = until_closed(&mut slow).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");

    // A keep-alive connection with nothing more to ask: closed after its answer.
    let mut idle = connect(c).await;
    idle.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await.unwrap();
    assert!(until_closed(&mut idle).await.starts_with("HTTP/1.1 200"));

    // A stream far longer than the timeouts is not idle: it runs to its end.
    let id = svc.conversation().await;
    let long = json!({"text": "long [mock:deltas=30] [mock:delay_ms=100]"});
    let events = all(c.stream(&format!("/v1/conversations/{id}/turns"), long).await.unwrap()).await;
    assert_eq!(events.last().unwrap().event, "turn.completed");
    assert_eq!(events.iter().filter(|e| e.event == "text.delta").count(), 30);

    let text = String::from_utf8(c.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    assert!(metric(&text, "codex_pool_http_limit_refusals_total{limit=\"header_timeout\"}") >= 2.0, "{text}");
    assert!(metric(&text, "codex_pool_http_limit_refusals_total{limit=\"body_timeout\"}") >= 1.0, "{text}");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_refused_but_healthz_answers_and_the_service_recovers() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |c| {
        c.max_connections = 3;
        c.reserve_connections = 1;
    })
    .await;
    let c = &svc.client;
    let host = c.base().trim_start_matches("http://").to_owned();
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut socket = connect(c).await;
        socket.write_all(get("/healthz").as_bytes()).await.unwrap();
        assert!(one_answer(&mut socket).await.0.starts_with("HTTP/1.1 200"));
        held.push(socket);
    }
    // The reserve: 503 with Retry-After in the error shape, and /healthz; each then closed.
    let mut over = connect(c).await;
    over.write_all(get("/v1/pool").as_bytes()).await.unwrap();
    let answer = until_closed(&mut over).await;
    assert!(answer.starts_with("HTTP/1.1 503") && answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    assert!(answer.contains(r#""code":"too_many_connections""#), "{answer}");
    let mut health = connect(c).await;
    health.write_all(get("/healthz").as_bytes()).await.unwrap();
    assert!(until_closed(&mut health).await.starts_with("HTTP/1.1 200"));
    // With the reserve held too, a connection is closed at once, unanswered.
    let mut reserve = connect(c).await;
    reserve.write_all(b"GET /hea").await.unwrap();
    let mut beyond = connect(c).await;
    let _ = beyond.write_all(get("/healthz").as_bytes()).await;
    assert_eq!(until_closed(&mut beyond).await, "");

    // Once they go, the service serves again.
    drop(held);
    drop(reserve);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let fresh = codex_pool_server::client::Client::new(c.base(), None);
    while fresh.get("/v1/pool").await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the service did not serve again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = String::from_utf8(fresh.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    assert!(metric(&text, "codex_pool_http_limit_refusals_total{limit=\"connections\"}") >= 2.0, "{text}");
    svc.stop().await;
}

/// A request with the headers given, answered in full.
async fn with_headers(
    c: &codex_pool_server::client::Client,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> codex_pool_server::client::Answer {
    let mut request = hyper::Request::builder().method(method).uri(format!("{}{path}", c.base()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(http_body_util::Full::new(bytes::Bytes::from(body.to_owned()))).unwrap();
    c.send_with(request).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_pages_cannot_drive_the_service() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |c| {
        c.models = vec!["mock-model".into()];
        c.allowed_hosts = vec!["api.example".into()];
        c.allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    let c = &svc.client;
    let host = c.base().trim_start_matches("http://").to_owned();
    let chat = json!({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}).to_string();

    // A CORS "simple" request: text/plain or a form, which any page may send: 415.
    for (path, kind, field) in [
        ("/v1/chat/completions", "text/plain", "type"),
        ("/v1/responses", "application/x-www-form-urlencoded", "type"),
        ("/v1/conversations", "text/plain;charset=UTF-8", "code"),
    ] {
        let answer = with_headers(c, Method::POST, path, &[("content-type", kind)], &chat).await;
        assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{path} {kind}");
        assert!(answer.json().unwrap()["error"][field].is_string(), "{path}");
    }
    // A body with no content type at all, too; none and no body is fine (release).
    let id = svc.conversation().await;
    let answer = with_headers(c, Method::POST, "/v1/conversations", &[], "{}").await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let answer = with_headers(c, Method::POST, &format!("/v1/conversations/{id}/release"), &[], "").await;
    assert_eq!(answer.status, StatusCode::OK);
    let json_kind = [("content-type", "application/json; charset=utf-8")];
    assert_eq!(with_headers(c, Method::POST, "/v1/chat/completions", &json_kind, &chat).await.status, StatusCode::OK);

    // DNS rebinding: a page's own name in `Host`: 421. The configured name is answered.
    let evil = format!("evil.example:{}", host.rsplit(':').next().unwrap());
    let answer = with_headers(c, Method::GET, "/v1/conversations", &[("host", &evil)], "").await;
    assert_eq!(answer.status, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(answer.json().unwrap()["error"]["code"], "misdirected_request");
    for allowed in
        [host.as_str(), "api.example", "api.example:443", &format!("localhost:{}", host.rsplit(':').next().unwrap())]
    {
        let answer = with_headers(c, Method::GET, "/v1/conversations", &[("host", allowed)], "").await;
        assert_eq!(answer.status, StatusCode::OK, "{allowed}");
    }

    // A page of another origin: 403, preflight included; the service's own pages and the
    // allowed front end pass, the latter with CORS headers.
    for origin in ["http://evil.example", "null"] {
        let answer = with_headers(c, Method::GET, "/v1/conversations", &[("origin", origin)], "").await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{origin}");
        assert_eq!(answer.json().unwrap()["error"]["code"], "forbidden_origin");
        let preflight = [("origin", origin), ("access-control-request-method", "POST")];
        assert_eq!(
            with_headers(c, Method::OPTIONS, "/v1/chat/completions", &preflight, "").await.status,
            StatusCode::FORBIDDEN
        );
    }
    let own = format!("http://{host}");
    let answer = with_headers(c, Method::GET, "/v1/conversations", &[("origin", &own)], "").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.headers.get("access-control-allow-origin").is_none());
    let front = [("origin", "https://app.example")];
    let answer = with_headers(c, Method::GET, "/v1/conversations", &front, "").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["access-control-allow-origin"], "https://app.example");
    let preflight = [
        ("origin", "https://app.example"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "authorization, content-type"),
    ];
    let answer = with_headers(c, Method::OPTIONS, "/v1/chat/completions", &preflight, "").await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(answer.headers["access-control-allow-origin"], "https://app.example");
    assert_eq!(answer.headers["access-control-allow-headers"], "authorization, content-type, last-event-id");

    let text = String::from_utf8(c.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    for limit in ["content_type", "host", "origin"] {
        let sample = format!("codex_pool_http_limit_refusals_total{{limit=\"{limit}\"}}");
        assert!(metric(&text, &sample) >= 1.0, "{limit}: {text}");
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_capped_on_every_route_and_pages_have_a_byte_budget() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |c| {
        c.models = vec!["mock-model".into()];
        c.caps.page_bytes = 12_000;
    })
    .await;
    let c = &svc.client;
    let over = "x".repeat((64 << 10) + 1);
    let at = "x".repeat(64 << 10);
    let many: serde_json::Map<String, serde_json::Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();

    // The native API: 413 for text over its cap, 400 for metadata, each naming the field.
    for (body, status, field) in [
        (json!({"instructions": over}), StatusCode::PAYLOAD_TOO_LARGE, "instructions"),
        (json!({"developer_instructions": over}), StatusCode::PAYLOAD_TOO_LARGE, "developer_instructions"),
        (json!({"metadata": many}), StatusCode::BAD_REQUEST, "metadata"),
        (json!({"metadata": {"k": "v".repeat(513)}}), StatusCode::BAD_REQUEST, "metadata"),
        (json!({"metadata": {"k".repeat(65): 1}}), StatusCode::BAD_REQUEST, "metadata"),
    ] {
        let (got, answer) = raw(c, Method::POST, "/v1/conversations", &body.to_string()).await;
        assert_eq!(got, status, "{field}: {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(&format!("`{field}`")), "{answer}");
    }
    let fits = json!({"instructions": at, "developer_instructions": at, "metadata": {"k": "v".repeat(512), "n": 1}});
    assert_eq!(raw(c, Method::POST, "/v1/conversations", &fits.to_string()).await.0, StatusCode::CREATED);

    // OpenAI's routes: the same caps, the field as `param`.
    let system = json!([{"role": "system", "content": over}, {"role": "user", "content": "hi"}]);
    for (path, body, status, param) in [
        ("/v1/responses", json!({"input": "x", "instructions": over}), 413, "instructions"),
        ("/v1/responses", json!({"input": system}), 413, "input"),
        ("/v1/responses", json!({"input": "x", "metadata": many}), 400, "metadata"),
        ("/v1/chat/completions", json!({"model": "mock-model", "messages": system}), 413, "messages"),
    ] {
        let (got, answer) = raw(c, Method::POST, path, &body.to_string()).await;
        assert_eq!((got.as_u16(), answer["error"]["param"].as_str()), (status, Some(param)), "{path}: {answer}");
    }

    // A page stops at its byte budget, and paging still reads every conversation once.
    let mut made = Vec::new();
    for _ in 0..5 {
        let body = json!({"instructions": "i".repeat(5000)});
        made.push(c.post("/v1/conversations", body).await.unwrap().json().unwrap()["id"].as_str().unwrap().to_owned());
    }
    let (mut seen, mut after, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let path = match &after {
            Some(a) => format!("/v1/conversations?limit=100&after={a}"),
            None => "/v1/conversations?limit=100".to_owned(),
        };
        let answer = c.get(&path).await.unwrap();
        let page = answer.json().unwrap();
        // Over the budget only with one entry, which a page always holds.
        let entries = page["data"].as_array().unwrap().len();
        assert!(answer.body.len() <= 12_000 || entries == 1, "a page of {} bytes", answer.body.len());
        seen.extend(page["data"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()));
        pages += 1;
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert!(pages >= 3, "{pages} pages");
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert!(made.iter().all(|id| seen.iter().filter(|s| *s == id).count() == 1));

    // Items too: large items come a few to a page, each once, in order.
    let id = svc.conversation().await;
    for n in 0..3 {
        let text = format!("{n} {}", "t".repeat(5000));
        let done = c.post(&format!("/v1/conversations/{id}/turns"), json!({"text": text, "stream": false})).await;
        assert_eq!(done.unwrap().json().unwrap()["status"], "completed");
    }
    let (mut seqs, mut after, mut pages) = (Vec::new(), 0u64, 0);
    loop {
        let page = c.get(&format!("/v1/conversations/{id}/items?after={after}")).await.unwrap().json().unwrap();
        seqs.extend(page["data"].as_array().unwrap().iter().map(|i| i["seq"].as_u64().unwrap()));
        pages += 1;
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert!(pages >= 3 && seqs.len() >= 6, "{pages} pages, {seqs:?}");
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());

    let text = String::from_utf8(c.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    assert!(metric(&text, "codex_pool_http_limit_refusals_total{limit=\"settings\"}") >= 9.0, "{text}");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_socket_does_not_hold_shutdown() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |c| {
        c.shutdown_grace = Duration::from_secs(60);
        c.header_timeout = Duration::from_secs(120);
    })
    .await;
    let mut silent = connect(&svc.client).await;
    silent.write_all(b"GET /he").await.unwrap();
    // Accepted: the client's own connection and the silent one are open.
    loop {
        let text = String::from_utf8(svc.client.get("/metrics").await.unwrap().body.to_vec()).unwrap();
        if metric(&text, "codex_pool_http_connections") >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stopping does not wait for its head (up to the grace period: 60 s here; `stop` allows 15).
    svc.stop().await;
    assert_eq!(until_closed(&mut silent).await, "");
}
