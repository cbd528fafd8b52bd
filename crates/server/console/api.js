// The service's public API, as this page uses it: every request carries the token (kept in this
// tab's session storage only) as the bearer header; a 401 asks for the token again.
import { SseParser } from "./sse.js";

const KEY = "codex-pool-token";

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  forget: () => sessionStorage.removeItem(KEY),
};

/** An answer that is not a success: its status and the service's `{"error": {code, message}}`. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const listeners = { unauthorized: () => {} };

/** What to do when the service says the token is missing or wrong. */
export function onUnauthorized(f) { listeners.unauthorized = f; }

/** Sends a request; answers the response when it succeeded, else throws an ApiError. */
export async function request(method, path, { body, accept, signal } = {}) {
  const headers = { Accept: accept || "application/json" };
  const t = token.get();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const init = { method, headers, signal, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  if (response.ok) return response;
  let error = {};
  try { error = (await response.json()).error || {}; } catch { /* not JSON */ }
  if (response.status === 401) listeners.unauthorized();
  throw new ApiError(response.status, error.code || `http_${response.status}`, error.message || response.statusText);
}

export const get = async (path) => (await request("GET", path)).json();
export const post = async (path, body) => (await request("POST", path, { body })).json();
export const text = async (path) => (await request("GET", path, { accept: "text/plain" })).text();

/** The events of a stream (`POST .../turns`, `GET .../events`), each `{id, event, data}` with
 * `data` parsed as JSON, until the stream ends. */
export async function* events(method, path, { body, signal } = {}) {
  const response = await request(method, path, { body, signal, accept: "text/event-stream" });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SseParser();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    for (const e of parser.push(value)) {
      let data = null;
      try { data = JSON.parse(e.data); } catch { data = { raw: e.data }; }
      yield { id: e.id, event: e.event, data };
    }
  }
}

/** Whether an error says this key may not see what was asked (an application's key on an
 * operator's route). */
export const forbidden = (e) => e instanceof ApiError && e.status === 403;
