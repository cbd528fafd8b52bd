//! `bench --http`: the same load through the service, `serve`'s HTTP + SSE API on a loopback
//! port, driven by a client in this process (so the figures include both sides of the wire).

use super::measure::CpuClock;
use super::{bench_pool, drive, scratch, BenchArgs, RunResult};
use crate::backend::MockChild;
use codex_pool_process::ca::SystemRoots;
use codex_pool_server::client::Client;
use codex_pool_server::{Service, ServiceConfig};
use serde_json::json;
use std::time::{Duration, Instant};

pub async fn run(
    args: &BenchArgs,
    system: &SystemRoots,
    bin: &std::path::Path,
    mock: &MockChild,
) -> anyhow::Result<RunResult> {
    let dir = scratch()?;
    let pool = bench_pool(args, (args.profile, &args.ca_bundle, system), bin, mock, dir.path())?;
    let mut config = ServiceConfig::default();
    config.listen = "127.0.0.1:0".parse()?;
    config.max_running_turns = args.convs.max(1);
    let t0 = Instant::now();
    let service = Service::bind(pool.clone(), config).await?;
    let client = Client::new(&format!("http://{}", service.local_addr()), None);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(service.run(async move {
        let _ = stopped.await;
    }));
    while client.get("/readyz").await.is_err() {
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(60), "the service did not get ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = t0.elapsed();
    let ca_bundle = pool.stats().ca.bundle;
    let mut conversations = Vec::new();
    for _ in 0..args.convs {
        let created = client.post("/v1/conversations", json!({})).await?.json()?;
        conversations.push(created["id"].as_str().unwrap_or_default().to_owned());
    }
    let pids: Vec<u32> = pool.stats().slots.iter().filter_map(|s| s.pid).collect();
    let clock = CpuClock::start(&pids, mock).await;
    let started = Instant::now();
    let (samples, errors) = drive(conversations, args.turns, move |id: String, text| {
        let client = client.clone();
        async move { http_turn(&client, &id, &text).await }
    })
    .await;
    let wall = started.elapsed();
    let usage = clock.stop(&pids, mock).await;
    let _ = stop.send(());
    serving.await??;
    Ok(RunResult { ca_bundle, ready, wall, samples, errors, ..usage.into_result() })
}

/// One turn through the service: (time to the first text delta, reply); an empty reply on
/// failure.
async fn http_turn(client: &Client, id: &str, text: &str) -> (Option<Duration>, String) {
    let begun = Instant::now();
    let path = format!("/v1/conversations/{id}/turns");
    let mut events = match client.stream(&path, json!({"text": text})).await {
        Ok(events) => events,
        Err(e) => {
            tracing::warn!(error = %e, "turn failed to start");
            return (None, String::new());
        }
    };
    let (mut ttft, mut reply) = (None, String::new());
    while let Ok(Some(event)) = events.next().await {
        match event.event.as_str() {
            "text.delta" => {
                ttft.get_or_insert_with(|| begun.elapsed());
                reply.push_str(event.data["delta"].as_str().unwrap_or_default());
            }
            "turn.completed" => return (ttft, reply),
            "turn.failed" => break,
            _ => {}
        }
    }
    (None, String::new())
}
