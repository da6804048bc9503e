"""Run work at once: event streams merged with cancellation (``FanOut``), and
jobs that fan out once (``all_of``).

Used for the choices of a request and for the candidates of a parallel
strategy: everything is submitted to the engine together (so it batches), and
a member can be cancelled alone (early stopping) or all at once (client gone),
which closes its stream and so aborts its engine requests.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Hashable, Mapping
from typing import Any, TypeVar

_DONE = object()
K = TypeVar("K")
T = TypeVar("T")


async def all_of(jobs: Mapping[K, Awaitable[T]]) -> dict[K, T]:
    """Run every job at once (so the engine batches them); their results by key.

    Work that fans out once and streams nothing (judges, beam expansions). The
    first failure cancels the others and is raised as it is, not wrapped in an
    ExceptionGroup, so the server still tells an engine that died from a bug.
    """
    try:
        async with asyncio.TaskGroup() as group:
            tasks = {key: group.create_task(job) for key, job in jobs.items()}  # type: ignore[arg-type]
    except BaseExceptionGroup as group_error:
        first: BaseException = group_error
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return {key: task.result() for key, task in tasks.items()}


class FanOut:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[Hashable, Any]] = asyncio.Queue()
        self._tasks: dict[Hashable, asyncio.Task[None]] = {}
        self._live: set[Hashable] = set()

    def start(self, key: Hashable, stream: AsyncIterator[Any]) -> None:
        self._live.add(key)
        self._tasks[key] = asyncio.create_task(self._pump(key, stream))

    async def _pump(self, key: Hashable, stream: AsyncIterator[Any]) -> None:
        try:
            async for item in stream:
                await self._queue.put((key, item))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer, which decides
            await self._queue.put((key, exc))
            return
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        await self._queue.put((key, _DONE))

    @property
    def running(self) -> set[Hashable]:
        return set(self._live)

    async def cancel(self, key: Hashable) -> None:
        """Stop one member now (its engine requests are aborted)."""
        task = self._tasks.get(key)
        self._live.discard(key)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def events(self) -> AsyncIterator[tuple[Hashable, Any, bool]]:
        """(key, item, done) until every live member ended; exceptions re-raise."""
        while self._live:
            key, item = await self._queue.get()
            if key not in self._live:
                continue  # a cancelled member's leftovers
            if item is _DONE:
                self._live.discard(key)
                yield key, None, True
            elif isinstance(item, BaseException):
                raise item
            else:
                yield key, item, False

    async def aclose(self) -> None:
        self._live.clear()
        tasks = [t for t in self._tasks.values() if not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
