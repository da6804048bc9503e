"""Strategy ``beam_search`` through the runner, on the scripted engine.

The scripted model grows a fixed tree of steps: the k-th expansion of a partial
solution (the same prompt asked for the k-th time) generates ``TREE[text][k]``.
Judge requests get their P("Yes") from :class:`JudgedEngine`, by the partial
solution they judge, so which beams survive can be worked out by hand.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from scripted_engine import EOS, Call, Output, decode, encode, word

from strategies.engine import Sampling
from strategies.events import Answer, Event, Progress, Thinking
from strategies.ledger import Usage
from strategies.plan import Plan
from tests.unit.harness import P, done_of, kept, make_plan, option, run_to_end, trace_of, vary
from tests.unit.test_parallel import FOLLOWUP, QUESTION, JudgedEngine, Setup, make_ctx, says

D = "\n\n"
Grow = Callable[[str, int | None, int], Output]  # (beam text, seed, k-th ask of this prompt) -> output


@dataclass(frozen=True)
class BeamSetup(Setup):
    grow: Grow = lambda text, seed, k: [EOS]
    asked: dict[tuple[int, ...], int] = field(default_factory=dict)

    def script(self, prompt: tuple[int, ...], s: Sampling) -> Output:
        if prompt[-len(FOLLOWUP):] == FOLLOWUP:
            return ["Y"]  # a judge: JudgedEngine sets its logprobs
        assert prompt[:len(P)] == P
        k = self.asked.get(prompt, 0)
        self.asked[prompt] = k + 1
        return self.grow(decode(prompt[len(P):]), s.seed, k)


def phase(request_id: str) -> tuple[str, int]:
    """("expand" | "judge", step) of an engine request of the search."""
    m = re.search(r"-(judge)?s(\d+)b\d+e\d+j?$", request_id)
    assert m is not None, request_id
    return ("judge" if m.group(1) else "expand", int(m.group(2)))


class BeamEngine(JudgedEngine):
    """Also records how many requests of each (phase, step) were in flight at once."""

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self.live: dict[tuple[str, int], int] = {}
        self.peak: dict[tuple[str, int], int] = {}

    async def generate(self, prompt_ids, sampling, request_id):  # type: ignore[override]
        key = phase(request_id)
        self.live[key] = self.live.get(key, 0) + 1
        self.peak[key] = max(self.peak.get(key, 0), self.live[key])
        stream = super().generate(prompt_ids, sampling, request_id)
        try:
            async for delta in stream:
                yield delta
        finally:
            self.live[key] -= 1
            await stream.aclose()


async def run(setup: BeamSetup) -> tuple[BeamEngine, list[Event], Usage]:
    engine = BeamEngine(setup)
    return await run_to_end(engine, setup.plan, setup.n, make_ctx(setup, engine))


def grown(call: Call) -> tuple[int, ...]:
    """The beam an expansion made: its prompt plus its step, minus eos."""
    return call.prompt_ids + kept(call)


def text_of(ids: tuple[int, ...]) -> str:
    return decode(ids[len(P):])


A1, B1 = "A1." + D, "B1." + D
A2 = A1 + "A2 the." + D  # " the" is a word token: the next prompt must carry its id
A3 = A2 + "A3." + D
TREE: dict[str, list[Output]] = {
    # The stop string ends a step mid-chunk: "junk" is never generated.
    "": [["A1.", D, "junk"], ["B1." + D + "junk"]],
    A1: [["A2", [word(" the")], ".", D], ["Ax.", EOS]],
    B1: [["B2.", D], ["B3.", D]],
    A2: [["The answer is 7.", EOS], ["A3.", D]],
    A3: [["Done 9.", EOS], ["Done 8.", EOS]],
}
AX, A7 = A1 + "Ax.", A2 + "The answer is 7."
D9, D8 = A3 + "Done 9.", A3 + "Done 8."
P_YES = {A1: 0.6, B1: 0.4, A2: 0.9, AX: 0.7, B1 + "B2." + D: 0.3, B1 + "B3." + D: 0.2,
         A7: 0.8, A3: 0.95, D9: 0.5, D8: 0.85}


def tree(text: str, seed: int | None, k: int) -> Output:
    return TREE[text][k % len(TREE[text])]


BEAM = make_plan("beam_search", max_tokens=200, beam_width=2, max_steps=3, expansions=2, step_tokens=20,
                 step_delimiter=D, judge_question=QUESTION)


@dataclass(frozen=True)
class Search:
    plan: Plan
    kept: list[list[str]]  # the beams kept after each step, best first
    best: str              # the beam whose text is the answer


SEARCHES: dict[str, Search] = {
    # A finished beam (A7, 0.8) is the answer over a better-scored unfinished one (A3, 0.95).
    "finished-beam-wins": Search(BEAM, [[A1, B1], [A2, AX], [A3, A7]], A7),
    "max-steps-2": Search(vary(BEAM, max_steps=2), [[A1, B1], [A2, AX]], AX),
    "max-steps-1-nothing-finished": Search(vary(BEAM, max_steps=1), [[A1, B1]], A1),
    "beam-width-1": Search(vary(BEAM, beam_width=1), [[A1], [A2], [A3]], A3),
    # Every kept beam finished after step 3: step 4 never runs.
    "all-finished-before-max-steps": Search(vary(BEAM, max_steps=8), [[A1, B1], [A2, AX], [A3, A7], [D8, A7]],
                                            D8),
}


def finished(text: str) -> bool:
    return not text.endswith(D)


@pytest.mark.parametrize("case", list(SEARCHES.values()), ids=list(SEARCHES))
@pytest.mark.asyncio
async def test_beam_search(case: Search) -> None:
    plan = case.plan
    setup = BeamSetup(plan, says(""), p_yes=P_YES, grow=tree)
    engine, events, usage = await run(setup)
    steps = len(case.kept)
    live = [[""]] + [[t for t in kept if not finished(t)] for kept in case.kept]
    expanded = [option(plan, "expansions") * len(live[s]) for s in range(steps)]

    # -- per step: every expansion at once, then every judge at once -----------
    phases = [phase(c.request_id) for c in engine.calls]
    assert phases == [(kind, s) for s in range(steps) for kind in ("expand", "judge") for _ in range(expanded[s])]
    for s in range(steps):
        assert engine.peak[("expand", s)] == expanded[s]
        assert engine.peak[("judge", s)] == expanded[s]
    expansions = {s: [c for c in engine.calls if phase(c.request_id) == ("expand", s)] for s in range(steps)}
    judges = {s: [c for c in engine.calls if phase(c.request_id) == ("judge", s)] for s in range(steps)}

    # -- expansions continue the live beams' exact ids and stop at the delimiter --
    for s in range(steps):
        for c in expansions[s]:
            assert (c.sampling.stop, c.sampling.max_tokens, c.sampling.logprobs) == ((D,), option(plan, "step_tokens"), None)
            assert c.finish_reason == "stop" and c.stop_reason in (D, None)
            assert "junk" not in c.output
        parents = sorted(text_of(c.prompt_ids) for c in expansions[s])
        assert parents == sorted(t for t in live[s] for _ in range(option(plan, "expansions")))
        # Expansions of one beam sample with their own seeds (the client's is 0).
        for parent in set(parents):
            seeds = [c.sampling.seed for c in expansions[s] if text_of(c.prompt_ids) == parent]
            assert len(set(seeds)) == option(plan, "expansions") and None not in seeds
        if s == 0:
            assert all(c.prompt_ids == P for c in expansions[0])
            continue
        before = {text_of(grown(c)): grown(c) for c in expansions[s - 1]}
        for c in expansions[s]:
            assert c.prompt_ids == before[text_of(c.prompt_ids)], c.request_id
    from_a2 = [c for s in range(steps) for c in expansions[s] if text_of(c.prompt_ids) == A2]
    assert len(from_a2) == (option(plan, "expansions") if any(A2 in live[s] for s in range(steps)) else 0)
    assert all(word(" the") in c.prompt_ids for c in from_a2)  # A2's word token, not re-encoded characters

    # -- every partial solution is judged once, by a one-token follow-up ---------
    for s in range(steps):
        made = sorted(text_of(grown(c)) for c in expansions[s])
        assert sorted(text_of(c.prompt_ids[:-len(FOLLOWUP)]) for c in judges[s]) == made
        for c in judges[s]:
            assert c.prompt_ids == P + encode(text_of(c.prompt_ids[:-len(FOLLOWUP)])) + FOLLOWUP
            assert (c.sampling.max_tokens, c.sampling.temperature, len(c.output_ids)) == (1, 0.0, 1)
        # The top beam_width by score survive, finished ones included.
        assert set(case.kept[s]) <= set(made) | set(case.kept[s - 1] if s else [])

    # -- the answer and the trace --------------------------------------------------
    assert [e.text for e in events if isinstance(e, Answer)] == [case.best.rstrip()]
    assert not any(isinstance(e, Thinking) for e in events)
    done = done_of(events)
    assert done.finish_reason == ("stop" if finished(case.best) else "length")
    trace = trace_of(events)
    assert trace["strategy"] == "beam_search"
    assert (trace["beam_width"], trace["expansions"]) == (option(plan, "beam_width"), option(plan, "expansions"))
    assert trace["steps"] == [{"step": s, "expanded": expanded[s], "kept": len(case.kept[s]),
                               "scores": [round(P_YES[t], 4) for t in case.kept[s]]} for s in range(steps)]
    assert all(step["kept"] <= option(plan, "beam_width") for step in trace["steps"])
    assert trace["selected_score"] == pytest.approx(P_YES[case.best])
    assert trace["finished"] is finished(case.best)
    assert [e.info for e in events if isinstance(e, Progress)] == [
        {"step": s, "beams": len(case.kept[s]), "best": round(P_YES[case.kept[s][0]], 4)} for s in range(steps)]

    # -- usage: every expansion and every judge token --------------------------
    assert usage.completion_tokens == sum(len(c.output_ids) for c in engine.calls)
    assert usage.reasoning_tokens == 0
    assert usage.engine_requests == len(engine.calls) and usage.prompt_tokens == len(P)


def by_seed(text: str, seed: int | None, k: int) -> Output:
    """A model like vLLM's: what it samples depends on the prompt and the seed only."""
    return [f"seed {seed}.", EOS]


