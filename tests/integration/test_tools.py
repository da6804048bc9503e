"""Tool calls and structured output on the real engine, through the OpenAI SDK.

The default model (SmolLM2-135M) knows no tools; ``tool_choice: "required"``
and a named function constrain its answer with vLLM's structured outputs, so
it returns a valid call every time, which is what makes these tests exact.
``auto`` returns whatever the model writes, and the test checks it is parsed
correctly either way.
"""
from __future__ import annotations

import json
import re

import httpx
import jsonschema
import openai
import pytest

from .sse import post_stream

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                   "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Local time in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                   "required": ["city"], "additionalProperties": False}}}
TOOLS = [WEATHER, TIME]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}

# Every strategy that honours tool calls, as a client selects it.
STRATEGIES = {
    "single": {},
    "budget_forcing": {"reasoning_effort": "low"},
    "self_consistency": {"extra_body": {"reasoning": {"strategy": "self_consistency", "samples": 3}}},
}


def _check_calls(calls, names=tuple(SCHEMAS)) -> None:
    assert calls
    for c in calls:
        assert c.id.startswith("call_") and c.type == "function" and c.function.name in names
        jsonschema.validate(json.loads(c.function.arguments), SCHEMAS[c.function.name])


def _stream_calls(client: openai.OpenAI, **kw) -> tuple[list[dict], str | None, str]:
    """The tool calls a streamed response assembles, as the SDK's users accumulate them."""
    calls: dict[int, dict] = {}
    finish, content = None, ""
    for chunk in client.chat.completions.create(stream=True, **kw):
        for ch in chunk.choices:
            content += ch.delta.content or ""
            for d in ch.delta.tool_calls or ():
                entry = calls.setdefault(d.index, {"id": None, "name": None, "arguments": ""})
                if d.id:
                    assert entry["id"] is None, "id is sent once, on a call's first piece"
                    entry["id"] = d.id
                if d.function and d.function.name:
                    entry["name"] = d.function.name
                entry["arguments"] += (d.function.arguments or "") if d.function else ""
            finish = ch.finish_reason or finish
    return [calls[i] for i in sorted(calls)], finish, content


# Every strategy once, and both ways of forcing a call (a pair each, not every pair:
# how the call is forced and which strategy runs are independent steps of the plan).
@pytest.mark.parametrize("strategy,tool_choice", [("single", "required"), ("budget_forcing", "named"),
                                                  ("self_consistency", "required"), ("single", "named")])
def test_sdk_tool_loop(client: openai.OpenAI, live, strategy: str, tool_choice: str) -> None:
    """Tools defined, a call returned, the client answers with a tool message, the model answers."""
    choice = NAMED if tool_choice == "named" else "required"
    kw = {"model": live.model, "tools": TOOLS, "tool_choice": choice, "max_tokens": 160, "temperature": 0,
          **STRATEGIES[strategy]}
    r = client.chat.completions.create(messages=ASK, **kw)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls", r
    _check_calls(msg.tool_calls, ("get_weather",) if tool_choice == "named" else tuple(SCHEMAS))
    assert msg.content is None
    assert r.model_extra["reasoning_plan"]["strategy"] == strategy if strategy != "budget_forcing" else True
    if strategy == "budget_forcing":  # it thought first, and the call is not in the thinking
        assert msg.model_extra.get("reasoning_content")
        assert "<tool_call>" not in msg.model_extra["reasoning_content"]

    streamed, finish, content = _stream_calls(client, messages=ASK, **kw)
    assert finish == "tool_calls" and content == ""
    assert [(c["name"], json.loads(c["arguments"])) for c in streamed] == [
        (c.function.name, json.loads(c.function.arguments)) for c in msg.tool_calls]

    follow = [*ASK, msg.model_dump(exclude_none=True),
              *({"role": "tool", "tool_call_id": c.id, "content": "18 C and sunny"} for c in msg.tool_calls)]
    answer = client.chat.completions.create(messages=follow, **{**kw, "tool_choice": "none"})
    assert answer.choices[0].message.content and not answer.choices[0].message.tool_calls
    assert answer.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_auto_returns_what_the_model_writes_correctly_parsed(client: openai.OpenAI, live, stream: bool) -> None:
    kw = {"model": live.model, "messages": ASK, "tools": TOOLS, "max_tokens": 96, "temperature": 0}
    if stream:
        calls, finish, content = _stream_calls(client, **kw)
    else:
        r = client.chat.completions.create(**kw)
        m = r.choices[0].message
        calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                 for c in m.tool_calls or ()]
        finish, content = r.choices[0].finish_reason, m.content or ""
    if calls:
        assert finish == "tool_calls"
        for c in calls:
            assert c["id"].startswith("call_") and c["name"] in SCHEMAS
            json.loads(c["arguments"])
    else:
        assert finish in ("stop", "length") and content
        # Anything left as content did not parse as a call.
        if "<tool_call>" in content:
            body = content.split("<tool_call>", 1)[1].split("</tool_call>", 1)[0]
            with pytest.raises(ValueError):
                json.loads(body)["name"]  # noqa: B018


