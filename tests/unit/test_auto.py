"""Strategy ``auto`` through the runner, on the scripted engine.

The auto table is given directly in the plan (``AutoOptions.levels``), so these tests do
not depend on configs/auto.toml. The scripted model answers by engine request
id: probe candidate k says ``probes[k]``; the chosen plan's requests get fixed
answers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

import pytest
from scripted_engine import EOS, Output, ScriptedEngine, char_model_info

from strategies.auto import difficulty
from strategies.engine import Sampling
from strategies.events import Answer, Event, Progress
from strategies.ledger import Usage
from strategies.plan import Plan
from tests.unit.harness import RID, P, contexts, followup, make_plan, option, run_to_end, trace_of

EASY = make_plan("single", max_tokens=40)
MEDIUM = make_plan("self_consistency", samples=2, max_tokens=40)
HARD = make_plan("revision", rounds=1, max_tokens=40, critique_prompt="Check.", revise_prompt="Fix.",
                 critique_ok="No errors")


def auto(**changes: object) -> Plan:
    """The auto plan of these tests, with ``changes`` (plan fields or AutoOptions)."""
    # The top plan thinks: the probe must not.
    fields = dict(thinking=True, max_thinking_tokens=50, max_tokens=100, probe_samples=3, probe_tokens=12,
                  levels=(("easy", EASY), ("medium", MEDIUM), ("hard", HARD)))
    return make_plan("auto", **{**fields, **changes})


AUTO = auto()

SAYS = {"easy": "Easy: 7", "medium": "42", "draft": "Draft: the answer is 7.", "critique": "No errors."}
# The chosen plan's engine requests, by level.
REQUESTS = {"easy": ["c0-answer"], "medium": ["c0s0-answer", "c0s1-answer"], "hard": ["c0-draft", "c0-critique0"]}


class AutoEngine(ScriptedEngine):
    def __init__(self, probes: tuple[str, ...]) -> None:
        super().__init__(char_model_info(), self.answer)
        self.probes = probes

    def answer(self, prompt: tuple[int, ...], s: Sampling) -> Output:
        rid = self.calls[-1].request_id  # the request being started
        probe = re.fullmatch(rf"{RID}-probe-c0s(\d+)-answer", rid)
        if probe:
            return [self.probes[int(probe.group(1))], EOS]
        name = rid.removeprefix(f"{RID}-c0")
        said = {"s0-answer": SAYS["medium"], "s1-answer": SAYS["medium"], "-answer": SAYS["easy"],
                "-draft": SAYS["draft"], "-critique0": SAYS["critique"]}
        assert name in said, f"unexpected engine request {rid}"
        return [said[name], EOS]


async def run(plan: Plan, probes: tuple[str, ...]) -> tuple[AutoEngine, list[Event], Usage]:
    engine = AutoEngine(probes)
    make = contexts(engine, P, plan.max_tokens, seed=0, budget=plan.budget_tokens, followup=followup)
    return await run_to_end(engine, plan, 1, make)


@dataclass(frozen=True)
class Case:
    plan: Plan
    probes: tuple[str, ...]
    level: str
    agreement: float
    votes: dict[str, int]


CASES: dict[str, Case] = {
    # Three ways of writing 7 are one answer.
    "all-agree-easy": Case(AUTO, ("7", "7.0", "\\boxed{7}"), "easy", 1.0, {"7": 3}),
    "majority-medium": Case(AUTO, ("7", "8", "7"), "medium", 2 / 3, {"7": 2, "8": 1}),
    "split-hard": Case(AUTO, ("7", "8", "9"), "hard", 1 / 3, {"7": 1, "8": 1, "9": 1}),
    "no-answers-hard": Case(AUTO, ("", "", ""), "hard", 0.0, {}),
    "easy-threshold-from-the-plan": Case(auto(probe_samples=4, easy_agreement=0.75), ("7", "7", "8", "7"),
                                         "easy", 0.75, {"7": 3, "8": 1}),
    "medium-threshold-from-the-plan": Case(auto(medium_agreement=0.7), ("7", "8", "7"), "hard", 2 / 3,
                                           {"7": 2, "8": 1}),
}
ANSWERS = {"easy": SAYS["easy"], "medium": SAYS["medium"], "hard": SAYS["draft"]}


async def _run_split(case):
    """Run ``case``; its engine calls split into the probe's and the chosen plan's."""
    engine, events, usage = await run(case.plan, case.probes)
    k = option(case.plan, "probe_samples")
    return engine, events, usage, engine.calls[:k], engine.calls[k:]


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
@pytest.mark.asyncio
async def test_probe_picks_the_plan(case: Case) -> None:
    plan = case.plan
    engine, events, usage, probes, chosen = await _run_split(case)
    k = option(plan, "probe_samples")
    # -- the probe: probe_samples short answers at once, no thinking ------------
    assert sorted(c.request_id for c in probes) == [f"{RID}-probe-c0s{i}-answer" for i in range(k)]
    assert all(c.prompt_ids == P and c.sampling.max_tokens == option(plan, "probe_tokens") for c in probes)
    assert len({c.sampling.seed for c in probes}) == k
    assert engine.max_in_flight == k  # the chosen plans here run at most 2 requests at once
    assert not any(c.request_id.endswith("-think") for c in engine.calls)
    # -- then the chosen plan, with engine ids of its own ---------------------------
    assert [c.request_id for c in chosen] == [f"{RID}-{r}" for r in REQUESTS[case.level]]
    assert len({c.request_id for c in engine.calls}) == len(engine.calls)
    assert [e.text for e in events if isinstance(e, Answer)] == [ANSWERS[case.level]]
    # The probe's progress is not the client's; self_consistency's own is.
    assert sum(isinstance(e, Progress) for e in events) == (option(MEDIUM, "samples") if case.level == "medium" else 0)

    trace = trace_of(events)
    level_plan = dict(option(plan, "levels"))[case.level]
    probe_tokens = sum(len(c.output_ids) for c in probes)
    assert trace["strategy"] == "auto" and trace["ran"] == level_plan.strategy
    assert trace["auto"] == {"difficulty": case.level, "probe_agreement": round(case.agreement, 3),
                             "probe_votes": case.votes, "probe_tokens": probe_tokens,
                             "chosen": level_plan.public()}
    assert difficulty(case.agreement, option(plan, "easy_agreement"), option(plan, "medium_agreement")) == case.level
    # The chosen strategy's own trace is kept.
    inner = {"easy": ("answer", {"tokens": len(SAYS["easy"]) + 1, "finish_reason": "stop"}),
             "medium": ("votes", {"42": 2}), "hard": ("stopped", "critique found no error")}[case.level]
    assert trace[inner[0]] == inner[1]
    # -- usage: the probe's tokens and the chosen plan's --------------------------
    assert usage.completion_tokens == probe_tokens + sum(len(c.output_ids) for c in chosen)
    assert usage.reasoning_tokens == sum(len(c.output_ids) for c in chosen if "-critique" in c.request_id)
    assert usage.engine_requests == len(engine.calls)


@dataclass(frozen=True)
class Budget:
    plan: Plan
    probes: tuple[str, ...]
    level: str
    probe_room: int            # each probe request's max_tokens
    chosen_budget: int | None  # the budget_tokens the chosen plan gets
    chosen_room: list[int]     # its requests' max_tokens


BUDGETS: dict[str, Budget] = {
    # The probe spends 3 x 2 tokens: self_consistency gets the 94 left, 47 per candidate.
    "left-over-budget-passed-on": Budget(
        auto(budget_tokens=100, levels=(("easy", EASY), ("medium", replace(MEDIUM, max_tokens=60)),
                                        ("hard", HARD))),
        ("7", "8", "7"), "medium", 12, 94, [47, 47]),
    # A level's own budget below what is left is the one that holds.
    "level-budget-below-what-is-left": Budget(
        auto(budget_tokens=100, levels=(("easy", replace(EASY, budget_tokens=5)), ("medium", MEDIUM),
                                        ("hard", HARD))),
        ("7", "7", "7"), "easy", 12, 5, [5]),
    "level-budget-without-a-client-budget": Budget(
        auto(levels=(("easy", replace(EASY, budget_tokens=5)), ("medium", MEDIUM), ("hard", HARD))),
        ("7", "7", "7"), "easy", 12, 5, [5]),
    "no-budget": Budget(AUTO, ("7", "7", "7"), "easy", 12, None, [40]),
    # 3 x 12 probe tokens would be over the 12 of the budget: the probe shares 11, 3 each, and leaves 3.
    "probe-stays-inside-a-small-budget": Budget(
        auto(budget_tokens=12), ("The answer is 7.",) * 3, "easy", 3, 3, [3]),
}


@pytest.mark.parametrize("case", list(BUDGETS.values()), ids=list(BUDGETS))
@pytest.mark.asyncio
async def test_budget_left_after_the_probe_is_passed_on(case: Budget) -> None:
    plan = case.plan
    engine, events, usage, probes, chosen = await _run_split(case)
    k = option(plan, "probe_samples")
    assert all("-probe-" in c.request_id for c in probes) and not any("-probe-" in c.request_id for c in chosen)
    assert [c.sampling.max_tokens for c in probes] == [case.probe_room] * k
    assert [c.sampling.max_tokens for c in chosen] == case.chosen_room
    spent = sum(len(c.output_ids) for c in probes)
    trace = trace_of(events)
    assert trace["auto"]["difficulty"] == case.level and trace["auto"]["probe_tokens"] == spent
    level_plan = dict(option(plan, "levels"))[case.level]
    assert trace["auto"]["chosen"] == replace(level_plan, budget_tokens=case.chosen_budget).public()
    if plan.budget_tokens is not None and level_plan.budget_tokens is None:
        assert case.chosen_budget == plan.budget_tokens - spent
    assert usage.completion_tokens == sum(len(c.output_ids) for c in engine.calls)
    if plan.budget_tokens is not None:
        assert usage.completion_tokens <= plan.budget_tokens


# id -> (agreement, easy, medium, level)
LEVELS = {
    "all-agree": (1.0, 1.0, 0.5, "easy"),
    "majority": (2 / 3, 1.0, 0.5, "medium"),
    "at-the-medium-line": (0.5, 1.0, 0.5, "medium"),
    "below-the-medium-line": (0.49, 1.0, 0.5, "hard"),
    "at-a-lower-easy-line": (0.75, 0.75, 0.5, "easy"),
}


@pytest.mark.parametrize(("agreement", "easy", "medium", "level"), list(LEVELS.values()), ids=list(LEVELS))
def test_difficulty(agreement: float, easy: float, medium: float, level: str) -> None:
    assert difficulty(agreement, easy, medium) == level
