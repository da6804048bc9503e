"""OpenAI's Responses API (``/v1/responses``) on the real engine, through the
official ``openai`` SDK: create and ``responses.stream`` (whose final response
equals the non-streamed one), a function tool round trip, ``text.format``
json_schema, reasoning summaries written by the engine, a ``store: false``
conversation carried by ``encrypted_content`` (and a tampered one refused), a
``previous_response_id`` conversation with GET and DELETE, and a disconnect
that aborts the engine work.

The model is the tiny default (SmolLM2-135M): token counts are small, and what
the model writes is not judged, only what the server makes of it.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from .helpers import EVERY_STRATEGY, UNFINISHED, engine_drains, reaches, untimed

pytestmark = pytest.mark.integration

THINK = {"reasoning": {"effort": "low"}, "max_output_tokens": 160}
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                          "required": ["city"], "additionalProperties": False}}


@pytest.fixture(scope="module")
def client(live) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.v1, api_key=live.api_key, max_retries=0, timeout=300)


def _items(output: list[Any]) -> list[dict[str, Any]]:
    """Output items as the next turn's input (the SDK's parse fields and all)."""
    return [o.to_dict(exclude_unset=True) for o in output]


def _normal(output: list[Any]) -> list[dict[str, Any]]:
    """Output items without what differs from one response to the next (ids, nonces, the SDK's parse)."""
    out = []
    for d in _items(output):
        d = {k: v for k, v in d.items() if k not in ("id", "encrypted_content", "parsed_arguments")}
        if d["type"] == "message":
            d["content"] = [{k: v for k, v in c.items() if k != "parsed"} for c in d["content"]]
        out.append(d)
    return out


def _comparable(trace: dict[str, Any]) -> dict[str, Any]:
    """A trace without its wall times and the summary's prefix-cache hits, which a second
    run of the same request has more of."""
    trace = untimed(trace)
    summary = {k: v for k, v in trace.get("summary", {}).items() if k != "cached_tokens"}
    return {**trace, "summary": summary} if summary else trace


def _usage(u: Any) -> dict[str, Any]:
    d = u.to_dict()
    d["input_tokens_details"].pop("cached_tokens")
    return d


def created_and_streamed(client: openai.OpenAI, body: dict[str, Any], attempts: int = 3) -> tuple[Any, Any, list]:
    """The same request once created and once streamed; the pair is compared when the
    traces agree (the engine computed the same thing) and run again only when they
    show the engine itself diverged (vLLM's CPU build is not batch invariant), as
    tests/integration/helpers.py ``plain_and_streamed`` does for chat."""
    seen = []
    for _ in range(attempts):
        full = client.responses.create(**body)
        with client.responses.stream(**body) as stream:
            events = list(stream)
        # The SDK's get_final_response() knows only response.completed; an incomplete
        # response (cut at max_output_tokens) is the response of its last event.
        final = events[-1].response
        if _comparable(full.model_extra["reasoning_trace"]) != _comparable(final.model_extra["reasoning_trace"]):
            seen.append((full.model_extra["reasoning_trace"], final.model_extra["reasoning_trace"]))
            continue
        return full, final, events
    raise AssertionError(f"the engine never computed the same run twice in {attempts} attempts: {seen}")


def test_create_plain(live, client: openai.OpenAI) -> None:
    r = client.responses.create(model=live.model, input="Name the capital of France.", max_output_tokens=24)
    assert r.id.startswith("resp_") and r.object == "response" and r.model == live.model
    assert r.status in ("completed", "incomplete") and r.output[-1].type == "message"
    assert r.output_text == r.output[-1].content[0].text
    u = r.usage
    assert u.total_tokens == u.input_tokens + u.output_tokens and 0 < u.output_tokens <= 24
    assert r.model_extra["reasoning_plan"]["strategy"] and "reasoning_trace" in r.model_extra


# OpenAI's own fields (none, an effort, a summary), then ponder's keys in the same
# reasoning object with a small plan of every strategy.
STREAM_CASES = {"plain": {}, "thinking": THINK,
                "summary": {"reasoning": {"effort": "low", "summary": "auto"}, "max_output_tokens": 96},
                **{name: {"reasoning": plan, "max_output_tokens": 96} for name, plan in EVERY_STRATEGY.items()}}


@pytest.mark.parametrize("fields", list(STREAM_CASES.values()), ids=list(STREAM_CASES))
def test_the_stream_equals_the_response(live, client: openai.OpenAI, fields: dict) -> None:
    """Seeded at T 0.8 so the parallel strategies' candidates differ; run once first
    so both compared runs read every phase's prefix from the cache (as chat's test does)."""
    body = {"model": live.model, "input": "What is 12 times 3?", "temperature": 0.8, "max_output_tokens": 48,
            "extra_body": {"seed": 9}, **fields}
    client.responses.create(**body)
    full, final, events = created_and_streamed(client, body)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[1].type == "response.in_progress"
    assert events[-1].type in ("response.completed", "response.incomplete")
    assert _normal(final.output) == _normal(full.output)
    assert _usage(final.usage) == _usage(full.usage) and final.status == full.status
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == full.output_text


def test_a_function_tool_round_trip(live, client: openai.OpenAI) -> None:
    ask = {"model": live.model, "tools": [WEATHER], "max_output_tokens": 120, "temperature": 0.0}
    first = client.responses.create(input="What is the weather in Paris right now?", tool_choice="required", **ask)
    calls = [o for o in first.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather" and calls[0].call_id
    assert set(json.loads(calls[0].arguments)) == {"city"}
    follow = [{"role": "user", "content": "What is the weather in Paris right now?"}, *_items(first.output),
              *[{"type": "function_call_output", "call_id": c.call_id, "output": "18 C and sunny"} for c in calls]]
    second = client.responses.create(input=follow, tool_choice="none", **ask)
    assert second.output[-1].type == "message" and second.usage.input_tokens > first.usage.input_tokens


def test_text_format_json_schema(live, client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
              "additionalProperties": False}
    r = client.responses.create(model=live.model, input="What is 12 times 3? Reply in JSON.", max_output_tokens=40,
                                text={"format": {"type": "json_schema", "name": "answer", "schema": schema,
                                                 "strict": True}})
    if r.status == "completed":
        jsonschema.validate(json.loads(r.output_text), schema)
    assert r.text.format.type == "json_schema"


def test_a_summary_is_written_after_the_thinking(live, client: openai.OpenAI) -> None:
    r = client.responses.create(model=live.model, input="Is 17 a prime number?",
                                reasoning={"effort": "low", "summary": "auto"}, max_output_tokens=160)
    reasoning = r.output[0]
    assert reasoning.type == "reasoning" and reasoning.content and reasoning.content[0].text
    cost = r.model_extra["reasoning_trace"]["summary"]
    assert cost["tokens"] >= 1 and cost["prompt_tokens"] > r.usage.input_tokens
    if "".join(s.text for s in reasoning.summary).strip():
        assert reasoning.summary[0].type == "summary_text"
    thinking = r.model_extra["reasoning_trace"]["thinking"]["tokens"]
    assert r.usage.output_tokens_details.reasoning_tokens >= thinking + cost["tokens"]


def test_a_store_false_conversation_carries_its_reasoning(live, client: openai.OpenAI) -> None:
    first = client.responses.create(model=live.model, input="What is 12 times 3?", store=False,
                                    include=["reasoning.encrypted_content"], **THINK)
    sealed = first.output[0]
    assert sealed.type == "reasoning" and sealed.encrypted_content
    assert sealed.content[0].text not in sealed.encrypted_content
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    turn = [{"role": "user", "content": "What is 12 times 3?"}, *_items(first.output),
            {"role": "user", "content": "Are you sure?"}]
    second = client.responses.create(model=live.model, input=turn, store=False,
                                     include=["reasoning.encrypted_content"], **THINK)
    assert second.status in ("completed", "incomplete") and second.usage.input_tokens > first.usage.input_tokens
    tampered = [dict(i) for i in turn]
    token = tampered[1]["encrypted_content"]
    tampered[1]["encrypted_content"] = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(model=live.model, input=tampered, store=False, **THINK)
    assert exc.value.body["code"] == "invalid_encrypted_content" and exc.value.body["param"] == \
        "input[1].encrypted_content"


def test_a_previous_response_id_conversation(live, client: openai.OpenAI) -> None:
    first = client.responses.create(model=live.model, input="Name the capital of France.", **THINK)
    second = client.responses.create(model=live.model, input="And of Italy?", previous_response_id=first.id, **THINK)
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens + len("And of Italy?") // 8
    got = client.responses.retrieve(second.id)
    assert got.id == second.id and _normal(got.output) == _normal(second.output)
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=live.model, input="And Spain?", previous_response_id=first.id, **THINK)


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.asyncio
async def test_disconnect_aborts_engine_work(live, stream: bool) -> None:
    body = {"model": live.model, "max_output_tokens": 400, "temperature": 1.0, "stream": stream,
            "input": "Write a long story about a dragon who learns to bake bread.",
            "reasoning": {"strategy": "self_consistency", "samples": 4, "early_stop": False}}
    async with httpx.AsyncClient(timeout=60) as http:
        if stream:
            async with http.stream("POST", live.base_url + "/v1/responses", json=body, headers=live.headers()) as r:
                assert r.status_code == 200
                lines = r.aiter_lines()  # kept open: leaving an `async for` would close it
                while not (await lines.__anext__()).startswith("event: response.in_progress"):
                    pass
                assert await reaches(live, UNFINISHED, 4)
        else:
            task = asyncio.ensure_future(http.post(live.base_url + "/v1/responses", json=body,
                                                   headers=live.headers()))
            assert await reaches(live, UNFINISHED, 4, unless=(task,)) and not task.done()
            task.cancel()  # closes the connection
            await asyncio.gather(task, return_exceptions=True)
    assert await engine_drains(live, within=1.0)
