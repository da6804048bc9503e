"""Strategy ``budget_forcing`` (s1) through the runner, on the scripted engine.

The scripted model thinks in letters: thinking request ``i`` writes
``lengths[i]`` copies of the ``i``-th letter (``"a"``, ``"b"``, ...) and then
ends its thinking in one of several ways (a one-token ``</think>``, the tag as
eight character tokens, the tag as three word tokens ``"</" "think" ">"``, or
eos); ``None`` never ends. So every prompt the strategy builds can be written
down token for token, and what the server inserted ("Wait", the nudge, the
wrap-up) is told apart from what the model generated.
"""
from __future__ import annotations

import itertools
import string
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from scripted_engine import (
    EOS,
    EOS_ID,
    WORD_BASE,
    WORDS,
    CharTokenizer,
    Output,
    ScriptedEngine,
    char_model_info,
    encode,
)

from strategies import budget_forcing, registry
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
    chat,
    contexts,
    events_of,
    join_stream,
    make_plan,
    parse_sse,
    run_to_end,
    stream_and_response,
    text_of,
    vary,
)

P = chat("What is 2+2?")
T = P + PREFIX  # the first thinking request's prompt
CLOSE_TEXT = "</think>"

# The default word tokens keep their ids; three more spell the tag in pieces.
TOK_WORDS = WORDS + ("</", "think", ">")
TOK = CharTokenizer(TOK_WORDS)
SPLIT_CLOSE = tuple(WORD_BASE + TOK_WORDS.index(w) for w in ("</", "think", ">"))

W = "Wait"
WRAP = "\nTime is up."
NUDGE = "Hurry."
LETTERS = string.ascii_lowercase
ANSWER = ["The answer", EOS]  # 11 tokens

# How the model ends a thinking request: the chunks after its letters.
ENDS: dict[str, Callable[[str], list[Any]]] = {
    "word": lambda text: [text, [CLOSE], "junk"],
    "eos": lambda text: [text, EOS, "junk"],
    # The tag as characters, split across deltas (the stop string spans them).
    "chars": lambda text: [text + "</th", "ink>junk"],
    # The tag as three tokens, one delta each.
    "split": lambda text: [text, [SPLIT_CLOSE[0]], [SPLIT_CLOSE[1]], [SPLIT_CLOSE[2]], "junk"],
}
END_IDS = {"word": (CLOSE,), "eos": (EOS_ID,), "chars": encode(CLOSE_TEXT), "split": SPLIT_CLOSE}


def ids(*parts: str | int | tuple[int, ...]) -> tuple[int, ...]:
    out: list[int] = []
    for part in parts:
        if isinstance(part, str):
            out.extend(encode(part))
        elif isinstance(part, int):
            out.append(part)
        else:
            out.extend(part)
    return tuple(out)


@dataclass(frozen=True)
class Thinker:
    """Thinking request ``i`` writes ``lengths[i]`` letters (the last entry repeats), then ``end``."""

    lengths: tuple[int | None, ...]
    end: str = "word"

    def output(self, i: int) -> Output:
        n = self.lengths[min(i, len(self.lengths) - 1)]
        letter = LETTERS[i]
        if n is None:
            return [letter * 10] * 50  # never ends by itself
        return ENDS[self.end](letter * n)


BASE = make_plan("budget_forcing", thinking=True, max_thinking_tokens=100, max_tokens=200,
                 min_thinking_tokens=12, max_continuations=3, continuation=W, wrapup=WRAP)


@dataclass(frozen=True)
class Setup:
    plan: Plan
    model: Thinker
    n: int = 1

    def script(self) -> Callable[[tuple[int, ...], Sampling], Output]:
        count: dict[int | None, int] = defaultdict(int)  # thinking requests so far, per choice (seed)

        def fn(prompt: tuple[int, ...], s: Sampling) -> Output:
            assert prompt[:len(T)] == T
            if s.stop == (CLOSE_TEXT,):  # a thinking request
                i = count[s.seed]
                count[s.seed] += 1
                return self.model.output(i)
            return ANSWER
        return fn


def make_ctx(setup: Setup, engine: ScriptedEngine) -> Callable[[int], RunContext]:
    return contexts(engine, P, setup.plan.max_tokens, seed=100, budget=setup.plan.budget_tokens)


async def run(setup: Setup) -> tuple[ScriptedEngine, list[Event], Usage]:
    engine = ScriptedEngine(char_model_info(), setup.script(), tokenizer=TOK)
    return await run_to_end(engine, setup.plan, setup.n, make_ctx(setup, engine))


