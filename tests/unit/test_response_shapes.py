"""Every implemented strategy's response and stream have the shapes the wire
models declare (server/wire.py), and the joined stream equals the response.

Each strategy runs a small plan on the scripted engine (the setups of its own
test module); the events are folded by the server's encoders
(server/chat_encode.py) and the folded ``chat.completion`` and every SSE
``chat.completion.chunk`` are validated by ``ChatCompletion`` and
``ChatCompletionChunk``. The wire models forbid undeclared fields at every
level, so a field the encoder adds without declaring it fails here.
"""
from __future__ import annotations

import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from server import wire
from server.chat_encode import ChunkEncoder, ResponseMeta
from server.errors import APIError
from strategies import registry
from strategies.events import Event, Thinking
from strategies.ledger import Usage
from strategies.plan import Plan
from tests.scripted_engine import EOS, ScriptedEngine
from tests.unit import (
    test_auto,
    test_beam,
    test_budget_forcing,
    test_parallel,
    test_revision,
    test_single,
    test_tool_use,
)
from tests.unit.harness import (
    CLOSE,
    FIELDS,
    P,
    contexts,
    join_stream,
    make_plan,
    parse_sse,
    run_to_end,
    stream_and_response,
    text_of,
)

Ran = tuple[list[Event], Usage]


@dataclass(frozen=True)
class Shape:
    plan: Plan
    n: int
    run: Callable[[], Awaitable[Ran]]


async def _events(coro: Awaitable[tuple[Any, list[Event], Usage]]) -> Ran:
    _, events, usage = await coro
    return events, usage


def _setup(module: Any, setup: Any) -> Shape:
    """A Setup of test_single, test_budget_forcing, test_parallel or test_beam (their ``run``)."""
    return Shape(setup.plan, setup.n, lambda: _events(module.run(setup)))


def _revision(case: test_revision.Case) -> Shape:
    return Shape(case.plan, 1, lambda: _events(test_revision.run(case.plan, case.outputs)))


def _auto(case: test_auto.Case) -> Shape:
    return Shape(case.plan, 1, lambda: _events(test_auto.run(case.plan, case.probes)))


def _tool_use() -> Shape:
    plan = make_plan("tool_use", thinking=True, max_tokens=200)

    async def run() -> Ran:
        engine = ScriptedEngine(script=["print(6 * 7)\n```", ["fine", [CLOSE]], "42" + EOS])
        return await _events(run_to_end(engine, plan, 1, contexts(engine, P, 200, code=test_tool_use.Runner("42\n"))))
    return Shape(plan, 1, run)


def _beam() -> Shape:
    plan = test_beam.BEAM
    # A fresh setup per run: it counts how often each prompt was asked.
    return Shape(plan, 1, lambda: _events(test_beam.run(test_beam.BeamSetup(
        plan, test_parallel.says(""), p_yes=test_beam.P_YES, grow=test_beam.tree))))


SHAPES: dict[str, Shape] = {
    "single-thinking-off": _setup(test_single, test_single.SETUPS["thinking-off"]),
    "single-thinking": _setup(test_single, test_single.SETUPS["model-closes-word-tag"]),
    "single-logprobs": _setup(test_single, test_single.SETUPS["logprobs"]),
    "single-n3": _setup(test_single, test_single.SETUPS["n3"]),
    "budget_forcing-minimum": _setup(test_budget_forcing, test_budget_forcing.CASES["min-word-tag"][0]),
    "budget_forcing-cap-n2": _setup(test_budget_forcing, test_budget_forcing.EQUIV["two-choices"]),
    "self_consistency-majority": _setup(test_parallel, test_parallel.SETUPS["sc-majority-thinking"]),
    "self_consistency-weighted-logprobs": _setup(test_parallel, test_parallel.SETUPS["sc-weighted-logprobs"]),
    "self_consistency-stream-candidates-n2": _setup(test_parallel, test_parallel.SETUPS["sc-stream-candidates-n2"]),
    "best_of_n-confidence": _setup(test_parallel, test_parallel.SETUPS["bon-confidence"]),
    "best_of_n-self-judge": _setup(test_parallel, test_parallel.SETUPS["bon-self-judge-thinking"]),
    "revision-thinking-first": _revision(test_revision.CASES["thinking-first"]),
    "beam_search": _beam(),
    "tool_use-react": _tool_use(),
    "auto-medium": _auto(test_auto.CASES["majority-medium"]),
    "auto-hard": _auto(test_auto.CASES["split-hard"]),
}


def test_every_implemented_strategy_has_a_shape_case() -> None:
    assert {shape.plan.strategy for shape in SHAPES.values()} == set(registry.IMPLEMENTED)


