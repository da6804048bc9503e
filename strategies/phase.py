"""One idiom for a step that streams events and ends with a result.

A strategy runs phases (an engine request, a thinking phase, a revision turn,
a whole plan) and passes their events on as they come::

    phase = Think(ctx, plan)
    async with phase as events:
        async for event in events:
            yield event
    thought = phase.result

Leaving the ``async with`` early (the consumer was closed, cancelled or hit
its deadline) closes the phase's generator at once, which aborts every engine
request it started; ``result`` is only there once the phase ran to its end.
Work that streams nothing (a judge, a beam expansion) is a plain coroutine
with a return value, fanned out with ``asyncio.TaskGroup``.
"""
from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Generic, TypeVar

R = TypeVar("R")

_UNSET: Any = object()


class Phase(Generic[R]):
    def __init__(self) -> None:
        self._result: R = _UNSET
        self._events: AsyncGenerator[Any, None] | None = None

    def _run(self) -> AsyncGenerator[Any, None]:
        """The phase's events; it calls :meth:`_finish` with its result at the end."""
        raise NotImplementedError

    def _finish(self, result: R) -> None:
        self._result = result

    async def __aenter__(self) -> AsyncGenerator[Any, None]:
        if self._events is not None:
            raise RuntimeError("a phase runs once")
        self._events = self._run()
        return self._events

    async def __aexit__(self, *exc: object) -> None:
        assert self._events is not None
        await self._events.aclose()

    @property
    def done(self) -> bool:
        return self._result is not _UNSET

    @property
    def result(self) -> R:
        if self._result is _UNSET:
            raise RuntimeError(f"{type(self).__name__} has not finished")
        return self._result
