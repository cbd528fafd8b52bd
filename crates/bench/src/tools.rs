//! `bench --tools` and `--tools-change`: client tools through the service's native API.
//!
//! `--tools` runs the load of `--http` a second time (rounds alternating), every turn a tool turn
//! (`tool_turn.rs`): two model requests and one more round trip each. The line gives both loads
//! and what the round trip adds (`tools_vs_http`).
//!
//! `--tools-change` measures what a changed tool list costs: the service rebuilds the
//! conversation's codex thread from the store with the new list. Each conversation grows to K
//! turns (each K of `--tools-change-history`), then makes one turn that sends its current list
//! (normal) and one that sends a different list (rebuilt), `--rounds` times; the line gives both
//! latencies and service CPU for each K (`history_turns`: the history before the first pair).

use crate::error::BenchError;
use crate::http::{http_turn, Served};
use crate::measure::{on_client_thread, percentile, proc_cpu, self_cpu, thread_cpu, Sample};
use crate::mock_child::MockChild;
use crate::result::{round, RunResult};
use crate::tool_turn::lookup;
use crate::{drive, BenchArgs};
use codex_pool::Pool;
use codex_pool_process::ca::SystemRoots;
use codex_pool_server::client::Client;
use serde_json::{json, Value};
use std::time::Duration;

