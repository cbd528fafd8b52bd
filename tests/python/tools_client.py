"""Function calling through real clients against a codex-pool service (run by
crates/cli/tests/openai_tools.rs): the official `openai` package on the Responses API and Chat
Completions (streamed and not, one call and two parallel calls), and the OpenAI Agents SDK (an
Agent with a @function_tool, through OpenAIResponsesModel and OpenAIChatCompletionsModel). The
fake model calls a tool on `[mock:tool=NAME ARGS]` and answers `tool output: ...` after the
outputs. Prints one JSON object: the call ids each case made (the Rust side checks, on the fake
model's requests, that each call and output reached the model once); any failure raises.

Usage: tools_client.py BASE_URL (e.g. http://127.0.0.1:7878/v1)
"""

import asyncio
import json
import sys

from openai import AsyncOpenAI, OpenAI

base = sys.argv[1]
client = OpenAI(base_url=base, api_key="unused", max_retries=0, _strict_response_validation=True)
seen = {}

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather of a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}


def chat_tool(tool):
    return {"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}}


# Responses, not streamed, one call: the response stops at it; its output continues the turn.
first = client.responses.create(
    model="mock-model",
    input='responses one [mock:tool=get_weather {"city":"Oslo"}]',
    tools=[WEATHER],
    tool_choice="auto",
    parallel_tool_calls=True,
    include=[],
)
calls = [item for item in first.output if item.type == "function_call"]
assert first.status == "completed" and len(calls) == 1, first
assert calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Oslo"}, calls
second = client.responses.create(
    model="mock-model",
    previous_response_id=first.id,
    input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}],
    tools=[WEATHER],
)
assert second.output_text == "tool output: sunny", second
assert second.previous_response_id == first.id, second
seen["responses_one"] = [calls[0].call_id]

# Responses, streamed, two parallel calls; then resent whole, as stateless clients do.
user = {"role": "user", "content": "responses two [mock:tool=get_weather {\"city\":\"Rome\"}] [mock:tool=get_time]"}
with client.responses.stream(model="mock-model", input=[user], tools=[WEATHER, TIME]) as stream:
    types = [event.type for event in stream]
    done = stream.get_final_response()
calls = [item for item in done.output if item.type == "function_call"]
assert [c.name for c in calls] == ["get_weather", "get_time"], done
assert types.count("response.function_call_arguments.done") == 2 and types[-1] == "response.completed", types
resent = [user] + [c.model_dump(exclude_none=True) for c in calls]
resent += [{"type": "function_call_output", "call_id": c.call_id, "output": out} for c, out in zip(calls, ["warm", "noon"])]
answer = client.responses.create(model="mock-model", input=resent, tools=[WEATHER, TIME], stream=False)
assert answer.output_text == "tool output: warm; noon", answer
assert answer.id.split("_")[1] == done.id.split("_")[1], (answer.id, done.id)
seen["responses_two"] = [c.call_id for c in calls]

# Chat Completions, not streamed, one call.
messages = [{"role": "user", "content": 'chat one [mock:tool=get_weather {"city":"Oslo"}]'}]
whole = client.chat.completions.create(model="mock-model", messages=messages, tools=[chat_tool(WEATHER)])
choice = whole.choices[0]
assert choice.finish_reason == "tool_calls" and choice.message.content is None, whole
call = choice.message.tool_calls[0]
assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}, call
messages += [choice.message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
reply = client.chat.completions.create(model="mock-model", messages=messages, tools=[chat_tool(WEATHER)])
assert reply.choices[0].message.content == "tool output: sunny", reply
assert reply.id.split("_")[0] == whole.id.split("_")[0], (reply.id, whole.id)
seen["chat_one"] = [call.id]

# Chat Completions, streamed, two parallel calls put together from their deltas.
messages = [{"role": "user", "content": "chat two [mock:tool=get_weather {\"city\":\"Rome\"}] [mock:tool=get_time]"}]
tools = [chat_tool(WEATHER), chat_tool(TIME)]
chunks = list(client.chat.completions.create(model="mock-model", messages=messages, tools=tools, stream=True))
assembled = {}
for chunk in chunks:
    for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
        entry = assembled.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
        entry["id"] += delta.id or ""
        entry["name"] += delta.function.name or ""
        entry["arguments"] += delta.function.arguments or ""
assert [assembled[i]["name"] for i in sorted(assembled)] == ["get_weather", "get_time"], assembled
assert chunks[-1].choices[0].finish_reason == "tool_calls", chunks[-1]
tool_calls = [
    {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
    for c in (assembled[i] for i in sorted(assembled))
]
messages.append({"role": "assistant", "content": None, "tool_calls": tool_calls})
messages += [{"role": "tool", "tool_call_id": c["id"], "content": out} for c, out in zip(tool_calls, ["warm", "noon"])]
chunks = list(client.chat.completions.create(model="mock-model", messages=messages, tools=tools, stream=True))
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert text == "tool output: warm; noon", text
seen["chat_two"] = [c["id"] for c in tool_calls]

# The OpenAI Agents SDK: an Agent whose tool the SDK runs, on both of its OpenAI models.
from agents import (  # noqa: E402
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    function_tool,
    set_tracing_disabled,
)

set_tracing_disabled(True)
ran = []


@function_tool
def get_weather(city: str) -> str:
    """The weather of a city."""
    ran.append(city)
    return f"sunny in {city}"


async def agents():
    aclient = AsyncOpenAI(base_url=base, api_key="unused", max_retries=0)
    out = {}
    for name, model in [
        ("agents_responses", OpenAIResponsesModel(model="mock-model", openai_client=aclient)),
        ("agents_chat", OpenAIChatCompletionsModel(model="mock-model", openai_client=aclient)),
    ]:
        agent = Agent(name="Forecaster", instructions="Answer with the tool.", tools=[get_weather], model=model)
        city = "Paris" if name == "agents_responses" else "Lima"
        prompt = f'{name} [mock:tool=get_weather {{"city":"{city}"}}]'
        result = await Runner.run(agent, prompt, run_config=RunConfig(tracing_disabled=True))
        assert result.final_output == f"tool output: sunny in {city}", result.final_output
        call_ids = [item.raw_item.call_id if hasattr(item.raw_item, "call_id") else item.raw_item["call_id"]
                    for item in result.new_items if item.type == "tool_call_item"]
        assert len(call_ids) == 1, result.new_items
        out[name] = call_ids
    # tool_choice "required" on the first request (the SDK resets it once the tool ran).
    model = OpenAIResponsesModel(model="mock-model", openai_client=aclient)
    settings = ModelSettings(tool_choice="required")
    agent = Agent(name="Forced", tools=[get_weather], model=model, model_settings=settings)
    result = await Runner.run(agent, 'agents_required [mock:tool=get_weather {"city":"Kyiv"}]')
    assert result.final_output == "tool output: sunny in Kyiv", result.final_output
    out["agents_required"] = [i.raw_item.call_id for i in result.new_items if i.type == "tool_call_item"]
    return out


seen.update(asyncio.run(agents()))
assert ran == ["Paris", "Lima", "Kyiv"], ran
print(json.dumps(seen))
