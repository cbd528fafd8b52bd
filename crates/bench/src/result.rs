//! The figures of one run of the benchmark, rounds added up, as the JSON line shows them.

use crate::measure::{percentile, Sample};
use codex_pool::Pool;
use serde_json::{json, Value};
use std::time::Duration;

/// Figures of one run.
pub(crate) struct RunResult {
    /// The bundle codex had: `minimal`, `auto`, `system` or a path.
    pub(crate) ca_bundle: String,
    pub(crate) ready: Duration,
    pub(crate) wall: Duration,
    pub(crate) samples: Vec<Sample>,
    pub(crate) errors: usize,
    pub(crate) client_cpu: Duration,
    /// The share of `client_cpu` spent by the HTTP client that drove the service (HTTP arms);
    /// the rest is the service's (and its pool's).
    pub(crate) http_client_cpu: Option<Duration>,
    pub(crate) codex_cpu: Duration,
    pub(crate) request_bytes: u64,
    pub(crate) requests: u64,
    pub(crate) rss_mb: f64,
    pub(crate) codex_rss_mb: f64,
    /// Health checks answered during the run, the slowest answer, the checks answered late by a
    /// busy process, and the processes replaced (pool runs only).
    pub(crate) health: Option<Health>,
    /// Chat requests that continued a conversation, and that started one (`--chat` only).
    pub(crate) chat: Option<(u64, u64)>,
    /// Round trips the nodes made to the shared store while the turns ran (`--nodes` only).
    pub(crate) store_round_trips: Option<u64>,
    /// Requests the nodes forwarded to a conversation's owner while the turns ran (`--nodes`
    /// only; `balancer.rs`).
    pub(crate) forwarded: Option<u64>,
    /// CPU HAProxy used while the turns ran (`--via balancer` only).
    pub(crate) balancer_cpu: Option<Duration>,
}

impl RunResult {
    pub(crate) fn json(&self, turns: usize) -> Value {
        let lat: Vec<f64> = self.samples.iter().map(|s| s.latency.as_secs_f64() * 1e3).collect();
        let ttft: Vec<f64> = self.samples.iter().filter_map(|s| s.ttft).map(|d| d.as_secs_f64() * 1e3).collect();
        let per_turn = |d: Duration| d.as_secs_f64() * 1e3 / turns.max(1) as f64;
        let mut out = json!({
            "ca_bundle": self.ca_bundle,
            "turns_per_s": round(turns as f64 / self.wall.as_secs_f64()),
            "lat_p50_ms": round(percentile(&lat, 50.0)),
            "lat_p95_ms": round(percentile(&lat, 95.0)),
            "ttft_p50_ms": round(percentile(&ttft, 50.0)),
            "ready_s": round(self.ready.as_secs_f64()),
            "client_cpu_ms_per_turn": round(per_turn(self.client_cpu)),
            "codex_cpu_ms_per_turn": round(per_turn(self.codex_cpu)),
            "request_bytes_per_turn": self.request_bytes / self.requests.max(1),
            "rss_mb": round(self.rss_mb),
            "codex_rss_mb": round(self.codex_rss_mb),
            "errors": self.errors,
        });
        if let Some(http_client) = self.http_client_cpu {
            out["http_client_cpu_ms_per_turn"] = json!(round(per_turn(http_client)));
            out["service_cpu_ms_per_turn"] = json!(round(per_turn(self.client_cpu.saturating_sub(http_client))));
        }
        if let Some(h) = self.health {
            out["health_checks"] = json!(h.checks);
            out["health_check_max_ms"] = json!(round(h.slowest_ms));
            out["health_checks_busy"] = json!(h.busy);
            out["restarts"] = json!(h.restarts);
        }
        if let Some(trips) = self.store_round_trips {
            out["store_round_trips_per_turn"] = json!(round(trips as f64 / turns.max(1) as f64));
        }
        if let Some(forwarded) = self.forwarded {
            out["forwarded_requests"] = json!(forwarded);
            out["forwarded_share"] = json!(round(forwarded as f64 / turns.max(1) as f64));
        }
        if let Some(cpu) = self.balancer_cpu {
            out["balancer_cpu_ms_per_turn"] = json!(round(per_turn(cpu)));
        }
        if let Some((continued, new)) = self.chat {
            out["chat_continued"] = json!(continued);
            out["chat_new"] = json!(new);
        }
        out
    }
}

/// The pool's health checks during a run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Health {
    pub(crate) checks: u64,
    pub(crate) slowest_ms: f64,
    pub(crate) busy: u64,
    pub(crate) restarts: u64,
}

impl Health {
    pub(crate) fn of(pool: &Pool) -> Self {
        let slots = pool.stats().slots;
        Health {
            checks: slots.iter().map(|s| s.health_checks).sum(),
            slowest_ms: slots.iter().map(|s| s.slowest_check_ms).fold(0.0, f64::max),
            busy: slots.iter().map(|s| s.busy_checks).sum(),
            restarts: slots.iter().map(|s| s.restarts).sum(),
        }
    }
}

pub(crate) fn round(x: f64) -> f64 {
    if x.is_finite() {
        (x * 100.0).round() / 100.0
    } else {
        0.0
    }
}

impl RunResult {
    /// Adds another round of the same mode.
    fn absorb(&mut self, other: RunResult) {
        self.ready = self.ready.max(other.ready);
        self.wall += other.wall;
        self.samples.extend(other.samples);
        self.errors += other.errors;
        self.client_cpu += other.client_cpu;
        self.http_client_cpu = match (self.http_client_cpu, other.http_client_cpu) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.codex_cpu += other.codex_cpu;
        self.request_bytes += other.request_bytes;
        self.requests += other.requests;
        self.rss_mb = self.rss_mb.max(other.rss_mb);
        self.codex_rss_mb = self.codex_rss_mb.max(other.codex_rss_mb);
        self.health = match (self.health, other.health) {
            (Some(a), Some(b)) => Some(Health {
                checks: a.checks + b.checks,
                slowest_ms: a.slowest_ms.max(b.slowest_ms),
                busy: a.busy + b.busy,
                restarts: a.restarts + b.restarts,
            }),
            (a, b) => a.or(b),
        };
        self.store_round_trips = match (self.store_round_trips, other.store_round_trips) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.balancer_cpu = match (self.balancer_cpu, other.balancer_cpu) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.forwarded = match (self.forwarded, other.forwarded) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.chat = match (self.chat, other.chat) {
            (Some((a, x)), Some((b, y))) => Some((a + b, x + y)),
            (a, b) => a.or(b),
        };
    }
}

pub(crate) fn absorb(total: &mut Option<RunResult>, round: RunResult) {
    match total {
        Some(t) => t.absorb(round),
        None => *total = Some(round),
    }
}
