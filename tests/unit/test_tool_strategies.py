"""Answer formats through the strategies, on the scripted engine: a tool call
begun while thinking moves behind the closed thinking, the constraint reaches
answer phases only, and self_consistency votes on canonical calls."""
from __future__ import annotations

import dataclasses
import json

import pytest
from scripted_engine import EOS, ScriptedEngine, encode

from server.engines.vllm_engine import VLLMToolParser
from server.output_format import output_format
from server.wire import ChatCompletionRequest
from strategies.events import Answer, ChoiceDone, Thinking, ToolCallDelta
from tests.unit.harness import PREFIX, SUFFIX, P, contexts, make_plan, run_to_end

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
PARSER = VLLMToolParser(object(), "hermes")


def _fmt(**kw):
    return output_format(ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "q"}], "tools": [WEATHER], **kw}), PARSER)


def _with_output(make, fmt):
    return lambda i: dataclasses.replace(make(i), output=fmt)


def _calls(events) -> list[tuple[str, dict]]:
    out: dict[int, list] = {}
    for e in events:
        if isinstance(e, ToolCallDelta):
            entry = out.setdefault(e.index, [e.name, ""])
            entry[1] += e.arguments
    return [(name, json.loads(args)) for name, args in (out[i] for i in sorted(out))]


@pytest.mark.asyncio
async def test_a_call_begun_while_thinking_is_moved_behind_the_closed_thinking() -> None:
    call = '{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>' + EOS
    engine = ScriptedEngine(script=["I need the weather. <tool_call>{\"name\": \"get_w", call])
    plan = make_plan("single", thinking=True, max_thinking_tokens=200, min_thinking_tokens=150)
    _, events, usage = await run_to_end(engine, plan, 1, _with_output(contexts(engine, P, 400), _fmt()))
    think, answer = engine.calls
    assert think.sampling.stop == ("</think>", "<tool_call>") and think.sampling.structured is None
    # No "Wait": a call is not an early end of thinking. The answer continues the call.
    assert answer.prompt_ids == P + PREFIX + encode("I need the weather. ") + SUFFIX + encode("<tool_call>")
    thinking = "".join(e.text for e in events if isinstance(e, Thinking))
    assert thinking == "I need the weather. " and "<tool_call>" not in thinking
    assert not [e for e in events if isinstance(e, Answer) and e.text]
    assert _calls(events) == [("get_weather", {"city": "Oslo"})]
    done = [e for e in events if isinstance(e, ChoiceDone)]
    assert done[0].finish_reason == "tool_calls" and done[0].trace.thinking.tool_call is True
    assert usage.completion_tokens == len(think.output_ids) + len(answer.output_ids)


@pytest.mark.asyncio
async def test_a_call_begun_while_thinking_is_written_again_under_a_strict_constraint() -> None:
    """A strict function with auto: the constraint starts at ``<tool_call>``, so a call
    opened in the thinking is not continued as free text (that would skip the hold):
    the answer is written from the closed thinking under the calls-only constraint."""
    strict = {"type": "function", "function": {**WEATHER["function"], "strict": True}}
    fmt = _fmt(tools=[strict])
    assert fmt.structured.structural_tag and fmt.call_constraint.structural_tag != fmt.structured.structural_tag
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>' + EOS
    engine = ScriptedEngine(script=["I need the weather. <tool_call>{\"name\": \"get_w", call])
    plan = make_plan("single", thinking=True, max_thinking_tokens=200)
    _, events, _ = await run_to_end(engine, plan, 1, _with_output(contexts(engine, P, 400), fmt))
    think, answer = engine.calls
    assert think.sampling.structured is None
    assert answer.prompt_ids == P + PREFIX + encode("I need the weather. ") + SUFFIX
    assert answer.sampling.structured == fmt.call_constraint
    assert _calls(events) == [("get_weather", {"city": "Oslo"})]
    done = [e for e in events if isinstance(e, ChoiceDone)]
    assert done[0].finish_reason == "tool_calls" and done[0].trace.thinking.tool_call is True


@pytest.mark.asyncio
async def test_the_constraint_reaches_the_answer_and_not_the_thinking() -> None:
    fmt = _fmt(tool_choice={"type": "function", "function": {"name": "get_weather"}})
    engine = ScriptedEngine(script=["hmm" + EOS, '{"city": "Rome"}' + EOS])
    plan = make_plan("single", thinking=True, max_thinking_tokens=20)
    _, events, _ = await run_to_end(engine, plan, 1, _with_output(contexts(engine, P, 100), fmt))
    think, answer = engine.calls
    assert think.sampling.structured is None and answer.sampling.structured == fmt.structured
    assert _calls(events) == [("get_weather", {"city": "Rome"})]


@pytest.mark.asyncio
async def test_self_consistency_votes_on_canonical_calls() -> None:
    fmt = _fmt(tool_choice="required")
    outputs = iter(['[{"name": "get_weather", "parameters": {"city": "Oslo"}}]',
                    '[{"name":"get_weather","parameters":{"city":"Bergen"}}]',
                    '[{"parameters": {"city": "Bergen"}, "name": "get_weather"}]'])
    engine = ScriptedEngine(script=lambda prompt, sampling: next(outputs) + EOS)
    plan = make_plan("self_consistency", samples=3)
    _, events, _ = await run_to_end(engine, plan, 1, _with_output(contexts(engine, P, 100), fmt))
    assert all(c.sampling.structured == fmt.structured for c in engine.calls)
    assert _calls(events) == [("get_weather", {"city": "Bergen"})]
    done = [e for e in events if isinstance(e, ChoiceDone)][0]
    assert done.finish_reason == "tool_calls" and max(done.trace.votes.values()) == 2


@pytest.mark.parametrize("tool_choice", ["auto", "named"])
@pytest.mark.asyncio
async def test_tool_call_responses_and_chunks_match_the_wire_models(tool_choice: str) -> None:
    from server import wire
    from tests.unit.harness import parse_sse, stream_and_response

    named = {"type": "function", "function": {"name": "get_weather"}}
    fmt = _fmt(tool_choice=named) if tool_choice == "named" else _fmt()
    text = '{"city": "Oslo"}' if tool_choice == "named" else \
        'Checking. <tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    engine = ScriptedEngine(script=[text + EOS])
    plan = make_plan("single")
    _, events, usage = await run_to_end(engine, plan, 1, _with_output(contexts(engine, P, 100), fmt))
    raw, body = stream_and_response(events, usage, plan, 1)
    response = wire.ChatCompletion.model_validate(body)
    [call] = response.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
    assert response.choices[0].finish_reason == "tool_calls"
    assert response.choices[0].message.content == (None if tool_choice == "named" else "Checking. ")
    pieces = []
    for chunk in parse_sse(raw):
        wire.ChatCompletionChunk.model_validate(chunk)
        for ch in chunk["choices"]:
            pieces += ch["delta"].get("tool_calls", [])
    assert pieces[0]["id"] == call.id and pieces[0]["function"]["name"] == "get_weather"
    assert all("id" not in p for p in pieces[1:])
    assert "".join(p["function"]["arguments"] for p in pieces) == call.function.arguments
