"""Admission control, deadlines and the drain's expiry (server/admission.py)."""
from __future__ import annotations

import asyncio

import pytest

from server.admission import Admission, plan_weight
from server.errors import APIError
from strategies.plan import Plan


def test_weight_counts_concurrent_sequences() -> None:
    assert plan_weight(Plan(), 3) == 3
    assert plan_weight(Plan(strategy="self_consistency", samples=8), 2) == 16
    assert plan_weight(Plan(strategy="best_of_n", samples=4), 1) == 4
    assert plan_weight(Plan(strategy="beam_search", beam_width=3, expansions=2), 1) == 6
    assert plan_weight(Plan(strategy="revision", rounds=4), 1) == 1
    auto = Plan(strategy="auto", probe_samples=3, auto=(("easy", Plan()),
                                                         ("medium", Plan(strategy="self_consistency", samples=6))))
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
        async for item in ticket.guard(_slow(closed)):
            seen.append(item)
    assert info.value.status == 504 and info.value.code == "deadline_exceeded"
    assert info.value.headers["x-should-retry"] == "false"
    assert 0.15 < loop.time() - t0 < 0.5 and 1 <= len(seen) <= 4
    assert closed == ["closed"]  # the strategy's generators were closed (engine requests aborted)


async def _waiting_in_guard(ticket, closed: list[str]) -> asyncio.Task:
    """A consumer task that is waiting in ``guard`` for an event that takes 30 s."""
    async def consume():
        async for _ in ticket.guard(_slow(closed, n=1, every=30)):
            pass

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.05)
    return task


@pytest.mark.asyncio
async def test_expire_interrupts_a_silent_wait() -> None:
    adm = Admission(limit=0)
    ticket = adm.admit(1, None)
    closed: list[str] = []
    task = await _waiting_in_guard(ticket, closed)
    assert adm.expire_all("shutdown") == 1
    with pytest.raises(APIError) as info:
        await asyncio.wait_for(task, 1.0)
    assert info.value.status == 503 and info.value.code == "server_shutting_down"
    assert closed == ["closed"]


@pytest.mark.asyncio
async def test_no_deadline_passes_everything_through() -> None:
    ticket = Admission(limit=0).admit(1, None)
    closed: list[str] = []
    assert [i async for i in ticket.guard(_slow(closed, n=5, every=0))] == [0, 1, 2, 3, 4]
    assert closed == ["closed"]


@pytest.mark.asyncio
async def test_deadline_passed_while_the_consumer_was_busy_ends_at_the_next_wait() -> None:
    adm = Admission(limit=0)
    ticket = adm.admit(1, 0.1)
    closed: list[str] = []
    seen = []
    with pytest.raises(APIError) as info:
        async for item in ticket.guard(_slow(closed, every=0)):
            seen.append(item)
            await asyncio.sleep(0.15)  # writing to a slow client, outside the guard
    assert info.value.code == "deadline_exceeded" and seen == [0] and closed == ["closed"]
    ticket.release()
    assert adm.in_use == 0


@pytest.mark.asyncio
async def test_a_cancel_that_is_not_the_deadline_stays_a_cancel() -> None:
    ticket = Admission(limit=0).admit(1, 30)
    closed: list[str] = []
    task = await _waiting_in_guard(ticket, closed)
    task.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed == ["closed"]
    ticket.release()
