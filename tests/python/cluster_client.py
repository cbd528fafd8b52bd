"""Real clients against the example deployment (run by crates/cli/tests/cluster.rs): HAProxy in
front of three codex-pool nodes on one PostgreSQL, every node requiring the token.

The official `openai` package (Responses with previous_response_id, Chat Completions with a
growing transcript, streamed and not) and httpx (native turns, re-attaching to a running turn's
events with Last-Event-ID through a node other than the one that runs it), through the load
balancer and directly to each node; then node1 is killed (SIGKILL) and the conversations it
served go on through the load balancer. No redirect is ever followed. Every answer is checked
here; what only the model saw (the history) is checked by the Rust test. Prints one JSON object
of what it saw; any failure raises.

Usage: CODEX_POOL_TOKEN=... cluster_client.py LB_URL NODE1_URL NODE2_URL NODE3_URL NODE1_PID
"""

import json
import os
import signal
import sys
import time

import httpx2 as httpx  # the httpx the `openai` package ships with (its module is httpx2)
from openai import OpenAI

lb, nodes, node1_pid = sys.argv[1], sys.argv[2:5], int(sys.argv[5])
token = os.environ["CODEX_POOL_TOKEN"]
auth = {"Authorization": f"Bearer {token}"}
seen = {}
# Every HTTP request the clients send, by phase (the openai package's retries included).
sent = {"phase": "before", "before": 0, "after": 0}


def count(request):
    sent[sent["phase"]] += 1


def openai_client(base, retries=0):
    http = httpx.Client(follow_redirects=False, event_hooks={"request": [count]}, timeout=120)
    return OpenAI(base_url=base + "/v1", api_key=token, max_retries=retries, http_client=http,
                  _strict_response_validation=True)


native = httpx.Client(headers=auth, follow_redirects=False, event_hooks={"request": [count]}, timeout=120)
via_lb = openai_client(lb)
direct = [openai_client(n) for n in nodes]


def respond(client, text, previous=None, stream=False):
    """One Responses turn; the Response."""
    extra = {"previous_response_id": previous} if previous else {"instructions": "You are Ada."}
    if not stream:
        response = client.responses.create(model="mock-model", input=text, **extra)
    else:
        events = list(client.responses.create(model="mock-model", input=text, stream=True, **extra))
        assert [e.sequence_number for e in events] == list(range(len(events))), events
        assert events[-1].type == "response.completed", [e.type for e in events]
        response = events[-1].response
    assert response.status == "completed" and response.output_text == f"echo: {text}", response
    if previous:
        assert response.previous_response_id == previous, response
    return response.id


def chat(client, messages, text, stream=False):
    """One Chat Completions request of the transcript, grown by its answer; the completion's id."""
    messages.append({"role": "user", "content": text})
    if stream:
        chunks = list(client.chat.completions.create(model="mock-model", messages=messages, stream=True))
        reply = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        ids = {c.id for c in chunks}
        assert len(ids) == 1, ids
        answer_id = ids.pop()
    else:
        answer = client.chat.completions.create(model="mock-model", messages=messages)
        reply, answer_id = answer.choices[0].message.content, answer.id
    assert reply == f"echo: {text}", reply
    messages.append({"role": "assistant", "content": reply})
    return answer_id


