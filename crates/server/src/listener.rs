//! The accept loop: HTTP/1.1 connections served by hyper with a timeout on the request head (and
//! on idle keep-alive connections), a cap on open connections with a small reserve that answers
//! `/healthz` (and 503 to anything else), accept errors logged at most once a second and retried
//! after a pause, and a graceful shutdown: no new connections, idle ones closed, answers in
//! flight (streams included) let finish.

use crate::edge_metrics::{EdgeLimit, EdgeMetrics};
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// How long the reserve's connections may take to send their request head: they exist for an
/// operator's `/healthz`, not to be held.
const RESERVE_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// The pause after a failed `accept` (out of file descriptors, say): room to free some, never a
/// busy loop.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The limits of the connection loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    /// Connections served in full.
    pub(crate) max_connections: usize,
    /// Connections beyond those, served `/healthz` only.
    pub(crate) reserve: usize,
    /// The time a connection has to send a request head, from its opening or its last answer.
    pub(crate) header_timeout: Duration,
}

/// Serves `app` on `listener` until `stop` turns true, then stops accepting, asks every
/// connection to close once its answer in flight is done, and returns when all have.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    metrics: Arc<EdgeMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let full = Arc::new(Semaphore::new(limits.max_connections));
    let reserve = Arc::new(Semaphore::new(limits.reserve));
    let reserve_app = app.clone().layer(axum::middleware::from_fn_with_state(metrics.clone(), healthz_only));
    let conn_stop = stop.clone();
    let mut connections = JoinSet::new();
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let socket = match accepted {
            Ok((socket, _peer)) => {
                // Each server-sent event is a small write of its own: with Nagle's algorithm, one
                // written while the last is unacknowledged waits for the client's delayed ACK
                // (40 ms on Linux), and so did every turn's first event.
                if let Err(e) = socket.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
                }
                socket
            }
            Err(e) => {
                metrics.accept_error();
                if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(error = %e, "cannot accept a connection (out of file descriptors?); retrying");
                }
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let (permit, app, header_timeout) = if let Ok(permit) = full.clone().try_acquire_owned() {
            (permit, app.clone(), limits.header_timeout)
        } else if let Ok(permit) = reserve.clone().try_acquire_owned() {
            (permit, reserve_app.clone(), limits.header_timeout.min(RESERVE_HEADER_TIMEOUT))
        } else {
            // Over the cap and its reserve: closed at once, which frees the descriptor and tells
            // the client now rather than after a timeout.
            metrics.refused(EdgeLimit::Connections);
            drop(socket);
            continue;
        };
        connections.spawn(connection(socket, app, header_timeout, permit, metrics.clone(), conn_stop.clone()));
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// One connection, served until it closes or the service stops.
async fn connection(
    socket: TcpStream,
    app: Router,
    header_timeout: Duration,
    _permit: OwnedSemaphorePermit,
    metrics: Arc<EdgeMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    metrics.connection(true);
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    // Whether a request ever came: a connection that never sent one is closed at once when the
    // service stops (hyper's graceful shutdown would wait for its head until the timeout).
    let asked = Arc::new(AtomicBool::new(false));
    let service = {
        let (asked, app) = (asked.clone(), TowerToHyperService::new(app));
        hyper::service::service_fn(move |request| {
            asked.store(true, Ordering::Relaxed);
            hyper::service::Service::call(&app, request)
        })
    };
    let conn = builder.serve_connection(TokioIo::new(socket), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            if asked.load(Ordering::Relaxed) {
                conn.as_mut().graceful_shutdown();
                conn.await
            } else {
                Ok(())
            }
        }
    };
    match result {
        Err(e) if e.is_timeout() => {
            metrics.refused(EdgeLimit::HeaderTimeout);
            tracing::debug!("a connection sent no request head in time; closed");
        }
        Err(e) => tracing::debug!(error = %e, "a connection ended with an error"),
        Ok(()) => {}
    }
    metrics.connection(false);
}

/// The reserve's connections: `/healthz`, and 503 with `Retry-After` for anything else; each
/// closed after its answer.
async fn healthz_only(State(metrics): State<Arc<EdgeMetrics>>, request: Request, next: Next) -> Response {
    let mut response = if request.uri().path() == "/healthz" {
        next.run(request).await
    } else {
        let path = request.uri().path().to_owned();
        metrics.refused(EdgeLimit::Connections);
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "the service holds as many connections as it may; retry shortly, or raise --max-connections",
        )
        .retry_after(1)
        .into_response_for(&path)
    };
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Raises the process's open-files soft limit to its hard limit (every connection holds a
/// descriptor; the common soft limit of 1,024 is soon reached), logging before and after.
/// Returns the soft limit now in force, if it could be read.
pub(crate) fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads the struct we own; raising the soft limit up to the hard one
        // needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            tracing::warn!(soft = before, hard = limit.rlim_max, "cannot raise the open-files limit");
        }
    }
    tracing::info!(before, now = limit.rlim_cur, hard = limit.rlim_max, "open-files limit");
    Some(limit.rlim_cur)
}

/// The connection cap that fits in the open-files limit `files`: the cap asked for, or less,
/// leaving room for codex's pipes, the store and the reserve.
pub(crate) fn fitting_cap(asked: usize, reserve: usize, files: Option<u64>) -> usize {
    /// Descriptors kept for everything but connections.
    const OTHERS: u64 = 256;
    let Some(files) = files else { return asked };
    let room = files.saturating_sub(OTHERS + reserve as u64).max(16);
    if (asked as u64) <= room {
        return asked;
    }
    tracing::warn!(
        asked,
        capped = room,
        open_files = files,
        "the open-files limit holds fewer connections than --max-connections; capping them (raise `ulimit -n`)"
    );
    room as usize
}

/// The open-files soft limit, if it can be read.
pub(crate) fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit.rlim_cur)
}