def letters(out: Sequence[int]) -> tuple[int, ...]:
    """The model's thinking ids without its end (tag in any spelling, or eos)."""
    n = 0
    while n < len(out) and out[n] < WORD_BASE and chr(out[n]) in LETTERS:
        n += 1
    return tuple(out[:n])


def check_invariants(setup: Setup, engine: ScriptedEngine, events: list[Event], usage: Usage) -> None:
    """What must hold for any plan and any model behaviour (one choice)."""
    plan = setup.plan
    cap, budget = plan.max_thinking_tokens, plan.budget_tokens
    think = [c for c in engine.calls if c.sampling.stop == (CLOSE_TEXT,)]
    answer = [c for c in engine.calls if c.sampling.stop != (CLOSE_TEXT,)]
    assert engine.calls == think + answer and len(answer) <= 1
    assert engine.aborted == [] and engine.in_flight == 0
    assert [c.request_id for c in think] == [f"{RID}-c0-think"] + [f"{RID}-c0-think{k}" for k in range(1, len(think))]

    generated = 0
    for k, call in enumerate(think):
        # No thinking request may ask for more than what is left of any cap.
        assert 1 <= call.sampling.max_tokens <= plan.max_tokens - generated
        if cap is not None:
            assert call.sampling.max_tokens <= cap - generated
        if budget is not None:
            assert call.sampling.max_tokens <= budget - generated
        assert call.sampling.logprobs is None and call.sampling.stop_token_ids == ()
        if k:
            # Continue from the exact ids: the previous prompt, what the model
            # kept (its end dropped), and the inserted continuation or nudge.
            prev = think[k - 1]
            if prev.finish_reason == "length":
                assert call.prompt_ids == prev.prompt_ids + tuple(prev.output_ids) + encode(plan.forcing.nudge)
            else:
                assert call.prompt_ids == prev.prompt_ids + letters(prev.output_ids) + encode(plan.forcing.continuation)
            assert call.cached_tokens >= len(prev.prompt_ids)
        generated += len(call.output_ids)

    reasoning = sum(len(c.output_ids) for c in think)
    assert usage.reasoning_tokens == reasoning  # inserted text is not generated
    assert usage.completion_tokens == sum(len(c.output_ids) for c in engine.calls)
    assert usage.engine_requests == len(engine.calls)
    assert usage.completion_tokens <= plan.max_tokens
    if cap is not None:
        assert usage.reasoning_tokens <= cap
    if budget is not None:
        assert usage.completion_tokens <= budget

    done = [e for e in events if isinstance(e, ChoiceDone)]
    assert len(done) == 1 and to_json(done[0].trace)["strategy"] == "budget_forcing"
    trace = to_json(done[0].trace)["thinking"]
    assert trace["tokens"] == reasoning and trace["engine_requests"] == len(think)
    forced = trace["forced_continuations"]
    assert 0 <= forced <= plan.forcing.max_continuations
    assert forced == sum(1 for c in think[:-1] if c.finish_reason == "stop")
    # The minimum holds unless the continuations ran out or no room was left.
    if plan.min_thinking_tokens is not None and reasoning < plan.min_thinking_tokens:
        room = min(x for x in (cap, budget, plan.max_tokens) if x is not None)
        assert forced == plan.forcing.max_continuations or reasoning >= room
    if plan.min_thinking_tokens is None:
        assert forced == 0

    last = think[-1]
    if answer:
        # The answer continues from the last thinking request's exact ids.
        (ans,) = answer
        assert ans.request_id == f"{RID}-c0-answer"
        assert ans.prompt_ids[:len(last.prompt_ids) + len(letters(last.output_ids))] == \
            last.prompt_ids + letters(last.output_ids)
        closed = last.stop_reason == CLOSE_TEXT
        assert trace["closed_by_model"] is closed
        if closed:
            assert ans.prompt_ids == last.prompt_ids + tuple(last.output_ids)
        else:
            assert ans.prompt_ids[-len(SUFFIX):] == SUFFIX
        room = plan.max_tokens - reasoning if budget is None else min(plan.max_tokens, budget) - reasoning
        assert ans.sampling.max_tokens == room
        assert done[0].finish_reason == ans.finish_reason
    else:
        assert done[0].finish_reason == "length"
        assert reasoning == min(x for x in (plan.max_tokens, budget) if x is not None)