/// The function `--tools-change` adds to the list and takes away again, turn about.
fn extra() -> Value {
    json!({"name": "lookup_more", "description": "Looks a text up elsewhere.",
           "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}})
}

/// The line's comparison of the tool load with the plain load (both through the native API,
/// `total` turns each): what one tool round trip adds per turn.
pub(crate) fn versus_plain(plain: &RunResult, tools: &RunResult, total: usize) -> Value {
    let (p, t) = (plain.json(total), tools.json(total));
    let get = |v: &Value, key: &str| v[key].as_f64().unwrap_or(0.0);
    let added = |key: &str| round(get(&t, key) - get(&p, key));
    let requests = |r: &RunResult| round(r.requests as f64 / total.max(1) as f64);
    json!({
        "throughput_ratio": round(get(&t, "turns_per_s") / get(&p, "turns_per_s").max(f64::MIN_POSITIVE)),
        "lat_p50_added_ms": added("lat_p50_ms"),
        "lat_p95_added_ms": added("lat_p95_ms"),
        "service_cpu_added_ms_per_round_trip": added("service_cpu_ms_per_turn"),
        "http_client_cpu_added_ms_per_round_trip": added("http_client_cpu_ms_per_turn"),
        "codex_cpu_added_ms_per_round_trip": added("codex_cpu_ms_per_turn"),
        "model_requests_per_turn_plain": requests(plain),
        "model_requests_per_turn_tools": requests(tools),
    })
}

/// The history lengths of `--tools-change-history`, ascending, each once; an error naming the
/// flag when one is 0 or none is given.
pub(crate) fn history_points(asked: &[usize]) -> Result<Vec<usize>, BenchError> {
    if asked.is_empty() || asked.contains(&0) {
        return Err(BenchError::Flags("--tools-change-history: give history lengths of 1 turn or more".to_owned()));
    }
    let mut points = asked.to_vec();
    points.sort_unstable();
    points.dedup();
    Ok(points)
}

/// What one set of turns (one per conversation, or more) cost.
#[derive(Default)]
struct Phase {
    samples: Vec<Sample>,
    errors: usize,
    turns: usize,
    service_cpu: Duration,
    codex_cpu: Duration,
    /// Conversations the pool rebuilt from the store meanwhile.
    rebuilds: u64,
}

impl Phase {
    /// Adds another set of the same kind.
    fn absorb(&mut self, other: Phase) {
        self.samples.extend(other.samples);
        self.errors += other.errors;
        self.turns += other.turns;
        self.service_cpu += other.service_cpu;
        self.codex_cpu += other.codex_cpu;
        self.rebuilds += other.rebuilds;
    }

    fn json(&self) -> Value {
        let lat: Vec<f64> = self.samples.iter().map(|s| s.latency.as_secs_f64() * 1e3).collect();
        let per_turn = |d: Duration| round(d.as_secs_f64() * 1e3 / self.turns.max(1) as f64);
        json!({
            "lat_p50_ms": round(percentile(&lat, 50.0)),
            "lat_p95_ms": round(percentile(&lat, 95.0)),
            "service_cpu_ms_per_turn": per_turn(self.service_cpu),
            "codex_cpu_ms_per_turn": per_turn(self.codex_cpu),
            "rebuilds": self.rebuilds,
            "errors": self.errors,
        })
    }
}

/// Runs `turns` turns on every conversation at once, each sending `functions` when given, from
/// the bench's client thread (whose CPU is taken from the process's to give the service's).
async fn phase(client: &Client, ids: &[String], turns: usize, functions: Option<Value>, pool: &Pool) -> Phase {
    let pids: Vec<u32> = pool.stats().slots.iter().filter_map(|s| s.pid).collect();
    let rebuilds0 = pool.stats().counters.rebuilds;
    let (cpu0, client0) = (self_cpu(), thread_cpu());
    let codex0: Duration = pids.iter().map(|p| proc_cpu(*p)).sum();
    let client = client.clone();
    let (samples, errors) = drive(ids.to_vec(), turns, move |id: String, text| {
        let (client, functions) = (client.clone(), functions.clone());
        async move { http_turn(&client, &id, &text, functions.as_ref()).await }
    })
    .await;
    let codex: Duration = pids.iter().map(|p| proc_cpu(*p)).sum();
    let client_cpu = thread_cpu().saturating_sub(client0);
    Phase {
        samples,
        errors,
        turns: ids.len() * turns,
        service_cpu: self_cpu().saturating_sub(cpu0).saturating_sub(client_cpu),
        codex_cpu: codex.saturating_sub(codex0),
        rebuilds: pool.stats().counters.rebuilds - rebuilds0,
    }
}

/// `--tools-change`: for each history length K, a normal turn and a rebuilt turn on every
/// conversation, as the line's `tools_change` shows them.
pub(crate) async fn change(
    args: &BenchArgs,
    system: &SystemRoots,
    bin: &std::path::Path,
    mock: &MockChild,
) -> Result<Value, BenchError> {
    let points = history_points(&args.tools_change_history)?;
    let served = Served::start(args, system, bin, mock, args.convs).await?;
    let lists = [json!([lookup()]), json!([lookup(), extra()])];
    let mut ids = Vec::new();
    for _ in 0..args.convs {
        let created = served.client.post("/v1/conversations", json!({"functions": lists[0]})).await?.json()?;
        ids.push(created["id"].as_str().unwrap_or_default().to_owned());
    }
    let (pool, base, rounds) = (served.pool.clone(), served.base.clone(), args.rounds.max(1));
    let (points, _) = on_client_thread(move || async move {
        let client = Client::new(&base, None);
        let (mut done, mut current, mut out) = (0, 0, Vec::new());
        for k in points {
            // The history grows to K turns (at least), the list unchanged and not sent.
            if k > done {
                phase(&client, &ids, k - done, None, &pool).await;
                done = k;
            }
            // --rounds pairs: a turn sending the list, then one sending the other list.
            let (mut normal, mut rebuilt) = (Phase::default(), Phase::default());
            for _ in 0..rounds {
                normal.absorb(phase(&client, &ids, 1, Some(lists[current].clone()), &pool).await);
                current = 1 - current;
                rebuilt.absorb(phase(&client, &ids, 1, Some(lists[current].clone()), &pool).await);
            }
            let (n, r) = (normal.json(), rebuilt.json());
            let get = |v: &Value, key: &str| v[key].as_f64().unwrap_or(0.0);
            out.push(json!({
                "history_turns": done,
                "normal": n,
                "rebuilt": r,
                "rebuild_lat_p50_added_ms": round(get(&r, "lat_p50_ms") - get(&n, "lat_p50_ms")),
                "rebuild_service_cpu_added_ms": round(get(&r, "service_cpu_ms_per_turn") - get(&n, "service_cpu_ms_per_turn")),
                "rebuild_codex_cpu_added_ms": round(get(&r, "codex_cpu_ms_per_turn") - get(&n, "codex_cpu_ms_per_turn")),
            }));
            done += 2 * rounds;
        }
        out
    })
    .await?;
    served.stop().await?;
    Ok(json!(points))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_points_ascend_once_each_and_refuse_zero() {
        assert_eq!(history_points(&[50, 5, 20, 5]).unwrap(), [5, 20, 50]);
        assert!(matches!(history_points(&[5, 0]), Err(BenchError::Flags(m)) if m.contains("--tools-change-history")));
        assert!(history_points(&[]).is_err());
    }
}
