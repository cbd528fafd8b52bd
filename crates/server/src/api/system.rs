//! The service itself: `GET /healthz` (alive), `GET /readyz` (the pool serves), `GET /v1/pool`
//! (its processes), `GET /v1/nodes` (the nodes sharing the store), `GET /openapi.json` (this API, generated from the code).

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// A status word.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Status {
    /// `ok` or `ready`.
    pub(crate) status: &'static str,
}

/// One codex process of the pool.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Process {
    /// Its slot in the pool.
    pub(crate) slot: usize,
    /// Its OS process id, while it runs.
    pub(crate) pid: Option<u32>,
    /// `starting`, `ready`, `down` or `stopped`.
    pub(crate) state: String,
    /// Whether it answered its last health check.
    pub(crate) healthy: bool,
    /// Conversations loaded on it.
    pub(crate) loaded_threads: usize,
    /// Turns running on it.
    pub(crate) active_turns: usize,
    /// How often it was replaced.
    pub(crate) restarts: u64,
    /// Its resident memory in bytes (`/proc/<pid>/statm`); absent where the system does not
    /// show it (no `/proc`, or the process just gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rss_bytes: Option<u64>,
}

/// The pool.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PoolStatus {
    /// Its processes.
    pub(crate) processes: Vec<Process>,
    /// How many processes it is configured for.
    pub(crate) size: usize,
    /// How many serve now.
    pub(crate) ready: usize,
    /// How it places new conversations (`round_robin`, `least_busy`).
    pub(crate) strategy: &'static str,
    /// Turns the service runs now.
    pub(crate) running_turns: usize,
    /// This node, when several share the store.
    pub(crate) node: Option<NodeSelf>,
}

/// This node, as its `/v1/pool` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NodeSelf {
    /// Its id (`--node-id`).
    pub(crate) id: String,
    /// The address it announces (`--advertise`).
    pub(crate) address: String,
    /// Conversations it holds a lease on.
    pub(crate) leases: usize,
}

/// One node sharing the store.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Node {
    /// Its id.
    pub(crate) id: String,
    /// Where it is reached.
    pub(crate) address: String,
    /// Its last heartbeat (ms since the epoch, the store's clock).
    pub(crate) heartbeat_at_ms: i64,
    /// How long ago that was, in ms: a node silent for more than a lease's time is gone, and
    /// its conversations go to the next node asked.
    pub(crate) heartbeat_age_ms: u64,
    /// Conversations it holds an unexpired lease on.
    pub(crate) conversations: u64,
}

/// The nodes sharing the store.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Nodes {
    /// This node's id (`null` when it is alone on its store).
    pub(crate) this_node: Option<String>,
    /// Every node that announced itself, by id.
    pub(crate) nodes: Vec<Node>,
}

/// Whether the service is alive (never needs the token).
#[utoipa::path(get, path = "/healthz", tag = "service", responses((status = 200, body = Status)))]
pub(crate) async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Whether the pool serves: 503 while it starts or when no process does.
#[utoipa::path(get, path = "/readyz", tag = "service",
    responses((status = 200, body = Status), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    state.ready()?;
    Ok(Json(Status { status: "ready" }))
}

/// The pool's processes, their health and load.
#[utoipa::path(get, path = "/v1/pool", tag = "service", responses((status = 200, body = PoolStatus)))]
pub(crate) async fn pool(State(state): State<AppState>) -> Json<PoolStatus> {
    let stats = state.pool.stats();
    let processes = stats
        .slots
        .iter()
        .map(|s| Process {
            slot: s.slot,
            pid: s.pid,
            state: s.state.as_str().to_owned(),
            healthy: s.healthy,
            loaded_threads: s.loaded_threads,
            active_turns: s.active_turns,
            restarts: s.restarts,
            rss_bytes: s.pid.and_then(rss_bytes),
        })
        .collect();
    Json(PoolStatus {
        processes,
        size: stats.size,
        ready: stats.ready,
        strategy: stats.strategy,
        running_turns: state.runs.running(),
        node: stats.node.map(|n| NodeSelf { id: n.id, address: n.address, leases: n.leases }),
    })
}

/// The nodes sharing the store: each one's address, heartbeat and conversations (empty when
/// this node is alone on its store).
#[utoipa::path(get, path = "/v1/nodes", tag = "service",
    responses((status = 200, body = Nodes), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn nodes(State(state): State<AppState>) -> Result<Json<Nodes>, ApiError> {
    let nodes = state.pool.nodes().await?;
    Ok(Json(Nodes {
        this_node: state.pool.stats().node.map(|n| n.id),
        nodes: nodes
            .into_iter()
            .map(|n| Node {
                id: n.id.to_string(),
                address: n.address,
                heartbeat_at_ms: n.heartbeat_at_ms,
                heartbeat_age_ms: n.heartbeat_age_ms,
                conversations: n.conversations,
            })
            .collect(),
    }))
}

/// This API, as an OpenAPI 3 document.
#[utoipa::path(get, path = "/openapi.json", tag = "service", responses((status = 200, description = "The OpenAPI document")))]
pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::document())
}

/// What the service and its pool did, in OpenMetrics text (Prometheus scrapes it).
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "OpenMetrics text (1.0.0)", content_type = "application/openmetrics-text", body = String)))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    crate::metrics::answer(state.metrics.render(state.pool.stats(), state.runs.running()))
}

/// Anything else: 404, in the route's error shape.
pub(crate) async fn not_found(uri: Uri) -> Response {
    ApiError::not_found("no such endpoint; see GET /openapi.json").into_response_for(uri.path())
}

/// A known path with another method: 405, in the route's error shape.
pub(crate) async fn method_not_allowed(uri: Uri) -> Response {
    let error = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; see GET /openapi.json",
    );
    error.into_response_for(uri.path())
}

/// The resident memory of a process: the second field of `/proc/<pid>/statm` (pages) times the
/// page size; `None` where it cannot be read.
fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the system; no memory is shared.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).ok().filter(|p| *p > 0).map(|p| pages * p)
}
