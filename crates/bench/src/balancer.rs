//! `bench --nodes N --via balancer|other`: how requests reach the nodes. Through HAProxy with
//! the example deployment's own configuration (`deploy/haproxy.cfg`, round robin: a request
//! lands on any node, which forwards it to the conversation's owner when it is not), or each
//! request sent to a node that does not own its conversation (every turn forwarded), beside
//! each sent to its owner. The nodes' `/metrics` tell how many requests were forwarded.

use crate::error::{BenchError, IoContext};
use codex_pool_server::client::Client;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How the bench's requests reach the nodes of a `--nodes` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Each conversation's requests to the node that created it (its owner).
    Owner,
    /// Every request through HAProxy, round robin.
    Balancer,
    /// Each conversation's requests to another node than its owner: every turn forwarded.
    Other,
}

impl std::str::FromStr for Via {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "owner" => Ok(Via::Owner),
            "balancer" => Ok(Via::Balancer),
            "other" => Ok(Via::Other),
            _ => Err(format!("{s:?}: use owner, balancer or other")),
        }
    }
}

impl Via {
    /// Its name in the JSON line.
    pub fn name(self) -> &'static str {
        match self {
            Via::Owner => "owner",
            Via::Balancer => "balancer",
            Via::Other => "other",
        }
    }
}

/// The example deployment's HAProxy configuration, in this checkout.
pub fn default_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/haproxy.cfg")
}

/// HAProxy in front of the nodes, run with the example deployment's configuration; killed when
/// dropped.
pub struct Balancer {
    child: tokio::process::Child,
    /// Its address, `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Balancer {
    /// Starts HAProxy with `config` in front of `nodes` (their `http://host:port` addresses, at
    /// most the three the configuration names) and waits until it answers `/readyz`.
    pub async fn start(config: &Path, nodes: &[String]) -> Result<Balancer, BenchError> {
        if !(1..=3).contains(&nodes.len()) {
            return Err(BenchError::Flags(format!(
                "{} names 1 to 3 nodes (CODEX_POOL_NODE1..3); {} asked for",
                config.display(),
                nodes.len()
            )));
        }
        // A free port when asked; HAProxy binds it a moment later.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .doing("finding a free port for haproxy")?
            .port();
        let bind = format!("127.0.0.1:{port}");
        let mut command = tokio::process::Command::new("haproxy");
        command
            .args(["-db", "-f"])
            .arg(config)
            .env("CODEX_POOL_LB_BIND", &bind)
            .env_remove("CODEX_POOL_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for k in 1..=3 {
            command.env_remove(format!("CODEX_POOL_NODE{k}"));
        }
        for (k, node) in nodes.iter().enumerate() {
            command.env(format!("CODEX_POOL_NODE{}", k + 1), node.trim_start_matches("http://"));
        }
        let mut child = command.spawn().map_err(|e| {
            BenchError::Child(format!(
                "cannot run haproxy ({e}): install it with scripts/install-haproxy (apt-get install haproxy)"
            ))
        })?;
        let base = format!("http://{bind}");
        let client = Client::new(&base, None);
        let t0 = Instant::now();
        while client.get("/readyz").await.is_err() {
            if let Some(status) = child.try_wait().doing("waiting for haproxy")? {
                return Err(BenchError::Child(format!("haproxy exited at start ({status}) with {}", config.display())));
            }
            if t0.elapsed() >= Duration::from_secs(30) {
                return Err(BenchError::Child(format!("haproxy did not answer on {bind} in 30 s")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Balancer { child, base })
    }

    /// CPU it used so far.
    pub fn cpu(&self) -> Duration {
        self.child.id().map_or(Duration::ZERO, crate::measure::proc_cpu)
    }

    /// Stops it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Requests the nodes forwarded to another node so far (`codex_pool_forwarded_requests_total`,
/// every outcome, summed over the nodes); 0 from a node whose `/metrics` does not answer.
pub async fn forwarded(nodes: &[Client]) -> u64 {
    let mut total = 0.0;
    for node in nodes {
        let Ok(answer) = node.get("/metrics").await else { continue };
        let text = String::from_utf8_lossy(&answer.body);
        total += text
            .lines()
            .filter(|l| l.starts_with("codex_pool_forwarded_requests_total"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>();
    }
    total as u64
}
