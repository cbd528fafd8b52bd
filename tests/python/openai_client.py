"""The official `openai` client against a codex-pool service (run by crates/cli/tests/openai.rs).

Streams a reply from /v1/responses, continues it with previous_response_id, streams
/v1/chat/completions twice with a growing transcript, lists the models; every answer validated
strictly by the client's own types. Prints one JSON object of what it saw; any failure raises.

Usage: openai_client.py BASE_URL (e.g. http://127.0.0.1:7878/v1)
"""

import json
import sys

import openai
from openai import OpenAI

base = sys.argv[1]
client = OpenAI(base_url=base, api_key="unused", max_retries=0, _strict_response_validation=True)
seen = {"openai": openai.__version__}

# Responses: stream with the helper (it checks the order and identity of events), then go on.
with client.responses.stream(model="mock-model", input="hello from openai", instructions="You are Ada.") as stream:
    types = [event.type for event in stream]
    first = stream.get_final_response()
assert types[:2] == ["response.created", "response.in_progress"], types
assert types[-1] == "response.completed", types
assert first.status == "completed" and first.output_text == "echo: hello from openai", first
assert first.usage is not None and first.usage.total_tokens >= 0
seen["stream_types"] = types
seen["first"] = first.id

second = client.responses.create(model="mock-model", input="and then?", previous_response_id=first.id)
assert second.output_text == "echo: and then?", second
assert second.previous_response_id == first.id, second
seen["second"] = second.id

raw = list(client.responses.create(model="mock-model", input="numbered", previous_response_id=second.id, stream=True))
numbers = [event.sequence_number for event in raw]
assert numbers == list(range(len(raw))), numbers
seen["third"] = raw[-1].response.id

back = client.responses.retrieve(first.id)
assert back.output_text == "echo: hello from openai", back

try:
    client.responses.create(model="mock-model", input="x", temperature=0.5)
    raise AssertionError("temperature was taken")
except openai.BadRequestError as e:
    assert e.param == "temperature", e.body
try:
    client.responses.retrieve("resp_nothing_here")
    raise AssertionError("an unknown response was found")
except openai.NotFoundError:
    pass

# Chat Completions: a transcript that grows by one exchange is one conversation.
messages = [{"role": "system", "content": "You are Bob."}, {"role": "user", "content": "first chat line"}]
chunks = list(client.chat.completions.create(model="mock-model", messages=messages, stream=True))
reply = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert reply == "echo: first chat line", reply
assert chunks[-1].choices[0].finish_reason == "stop", chunks[-1]
messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": "second chat line"}]
stream = client.chat.completions.create(
    model="mock-model", messages=messages, stream=True, stream_options={"include_usage": True}
)
chunks = list(stream)
reply = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert reply == "echo: second chat line", reply
assert chunks[-1].choices == [] and chunks[-1].usage is not None, chunks[-1]
seen["chat_ids"] = sorted({c.id for c in chunks})

whole = client.chat.completions.create(
    model="mock-model", messages=messages + [{"role": "assistant", "content": reply}, {"role": "user", "content": "third"}]
)
assert whole.choices[0].message.content == "echo: third", whole

seen["models"] = [m.id for m in client.models.list()]
print(json.dumps(seen))
