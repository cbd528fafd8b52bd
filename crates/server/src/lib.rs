//! codex-pool as a local service: the pool and its store over HTTP, with turns streamed as
//! server-sent events, so an application in any language can hold many Codex conversations.
//!
//! - `POST /v1/conversations`, `GET /v1/conversations[/{id}[/items]]`, `DELETE
//!   /v1/conversations/{id}`, `POST /v1/conversations/{id}/release`: conversations, kept in the
//!   store (a restart loses none).
//! - `POST /v1/conversations/{id}/turns`: a turn, streamed (`turn.started`, `item.started`,
//!   `item.completed`, `text.delta`, `reasoning.delta`, `item.moderated` for an answer codex
//!   marks `hide` or `block`, then `turn.completed` or `turn.failed`) or answered whole;
//!   `GET .../turns/{turn_id}/events` picks a stream up after `Last-Event-ID`;
//!   `POST .../interrupt` stops it.
//! - Several nodes on one store: a request about a conversation another node serves is
//!   forwarded to that node and its answer streamed back (`forward.rs`), so any node answers any
//!   request; `GET /v1/nodes` lists them.
//! - `GET /` (and `/console`): the operator's console, a page of the service's own (`console.rs`).
//! - API keys (`keys/`): `POST /v1/keys`, `GET /v1/keys`, `DELETE /v1/keys/{id}`, `GET
//!   /v1/keys/{id}/usage`, the operator's; a request with an application's key sees only that
//!   key's conversations, within its limits.
//! - `GET /v1/pool`, `GET /healthz`, `GET /readyz`, `GET /openapi.json`, `GET /metrics`
//!   (Prometheus text).
//! - OpenAI's API (`openai/`): `POST /v1/responses`, `GET /v1/responses/{id}`, `POST
//!   /v1/chat/completions`, `GET /v1/models`.
//!
//! Errors are `{"error": {"code", "message"}}` (OpenAI's routes: OpenAI's shape). Safe by default: loopback unless told
//! otherwise, a token required anywhere else, bodies, settings, list pages, running turns and
//! connections capped, every phase of an HTTP exchange timed out, and web pages kept out
//! (`Host`, `Origin` and the JSON content type checked).
//!
//! ```no_run
//! # async fn demo(pool: codex_pool::Pool) -> Result<(), codex_pool_server::ServeError> {
//! use codex_pool_server::{Service, ServiceConfig};
//! let service = Service::bind(pool, ServiceConfig::default()).await?;
//! println!("listening on {}", service.local_addr());
//! service.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

#![deny(missing_docs)]
#![deny(unreachable_pub)]

mod api;
mod auth;
pub mod caps;
pub mod client;
mod console;
mod edge_metrics;
mod error;
mod events;
mod extract;
mod forward;
mod keys;
mod listener;
mod metrics;
mod openai;
mod openapi;
mod origin;
pub mod policy;
mod pool_metrics;
mod runs;
mod sse;
mod state;

/// The README's Rust examples, compiled with the tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
use state::AppState;

