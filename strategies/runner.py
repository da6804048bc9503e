"""Run a plan for every choice of a request at once and merge their events.

Each choice runs the whole plan independently; their engine requests are
submitted concurrently so the engine batches them. Cancelling the consumer
cancels every choice task, which aborts every engine request.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from .context import RunContext
from .events import ChoiceDone, Event
from .ledger import Usage
from .plan import Plan
from .registry import get


@dataclass(frozen=True)
class Finished:
    """Last item of a run: usage over every choice."""

    usage: Usage


_END = object()


async def run_plan(
    plan: Plan, n: int, make_ctx: Callable[[int], RunContext]
) -> AsyncIterator[Event | Finished]:
    strategy = get(plan.strategy)
    contexts = [make_ctx(i) for i in range(n)]
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def drive(ctx: RunContext) -> None:
        async for event in strategy(ctx, plan):
            await queue.put(event)

    async def drive_all() -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for ctx in contexts:
                    group.create_task(drive(ctx))
        except BaseException as exc:  # surfaced to the consumer below
            await queue.put(exc)
        else:
            await queue.put(_END)

    task = asyncio.create_task(drive_all())
    try:
        while True:
            item = await queue.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise _unwrap(item)
            yield item  # type: ignore[misc]
        usage = Usage()
        for ctx in contexts:
            usage = usage + ctx.ledger.finish()
        yield Finished(usage)
    finally:
        if not task.done():
            task.cancel()
            try:
                await task
            except BaseException:  # noqa: BLE001 - cancellation of our own task
                pass


def _unwrap(exc: BaseException) -> BaseException:
    """A TaskGroup wraps failures; hand the first real one to the caller."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


__all__ = ["ChoiceDone", "Finished", "run_plan"]
