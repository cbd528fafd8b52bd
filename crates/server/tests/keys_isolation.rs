//! A property of API keys: for random interleavings of creates, turns, reads, lists and deletes
//! by several keys, no key ever sees or changes another's conversation. Fast: the service runs
//! over the scripted app-server (`codex_pool_testkit::scripted`, the pool's `Spawner`), whose
//! turns a task answers at once; no codex runs. Every request goes through HTTP.

use codex_pool::{Pool, PoolConfig, Spawner};
use codex_pool_process::{BoxFuture, ModelProvider, ProcessConfig};
use codex_pool_server::client::Client;
use codex_pool_server::{Service, ServiceConfig};
use codex_pool_store::MemoryStore;
use codex_pool_testkit::scripted::ScriptedCodex;
use hyper::{Method, StatusCode};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const OPERATOR: &str = "operator";
const KEYS: usize = 3;

/// What a key does, to a conversation picked among all created so far (any key's).
#[derive(Debug, Clone)]
enum Op {
    Create(usize),
    Turn(usize, usize),
    Read(usize, usize),
    List(usize),
    Delete(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS;
    prop_oneof![
        key.clone().prop_map(Op::Create),
        (key.clone(), any::<usize>()).prop_map(|(k, i)| Op::Turn(k, i)),
        (key.clone(), any::<usize>()).prop_map(|(k, i)| Op::Read(k, i)),
        key.clone().prop_map(Op::List),
        (key, any::<usize>()).prop_map(|(k, i)| Op::Delete(k, i)),
    ]
}

/// The service over a scripted codex whose turns are answered at once.
struct Harness {
    runtime: tokio::runtime::Runtime,
    operator: Client,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let operator = runtime.block_on(async {
            let codex = ScriptedCodex::new();
            let process = ProcessConfig::new("codex".into(), dir.path().join("home"), dir.path().join("work"))
                .with_provider(&ModelProvider::new("mock", "http://127.0.0.1:9/v1"));
            let mut config = PoolConfig::new(process);
            config.size = 1;
            let spawner = codex.clone();
            config.spawner = Spawner::custom(move |process| -> BoxFuture<_> {
                let codex = spawner.clone();
                Box::pin(async move { codex.spawn(process).await })
            });
            tokio::spawn(async move {
                loop {
                    codex.next_turn().await.reply("ok");
                }
            });
            let pool = Pool::new(config, Arc::new(MemoryStore::new()));
            let mut service = ServiceConfig::default();
            service.listen = "127.0.0.1:0".parse().unwrap();
            service.token = Some(OPERATOR.to_owned());
            let service = Service::bind(pool, service).await.unwrap();
            let operator = Client::new(&format!("http://{}", service.local_addr()), Some(OPERATOR.to_owned()));
            tokio::spawn(service.run(std::future::pending()));
            while operator.get("/readyz").await.is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            operator
        });
        Self { runtime, operator, _dir: dir }
    }
}

async fn send(client: &Client, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let answer = client.send(method, path, body.map(|b| b.to_string().into())).await.unwrap();
    (answer.status, answer.json().unwrap_or(Value::Null))
}

/// Runs `ops` with fresh keys; checks each answer against a model of who owns what.
async fn run(operator: &Client, case: usize, ops: Vec<Op>) {
    let mut keys = Vec::new();
    for k in 0..KEYS {
        let created = operator.post("/v1/keys", json!({"name": format!("case{case}-key{k}")})).await.unwrap();
        let secret = created.json().unwrap()["secret"].as_str().unwrap().to_owned();
        keys.push(Client::new(operator.base(), Some(secret)));
    }
    // Every conversation created, its owner, whether it is live, and its turns.
    let mut all: Vec<(String, usize)> = Vec::new();
    let mut live: BTreeMap<String, u64> = BTreeMap::new();
    for op in ops {
        let pick = |i: usize| all.get(i % all.len().max(1)).cloned();
        match op {
            Op::Create(k) => {
                let (status, body) = send(&keys[k], Method::POST, "/v1/conversations", Some(json!({}))).await;
                assert_eq!(status, StatusCode::CREATED);
                let id = body["id"].as_str().unwrap().to_owned();
                all.push((id.clone(), k));
                live.insert(id, 0);
            }
            Op::Turn(k, i) => {
                let Some((id, owner)) = pick(i) else { continue };
                let path = format!("/v1/conversations/{id}/turns");
                let (status, body) =
                    send(&keys[k], Method::POST, &path, Some(json!({"text": "hi", "stream": false}))).await;
                if owner == k && live.contains_key(&id) {
                    assert_eq!(status, StatusCode::OK, "{body}");
                    *live.get_mut(&id).unwrap() += 1;
                } else {
                    assert_eq!(status, StatusCode::NOT_FOUND, "key {k} ran a turn in key {owner}'s {id}: {body}");
                }
            }
            Op::Read(k, i) => {
                let Some((id, owner)) = pick(i) else { continue };
                let (status, body) = send(&keys[k], Method::GET, &format!("/v1/conversations/{id}"), None).await;
                if owner == k && live.contains_key(&id) {
                    assert_eq!((status, body["turns"].as_u64()), (StatusCode::OK, Some(live[&id])), "{body}");
                } else {
                    assert_eq!(status, StatusCode::NOT_FOUND, "key {k} read key {owner}'s {id}: {body}");
                }
            }
            Op::List(k) => {
                let (status, body) = send(&keys[k], Method::GET, "/v1/conversations?limit=100", None).await;
                assert_eq!(status, StatusCode::OK);
                let seen: BTreeSet<String> =
                    body["data"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect();
                let own: BTreeSet<String> =
                    all.iter().filter(|(id, o)| *o == k && live.contains_key(id)).map(|(id, _)| id.clone()).collect();
                assert_eq!(seen, own, "key {k}'s list");
            }
            Op::Delete(k, i) => {
                let Some((id, owner)) = pick(i) else { continue };
                let (status, body) = send(&keys[k], Method::DELETE, &format!("/v1/conversations/{id}"), None).await;
                if owner == k && live.contains_key(&id) {
                    assert_eq!(status, StatusCode::OK, "{body}");
                    live.remove(&id);
                } else {
                    assert_eq!(status, StatusCode::NOT_FOUND, "key {k} deleted key {owner}'s {id}: {body}");
                }
            }
        }
        // Nothing another key did changed a conversation: the operator sees each as its owner left it.
        for (id, turns) in &live {
            let (status, body) = send(operator, Method::GET, &format!("/v1/conversations/{id}"), None).await;
            assert_eq!((status, body["turns"].as_u64()), (StatusCode::OK, Some(*turns)), "{id}");
        }
    }
}

#[test]
fn no_key_ever_sees_or_changes_another_keys_conversation() {
    let harness = Harness::start();
    let case = AtomicUsize::new(0);
    let config = ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..24))| {
        let n = case.fetch_add(1, Ordering::SeqCst);
        harness.runtime.block_on(run(&harness.operator, n, ops));
    });
}
