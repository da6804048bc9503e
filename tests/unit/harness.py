"""What the strategy tests share: the conversation's ids, run contexts, running a
plan through :class:`strategies.runner.RunPlan`, reading its events, and the two
folds (SSE stream and response) over them.

Strategy-specific scripts and engines stay in their test modules.
"""
from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, TypeVar

import orjson
import pytest
from scripted_engine import EOS_ID, Call, ScriptedEngine, encode, word

from server.chat_encode import ChunkEncoder, ResponseFold, ResponseMeta
from strategies import registry
from strategies.auto import AutoOptions
from strategies.beam import BeamOptions
from strategies.best_of_n import BestOfNOptions
from strategies.context import RunContext
from strategies.engine import Sampling
from strategies.events import ChoiceDone, Event
from strategies.ledger import Ledger, Usage
from strategies.plan import Forcing, NoOptions, Plan
from strategies.revision import RevisionOptions
from strategies.runner import RunPlan
from strategies.self_consistency import SelfConsistencyOptions
from strategies.single import SingleOptions
from strategies.tool_use import ToolUseOptions
from strategies.tools import CodeRunner
from strategies.trace import to_json

E = TypeVar("E", bound=ScriptedEngine)


def chat(question: str) -> tuple[int, ...]:
    """The prompt ids of a one-question conversation, assistant turn opened."""
    return encode(f"<|user|>{question}\n<|assistant|>")


def followup(question: str) -> tuple[int, ...]:
    """The scripted chat template's follow-up turn (``RunContext.followup``)."""
    return encode(f"\n<|user|>{question}\n<|assistant|>")


P = chat("What is 6*7?")
PREFIX = encode("<think>\n")
SUFFIX = encode("\n</think>\n\n")
CLOSE = word("</think>")  # one token, as in models with a special end-of-thinking token
THINK_PROMPT = P + PREFIX
RID = "req"
# The engine priority of the request (server/admission.py engine_priority); not 0,
# so a phase that built its sampling afresh instead of from the request's would show.
PRIORITY = 7


# -- plans ----------------------------------------------------------------------

# What a strategy's options are in these tests unless a test says otherwise:
# everything off or minimal, so a test names what it exercises.
OPTION_DEFAULTS: dict[str, tuple[type, dict[str, Any]]] = {
    "single": (SingleOptions, {}),
    "budget_forcing": (SingleOptions, {}),
    "self_consistency": (SelfConsistencyOptions, dict(
        samples=1, scorer=None, vote="majority", early_stop=False, window=0, stop_rule="esc",
        stop_threshold=0.95, share_prefix=False, stream_candidates=False)),
    "best_of_n": (BestOfNOptions, dict(samples=1, scorer="confidence", judge_question="", share_prefix=False,
                                       stream_candidates=False)),
    "revision": (RevisionOptions, dict(rounds=0, critique_prompt="", revise_prompt="", critique_ok="")),
    "beam_search": (BeamOptions, dict(beam_width=1, max_steps=1, expansions=2, step_tokens=64, step_delimiter="\n\n",
                                      dvts=False, judge_question="")),
    "tool_use": (ToolUseOptions, dict(mode="react", max_tool_calls=2, lead="```python\n", next_code="```python",
                                      code_end="```", observation="\nOutput: {output}\n", max_observation_chars=200)),
    "auto": (AutoOptions, dict(probe_samples=3, probe_tokens=48, easy_agreement=1.0, medium_agreement=0.5,
                               share_prefix=False, levels=())),
}
_FORCING = {"continuation": "Wait", "max_continuations": 0, "wrapup": "", "nudge": "", "nudge_before": 0}