# -- the table ---------------------------------------------------------------


@dataclass(frozen=True)
class Want:
    think: list[tuple[tuple[int, ...], int]]  # every thinking request: (prompt, max_tokens)
    answer: tuple[int, ...] | None            # the answer request's prompt (None: none was made)
    thinking: str                             # streamed thinking text, insertions included
    inserted: list[str]                       # Thinking events the server inserted, in order
    reasoning: int
    trace: dict[str, Any] = field(default_factory=dict)  # a subset of trace["thinking"]
    finish: str = "stop"


def bf(**kw: Any) -> Plan:
    return vary(BASE, **kw)


A4 = Thinker((4,))          # "aaaa", "bbbb", ... each then a one-token </think>: 5 tokens a request
R1 = ids(T, "aaaa", W)      # the prompt after one forced continuation
R2 = ids(R1, "bbbb", W)
R3 = ids(R2, "cccc", W)
NUDGE_OFF = dict(min_thinking_tokens=None, max_thinking_tokens=20, nudge=NUDGE, nudge_before=4)

CASES: dict[str, tuple[Setup, Want]] = {
    # -- the minimum: an early end is replaced by "Wait" ------------------
    "min-word-tag": (Setup(bf(), A4), Want(
        [(T, 100), (R1, 95), (R2, 90)], ids(R2, "cccc", CLOSE), "aaaaWaitbbbbWaitcccc", [W, W], 15,
        {"forced_continuations": 2, "closed_by_model": True, "cut_by_budget": False, "finish_reason": "stop"})),
    "min-eos": (Setup(bf(), Thinker((4,), "eos")), Want(
        [(T, 100), (R1, 95), (R2, 90)], ids(R2, "cccc", SUFFIX), "aaaaWaitbbbbWaitcccc", [W, W], 15,
        {"forced_continuations": 2, "closed_by_model": False, "cut_by_budget": False})),
    "min-char-tag": (Setup(bf(), Thinker((2,), "chars")), Want(
        [(T, 100), (ids(T, "aa", W), 90)], ids(T, "aa", W, "bb", CLOSE_TEXT), "aaWaitbb", [W], 20,
        {"forced_continuations": 1, "closed_by_model": True})),
    "min-split-tag": (Setup(bf(), Thinker((4,), "split")), Want(
        [(T, 100), (R1, 93)], ids(R1, "bbbb", SPLIT_CLOSE), "aaaaWaitbbbb", [W], 14,
        {"forced_continuations": 1, "closed_by_model": True})),
    "min-reached-exactly": (Setup(bf(min_thinking_tokens=10), A4), Want(
        [(T, 100), (R1, 95)], ids(R1, "bbbb", CLOSE), "aaaaWaitbbbb", [W], 10,
        {"forced_continuations": 1})),
    "min-custom-continuation": (Setup(bf(min_thinking_tokens=6, continuation="\nWait,"), A4), Want(
        [(T, 100), (ids(T, "aaaa", "\nWait,"), 95)], ids(T, "aaaa", "\nWait,", "bbbb", CLOSE),
        "aaaa\nWait,bbbb", ["\nWait,"], 10, {"forced_continuations": 1})),
    "min-off": (Setup(bf(min_thinking_tokens=None), A4), Want(
        [(T, 100)], ids(T, "aaaa", CLOSE), "aaaa", [], 5, {"forced_continuations": 0})),
    "min-max-continuations": (Setup(bf(min_thinking_tokens=50), A4), Want(
        [(T, 100), (R1, 95), (R2, 90), (R3, 85)], ids(R3, "dddd", CLOSE), "aaaaWaitbbbbWaitccccWaitdddd",
        [W, W, W], 20, {"forced_continuations": 3, "closed_by_model": True, "cut_by_budget": False})),
    "min-no-continuations": (Setup(bf(min_thinking_tokens=50, max_continuations=0), A4), Want(
        [(T, 100)], ids(T, "aaaa", CLOSE), "aaaa", [], 5, {"forced_continuations": 0})),
    # A minimum above the cap: extended until the cap cuts the thinking.
    "min-above-cap": (Setup(bf(min_thinking_tokens=50, max_continuations=10, max_thinking_tokens=12), A4), Want(
        [(T, 12), (R1, 7), (R2, 2)], ids(R2, "cc", WRAP, SUFFIX), "aaaaWaitbbbbWaitcc" + WRAP, [W, W, WRAP], 12,
        {"forced_continuations": 2, "cut_by_budget": True, "closed_by_model": False, "finish_reason": "length"})),
    # The model closes exactly at the cap: nothing left to extend into.
    "min-closed-at-cap": (Setup(bf(min_thinking_tokens=50, max_continuations=10, max_thinking_tokens=10), A4), Want(
        [(T, 10), (R1, 5)], ids(R1, "bbbb", CLOSE), "aaaaWaitbbbb", [W], 10,
        {"forced_continuations": 1, "cut_by_budget": False, "closed_by_model": True})),
    "min-above-budget-tokens": (Setup(bf(min_thinking_tokens=50, max_continuations=10, budget_tokens=12), A4), Want(
        [(T, 12), (R1, 7), (R2, 2)], None, "aaaaWaitbbbbWaitcc" + WRAP, [W, W, WRAP], 12,
        {"forced_continuations": 2, "cut_by_budget": True}, finish="length")),
    "min-above-max-tokens": (Setup(bf(min_thinking_tokens=50, max_continuations=10, max_thinking_tokens=None,
                                      max_tokens=12), A4), Want(
        [(T, 12), (R1, 7), (R2, 2)], None, "aaaaWaitbbbbWaitcc" + WRAP, [W, W, WRAP], 12,
        {"forced_continuations": 2, "cut_by_budget": True}, finish="length")),
    # -- the cap: a forced end with the wrap-up phrase ---------------------
    "cap-wrapup": (Setup(bf(min_thinking_tokens=None, max_thinking_tokens=10), Thinker((None,))), Want(
        [(T, 10)], ids(T, "a" * 10, WRAP, SUFFIX), "a" * 10 + WRAP, [WRAP], 10,
        {"cut_by_budget": True, "closed_by_model": False, "finish_reason": "length"})),
    "cap-no-wrapup": (Setup(bf(min_thinking_tokens=None, max_thinking_tokens=10, wrapup=""), Thinker((None,))), Want(
        [(T, 10)], ids(T, "a" * 10, SUFFIX), "a" * 10, [], 10, {"cut_by_budget": True})),
    "cap-mid-tag": (Setup(bf(min_thinking_tokens=None, max_thinking_tokens=7), Thinker((4,), "chars")), Want(
        [(T, 7)], ids(T, "aaaa</t", WRAP, SUFFIX), "aaaa</t" + WRAP, [WRAP], 7, {"cut_by_budget": True})),
    "cap-after-continuation": (Setup(bf(max_thinking_tokens=8), Thinker((4, None))), Want(
        [(T, 8), (R1, 3)], ids(R1, "bbb", WRAP, SUFFIX), "aaaaWaitbbb" + WRAP, [W, WRAP], 8,
        {"forced_continuations": 1, "cut_by_budget": True})),
    "closed-no-wrapup": (Setup(bf(min_thinking_tokens=None, max_thinking_tokens=10), A4), Want(
        [(T, 10)], ids(T, "aaaa", CLOSE), "aaaa", [], 5, {"cut_by_budget": False, "closed_by_model": True})),
    "eos-no-wrapup": (Setup(bf(min_thinking_tokens=None, max_thinking_tokens=10), Thinker((4,), "eos")), Want(
        [(T, 10)], ids(T, "aaaa", SUFFIX), "aaaa", [], 5, {"cut_by_budget": False, "closed_by_model": False})),
    # -- the nudge: a hint nudge_before tokens before the cap -------------
    "nudge": (Setup(bf(**NUDGE_OFF), Thinker((None,))), Want(
        [(T, 16), (ids(T, "a" * 16, NUDGE), 4)], ids(T, "a" * 16, NUDGE, "bbbb", WRAP, SUFFIX),
        "a" * 16 + NUDGE + "bbbb" + WRAP, [NUDGE, WRAP], 20,
        {"nudged": True, "cut_by_budget": True, "engine_requests": 2})),
    "nudge-then-model-closes": (Setup(bf(**NUDGE_OFF), Thinker((None, 2))), Want(
        [(T, 16), (ids(T, "a" * 16, NUDGE), 4)], ids(T, "a" * 16, NUDGE, "bb", CLOSE), "a" * 16 + NUDGE + "bb",
        [NUDGE], 19, {"nudged": True, "cut_by_budget": False, "closed_by_model": True})),
    "nudge-not-needed": (Setup(bf(**NUDGE_OFF), A4), Want(
        [(T, 16)], ids(T, "aaaa", CLOSE), "aaaa", [], 5, {"nudged": False, "closed_by_model": True})),
    "nudge-after-continuation": (Setup(bf(**{**NUDGE_OFF, "min_thinking_tokens": 12}), Thinker((4, None))), Want(
        [(T, 16), (R1, 11), (ids(R1, "b" * 11, NUDGE), 4)], ids(R1, "b" * 11, NUDGE, "cccc", WRAP, SUFFIX),
        "aaaaWait" + "b" * 11 + NUDGE + "cccc" + WRAP, [W, NUDGE, WRAP], 20,
        {"nudged": True, "forced_continuations": 1, "cut_by_budget": True})),
    "nudge-before-whole-cap": (Setup(bf(**{**NUDGE_OFF, "nudge_before": 20}), Thinker((None,))), Want(
        [(T, 20)], ids(T, "a" * 20, WRAP, SUFFIX), "a" * 20 + WRAP, [WRAP], 20, {"nudged": False})),
    "nudge-before-zero": (Setup(bf(**{**NUDGE_OFF, "nudge_before": 0}), Thinker((None,))), Want(
        [(T, 20)], ids(T, "a" * 20, WRAP, SUFFIX), "a" * 20 + WRAP, [WRAP], 20, {"nudged": False})),
    "nudge-empty": (Setup(bf(**{**NUDGE_OFF, "nudge": ""}), Thinker((None,))), Want(
        [(T, 20)], ids(T, "a" * 20, WRAP, SUFFIX), "a" * 20 + WRAP, [WRAP], 20, {"nudged": False})),
    # The nudge comes before the end of budget_tokens when that is nearer than the cap.
    "nudge-before-budget-tokens": (Setup(bf(**NUDGE_OFF, budget_tokens=10), Thinker((None,))), Want(
        [(T, 6), (ids(T, "a" * 6, NUDGE), 4)], None, "a" * 6 + NUDGE + "bbbb" + WRAP, [NUDGE, WRAP], 10,
        {"nudged": True, "cut_by_budget": True}, finish="length")),
}

