"""The operator's console in a real browser: Debian's chromium driven by Playwright (launched with
that executable; Playwright downloads no browser), against a `codex-pool serve` with a token and
two codex processes on the fake model.

Usage: console_test.py BASE_URL TOKEN SCREENSHOT_DIR API_KEY. Prints a JSON report on success; any
failed check raises (a non-zero exit, with the reason).

Checks: the page loads with no console error and no request off the service's origin; the token
flow (a password field, the token in sessionStorage only: not in localStorage, a cookie or a
URL); every pid of /v1/pool shown; a codex process killed with SIGKILL and its replacement's pid
shown without a reload; a playground message streamed back in several pieces; a hostile message
shown as text; the security headers; the playground's conversation listed with the others, and
a turn another client runs on it streamed into the page and stopped with its Interrupt button; a
tool call a turn waits on shown with its age; the metrics' counts and charts. Then, logged in with
an application's API key: the pool view says the key cannot see the pool, the conversations list
holds that key's conversations only, and the playground works with it.
Screenshots of the pool view and the playground go to SCREENSHOT_DIR.
"""

import json
import os
import re
import signal
import sys
import threading
import time
import urllib.request

from playwright.sync_api import expect, sync_playwright

CHROMIUM = os.environ.get("CODEX_POOL_CHROMIUM", "/usr/bin/chromium")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HOSTILE = "<img src=x onerror=window.__pwned=1>"
# The browser logs the answer to the page's first call, made before it has the token: the 401
# that makes it ask for the token. Any other console error fails the test.
EXPECTED_401 = "Failed to load resource: the server responded with a status of 401"
# With an application's key, the operator's routes answer 403, and the browser logs each answer;
# those, and only for those routes, are expected.
EXPECTED_403 = "Failed to load resource: the server responded with a status of 403"
OPERATOR_ROUTES = ("/v1/pool", "/v1/nodes", "/metrics")


def console_errors(page, errors, base, with_key):
    def logged(m):
        if m.type != "error":
            return
        url = (m.location or {}).get("url", "")
        if with_key and m.text.startswith(EXPECTED_403) and url in [base + r for r in OPERATOR_ROUTES]:
            return
        errors.append(m.text)

    page.on("console", logged)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))


def api(base, token, path):
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def post(base, token, path, body):
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.load(answer)


def headers_of(base, path):
    with urllib.request.urlopen(base + path, timeout=10) as answer:
        return answer.status, {k.lower(): v for k, v in answer.headers.items()}


