//! The pool's lines of `/metrics`: facts the pool keeps itself (processes, loaded threads,
//! restarts, rebuilds, waits for room, this node), read from a [`PoolStats`] snapshot taken when
//! `/metrics` is scraped. A `prometheus-client` collector, so the pool keeps one owner of its
//! counts and nothing is copied between scrapes.

use codex_pool::{PoolStats, SlotStatus};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::sync::{Arc, Mutex};

/// What one scrape shows of the pool.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// The pool's stats, taken for this scrape.
    pub(crate) pool: PoolStats,
    /// Turns the service runs now.
    pub(crate) service_turns: usize,
}

/// The collector: encodes the snapshot the current scrape left in it (nothing before the first).
#[derive(Debug, Default, Clone)]
pub(crate) struct PoolCollector(pub Arc<Mutex<Option<Snapshot>>>);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
    address: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SlotLabel {
    slot: usize,
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> std::fmt::Result {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// `name` without `_total`: the encoder adds it to the sample.
fn counter<N>(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: N) -> std::fmt::Result
where
    ConstCounter<N>: EncodeMetric,
{
    ConstCounter::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let snapshot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(Snapshot { pool, service_turns }) = snapshot.as_ref() else { return Ok(()) };
        let e = &mut encoder;
        if let Some(node) = &pool.node {
            let help = "This node, when several share the store (always 1).";
            let mut family = e.encode_descriptor("codex_pool_node_info", help, None, MetricType::Gauge)?;
            let labels = NodeLabels { node: node.id.clone(), address: node.address.clone() };
            ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
            gauge(e, "codex_pool_node_leases", "Conversations this node holds a lease on.", node.leases as i64)?;
        }
        gauge(e, "codex_pool_active_turns", "Turns running in the pool now.", pool.active_turns as i64)?;
        let help = "Turns the service runs now (its cap's count).";
        gauge(e, "codex_pool_service_turns", help, *service_turns as i64)?;
        let help = "Conversations loaded on a codex process now.";
        gauge(e, "codex_pool_loaded_threads", help, pool.loaded_threads as i64)?;
        let mut family =
            e.encode_descriptor("codex_pool_processes", "codex processes by state.", None, MetricType::Gauge)?;
        for state in SlotStatus::ALL {
            let n = pool.slots.iter().filter(|s| s.state == state).count();
            ConstGauge::new(n as i64).encode(family.encode_family(&StateLabel { state: state.as_str() })?)?;
        }
        let help = "codex processes replaced, by slot.";
        let mut family = e.encode_descriptor("codex_pool_process_restarts", help, None, MetricType::Counter)?;
        for s in &pool.slots {
            ConstCounter::new(s.restarts).encode(family.encode_family(&SlotLabel { slot: s.slot })?)?;
        }
        let c = &pool.counters;
        counter(e, "codex_pool_rebuilds", "Conversations rebuilt on a process from the store.", c.rebuilds)?;
        counter(e, "codex_pool_queue_waits", "Turns that waited for room on their process.", c.queue_waits)?;
        counter(e, "codex_pool_queue_wait_seconds", "Time turns waited for room, added up.", c.queue_wait_seconds)?;
        counter(e, "codex_pool_queue_timeouts", "Turns refused after waiting for room in vain.", c.queue_timeouts)
    }
}
