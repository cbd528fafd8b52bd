//! API keys through HTTP against the real pinned `codex app-server` and the fake model: two
//! applications' keys and the operator's token; each key sees only its own conversations on
//! every route that names one (answered exactly as an unknown id), the operator sees all.

mod common;

use codex_pool_server::client::Client;
use codex_pool_testkit::*;
use common::*;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

const OPERATOR: &str = "operator-token";

/// A key made through the admin route: a client carrying it, and its id.
async fn key(operator: &Client, name: &str, limits: Value) -> (Client, String) {
    let mut body = json!({"name": name});
    body.as_object_mut().unwrap().extend(limits.as_object().unwrap().clone());
    let created = operator.post("/v1/keys", body).await.unwrap();
    assert_eq!(created.status, StatusCode::CREATED);
    let created = created.json().unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("cpk_") && secret.starts_with(created["prefix"].as_str().unwrap()));
    (Client::new(operator.base(), Some(secret)), created["id"].as_str().unwrap().to_owned())
}

/// The status and error code of an answer (OpenAI's shape: its `type`... and `code`).
async fn answer(client: &Client, method: Method, path: &str, body: &Value) -> (StatusCode, String) {
    let text = if method == Method::GET || method == Method::DELETE { String::new() } else { body.to_string() };
    let (status, body) = raw(client, method, path, &text).await;
    let code = body["error"]["code"].as_str().or(body["error"]["type"].as_str()).unwrap_or_default().to_owned();
    (status, code)
}

