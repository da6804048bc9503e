"""Run a plan for every choice of a request at once and merge their events.

Each choice runs the whole plan independently; their engine requests are
submitted concurrently so the engine batches them. Closing the consumer (or a
failing choice) cancels every choice, which aborts every engine request.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass

from .context import RunContext
from .events import Event
from .fanout import FanOut
from .ledger import Usage
from .plan import Plan
from .registry import get


@dataclass(frozen=True)
class Finished:
    """Last item of a run: usage over every choice."""

    usage: Usage


async def run_plan(
    plan: Plan, n: int, make_ctx: Callable[[int], RunContext]
) -> AsyncIterator[Event | Finished]:
    strategy = get(plan.strategy)
    contexts = [make_ctx(i) for i in range(n)]
    if n == 1:  # the common case: no queue hop or task switch per token
        async with aclosing(strategy(contexts[0], plan)) as events:
            async for event in events:
                yield event
        yield Finished(contexts[0].ledger.finish())
        return
    fan = FanOut()
    try:
        for ctx in contexts:
            fan.start(ctx.choice, strategy(ctx, plan))
        async for _, event, done in fan.events():
            if not done:
                yield event
        usage = Usage()
        for ctx in contexts:
            usage = usage + ctx.ledger.finish()
        yield Finished(usage)
    finally:
        await fan.aclose()