@pytest.mark.parametrize("seed", [0, 7], ids=["seed-0", "seed-7"])
@pytest.mark.asyncio
async def test_expansions_of_a_beam_differ_under_a_client_seed(seed: int) -> None:
    setup = BeamSetup(vary(BEAM, expansions=3, beam_width=3), says(""), seed=seed, grow=by_seed)
    engine, events, usage = await run(setup)
    steps = [c for c in engine.calls if "-judge" not in c.request_id]
    assert len(steps) == 3 and len({c.output for c in steps}) == 3
    assert all(c.sampling.seed is None for c in engine.calls if "-judge" in c.request_id)
    again, _, _ = await run(BeamSetup(setup.plan, says(""), seed=seed, grow=by_seed))
    assert [c.sampling.seed for c in again.calls] == [c.sampling.seed for c in engine.calls]  # reproducible


def long_steps(text: str, seed: int | None, k: int) -> Output:
    return ["x" * 50]


def short_steps(text: str, seed: int | None, k: int) -> Output:
    return [f"s{k}{seed}.", D]


@dataclass(frozen=True)
class Budgeted:
    plan: Plan
    grow: Grow
    rooms: list[int] | None  # every step's expansion max_tokens, when they are worked out here


BUDGETS: dict[str, Budgeted] = {
    # 30 left, 2 expansions + 2 judges: 14 each, not 15 (2 x 15 + 2 judge tokens is 32).
    "budget-one-step": Budgeted(vary(BEAM, budget_tokens=30), long_steps, [14]),
    "budget-several-steps": Budgeted(vary(BEAM, budget_tokens=60, step_tokens=8, max_steps=10), short_steps,
                                     None),
    "budget-odd-split": Budgeted(vary(BEAM, budget_tokens=25, expansions=3, beam_width=1), long_steps, [7]),
    # No budget: a beam stops at max_tokens (8, then 12 - 8), it does not run to 16.
    "max-tokens-caps-a-beam": Budgeted(vary(BEAM, max_tokens=12, step_tokens=8, expansions=1, beam_width=1),
                                       long_steps, [8, 4]),
}