def test_a_conversation_with_earlier_calls_and_reasoning_sent_back(client: openai.OpenAI, live) -> None:
    """Multi-turn: an assistant turn with tool_calls and reasoning_content, tool results, then a new question."""
    history = [*ASK,
               {"role": "assistant", "content": None, "reasoning_content": "I should look it up.",
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"},
               {"role": "assistant", "content": "It is 18 C and sunny in Paris.", "reasoning": "Easy."},
               {"role": "user", "content": "And the time there?"}]
    r = client.chat.completions.create(model=live.model, messages=history, tools=TOOLS,
                                       tool_choice={"type": "function", "function": {"name": "get_time"}},
                                       max_tokens=64, temperature=0, reasoning_effort="minimal")
    _check_calls(r.choices[0].message.tool_calls, ("get_time",))


def test_parallel_tool_calls_false_gives_one_call(client: openai.OpenAI, live) -> None:
    r = client.chat.completions.create(model=live.model, messages=ASK, tools=TOOLS, tool_choice="required",
                                       parallel_tool_calls=False, max_tokens=96, temperature=0)
    assert len(r.choices[0].message.tool_calls) == 1


SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24},
                                           "sunny": {"type": "boolean"}},
          "required": ["city", "sunny"], "additionalProperties": False}
JSON_STRATEGIES = {
    "single": {},
    "budget_forcing": {"reasoning_effort": "low"},
    "self_consistency": {"reasoning": {"strategy": "self_consistency", "samples": 3}},
    "best_of_n": {"reasoning": {"strategy": "best_of_n", "samples": 3}},
}


@pytest.mark.parametrize("strategy", list(JSON_STRATEGIES))
def test_response_format_json_schema_validates(client: openai.OpenAI, live, strategy: str) -> None:
    rf = {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True}}
    r = client.chat.completions.create(model=live.model, messages=ASK, response_format=rf, max_tokens=128,
                                       temperature=0.7, seed=5, extra_body=JSON_STRATEGIES[strategy])
    assert r.choices[0].finish_reason == "stop", r
    jsonschema.validate(json.loads(r.choices[0].message.content), SCHEMA)
    if strategy == "budget_forcing":  # the thinking stays free text
        assert r.choices[0].message.model_extra.get("reasoning_content")


def test_response_format_json_object_streams_json(live) -> None:
    ask = [{"role": "user", "content": 'Give me a JSON object with the key "ok" set to true.'}]
    body = {"model": live.model, "messages": ask, "response_format": {"type": "json_object"}, "max_tokens": 96,
            "temperature": 0, "stream": True}
    s = post_stream(live.base_url, body, live.headers())
    assert s.finish_reasons()[0] == ["stop"]
    assert isinstance(json.loads(s.joined(1)[0]["content"]), dict)


@pytest.mark.parametrize("reasoning", [{"strategy": "revision", "rounds": 1},
                                       {"strategy": "beam_search", "beam_width": 2}, {"strategy": "auto"}])
