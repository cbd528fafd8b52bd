//! Set-up shared by the service's tests: a service on a loopback port, over a pool on the real
//! codex and the fake model.

use codex_pool::{Pool, PoolConfig};
use codex_pool_server::client::Client;
use codex_pool_server::{Service, ServiceConfig};
use codex_pool_store::MemoryStore;
use codex_pool_testkit::Env;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running service, stopped with [`Running::stop`].
pub struct Running {
    pub client: Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    /// A service on `127.0.0.1:0` over `size` codex processes, its settings tuned by `tune`.
    pub async fn start(env: &Env, size: usize, tune: impl FnOnce(&mut ServiceConfig)) -> Self {
        let mut config = PoolConfig::new(env.config());
        config.size = size;
        let pool = Pool::new(config, Arc::new(MemoryStore::new()));
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

    /// Stops the service and waits for it.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(15), self.task.take().unwrap()).await.unwrap().unwrap();
    }

    /// Creates a conversation; returns its id.
    #[allow(dead_code)]
    pub async fn conversation(&self) -> String {
        let created = self.client.post("/v1/conversations", json!({})).await.unwrap().json().unwrap();
        created["id"].as_str().unwrap().to_owned()
    }
}

/// Waits until the service answers `/readyz`.
pub async fn wait_ready(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get("/readyz").await.is_err() {
        assert!(Instant::now() < deadline, "the service did not get ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