@pytest.mark.parametrize("case", list(BUDGETS.values()), ids=list(BUDGETS))
@pytest.mark.asyncio
async def test_budget_is_split_between_expansions_and_judges(case: Budgeted) -> None:
    plan = case.plan
    engine, events, usage = await run(BeamSetup(plan, says(""), grow=case.grow))
    spent, rooms = 0, []
    for s in sorted({phase(c.request_id)[1] for c in engine.calls}):
        calls = [c for c in engine.calls if phase(c.request_id)[1] == s]
        grows = [c for c in calls if "-judge" not in c.request_id]
        room = {c.sampling.max_tokens for c in grows}
        assert len(room) == 1  # one share for every expansion of a step
        rooms.append(room.pop())
        if plan.budget_tokens is not None:  # each expansion's share plus its judge's token fit what is left
            assert len(grows) * (rooms[-1] + 1) <= plan.budget_tokens - spent
        spent += sum(len(c.output_ids) for c in calls)
    if case.rooms is not None:
        assert rooms == case.rooms
    assert usage.completion_tokens == spent == sum(len(c.output_ids) for c in engine.calls)
    if plan.budget_tokens is not None:
        assert usage.completion_tokens <= plan.budget_tokens
    answer = "".join(e.text for e in events if isinstance(e, Answer))
    assert 0 < len(answer) <= plan.max_tokens
    done = done_of(events)
    assert all(step["kept"] <= option(plan, "beam_width") for step in trace_of(events)["steps"])
    if case.grow is long_steps:  # cut by the budget or max_tokens, never finished by the model
        assert done.finish_reason == "length" and answer == "x" * sum(rooms)


# -- DVTS selection ----------------------------------------------------------------

from strategies.beam import Beam, _select  # noqa: E402

SELECT = {
    # plain beam search: one strong subtree may take every slot
    "beam-top-k": (False, [(0, 0.9), (0, 0.8), (1, 0.3), (1, 0.2)], [(0, 0.9), (0, 0.8)]),
    # DVTS: each subtree keeps its own best, whatever the others score
    "dvts-one-per-tree": (True, [(0, 0.9), (0, 0.8), (1, 0.3), (1, 0.2)], [(0, 0.9), (1, 0.3)]),
    "dvts-tree-order-by-score": (True, [(1, 0.7), (0, 0.1), (1, 0.2), (0, 0.6)], [(1, 0.7), (0, 0.6)]),
}


@pytest.mark.parametrize(("dvts", "pool", "kept"), list(SELECT.values()), ids=list(SELECT))
def test_select_keeps_beam_width_or_one_per_subtree(dvts: bool, pool, kept) -> None:
    plan = make_plan("beam_search", beam_width=2, dvts=dvts)
    beams = [Beam((i,), score=s, tree=t) for i, (t, s) in enumerate(pool)]
    assert [(b.tree, b.score) for b in _select(beams, plan.options)] == kept