INSERTABLE = {W, "\nWait,", WRAP, NUDGE}


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
@pytest.mark.asyncio
async def test_budget_forcing(name: str) -> None:
    setup, want = CASES[name]
    engine, events, usage = await run(setup)

    think = [c for c in engine.calls if c.sampling.stop == (CLOSE_TEXT,)]
    answer = [c for c in engine.calls if c.sampling.stop != (CLOSE_TEXT,)]
    assert [(c.prompt_ids, c.sampling.max_tokens) for c in think] == want.think
    assert [c.prompt_ids for c in answer] == ([] if want.answer is None else [want.answer])
    assert text_of(events, Thinking) == want.thinking
    # Inserted text is streamed on the thinking channel as events of its own.
    assert [e.text for e in events if isinstance(e, Thinking) and e.text in INSERTABLE] == want.inserted
    assert usage.reasoning_tokens == want.reasoning
    assert usage.completion_tokens == want.reasoning + sum(len(c.output_ids) for c in answer)
    done = [e for e in events if isinstance(e, ChoiceDone)]
    assert done[-1].finish_reason == want.finish
    trace = to_json(done[-1].trace)["thinking"]
    assert trace["tokens"] == want.reasoning
    assert {k: trace[k] for k in want.trace} == want.trace
    if answer:
        assert "".join(e.text for e in events if isinstance(e, Answer)) == "The answer"
    kinds = [type(e) for e in events]
    assert kinds == sorted(kinds, key=[Thinking, Answer, ChoiceDone].index)
    check_invariants(setup, engine, events, usage)


