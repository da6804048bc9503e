"""Strategies ``self_consistency`` and ``best_of_n`` through the runner, on the scripted engine.

Every candidate samples with its own seed (``choice seed * STRIDE + k``), so the
script knows which candidate a request belongs to and what it should say. The
scripted engine's fake logprobs depend on the token id only (``-(id % 10) / 10``
for the token, one less for its runner-up), so DeepConf scores can be worked out
by hand; judge requests get their P("Yes") from :class:`JudgedEngine`.
"""
from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import pytest
from scripted_engine import EOS, Output, ScriptedEngine, char_model_info, encode

from strategies import scoring
from strategies.context import RunContext
from strategies.engine import Sampling, TokenLogprob
from strategies.events import Answer, ChoiceDone, Event, Progress, Thinking
from strategies.fanout import FanOut
from strategies.ledger import Usage
from strategies.plan import Plan
from tests.unit import harness
from tests.unit.harness import (
    CLOSE,
    FIELDS,
    RID,
    THINK_PROMPT,
    P,
    cancel_consumer,
    close_at,
    contexts,
    events_of,
    followup,
    join_stream,
    make_plan,
    option,
    parse_sse,
    run_to_end,
    stream_and_response,
    trace_of,
    vary,
)

STRIDE = 1_000_003  # RunContext.candidate: seed * STRIDE + k
QUESTION = "Is the answer above correct? Answer Yes or No."
FOLLOWUP = followup(QUESTION)


@dataclass(frozen=True)
class Cand:
    answer: Output
    think: Output | None = None  # None: the plan has thinking off


Model = Callable[[int, int], Cand]  # (choice, candidate) -> what it generates


def thought(k: int) -> list[Any]:
    return [f"thought {k}", [CLOSE]]


def says(*answers: str, think: bool = True, slow: Sequence[int] = ()) -> Model:
    """Candidate ``k`` answers ``answers[k]``; ``slow`` ones stream one character per delta."""
    def model(choice: int, k: int) -> Cand:
        text = answers[k % len(answers)]
        chunks = [*text, EOS] if k in slow else [text, EOS]
        return Cand(chunks, thought(k) if think else None)
    return model


@dataclass(frozen=True)
class Setup:
    plan: Plan
    model: Model
    n: int = 1
    seed: int | None = 0  # the client's; choice i samples with seed + i
    client: dict[str, Any] = field(default_factory=dict)  # other client Sampling fields
    p_yes: dict[str, float] = field(default_factory=dict)  # judge's P(Yes) by candidate answer
    followup: bool = True

    def script(self, prompt: tuple[int, ...], s: Sampling) -> Output:
        if prompt[-len(FOLLOWUP):] == FOLLOWUP:
            return ["Y"]  # a judge: JudgedEngine sets its logprobs
        choice, k = (0, 0) if s.seed is None else divmod(s.seed, STRIDE)
        cand = self.model(choice - (self.seed or 0), k)
        if prompt == THINK_PROMPT:
            assert cand.think is not None, "a thinking request with thinking off"
            return cand.think
        assert prompt[:len(P)] == P
        return cand.answer


class JudgedEngine(ScriptedEngine):
    """A scripted engine whose judge requests answer "Yes" with a scripted P(Yes)."""

    def __init__(self, setup: Setup) -> None:
        super().__init__(char_model_info(), setup.script)
        self.p_yes = setup.p_yes
        self.judging = 0
        self.max_judging = 0

    async def generate(self, prompt_ids, sampling, request_id):  # type: ignore[override]
        judge = "-judge" in request_id
        if judge:
            self.judging += 1
            self.max_judging = max(self.max_judging, self.judging)
        stream = super().generate(prompt_ids, sampling, request_id)
        try:
            async for delta in stream:
                if judge and delta.token_ids:
                    answer = "".join(chr(i) for i in prompt_ids[len(P):-len(FOLLOWUP)])
                    p = self.p_yes.get(answer, 0.5)
                    lp = TokenLogprob("Yes", math.log(p), (("Yes", math.log(p)), ("No", math.log(1 - p))))
                    delta = replace(delta, logprobs=(lp,))
                yield delta
        finally:
            if judge:
                self.judging -= 1
            await stream.aclose()


def make_ctx(setup: Setup, engine: ScriptedEngine) -> Callable[[int], RunContext]:
    return contexts(engine, P, setup.plan.max_tokens, seed=setup.seed, budget=setup.plan.budget_tokens,
                    followup=followup if setup.followup else None, **setup.client)


