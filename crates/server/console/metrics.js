// Throughput and latency over the last minutes, from `/metrics` (Prometheus text) read every
// few seconds and kept in memory: turns started per second, time to first token and turn
// latency (p50 and p95 from the histograms' buckets), failed turns by reason.
import * as api from "./api.js";
import { $, el, note } from "./dom.js";
import { lines } from "./chart.js";

const KEEP_MS = 11 * 60000;
const WINDOW_MS = 60000;
const samples = []; // { t, families: Map(name -> [{labels, value}]) }

/** The samples of Prometheus (or OpenMetrics) text: name to `[{labels, value}]`. */
export function parse(textBody) {
  const families = new Map();
  for (const line of textBody.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]] = l[2].replace(/\\n/g, "\n").replace(/\\(["\\])/g, "$1");
    }
    const value = m[3] === "+Inf" ? Infinity : Number(m[3]);
    if (!families.has(m[1])) families.set(m[1], []);
    families.get(m[1]).push({ labels, value });
  }
  return families;
}

const sum = (families, name) => (families.get(name) || []).reduce((a, s) => a + s.value, 0);

/** A histogram's cumulative buckets: `[[le, count]]`, sorted. */
function buckets(families, name) {
  return (families.get(`${name}_bucket`) || [])
    .map((s) => [s.labels.le === "+Inf" ? Infinity : Number(s.labels.le), s.value])
    .sort((a, b) => a[0] - b[0]);
}

/** The q-quantile of the observations between two bucket sets (linear within a bucket). */
export function quantile(q, now, before) {
  const counts = now.map(([le, c], i) => [le, c - (before?.[i]?.[1] ?? 0)]);
  const total = counts.length ? counts[counts.length - 1][1] : 0;
  if (total <= 0) return NaN;
  const rank = q * total;
  let [lowerLe, lowerCount] = [0, 0];
  for (const [le, count] of counts) {
    if (count >= rank) {
      if (!Number.isFinite(le)) return lowerLe;
      return lowerLe + (le - lowerLe) * ((rank - lowerCount) / Math.max(count - lowerCount, 1e-9));
    }
    [lowerLe, lowerCount] = [le, count];
  }
  return lowerLe;
}

/** The sample about a window before `i` (the first one kept, early on). */
function windowStart(i) {
  let j = i;
  while (j > 0 && samples[i].t - samples[j - 1].t <= WINDOW_MS) j -= 1;
  return j === i ? null : samples[j];
}

function series() {
  const turns = [], ttft50 = [], ttft95 = [], lat50 = [], lat95 = [];
  const failures = new Map();
  samples.forEach((s, i) => {
    const from = windowStart(i);
    if (!from) return;
    const seconds = (s.t - from.t) / 1000;
    const started = Math.max(0, sum(s.families, "codex_pool_turns_started_total") - sum(from.families, "codex_pool_turns_started_total"));
    turns.push([s.t, started / seconds]);
    const ttft = "codex_pool_turn_first_token_seconds", latency = "codex_pool_turn_duration_seconds";
    ttft50.push([s.t, quantile(0.5, buckets(s.families, ttft), buckets(from.families, ttft))]);
    ttft95.push([s.t, quantile(0.95, buckets(s.families, ttft), buckets(from.families, ttft))]);
    lat50.push([s.t, quantile(0.5, buckets(s.families, latency), buckets(from.families, latency))]);
    lat95.push([s.t, quantile(0.95, buckets(s.families, latency), buckets(from.families, latency))]);
    for (const f of s.families.get("codex_pool_turns_failed_total") || []) {
      const was = (from.families.get("codex_pool_turns_failed_total") || []).find((b) => b.labels.reason === f.labels.reason);
      if (!failures.has(f.labels.reason)) failures.set(f.labels.reason, []);
      failures.get(f.labels.reason).push([s.t, Math.max(0, f.value - (was?.value ?? 0)) * (60 / seconds)]);
    }
  });
  return { turns, ttft50, ttft95, lat50, lat95, failures };
}

const GREYS = ["#cf222e", "#9a6700", "#656d76", "#1f2328", "#8c959f"];

function draw() {
  const s = series();
  const p50 = { color: "#1f2328" }, p95 = { color: "#8c959f", dash: [4, 3] };
  lines($("chart-turns"), [{ label: "turns/s", points: s.turns }]);
  lines($("chart-ttft"), [{ label: "p50", ...p50, points: s.ttft50 }, { label: "p95", ...p95, points: s.ttft95 }], { unit: "s" });
  lines($("chart-latency"), [{ label: "p50", ...p50, points: s.lat50 }, { label: "p95", ...p95, points: s.lat95 }], { unit: "s" });
  lines($("chart-failures"), [...s.failures].map(([reason, points], i) => ({ label: reason, color: GREYS[i % GREYS.length], points })));
  const last = samples[samples.length - 1].families;
  const rows = [
    ["Turns started", sum(last, "codex_pool_turns_started_total")],
    ...(last.get("codex_pool_turns_completed_total") || []).map((f) => [`Turns ${f.labels.status}`, f.value]),
    ...(last.get("codex_pool_turns_failed_total") || []).map((f) => [`Turns failed: ${f.labels.reason}`, f.value]),
    ["Conversations rebuilt", sum(last, "codex_pool_rebuilds_total")],
    ["Processes replaced", sum(last, "codex_pool_process_restarts_total")],
  ];
  $("metrics-table").tBodies[0].replaceChildren(...rows.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", { class: "num" }, v))));
}

let visible = false;

/** Whether the view is shown (the charts are drawn only then). */
export function shown(yes) {
  visible = yes;
  if (yes && samples.length) draw();
}

/** One scrape. */
export async function tick() {
  let body;
  try {
    body = await api.text("/metrics");
  } catch (e) {
    if (api.forbidden(e)) { note($("metrics-note"), "This key cannot see the metrics: they are the operator's."); return; }
    throw e;
  }
  note($("metrics-note"), "");
  const t = Date.now();
  samples.push({ t, families: parse(body) });
  while (samples.length && t - samples[0].t > KEEP_MS) samples.shift();
  if (visible) draw();
}
