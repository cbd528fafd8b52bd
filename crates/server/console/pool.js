// The pool, live: `GET /v1/pool` every second, `GET /v1/nodes` every 5 s. A process replaced
// (its slot's pid changed) is marked and logged as it happens.
import * as api from "./api.js";
import { $, el, note, bytes, clock } from "./dom.js";

const REPLACED_SHOWN_MS = 15000;
const LOG_LINES = 50;

const slots = new Map(); // slot -> { pid, state, replacedAt, previousPid }

function cell(value, cls) {
  return el("td", { class: cls }, value);
}

function log(text) {
  const list = $("pool-log");
  list.prepend(el("li", {}, `${clock()}  ${text}`));
  while (list.children.length > LOG_LINES) list.lastChild.remove();
}

/** Notes what changed in each slot since the last answer. */
function compare(p) {
  const before = slots.get(p.slot);
  const now = { pid: p.pid, state: p.state, replacedAt: before?.replacedAt, previousPid: before?.previousPid };
  if (before) {
    if (before.pid && p.pid && before.pid !== p.pid) {
      now.replacedAt = Date.now();
      now.previousPid = before.pid;
      log(`slot ${p.slot}: pid ${before.pid} replaced by pid ${p.pid} (restarts: ${p.restarts})`);
    } else if (before.pid && !p.pid) {
      log(`slot ${p.slot}: pid ${before.pid} is gone (${p.state})`);
      now.previousPid = before.pid;
    } else if (!before.pid && p.pid && before.previousPid) {
      now.replacedAt = Date.now();
      log(`slot ${p.slot}: replaced by pid ${p.pid} (restarts: ${p.restarts})`);
    } else if (before.state !== p.state) {
      log(`slot ${p.slot}: ${before.state} → ${p.state}`);
    }
  }
  slots.set(p.slot, now);
  return now;
}

function row(p) {
  const seen = compare(p);
  const recent = seen.replacedAt && Date.now() - seen.replacedAt < REPLACED_SHOWN_MS;
  const replaced = seen.replacedAt ? `${clock(new Date(seen.replacedAt))} (was ${seen.previousPid})` : "";
  return el("tr", { class: recent ? "replaced" : null, "data-slot": p.slot },
    cell(p.slot, "num"),
    cell(p.pid ?? "–", "pid"),
    cell(p.state, `state state-${p.state}`),
    cell(p.healthy ? "yes" : "no", p.healthy ? "yes" : "no"),
    cell(p.loaded_threads, "num"),
    cell(p.active_turns, "num"),
    cell(p.restarts, "num"),
    cell(bytes(p.rss_bytes), "num"),
    cell(replaced));
}

async function refreshPool() {
  let pool;
  try {
    pool = await api.get("/v1/pool");
  } catch (e) {
    if (api.forbidden(e)) {
      note($("pool-note"), "This key cannot see the pool: the pool, its nodes and the metrics are the operator's.");
      $("pool-table").hidden = true;
      return;
    }
    throw e;
  }
  note($("pool-note"), "");
  $("pool-table").hidden = false;
  $("pool-table").tBodies[0].replaceChildren(...pool.processes.map(row));
  const node = pool.node ? `; node ${pool.node.id} (${pool.node.address}), ${pool.node.leases} leases` : "";
  $("pool-summary").textContent =
    `${pool.ready} of ${pool.size} processes ready; ${pool.running_turns} turns running; strategy ${pool.strategy}${node}`;
}

async function refreshNodes() {
  let answer;
  try {
    answer = await api.get("/v1/nodes");
  } catch (e) {
    if (api.forbidden(e)) { $("nodes").hidden = true; return; }
    throw e;
  }
  $("nodes").hidden = answer.nodes.length === 0;
  $("nodes-table").tBodies[0].replaceChildren(...answer.nodes.map((n) => el("tr", {},
    cell(n.id === answer.this_node ? `${n.id} (this one)` : n.id, "mono"),
    cell(n.address, "mono"),
    cell(`${(n.heartbeat_age_ms / 1000).toFixed(1)} s ago`, "num"),
    cell(n.conversations, "num"))));
}

let ticks = 0;

/** One round: the pool every time, the nodes every fifth. */
export async function tick() {
  await refreshPool();
  if (ticks++ % 5 === 0) await refreshNodes();
}
