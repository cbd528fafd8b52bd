//! What the HTTP edge counts for `/metrics`: open connections, and each limit of the edge when
//! it bites (connections over the cap, heads or bodies too slow, refused hosts, origins, content
//! types and settings). Kept apart from the service's other counters; they share its registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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

/// The edge's counters; every method takes `&self`. Its metrics are handles on the service's
/// registry ([`EdgeMetrics::register`]).
#[derive(Debug, Default)]
pub(crate) struct EdgeMetrics {
    open: Gauge,
    accept_errors: Counter,
    refused: Family<LimitLabel, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

impl EdgeMetrics {
    /// A connection opened (`true`) or closed (`false`).
    pub(crate) fn connection(&self, opened: bool) {
        if opened {
            self.open.inc();
        } else {
            self.open.dec();
        }
    }

    /// `accept` failed (out of file descriptors, say).
    pub(crate) fn accept_error(&self) {
        self.accept_errors.inc();
    }

    /// A limit bit.
    pub(crate) fn refused(&self, limit: EdgeLimit) {
        self.refused.get_or_create(&LimitLabel { limit: limit.as_str() }).inc();
    }

    /// Adds the edge's metrics to the service's registry (once, when it is built).
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register("codex_pool_http_connections", "HTTP connections open now", self.open.clone());
        registry.register(
            "codex_pool_http_accept_errors",
            "Connections the service failed to accept (e.g. out of file descriptors)",
            self.accept_errors.clone(),
        );
        registry.register(
            "codex_pool_http_limit_refusals",
            "Requests and connections the HTTP edge refused, by limit",
            self.refused.clone(),
        );
    }
}
