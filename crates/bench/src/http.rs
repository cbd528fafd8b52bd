//! `bench --http`, `--responses`, `--chat`: the same load through the service on a loopback
//! port, driven by a client in this process, on a thread of its own whose CPU the line reports
//! apart (`http_client_cpu_ms_per_turn`; the rest, `service_cpu_ms_per_turn`, is the service's):
//! the native API (a conversation, then its turns), OpenAI's Responses API (each turn continues
//! the last with `previous_response_id`) or Chat Completions (each request resends the whole
//! transcript, which the service matches to its conversation). With `--tools`, the native API
//! again, each turn calling a client tool that the bench answers at once (`tool_turn.rs`).

use crate::error::BenchError;
use crate::measure::{on_client_thread, CpuClock};
use crate::mock_child::MockChild;
use crate::tool_turn::{lookup, tool_turn};
use crate::{bench_pool, drive, openai, scratch, BenchArgs, RunResult};
use codex_pool::Pool;
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
    /// `/v1/conversations/{id}/turns` of a conversation with a function, each turn calling it
    /// once and the bench answering through `tool_outputs`.
    Tools,
}

/// A service on a loopback port over a pool of its own, and the client that talks to it.
pub(crate) struct Served {
    /// The service's pool.
    pub(crate) pool: Pool,
    /// `http://127.0.0.1:PORT`.
    pub(crate) base: String,
    /// A client of the service (for what is not measured: creating conversations, metrics).
    pub(crate) client: Client,
    /// From the start to the service answering `/readyz`.
    pub(crate) ready: Duration,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<Result<(), codex_pool_server::ServeError>>,
    _dir: tempfile::TempDir,
}

impl Served {
    /// Starts a service as `args` asks, the fake model `mock` behind it, running at most
    /// `max_running_turns` turns.
    pub(crate) async fn start(
        args: &BenchArgs,
        system: &SystemRoots,
        bin: &std::path::Path,
        mock: &MockChild,
        max_running_turns: usize,
    ) -> Result<Self, BenchError> {
        let dir = scratch()?;
        let pool = bench_pool(args, (args.profile, &args.ca_bundle, system), bin, mock, dir.path())?;
        let mut config = ServiceConfig::default();
        config.listen = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
        config.max_running_turns = max_running_turns.max(1);
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
        Ok(Self { pool, base, client, ready: t0.elapsed(), stop, serving, _dir: dir })
    }

    /// The pids of the pool's codex processes.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.pool.stats().slots.iter().filter_map(|s| s.pid).collect()
    }

    /// Stops the service and waits for it.
    pub(crate) async fn stop(self) -> Result<(), BenchError> {
        let _ = self.stop.send(());
        self.serving.await??;
        Ok(())
    }
}

/// Runs the load through a service on a loopback port, with the API `api`.
pub async fn run(
    args: &BenchArgs,
    system: &SystemRoots,
    bin: &std::path::Path,
    mock: &MockChild,
    api: Api,
) -> Result<RunResult, BenchError> {
    // A tool output takes room for a turn while the turn it answers holds its own (it would
    // need it to continue from the store), so the tool load gets room for two turns each.
    let room = if api == Api::Tools { 2 * args.convs } else { args.convs };
    let served = Served::start(args, system, bin, mock, room).await?;
    let (client, base, ready) = (served.client.clone(), served.base.clone(), served.ready);
    let ca_bundle = served.pool.stats().ca.bundle;
    // Each conversation's state: the native conversation id, the last response id, or the
    // transcript so far.
    let mut conversations = Vec::new();
    for _ in 0..args.convs {
        let state = match api {
            Api::Native | Api::Tools => {
                let functions = if api == Api::Tools { vec![lookup()] } else { Vec::new() };
                let created = client.post("/v1/conversations", json!({"functions": functions})).await?.json()?;
                created["id"].as_str().unwrap_or_default().to_owned()
            }
            Api::Responses | Api::Chat => String::new(),
        };
        conversations.push(Arc::new(Mutex::new(openai::State::new(state))));
    }
    let pids = served.pids();
    let clock = CpuClock::start(&pids, mock).await;
    let started = Instant::now();
    let turns = args.turns;
    let ((samples, errors), http_client_cpu) = on_client_thread(move || async move {
        let driver = Client::new(&base, None);
        drive(conversations, turns, move |state: Arc<Mutex<openai::State>>, text| {
            let client = driver.clone();
            async move {
                match api {
                    Api::Native | Api::Tools => {
                        let id = state.lock().map(|s| s.id.clone()).unwrap_or_default();
                        match api {
                            Api::Tools => tool_turn(&client, &id, &text).await,
                            _ => http_turn(&client, &id, &text, None).await,
                        }
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
    served.stop().await?;
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

/// One turn through the service, with `functions` when given (the conversation's list from then
/// on): (time to the first text delta, reply); an empty reply on failure.
pub(crate) async fn http_turn(
    client: &Client,
    id: &str,
    text: &str,
    functions: Option<&serde_json::Value>,
) -> (Option<Duration>, String) {
    let begun = Instant::now();
    let path = format!("/v1/conversations/{id}/turns");
    let mut body = json!({"text": text});
    if let Some(functions) = functions {
        body["functions"] = functions.clone();
    }
    crate::reply::streamed_reply(client, &path, body, begun).await
}
