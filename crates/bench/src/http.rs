//! `bench --http`, `--responses`, `--chat`: the same load through the service on a loopback
//! port, driven by a client in this process, on a thread of its own whose CPU the line reports
//! apart (`http_client_cpu_ms_per_turn`; the rest, `service_cpu_ms_per_turn`, is the service's):
//! the native API (a conversation, then its turns), OpenAI's Responses API (each turn continues
//! the last with `previous_response_id`) or Chat Completions (each request resends the whole
//! transcript, which the service matches to its conversation).

use crate::error::BenchError;
use crate::measure::{on_client_thread, CpuClock};
use crate::mock_child::MockChild;
use crate::{bench_pool, drive, openai, scratch, BenchArgs, RunResult};
use codex_pool_process::ca::SystemRoots;
use codex_pool_server::client::Client;
use codex_pool_server::{Service, ServiceConfig};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which API of the service a run drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/v1/conversations/{id}/turns`.
    Native,
    /// `/v1/responses` with `previous_response_id`.
    Responses,
    /// `/v1/chat/completions` with the growing transcript.
    Chat,
}

/// Runs the load through a service on a loopback port, with the API `api`.
pub async fn run(
    args: &BenchArgs,
    system: &SystemRoots,
    bin: &std::path::Path,
    mock: &MockChild,
    api: Api,
) -> Result<RunResult, BenchError> {
    let dir = scratch()?;
    let pool = bench_pool(args, (args.profile, &args.ca_bundle, system), bin, mock, dir.path())?;
    let mut config = ServiceConfig::default();
    config.listen = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
    config.max_running_turns = args.convs.max(1);
    config.models = vec!["mock-model".to_owned()];
    let t0 = Instant::now();
    let service = Service::bind(pool.clone(), config).await?;
    let base = format!("http://{}", service.local_addr());
    let client = Client::new(&base, None);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(service.run(async move {
        let _ = stopped.await;
    }));
    wait_ready(&client, t0, "the service").await?;
    let ready = t0.elapsed();
    let ca_bundle = pool.stats().ca.bundle;
    // Each conversation's state: the native conversation id, the last response id, or the
    // transcript so far.
    let mut conversations = Vec::new();
    for _ in 0..args.convs {
        let state = match api {
            Api::Native => {
                let created = client.post("/v1/conversations", json!({})).await?.json()?;
                created["id"].as_str().unwrap_or_default().to_owned()
            }
            Api::Responses | Api::Chat => String::new(),
        };
        conversations.push(Arc::new(Mutex::new(openai::State::new(state))));
    }
    let pids: Vec<u32> = pool.stats().slots.iter().filter_map(|s| s.pid).collect();
    let clock = CpuClock::start(&pids, mock).await;
    let started = Instant::now();
    let turns = args.turns;
    let ((samples, errors), http_client_cpu) = on_client_thread(move || async move {
        let driver = Client::new(&base, None);
        drive(conversations, turns, move |state: Arc<Mutex<openai::State>>, text| {
            let client = driver.clone();
            async move {
                match api {
                    Api::Native => {
                        let id = state.lock().map(|s| s.id.clone()).unwrap_or_default();
                        http_turn(&client, &id, &text).await
                    }
                    Api::Responses => openai::response_turn(&client, &state, &text).await,
                    Api::Chat => openai::chat_turn(&client, &state, &text).await,
                }
            }
        })
        .await
    })
    .await?;
    let wall = started.elapsed();
    let usage = clock.stop(&pids, mock).await;
    let chat = match api {
        Api::Chat => Some(openai::chat_outcomes(&client).await),
        _ => None,
    };
    let _ = stop.send(());
    serving.await??;
    Ok(RunResult {
        ca_bundle,
        ready,
        wall,
        samples,
        errors,
        chat,
        http_client_cpu: Some(http_client_cpu),
        ..usage.into_result()
    })
}

/// Waits until the service `client` talks to answers `/readyz`, at most a minute after `t0`.
pub(crate) async fn wait_ready(client: &Client, t0: Instant, what: &str) -> Result<(), BenchError> {
    while client.get("/readyz").await.is_err() {
        if t0.elapsed() >= Duration::from_secs(60) {
            return Err(BenchError::Child(format!("{what} did not get ready")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// One turn through the service: (time to the first text delta, reply); an empty reply on
/// failure.
pub(crate) async fn http_turn(client: &Client, id: &str, text: &str) -> (Option<Duration>, String) {
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
