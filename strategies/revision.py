"""Strategy ``revision``: draft, then critique and revise for up to ``rounds``.

Sequential revision (Madaan et al. 2023, "Self-Refine", arXiv:2303.17651; the
sequential half of Snell et al. 2024, arXiv:2408.03314). The model drafts an
answer (thinking first when the plan thinks), is asked in a follow-up turn to
critique it, then to revise it. It stops early when the critique finds no
error or the extracted answer stops changing. Every turn continues the exact
token ids of the conversation so far, so each round re-reads it from the
prefix cache. Critiques and intermediate drafts stream live on the thinking
channel (labelled); the final answer streams as content. Critique tokens count
as reasoning tokens; discarded drafts count as completion tokens.
"""
from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import aclosing

from .answers import answer_key
from .context import RunContext
from .events import Answer, ChoiceDone, Event, Thinking
from .generation import Generation
from .plan import Plan
from .thinking import Thought, think


async def _turn(ctx: RunContext, ids: tuple[int, ...], name: str, plan: Plan, label: str,
                trace: list) -> AsyncIterator[Event | Generation]:
    """One model turn: its text streams as thinking under ``label``; yields the Generation last."""
    room = ctx.ledger.cap(min(plan.max_tokens, ctx.engine.info.max_model_len - len(ids) - 1))
    if room <= 0:
        return
    yield Thinking(ctx.choice, f"\n[{label}]\n")
    gen = Generation(ctx, ids, ctx.phase_sampling(max_tokens=room, logprobs=None), name,
                     thinking=label == "critique")
    async with aclosing(gen.run()) as events:
        async for e in events:
            if isinstance(e, (Thinking, Answer)) and e.text:
                yield Thinking(ctx.choice, e.text)
    trace.append({"turn": label, "tokens": len(gen.token_ids), "finish_reason": gen.finish_reason,
                  "text": (gen.thinking or gen.answer)[:2000]})
    yield gen


def _ids(gen: Generation, ctx: RunContext) -> tuple[int, ...]:
    return gen.continuation_ids(drop=ctx.engine.info.eos_token_ids)


async def revision(ctx: RunContext, plan: Plan) -> AsyncIterator[Event]:
    if ctx.followup is None:
        raise ValueError("revision needs the chat template's follow-up turn")
    rounds: list[dict] = []
    ids = ctx.prompt_ids
    thought = None
    if plan.thinking:
        thought = Thought()
        async with aclosing(think(ctx, plan, thought)) as events:
            async for event in events:
                yield event
        ids = thought.ids
    answer, stop_reason = None, "rounds exhausted"
    async for item in _turn(ctx, ids, "draft", plan, "draft", rounds):
        if isinstance(item, Generation):
            answer = item
        else:
            yield item
    if answer is None:  # no room for a draft: the same trace keys as below
        trace = {"strategy": "revision", "rounds_run": 0, "stopped": "budget", "turns": rounds, "answer": None}
        if thought is not None:
            trace["thinking"] = thought.trace()
        yield ChoiceDone(ctx.choice, "length", trace)
        return
    for r in range(plan.rounds):
        conv = _ids(answer, ctx)
        critique = None
        async for item in _turn(ctx, conv + ctx.followup(plan.critique_prompt), f"critique{r}", plan,
                                "critique", rounds):
            if isinstance(item, Generation):
                critique = item
            else:
                yield item
        if critique is None:
            stop_reason = "budget"
            break
        if plan.critique_ok and re.search(plan.critique_ok, critique.thinking + critique.answer):
            stop_reason = "critique found no error"
            break
        revised = None
        async for item in _turn(ctx, _ids(critique, ctx) + ctx.followup(plan.revise_prompt), f"revise{r}",
                                plan, "revision", rounds):
            if isinstance(item, Generation):
                revised = item
            else:
                yield item
        if revised is None:
            stop_reason = "budget"
            break
        stable = answer_key(revised.answer) is not None and answer_key(revised.answer) == answer_key(answer.answer)
        answer = revised
        if stable:
            stop_reason = "answer unchanged"
            break
    yield Answer(ctx.choice, answer.answer)
    trace = {"strategy": "revision", "rounds_run": sum(1 for t in rounds if t["turn"] == "critique"),
             "stopped": stop_reason, "turns": rounds, "answer": answer_key(answer.answer)}
    if thought is not None:
        trace["thinking"] = thought.trace()
    yield ChoiceDone(ctx.choice, answer.finish_reason or "stop", trace)
