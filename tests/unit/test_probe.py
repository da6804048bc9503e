"""Probe-based early exit from thinking (Dynasor-CoT / DEER, strategies/probe.py)
through the runner, on the scripted engine.

The scripted model thinks in letters and never ends by itself; a probe request
(greedy, its prompt the thinking so far, the closing of the block and "Final
answer:") answers from a list, one entry per probe. So every prompt can be written
down, and what the probes read and cost is exact.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from scripted_engine import EOS, CharTokenizer, ScriptedEngine, char_model_info, encode

from strategies.engine import Sampling, TokenLogprob
from strategies.events import Thinking
from strategies.probe import ProbeOptions, ProbeResult, ProbeWatch, answer_confidence, probed_answer
from tests.unit.harness import PREFIX, SUFFIX, chat, contexts, make_plan, run_to_end, trace_of

P = chat("What is 6*7?")
T = P + PREFIX
LEAD = "Final answer:"
ANSWER = ["The answer is 7.", EOS]
HESITATE = ("wait", "hmm")


def opts(**kw: Any) -> ProbeOptions:
    return ProbeOptions(**{"interval": 20, "agree": 3, "confidence": 0.0, "max_tokens": 8, "prompt": LEAD,
                           "hesitation": HESITATE, **kw})


def is_probe(prompt: Sequence[int], s: Sampling) -> bool:
    return tuple(prompt[-len(encode(LEAD)):]) == encode(LEAD)


class Model:
    """Thinks forever (or ``stop_after`` letters, then closes); probe k answers ``probes[k]``."""

    def __init__(self, probes: Sequence[str], stop_after: int | None = None) -> None:
        self.probes, self.stop_after = list(probes), stop_after
        self.thinking = 0

    def __call__(self, prompt: tuple[int, ...], s: Sampling):
        assert prompt[:len(T)] == T
        if is_probe(prompt, s):
            k = sum(1 for c in self.engine.calls if is_probe(c.prompt_ids, c.sampling)) - 1
            return [self.probes[min(k, len(self.probes) - 1)], EOS]
        if s.stop and s.stop[0] == "</think>":
            if self.stop_after is not None:
                return ["t" * self.stop_after, "</think>"]
            return ["t" * 10] * 60
        return ANSWER


async def run(plan, model: Model, max_tokens: int | None = None):
    engine = ScriptedEngine(char_model_info(), model, tokenizer=CharTokenizer())
    model.engine = engine
    return await run_to_end(engine, plan, 1, contexts(engine, P, max_tokens or plan.max_tokens, seed=1))


def plan(strategy: str = "budget_forcing", probe: ProbeOptions | None = None, **kw: Any):
    return make_plan(strategy, thinking=True, max_thinking_tokens=kw.pop("cap", 400),
                     max_tokens=kw.pop("max_tokens", 600), probe=probe or opts(), **kw)


def calls(engine: ScriptedEngine):
    probes = [c for c in engine.calls if is_probe(c.prompt_ids, c.sampling)]
    think = [c for c in engine.calls if c.sampling.stop and c.sampling.stop[0] == "</think>"]
    answer = [c for c in engine.calls if c not in probes and c not in think]
    return think, probes, answer


@pytest.mark.asyncio
@pytest.mark.parametrize("strategy", ["single", "budget_forcing"])
async def test_three_agreeing_probes_end_the_thinking(strategy: str) -> None:
    engine, events, usage = await run(plan(strategy), Model([" 5", " 7", " 7.", " $7"]))
    think, probes, answer = calls(engine)
    trace = trace_of(events, 0)["thinking"]
    assert trace["probe_answers"] == ["5", "7", "7", "7"] and trace["exited_by_probe"] is True
    assert trace["probes"] == 4 and trace["tokens"] == 80 and not trace["cut_by_budget"]
    # Thinking runs in requests of the interval, each continuing from the exact ids.
    assert [c.sampling.max_tokens for c in think] == [20] * 4
    for k, c in enumerate(think[1:], 1):
        assert c.prompt_ids == think[k - 1].prompt_ids + tuple(think[k - 1].output_ids)
    # A probe reads the thinking so far from the cache, closed, then the lead; greedy,
    # none of the client's sampling.
    for k, p in enumerate(probes):
        done = think[k].prompt_ids + tuple(think[k].output_ids)
        assert p.prompt_ids == done + SUFFIX + encode(LEAD)
        assert p.cached_tokens >= len(done) - 1 and p.sampling.temperature == 0.0 and p.sampling.seed is None
    # The answer follows the thinking, closed by the server without a wrap-up.
    assert answer[0].prompt_ids == think[-1].prompt_ids + tuple(think[-1].output_ids) + SUFFIX
    # The client never sees a probe; its tokens are reasoning tokens in usage.
    shown = "".join(e.text for e in events if isinstance(e, Thinking))
    assert shown == "t" * 80
    assert trace["probe_tokens"] == sum(len(p.output_ids) for p in probes)
    assert usage.reasoning_tokens == 80 + trace["probe_tokens"]
    assert usage.completion_tokens == sum(len(c.output_ids) for c in engine.calls)
    assert engine.in_flight == 0 and engine.aborted == []


@pytest.mark.asyncio
async def test_a_probe_without_an_answer_breaks_the_run() -> None:
    engine, events, _ = await run(plan(), Model([" 7", " 7", " hmm, 7", " 7", " 7", " 7"]))
    trace = trace_of(events, 0)["thinking"]
    assert trace["probe_answers"] == ["7", "7", None, "7", "7", "7"] and trace["tokens"] == 120


@pytest.mark.asyncio
async def test_a_confident_probe_ends_the_thinking_at_once() -> None:
    # The fake logprob of token t is -(t % 10) / 10: " " is 0.82, "2" is 1.0.
    engine, events, _ = await run(plan(probe=opts(confidence=0.9)), Model([" 2\nmore"]))
    trace = trace_of(events, 0)["thinking"]
    assert trace["probes"] == 1 and trace["exited_by_probe"] and trace["tokens"] == 20
    # ... and one below the threshold does not.
    engine, events, _ = await run(plan(probe=opts(confidence=0.9)), Model([" 7", " 5", " 3", " 3", " 3"]))
    assert trace_of(events, 0)["thinking"]["probes"] == 5


@pytest.mark.asyncio
async def test_probes_start_after_the_minimum() -> None:
    engine, events, _ = await run(plan(min_thinking_tokens=50, continuation="Wait"), Model([" 7"]))
    trace = trace_of(events, 0)["thinking"]
    # Probe points every 20 tokens; the first at or past 50 is at 60.
    assert trace["tokens"] == 100 and trace["probes"] == 3


@pytest.mark.asyncio
async def test_probes_never_agreeing_leave_the_cap_to_end_it() -> None:
    engine, events, usage = await run(plan(cap=100, wrapup="\nTime is up."), Model([" 1", " 2", " 3", " 4", " 5"]))
    trace = trace_of(events, 0)["thinking"]
    assert trace["cut_by_budget"] and trace["tokens"] == 100 and not trace["exited_by_probe"]
    # A probe at the cap itself would change nothing: the cap ends the thinking there.
    assert trace["probes"] == 4
    think, probes, answer = calls(engine)
    assert answer[0].prompt_ids[-len(encode("\nTime is up.") + SUFFIX):] == encode("\nTime is up.") + SUFFIX


@pytest.mark.asyncio
async def test_a_model_that_ends_its_thinking_first_is_not_probed() -> None:
    engine, events, _ = await run(plan(), Model([" 7"], stop_after=5))
    trace = trace_of(events, 0)["thinking"]
    assert trace["probes"] == 0 and trace["closed_by_model"] and trace["tokens"] == 13


@pytest.mark.asyncio
async def test_probe_tokens_count_against_max_tokens() -> None:
    engine, events, usage = await run(plan(cap=400, max_tokens=90), Model([" 1", " 2", " 3", " 4", " 5"]))
    assert usage.completion_tokens <= 90
    assert usage.completion_tokens == sum(len(c.output_ids) for c in engine.calls)


def test_probed_answer_reads_the_first_line_strictly() -> None:
    assert probed_answer(" 1,234.\nBecause...") == "1234"
    assert probed_answer(" The answer is 7.") == "7"
    assert probed_answer("\n\n  42") == "42"
    assert probed_answer("   ") is None
    assert probed_answer(" Wait, 7", ("wait",)) is None
    assert probed_answer(" Paris", ("wait",)) == "paris"


def test_settled_needs_agreement_or_confidence() -> None:
    watch = ProbeWatch(opts())
    for answer in ("7", "7"):
        watch.add(ProbeResult(answer, 0.5, 3))
    assert not watch.settled
    watch.add(ProbeResult("7", 0.5, 3))
    assert watch.settled and watch.tokens == 9
    sure = ProbeWatch(opts(confidence=0.8))
    sure.add(ProbeResult(None, 0.99, 3))
    assert not sure.settled  # no answer: never settled, however sure
    sure.add(ProbeResult("7", 0.85, 3))
    assert sure.settled


def test_answer_confidence_stops_at_the_end_of_the_answer_line() -> None:
    lps = [TokenLogprob(t, lp) for t, lp in ((" ", -0.1), ("7", 0.0), ("\n", -5.0), ("x", -9.0))]
    assert answer_confidence(lps) == pytest.approx((0.9048 + 1.0) / 2, abs=1e-3)
    # An end of sequence is no part of the answer, however sure the model is of it.
    eos = [TokenLogprob(" ", -0.1), TokenLogprob("7", -0.5), TokenLogprob("", 0.0)]
    assert answer_confidence(eos, (32, 55, 0), {0}) == pytest.approx((0.9048 + 0.6065) / 2, abs=1e-3)
