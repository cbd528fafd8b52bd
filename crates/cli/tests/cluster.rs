//! The example deployment (`deploy/cluster`, `deploy/haproxy.cfg`) as an operator runs it:
//! HAProxy in front of three real `codex-pool serve` nodes on one throwaway PostgreSQL, every
//! node requiring the token, driven by the clients people use (the official `openai` package and
//! httpx, `tests/python/cluster_client.py`) through the load balancer and directly to each node.
//! The nodes run the real pinned codex against this test's fake model, whose request log tells
//! what history each turn was given. Then a node is killed, and its conversations go on.

mod common;

use codex_pool_mock_model::{MockConfig, MockModel};
use codex_pool_testkit::postgres::SKIP_VAR;
use codex_pool_testkit::{alive, kill, last_user_text, messages};
use common::{python_script, venv};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

/// Lease time of the nodes: how long a killed node's conversations wait for another node.
const LEASE_SECS: &str = "3";

/// `deploy/cluster` running, and what it printed.
struct Cluster {
    child: Child,
    /// The load balancer's address.
    lb: String,
    /// Each node's address and pid, in order.
    nodes: Vec<(String, u32)>,
    token: String,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Runs the deployment's script (with this build of `codex-pool`, the model at `model_url`
    /// and `serve_args` for every node) and waits for it to say it is ready.
    fn start(model_url: &str, serve_args: &[&str]) -> Cluster {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = tempfile::Builder::new().prefix("codex-pool-cluster-test-").tempdir().unwrap();
        // Free ports when asked (held together, so they differ); the programs bind them a moment later.
        let held: Vec<std::net::TcpListener> =
            (0..4).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let ports: Vec<String> = held.iter().map(|l| l.local_addr().unwrap().port().to_string()).collect();
        drop(held);
        let mut command = Command::new(root.join("deploy/cluster"));
        command
            .args(["--listen", &format!("127.0.0.1:{}", ports[0]), "--node-ports", &ports[1..].join(",")])
            .args(["--model-base-url", model_url, "--dir"])
            .arg(dir.path())
            .arg("--")
            .args(serve_args)
            .env("CODEX_POOL_BIN", env!("CARGO_BIN_EXE_codex-pool"))
            .env_remove("CODEX_POOL_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: prctl is async-signal-safe. The script stops everything it started when this
        // test process dies (SIGTERM when the thread that spawned it ends: this test's own).
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = command.spawn().expect("deploy/cluster runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut nodes = Vec::new();
        let lb = loop {
            let line = lines.next().expect("deploy/cluster ended before it was ready (see its stderr)").unwrap();
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["node", _, url, "pid", pid] => nodes.push((url.to_string(), pid.parse().unwrap())),
                ["codex-pool", "cluster", "ready", "at", url, ..] => break url.to_string(),
                _ => panic!("unexpected line from deploy/cluster: {line}"),
            }
        };
        let token = std::fs::read_to_string(dir.path().join("token")).unwrap();
        Cluster { child, lb, nodes, token, dir }
    }

    /// SIGTERM, as an operator's Ctrl-C: the script stops everything and exits.
    fn stop(&mut self) -> std::process::ExitStatus {
        kill(self.child.id(), libc::SIGTERM);
        self.child.wait().unwrap()
    }
}

impl Drop for Cluster {
    /// A test that fails leaves nothing running.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            kill(self.child.id(), libc::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

/// The one model request whose last user message is `last`.
fn request(model: &MockModel, last: &str) -> Value {
    let found: Vec<Value> =
        model.requests().into_iter().map(|r| r.body).filter(|b| last_user_text(b).as_deref() == Some(last)).collect();
    assert_eq!(found.len(), 1, "one model request ends with {last:?}");
    found.into_iter().next().unwrap()
}

/// How many times the model request ending with `last` held each of `texts`.
fn times(model: &MockModel, last: &str, texts: &[String]) -> Vec<usize> {
    let said = messages(&request(model, last));
    texts.iter().map(|text| said.iter().filter(|(_, t)| t == text).count()).collect()
}

/// Each of `texts` and its echo: what a turn after them must have been given once each.
fn history(texts: &[&str]) -> Vec<String> {
    texts.iter().flat_map(|t| [t.to_string(), format!("echo: {t}")]).collect()
}

/// The codex thread that sent the model request ending with `last` (codex's `prompt_cache_key`).
fn thread_of(model: &MockModel, last: &str) -> String {
    request(model, last)["prompt_cache_key"].as_str().expect("codex names its thread").to_owned()
}

/// The conversation a Responses or Chat Completions id names (`resp_<conversation>_<turn>`,
/// `chatcmpl-<conversation>_<turn>`).
fn conversation_of(id: &Value) -> String {
    let id = id.as_str().unwrap();
    let rest = id.strip_prefix("chatcmpl-").or_else(|| id.strip_prefix("resp_")).unwrap_or(id);
    rest.split('_').next().unwrap().to_owned()
}

fn one_conversation(ids: &Value) -> String {
    let conversations: Vec<String> = ids.as_array().unwrap().iter().map(conversation_of).collect();
    assert!(conversations.windows(2).all(|w| w[0] == w[1]), "several conversations: {ids}");
    conversations[0].clone()
}

async fn run(program: std::path::PathBuf, args: Vec<String>, token: String) -> Output {
    let output = move || {
        Command::new(&program).args(&args).env("CODEX_POOL_TOKEN", token).current_dir(std::env::temp_dir()).output()
    };
    tokio::task::spawn_blocking(output).await.unwrap().expect("python runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_through_the_load_balancer_and_each_node_and_a_killed_nodes_conversations_go_on() {
    let Some(venv) = venv() else { return };
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
        println!("skipped: {SKIP_VAR}=1, and the example deployment runs on PostgreSQL");
        return;
    }
    let model = MockModel::start(MockConfig::default()).await.unwrap();
    let cluster = Cluster::start(&model.base_url(), &["--pool-size", "1", "--lease-ttl-secs", LEASE_SECS]);
    assert_eq!(cluster.nodes.len(), 3);
    let mut args = vec![python_script("cluster_client.py").display().to_string(), cluster.lb.clone()];
    args.extend(cluster.nodes.iter().map(|(url, _)| url.clone()));
    args.push(cluster.nodes[0].1.to_string());
    let out = run(venv.join("bin/python"), args, cluster.token.clone()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_str(&stdout).unwrap();
    println!("the clients saw: {seen}");

    // Responses: one conversation, through the load balancer and each node; every turn ran on its
    // codex thread (on the node that serves it) and was given the history once, by codex.
    one_conversation(&seen["responses"]);
    let said = ["resp one", "resp two", "resp three", "resp four", "resp five", "resp six"];
    assert_eq!(times(&model, "resp seven", &history(&said)), vec![1; 12]);
    let thread = thread_of(&model, "resp one");
    for text in &said[1..] {
        assert_eq!(thread_of(&model, text), thread, "{text} ran on another codex thread");
    }

    // Chat Completions: the growing transcript stayed one conversation wherever it was sent.
    one_conversation(&seen["chat"]);
    assert_eq!(seen["chat_new_conversations"], 1, "{seen}");
    let said = ["chat one", "chat two", "chat three", "chat four", "chat five"];
    assert_eq!(times(&model, "chat six", &history(&said)), vec![1; 10]);
    let thread = thread_of(&model, "chat one");
    for text in &said[1..] {
        assert_eq!(thread_of(&model, text), thread, "{text} ran on another codex thread");
    }

    // Native turns through the load balancer, and a turn read through three nodes in turn.
    assert_eq!(times(&model, "native two", &history(&["native one"])), vec![1, 1]);
    assert!(seen["reattached_events"].as_u64().unwrap() > 12, "{seen}");

    // Requests reached every node, and nodes forwarded what another node serves.
    let metrics = seen["metrics"].as_array().unwrap();
    for (node, m) in metrics.iter().enumerate() {
        assert!(m["posts"].as_f64().unwrap() > 0.0, "node{} got no request: {metrics:?}", node + 1);
    }
    let forwarded: f64 = metrics.iter().map(|m| m["forwarded"].as_f64().unwrap()).sum();
    assert!(forwarded > 0.0, "nothing was forwarded: {metrics:?}");

    // node1 was killed: what it served went on through the others, with its history.
    assert_eq!(one_conversation(&seen["kill_responses"]), conversation_of(&seen["kill_responses"][0]));
    assert_eq!(times(&model, "kill resp after", &history(&["kill resp before"])), vec![1, 1]);
    one_conversation(&seen["kill_chat"]);
    assert_eq!(times(&model, "kill chat after", &history(&["kill chat before"])), vec![1, 1]);
    let said = ["native one", "native two", "kill native before"];
    assert_eq!(times(&model, "kill native after", &history(&said)), vec![1; 6]);
    assert!(!alive(cluster.nodes[0].1));
    println!(
        "after node1 was killed: {} requests for 3 calls, {} s (leases of {LEASE_SECS} s)",
        seen["requests_after_kill"], seen["seconds_after_kill"]
    );

    // SIGTERM stops everything the script started, PostgreSQL last.
    let nodes: Vec<u32> = cluster.nodes.iter().map(|(_, pid)| *pid).collect();
    let postmaster = cluster.dir.path().join("postgres/postmaster.pid");
    assert!(postmaster.exists());
    let asked = Instant::now();
    let (cluster, status) = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        let status = cluster.stop();
        (cluster, status)
    })
    .await
    .unwrap();
    println!("deploy/cluster stopped in {:?}: {status}", asked.elapsed());
    assert!(nodes.iter().all(|pid| !alive(*pid)), "a node outlived the script");
    assert!(!postmaster.exists(), "PostgreSQL outlived the script");
    drop(cluster);
}