async def run(setup: Setup) -> tuple[JudgedEngine, list[Event], Usage]:
    engine = JudgedEngine(setup)
    return await run_to_end(engine, setup.plan, setup.n, make_ctx(setup, engine))


# A choice's text, without candidates' live (tagged) thinking.
text_of = partial(harness.text_of, untagged=True)


def cand_id(k: int, phase: str = "answer", choice: int = 0) -> str:
    return f"{RID}-c{choice}s{k}-{phase}"


def progress(events: list[Event], choice: int = 0) -> list[dict[str, object]]:
    return [e.info for e in events if isinstance(e, Progress) and e.choice == choice and "candidate" in e.info]


def check_accounting(setup: Setup, engine: JudgedEngine, events: list[Event], usage: Usage) -> None:
    """What must hold after every run: usage is exact, and is the trace's sum."""
    assert engine.in_flight == 0
    judges = [c for c in engine.calls if "-judge" in c.request_id]
    traced = 0
    for i in range(setup.n):
        trace = trace_of(events, i)
        assert [c["index"] for c in trace["candidates"]] == list(range(trace["started"]))
        traced += sum(c["tokens"] for c in trace["candidates"])
        assert trace["candidates"][trace["selected"]]["aborted"] is False
    assert usage.completion_tokens == traced + len(judges)
    assert usage.completion_tokens == sum(len(c.output_ids) for c in engine.calls)
    assert usage.reasoning_tokens == sum(len(c.output_ids) for c in engine.calls if c.request_id.endswith("-think"))
    assert usage.engine_requests == len(engine.calls)
    assert usage.prompt_tokens == len(P)