use api::{conversations, system, tools, turns};
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use codex_pool::Pool;
use metrics::Metrics;
use openai::{chat, models, readback, responses};
use runs::Runs;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How the service listens and what it allows.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// Where to listen (default `127.0.0.1:7878`).
    pub listen: SocketAddr,
    /// The token every request but `GET /healthz` must carry (`Authorization: Bearer`); required
    /// to listen anywhere but loopback. It is the operator's: with it set, the API keys in the
    /// store are taken too, each seeing only its own conversations.
    pub token: Option<String>,
    /// The largest request body taken (default 4 MiB: codex's 1 MiB of text, with room for JSON).
    pub max_body_bytes: usize,
    /// Turns running at once through the service; more are refused (429) until one ends. Never
    /// more than the pool's capacity ([`codex_pool::Pool::turn_capacity`]): one limit, so a turn
    /// the service admits is never left waiting in the pool.
    pub max_running_turns: usize,
    /// How long a turn's events are kept after it ended, for clients that re-attach.
    pub keep_events_for: Duration,
    /// How long shutdown waits for running turns and open streams to end.
    pub shutdown_grace: Duration,
    /// The models clients may ask for (the first is the default); empty leaves codex's choice.
    pub models: Vec<String>,
    /// What clients may make codex do (chat only, by default).
    pub policy: policy::AgentPolicy,
    /// How long a connection has to send a request's line and headers, from its opening or
    /// from its previous answer's end (so also how long an idle keep-alive connection is kept);
    /// then it is closed. A response in flight (a stream) is never idle.
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive, once its headers have (408 after).
    pub body_timeout: Duration,
    /// Connections open at once. Over it, a small reserve ([`ServiceConfig::reserve_connections`])
    /// answers `/healthz` and 503 to anything else; beyond that, connections are closed at once.
    /// Lowered at start to what the open-files limit holds.
    pub max_connections: usize,
    /// Connections beyond `max_connections` that still answer `/healthz` (503 otherwise).
    pub reserve_connections: usize,
    /// Names the service answers to besides IP addresses and `localhost` (a name: any
    /// port; `name:port`: that port only). Any other `Host` is refused (421).
    pub allowed_hosts: Vec<String>,
    /// Web pages (`https://app.example`) that may use the service from a browser, with CORS.
    /// Requests from any other page's origin are refused (403).
    pub allowed_origins: Vec<String>,
    /// Caps on a conversation's settings (instructions, metadata) and on list pages.
    pub caps: caps::SettingsCaps,
    /// Items in one turn's input (native `input`, Responses `input`, chat `messages`); more are
    /// refused (400, `too_many_items`).
    pub max_input_items: usize,
    /// Bytes (of their JSON) of ended turns' event logs kept all together; past it the oldest
    /// go, and re-attaching to them gets 410 (`events_expired`).
    pub max_retained_event_bytes: usize,
    /// Bytes of one turn's events: a running turn that passes it is cut (`turn.failed`,
    /// `events_too_large`).
    pub max_turn_event_bytes: usize,
    /// How long a node has to accept the connection of a request forwarded to it (the node that
    /// serves its conversation); past it, the node is taken as unreachable (see `forward.rs`).
    pub forward_connect_timeout: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            token: None,
            max_body_bytes: 4 << 20,
            max_running_turns: 256,
            keep_events_for: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(5),
            models: Vec::new(),
            policy: policy::AgentPolicy::default(),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            max_connections: 4096,
            reserve_connections: 16,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            caps: caps::SettingsCaps::default(),
            max_input_items: 1024,
            max_retained_event_bytes: 256 << 20,
            max_turn_event_bytes: 32 << 20,
            forward_connect_timeout: Duration::from_secs(1),
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Listening beyond loopback needs a token.
    #[error(
        "refusing to listen on {addr} without a token: anyone who can reach it could run codex. Pass --token \
         (or set CODEX_POOL_TOKEN), or listen on 127.0.0.1"
    )]
    TokenRequired {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The token is empty, or starts or ends with whitespace: no client could send it.
    #[error(
        "the token is empty or starts or ends with whitespace, which no client can send in a header; pass a \
         token of visible characters (--token, --token-file or CODEX_POOL_TOKEN)"
    )]
    UnusableToken,
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}; is another service using it? Pick another with --listen")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// The routes, over the service's state.
fn router(state: AppState, config: &ServiceConfig, touches: keys::touch::Touches) -> Router {
    let store = state.pool.store().clone();
    let auth = Arc::new(keys::Auth::new(config.token.clone(), store, touches, state.metrics.clone()));
    let metrics = state.metrics.clone();
    let forwarder = Arc::new(forward::Forwarder::new(
        state.pool.clone(),
        metrics.clone(),
        config.forward_connect_timeout,
        config.header_timeout,
    ));
    let guard = Arc::new(origin::Guard::new(
        &config.allowed_hosts,
        &config.allowed_origins,
        config.body_timeout,
        metrics.edge.clone(),
    ));
    Router::new()
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/openapi.json", get(system::openapi))
        .route("/v1/pool", get(system::pool))
        .route("/v1/nodes", get(system::nodes))
        .route("/v1/conversations", post(conversations::create).get(conversations::list))
        .route("/v1/conversations/{id}", get(conversations::get_one).delete(conversations::delete))
        .route("/v1/conversations/{id}/items", get(conversations::items))
        .route("/v1/conversations/{id}/release", post(conversations::release))
        .route("/v1/conversations/{id}/interrupt", post(conversations::interrupt))
        .route("/v1/conversations/{id}/turns", post(turns::start))
        .route("/v1/conversations/{id}/tool_outputs", post(tools::submit_outputs))
        .route("/v1/conversations/{id}/compact", post(turns::compact))
        .route("/v1/conversations/{id}/turns/{turn_id}/events", get(turns::events))
        .route("/v1/responses", post(responses::create))
        .route("/v1/responses/{id}", get(readback::retrieve))
        .route("/v1/chat/completions", post(chat::create))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::retrieve))
        .route("/metrics", get(system::metrics))
        .merge(keys::admin::routes())
        .fallback(system::not_found)
        .method_not_allowed_fallback(system::method_not_allowed)
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(axum::middleware::from_fn_with_state(forwarder, forward::forward_to_owner))
        // Outside the forward, which reads bodies within it too.
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(auth, auth::require_token))
        // The operator's console: its page and assets hold no data, so they need no token.
        .merge(console::routes())
        .layer(axum::middleware::from_fn_with_state(guard, origin::guard))
        .layer(axum::middleware::from_fn_with_state(metrics, metrics::track))
        .with_state(state)
}

