"""Run a plan for every choice of a request at once and merge their events.

Each choice runs the whole plan independently; their engine requests are
submitted concurrently so the engine batches them. Closing the consumer (or a
failing choice) cancels every choice, which aborts every engine request. The
result is the usage over every choice.

When the answer has a format (tool calls), each choice's events pass
through that format's shaper on the way out (strategies/output.py); plain
requests skip it, so the per-token path stays one generator.
"""
from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import replace

from .context import RunContext
from .events import Event
from .fanout import FanOut
from .ledger import Usage
from .output import PLAIN, Shaper
from .phase import Phase
from .plan import Plan
from .registry import dispatch


class RunPlan(Phase[Usage]):
    def __init__(self, plan: Plan, n: int, make_ctx: Callable[[int], RunContext]) -> None:
        super().__init__()
        self.plan, self.n, self.make_ctx = plan, n, make_ctx

    async def _run(self) -> AsyncGenerator[Event, None]:
        contexts = [replace(self.make_ctx(i), dispatch=dispatch) for i in range(self.n)]
        shapers: list[Shaper] | None = None
        if contexts[0].output is not PLAIN:
            shapers = [ctx.output.shaper(ctx.choice) for ctx in contexts]
        if self.n == 1:  # the common case: no queue hop or task switch per token
            async with aclosing(dispatch(contexts[0], self.plan)) as events:
                async for event in events:
                    if shapers is None:
                        yield event
                    else:
                        for shaped in shapers[0].feed(event):
                            yield shaped
            self._finish(contexts[0].ledger.finish())
            return
        fan = FanOut()
        try:
            for ctx in contexts:
                fan.start(ctx.choice, dispatch(ctx, self.plan))
            async for k, event, done in fan.events():
                if done:
                    continue
                if shapers is None:
                    yield event
                else:
                    for shaped in shapers[k].feed(event):
                        yield shaped
        finally:
            await fan.aclose()
        usage = Usage()
        for ctx in contexts:
            usage = usage + ctx.ledger.finish()
        self._finish(usage)
