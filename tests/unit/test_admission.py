"""Admission control, deadlines and the drain's expiry (server/admission.py)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

import pytest

from server.admission import Admission, Ticket
from server.errors import APIError
from strategies.plan import Plan
from strategies.registry import weight
from tests.unit.harness import make_plan

T = TypeVar("T")


def plan_weight(plan: Plan, n: int) -> int:
    """What the server admits a request of ``n`` choices of ``plan`` with (server/prepare.py)."""
    return weight(plan) * n


async def guarded(ticket: Ticket, events: AsyncIterator[T]) -> AsyncIterator[T]:
    """``events`` through ``ticket.next`` until they end or the deadline passes, as the
    transport loop consumes a run; the events are closed however it ends."""
    try:
        while True:
            try:
                item = await ticket.next(events)
            except StopAsyncIteration:
                return
            yield item
    finally:
        await events.aclose()  # type: ignore[attr-defined]


def test_weight_counts_concurrent_sequences() -> None:
    assert plan_weight(make_plan(), 3) == 3
    assert plan_weight(make_plan("self_consistency", samples=8), 2) == 16
    assert plan_weight(make_plan("best_of_n", samples=4), 1) == 4
    assert plan_weight(make_plan("beam_search", beam_width=3, expansions=2), 1) == 6
    assert plan_weight(make_plan("revision", rounds=4), 1) == 1
    auto = make_plan("auto", probe_samples=3, levels=(("easy", make_plan()),
                                                      ("medium", make_plan("self_consistency", samples=6))))
    assert plan_weight(auto, 2) == 12


@pytest.mark.asyncio
async def test_limit_is_weighted_and_released() -> None:
    adm = Admission(limit=8, retry_after=2)
    a = adm.admit(6, None)
    with pytest.raises(APIError) as info:
        adm.admit(3, None)
    err = info.value
    assert err.status == 429 and err.code == "server_overloaded"
    assert err.headers == {"retry-after": "2", "x-should-retry": "true"}
    b = adm.admit(2, None)
    assert adm.in_use == 8
    a.release()
    a.release()  # idempotent
    assert adm.in_use == 2
    b.release()
    assert adm.in_use == 0 and not adm.tickets


@pytest.mark.asyncio
async def test_heavier_than_the_whole_limit_is_not_retryable() -> None:
    adm = Admission(limit=4)
    with pytest.raises(APIError) as info:
        adm.admit(5, None)
    assert info.value.status == 429 and info.value.headers["x-should-retry"] == "false"
    assert Admission(limit=0).admit(10_000, None).weight == 10_000  # 0: no limit


@pytest.mark.asyncio
async def test_draining_refuses_with_503() -> None:
    adm = Admission(limit=4)
    adm.draining = True
    with pytest.raises(APIError) as info:
        adm.admit(1, None)
    assert info.value.status == 503 and info.value.code == "server_shutting_down"


async def _slow(closed: list[str], n: int = 100, every: float = 0.05):
    try:
        for i in range(n):
            await asyncio.sleep(every)
            yield i
    finally:
        closed.append("closed")


@pytest.mark.asyncio
async def test_deadline_closes_the_stream_and_raises_504() -> None:
    ticket = Admission(limit=0).admit(1, 0.2)
    closed: list[str] = []
    seen = []
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(APIError) as info:
        async for item in guarded(ticket, _slow(closed)):
            seen.append(item)
    assert info.value.status == 504 and info.value.code == "deadline_exceeded"
    assert info.value.headers["x-should-retry"] == "false"
    assert 0.15 < loop.time() - t0 < 0.5 and 1 <= len(seen) <= 4
    assert closed == ["closed"]  # the strategy's generators were closed (engine requests aborted)


async def _waiting_in_next(ticket, closed: list[str]) -> asyncio.Task:
    """A consumer task that is waiting in ``next`` for an event that takes 30 s."""
    async def consume():
        async for _ in guarded(ticket, _slow(closed, n=1, every=30)):
            pass

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.05)
    return task


@pytest.mark.asyncio
async def test_expire_interrupts_a_silent_wait() -> None:
    adm = Admission(limit=0)
    ticket = adm.admit(1, None)
    closed: list[str] = []
    task = await _waiting_in_next(ticket, closed)
    assert adm.expire_all("shutdown") == 1
    with pytest.raises(APIError) as info:
        await asyncio.wait_for(task, 1.0)
    assert info.value.status == 503 and info.value.code == "server_shutting_down"
    assert closed == ["closed"]


@pytest.mark.asyncio
async def test_no_deadline_passes_everything_through() -> None:
    ticket = Admission(limit=0).admit(1, None)
    closed: list[str] = []
    assert [i async for i in guarded(ticket, _slow(closed, n=5, every=0))] == [0, 1, 2, 3, 4]
    assert closed == ["closed"]


@pytest.mark.asyncio
async def test_deadline_passed_while_the_consumer_was_busy_ends_at_the_next_wait() -> None:
    adm = Admission(limit=0)
    ticket = adm.admit(1, 0.1)
    closed: list[str] = []
    seen = []
    with pytest.raises(APIError) as info:
        async for item in guarded(ticket, _slow(closed, every=0)):
            seen.append(item)
            await asyncio.sleep(0.15)  # writing to a slow client, outside ticket.next
    assert info.value.code == "deadline_exceeded" and seen == [0] and closed == ["closed"]
    ticket.release()
    assert adm.in_use == 0


@pytest.mark.asyncio
async def test_a_cancel_that_is_not_the_deadline_stays_a_cancel() -> None:
    ticket = Admission(limit=0).admit(1, 30)
    closed: list[str] = []
    task = await _waiting_in_next(ticket, closed)
    task.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed == ["closed"]
    ticket.release()