def wait_for(what, check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def check_headers(base, report):
    for path in ["/", "/console", "/console/console.js", "/console/console.css"]:
        status, h = headers_of(base, path)
        assert status == 200, (path, status)
        assert h.get("content-security-policy") == CSP, (path, h)
        assert h.get("x-content-type-options") == "nosniff", (path, h)
        assert h.get("x-frame-options") == "DENY", (path, h)
        assert h.get("referrer-policy") == "no-referrer", (path, h)
        assert h.get("etag", "").startswith('"'), (path, h)
    report["headers"] = "ok"


def token_flow(page, context, token, report):
    field = page.locator("#token")
    expect(field).to_be_visible()
    assert field.get_attribute("type") == "password"
    assert page.locator("#app").is_hidden(), "nothing of the service shown before the token"
    field.fill(token)
    field.press("Enter")
    expect(page.locator("#app")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('codex-pool-token')") == token
    local = page.evaluate("JSON.stringify(Object.entries(localStorage))")
    assert token not in local, local
    cookies = context.cookies()
    assert all(token not in c["value"] for c in cookies), cookies
    assert token not in page.url, page.url
    report["token"] = "in sessionStorage only"


def pids_shown(page, base, token, report):
    pool = api(base, token, "/v1/pool")
    assert len(pool["processes"]) == 2, pool
    for p in pool["processes"]:
        expect(page.locator(f'#pool-table tr[data-slot="{p["slot"]}"] td.pid')).to_have_text(str(p["pid"]))
    report["pids"] = [p["pid"] for p in pool["processes"]]
    return pool


def replacement_shown(page, base, token, pool, report):
    page.evaluate("window.__sameDocument = true")
    victim = pool["processes"][0]
    os.kill(victim["pid"], signal.SIGKILL)

    def replaced():
        now = api(base, token, "/v1/pool")["processes"][0]
        return now if now["pid"] not in (None, victim["pid"]) else None

    new = wait_for("the killed process's replacement", replaced, timeout=60)
    row = page.locator(f'#pool-table tr[data-slot="{victim["slot"]}"]')
    expect(row.locator("td.pid")).to_have_text(str(new["pid"]), timeout=30000)
    expect(page.locator("#pool-log")).to_contain_text(f'replaced by pid {new["pid"]}')
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    report["replaced"] = {"killed": victim["pid"], "replacement": new["pid"]}


def last_reply(page):
    return page.locator("#pg-transcript .msg.assistant").last


def playground_streams(page, report):
    page.locator('nav a[data-view="playground"]').click()
    expect(page.locator("#view-playground")).to_be_visible()
    page.locator("#pg-instructions").fill("You are a terse assistant.")
    message = "stream this back [mock:deltas=8] [mock:delay_ms=150]"
    page.locator("#pg-input").fill(message)
    page.locator("#pg-input").press("Enter")
    reply = last_reply(page)
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if reply.count() and "done" in (reply.get_attribute("class") or ""):
            break
        if reply.count():
            # The reply's text, after its "assistant" label.
            text = reply.evaluate("n => Array.from(n.childNodes).slice(1).map(c => c.textContent).join('')")
            if text and (not seen or seen[-1] != text):
                seen.append(text)
        time.sleep(0.03)
    final = reply.text_content()
    assert final.endswith(f"echo: {message}"), final
    partial = [s for s in seen if s != f"echo: {message}" and f"echo: {message}".startswith(s)]
    assert len(partial) >= 2, f"the reply arrived in pieces: {seen}"
    conversation = page.locator("#pg-conversation").text_content().split()[1]
    report["playground"] = {"conversation": conversation, "pieces_seen": len(partial)}
    return conversation


def hostile_shown_as_text(page, report):
    page.locator("#pg-input").fill(HOSTILE)
    page.locator("#pg-send-button").click()
    expect(page.locator("#pg-transcript .msg.assistant")).to_have_count(2)
    expect(last_reply(page)).to_have_class("msg assistant done", timeout=30000)
    user = page.locator("#pg-transcript .msg.user").last
    assert user.text_content().endswith(HOSTILE), user.text_content()
    assert last_reply(page).text_content().endswith(f"echo: {HOSTILE}")
    assert page.locator("#pg-transcript img").count() == 0
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None, "the hostile message ran"
    report["hostile"] = "shown as text"


def listed(page, conversation, report):
    page.locator('nav a[data-view="conversations"]').click()
    row = page.locator(f'#conv-table tr[data-id="{conversation}"]')
    expect(row).to_be_visible()
    row.click()
    expect(page.locator("#conv-items")).to_contain_text(f"echo: {HOSTILE}")
    expect(row.locator("td.owner")).to_have_text("operator")
    report["listed"] = True


def pending_call_shown(page, base, token, report):
    """A turn waiting on a client tool: its call shown on its conversation, with its age."""
    functions = [{"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]
    conversation = post(base, token, "/v1/conversations", {"functions": functions})["id"]
    paused = post(base, token, f"/v1/conversations/{conversation}/turns", {"text": 'find [mock:tool=lookup {"q":"<b>x</b>"}]', "stream": False})
    assert paused["status"] == "tool_calls", paused
    page.locator("#conv-first").click()
    page.locator(f'#conv-table tr[data-id="{conversation}"]').click()
    calls = page.locator("#conv-pending-table tbody tr")
    expect(calls).to_have_count(1)
    expect(calls.locator("td").nth(1)).to_have_text("lookup")
    expect(calls.locator("td").nth(2)).to_have_text('{"q":"<b>x</b>"}')
    expect(calls.locator("td").nth(3)).to_have_text(re.compile(r"^\d+ s$"))
    report["pending_call"] = calls.locator("td").nth(3).text_content()


def metrics_drawn(page, shots, report):
    """The metrics view: the counts so far, the charts; the quantiles read from buckets."""
    page.locator('nav a[data-view="metrics"]').click()
    expect(page.locator("#metrics-table")).to_contain_text("Turns started")
    started = page.locator("#metrics-table tr", has_text="Turns started").locator("td").nth(1)
    # Read every 5 s: at least the playground's turns, made seconds ago.
    expect(started).to_have_text(re.compile(r"^[1-9]\d*$"))
    expect(page.locator("#view-metrics canvas")).to_have_count(4)
    # The p50 of 10 observations between 0.1 s and 0.5 s, read linearly within the bucket: 0.3 s.
    p50 = page.evaluate(
        """async () => (await import("/console/metrics.js")).quantile(0.5,
             [[0.1, 2], [0.5, 12], [1, 12], [Infinity, 12]], [[0.1, 2], [0.5, 2], [1, 2], [Infinity, 2]])"""
    )
    assert abs(p50 - 0.3) < 1e-9, p50
    page.screenshot(path=os.path.join(shots, "metrics.png"))
    report["metrics"] = int(started.text_content())


def running_turn_streamed_and_interrupted(page, base, token, conversation, report):
    """A turn another client runs streams into the opened conversation; Interrupt stops it."""
    answer = {}

    def run_turn():
        body = json.dumps({"text": "long [mock:deltas=200] [mock:delay_ms=100]"}).encode()
        request = urllib.request.Request(
            f"{base}/v1/conversations/{conversation}/turns",
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as stream:
            answer["events"] = stream.read().decode()

    client = threading.Thread(target=run_turn)
    client.start()
    live = page.locator("#conv-live .msg.assistant")
    expect(live).to_contain_text("echo: long", timeout=30000)
    expect(page.locator("#conv-interrupt")).to_be_enabled()
    page.locator("#conv-interrupt").click()
    client.join(timeout=60)
    assert '"status":"interrupted"' in answer.get("events", ""), answer
    expect(page.locator("#conv-live")).to_be_hidden(timeout=30000)
    report["interrupted"] = True


def with_a_key(browser, base, key, operators, errors, seen, report):
    """Logged in with an application's key: no pool, its own conversations only, a playground."""
    context = browser.new_context(viewport={"width": 1180, "height": 640})
    page = context.new_page()
    console_errors(page, errors, base, with_key=True)
    page.on("request", seen)
    page.goto(base + "/")
    page.locator("#token").fill(key)
    page.locator("#token").press("Enter")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#pool-note")).to_contain_text("This key cannot see the pool")
    expect(page.locator("#pool-table")).to_be_hidden()
    own = post(base, key, "/v1/conversations", {})["id"]
    name = api(base, key, f"/v1/conversations/{own}")["owner"]["key_name"]
    page.locator('nav a[data-view="playground"]').click()
    page.locator("#pg-input").fill("from the key")
    page.locator("#pg-input").press("Enter")
    expect(last_reply(page)).to_have_class("msg assistant done", timeout=30000)
    assert last_reply(page).text_content().endswith("echo: from the key"), last_reply(page).text_content()
    played = page.locator("#pg-conversation").text_content().split()[1]
    page.locator('nav a[data-view="conversations"]').click()
    rows = page.locator("#conv-table tbody tr")
    expect(rows).to_have_count(2)
    shown = sorted(rows.nth(i).get_attribute("data-id") for i in range(2))
    assert shown == sorted([own, played]), (shown, own, played)
    expect(page.locator(f'#conv-table tr[data-id="{played}"] td.owner')).to_have_text(name)
    assert page.locator(f'#conv-table tr[data-id="{operators}"]').count() == 0
    context.close()
    report["key"] = {"pool": "not shown", "conversations": len(shown), "playground": played}


def main():
    base, token, shots, key = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3], sys.argv[4]
    os.makedirs(shots, exist_ok=True)
    report = {}
    check_headers(base, report)
    errors, off_origin, requests = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        context = browser.new_context(viewport={"width": 1180, "height": 640})
        page = context.new_page()
        console_errors(page, errors, base, with_key=False)

        def seen(request):
            requests.append(request.url)
            if not (request.url == base or request.url.startswith(base + "/") or request.url.startswith("data:")):
                off_origin.append(request.url)

        page.on("request", seen)
        answer = page.goto(base + "/")
        assert answer.status == 200 and answer.headers["content-security-policy"] == CSP
        token_flow(page, context, token, report)
        pool = pids_shown(page, base, token, report)
        replacement_shown(page, base, token, pool, report)
        page.screenshot(path=os.path.join(shots, "pool.png"))
        conversation = playground_streams(page, report)
        hostile_shown_as_text(page, report)
        page.screenshot(path=os.path.join(shots, "playground.png"))
        listed(page, conversation, report)
        running_turn_streamed_and_interrupted(page, base, token, conversation, report)
        pending_call_shown(page, base, token, report)
        metrics_drawn(page, shots, report)
        page.locator("#forget").click()
        expect(page.locator("#token")).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('codex-pool-token')") is None
        with_a_key(browser, base, key, conversation, errors, seen, report)
        browser.close()
    unexpected = [e for e in errors if not e.startswith(EXPECTED_401)]
    assert not unexpected, f"console errors: {unexpected}"
    assert not off_origin, f"requests off the service's origin: {off_origin}"
    assert all(token not in url and key not in url for url in requests), "the token or the key in a URL"
    report["requests"] = len(requests)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
