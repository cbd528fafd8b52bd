// Conversations: a page of them (newest first, `next_after` for older ones); one opened shows its
// settings, its stored history, its waiting tool calls with their age, and its running turn
// streaming (re-attached with the turn's events route), with an interrupt button.
import * as api from "./api.js";
import { $, el, note, age } from "./dom.js";

const PAGE = 20;
let cursors = [null]; // the `after` of each page shown so far
let nextAfter = null;
let open = null; // { id, attached: turn id streaming, abort }

/** Who owns a conversation, as text: its key's name (or id), or the operator. */
const ownerText = (c) => (c.owner ? c.owner.key_name ?? c.owner.key_id : "operator");

const when = (seconds) =>
  new Date(seconds * 1000).toLocaleString([], { hour12: false, month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });

/** The text of a history item, as the Responses API shapes it. */
export function itemText(item) {
  if (Array.isArray(item.content)) {
    return item.content.map((part) => part.text ?? part.refusal ?? (part.image_url ? "[image]" : "")).join("");
  }
  if (item.type === "function_call") return `${item.name}(${item.arguments ?? ""})`;
  if (item.type === "function_call_output") return typeof item.output === "string" ? item.output : JSON.stringify(item.output);
  if (Array.isArray(item.summary)) return item.summary.map((s) => s.text ?? "").join("\n");
  return JSON.stringify(item);
}

/** One message of a transcript, as text. */
export function message(who, text, cls) {
  const node = el("div", { class: `msg ${cls || who}` }, el("span", { class: "who" }, who));
  node.append(document.createTextNode(text));
  return node;
}

function row(c) {
  const tr = el("tr", { class: `clickable${open?.id === c.id ? " selected" : ""}`, "data-id": c.id },
    el("td", { class: "id" }, c.id),
    el("td", {}, when(c.created_at)),
    el("td", { class: "owner" }, ownerText(c)),
    el("td", { class: `state state-${c.state}` }, c.state),
    el("td", {}, c.loaded ? `slot ${c.loaded.slot}` : "–"),
    el("td", { class: "num" }, c.turns),
    el("td", { class: "num" }, c.pending_tool_calls.length || ""));
  tr.addEventListener("click", () => show(c.id));
  return tr;
}

async function loadPage() {
  const after = cursors[cursors.length - 1];
  const query = after ? `?limit=${PAGE}&after=${encodeURIComponent(after)}` : `?limit=${PAGE}`;
  const page = await api.get(`/v1/conversations${query}`);
  $("conv-table").tBodies[0].replaceChildren(...page.data.map(row));
  nextAfter = page.next_after;
  $("conv-next").disabled = !page.has_more;
}

async function loadItems(id) {
  const items = [];
  let after = 0;
  for (;;) {
    const page = await api.get(`/v1/conversations/${encodeURIComponent(id)}/items?after=${after}`);
    items.push(...page.data);
    if (!page.has_more) break;
    after = page.next_after;
  }
  $("conv-items").replaceChildren(...items.map(({ item }) =>
    message(item.role || item.type || "item", itemText(item), item.role ? null : "item")));
}

function settings(c) {
  const pairs = [
    ["State", c.state], ["Owner", c.owner ? `key ${ownerText(c)} (${c.owner.key_id})` : "operator"],
    ["Profile", c.profile], ["Model", c.model ?? "default"],
    ["Turns", c.turns], ["Loaded", c.loaded ? `slot ${c.loaded.slot}, codex thread ${c.loaded.codex_thread_id}` : "no"],
    ["Instructions", c.instructions ?? "the profile's"], ["Developer instructions", c.developer_instructions ?? "none"],
    ["Functions", c.functions.join(", ") || "none"], ["Running turn", c.running_turn_id ?? "none"],
  ];
  $("conv-settings").replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  $("conv-pending").hidden = c.pending_tool_calls.length === 0;
  $("conv-pending-table").tBodies[0].replaceChildren(...c.pending_tool_calls.map((p) => el("tr", {},
    el("td", { class: "id" }, p.call_id), el("td", {}, p.name), el("td", { class: "mono" }, p.arguments),
    el("td", { class: "num" }, age(Date.now() - p.since_ms)))));
}

/** Streams the conversation's running turn into the live box, then reloads its history. */
async function attach(id, turnId) {
  const abort = new AbortController();
  open.attached = turnId;
  open.abort = abort;
  const live = $("conv-live");
  const reply = message("assistant", "", "assistant");
  live.replaceChildren(el("div", { class: "summary" }, `turn ${turnId}, streaming`), reply);
  live.hidden = false;
  const path = `/v1/conversations/${encodeURIComponent(id)}/turns/${encodeURIComponent(turnId)}/events`;
  try {
    for await (const e of api.events("GET", path, { signal: abort.signal })) {
      if (e.event === "text.delta") reply.append(document.createTextNode(e.data.delta));
      if (e.event === "turn.failed") reply.append(message("failed", `${e.data.error.kind}: ${e.data.error.message}`, "failed"));
    }
  } catch (e) {
    if (abort.signal.aborted) return;
    reply.append(message("error", e.message, "failed"));
  }
  if (open?.id !== id) return;
  live.hidden = true;
  await refreshOpen();
}

async function refreshOpen() {
  if (!open) return;
  const id = open.id;
  const c = await api.get(`/v1/conversations/${encodeURIComponent(id)}`);
  if (open?.id !== id) return;
  $("conv-title").textContent = c.id;
  settings(c);
  $("conv-interrupt").disabled = c.state !== "running";
  if (c.state === "running" && c.running_turn_id && open.attached !== c.running_turn_id) {
    attach(id, c.running_turn_id);
  }
  if (c.turns !== open.turns) {
    open.turns = c.turns;
    await loadItems(id);
  }
}

async function show(id) {
  close();
  open = { id, attached: null, abort: null, turns: null };
  $("conv-detail").hidden = false;
  $("conv-live").hidden = true;
  $("conv-items").replaceChildren();
  for (const tr of $("conv-table").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.id === id);
  await refreshOpen();
}

function close() {
  open?.abort?.abort();
  open = null;
  $("conv-detail").hidden = true;
}

/** Wires the buttons. */
export function setUp() {
  $("conv-next").addEventListener("click", async () => { cursors.push(nextAfter); await loadPage(); });
  $("conv-first").addEventListener("click", async () => { cursors = [null]; await loadPage(); });
  $("conv-close").addEventListener("click", close);
  $("conv-interrupt").addEventListener("click", async () => {
    if (!open) return;
    try {
      await api.request("POST", `/v1/conversations/${encodeURIComponent(open.id)}/interrupt`);
    } catch (e) {
      note($("conv-note"), `Interrupt: ${e.message}`);
    }
  });
}

/** One round, while the view is shown: the page of conversations, the one opened. */
export async function tick() {
  await loadPage();
  await refreshOpen();
}
