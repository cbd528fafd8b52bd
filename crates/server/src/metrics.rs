//! `GET /metrics`: what the service and its pool did, in OpenMetrics text (what Prometheus 2.5+
//! and the usual agents scrape), encoded by the `prometheus-client` crate from one [`Registry`]
//! built with the service. The service counts what passes through it (turns, HTTP requests, chat
//! requests); the pool's own facts (processes, loaded threads, restarts, rebuilds, waits for room)
//! are read from [`codex_pool::PoolStats`] when scraped (`crate::pool_metrics`).

use crate::pool_metrics::{PoolCollector, Snapshot};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use codex_pool::PoolStats;
use codex_pool_protocol::Withheld;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The content type of `GET /metrics`.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// Whether a chat request continued a conversation or started one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChatOutcome {
    /// Its earlier messages were a conversation's history: the new message ran as its next turn.
    Continued,
    /// A new conversation started, given the earlier messages as history.
    New,
}

/// How a request about a conversation another node serves went, as `/metrics` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForwardOutcome {
    /// Forwarded, and the owner answered (whatever its status).
    Ok,
    /// The owner could not be reached (connection refused or timed out, or it failed before
    /// answering).
    Unreachable,
    /// A forwarded request reached a node that does not serve the conversation either: answered
    /// 503, never forwarded again.
    Loop,
}

