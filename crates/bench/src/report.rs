//! The JSON line of a benchmark: the pool's figures, then each other arm's beside them.

use crate::balancer::Via;
use crate::http::Api;
use crate::result::{round, RunResult};
use crate::{hops, Arm, BenchArgs};
use serde_json::{json, Value};

/// The line for `results`, one per arm in `arms` (rounds added up).
pub(crate) fn line(args: &BenchArgs, arms: &[Arm], mut results: Vec<Option<RunResult>>) -> Value {
    // The first arm is the pool's; the versus arm, when asked for, is the last (it may equal the
    // first, when --versus names the same profile).
    let versus = if args.versus.is_some() || args.versus_ca_bundle.is_some() { results.pop().flatten() } else { None };
    let pool = results[0].take();
    let mut take = |arm: Arm| arms.iter().skip(1).position(|a| *a == arm).and_then(|i| results[i + 1].take());
    let direct = take(Arm::Direct);
    let service = take(Arm::Http(Api::Native));
    let tools = take(Arm::Http(Api::Tools));
    let nodes = args.nodes.map(|n| {
        let base = match args.via {
            Via::Other => Arm::Nodes(n, Via::Owner),
            via => Arm::Nodes(1, via),
        };
        (n, take(base), take(Arm::Nodes(n, args.via)))
    });
    let openai = [("responses", take(Arm::Http(Api::Responses))), ("chat", take(Arm::Http(Api::Chat)))];
    let versus_profile = args.versus.unwrap_or(args.profile);
    let rounds = args.rounds.max(1);
    let total = args.convs * args.turns * rounds;
    let pool = pool.expect("at least one round").json(total);
    let mut line = json!({
        "mode": "pool",
        "profile": args.profile.name(),
        "strategy": args.strategy.name(),
        "convs": args.convs,
        "turns": args.turns,
        "pool_size": args.pool_size,
        "rounds": rounds,
        "tls": args.tls,
    });
    merge(&mut line, pool.clone());
    if let Some(direct) = direct {
        let d = direct.json(total);
        line["pool_vs_direct"] = json!({
            "throughput_ratio": round(pool["turns_per_s"].as_f64().unwrap_or(0.0) / d["turns_per_s"].as_f64().unwrap_or(1.0)),
            "lat_p50_added_ms": round(pool["lat_p50_ms"].as_f64().unwrap_or(0.0) - d["lat_p50_ms"].as_f64().unwrap_or(0.0)),
            "client_cpu_added_ms_per_turn": round(pool["client_cpu_ms_per_turn"].as_f64().unwrap_or(0.0) - d["client_cpu_ms_per_turn"].as_f64().unwrap_or(0.0)),
        });
        line["direct"] = d;
    }
    if let Some(service) = &service {
        let h = service.json(total);
        let get = |v: &Value, key: &str| v[key].as_f64().unwrap_or(0.0);
        line["http_vs_library"] = json!({
            "throughput_ratio": round(get(&h, "turns_per_s") / get(&pool, "turns_per_s").max(f64::MIN_POSITIVE)),
            "lat_p50_added_ms": round(get(&h, "lat_p50_ms") - get(&pool, "lat_p50_ms")),
            "client_cpu_added_ms_per_turn": round(get(&h, "client_cpu_ms_per_turn") - get(&pool, "client_cpu_ms_per_turn")),
            "service_cpu_added_ms_per_turn": round(service_cpu(&h) - service_cpu(&pool)),
        });
        line["http"] = h;
    }
    // The tool load beside the plain one, both through the native API.
    if let (Some(plain), Some(tools)) = (&service, &tools) {
        line["tools_vs_http"] = crate::tools::versus_plain(plain, tools, total);
        line["tools"] = tools.json(total);
    }
    // OpenAI's APIs beside the native one (or, without --http, beside the library).
    let native = line.get("http").cloned().unwrap_or_else(|| pool.clone());
    let native_name = if line.get("http").is_some() { "http" } else { "library" };
    for (name, result) in openai {
        let Some(result) = result else { continue };
        let o = result.json(total);
        let get = |v: &Value, key: &str| v[key].as_f64().unwrap_or(0.0);
        line[format!("{name}_vs_{native_name}")] = json!({
            "throughput_ratio": round(get(&o, "turns_per_s") / get(&native, "turns_per_s").max(f64::MIN_POSITIVE)),
            "lat_p50_added_ms": round(get(&o, "lat_p50_ms") - get(&native, "lat_p50_ms")),
            "request_bytes_ratio": round(get(&o, "request_bytes_per_turn") / get(&native, "request_bytes_per_turn").max(1.0)),
            "service_cpu_added_ms_per_turn": round(service_cpu(&o) - service_cpu(&native)),
        });
        line[name] = o;
    }
    // N nodes beside one node, both on the shared store (or, --via other, N nodes every turn
    // forwarded beside N nodes each turn sent to its owner).
    if let Some((n, Some(base), Some(many))) = nodes {
        let (base, many) = (base.json(total), many.json(total));
        let (base_name, many_name, ratio_name) = match args.via {
            Via::Other => (format!("nodes_{n}_owner"), format!("nodes_{n}_other"), format!("nodes_{n}_other_vs_owner")),
            _ => ("nodes_1".to_owned(), format!("nodes_{n}"), format!("nodes_{n}_vs_1")),
        };
        let get = |v: &Value, key: &str| v[key].as_f64().unwrap_or(0.0);
        line["via"] = json!(args.via.name());
        line[ratio_name] = json!({
            "throughput_ratio": round(get(&many, "turns_per_s") / get(&base, "turns_per_s").max(f64::MIN_POSITIVE)),
            "lat_p50_added_ms": round(get(&many, "lat_p50_ms") - get(&base, "lat_p50_ms")),
        });
        line[base_name] = base;
        line[many_name] = many;
    }
    if let Some(versus) = versus {
        let v = versus.json(total);
        let ratio = |key: &str| round(pool[key].as_f64().unwrap_or(0.0) / v[key].as_f64().unwrap_or(0.0));
        let ratios = json!({
            "throughput_ratio": ratio("turns_per_s"),
            "lat_p50_ratio": ratio("lat_p50_ms"),
            "request_bytes_ratio": ratio("request_bytes_per_turn"),
            "codex_cpu_ratio": ratio("codex_cpu_ms_per_turn"),
        });
        if args.versus.is_some() {
            line["profile_vs_versus"] = ratios.clone();
        }
        if args.versus_ca_bundle.is_some() {
            line["ca_vs_versus"] = ratios;
        }
        line["versus"] = v;
        line["versus"]["profile"] = json!(versus_profile.name());
    }
    if let Some(hops) = hops::report() {
        line["hops"] = hops;
    }
    line
}

/// CPU per turn of what serves the turns: the service without its HTTP client in an HTTP arm,
/// the pool with the bench's driver in the library's.
fn service_cpu(arm: &Value) -> f64 {
    let key =
        if arm.get("service_cpu_ms_per_turn").is_some() { "service_cpu_ms_per_turn" } else { "client_cpu_ms_per_turn" };
    arm[key].as_f64().unwrap_or(0.0)
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}
