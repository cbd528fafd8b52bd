"""The official `openai` client against two codex-pool nodes on one store (run by
crates/cli/tests/nodes.rs): a response made on node A is continued through node B, streamed and
not, with the nodes' token, as a client behind a load balancer would. Prints one JSON object of
what it saw; any failure raises.

Usage: nodes_client.py A_BASE_URL B_BASE_URL TOKEN (e.g. http://127.0.0.1:7878/v1)
"""

import json
import sys

import openai
from openai import OpenAI

a_base, b_base, token = sys.argv[1:4]
on_a = OpenAI(base_url=a_base, api_key=token, max_retries=0, _strict_response_validation=True)
on_b = OpenAI(base_url=b_base, api_key=token, max_retries=0, _strict_response_validation=True)
seen = {"openai": openai.__version__}

first = on_a.responses.create(model="mock-model", input="first on a")
assert first.output_text == "echo: first on a", first
seen["first"] = first.id

second = on_b.responses.create(model="mock-model", input="second through b", previous_response_id=first.id)
assert second.output_text == "echo: second through b", second
assert second.previous_response_id == first.id, second
seen["second"] = second.id

with on_b.responses.stream(model="mock-model", input="third through b", previous_response_id=second.id) as stream:
    types = [event.type for event in stream]
    third = stream.get_final_response()
assert types[-1] == "response.completed", types
assert third.output_text == "echo: third through b", third
seen["third"] = third.id

back = on_b.responses.retrieve(third.id)
assert back.output_text == "echo: third through b", back

print(json.dumps(seen))
