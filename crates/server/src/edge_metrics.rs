//! What the HTTP edge counts for `/metrics`: open connections, and each limit of the edge when
//! it bites (connections over the cap, heads or bodies too slow, refused hosts, origins, content
//! types and settings). Kept apart from the service's other counters; `GET /metrics` renders
//! it with the rest.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A limit of the HTTP edge, as `/metrics` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum EdgeLimit {
    /// A connection over `max_connections` (and its reserve): closed at once, or answered 503.
    Connections,
    /// A request head not read within `header_timeout` (or a keep-alive connection idle that
    /// long): the connection closed.
    HeaderTimeout,
    /// A request body not read within `body_timeout`: 408.
    BodyTimeout,
    /// A `Host` the service does not answer to: 421.
    Host,
    /// An `Origin` not allowed: 403.
    Origin,
    /// A body that is not `application/json`: 415.
    ContentType,
    /// A conversation's settings over their caps: 413 or 400.
    Settings,
}

impl EdgeLimit {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EdgeLimit::Connections => "connections",
            EdgeLimit::HeaderTimeout => "header_timeout",
            EdgeLimit::BodyTimeout => "body_timeout",
            EdgeLimit::Host => "host",
            EdgeLimit::Origin => "origin",
            EdgeLimit::ContentType => "content_type",
            EdgeLimit::Settings => "settings",
        }
    }
}

/// The edge's counters; every method takes `&self`.
#[derive(Debug, Default)]
pub(crate) struct EdgeMetrics {
    open: AtomicU64,
    accept_errors: AtomicU64,
    refused: Mutex<BTreeMap<EdgeLimit, u64>>,
}

impl EdgeMetrics {
    /// A connection opened (`true`) or closed (`false`).
    pub(crate) fn connection(&self, opened: bool) {
        if opened {
            self.open.fetch_add(1, Ordering::Relaxed);
        } else {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Connections open now.
    pub(crate) fn open_connections(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// `accept` failed (out of file descriptors, say).
    pub(crate) fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A limit bit.
    pub(crate) fn refused(&self, limit: EdgeLimit) {
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()).entry(limit).or_default() += 1;
    }

    /// The edge's lines of `/metrics`.
    pub(crate) fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP codex_pool_http_connections HTTP connections open now.\n# TYPE codex_pool_http_connections gauge\n\
             codex_pool_http_connections {}",
            self.open_connections()
        );
        let _ = writeln!(
            out,
            "# HELP codex_pool_http_accept_errors_total Connections the service failed to accept (e.g. out of file \
             descriptors).\n# TYPE codex_pool_http_accept_errors_total counter\ncodex_pool_http_accept_errors_total {}",
            self.accept_errors.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP codex_pool_http_limit_refusals_total Requests and connections the HTTP edge refused, by limit.\n\
             # TYPE codex_pool_http_limit_refusals_total counter"
        );
        let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (limit, n) in refused {
            let _ = writeln!(out, "codex_pool_http_limit_refusals_total{{limit=\"{}\"}} {n}", limit.as_str());
        }
    }
}
