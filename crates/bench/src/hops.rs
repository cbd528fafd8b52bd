//! `bench --trace-hops`: records the hop events of every turn (see `codex_pool_process::hops`)
//! and reports how long each hand-off took: the median and 90th percentile of the time between
//! consecutive hops of a turn, over all turns.

use crate::measure::percentile;
use codex_pool_process::hops::HOPS_TARGET;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// The hop events seen so far: thread, hop, when.
#[derive(Default)]
pub struct HopRecorder {
    events: Mutex<Vec<(String, String, Instant)>>,
}

static RECORDER: OnceLock<HopRecorder> = OnceLock::new();

/// The layer that records hop events, for the program's subscriber.
pub fn layer() -> HopLayer {
    RECORDER.get_or_init(HopRecorder::default);
    HopLayer
}

/// Records hop events into the program's [`HopRecorder`].
pub struct HopLayer;

#[derive(Default)]
struct HopFields {
    thread: String,
    hop: String,
}

impl Visit for HopFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "thread" => self.thread = value.to_owned(),
            "hop" => self.hop = value.to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

impl<S: Subscriber> Layer<S> for HopLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != HOPS_TARGET {
            return;
        }
        let now = Instant::now();
        let mut fields = HopFields::default();
        event.record(&mut fields);
        if let Some(recorder) = RECORDER.get() {
            recorder.events.lock().expect("hop events").push((fields.thread, fields.hop, now));
        }
    }
}

/// Each hand-off (`from → to`) with the median and 90th percentile of its duration in ms, and
/// how many turns made it; `None` when hops were not recorded.
pub fn report() -> Option<Value> {
    let recorder = RECORDER.get()?;
    let events = std::mem::take(&mut *recorder.events.lock().expect("hop events"));
    let mut per_thread: BTreeMap<String, Vec<(String, Instant)>> = BTreeMap::new();
    for (thread, hop, at) in events {
        per_thread.entry(thread).or_default().push((hop, at));
    }
    // Hand-off name -> durations (ms), and the order hand-offs first appeared in.
    let mut spans: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for hops in per_thread.values_mut() {
        hops.sort_by_key(|(_, at)| *at);
        for pair in hops.windows(2) {
            let ((from, t0), (to, t1)) = (&pair[0], &pair[1]);
            // A new turn starts the chain again.
            if to.ends_with(".start") && (to.starts_with("pool.") || to.starts_with("direct.")) {
                continue;
            }
            let name = format!("{from} → {to}");
            if !spans.contains_key(&name) {
                order.push(name.clone());
            }
            spans.entry(name).or_default().push(t1.duration_since(*t0).as_secs_f64() * 1e3);
        }
    }
    let mut out = Map::new();
    for name in order {
        let ms = &spans[&name];
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        out.insert(
            name,
            json!({"p50_ms": round(percentile(ms, 50.0)), "p90_ms": round(percentile(ms, 90.0)), "n": ms.len()}),
        );
    }
    Some(Value::Object(out))
}
