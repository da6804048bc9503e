"""Run a plan for every choice of a request at once and merge their events.

Each choice runs the whole plan independently; their engine requests are
submitted concurrently so the engine batches them. Closing the consumer (or a
failing choice) cancels every choice, which aborts every engine request. The
result is the usage over every choice.
"""
from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import replace

from .context import RunContext
from .events import Event
from .fanout import FanOut
from .ledger import Usage
from .phase import Phase
from .plan import Plan
from .registry import dispatch


class RunPlan(Phase[Usage]):
    def __init__(self, plan: Plan, n: int, make_ctx: Callable[[int], RunContext]) -> None:
        super().__init__()
        self.plan, self.n, self.make_ctx = plan, n, make_ctx

    async def _run(self) -> AsyncGenerator[Event, None]:
        contexts = [replace(self.make_ctx(i), dispatch=dispatch) for i in range(self.n)]
        if self.n == 1:  # the common case: no queue hop or task switch per token
            async with aclosing(dispatch(contexts[0], self.plan)) as events:
                async for event in events:
                    yield event
            self._finish(contexts[0].ledger.finish())
            return
        fan = FanOut()
        try:
            for ctx in contexts:
                fan.start(ctx.choice, dispatch(ctx, self.plan))
            async for _, event, done in fan.events():
                if not done:
                    yield event
        finally:
            await fan.aclose()
        usage = Usage()
        for ctx in contexts:
            usage = usage + ctx.ledger.finish()
        self._finish(usage)