@pytest.mark.parametrize("what", ["tools", "response_format"])
def test_strategies_without_formats_refuse_them(live, reasoning: dict, what: str) -> None:
    extra = {"tools": TOOLS} if what == "tools" else {"response_format": {"type": "json_object"}}
    r = httpx.post(live.v1 + "/chat/completions", headers=live.headers(), timeout=60,
                   json={"model": live.model, "messages": ASK, "reasoning": reasoning, **extra})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "reasoning.strategy" and "self_consistency" in err["message"]


@pytest.mark.parametrize("extra,param", [
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 3}}}]},
     "tools[0].function.parameters"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
])
def test_bad_tool_fields_are_400_naming_them(live, extra: dict, param: str) -> None:
    r = httpx.post(live.v1 + "/chat/completions", headers=live.headers(), timeout=60,
                   json={"model": live.model, "messages": ASK, **extra})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


@pytest.mark.parametrize("so,check", [
    ({"choice": ["sunny", "rainy", "snowy"]}, lambda text: text in ("sunny", "rainy", "snowy")),
    ({"regex": "[0-9]{3}-[0-9]{4}"}, lambda text: re.fullmatch("[0-9]{3}-[0-9]{4}", text)),
    ({"json": SCHEMA}, lambda text: jsonschema.validate(json.loads(text), SCHEMA) is None),
])
def test_vllm_structured_outputs_constrain_the_answer(client: openai.OpenAI, live, so: dict, check) -> None:
    """vLLM's ``structured_outputs`` field, as a vLLM client sends it (extra_body), on
    the answer phase of a plan with thinking (the thinking stays free text)."""
    r = client.chat.completions.create(model=live.model, messages=ASK, max_tokens=96, temperature=0.8, seed=3,
                                       extra_body={"structured_outputs": so,
                                                   "reasoning": {"max_thinking_tokens": 24}})
    text = r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop" and check(text), r
    assert r.choices[0].message.model_extra.get("reasoning_content")


@pytest.mark.parametrize("extra,param", [
    ({"structured_outputs": {"regex": "[0-9"}}, "structured_outputs"),
    ({"structured_outputs": {"grammar": "root ::= nonsense ::="}}, "structured_outputs"),
    ({"guided_json": {"type": "object"}}, "guided_json"),
    ({"functions": [{"name": "f"}]}, "functions"),
])
def test_what_the_engine_cannot_constrain_or_ponder_does_not_know_is_a_400(live, extra: dict, param: str) -> None:
    r = httpx.post(live.v1 + "/chat/completions", headers=live.headers(), timeout=60,
                   json={"model": live.model, "messages": ASK, "max_tokens": 8, **extra})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.json()


def test_auto_with_a_strict_function_holds_its_arguments_to_the_schema(client: openai.OpenAI, live) -> None:
    """``strict: true`` with ``tool_choice: "auto"``: once the model opens a call, its
    arguments follow the schema (vLLM's structural tag). The default model never calls
    on its own, so ``logit_bias`` pushes it to write ``<tool_call>``; the schema allows
    one city no model would pick; one call per answer, so the call closes. Control: the
    same request without ``strict``."""
    zz = {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Zzyzx"]}},
                       "required": ["city"], "additionalProperties": False}}}
    from transformers import AutoTokenizer

    from loadtests.common import model_folder
    marker = AutoTokenizer.from_pretrained(model_folder()).encode("<tool_call>", add_special_tokens=False)
    bias = {str(i): 8 for i in marker}
    got = {}
    for strict in (True, False):
        tool = {**zz, "function": {**zz["function"], "strict": strict}}
        r = client.chat.completions.create(model=live.model, messages=ASK, tools=[tool], max_tokens=100, n=4,
                                           temperature=0.8, seed=1, logit_bias=bias, parallel_tool_calls=False)
        got[strict] = [[json.loads(c.function.arguments) for c in ch.message.tool_calls or ()] for ch in r.choices]
    assert sum(1 for calls in got[True] if calls) >= 2, got
    assert all(args == {"city": "Zzyzx"} for calls in got[True] for args in calls), got
    assert not any(args == {"city": "Zzyzx"} for calls in got[False] for args in calls), got
