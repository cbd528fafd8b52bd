//! `GET /metrics`: what the service and its pool did, in Prometheus' text format (0.0.4), written
//! by hand (counters, gauges and histograms need nothing more). The service counts what passes
//! through it (turns, HTTP requests, chat requests); the pool's own facts (processes, loaded
//! threads, restarts, rebuilds, waits for room) are read from [`codex_pool::PoolStats`] when
//! scraped.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use codex_pool::{PoolStats, SlotStatus};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// A histogram of durations with fixed buckets.
#[derive(Debug, Default)]
struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let bucket = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, help, "histogram");
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = BUCKETS.get(i).map_or_else(|| "+Inf".to_owned(), |b| format!("{b:?}"));
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Whether a chat request continued a conversation or started one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChatOutcome {
    /// Its earlier messages were a conversation's history: the new message ran as its next turn.
    Continued,
    /// A new conversation started, given the earlier messages as history.
    New,
}

/// The service's counters. Cheap to share (`Arc`); every method takes `&self`.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    turns_started: AtomicU64,
    /// Ended turns by how: (`completed`, status) or (`failed`, reason).
    turns_ended: Mutex<BTreeMap<(&'static str, String), u64>>,
    turn_seconds: Histogram,
    ttft_seconds: Histogram,
    /// HTTP answers by (route, method, status).
    http: Mutex<BTreeMap<(String, String, u16), u64>>,
    chat_continued: AtomicU64,
    chat_new: AtomicU64,
    /// The HTTP edge's counters (connections, limits that bit).
    pub(crate) edge: Arc<crate::edge_metrics::EdgeMetrics>,
    /// Memory budgets and admission.
    budgets: Budgets,
    /// Requests forwarded to the node that serves their conversation.
    forwards: Forwards,
}

/// What the memory budgets and the admission gate did: requests refused by a limit, event logs
/// kept and dropped.
#[derive(Debug, Default)]
struct Budgets {
    /// Refusals by the limit that refused.
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    /// Bytes of ended turns' event logs kept now.
    retained_bytes: AtomicU64,
    /// Ended turns' logs dropped before their retention was over, by why.
    evicted: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// A turn started.
    pub(crate) fn turn_started(&self) {
        self.turns_started.fetch_add(1, Ordering::Relaxed);
    }

    /// A turn's first text arrived `after` it was asked for.
    pub(crate) fn first_token(&self, after: Duration) {
        self.ttft_seconds.observe(after);
    }

    /// A turn ended after `took`: completed with a status (`completed`, `interrupted`), or
    /// failed for a reason (`model_error`, `process_exited`, ...).
    pub(crate) fn turn_ended(&self, failed: bool, status_or_reason: &str, took: Duration) {
        let outcome = if failed { "failed" } else { "completed" };
        let mut ended = self.turns_ended.lock().unwrap_or_else(|p| p.into_inner());
        *ended.entry((outcome, status_or_reason.to_owned())).or_default() += 1;
        drop(ended);
        self.turn_seconds.observe(took);
    }

    /// A chat request was matched (or not) to a conversation.
    pub(crate) fn chat_request(&self, outcome: ChatOutcome) {
        match outcome {
            ChatOutcome::Continued => self.chat_continued.fetch_add(1, Ordering::Relaxed),
            ChatOutcome::New => self.chat_new.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// A request (or a running turn) was refused by `limit` (the setting's name).
    pub(crate) fn limit_refused(&self, limit: &'static str) {
        *self.budgets.refusals.lock().unwrap_or_else(|p| p.into_inner()).entry(limit).or_default() += 1;
    }

    /// The ended turns' event logs now hold `bytes`.
    pub(crate) fn events_retained(&self, bytes: usize) {
        self.budgets.retained_bytes.store(bytes as u64, Ordering::Relaxed);
    }

    /// `n` ended turns' logs were dropped early, because of `why` (`budget`, `too_large`).
    pub(crate) fn events_evicted(&self, why: &'static str, n: u64) {
        if n > 0 {
            *self.budgets.evicted.lock().unwrap_or_else(|p| p.into_inner()).entry(why).or_default() += n;
        }
    }

    fn render_budgets(&self, out: &mut String, pool: &PoolStats) {
        let b = &self.budgets;
        header(out, "codex_pool_limit_refusals_total", "Requests or turns refused by a limit, by limit.", "counter");
        let mut refusals = b.refusals.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // The pool counts the turns it found no room for on their process.
        refusals.insert("max_turns_per_process", pool.counters.refused_full);
        for (limit, n) in refusals {
            let _ = writeln!(out, "codex_pool_limit_refusals_total{{limit=\"{limit}\"}} {n}");
        }
        gauge(
            out,
            "codex_pool_events_retained_bytes",
            "Bytes (of their JSON) of ended turns' event logs kept for clients to re-attach.",
            b.retained_bytes.load(Ordering::Relaxed) as f64,
        );
        header(
            out,
            "codex_pool_events_evicted_total",
            "Ended turns' event logs dropped before their retention ended: budget (room for newer), too_large.",
            "counter",
        );
        for (why, n) in b.evicted.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "codex_pool_events_evicted_total{{reason=\"{why}\"}} {n}");
        }
    }

    fn http_answered(&self, route: String, method: String, status: u16) {
        let mut http = self.http.lock().unwrap_or_else(|p| p.into_inner());
        *http.entry((route, method, status)).or_default() += 1;
    }