def conversations():
    """How many conversations the store holds (through the load balancer)."""
    total, after = 0, None
    while True:
        page = native.get(f"{lb}/v1/conversations", params={"limit": 100, **({"after": after} if after else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        total += len(body["data"])
        if not body["has_more"]:
            return total
        after = body["next_after"]


def events(response):
    """The server-sent events of a streamed answer, as (id, type, data)."""
    assert response.status_code == 200, (response.status_code, response.read())
    assert response.headers["content-type"].startswith("text/event-stream"), response.headers
    event_id, data = None, []
    for line in response.iter_lines():
        if line.startswith("id:"):
            event_id = int(line[3:].strip())
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            body = json.loads("\n".join(data))
            yield event_id, body["type"], body
            event_id, data = None, []


def create(base):
    answer = native.post(f"{base}/v1/conversations", json={})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def native_turn(base, conversation, text):
    answer = native.post(f"{base}/v1/conversations/{conversation}/turns", json={"text": text, "stream": False})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "completed" and body["text"] == f"echo: {text}", body
    return body["turn_id"]


def native_stream(base, conversation, text):
    with native.stream("POST", f"{base}/v1/conversations/{conversation}/turns", json={"text": text}) as answer:
        seen_events = list(events(answer))
    assert seen_events[-1][1] == "turn.completed", seen_events[-1]
    assert [i for i, _, _ in seen_events] == list(range(1, len(seen_events) + 1)), seen_events
    text_seen = "".join(d["delta"] for _, t, d in seen_events if t == "text.delta")
    assert text_seen == f"echo: {text}", text_seen


def metrics(base):
    """Per node: POST requests it answered, and requests it forwarded to another node."""
    text = native.get(f"{base}/metrics").text
    total = lambda prefix, *must: sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
        if line.startswith(prefix) and all(m in line for m in must))
    return {"posts": total("codex_pool_http_requests_total{", 'method="POST"'),
            "forwarded": total("codex_pool_forwarded_requests_total")}


# --- Responses: a conversation through the load balancer only, streamed and not, then one
# continuation directly to each node.
chain = [respond(via_lb, "resp one")]
for k, text in enumerate(["resp two", "resp three", "resp four"]):
    chain.append(respond(via_lb, text, chain[-1], stream=k % 2 == 0))
for client, text in zip(direct, ["resp five", "resp six", "resp seven"]):
    chain.append(respond(client, text, chain[-1], stream=text == "resp six"))
seen["responses"] = chain

# --- Chat Completions: one growing transcript, through the load balancer (streamed and not),
# then directly to each node; it stays one conversation.
before = conversations()
transcript = [{"role": "system", "content": "You are Bob."}]
chat_ids = []
for k, text in enumerate(["chat one", "chat two", "chat three"]):
    chat_ids.append(chat(via_lb, transcript, text, stream=k % 2 == 0))
for client, text in zip(direct, ["chat four", "chat five", "chat six"]):
    chat_ids.append(chat(client, transcript, text, stream=text == "chat five"))
seen["chat"] = chat_ids
seen["chat_new_conversations"] = conversations() - before

# --- Native turns with httpx: a conversation node1 serves (created there), turns through the
# load balancer; a slow turn started through the load balancer, read in part, then re-attached
# with Last-Event-ID through node2 and, from later on, node3 (node1 runs it).
conversation = create(nodes[0])
native_turn(lb, conversation, "native one")
native_stream(lb, conversation, "native two")
slow = "native slow [mock:deltas=12] [mock:delay_ms=150]"
read = []
with native.stream("POST", f"{lb}/v1/conversations/{conversation}/turns", json={"text": slow}) as answer:
    for event in events(answer):
        read.append(event)
        if len(read) == 4:
            break
turn_id = read[0][2]["turn_id"]
assert read[0][1] == "turn.started", read


def reattach(base, last, stop_after=None):
    path = f"{base}/v1/conversations/{conversation}/turns/{turn_id}/events"
    got = []
    with native.stream("GET", path, headers={"Last-Event-ID": str(last)}) as answer:
        for event in events(answer):
            got.append(event)
            if stop_after and len(got) == stop_after:
                break
    return got


read += reattach(nodes[1], read[-1][0], stop_after=3)
read += reattach(nodes[2], read[-1][0])
assert [i for i, _, _ in read] == list(range(1, len(read) + 1)), [i for i, _, _ in read]
assert read[-1][1] == "turn.completed", read[-1]
text_seen = "".join(d["delta"] for _, t, d in read if t == "text.delta")
assert text_seen == f"echo: {slow}", text_seen
seen["reattached_events"] = len(read)

# --- What node1 serves (each made there) before it is killed: a Responses conversation, a chat
# transcript and the native conversation above; each goes on through the load balancer.
kill_resp = respond(direct[0], "kill resp before")
kill_transcript = [{"role": "system", "content": "You are Carol."}]
kill_chat = [chat(direct[0], kill_transcript, "kill chat before")]
native_turn(lb, conversation, "kill native before")
seen["metrics"] = [metrics(n) for n in nodes]
seen["requests_before_kill"] = sent["before"]

os.kill(node1_pid, signal.SIGKILL)
sent["phase"] = "after"
began = time.monotonic()
# The client may see a retry (503 while node1's leases run out, a dropped connection): the
# openai package retries on its own; the native turn is retried here the same way.
patient = openai_client(lb, retries=8)
seen["kill_responses"] = [kill_resp, respond(patient, "kill resp after", kill_resp)]
kill_chat.append(chat(patient, kill_transcript, "kill chat after"))
seen["kill_chat"] = kill_chat
for attempt in range(40):
    try:
        answer = native.post(f"{lb}/v1/conversations/{conversation}/turns",
                             json={"text": "kill native after", "stream": False})
    except httpx.TransportError:
        time.sleep(0.5)
        continue
    if answer.status_code in (429, 502, 503, 504):
        time.sleep(min(float(answer.headers.get("retry-after", "0.5")), 2.0))
        continue
    break
assert answer.status_code == 200 and answer.json()["text"] == "echo: kill native after", answer.text
seen["requests_after_kill"] = sent["after"]
seen["seconds_after_kill"] = round(time.monotonic() - began, 2)
print(json.dumps(seen))