@pytest.mark.parametrize("include_reasoning", [True, False], ids=["reasoning", "excluded"])
@pytest.mark.parametrize("name", list(SHAPES), ids=list(SHAPES))
@pytest.mark.asyncio
async def test_response_and_chunks_match_the_wire_models(name: str, include_reasoning: bool) -> None:
    shape = SHAPES[name]
    events, usage = await shape.run()
    raw, body = stream_and_response(events, usage, shape.plan, shape.n, include_reasoning)

    # -- the shapes: every field declared, every declared type right ----------
    response = wire.ChatCompletion.model_validate(body)
    assert len(response.choices) == shape.n
    chunks = parse_sse(raw)
    for chunk in chunks:
        wire.ChatCompletionChunk.model_validate(chunk)
    assert chunks[0]["reasoning_plan"] == body["reasoning_plan"] == shape.plan.public()
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == body["usage"]
    assert body["usage"]["completion_tokens"] == usage.completion_tokens

    # -- the joined stream is the response ---------------------------------------
    # Candidates' live thinking is tagged; a client that ignores tagged chunks gets the response.
    tagged = [c for c in chunks if c["choices"] and "candidate" in c["choices"][0]]
    assert bool(tagged) is (include_reasoning and any(
        isinstance(e, Thinking) and e.candidate is not None for e in events))
    joined = join_stream([c for c in chunks if c not in tagged], shape.n)
    for choice in body["choices"]:
        i = choice["index"]
        j, msg = joined[i], choice["message"]
        assert j["role"] == msg["role"] == "assistant"
        assert j["content"] == msg["content"] != ""
        assert j["finish"] == [choice["finish_reason"]]
        assert j["trace"] == choice["reasoning_trace"]
        assert j["trace"]["strategy"] == shape.plan.strategy
        assert j["logprobs"] == (choice["logprobs"] or {}).get("content")
        if include_reasoning:
            for f in FIELDS:
                assert j[f] == (msg[f] or "") == text_of(events, Thinking, i, untagged=True)
        else:
            assert j["reasoning_keys"] == 0
            assert not any(f in msg for f in FIELDS)


# -- the wire models forbid what they do not declare ----------------------------


def _models(cls: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[type[BaseModel]]:
    """``cls`` and every model its fields hold, however nested (lists, unions, Optional)."""
    seen = set() if seen is None else seen
    if cls in seen:
        return seen
    seen.add(cls)
    stack: list[Any] = [f.annotation for f in cls.model_fields.values()]
    while stack:
        tp = stack.pop()
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            _models(tp, seen)
        else:
            stack.extend(typing.get_args(tp))
    return seen


RESPONSES = {"chat.completion": wire.ChatCompletion, "chat.completion.chunk": wire.ChatCompletionChunk,
             "error": wire.ErrorResponse}


@pytest.mark.parametrize("model", list(RESPONSES.values()), ids=list(RESPONSES))
def test_every_nested_wire_model_forbids_undeclared_fields(model: type[BaseModel]) -> None:
    models = _models(model)
    assert len(models) > 1 or model is wire.ErrorResponse
    assert {m.__name__: m.model_config.get("extra") for m in models} == {m.__name__: "forbid" for m in models}


# Where an undeclared field is slipped in: a path of keys / indexes into the body.
EXTRA_AT = {
    "response": (wire.ChatCompletion, "response", ()),
    "response-choice": (wire.ChatCompletion, "response", ("choices", 0)),
    "response-message": (wire.ChatCompletion, "response", ("choices", 0, "message")),
    "response-logprob": (wire.ChatCompletion, "response", ("choices", 0, "logprobs", "content", 0)),
    "response-usage": (wire.ChatCompletion, "response", ("usage",)),
    "response-usage-engine": (wire.ChatCompletion, "response", ("usage", "engine")),
    "chunk": (wire.ChatCompletionChunk, "chunk", ()),
    "chunk-choice": (wire.ChatCompletionChunk, "chunk", ("choices", 0)),
    "chunk-delta": (wire.ChatCompletionChunk, "chunk", ("choices", 0, "delta")),
    "chunk-logprob-top": (wire.ChatCompletionChunk, "chunk", ("choices", 0, "logprobs", "content", 0,
                                                               "top_logprobs", 0)),
}


@pytest.mark.parametrize(("model", "which", "path"), list(EXTRA_AT.values()), ids=list(EXTRA_AT))
@pytest.mark.asyncio
async def test_an_undeclared_field_fails_validation(model: type[BaseModel], which: str,
                                                    path: tuple[Any, ...]) -> None:
    shape = SHAPES["single-logprobs"]
    events, usage = await shape.run()
    raw, body = stream_and_response(events, usage, shape.plan, shape.n)
    # An answer chunk with logprobs (the response has them too).
    chunk = next(c for c in parse_sse(raw) if c["choices"] and c["choices"][0]["logprobs"])
    data = body if which == "response" else chunk
    model.model_validate(data)  # as the encoder made it
    target: Any = data
    for key in path:
        target = target[key]
    target["undeclared"] = 1
    with pytest.raises(ValidationError, match="undeclared"):
        model.model_validate(data)


def test_the_error_frame_matches_the_wire_model() -> None:
    meta = ResponseMeta(id="chatcmpl-1", model="m", n=1, plan={}, reasoning_fields=FIELDS, include_reasoning=True)
    frame = ChunkEncoder(meta).error(APIError(504, "the request passed its deadline", code="deadline_exceeded"))
    (data, done) = [f for f in frame.split(b"\n\n") if f]
    assert done == b"data: [DONE]" and data.startswith(b"data: ")
    wire.ErrorResponse.model_validate_json(data[len(b"data: "):])
