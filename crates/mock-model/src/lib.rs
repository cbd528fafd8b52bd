//! A fake model: an OpenAI Responses API server (`POST /v1/responses`, streamed as SSE) that
//! answers every request by echoing the last user message as `echo: <text>`, in `deltas` pieces.
//!
//! It is what the tests, the demo (`codex-pool chat --mock-model`) and the benchmark run codex
//! against, so no account and no network are needed. It records every request body it receives
//! (in memory, and with [`MockConfig::log_dir`] one file per request), which is the best oracle for
//! what a conversation really sends the model.
//!
//! The last user message can steer it with directives, written anywhere in the text:
//!
//! | directive | effect | bound |
//! |---|---|---|
//! | `[mock:deltas=N]` | stream the reply in N pieces | 1 to 10,000 ([`MAX_DELTAS`]) |
//! | `[mock:delay_ms=N]` | wait N ms before each piece | 60,000 ([`MAX_DELAY`]) |
//! | `[mock:fail=500]`, `[mock:fail=429]` | answer with that HTTP status instead | 400 to 599, others ignored |
//! | `[mock:cut]` | cut the stream in the middle (no `response.completed`) | |
//! | `[mock:hang]` | send `response.created`, then nothing until the client goes away | |
//! | `[mock:stall_after=N]` | send N deltas, then nothing until the client goes away | the reply's deltas |
//! | `[mock:tool=NAME ARGS]` | call tool NAME with the JSON arguments ARGS (`{}` when left out) instead of answering; several call them all in one response (parallel calls) | the message |
//!
//! A bigger value is clamped to the bound (so is [`MockConfig::deltas`] and [`MockConfig::delay`]),
//! a value that is not a number is ignored, and the reply is made one event at a time as it is
//! sent: no message can make the fake model hold more than its reply text, which is bounded by the
//! message it echoes.
//!
//! With [`MockConfig::tls`] it serves HTTPS instead: it makes its own CA and a server certificate
//! for `localhost` and `127.0.0.1` at start, and writes the CA to a file ([`MockModel::ca_path`])
//! for clients to trust.
//!
//! `GET /stats` answers `{"requests": N, "body_bytes": N}`.
//!
//! Tool calls follow the request as a model would:
//!
//! | request | effect |
//! |---|---|
//! | `tool_choice: "auto"` or none | call what the directives say |
//! | `tool_choice: "none"` | call nothing: answer the echo text |
//! | `tool_choice: "required"` | the directives' calls; with none, the first function of `tools` with `{}` |
//! | `tool_choice: {"type":"function","name":N}` | the directives' calls; with none, N with `{}` |
//! | `parallel_tool_calls: false` | only the first directive's call |
//!
//! Each call is a `function_call` output item at its own `output_index`: `id` `fc_mock_{seq}` and
//! `call_id` `call_mock_{seq}` when the response makes one call, `fc_mock_{seq}_{i}` and
//! `call_mock_{seq}_{i}` (`i` its `output_index`) when it makes several, `seq` being the
//! request's number: unique for the mock's life.
//!
//! After tool calls, the next request's input ends with their `function_call_output` items; the mock
//! then answers `tool output: <o1>; <o2>`: the outputs of every `function_call_output` after the
//! last message, in input order (one output: `tool output: <o>`), whatever `tool_choice` says. An
//! output that is a list of content parts counts as its texts, and `[image]` for each image.
//!
//! ```no_run
//! # async fn demo() -> Result<(), codex_pool_mock_model::MockError> {
//! use codex_pool_mock_model::{MockConfig, MockModel};
//! let mock = MockModel::start(MockConfig::default()).await?;
//! println!("point codex at {}", mock.base_url());
//! mock.shutdown().await;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod reply;
mod sse;
mod tls;
mod tools;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use reply::{last_user_text, Directives, Failure, Pieces, Plan, COMPACT_PROMPT, MAX_DELAY, MAX_DELTAS};
pub use rustls::pki_types::CertificateDer;
pub use tools::ToolCall;

/// How the fake model behaves by default (directives in a message override per request).
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Number of text deltas per reply.
    pub deltas: usize,
    /// Delay before each delta.
    pub delay: Duration,
    /// Write each request body to `DIR/NNNNNN.json`.
    pub log_dir: Option<PathBuf>,
    /// Keep request bodies in memory for [`MockModel::requests`] (tests); off for long benchmarks.
    pub keep_requests: bool,
    /// Serve HTTPS with a CA of its own instead of plain HTTP.
    pub tls: Option<TlsOptions>,
    /// Report input tokens as a real model would, about a quarter of the request's bytes (so
    /// codex's compaction threshold bites as it would), rather than 10.
    pub tokens_from_size: bool,
}

/// How the fake model serves HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// Where to write the PEM certificate of the CA that signed the server's certificate.
    pub ca_path: PathBuf,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            deltas: 4,
            delay: Duration::ZERO,
            log_dir: None,
            keep_requests: true,
            tls: None,
            tokens_from_size: false,
        }
    }
}

/// Why the fake model could not start.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The CA or the server certificate could not be made.
    #[error("cannot set up TLS for the fake model: {0}")]
    Tls(String),
    /// The CA certificate could not be written.
    #[error("cannot write the fake model's CA certificate to {path}: {source}; choose a writable path")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The log directory could not be created.
    #[error("cannot create log dir {dir}: {source}")]
    LogDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A request the fake model received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Arrival order, from 1.
    pub seq: u64,
    /// The size of the body in bytes.
    pub body_bytes: usize,
    /// The parsed body (`Value::Null` when it was not JSON).
    pub body: Value,
}