def test_budget_forcing_is_registered() -> None:
    assert registry.get("budget_forcing") is budget_forcing.STRATEGY
    assert "budget_forcing" in registry.KNOWN


# -- the grid: no request asks for more than any cap leaves ------------------

MINIMA = [(None, 0), (4, 3), (12, 3), (40, 3), (40, 8)]  # (min_thinking_tokens, max_continuations)
CAPS = [None, 6, 20]
MAX_TOKENS = [16, 60]
BUDGETS = [None, 9, 30]
MODELS = {"close-at-once": Thinker((0,)), "close-after-4": A4, "eos-after-4": Thinker((4,), "eos"),
          "split-after-3": Thinker((3,), "split"), "never-closes": Thinker((None,))}
NUDGE_BEFORE = [0, 3]
GRID = list(itertools.product(MINIMA, CAPS, MAX_TOKENS, BUDGETS, MODELS, NUDGE_BEFORE))


def grid_id(case: tuple[Any, ...]) -> str:
    (lo, cont), cap, mt, budget, model, nudge = case
    return f"min{lo}x{cont}-cap{cap}-max{mt}-budget{budget}-{model}-nudge{nudge}"


@pytest.mark.parametrize("case", GRID, ids=[grid_id(c) for c in GRID])
@pytest.mark.asyncio
async def test_caps_hold_over_a_grid(case: tuple[Any, ...]) -> None:
    (lo, cont), cap, mt, budget, model, nudge = case
    plan = bf(min_thinking_tokens=lo, max_continuations=cont, max_thinking_tokens=cap, max_tokens=mt,
              budget_tokens=budget, nudge=NUDGE, nudge_before=nudge)
    setup = Setup(plan, MODELS[model])
    engine, events, usage = await run(setup)
    check_invariants(setup, engine, events, usage)
    limit = min(x for x in (cap, mt, budget) if x is not None)
    assert usage.reasoning_tokens <= limit
    if model == "never-closes":  # the thinking always runs to its limit, exactly
        assert usage.reasoning_tokens == limit