/// The service, bound and ready to run.
pub struct Service {
    pool: Pool,
    runs: Arc<Runs>,
    metrics: Arc<Metrics>,
    listener: TcpListener,
    config: ServiceConfig,
}

impl Service {
    /// Checks the settings and binds the address. The pool starts when [`Service::run`] does.
    pub async fn bind(pool: Pool, config: ServiceConfig) -> Result<Self, ServeError> {
        let listener = Self::listen(&config).await?;
        Ok(Self::on(listener, pool, config))
    }

    /// Checks the settings and binds the address, before there is a pool (whose node may
    /// announce the address bound); then [`Service::on`].
    pub async fn listen(config: &ServiceConfig) -> Result<TcpListener, ServeError> {
        if let Some(token) = &config.token {
            if token.trim().is_empty() || token.trim() != token {
                return Err(ServeError::UnusableToken);
            }
        }
        if !config.listen.ip().is_loopback() && config.token.is_none() {
            return Err(ServeError::TokenRequired { addr: config.listen });
        }
        listener::raise_open_files_limit();
        TcpListener::bind(config.listen).await.map_err(|source| ServeError::Bind { addr: config.listen, source })
    }

    /// The service on a listener [`Service::listen`] bound with the same settings.
    pub fn on(listener: TcpListener, pool: Pool, config: ServiceConfig) -> Self {
        let metrics = Arc::new(Metrics::default());
        // One admission limit: never more turns than the pool has room for.
        let capacity = pool.turn_capacity();
        if config.max_running_turns > capacity {
            tracing::info!(asked = config.max_running_turns, capacity, "running turns capped at the pool's capacity");
        }
        let limits = runs::RunLimits {
            max_turns: config.max_running_turns.min(capacity).max(1),
            retention: config.keep_events_for,
            retained_bytes: config.max_retained_event_bytes,
            turn_bytes: config.max_turn_event_bytes,
        };
        let runs = Runs::new(limits, metrics.clone(), pool.store().clone());
        Self { pool, runs, metrics, listener, config }
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// Serves until `shutdown` completes, then stops accepting, ends running turns with a final
    /// event (`turn.failed`, kind `shutdown`), writes what the store still has to write, stops
    /// every codex process, and returns within a few seconds. The pool is started in the
    /// background; until it serves, requests that need it get 503.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        let Service { pool, runs, metrics, listener, mut config } = self;
        // A node's advertised address, which other nodes send clients to, is one of its names.
        if let Some(node) = &pool.config().node {
            let authority = node.address.split_once("://").map_or(node.address.as_str(), |(_, a)| a);
            let authority = authority.split('/').next().unwrap_or_default();
            if split_port(authority) {
                config.allowed_hosts.push(authority.to_owned());
            } else {
                let port = if node.address.starts_with("https://") { 443 } else { 80 };
                config.allowed_hosts.push(format!("{authority}:{port}"));
            }
        }
        let state = AppState {
            pool: pool.clone(),
            runs: runs.clone(),
            models: Arc::new(config.models.clone()),
            policy: Arc::new(config.policy.clone()),
            metrics: metrics.clone(),
            caps: Arc::new(config.caps.clone()),
            max_input_items: config.max_input_items,
        };
        let edge = metrics.edge.clone();
        // Keys' last use is written by a task of the service's, stopped last.
        let (touches, toucher) = keys::touch::start(pool.store().clone());
        let app = router(state, &config, touches);
        let starting = {
            let pool = pool.clone();
            tokio::spawn(async move {
                if let Err(e) = pool.ensure_started().await {
                    tracing::error!(error = %e, "the pool could not start; requests get 503 until a process serves");
                }
            })
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let limits = listener::ConnLimits {
            max_connections: listener::fitting_cap(
                config.max_connections.max(1),
                config.reserve_connections,
                listener::open_files_limit(),
            ),
            reserve: config.reserve_connections,
            header_timeout: config.header_timeout,
        };
        let mut serving = tokio::spawn(listener::serve(listener, app, limits, edge, stop_rx));
        shutdown.await;
        tracing::info!("shutting down: no new connections; ending running turns");
        let _ = stop_tx.send(true);
        starting.abort();
        pool.shutdown().await;
        runs.shutdown(config.shutdown_grace).await;
        let served = match tokio::time::timeout(config.shutdown_grace, &mut serving).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ServeError::Serve(std::io::Error::other(e))),
            Err(_) => {
                tracing::warn!("connections still open after the grace period; closing them");
                serving.abort();
                Ok(())
            }
        };
        toucher.stop(config.shutdown_grace).await;
        served
    }
}

/// Whether an authority (`host[:port]`) names its port.
fn split_port(authority: &str) -> bool {
    let host_end = if authority.starts_with('[') { authority.find(']').unwrap_or(0) } else { 0 };
    authority[host_end..].contains(':')
}
