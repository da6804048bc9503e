"""Strategy ``revision`` through the runner, on the scripted engine.

Revision is sequential, so the script is a list of outputs in request order:
draft, critique, revision, critique, ... (a thinking request first when the plan
thinks). Outputs carry word tokens that ``encode`` never produces, so a turn
built by re-tokenizing the conversation instead of continuing its exact ids
shows up as a mismatch.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from scripted_engine import EOS, WORD_BASE, Call, Output, ScriptedEngine, char_model_info, word

from strategies.answers import answer_key
from strategies.events import Answer, Event, Progress, Thinking
from strategies.ledger import Usage
from strategies.plan import Plan
from tests.unit.harness import (
    CLOSE,
    RID,
    THINK_PROMPT,
    P,
    contexts,
    done_of,
    events_of,
    followup,
    kept,
    make_plan,
    run_to_end,
    trace_of,
    vary,
)

CRITIQUE = "Check your answer."
REVISE = "Write the corrected answer."
BASE = make_plan("revision", max_tokens=100, rounds=2, critique_prompt=CRITIQUE, revise_prompt=REVISE,
                 critique_ok=r"(?i)\bno errors?\b")

# "So the answer is 41." with " the" and " answer" as single word tokens.
DRAFT_41: Output = ["So", [word(" the"), word(" answer")], " is 41.", EOS]
REVISED_42: Output = ["So", [word(" the")], " answer is 42.", EOS]
NO_ERRORS: Output = ["No errors.", EOS]
WRONG: Output = ["Wrong: 6*7 is 42.", EOS]
THOUGHT: Output = ["six times seven", [CLOSE]]


async def run(plan: Plan, outputs: list[Output], has_followup: bool = True
              ) -> tuple[ScriptedEngine, list[Event], Usage]:
    engine = ScriptedEngine(char_model_info(), outputs)
    make = contexts(engine, P, plan.max_tokens, seed=0, budget=plan.budget_tokens,
                    followup=followup if has_followup else None)
    return await run_to_end(engine, plan, 1, make)


def turn_calls(engine: ScriptedEngine) -> list[Call]:
    return [c for c in engine.calls if not c.request_id.endswith("-think")]


def request_names(labels: list[str]) -> list[str]:
    names, r = [], 0
    for label in labels:
        if label == "draft":
            names.append("draft")
        elif label == "critique":
            names.append(f"critique{r}")
        else:
            names.append(f"revise{r}")
            r += 1
    return [f"{RID}-c0-{n}" for n in names]


def answers(events: list[Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, Answer)]


@dataclass(frozen=True)
class Case:
    plan: Plan
    outputs: list[Output]
    labels: list[str]   # every turn, in order
    stopped: str
    answer: str


CASES: dict[str, Case] = {
    "critique-finds-no-error": Case(BASE, [DRAFT_41, NO_ERRORS], ["draft", "critique"],
                                    "critique found no error", "So the answer is 41."),
    "revised-then-no-error": Case(vary(BASE, rounds=3), [DRAFT_41, WRONG, REVISED_42, NO_ERRORS],
                                  ["draft", "critique", "revision", "critique"],
                                  "critique found no error", "So the answer is 42."),
    # The revision says 41 again, in other words: the answer is stable, stop.
    "answer-unchanged": Case(vary(BASE, rounds=3), [DRAFT_41, WRONG, ["The answer is 41.", EOS]],
                             ["draft", "critique", "revision"], "answer unchanged", "The answer is 41."),
    "rounds-exhausted": Case(BASE, [DRAFT_41, WRONG, REVISED_42, ["Still wrong.", EOS], ["It is 43.", EOS]],
                             ["draft", "critique", "revision", "critique", "revision"],
                             "rounds exhausted", "It is 43."),
    "rounds-0-is-the-draft": Case(vary(BASE, rounds=0), [DRAFT_41], ["draft"], "rounds exhausted",
                                  "So the answer is 41."),
    # critique_ok is what stops the rounds: without it "No errors." is just a critique.
    "critique-ok-unset": Case(vary(BASE, rounds=1, critique_ok=""), [DRAFT_41, NO_ERRORS, REVISED_42],
                              ["draft", "critique", "revision"], "rounds exhausted", "So the answer is 42."),
    "thinking-first": Case(vary(BASE, thinking=True, max_thinking_tokens=40), [THOUGHT, DRAFT_41, WRONG,
                                                                                REVISED_42, NO_ERRORS],
                           ["draft", "critique", "revision", "critique"], "critique found no error",
                           "So the answer is 42."),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
@pytest.mark.asyncio
async def test_draft_critique_revise(case: Case) -> None:
    plan = case.plan
    engine, events, usage = await run(plan, case.outputs)
    assert len(engine.calls) == len(case.outputs)  # no turn beyond the stop, none missing
    turns = turn_calls(engine)
    assert [c.request_id for c in turns] == request_names(case.labels)

    # -- every turn continues the exact ids of the conversation so far --------
    thinks = [c for c in engine.calls if c.request_id.endswith("-think")]
    if plan.thinking:
        assert [c.prompt_ids for c in thinks] == [THINK_PROMPT]
        assert engine.calls[0] is thinks[0]  # it thinks first
        assert turns[0].prompt_ids == THINK_PROMPT + tuple(thinks[0].output_ids)  # thought ids precede the draft
    else:
        assert thinks == [] and turns[0].prompt_ids == P
    for prev, call, label in zip(turns, turns[1:], case.labels[1:]):
        question = CRITIQUE if label == "critique" else REVISE
        assert call.prompt_ids == prev.prompt_ids + kept(prev) + followup(question), call.request_id
        # ...so the prefix cache holds everything up to the follow-up.
        assert call.cached_tokens == len(prev.prompt_ids) + len(kept(prev))
    if len(turns) > 1:
        assert any(t >= WORD_BASE for t in turns[1].prompt_ids)  # the draft's word tokens, not re-encoded
    assert all(c.sampling.max_tokens == plan.max_tokens for c in turns)

    # -- the client sees turns as labelled thinking, then one answer -----------
    thinking_text = "".join(e.text for e in events if isinstance(e, Thinking))
    thought_text = thinks[0].text if thinks else ""
    assert thinking_text == thought_text + "".join(f"\n[{label}]\n{c.text}" for label, c in zip(case.labels, turns))
    headers = [e.text for e in events if isinstance(e, Thinking) and e.text.startswith("\n[")]
    assert headers == [f"\n[{label}]\n" for label in case.labels]
    assert answers(events) == [case.answer]
    answer_at = next(i for i, e in enumerate(events) if isinstance(e, Answer))
    assert all(isinstance(e, Thinking) for e in events[:answer_at])
    assert not any(isinstance(e, Progress) for e in events)
    done = done_of(events)
    assert answer_at == len(events) - 2 and done.finish_reason == "stop"

    # -- the trace lists every turn ---------------------------------------------
    trace = trace_of(events)
    assert trace["strategy"] == "revision" and trace["stopped"] == case.stopped
    assert trace["turns"] == [{"turn": label, "tokens": len(c.output_ids), "finish_reason": c.finish_reason,
                               "text": c.text} for label, c in zip(case.labels, turns)]
    assert trace["rounds_run"] == case.labels.count("critique")
    assert trace["answer"] == answer_key(case.answer) is not None
    assert ("thinking" in trace) is plan.thinking

    # -- usage: every token, critiques (and thinking) as reasoning ---------------
    assert usage.completion_tokens == sum(len(c.output_ids) for c in engine.calls)
    assert usage.reasoning_tokens == sum(len(c.output_ids) for c in engine.calls
                                         if "-critique" in c.request_id or c.request_id.endswith("-think"))
    assert usage.engine_requests == len(engine.calls) and usage.prompt_tokens == len(P)


@dataclass(frozen=True)
class Budget:
    plan: Plan
    outputs: list[Output]
    max_tokens: list[int]      # every request's max_tokens, in order
    labels: list[str]
    answer: str | None         # None: no room was left for a draft
    reasoning: int
    stopped: str = "budget"


BUDGETS: dict[str, Budget] = {
    # 12 + 12, then only 6 left for the revision; no room for another critique.
    "budget-cuts-the-revision": Budget(
        vary(BASE, max_tokens=12, budget_tokens=30),
        [["The answer is 41.", EOS], ["Wrong, it is 42.", EOS], ["The answer is 42.", EOS]],
        [12, 12, 6], ["draft", "critique", "revision"], "The an", 12),
    "budget-ends-before-the-critique": Budget(
        vary(BASE, budget_tokens=17), [["The answer is 41.", EOS]], [17], ["draft"], "The answer is 41.", 0),
    "max-tokens-bounds-every-turn": Budget(
        vary(BASE, max_tokens=8, budget_tokens=100),
        [["The answer is 41.", EOS], ["No errors.", EOS]], [8, 8], ["draft", "critique"], "The answ", 8,
        "critique found no error"),  # "No error", cut at 8, still says so
    "thinking-shares-the-budget": Budget(
        vary(BASE, thinking=True, max_thinking_tokens=10, budget_tokens=25), [["abcdefghijklmnop"],
                                                                                ["The answer is 41.", EOS]],
        [10, 15], ["draft"], "The answer is 4", 10),
    "no-room-left-for-a-draft": Budget(
        vary(BASE, thinking=True, max_thinking_tokens=10, budget_tokens=10), [["abcdefghijklmnop"]],
        [10], [], None, 10),
}


@pytest.mark.parametrize("case", list(BUDGETS.values()), ids=list(BUDGETS))
@pytest.mark.asyncio
async def test_budget_and_max_tokens_bound_every_turn(case: Budget) -> None:
    plan = case.plan
    assert plan.budget_tokens is not None
    engine, events, usage = await run(plan, case.outputs)
    assert len(engine.calls) == len(case.outputs)
    assert [c.sampling.max_tokens for c in engine.calls] == case.max_tokens
    spent = sum(len(c.output_ids) for c in engine.calls)
    assert usage.completion_tokens == spent <= plan.budget_tokens
    assert usage.reasoning_tokens == case.reasoning
    done, trace = done_of(events), trace_of(events)
    assert done.finish_reason == "length"
    assert [t["turn"] for t in trace["turns"]] == case.labels
    assert trace["stopped"] == case.stopped
    assert answers(events) == ([] if case.answer is None else [case.answer])
    assert trace["rounds_run"] == case.labels.count("critique")
    assert ("thinking" in trace) is plan.thinking


@pytest.mark.asyncio
async def test_without_a_followup_turn_it_fails_before_the_engine() -> None:
    engine = ScriptedEngine(char_model_info(), [DRAFT_41])
    with pytest.raises(ValueError, match="follow-up"):
        async for _ in events_of(BASE, 1, contexts(engine, P, 100)):
            pass
    assert engine.calls == []



@pytest.mark.asyncio
async def test_a_turn_may_fill_the_context_window_exactly() -> None:
    # Issue 11: every phase's room is RunContext.room, and vLLM allows prompt + max_tokens
    # == max_model_len; a revision turn no longer keeps one more token back (it asked 19 here).
    engine = ScriptedEngine(char_model_info(max_model_len=len(P) + 20), [DRAFT_41])
    plan = vary(BASE, rounds=0)
    engine, events, _ = await run_to_end(engine, plan, 1, contexts(engine, P, plan.max_tokens, followup=followup))
    (draft,) = engine.calls
    assert len(draft.prompt_ids) + draft.sampling.max_tokens == engine.info.max_model_len
    assert answers(events) == ["So the answer is 41."]