# -- the stream and the response are folds over the same events -------------

EQUIV = {name: setup for name, (setup, _) in CASES.items()}
EQUIV["two-choices"] = Setup(bf(min_thinking_tokens=12, max_thinking_tokens=30), Thinker((4, None)), n=2)


@pytest.mark.parametrize("include_reasoning", [True, False], ids=["reasoning", "excluded"])
@pytest.mark.parametrize("name", list(EQUIV), ids=list(EQUIV))
@pytest.mark.asyncio
async def test_stream_equals_response(name: str, include_reasoning: bool) -> None:
    setup = EQUIV[name]
    _, events, usage = await run(setup)
    raw, body = stream_and_response(events, usage, setup.plan, setup.n, include_reasoning)

    chunks = parse_sse(raw)
    assert chunks[0]["reasoning_plan"] == body["reasoning_plan"]
    assert body["reasoning_plan"]["strategy"] == "budget_forcing"
    # Issue 11: public() shows the continuation only where it can apply, with a minimum
    # set (it was shown for every budget_forcing plan before); the wrap-up whenever thinking.
    plan = setup.plan
    assert body["reasoning_plan"].get("continuation") == (plan.forcing.continuation if plan.min_thinking_tokens
                                                          else None)
    assert body["reasoning_plan"].get("wrapup") == (plan.forcing.wrapup or None)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == body["usage"]
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == usage.reasoning_tokens
    joined = join_stream(chunks, setup.n)
    assert len(body["choices"]) == setup.n
    for choice in body["choices"]:
        i = choice["index"]
        j, msg = joined[i], choice["message"]
        assert j["content"] == msg["content"]
        assert j["finish"] == [choice["finish_reason"]]
        assert j["trace"] == choice["reasoning_trace"]
        assert choice["reasoning_trace"]["thinking"]["tokens"] > 0
        if include_reasoning:
            # Both carry the thinking with the server's insertions, in place.
            for f in FIELDS:
                assert j[f] == msg[f] == text_of(events, Thinking, i)
        else:
            assert j["reasoning_keys"] == 0
            assert not any(f in msg for f in FIELDS)
    if name == "two-choices":
        for i in range(2):
            assert text_of(events, Thinking, i) == "aaaaWait" + "b" * 25 + WRAP
        assert usage.reasoning_tokens == 2 * 30


@pytest.mark.asyncio
@pytest.mark.parametrize("spare", [0, 3, 20], ids=["window-exact", "window-3", "window-20"])
async def test_inserted_text_never_overflows_the_context_window(spare: int) -> None:
    """Wrap-up, "Wait" and the closing suffix are server-inserted prompt tokens:
    every engine request, the answer included, must still fit the window."""
    max_len = len(P) + len(PREFIX) + len(SUFFIX) + spare + 20
    plan = bf(min_thinking_tokens=12, max_thinking_tokens=15, max_tokens=20)
    setup = Setup(plan, Thinker((5, None)))
    engine = ScriptedEngine(char_model_info(max_model_len=max_len), setup.script(), tokenizer=TOK)
    async for _ in events_of(plan, 1, make_ctx(setup, engine)):
        pass
    assert engine.calls
    for call in engine.calls:
        assert len(call.prompt_ids) + call.sampling.max_tokens <= max_len
