//! `bench --nodes N --db postgres://...`: the same load through N services (nodes) sharing one
//! PostgreSQL store, the pool's processes split between them, and through one node with all of
//! them on the same store: what coordinating several nodes costs. The nodes run in this process
//! (their CPU is the client's), each with a store of its own on the database, as separate
//! machines would; the client sends each conversation's requests to the node that created it
//! (its owner), or (`--via`, see `balancer.rs`) through HAProxy, or to another node than the
//! owner, which forwards them.

use crate::balancer::{forwarded, Balancer, Via};
use crate::error::{BenchError, IoContext};
use crate::http::{http_turn, wait_ready};
use crate::measure::CpuClock;
use crate::mock_child::MockChild;
use crate::{drive, pool_config, scratch, BenchArgs, RunResult};
use codex_pool::{NodeConfig, Pool};
use codex_pool_process::ca::SystemRoots;
use codex_pool_server::client::Client;
use codex_pool_server::{Service, ServiceConfig};
use codex_pool_store::PostgresStore;
use serde_json::json;
use std::time::Instant;

/// One node of a run: its service's stop switch and task, its pool and store.
struct Node {
    pool: Pool,
    store: PostgresStore,
    client: Client,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<Result<(), codex_pool_server::ServeError>>,
}

/// Runs the load through `nodes` nodes on the database at `db`, the requests reaching them `via`.
pub async fn run(
    args: &BenchArgs,
    system: &SystemRoots,
    bin: &std::path::Path,
    mock: &MockChild,
    (nodes, db, via): (usize, &str, Via),
) -> Result<RunResult, BenchError> {
    if args.pool_size % nodes != 0 {
        let size = args.pool_size;
        return Err(BenchError::Flags(format!("--pool-size {size} does not split evenly over {nodes} nodes")));
    }
    let dir = scratch()?;
    let t0 = Instant::now();
    let mut started = Vec::new();
    for k in 0..nodes {
        let node_dir = dir.path().join(format!("node-{k}"));
        std::fs::create_dir_all(&node_dir).doing("creating a node's directory")?;
        started.push(start_node(args, system, bin, mock, &node_dir, (k, nodes), db).await?);
    }
    for node in &started {
        wait_ready(&node.client, t0, "a node").await?;
    }
    let balancer = match via {
        Via::Balancer => {
            let addresses: Vec<String> = started.iter().map(|n| n.client.base().to_owned()).collect();
            Some(Balancer::start(&args.haproxy_config, &addresses).await?)
        }
        Via::Owner | Via::Other => None,
    };
    let ready = t0.elapsed();
    let ca_bundle = started[0].pool.stats().ca.bundle;
    let mut conversations = Vec::new();
    for c in 0..args.convs {
        // Created on the node that is to own it (or wherever the balancer sends it); its turns
        // go to that node, through the balancer, or to the next node.
        let (owner, client) = match &balancer {
            Some(lb) => (Client::new(&lb.base, None), Client::new(&lb.base, None)),
            None if via == Via::Other => (started[c % nodes].client.clone(), started[(c + 1) % nodes].client.clone()),
            None => (started[c % nodes].client.clone(), started[c % nodes].client.clone()),
        };
        let created = owner.post("/v1/conversations", json!({})).await?.json()?;
        conversations.push((client, created["id"].as_str().unwrap_or_default().to_owned()));
    }
    let node_clients: Vec<Client> = started.iter().map(|n| n.client.clone()).collect();
    let forwarded_before = forwarded(&node_clients).await;
    let balancer_cpu_before = balancer.as_ref().map(Balancer::cpu);
    let pids: Vec<u32> = started.iter().flat_map(|n| n.pool.stats().slots).filter_map(|s| s.pid).collect();
    let trips = || started.iter().map(|n| n.store.round_trips()).sum::<u64>();
    let trips_before = trips();
    let clock = CpuClock::start(&pids, mock).await;
    let begun = Instant::now();
    let (samples, errors) = drive(conversations, args.turns, |(client, id): (Client, String), text| async move {
        http_turn(&client, &id, &text, None).await
    })
    .await;
    let wall = begun.elapsed();
    let usage = clock.stop(&pids, mock).await;
    let store_round_trips = trips() - trips_before;
    let forwarded = forwarded(&node_clients).await - forwarded_before;
    let balancer_cpu = balancer.as_ref().zip(balancer_cpu_before).map(|(b, before)| b.cpu().saturating_sub(before));
    if let Some(balancer) = balancer {
        balancer.stop().await;
    }
    for node in started {
        let _ = node.stop.send(());
        node.serving.await??;
    }
    Ok(RunResult {
        ca_bundle,
        ready,
        wall,
        samples,
        errors,
        store_round_trips: Some(store_round_trips),
        forwarded: Some(forwarded),
        balancer_cpu,
        ..usage.into_result()
    })
}

/// Node `k` of `n`: a service on a loopback port, with its share of the processes.
async fn start_node(
    args: &BenchArgs,
    system: &SystemRoots,
    bin: &std::path::Path,
    mock: &MockChild,
    dir: &std::path::Path,
    (k, n): (usize, usize),
    db: &str,
) -> Result<Node, BenchError> {
    let store = PostgresStore::open(db).await?;
    let mut service = ServiceConfig::default();
    service.listen = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
    service.max_running_turns = args.convs.max(1);
    let listener = Service::listen(&service).await?;
    let address = format!("http://{}", listener.local_addr().doing("reading a node's address")?);
    let mut config = pool_config(args, (args.profile, &args.ca_bundle, system), bin, mock, dir);
    config.size = args.pool_size / n;
    config.node = Some(NodeConfig::new(format!("bench-{n}-{k}-{}", std::process::id()), address.clone()));
    let pool = Pool::new(config, std::sync::Arc::new(store.clone()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(Service::on(listener, pool.clone(), service).run(async move {
        let _ = stopped.await;
    }));
    Ok(Node { pool, store, client: Client::new(&address, None), stop, serving })
}