fn ids(list: &Value) -> Vec<String> {
    list["data"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_sees_only_its_own_conversations_on_every_route() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |c| c.token = Some(OPERATOR.to_owned())).await;
    let op = &svc.client;
    let (a, a_id) = key(op, "app-a", json!({})).await;
    let (b, _) = key(op, "app-b", json!({})).await;

    // A's conversation, with a turn; a response; a chat transcript.
    let conv = a.post("/v1/conversations", json!({})).await.unwrap().json().unwrap()["id"].as_str().unwrap().to_owned();
    let turn =
        a.post(&format!("/v1/conversations/{conv}/turns"), json!({"text": "hi", "stream": false})).await.unwrap();
    let turn_id = turn.json().unwrap()["turn_id"].as_str().unwrap().to_owned();
    let response = a.post("/v1/responses", json!({"input": "first"})).await.unwrap().json().unwrap();
    let response_id = response["id"].as_str().unwrap().to_owned();
    let transcript = json!({"model": "mock-model", "messages": [{"role": "user", "content": "line one"}]});
    let chat = a.post("/v1/chat/completions", transcript.clone()).await.unwrap().json().unwrap();
    let chat_conv = chat["id"].as_str().unwrap().trim_start_matches("chatcmpl-").split('_').next().unwrap().to_owned();
    let mut next = transcript.clone();
    next["messages"] = json!([{"role": "user", "content": "line one"}, {"role": "assistant", "content": "echo: line one"},
        {"role": "user", "content": "line two"}]);

    // Every route that names a conversation: B gets for A's what the operator gets for an
    // unknown id; A itself gets through.
    let unknown = "conv-that-never-was";
    let routes: Vec<(Method, String, Value)> = vec![
        (Method::GET, "/v1/conversations/{id}".into(), json!(null)),
        (Method::GET, "/v1/conversations/{id}/items".into(), json!(null)),
        (Method::GET, format!("/v1/conversations/{{id}}/turns/{turn_id}/events"), json!(null)),
        (Method::POST, "/v1/conversations/{id}/turns".into(), json!({"text": "intruder", "stream": false})),
        (
            Method::POST,
            "/v1/conversations/{id}/tool_outputs".into(),
            json!({"outputs": [{"call_id": "c", "output": "x"}]}),
        ),
        (Method::POST, "/v1/conversations/{id}/compact".into(), json!({"stream": false})),
        (Method::POST, "/v1/conversations/{id}/interrupt".into(), json!({})),
        (Method::POST, "/v1/conversations/{id}/release".into(), json!({})),
        (Method::DELETE, "/v1/conversations/{id}".into(), json!(null)),
    ];
    for (method, path, body) in &routes {
        let foreign = answer(&b, method.clone(), &path.replace("{id}", &conv), body).await;
        let baseline = answer(op, method.clone(), &path.replace("{id}", unknown), body).await;
        assert_eq!(foreign.0, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(foreign, baseline, "{method} {path}: as for an unknown id");
    }
    // The OpenAI routes: a response read back, continued; a chat transcript continued.
    let unknown_response = response_id.replace(&response_id[5..15], "0000000000");
    for (method, path, body, unknown_body) in [
        (Method::GET, format!("/v1/responses/{response_id}"), json!(null), None),
        (
            Method::POST,
            "/v1/responses".to_owned(),
            json!({"input": "again", "previous_response_id": response_id}),
            Some(json!({"input": "again", "previous_response_id": unknown_response})),
        ),
    ] {
        let foreign = answer(&b, method.clone(), &path, &body).await;
        let unknown_path = path.replace(&response_id, &unknown_response);
        let baseline = answer(op, method.clone(), &unknown_path, unknown_body.as_ref().unwrap_or(&body)).await;
        assert_eq!(foreign.0, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(foreign, baseline, "{method} {path}");
    }
    let theirs = b.post("/v1/chat/completions", next.clone()).await.unwrap().json().unwrap();
    assert!(!theirs["id"].as_str().unwrap().contains(&chat_conv), "B's transcript is not A's conversation: {theirs}");
    // A's own routes work (and its transcript goes on in its conversation).
    let mine = a.post("/v1/chat/completions", next).await.unwrap().json().unwrap();
    assert!(mine["id"].as_str().unwrap().contains(&chat_conv), "{mine}");
    assert_eq!(a.get(&format!("/v1/conversations/{conv}")).await.unwrap().status, StatusCode::OK);
    assert_eq!(a.get(&format!("/v1/responses/{response_id}")).await.unwrap().status, StatusCode::OK);
    assert_eq!(a.get(&format!("/v1/conversations/{conv}/items")).await.unwrap().status, StatusCode::OK);

    // Lists: each key its own; the operator all.
    let a_list = ids(&a.get("/v1/conversations?limit=100").await.unwrap().json().unwrap());
    let b_list = ids(&b.get("/v1/conversations?limit=100").await.unwrap().json().unwrap());
    let all = ids(&op.get("/v1/conversations?limit=100").await.unwrap().json().unwrap());
    assert!(a_list.contains(&conv) && a_list.contains(&chat_conv), "{a_list:?}");
    assert!(!b_list.iter().any(|id| a_list.contains(id)), "{a_list:?} {b_list:?}");
    assert_eq!(b_list.len(), 1, "B's own chat conversation: {b_list:?}");
    assert!(a_list.iter().chain(&b_list).all(|id| all.contains(id)), "{all:?}");
    assert_eq!(op.get(&format!("/v1/conversations/{conv}")).await.unwrap().status, StatusCode::OK);

    // The operator's routes are the operator's.
    for path in ["/v1/pool", "/v1/nodes", "/metrics", "/v1/keys", &format!("/v1/keys/{a_id}/usage")] {
        assert_eq!(answer(&b, Method::GET, path, &json!(null)).await, (StatusCode::FORBIDDEN, "forbidden".into()));
        assert_eq!(op.get(path).await.unwrap().status, StatusCode::OK, "{path}");
    }
    let listed = op.get("/v1/keys").await.unwrap().json().unwrap();
    assert!(!listed.to_string().contains("cpk_") || listed["data"][0]["prefix"].is_string(), "{listed}");
    assert!(listed["data"].as_array().unwrap().iter().all(|k| k.get("secret").is_none()), "{listed}");

    // A's conversation is A's to delete; B's delete changed nothing.
    assert_eq!(
        a.send(Method::DELETE, &format!("/v1/conversations/{conv}"), None).await.unwrap().status,
        StatusCode::OK
    );

    // A revoked key is refused.
    let revoked = op.send(Method::DELETE, &format!("/v1/keys/{a_id}"), None).await.unwrap();
    assert_eq!(revoked.status, StatusCode::OK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while answer(&a, Method::GET, "/v1/conversations", &json!(null)).await.0 != StatusCode::UNAUTHORIZED {
        assert!(std::time::Instant::now() < deadline, "a revoked key still served after a second");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    svc.stop().await;
}

/// A key's usage, as the operator reads it.
async fn single_usage(operator: &Client, id: &str) -> Value {
    operator.get(&format!("/v1/keys/{id}/usage")).await.unwrap().json().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_limits_give_429_and_its_usage_counts_its_turns() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |c| c.token = Some(OPERATOR.to_owned())).await;
    let op = &svc.client;

    // max_conversations: the second is refused, in each API's shape.
    let (one, _) = key(op, "one-conversation", json!({"max_conversations": 1})).await;
    assert_eq!(one.post("/v1/conversations", json!({})).await.unwrap().status, StatusCode::CREATED);
    let (status, body) = status_of(one.post("/v1/conversations", json!({})).await);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("key_max_conversations"))
    );
    let answer = one.send(Method::POST, "/v1/responses", Some(json!({"input": "x"}).to_string().into())).await.unwrap();
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(answer.headers.contains_key("retry-after"));
    assert_eq!(answer.json().unwrap()["error"]["code"], "key_max_conversations", "OpenAI's shape names it");

    // turns_per_minute: the second turn of a minute is refused, with Retry-After (if the minute
    // turned between the two, once more).
    let (paced, _) = key(op, "one-per-minute", json!({"turns_per_minute": 1})).await;
    let conv =
        paced.post("/v1/conversations", json!({})).await.unwrap().json().unwrap()["id"].as_str().unwrap().to_owned();
    let turn = |text: &'static str| {
        let (c, path) = (&paced, format!("/v1/conversations/{conv}/turns"));
        async move {
            c.send(Method::POST, &path, Some(json!({"text": text, "stream": false}).to_string().into())).await.unwrap()
        }
    };
    let mut refused = None;
    for _ in 0..3 {
        assert_eq!(turn("first").await.status, StatusCode::OK);
        let second = turn("second").await;
        if second.status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(second);
            break;
        }
    }
    let refused = refused.expect("the second turn of a minute is refused");
    let retry: u64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(refused.json().unwrap()["error"]["code"], "key_turns_per_minute");

    // max_running_turns: a second turn while one streams is refused.
    let (single, single_id) = key(op, "one-at-a-time", json!({"max_running_turns": 1})).await;
    let mut convs = Vec::new();
    for _ in 0..2 {
        convs.push(
            single.post("/v1/conversations", json!({})).await.unwrap().json().unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let slow = json!({"text": "slow [mock:deltas=10] [mock:delay_ms=200]"});
    let mut stream = single.stream(&format!("/v1/conversations/{}/turns", convs[0]), slow).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().event, "turn.started");
    let second = single
        .send(
            Method::POST,
            &format!("/v1/conversations/{}/turns", convs[1]),
            Some(json!({"text": "b"}).to_string().into()),
        )
        .await
        .unwrap();
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(second.headers.contains_key("retry-after"));
    assert_eq!(second.json().unwrap()["error"]["code"], "key_max_running_turns");
    let first = all(stream).await;
    let mut used = vec![first.last().unwrap().data["usage"].clone()];
    // Once it ended, the next runs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let result = loop {
        let path = format!("/v1/conversations/{}/turns", convs[1]);
        let answer = single
            .send(Method::POST, &path, Some(json!({"text": "b", "stream": false}).to_string().into()))
            .await
            .unwrap();
        if answer.status == StatusCode::OK {
            break answer.json().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "{}", answer.status);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    used.push(result["usage"].clone());
    // A turn the model fails.
    let path = format!("/v1/conversations/{}/turns", convs[1]);
    let failed = single.post(&path, json!({"text": "[mock:fail=500]", "stream": false})).await;
    let failed = failed.map(|a| a.json().unwrap()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(failed["status"], "failed", "{failed}");

    // Usage: the turns run and the tokens the fake model reported, in the store (written before
    // the turn's end is answered) and /metrics.
    let sum = |field: &str| used.iter().map(|u| u[field].as_u64().unwrap()).sum::<u64>();
    let usage = single_usage(op, &single_id).await;
    assert_eq!(usage["turns"], 3, "{usage}");
    let failures: u64 = usage["failures"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(failures, 1, "{usage}");
    assert_eq!(
        (usage["input_tokens"].as_u64(), usage["cached_input_tokens"].as_u64(), usage["output_tokens"].as_u64()),
        (Some(sum("input_tokens")), Some(sum("cached_input_tokens")), Some(sum("output_tokens"))),
        "{usage} {used:?}"
    );
    assert!(sum("input_tokens") > 0);
    assert_eq!(usage["conversations"], 2);
    let metrics = String::from_utf8(op.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    assert!(metrics.contains("codex_pool_key_turns_total{key=\"one-at-a-time\"} 3"), "{metrics}");
    assert!(metrics.contains("codex_pool_key_turn_failures_total{key=\"one-at-a-time\",reason="), "{metrics}");
    for limit in ["key_max_conversations", "key_turns_per_minute", "key_max_running_turns"] {
        assert!(metrics.contains(&format!("codex_pool_limit_refusals_total{{limit=\"{limit}\"}}")), "{limit}");
    }
    assert!(!metrics.contains("cpk_") && !metrics.contains(&single_id), "names only, never secrets or ids");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_last_use_is_written_by_the_service_and_shutdown_writes_what_is_queued() {
    let env = Env::new().await;
    let store: std::sync::Arc<dyn codex_pool_store::ThreadStore> =
        std::sync::Arc::new(codex_pool_store::MemoryStore::new());
    let svc = Running::start_on(&env, store.clone(), |p| p.size = 1, |c| c.token = Some(OPERATOR.to_owned())).await;
    let (a, a_id) = key(&svc.client, "app-a", json!({})).await;
    let last_used = |store: std::sync::Arc<dyn codex_pool_store::ThreadStore>| {
        let a_id = a_id.clone();
        async move {
            let keys = store.keys().list_keys().await.unwrap();
            keys.into_iter().find(|k| k.id == a_id).unwrap().last_used_at_ms
        }
    };
    assert_eq!(last_used(store.clone()).await, None, "not used yet");

    // A request with the key: its last use is written, off the request's path.
    let before = codex_pool_store::now_ms();
    assert_eq!(answer(&a, Method::GET, "/v1/conversations", &json!(null)).await.0, StatusCode::OK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while last_used(store.clone()).await.is_none() {
        assert!(std::time::Instant::now() < deadline, "the key's last use was never written");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(last_used(store.clone()).await.unwrap() >= before);

    // A second key used just before shutdown: the service's writer writes it before it ends.
    let (b, b_id) = key(&svc.client, "app-b", json!({})).await;
    assert_eq!(answer(&b, Method::GET, "/v1/conversations", &json!(null)).await.0, StatusCode::OK);
    svc.stop().await;
    let keys = store.keys().list_keys().await.unwrap();
    let b_used = keys.iter().find(|k| k.id == b_id).unwrap().last_used_at_ms;
    assert!(b_used.is_some_and(|at| at >= before), "written before the service ended: {b_used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_sees_who_owns_each_conversation_and_a_key_sees_no_other_key() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |c| c.token = Some(OPERATOR.to_owned())).await;
    let op = &svc.client;
    let (a, a_id) = key(op, "app-a", json!({})).await;
    let (b, b_id) = key(op, "app-b", json!({})).await;
    let create = |c: &Client| {
        let c = c.clone();
        async move { c.post("/v1/conversations", json!({})).await.unwrap().json().unwrap() }
    };
    let (mine, a_created, b_created) = (create(op).await, create(&a).await, create(&b).await);
    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    let (mine, a_conv, b_conv) = (id(&mine), id(&a_created), id(&b_created));
    assert_eq!(a_created["owner"], json!({"key_id": a_id, "key_name": "app-a"}), "the creating key sees itself");

    // The operator: every owner, by id and name, in the list and in each conversation.
    let expected = [
        (&mine, Value::Null),
        (&a_conv, json!({"key_id": a_id, "key_name": "app-a"})),
        (&b_conv, json!({"key_id": b_id, "key_name": "app-b"})),
    ];
    let list = op.get("/v1/conversations").await.unwrap().json().unwrap();
    for (conv, owner) in &expected {
        let listed = list["data"].as_array().unwrap().iter().find(|c| &c["id"] == *conv).unwrap();
        assert_eq!(&listed["owner"], owner, "listed: {listed}");
        let one = op.get(&format!("/v1/conversations/{conv}")).await.unwrap().json().unwrap();
        assert_eq!(&one["owner"], owner, "read: {one}");
    }

    // A key: its own conversation with its own id; never the other key's id or name.
    let list = a.get("/v1/conversations").await.unwrap().json().unwrap();
    assert_eq!(ids(&list), vec![a_conv.clone()]);
    assert_eq!(list["data"][0]["owner"], json!({"key_id": a_id, "key_name": "app-a"}));
    let one = a.get(&format!("/v1/conversations/{a_conv}")).await.unwrap().json().unwrap();
    assert_eq!(one["owner"]["key_id"], json!(a_id));
    for seen in [list.to_string(), one.to_string()] {
        assert!(!seen.contains(&b_id) && !seen.contains("app-b"), "{seen}");
    }

    // The OpenAPI document names the field.
    let doc = op.get("/openapi.json").await.unwrap().json().unwrap();
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["Conversation"]["properties"]["owner"].is_object(), "{}", schemas["Conversation"]);
    assert!(schemas["Owner"]["properties"]["key_name"].is_object(), "{}", schemas["Owner"]);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_at_the_same_moment_never_take_a_key_past_its_conversations() {
    let env = Env::new().await;
    let svc = Running::start(&env, 1, |c| c.token = Some(OPERATOR.to_owned())).await;
    let op = &svc.client;
    let (two, _) = key(op, "two-conversations", json!({"max_conversations": 2})).await;

    // Twelve creates at once, on each API that makes a conversation: each passes the check made
    // before it creates, as none has been created yet; at most two may stay.
    let creates = (0..12).map(|i| {
        let two = two.clone();
        async move {
            let (path, body) = if i % 2 == 0 {
                ("/v1/conversations", json!({}))
            } else {
                ("/v1/responses", json!({"input": format!("race {i}"), "stream": false}))
            };
            two.send(Method::POST, path, Some(body.to_string().into())).await.unwrap()
        }
    });
    let answers = futures_util::future::join_all(creates).await;
    let mut made = 0;
    for a in &answers {
        match a.status {
            StatusCode::CREATED | StatusCode::OK => made += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(a.json().unwrap()["error"]["code"], "key_max_conversations");
                assert!(a.headers.contains_key("retry-after"));
            }
            other => panic!("{other}: {:?}", a.json()),
        }
    }
    let held = ids(&two.get("/v1/conversations?limit=100").await.unwrap().json().unwrap());
    assert!(held.len() <= 2, "the key holds {} conversations, over its 2", held.len());
    assert!(made <= 2, "{made} creates answered as made, over the key's 2");
    let all = ids(&op.get("/v1/conversations?limit=100").await.unwrap().json().unwrap());
    assert_eq!(all.len(), held.len(), "a refused create left nothing behind: {all:?}");
}