@pytest.fixture(params=["plain", "yielding"])
def schedule(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``yielding``: every FanOut member gives the event loop a turn after each item,
    so one candidate's last event and its end can be split by others' events."""
    if request.param == "yielding":
        start = FanOut.start

        def yielding_start(self: FanOut, key: Any, stream: Any) -> None:
            async def gen() -> Any:
                try:
                    async for item in stream:
                        yield item
                        await asyncio.sleep(0)
                finally:
                    await stream.aclose()
            start(self, key, gen())

        monkeypatch.setattr(FanOut, "start", yielding_start)
    return str(request.param)


SC = dict(strategy="self_consistency", max_tokens=200)
BON = dict(strategy="best_of_n", max_tokens=200)
THINK = dict(thinking=True, max_thinking_tokens=100)

# -- candidates are submitted together, with their own ids and seeds ---------


@pytest.mark.parametrize("seed", [7, None], ids=["seeded", "unseeded"])
@pytest.mark.parametrize("strategy", ["self_consistency", "best_of_n"])
@pytest.mark.asyncio
async def test_candidates_of_every_choice_run_together(strategy: str, seed: int | None) -> None:
    setup = Setup(make_plan(strategy=strategy, samples=3, max_tokens=50), says("The answer", think=False), n=2,
                  seed=seed)
    engine, events, usage = await run(setup)
    assert engine.max_in_flight == 6  # 2 choices x 3 candidates, none finished before the last started
    ids = [c.request_id for c in engine.calls]
    assert sorted(ids) == sorted(cand_id(k, choice=i) for i in range(2) for k in range(3))
    seeds = [c.sampling.seed for c in engine.calls]
    if seed is None:
        assert seeds == [None] * 6  # no seed is invented
    else:
        assert len(set(seeds)) == 6
        assert sorted(seeds) == sorted((seed + i) * STRIDE + k for i in range(2) for k in range(3))
    for i in range(2):
        assert trace_of(events, i)["started"] == 3
        assert text_of(events, Answer, i) == "The answer"
    check_accounting(setup, engine, events, usage)


# -- the vote, and what the client gets back --------------------------------

# id -> (answers, slow candidates, winner, votes)
VOTES: dict[str, tuple[tuple[str, ...], tuple[int, ...], int, dict[str, int]]] = {
    # Three ways of writing 7 beat two twelves; the first 7 (by index) wins.
    "majority": (("12", "The answer is 7.", "It is 12", "\\boxed{7}", "7.0"), (), 1, {"7": 3, "12": 2}),
    "by-value": (("1/2", "0.5", "\\frac{1}{3}", "The answer is \\boxed{\\frac{1}{2}}"), (), 0, {"1/2": 3, "1/3": 1}),
    # A tie goes to the lowest-numbered candidate's answer, even when others finish first.
    "tie-lowest-index": (("The answer is 7.", "12", "7", "12"), (0, 2), 0, {"7": 2, "12": 2}),
    "no-answer-loses": (("", "", "5"), (), 2, {"5": 1}),
}


@pytest.mark.parametrize(("answers", "slow", "winner", "votes"), list(VOTES.values()), ids=list(VOTES))
@pytest.mark.asyncio
async def test_majority_vote_returns_the_winner(answers: tuple[str, ...], slow: tuple[int, ...], winner: int,
                                                votes: dict[str, int]) -> None:
    setup = Setup(make_plan(**SC, **THINK, samples=len(answers)), says(*answers, slow=slow))
    engine, events, usage = await run(setup)
    trace = trace_of(events, 0)
    assert trace["votes"] == votes and list(trace["votes"]) == list(votes)  # ranked
    assert trace["selected"] == winner and trace["answer"] == next(iter(votes))
    assert trace["early_stopped"] is False and trace["started"] == len(answers)
    # Exactly the winner's thinking and answer, replayed for the choice, untagged.
    assert text_of(events, Thinking) == engine.calls_for(cand_id(winner, "think"))[0].text == f"thought {winner}"
    assert text_of(events, Answer) == engine.calls_for(cand_id(winner))[0].text == answers[winner]
    assert all(e.choice == 0 for e in events)
    assert all(e.candidate is None for e in events if isinstance(e, Thinking))
    kinds = [type(e) for e in events]
    assert list(dict.fromkeys(kinds)) == [Progress, Thinking, Answer, ChoiceDone]  # in phases, in this order
    assert kinds.count(Progress) == len(answers)
    # Majority voting needs no logprobs: none were asked of the engine.
    assert all(c.sampling.logprobs is None for c in engine.calls)
    assert all(e.logprobs is None for e in events if isinstance(e, Answer))
    check_accounting(setup, engine, events, usage)


@pytest.mark.parametrize("client_logprobs", [None, 0, 1, 2], ids=["none", "top0", "top1", "top2"])
@pytest.mark.asyncio
async def test_logprobs_sampled_for_scoring_are_not_returned_beyond_the_request(client_logprobs: int | None) -> None:
    client = {} if client_logprobs is None else {"logprobs": client_logprobs}
    setup = Setup(make_plan(**SC, **THINK, samples=3, vote="weighted"), says("7", "7", "7"), client=client)
    engine, events, usage = await run(setup)
    # Confidence-weighted votes need the top 5 of every answer token.
    answer_calls = [c for c in engine.calls if c.request_id.endswith("-answer")]
    assert [c.sampling.logprobs for c in answer_calls] == [5] * 3
    # ...and of the thinking: DeepConf scores the reasoning trace, not just the answer.
    assert all(c.sampling.logprobs == 5 for c in engine.calls if c.request_id.endswith("-think"))
    lps = [lp for e in events if isinstance(e, Answer) for lp in (e.logprobs or ())]
    if client_logprobs is None:
        assert lps == []
    else:
        winner = trace_of(events, 0)["selected"]
        assert len(lps) == len(engine.calls_for(cand_id(winner))[0].output_ids)  # "7" and eos
        # The scripted engine has 2 top entries per token; the client gets what it asked for.
        assert [len(lp.top) for lp in lps] == [min(client_logprobs, 2)] * len(lps)
    check_accounting(setup, engine, events, usage)


# -- early stopping -----------------------------------------------------------

AGREE = ("The answer is 7.",)
# After the split first window the leader can always still be caught: 3:2, 3:3, 4:3, 5:3.
SPLIT = ("7", "12", "7", "12", "7", "12", "7", "7")

# id -> (rule, window, answers, started, max in flight, early stopped)
EARLY: dict[str, tuple[str, int, tuple[str, ...], int, int, bool]] = {
    "esc-window-4": ("esc", 4, AGREE, 4, 4, True),
    "esc-window-2": ("esc", 2, AGREE, 2, 2, True),
    # Beta(5, 1) > 1/2 with 31/32 >= 0.95: four agreeing votes, two windows of two.
    "adaptive-window-2": ("adaptive", 2, AGREE, 4, 2, True),
    "adaptive-window-4": ("adaptive", 4, AGREE, 4, 4, True),
    # A split first window: the second runs, and with nothing left stopping saves nothing.
    "esc-split-window": ("esc", 4, SPLIT, 8, 4, False),
}


@pytest.mark.parametrize(("rule", "window", "answers", "started", "in_flight", "stopped"), list(EARLY.values()),
                         ids=list(EARLY))
@pytest.mark.asyncio
async def test_early_stopping_samples_in_windows(rule: str, window: int, answers: tuple[str, ...], started: int,
                                                 in_flight: int, stopped: bool) -> None:
    base = make_plan(**SC, **THINK, samples=8)
    fixed = Setup(base, says(*answers))
    early = Setup(vary(base, early_stop=True, window=window, stop_rule=rule), says(*answers))
    f_engine, f_events, f_usage = await run(fixed)
    e_engine, e_events, e_usage = await run(early)
    ft, et = trace_of(f_events, 0), trace_of(e_events, 0)
    assert (ft["started"], ft["early_stopped"], ft["tokens_saved_estimate"]) == (8, False, 0)
    assert f_engine.max_in_flight == 8
    assert (et["started"], et["early_stopped"]) == (started, stopped)
    assert e_engine.max_in_flight == in_flight  # a window at a time, all of it at once
    assert sorted({c.request_id.split("-")[1] for c in e_engine.calls}) == sorted(f"c0s{k}" for k in range(started))
    assert e_engine.aborted == []
    assert len(progress(e_events)) == started
    assert et["answer"] == ft["answer"] and text_of(e_events, Answer) == text_of(f_events, Answer)
    # Every candidate costs the same here: the saving is exact.
    assert e_usage.completion_tokens * 8 == f_usage.completion_tokens * started
    assert et["tokens_saved_estimate"] == f_usage.completion_tokens - e_usage.completion_tokens
    assert (et["tokens_saved_estimate"] > 0) is stopped
    check_accounting(fixed, f_engine, f_events, f_usage)
    check_accounting(early, e_engine, e_events, e_usage)


LONG = ["x"] * 250  # never finishes within the test


def overtaken(choice: int, k: int) -> Cand:
    return Cand(LONG if k == 3 else ["The answer is 7.", EOS])


@pytest.mark.parametrize("rule", ["overtake", "esc", "adaptive"])
@pytest.mark.asyncio
async def test_a_leader_that_cannot_be_overtaken_aborts_the_running_candidates(rule: str, schedule: str) -> None:
    # 3 of 4 agree: with one sample left the leader cannot lose (every rule checks this).
    setup = Setup(make_plan(**dict(SC, max_tokens=300), samples=4, early_stop=True, stop_rule=rule,
                            stop_threshold=0.999), overtaken)
    engine, events, usage = await run(setup)
    assert engine.aborted == [cand_id(3)] and engine.in_flight == 0
    assert sorted(engine.finished) == [cand_id(k) for k in range(3)]
    trace = trace_of(events, 0)
    assert trace["early_stopped"] is True and trace["votes"] == {"7": 3}
    cands = trace["candidates"]
    assert [c["aborted"] for c in cands] == [False, False, False, True]
    assert cands[3]["finish_reason"] is None and cands[3]["answer"] is None
    partial = len(engine.calls_for(cand_id(3))[0].output_ids)
    assert 0 < cands[3]["tokens"] == partial < len(LONG)
    mean = sum(c["tokens"] for c in cands[:3]) / 3
    assert trace["tokens_saved_estimate"] == round(mean - partial) > 0
    assert [p["candidate"] for p in progress(events)] == [0, 1, 2]  # the aborted one never reports
    check_accounting(setup, engine, events, usage)


# -- budget_tokens is shared between the candidates --------------------------

# id -> (plan, tokens of the budget reserved for judges)
BUDGETS: dict[str, tuple[Plan, int]] = {
    "sc-thinking": (make_plan(**SC, **dict(THINK, max_thinking_tokens=8), samples=3, budget_tokens=30), 0),
    "sc-answer-only": (make_plan(**SC, samples=3, budget_tokens=31), 0),
    "sc-early-stop": (make_plan(**SC, samples=4, budget_tokens=40, early_stop=True, window=2), 0),
    "bon-confidence": (make_plan(**BON, **dict(THINK, max_thinking_tokens=8), samples=3, budget_tokens=30), 0),
    # One judge token per candidate stays inside the budget too.
    "bon-self-judge": (make_plan(**BON, samples=3, budget_tokens=30, scorer="self_judge", judge_question=QUESTION), 3),
}


def chatty(choice: int, k: int) -> Cand:
    return Cand(["The answer is 7, because seven is the answer.", EOS], ["I think a lot, at length.", [CLOSE]])


@pytest.mark.parametrize(("plan", "judges"), list(BUDGETS.values()), ids=list(BUDGETS))
@pytest.mark.asyncio
async def test_budget_tokens_is_split_between_candidates(plan: Plan, judges: int) -> None:
    model = chatty if plan.thinking else says("The answer is 7, because seven is the answer.", think=False)
    setup = Setup(plan, model)
    engine, events, usage = await run(setup)
    assert plan.budget_tokens is not None
    share = (plan.budget_tokens - judges) // option(plan, "samples")
    for c in engine.calls:
        assert c.sampling.max_tokens <= (1 if "-judge" in c.request_id else share), c.request_id
    trace = trace_of(events, 0)
    assert all(c["tokens"] == share for c in trace["candidates"])  # each spent its whole share
    assert usage.completion_tokens <= plan.budget_tokens
    assert usage.completion_tokens == trace["started"] * share + judges
    check_accounting(setup, engine, events, usage)


# -- best_of_n ----------------------------------------------------------------


def confidence_of(text: str) -> float:
    """Scripted-engine token confidence: -(lp + lp - 1) / 2 with lp = -(id % 10) / 10."""
    return (ord(text) % 10) / 10 + 0.5


def lowest_group(text: str, group: int = scoring.GROUP) -> float:
    conf = [confidence_of(ch) for ch in text]
    if len(conf) <= group:
        return sum(conf) / len(conf)
    return min(sum(conf[i:i + group]) / group for i in range(len(conf) - group + 1))


# 'd' (100) and eos are 0.5, 'e' (101) 0.6, 'c' (99) 1.4. Candidate 2 has the
# highest mean but one all-'d' stretch of 32 tokens: the lowest group sinks it.
CONFIDENT = ("ddddd", "eeeeeeeeee", "c" * 32 + "d" * 32)


@pytest.mark.parametrize("thinking", [False, True], ids=["answer-only", "thinking"])
@pytest.mark.asyncio
async def test_best_of_n_confidence_picks_the_highest_lowest_group_confidence(thinking: bool) -> None:
    setup = Setup(make_plan(**BON, **(THINK if thinking else {}), samples=3), says(*CONFIDENT, think=thinking))
    engine, events, usage = await run(setup)
    expected = [lowest_group(text + EOS) for text in CONFIDENT]
    assert expected[1] > expected[0] == expected[2]
    assert sum(map(confidence_of, CONFIDENT[2] + EOS)) / 65 > expected[1]  # a mean would pick candidate 2
    trace = trace_of(events, 0)
    scores = [c["score"] for c in trace["candidates"]]
    assert trace["scorer"] == "confidence" and trace["selected"] == scores.index(max(scores))
    if thinking:  # the thinking tokens are scored too, so the scores move
        assert scores != pytest.approx(expected)
        check_accounting(setup, engine, events, usage)
        return
    assert trace["selected"] == 1
    assert scores == pytest.approx(expected)
    assert text_of(events, Answer) == CONFIDENT[1]
    assert text_of(events, Thinking) == ("thought 1" if thinking else "")
    assert [c.sampling.logprobs for c in engine.calls if c.request_id.endswith("-answer")] == [5] * 3
    assert all(e.logprobs is None for e in events if isinstance(e, Answer))  # the client did not ask
    check_accounting(setup, engine, events, usage)


def test_confidence_reads_the_top_5_whatever_the_client_asked_for() -> None:
    # vLLM returns the top max(client, 5); the score must not change with the client's top_logprobs.
    five = tuple(("t", -0.2) for _ in range(5))
    wide = TokenLogprob("t", -0.2, five + tuple(("u", -9.0) for _ in range(15)))
    assert scoring.token_confidence(wide) == pytest.approx(0.2)
    assert scoring.token_confidence(TokenLogprob("t", -0.2, five)) == pytest.approx(0.2)
    assert scoring.token_confidence(TokenLogprob("t", -0.7)) == pytest.approx(0.7)  # no top: the token itself


# id -> (token confidences, group, lowest group confidence)
GROUPS: dict[str, tuple[list[float], int, float]] = {
    "empty": ([], 4, 0.0),
    "shorter-than-a-group-is-the-mean": ([1.0, 2.0, 3.0], 4, 2.0),
    "one-group": ([1.0, 2.0, 3.0, 6.0], 4, 3.0),
    "lowest-window": ([5.0, 5.0, 1.0, 1.0, 5.0, 5.0], 2, 1.0),
    "lowest-window-at-the-end": ([5.0, 5.0, 5.0, 1.0, 2.0], 2, 1.5),
}


@pytest.mark.parametrize(("conf", "group", "expected"), list(GROUPS.values()), ids=list(GROUPS))
def test_lowest_group_confidence(conf: list[float], group: int, expected: float) -> None:
    lps = [TokenLogprob("t", -c, (("t", -c),)) for c in conf]
    assert scoring.lowest_group_confidence(lps, group) == pytest.approx(expected)


JUDGED = ("alpha", "beta", "gamma")
P_YES = {"alpha": 0.3, "beta": 0.9, "gamma": 0.6}


@pytest.mark.asyncio
async def test_self_judge_asks_once_per_candidate_and_picks_the_likeliest_yes() -> None:
    setup = Setup(make_plan(**BON, samples=3, scorer="self_judge", judge_question=QUESTION),
                  says(*JUDGED, think=False), p_yes=P_YES)
    engine, events, usage = await run(setup)
    judges = [c for c in engine.calls if "-judge" in c.request_id]
    assert sorted(c.request_id for c in judges) == [f"{RID}-c0-judge{k}" for k in range(3)]
    for c in judges:
        k = int(c.request_id[-1])
        assert c.prompt_ids == P + encode(JUDGED[k]) + FOLLOWUP
        assert (c.sampling.max_tokens, c.sampling.logprobs, c.sampling.temperature) == (1, 20, 0.0)
        assert len(c.output_ids) == 1
    assert engine.max_judging == 3  # all at once
    assert engine.calls[-3:] == judges  # after every candidate finished
    trace = trace_of(events, 0)
    assert trace["scorer"] == "self_judge" and trace["selected"] == 1
    assert [c["score"] for c in trace["candidates"]] == pytest.approx([P_YES[a] for a in JUDGED])
    assert text_of(events, Answer) == "beta"
    judged = [e.info for e in events if isinstance(e, Progress) and "judged" in e.info]
    # Issue 11: the judges' progress comes once they all finished, in candidate order
    # (it came as each judge finished before), after every candidate's progress.
    assert [j["judged"] for j in judged] == [0, 1, 2]
    reports = [i for i, e in enumerate(events) if isinstance(e, Progress)]
    assert [events[i].info.get("judged") for i in reports[-3:]] == [0, 1, 2]
    assert {j["judged"]: j["score"] for j in judged} == pytest.approx({k: P_YES[a] for k, a in enumerate(JUDGED)})
    # Candidates needed no logprobs; the judge's are not the client's either.
    assert all(c.sampling.logprobs is None for c in engine.calls if "-judge" not in c.request_id)
    assert all(e.logprobs is None for e in events if isinstance(e, Answer))
    check_accounting(setup, engine, events, usage)


@pytest.mark.asyncio
async def test_self_judge_without_a_followup_turn_fails_cleanly() -> None:
    setup = Setup(make_plan(**BON, samples=2, scorer="self_judge", judge_question=QUESTION),
                  says("a", "b", think=False), followup=False)
    engine = JudgedEngine(setup)
    with pytest.raises(ValueError, match="follow-up"):
        async for _ in events_of(setup.plan, 1, make_ctx(setup, engine)):
            pass
    assert engine.in_flight == 0 and not any("-judge" in c.request_id for c in engine.calls)


# -- progress and streamed candidates ---------------------------------------


@pytest.mark.parametrize("stream_candidates", [False, True], ids=["quiet", "stream-candidates"])
@pytest.mark.parametrize("strategy", ["self_consistency", "best_of_n"])
@pytest.mark.asyncio
async def test_progress_once_per_candidate_and_tagged_thinking(strategy: str, stream_candidates: bool,
                                                               schedule: str) -> None:
    setup = Setup(make_plan(strategy=strategy, max_tokens=200, **THINK, samples=3, stream_candidates=stream_candidates),
                  says("The answer is 7.", "7", "8", slow=(0,)))
    engine, events, usage = await run(setup)
    reports = progress(events)
    assert sorted(r["candidate"] for r in reports) == [0, 1, 2]
    assert [r["candidates_finished"] for r in reports] == [1, 2, 3]
    assert all(r["of"] == 3 for r in reports)
    assert {r["candidate"]: r["answer"] for r in reports} == {0: "7", 1: "7", 2: "8"}
    assert reports[-1]["candidate"] == 0  # the slow one finished last
    tagged = [e for e in events if isinstance(e, Thinking) and e.candidate is not None]
    if stream_candidates:
        for k in range(3):
            assert "".join(e.text for e in tagged if e.candidate == k) == f"thought {k}"
        last_tagged = max(i for i, e in enumerate(events) if e in tagged)
        first_reply = min(i for i, e in enumerate(events) if isinstance(e, Thinking) and e.candidate is None)
        assert last_tagged < first_reply  # candidates stream live, the winner is replayed after
    else:
        assert tagged == []
    winner = trace_of(events, 0)["selected"]
    assert text_of(events, Thinking) == f"thought {winner}"
    check_accounting(setup, engine, events, usage)


# -- closing the stream aborts every candidate ------------------------------


def slow_but_first(choice: int, k: int) -> Cand:
    return Cand(["7", EOS] if k == 0 else LONG)


def thinks_forever(choice: int, k: int) -> Cand:
    return Cand(["b"] * 60, ["a"] * 60)


@pytest.mark.parametrize("strategy", ["self_consistency", "best_of_n"])
@pytest.mark.parametrize("when", ["first-tagged-thought", "first-progress", "cancel-consumer"])
@pytest.mark.asyncio
async def test_closing_mid_sampling_aborts_every_running_candidate(strategy: str, when: str) -> None:
    if when == "first-progress":  # one candidate finished, two are running
        setup = Setup(make_plan(strategy=strategy, max_tokens=300, samples=3), slow_but_first, n=1)
        running = [cand_id(k) for k in (1, 2)]
        finished = [cand_id(0)]
    else:
        setup = Setup(make_plan(strategy=strategy, max_tokens=300, **THINK, samples=3, stream_candidates=True),
                      thinks_forever, n=2)
        running = sorted(cand_id(k, "think", i) for i in range(2) for k in range(3))
        finished = []
    engine = JudgedEngine(setup)
    events = events_of(setup.plan, setup.n, make_ctx(setup, engine))
    if when == "cancel-consumer":
        await cancel_consumer(events)
    else:
        await close_at(events, Progress if when == "first-progress" else Thinking)
    assert engine.in_flight == 0
    assert sorted(engine.aborted) == running
    assert engine.finished == finished
    assert len(engine.calls) == len(running) + len(finished)  # nothing new started after the close


# -- the stream and the response are folds over the same events -------------

SETUPS: dict[str, Setup] = {
    "sc-majority-thinking": Setup(make_plan(**SC, **THINK, samples=5), says(*VOTES["majority"][0])),
    "sc-weighted-logprobs": Setup(make_plan(**SC, **THINK, samples=3, vote="weighted"), says("7", "8", "7"),
                                  client={"logprobs": 1}),
    "sc-early-stop": Setup(make_plan(**SC, **THINK, samples=8, early_stop=True, window=4), says(*AGREE)),
    "sc-overtake-abort": Setup(make_plan(**dict(SC, max_tokens=300), samples=4, early_stop=True, stop_rule="overtake"),
                               overtaken),
    "sc-stream-candidates-n2": Setup(make_plan(**SC, **THINK, samples=3, stream_candidates=True), says("7", "8", "8"),
                                     n=2),
    "bon-confidence": Setup(make_plan(**BON, samples=3), says(*CONFIDENT, think=False)),
    "bon-self-judge-thinking": Setup(make_plan(**BON, **THINK, samples=3, scorer="self_judge", judge_question=QUESTION),
                                     says(*JUDGED), p_yes=P_YES),
    "bon-budget": Setup(make_plan(**BON, **dict(THINK, max_thinking_tokens=8), samples=3, budget_tokens=30), chatty),
}


@pytest.mark.parametrize("name", list(SETUPS), ids=list(SETUPS))
@pytest.mark.asyncio
async def test_stream_equals_response(name: str) -> None:
    setup = SETUPS[name]
    engine, events, usage = await run(setup)
    check_accounting(setup, engine, events, usage)
    raw, body = stream_and_response(events, usage, setup.plan, setup.n)

    comments = [f for f in raw.split(b"\n\n") if f.startswith(b": progress ")]
    assert len(comments) == sum(isinstance(e, Progress) for e in events) > 0
    chunks = parse_sse(raw)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == body["usage"]
    assert body["usage"]["completion_tokens"] == usage.completion_tokens
    # Candidates' live thinking is tagged; a client that ignores tagged chunks gets the response.
    tagged = [c for c in chunks if c["choices"] and "candidate" in c["choices"][0]]
    if option(setup.plan, "stream_candidates"):
        for i in range(setup.n):
            assert {c["choices"][0]["candidate"] for c in tagged if c["choices"][0]["index"] == i} == {0, 1, 2}
    else:
        assert tagged == []
    joined = join_stream([c for c in chunks if c not in tagged], setup.n)
    for choice in body["choices"]:
        j, msg = joined[choice["index"]], choice["message"]
        assert j["content"] == msg["content"] != ""
        assert j["finish"] == [choice["finish_reason"]]
        assert j["trace"] == choice["reasoning_trace"]
        assert j["trace"]["strategy"] == setup.plan.strategy
        assert j["logprobs"] == (choice["logprobs"] or {}).get("content")
        for f in FIELDS:
            assert j[f] == (msg[f] or "")
        assert (msg["reasoning_content"] is not None) is setup.plan.thinking
    if "logprobs" in setup.client:
        assert all(len(e["top_logprobs"]) == setup.client["logprobs"] for e in joined[0]["logprobs"])


# -- prompt sharing -----------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["self_consistency", "best_of_n"], ids=["sc", "bon"])
@pytest.mark.asyncio
async def test_share_prefix_starts_one_candidate_then_the_rest_from_the_cache(strategy: str) -> None:
    """With share_prefix, candidate 0 computes the prompt alone; the others start
    once it has output, so the engine serves their prompt from the prefix cache."""
    plan = make_plan(**(SC if strategy == "self_consistency" else BON), samples=4, share_prefix=True)
    setup = Setup(plan, says("7", "7", "7", "7", slow=(0, 1, 2, 3)))
    engine, events, usage = await run(setup)
    ids = [c.request_id for c in engine.calls]
    assert ids[0] == cand_id(0) + "-answer" or ids[0].startswith(cand_id(0))
    # every later candidate's prompt was already computed: a full cache hit on the prompt
    later = engine.calls[1:]
    assert len(later) == 3 and all(c.cached_tokens >= len(P) - 1 for c in later)
    check_accounting(setup, engine, events, usage)


# DeepConf online. The scripted engine's token confidence is 0.5 + (id % 10) / 10:
# "Y" (89) is confident, "Z" (90) is not.
SURE = "Y" * 40 + "The answer is 7."
UNSURE = "Z" * 40 + "The answer is 9."


def deepconf_model(choice: int, k: int) -> Cand:
    text = SURE if k < 4 else UNSURE
    return Cand([*text, EOS])  # a character a delta: the filter can stop it midway


@pytest.mark.asyncio
async def test_deepconf_online_stops_low_confidence_candidates_after_the_warm_up() -> None:
    base = make_plan(**dict(SC, max_tokens=300), samples=10)
    plain_engine, plain_events, _ = await run(Setup(base, deepconf_model))
    assert trace_of(plain_events, 0)["votes"] == {"9": 6, "7": 4}  # the unsure majority wins a plain vote
    setup = Setup(vary(base, deepconf_warmup=4, deepconf_keep=0.9, vote="weighted"), deepconf_model)
    engine, events, usage = await run(setup)
    trace = trace_of(events, 0)
    assert trace["answer"] == "7" and trace["votes"] == {"7": 4}
    assert trace["filtered"] == 6 and trace["confidence_threshold"] > 0.5
    cands = trace["candidates"]
    assert [c.get("filtered", False) for c in cands] == [False] * 4 + [True] * 6
    # Each unsure candidate is stopped once a whole window of its tokens is below the
    # threshold (the engine may have run a few tokens ahead of the check), not at its end.
    assert all(scoring.GROUP <= c["tokens"] < len(UNSURE) for c in cands[4:])
    assert sorted(engine.aborted) == sorted(cand_id(k) for k in range(4, 10))
    assert trace["tokens_saved_estimate"] > 0
    # The warm-up ran alone: the threshold needs whole traces.
    assert plain_engine.max_in_flight == 10 and engine.max_in_flight == 6
    check_accounting(setup, engine, events, usage)


def test_deepconf_threshold_is_a_quantile_of_the_warm_up() -> None:
    assert scoring.percentile([1.0, 2.0, 3.0, 4.0], 0.0) == 1.0
    assert scoring.percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert scoring.percentile([1.0, 2.0], 1.0) == 2.0
    lps = [TokenLogprob("a", -0.1 * (i % 7), ((("a", -0.1 * (i % 7)),))) for i in range(80)]
    running = scoring.GroupConfidence()
    running.feed(lps[:50])
    running.feed(lps[50:])
    assert running.lowest == pytest.approx(scoring.lowest_group_confidence(lps))
