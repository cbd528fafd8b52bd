"""The official `openai` client with two applications' API keys (run by crates/cli/tests/keys.rs).

Key A makes a response and a chat; key B, the other application's, cannot read A's response,
continue it, or see A's conversation; key A, allowed one conversation per the operator, is
refused its second with the client's own RateLimitError. Prints one JSON object of what it saw;
any failure raises.

Usage: keys_client.py BASE_URL KEY_A KEY_B (KEY_A created with max_conversations 1)
"""

import json
import sys

import openai
from openai import OpenAI

base, key_a, key_b = sys.argv[1:4]
a = OpenAI(base_url=base, api_key=key_a, max_retries=0, _strict_response_validation=True)
b = OpenAI(base_url=base, api_key=key_b, max_retries=0, _strict_response_validation=True)
seen = {}

first = a.responses.create(model="mock-model", input="only mine")
assert first.status == "completed" and first.output_text == "echo: only mine", first
assert a.responses.retrieve(first.id).id == first.id
seen["response"] = first.id

# The other key: every way to reach A's response is an unknown id.
for attempt in (
    lambda: b.responses.retrieve(first.id),
    lambda: b.responses.create(model="mock-model", input="and then?", previous_response_id=first.id),
):
    try:
        attempt()
    except openai.NotFoundError as e:
        assert e.status_code == 404, e
    else:
        raise AssertionError("key B reached key A's response")
seen["b_refused"] = 2

# A's own continuation works (the same conversation, no new one), and its second conversation
# is over its limit: the client's RateLimitError, with the service's Retry-After.
second = a.responses.create(model="mock-model", input="and then?", previous_response_id=first.id)
assert second.output_text == "echo: and then?", second
try:
    a.chat.completions.create(model="mock-model", messages=[{"role": "user", "content": "a new one"}])
except openai.RateLimitError as e:
    assert e.response.headers.get("retry-after"), e.response.headers
    assert e.code == "key_max_conversations", e.body
    seen["limited"] = e.code
else:
    raise AssertionError("key A made a second conversation past its limit")

# B's own conversation, through chat.
chat = b.chat.completions.create(model="mock-model", messages=[{"role": "user", "content": "mine, B"}])
assert chat.choices[0].message.content == "echo: mine, B", chat
print(json.dumps(seen))
