"""Strategy ``auto``: pick strategy and budget per prompt from its estimated
difficulty — compute-optimal test-time scaling (Snell et al. 2024,
arXiv:2408.03314), with difficulty estimated from a cheap probe instead of
an oracle or a verifier.

The probe samples a few short answers at once (no thinking); their agreement
on the extracted final answer estimates difficulty: all agree -> ``easy``, a
majority -> ``medium``, otherwise ``hard``. The plan for each difficulty comes
from configs/auto.toml via the planner (``plan.auto``); it runs with what is
left of ``budget_tokens`` after the probe. The trace says what the probe saw
and which plan it chose.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace

from .context import RunContext
from .events import ChoiceDone, Event
from .parallel import Pool, _collect
from .plan import Plan
from .voting import Tally


def difficulty(agreement: float, easy: float, medium: float) -> str:
    if agreement >= easy:
        return "easy"
    return "medium" if agreement >= medium else "hard"


async def _probe(ctx: RunContext, plan: Plan) -> tuple[float, dict[str, int]]:
    probe = replace(plan, strategy="self_consistency", samples=plan.probe_samples, thinking=False,
                    max_tokens=plan.probe_tokens, early_stop=False, stream_candidates=False,
                    # Inside budget_tokens, and leaving the chosen plan at least one token.
                    budget_tokens=None if plan.budget_tokens is None else max(1, plan.budget_tokens - 1),
                    vote="majority")
    # Pool tags its candidates s0, s1... (a tag here would be replaced): its own
    # request id keeps the probe's engine ids apart from a self_consistency plan's.
    pool = Pool(replace(ctx, request_id=f"{ctx.request_id}-probe"), probe, None)
    tally = Tally()
    try:
        pool.start_all(list(range(probe.samples)))
        async for _ in _collect(pool, probe, lambda c: tally.add(c.key, 1.0, c.index) or False):
            pass
    finally:
        await pool.fan.aclose()
    first, _ = tally.top_two()
    return first / max(1, probe.samples), dict(tally.counts)


async def auto(ctx: RunContext, plan: Plan) -> AsyncIterator[Event]:
    from .registry import get  # the registry imports this module

    agreement, votes = await _probe(ctx, plan)
    level = difficulty(agreement, plan.easy_agreement, plan.medium_agreement)
    chosen = dict(plan.auto)[level]
    spent = ctx.ledger.generated
    budget = None if plan.budget_tokens is None else max(1, plan.budget_tokens - spent)
    chosen = replace(chosen, budget_tokens=budget if chosen.budget_tokens is None
                     else min(chosen.budget_tokens, budget or chosen.budget_tokens))
    explain = {"difficulty": level, "probe_agreement": round(agreement, 3), "probe_votes": votes,
               "probe_tokens": spent, "chosen": chosen.public()}
    # The chosen plan counts its own tokens against its max_tokens; the choice's
    # ledger still sees every token (probe included) for usage and budget.
    run = get(chosen.strategy)(replace(ctx, ledger=ctx.ledger.child(chosen.budget_tokens)), chosen)
    async with aclosing(run) as events:
        async for event in events:
            if isinstance(event, ChoiceDone):
                event = ChoiceDone(event.choice, event.finish_reason,
                                   {**event.trace, "strategy": "auto", "auto": explain,
                                    "ran": event.trace.get("strategy")})
            yield event