def make_plan(strategy: str = "single", **fields: Any) -> Plan:
    """A Plan for a strategy test: shared fields and the s1 phrases go to the plan,
    the rest to the strategy's typed options (with OPTION_DEFAULTS for what is not given)."""
    shared = {k: fields.pop(k) for k in list(fields) if k in Plan.__dataclass_fields__}
    forcing = Forcing(**{**_FORCING, **{k: fields.pop(k) for k in list(fields) if k in _FORCING}})
    shared.setdefault("max_tokens", 1024)
    if strategy in OPTION_DEFAULTS:
        cls, defaults = OPTION_DEFAULTS[strategy]
        values = {**defaults, **fields}
        if cls is AutoOptions:
            values["level_weight"] = max([1, *(registry.weight(p) for _, p in values["levels"])])
        options = cls(**values)
    else:
        assert not fields, f"{strategy} has no options {sorted(fields)}"
        options = NoOptions()
    return Plan(strategy=strategy, options=options, forcing=forcing, **shared)


def option(plan: Plan, name: str) -> Any:
    """A field of the plan or of its options."""
    return getattr(plan, name) if hasattr(plan, name) else getattr(plan.options, name)


def vary(plan: Plan, **changes: Any) -> Plan:
    """``plan`` with ``changes``, each to the plan, its forcing phrases or its options
    (as :func:`make_plan` splits them): ``dataclasses.replace`` for a whole plan."""
    shared = {k: changes.pop(k) for k in list(changes) if k in Plan.__dataclass_fields__}
    forcing = {k: changes.pop(k) for k in list(changes) if k in _FORCING}
    options = plan.options
    if changes:
        if isinstance(options, AutoOptions) and "levels" in changes:
            changes["level_weight"] = max([1, *(registry.weight(p) for _, p in changes["levels"])])
        options = dataclasses.replace(options, **changes)  # type: ignore[type-var]
    return dataclasses.replace(plan, options=options, forcing=dataclasses.replace(plan.forcing, **forcing),
                               **shared)


# -- running a plan -----------------------------------------------------------


def contexts(engine: ScriptedEngine, prompt: tuple[int, ...], max_tokens: int, *, seed: int | None = None,
             budget: int | None = None, followup: Callable[[str], tuple[int, ...]] | None = None,
             code: CodeRunner | None = None, **client: Any) -> Callable[[int], RunContext]:
    """``make_ctx`` for :class:`RunPlan`: choice ``i`` samples with the client's
    ``seed + i`` (none when it has no seed) and other ``client`` Sampling fields."""
    client = {"priority": PRIORITY, **client}

    def make(i: int) -> RunContext:
        sampling = Sampling(max_tokens=max_tokens, seed=None if seed is None else seed + i, **client)
        return RunContext(engine, prompt, PREFIX, SUFFIX, sampling, RID, i, Ledger(len(prompt), budget),
                          followup=followup, code=code)
    return make


async def run_to_end(engine: E, plan: Plan, n: int, make: Callable[[int], RunContext]
              ) -> tuple[E, list[Event], Usage]:
    """Run ``plan`` for ``n`` choices to the end: the engine, every event, and the usage."""
    events: list[Event] = []
    run = RunPlan(plan, n, make)
    async with run as items:
        async for item in items:
            assert not run.done, "nothing may follow the end"
            events.append(item)
    usage = run.result
    assert engine.in_flight == 0
    # Every phase (continuation, candidate, judge, revision turn, beam step) keeps
    # the request's engine priority, so its work is scheduled as the request's.
    priority = make(0).sampling.priority
    assert {c.sampling.priority for c in engine.calls} <= {priority}
    return engine, events, usage


async def events_of(plan: Plan, n: int, make: Callable[[int], RunContext]) -> AsyncGenerator[Event, None]:
    """A :class:`RunPlan`'s events as an async generator, for tests that close or
    cancel its consumer early (closing it leaves the run's ``async with``)."""
    async with RunPlan(plan, n, make) as events:
        async for event in events:
            yield event


# -- reading events and calls ---------------------------------------------------


