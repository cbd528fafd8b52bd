"""One step of a function call through the official `openai` package, so a test can kill or
restart things between the steps (run by crates/cli/tests/openai_tools.rs).

  tools_recovery.py ask BASE_URL CITY
      a Responses request whose model calls get_weather; prints {"response_id", "call_id"}
  tools_recovery.py answer BASE_URL RESPONSE_ID CALL_ID OUTPUT
      gives the output after previous_response_id; prints {"response_id", "text"}

The client retries as the official client does by default (twice), so a 503 while a codex
process is replaced is what a real client would see and retry.
"""

import json
import sys

from openai import OpenAI

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}

step, base = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base, api_key="unused", _strict_response_validation=True)
if step == "ask":
    city = sys.argv[3]
    response = client.responses.create(
        model="mock-model",
        input=f'weather in {city} [mock:tool=get_weather {{"city":"{city}"}}]',
        tools=[WEATHER],
    )
    calls = [item for item in response.output if item.type == "function_call"]
    assert response.status == "completed" and len(calls) == 1, response
    print(json.dumps({"response_id": response.id, "call_id": calls[0].call_id}))
elif step == "answer":
    response_id, call_id, output = sys.argv[3], sys.argv[4], sys.argv[5]
    response = client.responses.create(
        model="mock-model",
        previous_response_id=response_id,
        input=[{"type": "function_call_output", "call_id": call_id, "output": output}],
        tools=[WEATHER],
    )
    assert response.status == "completed", response
    print(json.dumps({"response_id": response.id, "text": response.output_text}))
else:
    raise SystemExit(f"unknown step {step}")
