// The console's entry: the token (asked for on a 401, kept in this tab's session storage), the
// views and their polling.
import * as api from "./api.js";
import { $, clock, sleep } from "./dom.js";
import * as pool from "./pool.js";
import * as conversations from "./conversations.js";
import * as metrics from "./metrics.js";
import * as playground from "./playground.js";

const VIEWS = ["pool", "conversations", "metrics", "playground"];
let authorized = false;
let view = "pool";

function status(text, bad) {
  $("status").textContent = text;
  $("status").classList.toggle("bad", Boolean(bad));
}

function showLogin(refused) {
  authorized = false;
  $("app").hidden = true;
  $("login").hidden = false;
  $("forget").hidden = !api.token.get();
  $("login-error").textContent = refused ? "The service refused that token." : "";
  $("login-error").hidden = !refused;
  status("the service needs its token");
  $("token").focus();
}

function showApp() {
  authorized = true;
  $("login").hidden = true;
  $("app").hidden = false;
  $("forget").hidden = !api.token.get();
}

/** Whether the service answers with the token held (none, when it needs none). */
async function probe() {
  for (;;) {
    try {
      await api.get("/v1/conversations?limit=1");
      showApp();
      playground.start();
      return;
    } catch (e) {
      if (e instanceof api.ApiError && e.status === 401) return; // the login form is shown
      status(`cannot reach the service: ${e.message}`, true);
      await sleep(2000);
    }
  }
}

function route() {
  const asked = location.hash.slice(1);
  view = VIEWS.includes(asked) ? asked : "pool";
  for (const name of VIEWS) $(`view-${name}`).hidden = name !== view;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", a.dataset.view === view);
  metrics.shown(view === "metrics");
  if (view === "conversations") run(conversations.tick);
}

async function run(f) {
  if (!authorized) return;
  try {
    await f();
    status(`connected; updated ${clock()}`);
  } catch (e) {
    if (e instanceof api.ApiError && e.status === 401) return;
    status(`${e.message}`, true);
  }
}

/** Runs `f` every `ms` while the token works and `when` says so. */
function every(ms, f, when = () => true) {
  (async () => {
    for (;;) {
      if (authorized && when()) await run(f);
      await sleep(ms);
    }
  })();
}

function setUp() {
  api.onUnauthorized(() => showLogin(Boolean(api.token.get())));
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    api.token.set(value);
    $("token").value = "";
    await probe();
  });
  $("forget").addEventListener("click", () => {
    api.token.forget();
    showLogin(false);
  });
  conversations.setUp();
  playground.setUp();
  window.addEventListener("hashchange", route);
  route();
  every(1000, pool.tick);
  every(5000, metrics.tick);
  every(3000, conversations.tick, () => view === "conversations");
  probe();
}

setUp();