/// A family's label set.
macro_rules! labels {
    ($name:ident { $($key:ident: $ty:ty),+ }) => {
        #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct $name {
            $($key: $ty),+
        }
    };
}
labels!(StatusLabel { status: String });
labels!(ReasonLabel { reason: String });
labels!(ConversationLabel { conversation: &'static str });
labels!(LimitLabel { limit: &'static str });
labels!(EvictedLabel { reason: &'static str });
labels!(OutcomeLabel { outcome: &'static str });
labels!(PathLabel { path: &'static str });
labels!(ModeLabel { mode: &'static str });
labels!(HttpLabels { route: String, method: String, status: u16 });

/// The service's metrics, registered once in its [`Registry`]. Cheap to share (`Arc`); every
/// method takes `&self`.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// The pool's snapshot for the scrape under way; the lock makes one scrape at a time.
    pool: PoolCollector,
    scrape: Mutex<()>,
    turns_started: Counter,
    turns_completed: Family<StatusLabel, Counter>,
    turns_failed: Family<ReasonLabel, Counter>,
    turn_seconds: Histogram,
    ttft_seconds: Histogram,
    http: Family<HttpLabels, Counter>,
    chat: Family<ConversationLabel, Counter>,
    /// The HTTP edge's counters (connections, limits that bit).
    pub(crate) edge: Arc<crate::edge_metrics::EdgeMetrics>,
    /// Refusals by the limit that refused.
    refusals: Family<LimitLabel, Counter>,
    /// Bytes of ended turns' event logs kept now.
    retained_bytes: Gauge,
    /// Ended turns' logs dropped before their retention was over, by why.
    evicted: Family<EvictedLabel, Counter>,
    /// Requests forwarded to the node that serves their conversation, by outcome.
    forwards: Family<OutcomeLabel, Counter>,
    /// Client tool calls the model made.
    tool_calls: Counter,
    /// Tool outputs given, by where they went.
    tool_outputs: Family<PathLabel, Counter>,
    /// What API keys' turns used, by key name (`crate::keys::usage`).
    pub(crate) keys: Arc<crate::keys::usage::KeyMetrics>,
    /// Answers codex marked `hide` or `block`, by mode.
    moderated: Family<ModeLabel, Counter>,
}

/// Where tool outputs went, as `/metrics` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputsPath {
    /// To the turn that waited for them.
    WaitingTurn,
    /// To a new turn that continued the conversation from the store.
    Continued,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: Registry::default(),
            pool: PoolCollector::default(),
            scrape: Mutex::new(()),
            turns_started: Counter::default(),
            turns_completed: Family::default(),
            turns_failed: Family::default(),
            turn_seconds: Histogram::new(BUCKETS),
            ttft_seconds: Histogram::new(BUCKETS),
            http: Family::default(),
            chat: Family::default(),
            edge: Arc::default(),
            refusals: Family::default(),
            retained_bytes: Gauge::default(),
            evicted: Family::default(),
            forwards: Family::default(),
            tool_calls: Counter::default(),
            tool_outputs: Family::default(),
            keys: Arc::default(),
            moderated: Family::default(),
        };
        for path in ["waiting_turn", "continued"] {
            let _ = m.tool_outputs.get_or_create(&PathLabel { path });
        }
        // Families that show every label value from the start, at 0.
        for conversation in ["continued", "new"] {
            let _ = m.chat.get_or_create(&ConversationLabel { conversation });
        }
        for outcome in ["ok", "unreachable", "loop"] {
            let _ = m.forwards.get_or_create(&OutcomeLabel { outcome });
        }
        m.register()
    }
}

impl Metrics {
    /// Names every metric in the registry (the registry adds a counter's `_total` and a full
    /// stop to each help text).
    fn register(mut self) -> Self {
        let r = &mut self.registry;
        r.register("codex_pool_turns_started", "Turns started through the service", self.turns_started.clone());
        r.register(
            "codex_pool_turns_completed",
            "Turns codex finished, by status (completed, interrupted)",
            self.turns_completed.clone(),
        );
        r.register(
            "codex_pool_turns_failed",
            "Turns that failed, by reason (model_error, process_exited, timeout, ...)",
            self.turns_failed.clone(),
        );
        r.register(
            "codex_pool_turn_duration_seconds",
            "Time from asking for a turn to its end, every turn however it ended",
            self.turn_seconds.clone(),
        );
        r.register(
            "codex_pool_turn_first_token_seconds",
            "Time from asking for a turn to its first text (turns that had text)",
            self.ttft_seconds.clone(),
        );
        r.register_collector(Box::new(self.pool.clone()));
        r.register(
            "codex_pool_chat_requests",
            "Chat completions by whether they continued a conversation",
            self.chat.clone(),
        );
        r.register(
            "codex_pool_http_requests",
            "HTTP requests answered, by route, method and status",
            self.http.clone(),
        );
        self.edge.register(r);
        self.keys.register(r);
        r.register(
            "codex_pool_limit_refusals",
            "Requests or turns refused by a limit, by limit",
            self.refusals.clone(),
        );
        r.register(
            "codex_pool_events_retained_bytes",
            "Bytes (of their JSON) of ended turns' event logs kept for clients to re-attach",
            self.retained_bytes.clone(),
        );
        r.register(
            "codex_pool_events_evicted",
            "Ended turns' event logs dropped before their retention ended: budget (room for newer), too_large",
            self.evicted.clone(),
        );
        r.register(
            "codex_pool_forwarded_requests",
            "Requests about a conversation another node serves, by outcome: forwarded and answered (ok), the \
             owner not reached (unreachable), a forwarded request this node does not serve either (loop)",
            self.forwards.clone(),
        );
        r.register("codex_pool_tool_calls", "Client tool calls the model made", self.tool_calls.clone());
        r.register(
            "codex_pool_tool_outputs",
            "Client tool outputs given, by where they went: the turn that waited for them (waiting_turn), or a \
             turn that continued the conversation from the store (continued: its process died, the service \
             restarted, the wait passed its limit, the tool list changed)",
            self.tool_outputs.clone(),
        );
        self.register_moderation()
    }

    /// Moderation's lines: answers withheld by mode, every mode shown from the start at 0.
    fn register_moderation(mut self) -> Self {
        for mode in [Withheld::Hide, Withheld::Block] {
            let _ = self.moderated.get_or_create(&ModeLabel { mode: mode.as_str() });
        }
        self.registry.register(
            "codex_pool_moderated_answers",
            "Answers codex marked hide or block, withheld from clients (item.moderated), by mode",
            self.moderated.clone(),
        );
        self
    }

    /// An answer codex marked `mode` was withheld.
    pub(crate) fn answer_moderated(&self, mode: Withheld) {
        self.moderated.get_or_create(&ModeLabel { mode: mode.as_str() }).inc();
    }

    /// The model called `n` client tools.
    pub(crate) fn tool_calls(&self, n: usize) {
        self.tool_calls.inc_by(n as u64);
    }

    /// `n` tool outputs went `path`.
    pub(crate) fn tool_outputs(&self, path: OutputsPath, n: usize) {
        let path = match path {
            OutputsPath::WaitingTurn => "waiting_turn",
            OutputsPath::Continued => "continued",
        };
        self.tool_outputs.get_or_create(&PathLabel { path }).inc_by(n as u64);
    }

    /// A turn started.
    pub(crate) fn turn_started(&self) {
        self.turns_started.inc();
    }

    /// A turn's first text arrived `after` it was asked for.
    pub(crate) fn first_token(&self, after: Duration) {
        self.ttft_seconds.observe(after.as_secs_f64());
    }

    /// A turn ended after `took`: completed with a status (`completed`, `interrupted`), or
    /// failed for a reason (`model_error`, `process_exited`, ...).
    pub(crate) fn turn_ended(&self, failed: bool, status_or_reason: &str, took: Duration) {
        let value = status_or_reason.to_owned();
        if failed {
            self.turns_failed.get_or_create(&ReasonLabel { reason: value }).inc();
        } else {
            self.turns_completed.get_or_create(&StatusLabel { status: value }).inc();
        }
        self.turn_seconds.observe(took.as_secs_f64());
    }

    /// A chat request was matched (or not) to a conversation.
    pub(crate) fn chat_request(&self, outcome: ChatOutcome) {
        let conversation = match outcome {
            ChatOutcome::Continued => "continued",
            ChatOutcome::New => "new",
        };
        self.chat.get_or_create(&ConversationLabel { conversation }).inc();
    }

    /// A request (or a running turn) was refused by `limit` (the setting's name).
    pub(crate) fn limit_refused(&self, limit: &'static str) {
        self.refusals.get_or_create(&LimitLabel { limit }).inc();
    }

    /// The ended turns' event logs now hold `bytes`.
    pub(crate) fn events_retained(&self, bytes: usize) {
        self.retained_bytes.set(bytes as i64);
    }

    /// `n` ended turns' logs were dropped early, because of `why` (`budget`, `too_large`).
    pub(crate) fn events_evicted(&self, why: &'static str, n: u64) {
        if n > 0 {
            self.evicted.get_or_create(&EvictedLabel { reason: why }).inc_by(n);
        }
    }

    /// A request about a conversation another node serves went this way.
    pub(crate) fn forwarded(&self, outcome: ForwardOutcome) {
        let outcome = match outcome {
            ForwardOutcome::Ok => "ok",
            ForwardOutcome::Unreachable => "unreachable",
            ForwardOutcome::Loop => "loop",
        };
        self.forwards.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    fn http_answered(&self, route: String, method: String, status: u16) {
        self.http.get_or_create(&HttpLabels { route, method, status }).inc();
    }

    /// Everything, as OpenMetrics text: the service's metrics and the pool's snapshot.
    pub(crate) fn render(&self, pool: PoolStats, service_turns: usize) -> String {
        let _one_scrape = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        // The pool counts the turns it found no room for on their process; it owns that count.
        let full = self.refusals.get_or_create(&LimitLabel { limit: "max_turns_per_process" });
        full.inner().store(pool.counters.refused_full, std::sync::atomic::Ordering::Relaxed);
        drop(full);
        *self.pool.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Snapshot { pool, service_turns });
        self.encode()
    }

    fn encode(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing to a `String` cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Counts every answer by its route (the matched pattern, never the raw path: ids would make
/// the label set grow without bound), method and status.
pub(crate) async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    // Unusual methods would grow the label set: they are counted as `other`.
    let method = match method.as_str() {
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" => method,
        _ => "other".to_owned(),
    };
    metrics.http_answered(route, method, response.status().as_u16());
    response
}

/// The text of `GET /metrics`, with its content type.
pub(crate) fn answer(text: String) -> Response {
    let mut response = text.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_end_with_inf() {
        let m = Metrics::default();
        for took in [Duration::from_millis(3), Duration::from_millis(300), Duration::from_secs(500)] {
            m.turn_ended(false, "completed", took);
        }
        let out = m.encode();
        let name = "codex_pool_turn_duration_seconds";
        assert!(out.contains(&format!("{name}_bucket{{le=\"0.005\"}} 1\n")), "{out}");
        assert!(out.contains(&format!("{name}_bucket{{le=\"0.5\"}} 2\n")), "{out}");
        assert!(out.contains(&format!("{name}_bucket{{le=\"120.0\"}} 2\n")), "{out}");
        assert!(out.contains(&format!("{name}_bucket{{le=\"+Inf\"}} 3\n")), "{out}");
        assert!(out.contains(&format!("{name}_count 3\n")), "{out}");
        let sum: f64 = out.lines().find_map(|l| l.strip_prefix(&format!("{name}_sum "))).unwrap().parse().unwrap();
        assert!((sum - 500.303).abs() < 1e-9, "{out}");
        assert!(out.contains("codex_pool_turns_completed_total{status=\"completed\"} 3\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.turn_ended(true, "a\"b\\c\nd", Duration::ZERO);
        let out = m.encode();
        assert!(out.contains("codex_pool_turns_failed_total{reason=\"a\\\"b\\\\c\\nd\"} 1\n"), "{out}");
    }

    #[test]
    fn counters_are_typed_without_total_and_the_text_ends_with_eof() {
        let out = Metrics::default().encode();
        assert!(out.contains("# TYPE codex_pool_turns_started counter\ncodex_pool_turns_started_total 0\n"), "{out}");
        assert!(out.contains("codex_pool_chat_requests_total{conversation=\"new\"} 0\n"), "{out}");
        assert!(out.contains("codex_pool_forwarded_requests_total{outcome=\"loop\"} 0\n"), "{out}");
        assert!(out.ends_with("# EOF\n"), "{out}");
    }
}
