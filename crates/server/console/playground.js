// The playground: a conversation of its own (profile, model, instructions), an ordinary one
// listed with the others; each message a turn whose reply streams in.
import * as api from "./api.js";
import { $, el, note } from "./dom.js";
import { message } from "./conversations.js";

let conversation = null;
let busy = false;

async function create() {
  const body = { profile: $("pg-profile").value };
  const model = $("pg-model").value.trim();
  const instructions = $("pg-instructions").value.trim();
  if (model) body.model = model;
  if (instructions) body.instructions = instructions;
  const created = await api.post("/v1/conversations", body);
  conversation = created.id;
  $("pg-conversation").textContent = `Conversation ${created.id} (${created.profile}, model ${created.model ?? "default"})`;
  $("pg-transcript").replaceChildren();
}

async function send() {
  const input = $("pg-input");
  const textToSend = input.value;
  if (busy || !textToSend.trim()) return;
  busy = true;
  $("pg-send-button").disabled = true;
  note($("pg-status"), "");
  try {
    if (!conversation) await create();
    input.value = "";
    const transcript = $("pg-transcript");
    transcript.append(message("user", textToSend));
    const reply = message("assistant", "");
    reply.classList.add("streaming");
    transcript.append(reply);
    const path = `/v1/conversations/${encodeURIComponent(conversation)}/turns`;
    for await (const e of api.events("POST", path, { body: { text: textToSend } })) {
      if (e.event === "text.delta") reply.append(document.createTextNode(e.data.delta));
      else if (e.event === "turn.failed") {
        reply.classList.add("failed");
        reply.append(el("span", { class: "who" }, `failed: ${e.data.error.kind}: ${e.data.error.message}`));
      } else if (e.event === "turn.completed" && e.data.status !== "completed") {
        reply.append(el("span", { class: "who" }, e.data.status));
      }
    }
    reply.classList.remove("streaming");
    reply.classList.add("done");
  } catch (e) {
    note($("pg-status"), e.message);
  } finally {
    busy = false;
    $("pg-send-button").disabled = false;
  }
}

async function models() {
  try {
    const answer = await api.get("/v1/models");
    $("pg-models").replaceChildren(...answer.data.map((m) => el("option", { value: m.id })));
  } catch {
    // The list is a convenience: the field takes any name.
  }
}

/** Wires the forms: Enter sends, Shift+Enter starts a new line. */
export function setUp() {
  $("pg-new").addEventListener("submit", async (event) => {
    event.preventDefault();
    try { await create(); } catch (e) { note($("pg-status"), e.message); }
  });
  $("pg-send").addEventListener("submit", (event) => { event.preventDefault(); send(); });
  $("pg-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
}

/** Called once the token works. */
export const start = models;