def text_of(events: list[Event], kind: type, choice: int = 0, untagged: bool = False) -> str:
    """A choice's text on one channel; ``untagged``: leave out candidates' live thinking."""
    return "".join(e.text for e in events if isinstance(e, kind) and e.choice == choice
                   and (not untagged or getattr(e, "candidate", None) is None))


def trace_of(events: list[Event], choice: int | None = None) -> dict[str, Any]:
    """The JSON the client sees as ``reasoning_trace`` of ``choice`` (see done_of)."""
    return to_json(done_of(events, choice).trace)


def done_of(events: list[Event], choice: int | None = None) -> ChoiceDone:
    """The one ChoiceDone of ``choice``; with no choice, of the only choice, and it is the last event."""
    if choice is not None:
        done = [e for e in events if isinstance(e, ChoiceDone) and e.choice == choice]
        assert len(done) == 1
        return done[0]
    done = [e for e in events if isinstance(e, ChoiceDone)]
    assert len(done) == 1 and events[-1] is done[0]
    return done[0]


def kept(call: Call) -> tuple[int, ...]:
    """What a request generated, as the next request continues it: minus a trailing eos."""
    ids = tuple(call.output_ids)
    return ids[:-1] if ids and ids[-1] == EOS_ID else ids


# -- the stream and the response are folds over the same events -------------

FIELDS = ("reasoning_content", "reasoning")


def stream_and_response(events: list[Event], usage: Usage, plan: Plan, n: int,
                        include_reasoning: bool = True) -> tuple[bytes, dict[str, Any]]:
    """The raw SSE stream and the response body the server makes of ``events``."""
    meta = ResponseMeta(id="chatcmpl-1", model="m", n=n, plan=plan.public(), reasoning_fields=FIELDS,
                        include_reasoning=include_reasoning, include_usage=True, created=1)
    enc = ChunkEncoder(meta)
    raw = enc.start() + b"".join(f for e in events if (f := enc.feed(e)) is not None) + enc.finish(usage)
    fold = ResponseFold(meta)
    fold.feed_all(events)
    return raw, fold.response(usage)


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    frames = [f for f in raw.split(b"\n\n") if f]
    assert frames[-1] == b"data: [DONE]"
    out = []
    for frame in frames[:-1]:
        if frame.startswith(b":"):
            continue  # comment: ping / progress
        assert frame.startswith(b"data: "), frame
        out.append(orjson.loads(frame[len(b"data: "):]))
    return out


def join_stream(chunks: list[dict[str, Any]], n: int) -> dict[str, Any]:
    joined: dict[int, dict[str, Any]] = {
        i: {"content": "", **{f: "" for f in FIELDS}, "finish": [], "trace": None, "role": None,
            "logprobs": None, "reasoning_keys": 0} for i in range(n)}
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        if not chunk["choices"]:
            continue
        (choice,) = chunk["choices"]
        j = joined[choice["index"]]
        assert not j["finish"], "a chunk after the choice finished"
        delta = choice["delta"]
        j["role"] = j["role"] or delta.get("role")
        j["content"] += delta.get("content") or ""
        for f in FIELDS:
            if f in delta:
                j["reasoning_keys"] += 1
                j[f] += delta[f]
        if choice.get("logprobs"):
            j["logprobs"] = (j["logprobs"] or []) + choice["logprobs"]["content"]
        if choice["finish_reason"] is not None:
            assert delta == {}
            j["finish"].append(choice["finish_reason"])
            j["trace"] = choice.get("reasoning_trace")
    return joined


# -- stopping early -------------------------------------------------------------


async def close_at(events: AsyncIterator[Any], kind: type) -> None:
    """Consume ``events`` up to the first of ``kind``, then close the stream."""
    async for event in events:
        if isinstance(event, kind):
            break
    await events.aclose()  # type: ignore[attr-defined]


async def cancel_consumer(events: AsyncIterator[Any]) -> None:
    """Consume ``events`` in a task and cancel it once the first event is in."""
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in events:
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
