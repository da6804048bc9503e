"""Strategy ``single`` through the runner, on the scripted engine.

Continuations are checked token for token: the scripted tokenizer has word
tokens that ``encode`` never produces, so an answer prompt built by
re-tokenizing the thinking text would not match.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from scripted_engine import EOS, Output, ScriptedEngine, char_model_info, encode

from strategies import single
from strategies.context import RunContext
from strategies.engine import Sampling
from strategies.events import Answer, ChoiceDone, Event, Thinking
from strategies.ledger import Usage
from strategies.plan import Plan
from strategies.trace import to_json
from tests.unit.harness import (
    CLOSE,
    FIELDS,
    PREFIX,
    RID,
    SUFFIX,
    cancel_consumer,
    chat,
    close_at,
    contexts,
    events_of,
    join_stream,
    make_plan,
    parse_sse,
    run_to_end,
    stream_and_response,
    text_of,
)

P = chat("What is 2+2?")
THINK_PROMPT = P + PREFIX

Phase = Output | Callable[[Sampling], Output] | None


@dataclass(frozen=True)
class Setup:
    plan: Plan
    think: Phase = None   # what the thinking request generates (None: there must be none)
    answer: Phase = None  # what the answer request generates
    n: int = 1
    budget: int | None = None
    client: dict[str, Any] = field(default_factory=dict)  # client Sampling fields; seed is per choice

    def script(self, prompt: tuple[int, ...], s: Sampling) -> Output:
        phase = self.think if prompt == THINK_PROMPT else self.answer
        assert phase is not None, f"unexpected engine request for {prompt!r}"
        return phase(s) if callable(phase) else phase


ON = dict(thinking=True)
SETUPS: dict[str, Setup] = {
    "thinking-off": Setup(make_plan(thinking=False, max_tokens=50), answer=["The answer", " is 4.", EOS]),
    "answer-length": Setup(make_plan(thinking=False, max_tokens=4), answer=["The answer", " is 4.", EOS]),
    "budget-tokens-caps-thinking-off": Setup(make_plan(thinking=False, max_tokens=100), budget=5,
                                             answer=["The answer", " is 4.", EOS]),
    # The client's stop string "two" must not end the thinking, only the answer.
    "model-closes-word-tag": Setup(
        make_plan(**ON, max_thinking_tokens=100, max_tokens=200),
        think=["Two plus", " two.", [CLOSE], "junk"], answer=["The answer", " is 4.", EOS],
        client={"stop": ("two",)}),
    "model-closes-char-tag": Setup(
        make_plan(**ON, max_thinking_tokens=100, max_tokens=200),
        think=["Two plus two.</th", "ink>junk"], answer=["The answer", " is 4.", EOS]),
    "cut-by-max-thinking": Setup(
        make_plan(**ON, max_thinking_tokens=5, max_tokens=100), think=["abcdefghij"], answer=["ok", EOS]),
    "cut-mid-close-tag": Setup(
        make_plan(**ON, max_thinking_tokens=7, max_tokens=100), think=["abcd</think>x"], answer=["ok", EOS]),
    "eos-while-thinking": Setup(
        make_plan(**ON, max_thinking_tokens=50, max_tokens=100), think=["abc" + EOS], answer=["ok", EOS]),
    "thinking-takes-all-max-tokens": Setup(
        make_plan(**ON, max_thinking_tokens=None, max_tokens=6), think=["abcdefghij"]),
    "max-thinking-above-max-tokens": Setup(
        make_plan(**ON, max_thinking_tokens=100, max_tokens=6), think=["abcdefghij"]),
    "closed-exactly-at-max-tokens": Setup(
        make_plan(**ON, max_thinking_tokens=100, max_tokens=14), think=["Two plus", " two.", [CLOSE]]),
    "budget-tokens-exhausted-by-thinking": Setup(
        make_plan(**ON, max_thinking_tokens=50, max_tokens=100), budget=10, think=["abcdefghijklmnop"]),
    "budget-tokens-caps-answer": Setup(
        make_plan(**ON, max_thinking_tokens=10, max_tokens=100), budget=13,
        think=["abcdefghijklmnop"], answer=["The answer", EOS]),
    "logprobs": Setup(
        make_plan(**ON, max_thinking_tokens=100, max_tokens=200),
        think=["Two plus", " two.", [CLOSE]], answer=["The", " answer", EOS], client={"logprobs": 2}),
    "n3": Setup(
        make_plan(**ON, max_thinking_tokens=100, max_tokens=200), n=3, client={"seed": 7},
        think=lambda s: [f"seed {s.seed}", "...", [CLOSE]], answer=lambda s: [f"answer {s.seed}", EOS]),
}


def make_ctx(setup: Setup, engine: ScriptedEngine) -> Callable[[int], RunContext]:
    client = dict(setup.client)
    seed = client.pop("seed", None)
    return contexts(engine, P, setup.plan.max_tokens, seed=seed, budget=setup.budget, **client)


async def run(setup: Setup) -> tuple[ScriptedEngine, list[Event], Usage]:
    engine = ScriptedEngine(char_model_info(), setup.script)
    return await run_to_end(engine, setup.plan, setup.n, make_ctx(setup, engine))


@dataclass(frozen=True)
class Expect:
    prompts: list[tuple[int, ...]]  # every engine request's prompt, in order
    thinking: str
    answer: str
    finish: str
    reasoning_tokens: int
    completion_tokens: int
    max_tokens: list[int]           # every engine request's max_tokens
    trace: dict[str, Any]


ANSWER = "The answer is 4."
EXPECT: dict[str, Expect] = {
    "thinking-off": Expect(
        [P], "", ANSWER, "stop", 0, len(ANSWER) + 1, [50],
        {"strategy": "single", "answer": {"tokens": len(ANSWER) + 1, "finish_reason": "stop"}}),
    "answer-length": Expect([P], "", "The ", "length", 0, 4, [4],
                            {"answer": {"tokens": 4, "finish_reason": "length"}}),
    "budget-tokens-caps-thinking-off": Expect([P], "", "The a", "length", 0, 5, [5],
                                              {"answer": {"tokens": 5, "finish_reason": "length"}}),
    # 13 characters + the one-token tag; no close suffix, the model closed itself.
    "model-closes-word-tag": Expect(
        [THINK_PROMPT, THINK_PROMPT + encode("Two plus two.") + (CLOSE,)],
        "Two plus two.", ANSWER, "stop", 14, 14 + len(ANSWER) + 1, [100, 200 - 14],
        {"thinking": {"tokens": 14, "finish_reason": "stop", "cut_by_budget": False},
         "answer": {"tokens": len(ANSWER) + 1, "finish_reason": "stop"}}),
    "model-closes-char-tag": Expect(
        [THINK_PROMPT, THINK_PROMPT + encode("Two plus two.</think>")],
        "Two plus two.", ANSWER, "stop", 21, 21 + len(ANSWER) + 1, [100, 200 - 21],
        {"thinking": {"tokens": 21, "finish_reason": "stop", "cut_by_budget": False}}),
    "cut-by-max-thinking": Expect(
        [THINK_PROMPT, THINK_PROMPT + encode("abcde") + SUFFIX], "abcde", "ok", "stop", 5, 8, [5, 95],
        {"thinking": {"tokens": 5, "finish_reason": "length", "cut_by_budget": True}}),
    "cut-mid-close-tag": Expect(
        [THINK_PROMPT, THINK_PROMPT + encode("abcd</t") + SUFFIX], "abcd</t", "ok", "stop", 7, 10, [7, 93],
        {"thinking": {"tokens": 7, "finish_reason": "length", "cut_by_budget": True}}),
    # The eos id is dropped from the continuation and the block is closed for the model.
    "eos-while-thinking": Expect(
        [THINK_PROMPT, THINK_PROMPT + encode("abc") + SUFFIX], "abc", "ok", "stop", 4, 7, [50, 96],
        {"thinking": {"tokens": 4, "finish_reason": "stop", "cut_by_budget": False}}),
    "thinking-takes-all-max-tokens": Expect(
        [THINK_PROMPT], "abcdef", "", "length", 6, 6, [6],
        {"thinking": {"tokens": 6, "finish_reason": "length", "cut_by_budget": True}}),
    "max-thinking-above-max-tokens": Expect(
        [THINK_PROMPT], "abcdef", "", "length", 6, 6, [6],
        {"thinking": {"tokens": 6, "finish_reason": "length", "cut_by_budget": True}}),
    "closed-exactly-at-max-tokens": Expect(
        [THINK_PROMPT], "Two plus two.", "", "length", 14, 14, [14],
        {"thinking": {"tokens": 14, "finish_reason": "stop", "cut_by_budget": False}}),
    "budget-tokens-exhausted-by-thinking": Expect(
        [THINK_PROMPT], "abcdefghij", "", "length", 10, 10, [10],
        {"thinking": {"tokens": 10, "finish_reason": "length", "cut_by_budget": True}}),
    "budget-tokens-caps-answer": Expect(
        [THINK_PROMPT, THINK_PROMPT + encode("abcdefghij") + SUFFIX], "abcdefghij", "The", "length",
        10, 13, [10, 3], {"answer": {"tokens": 3, "finish_reason": "length"}}),
}


@pytest.mark.parametrize("name", list(EXPECT), ids=list(EXPECT))
@pytest.mark.asyncio
async def test_single(name: str) -> None:
    setup, want = SETUPS[name], EXPECT[name]
    engine, events, usage = await run(setup)

    assert [c.prompt_ids for c in engine.calls] == want.prompts
    assert [c.sampling.max_tokens for c in engine.calls] == want.max_tokens
    assert engine.aborted == [] and engine.in_flight == 0
    assert text_of(events, Thinking) == want.thinking
    assert text_of(events, Answer) == want.answer
    # Thinking comes first, then the answer, then exactly one ChoiceDone.
    kinds = [type(e) for e in events]
    assert kinds == sorted(kinds, key=[Thinking, Answer, ChoiceDone].index)
    done = [e for e in events if isinstance(e, ChoiceDone)]
    assert len(done) == 1 and done[0].finish_reason == want.finish
    trace = to_json(done[0].trace)
    for key, value in want.trace.items():
        if isinstance(value, dict):  # a subset of the nested entry
            assert {k: trace[key][k] for k in value} == value
        else:
            assert trace[key] == value
    assert ("thinking" in trace) is setup.plan.thinking
    assert ("answer" in trace) is (len(want.prompts) == 2 or not setup.plan.thinking)

    assert (usage.prompt_tokens, usage.cached_tokens) == (len(P), 0)
    assert (usage.reasoning_tokens, usage.completion_tokens) == (want.reasoning_tokens, want.completion_tokens)
    assert usage.completion_tokens == sum(len(c.output_ids) for c in engine.calls)
    assert usage.engine_requests == len(engine.calls)
    assert usage.engine_prompt_tokens == sum(len(c.prompt_ids) for c in engine.calls)
    assert usage.engine_cached_tokens == sum(c.cached_tokens for c in engine.calls)

    if setup.plan.thinking:
        think = engine.calls[0]
        assert think.request_id == f"{RID}-c0-think"
        assert think.sampling.stop == ("</think>",)  # the client's stop strings end the answer only
        assert think.sampling.logprobs is None
    if len(engine.calls) == 2:
        answer = engine.calls[1]
        assert answer.request_id == f"{RID}-c0-answer"
        assert answer.sampling.stop == setup.client.get("stop", ())
        # The continuation re-reads everything from the prefix cache but the
        # last thinking token, which was sampled and never fed back.
        assert answer.cached_tokens == len(THINK_PROMPT) + len(think.output_ids) - 1


@pytest.mark.asyncio
async def test_n_choices_run_together_and_usage_adds_up() -> None:
    setup = SETUPS["n3"]
    engine, events, usage = await run(setup)
    assert engine.max_in_flight == 3  # all choices were submitted together
    assert sorted(c.request_id for c in engine.calls) == sorted(
        f"{RID}-c{i}-{phase}" for i in range(3) for phase in ("think", "answer"))
    per_choice = []
    for i in range(3):
        seed = 7 + i
        assert text_of(events, Thinking, i) == f"seed {seed}..."
        assert text_of(events, Answer, i) == f"answer {seed}"
        done = [e for e in events if isinstance(e, ChoiceDone) and e.choice == i]
        assert len(done) == 1 and done[0].finish_reason == "stop"
        reasoning = len(f"seed {seed}...") + 1
        per_choice.append((reasoning, reasoning + len(f"answer {seed}") + 1))
    assert usage.prompt_tokens == len(P)  # the shared prompt counts once
    assert usage.reasoning_tokens == sum(r for r, _ in per_choice)
    assert usage.completion_tokens == sum(c for _, c in per_choice)
    assert usage.engine_requests == 6


# -- the stream and the response are folds over the same events -------------


@pytest.mark.parametrize("include_reasoning", [True, False], ids=["reasoning", "excluded"])
@pytest.mark.parametrize("name", list(SETUPS), ids=list(SETUPS))
@pytest.mark.asyncio
async def test_stream_equals_response(name: str, include_reasoning: bool) -> None:
    setup = SETUPS[name]
    _, events, usage = await run(setup)
    raw, body = stream_and_response(events, usage, setup.plan, setup.n, include_reasoning)

    chunks = parse_sse(raw)
    assert all(c["id"] == "chatcmpl-1" for c in chunks)
    assert chunks[0]["reasoning_plan"] == body["reasoning_plan"]
    # The usage chunk is last, has no choices, and equals the response's usage.
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == body["usage"]
    assert all(c["choices"] for c in chunks[:-1])
    joined = join_stream(chunks, setup.n)
    assert len(body["choices"]) == setup.n
    for choice in body["choices"]:
        j, msg = joined[choice["index"]], choice["message"]
        assert j["role"] == msg["role"] == "assistant"
        assert j["content"] == msg["content"]
        assert j["finish"] == [choice["finish_reason"]]  # exactly one finish_reason
        assert j["trace"] == choice["reasoning_trace"]
        assert j["logprobs"] == (choice["logprobs"] or {}).get("content")
        if include_reasoning:
            for f in FIELDS:
                assert j[f] == (msg[f] or "")
                assert (msg[f] is None) is (j[f] == "")
        else:
            assert j["reasoning_keys"] == 0
            assert not any(f in msg for f in FIELDS)
    # Not a vacuous comparison: something was generated in every choice.
    assert all(j["content"] or text_of(events, Thinking, i) for i, j in joined.items())
    if name == "logprobs":
        answer_tokens = usage.completion_tokens - usage.reasoning_tokens
        assert len(body["choices"][0]["logprobs"]["content"]) == answer_tokens


# -- stopping early aborts the engine ---------------------------------------

LONG_THINK = Setup(make_plan(thinking=True, max_thinking_tokens=100, max_tokens=200), n=2,
                   think=["a"] * 60, answer=["b"] * 60)


@pytest.mark.asyncio
async def test_closing_the_event_stream_aborts_every_engine_request() -> None:
    engine = ScriptedEngine(char_model_info(), LONG_THINK.script)
    events = events_of(LONG_THINK.plan, LONG_THINK.n, make_ctx(LONG_THINK, engine))
    first = await events.__anext__()
    assert isinstance(first, Thinking)
    await events.aclose()  # type: ignore[attr-defined]
    assert sorted(engine.aborted) == [f"{RID}-c0-think", f"{RID}-c1-think"]
    assert engine.in_flight == 0 and engine.finished == []
    assert len(engine.calls) == 2  # no answer phase was started


@pytest.mark.asyncio
async def test_cancelling_the_consumer_aborts_every_engine_request() -> None:
    engine = ScriptedEngine(char_model_info(), LONG_THINK.script)
    await cancel_consumer(events_of(LONG_THINK.plan, LONG_THINK.n, make_ctx(LONG_THINK, engine)))
    assert sorted(engine.aborted) == [f"{RID}-c0-think", f"{RID}-c1-think"]
    assert engine.in_flight == 0


@pytest.mark.asyncio
async def test_closing_during_the_answer_aborts_the_answer_request() -> None:
    setup = Setup(LONG_THINK.plan, think=["think", [CLOSE]], answer=["b"] * 60)
    engine = ScriptedEngine(char_model_info(), setup.script)
    await close_at(events_of(setup.plan, 1, make_ctx(setup, engine)), Answer)
    assert engine.finished == [f"{RID}-c0-think"]
    assert engine.aborted == [f"{RID}-c0-answer"]
    assert engine.in_flight == 0


@pytest.mark.asyncio
async def test_closing_the_strategy_itself_aborts_at_once() -> None:
    engine = ScriptedEngine(char_model_info(), LONG_THINK.script)
    gen = single.run(make_ctx(LONG_THINK, engine)(0), LONG_THINK.plan)
    assert isinstance(await gen.__anext__(), Thinking)
    await gen.aclose()  # type: ignore[attr-defined]
    # No event-loop turn in between: the abort must not wait for garbage collection.
    assert engine.aborted == [f"{RID}-c0-think"] and engine.in_flight == 0


@pytest.mark.asyncio
async def test_a_failing_choice_fails_the_run_and_aborts_the_others() -> None:
    def think(s: Sampling) -> Output:
        if s.seed == 1:
            raise RuntimeError("engine exploded")
        return ["a"] * 60

    setup = Setup(LONG_THINK.plan, n=2, think=think, client={"seed": 0})
    engine = ScriptedEngine(char_model_info(), setup.script)
    with pytest.raises(RuntimeError, match="engine exploded"):
        async for _ in events_of(setup.plan, setup.n, make_ctx(setup, engine)):
            pass
    assert engine.aborted == [f"{RID}-c0-think"] and engine.in_flight == 0