struct Shared {
    config: MockConfig,
    seq: AtomicU64,
    body_bytes: AtomicU64,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// A running fake model. Dropping it stops the server.
pub struct MockModel {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// The TLS accept loop, when serving HTTPS.
    acceptor: Option<JoinHandle<()>>,
    ca: Option<(PathBuf, rustls::pki_types::CertificateDer<'static>)>,
}

impl MockModel {
    /// Binds and starts serving in the background.
    pub async fn start(config: MockConfig) -> Result<Self, MockError> {
        if let Some(dir) = &config.log_dir {
            std::fs::create_dir_all(dir).map_err(|source| MockError::LogDir { dir: dir.clone(), source })?;
        }
        let listener =
            TcpListener::bind(config.listen).await.map_err(|source| MockError::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| MockError::Bind { addr: config.listen, source })?;
        let identity = match &config.tls {
            Some(tls) => {
                let identity = tls::identity(addr.ip()).map_err(MockError::Tls)?;
                std::fs::write(&tls.ca_path, &identity.ca_pem)
                    .map_err(|source| MockError::CaFile { path: tls.ca_path.clone(), source })?;
                Some((tls.ca_path.clone(), identity))
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            config,
            seq: AtomicU64::new(0),
            body_bytes: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/responses", post(responses))
            .route("/v1/models", get(models))
            .route("/health", get(|| async { "ok" }))
            .route("/stats", get(stats))
            .layer(DefaultBodyLimit::max(256 << 20))
            .with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = async {
            let _ = stopped.await;
        };
        let (task, acceptor, ca) = match identity {
            None => (tokio::spawn(serve(listener, app, stopped)), None, None),
            Some((ca_path, identity)) => {
                let (tls_listener, acceptor) =
                    tls::listen(listener, identity.server).map_err(|source| MockError::Bind { addr, source })?;
                (tokio::spawn(serve(tls_listener, app, stopped)), Some(acceptor), Some((ca_path, identity.ca_der)))
            }
        };
        tracing::info!(%addr, tls = ca.is_some(), "mock model listening");
        Ok(Self { addr, shared, stop: Some(stop), task: Some(task), acceptor, ca })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to give codex (`http://ADDR/v1`, or `https://ADDR/v1` with TLS).
    pub fn base_url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/v1", self.addr)
    }

    /// The file holding the CA certificate that clients must trust, when serving HTTPS.
    pub fn ca_path(&self) -> Option<&std::path::Path> {
        self.ca.as_ref().map(|(path, _)| path.as_path())
    }

    /// The CA certificate (DER) that clients must trust, when serving HTTPS.
    pub fn ca_der(&self) -> Option<&rustls::pki_types::CertificateDer<'static>> {
        self.ca.as_ref().map(|(_, der)| der)
    }

    /// Every request received so far, in order (empty when `keep_requests` is off).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().expect("request log poisoned").clone()
    }

    /// How many requests arrived so far.
    pub fn request_count(&self) -> u64 {
        self.shared.seq.load(Ordering::Relaxed)
    }

    /// Total bytes of request bodies received so far.
    pub fn request_body_bytes(&self) -> u64 {
        self.shared.body_bytes.load(Ordering::Relaxed)
    }

    /// Stops accepting, lets open streams finish, and waits for the server task.
    pub async fn shutdown(mut self) {
        self.stop_now();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        // The server dropped its listener: the accept loop ends.
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.await;
        }
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for MockModel {
    fn drop(&mut self) {
        self.stop_now();
        for task in [self.task.take(), self.acceptor.take()].into_iter().flatten() {
            task.abort();
        }
    }
}

/// Serves the app on a listener until `stopped`.
async fn serve<L>(listener: L, app: Router, stopped: impl std::future::Future<Output = ()> + Send + 'static)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
        tracing::warn!(error = %e, "mock model server ended with an error");
    }
}

/// `GET /stats`: requests received and their total body size (for benchmarks in other processes).
async fn stats(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "requests": shared.seq.load(Ordering::Relaxed),
        "body_bytes": shared.body_bytes.load(Ordering::Relaxed),
    }))
}

async fn models() -> impl IntoResponse {
    axum::Json(serde_json::json!({"object": "list", "data": [{"id": "mock-model", "object": "model"}]}))
}

async fn responses(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed) + 1;
    shared.body_bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Some(dir) = &shared.config.log_dir {
        let path = dir.join(format!("{seq:06}.json"));
        if let Err(e) = tokio::fs::write(&path, &body).await {
            tracing::warn!(path = %path.display(), error = %e, "cannot write request log");
        }
    }
    let mut plan = Plan::for_request(&parsed, shared.config.deltas, shared.config.delay);
    if shared.config.tokens_from_size {
        plan.input_tokens = body.len() as u64 / 4;
    }
    if shared.config.keep_requests {
        shared.requests.lock().expect("request log poisoned").push(RecordedRequest {
            seq,
            body_bytes: body.len(),
            body: parsed,
        });
    }
    if parsed_is_null_body(&body) {
        return (StatusCode::BAD_REQUEST, "request body is not JSON").into_response();
    }
    match plan.failure {
        Some(Failure::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = serde_json::json!({"error": {"message": format!("mock failure {code}"), "type": "mock_error"}});
            let mut resp = (status, axum::Json(body)).into_response();
            if code == 429 {
                resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("0"));
            }
            resp
        }
        _ => Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::from_stream(sse::stream(seq, plan)))
            .expect("static response parts are valid"),
    }
}

fn parsed_is_null_body(body: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err()
}