    /// Everything, as Prometheus text: the service's counters and the pool's snapshot.
    pub(crate) fn render(&self, pool: &PoolStats, service_turns: usize) -> String {
        let mut out = String::with_capacity(4096);
        header(&mut out, "codex_pool_turns_started_total", "Turns started through the service.", "counter");
        let _ = writeln!(out, "codex_pool_turns_started_total {}", self.turns_started.load(Ordering::Relaxed));
        let ended = self.turns_ended.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (outcome, label, help) in [
            ("completed", "status", "Turns codex finished, by status (completed, interrupted)."),
            ("failed", "reason", "Turns that failed, by reason (model_error, process_exited, timeout, ...)."),
        ] {
            let name = format!("codex_pool_turns_{outcome}_total");
            header(&mut out, &name, help, "counter");
            for ((o, value), n) in ended.iter().filter(|((o, _), _)| *o == outcome) {
                let _ = o;
                let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {n}", escape(value));
            }
        }
        self.turn_seconds.write(
            &mut out,
            "codex_pool_turn_duration_seconds",
            "Time from asking for a turn to its end, every turn however it ended.",
        );
        self.ttft_seconds.write(
            &mut out,
            "codex_pool_turn_first_token_seconds",
            "Time from asking for a turn to its first text (turns that had text).",
        );
        if let Some(node) = &pool.node {
            header(&mut out, "codex_pool_node_info", "This node, when several share the store (always 1).", "gauge");
            let _ = writeln!(
                out,
                "codex_pool_node_info{{node=\"{}\",address=\"{}\"}} 1",
                escape(&node.id),
                escape(&node.address)
            );
            gauge(&mut out, "codex_pool_node_leases", "Conversations this node holds a lease on.", node.leases as f64);
        }
        gauge(&mut out, "codex_pool_active_turns", "Turns running in the pool now.", pool.active_turns as f64);
        gauge(
            &mut out,
            "codex_pool_service_turns",
            "Turns the service runs now (its cap's count).",
            service_turns as f64,
        );
        gauge(
            &mut out,
            "codex_pool_loaded_threads",
            "Conversations loaded on a codex process now.",
            pool.loaded_threads as f64,
        );
        header(&mut out, "codex_pool_processes", "codex processes by state.", "gauge");
        for state in SlotStatus::ALL {
            let n = pool.slots.iter().filter(|s| s.state == state).count();
            let _ = writeln!(out, "codex_pool_processes{{state=\"{}\"}} {n}", state.as_str());
        }
        header(&mut out, "codex_pool_process_restarts_total", "codex processes replaced, by slot.", "counter");
        for s in &pool.slots {
            let _ = writeln!(out, "codex_pool_process_restarts_total{{slot=\"{}\"}} {}", s.slot, s.restarts);
        }
        let c = &pool.counters;
        counter(
            &mut out,
            "codex_pool_rebuilds_total",
            "Conversations rebuilt on a process from the store.",
            c.rebuilds as f64,
        );
        counter(
            &mut out,
            "codex_pool_queue_waits_total",
            "Turns that waited for room on their process.",
            c.queue_waits as f64,
        );
        counter(
            &mut out,
            "codex_pool_queue_wait_seconds_total",
            "Time turns waited for room, added up.",
            c.queue_wait_seconds,
        );
        counter(
            &mut out,
            "codex_pool_queue_timeouts_total",
            "Turns refused after waiting for room in vain.",
            c.queue_timeouts as f64,
        );
        header(
            &mut out,
            "codex_pool_chat_requests_total",
            "Chat completions by whether they continued a conversation.",
            "counter",
        );
        let _ = writeln!(
            out,
            "codex_pool_chat_requests_total{{conversation=\"continued\"}} {}",
            self.chat_continued.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "codex_pool_chat_requests_total{{conversation=\"new\"}} {}",
            self.chat_new.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "codex_pool_http_requests_total",
            "HTTP requests answered, by route, method and status.",
            "counter",
        );
        let http = self.http.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for ((route, method, status), n) in http {
            let _ = writeln!(
                out,
                "codex_pool_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                escape(&route),
                escape(&method)
            );
        }
        self.edge.render(&mut out);
        self.render_budgets(&mut out, pool);
        self.render_forwards(&mut out);
        out
    }
}

// Forwarding between nodes (the forward middleware), kept apart from the rest.

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

/// Forwarded requests by outcome.
#[derive(Debug, Default)]
struct Forwards {
    ok: AtomicU64,
    unreachable: AtomicU64,
    looped: AtomicU64,
}

impl Metrics {
    /// A request about a conversation another node serves went this way.
    pub(crate) fn forwarded(&self, outcome: ForwardOutcome) {
        let counter = match outcome {
            ForwardOutcome::Ok => &self.forwards.ok,
            ForwardOutcome::Unreachable => &self.forwards.unreachable,
            ForwardOutcome::Loop => &self.forwards.looped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn render_forwards(&self, out: &mut String) {
        header(
            out,
            "codex_pool_forwarded_requests_total",
            "Requests about a conversation another node serves, by outcome: forwarded and answered (ok), the \
             owner not reached (unreachable), a forwarded request this node does not serve either (loop).",
            "counter",
        );
        let f = &self.forwards;
        for (outcome, n) in [("ok", &f.ok), ("unreachable", &f.unreachable), ("loop", &f.looped)] {
            let _ = writeln!(
                out,
                "codex_pool_forwarded_requests_total{{outcome=\"{outcome}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name} {value}");
}

/// A label value as the format wants it.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
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
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_end_with_inf() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(300));
        h.observe(Duration::from_secs(500));
        let mut out = String::new();
        h.write(&mut out, "x_seconds", "help");
        assert!(out.contains("x_seconds_bucket{le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.5\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"120.0\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 3\nx_seconds_sum 500.303\nx_seconds_count 3\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
