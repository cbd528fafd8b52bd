//! What the service's tests share: a service on a loopback port over a pool on the fake model,
//! and reading its answers.

#![allow(dead_code)]

use bytes::Bytes;
use codex_pool::{Pool, PoolConfig};
use codex_pool_server::client::{Client, ClientError, EventStream, SseEvent};
use codex_pool_server::{Service, ServiceConfig};
use codex_pool_store::{MemoryStore, ThreadStore};
use codex_pool_testkit::*;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running service on a loopback port, over a pool on the fake model.
pub struct Running {
    pub client: Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    pub async fn start(env: &Env, size: usize, tune: impl FnOnce(&mut ServiceConfig)) -> Self {
        Self::start_with(env, |p| p.size = size, tune).await
    }

    /// [`Running::start`], with the pool's settings tuned too.
    pub async fn start_with(
        env: &Env,
        tune_pool: impl FnOnce(&mut PoolConfig),
        tune: impl FnOnce(&mut ServiceConfig),
    ) -> Self {
        Self::start_on(env, Arc::new(MemoryStore::new()), tune_pool, tune).await
    }

    /// [`Running::start_with`], on a store the test reads too.
    pub async fn start_on(
        env: &Env,
        store: Arc<dyn ThreadStore>,
        tune_pool: impl FnOnce(&mut PoolConfig),
        tune: impl FnOnce(&mut ServiceConfig),
    ) -> Self {
        let mut config = PoolConfig::new(env.config());
        tune_pool(&mut config);
        let pool = Pool::new(config, store);
        let mut service = ServiceConfig::default();
        service.listen = "127.0.0.1:0".parse().unwrap();
        tune(&mut service);
        let token = service.token.clone();
        let service = Service::bind(pool, service).await.unwrap();
        let client = Client::new(&format!("http://{}", service.local_addr()), token);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            service
                .run(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        let running = Running { client, stop: Some(stop), task: Some(task) };
        wait_ready(&running.client).await;
        running
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(15), self.task.take().unwrap()).await.unwrap().unwrap();
    }

    pub async fn conversation(&self) -> String {
        let created = self.client.post("/v1/conversations", json!({})).await.unwrap().json().unwrap();
        created["id"].as_str().unwrap().to_owned()
    }
}

/// Waits until every process of the pool serves (`/readyz` needs only one).
pub async fn wait_all_serving(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pool = client.get("/v1/pool").await.unwrap().json().unwrap();
        let processes = pool["processes"].as_array().cloned().unwrap_or_default();
        if !processes.is_empty() && processes.iter().all(|p| p["healthy"] == true) {
            return;
        }
        assert!(Instant::now() < deadline, "not every process serves: {pool}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_ready(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get("/readyz").await.is_err() {
        assert!(Instant::now() < deadline, "the service did not get ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads a stream to its end; returns every event.
pub async fn all(mut events: EventStream) -> Vec<SseEvent> {
    let mut seen = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(60), events.next()).await.unwrap().unwrap() {
        seen.push(e);
    }
    seen
}

pub fn text_of(events: &[SseEvent]) -> String {
    events.iter().filter(|e| e.event == "text.delta").map(|e| e.data["delta"].as_str().unwrap().to_owned()).collect()
}

pub fn status_of(result: Result<impl Sized, ClientError>) -> (StatusCode, Value) {
    match result {
        Err(ClientError::Status { status, body }) => (status, body),
        Err(e) => panic!("{e}"),
        Ok(_) => (StatusCode::OK, Value::Null),
    }
}

pub async fn raw(client: &Client, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
    let answer = client.send(method, path, Some(Bytes::from(body.to_owned()))).await.unwrap();
    (answer.status, answer.json().unwrap_or(Value::Null))
}
