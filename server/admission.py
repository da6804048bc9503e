"""Admission control, deadlines and the shutdown drain: what a request may hold.

A strategy request can hold many engine sequences for a long time, so the
limit counts *work*, not requests: a request weighs as many sequences as it
may run at once (``n`` x samples, beams x expansions...). Past the limit the
server answers 429 with ``Retry-After`` before any stream byte, the way TGI's
``max_concurrent_requests`` does, but weighted. A request heavier than the
whole limit can never fit: its 429 says ``x-should-retry: false`` so the
OpenAI SDK does not retry it.

Every admitted request carries a :class:`Ticket` with a deadline. The
transport waits for each event through ``Ticket.next``: at the deadline (or
when the drain at shutdown runs out) that wait is cancelled, which closes the
strategy's generators and so aborts every engine request it started, and the
client gets one documented error (504 ``deadline_exceeded`` or 503
``server_shutting_down``).

Tickets are numbered in admission order, and :func:`engine_priority` turns
that number into the priority of every engine request the request starts.
"""
from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import TypeVar

from .errors import APIError

T = TypeVar("T")


_ORDER_BITS = 32  # admissions numbered modulo 2**32; client priorities above them


def engine_priority(client_priority: int, seq: int) -> int:
    """The engine priority (lower runs first) of every engine request of the
    ``seq``-th admitted request.

    vLLM queues each engine request on its own, first come first served. A
    multi-phase strategy (a forced continuation, a revision round, the next
    beam step, a judge) starts a new engine request per phase, so under load
    each phase waits behind every request that arrived meanwhile, and the
    requests that started first finish last. Ordered by admission instead,
    the waiting work of an earlier request goes first (and, when the KV cache
    runs out, the latest request is the one vLLM preempts): first come first
    served at the level of the client's request, which is what a latency
    target is set on. vLLM's ``priority`` from the client (lower first, as in
    vLLM's server) outranks that order.
    """
    return (client_priority << _ORDER_BITS) + seq % (1 << _ORDER_BITS)


class Ticket:
    """One admitted request: its weight, its deadline and how it may end early.

    One timer per request, not one per event: when it fires while the
    request's consumer waits in :meth:`next` for the next event, that task is
    cancelled and the cancellation becomes ``error()``; when the consumer is
    elsewhere (writing to the socket), the next wait ends at once.
    """

    def __init__(self, admission: Admission, weight: int, timeout: float | None, seq: int) -> None:
        self._admission = admission
        self.seq = seq  # admission order
        self.weight = weight
        self.timeout = timeout
        self._loop = asyncio.get_running_loop()
        self.when = self._loop.time() + timeout if timeout else math.inf
        self.reason = "deadline"
        self._timer = self._loop.call_at(self.when, self._fire) if timeout else None
        self._waiter: asyncio.Task | None = None  # the task waiting in next() now
        self._fired = False
        self._released = False

    def expire(self, reason: str) -> None:
        """End the request now: its pending wait for an event is cancelled."""
        self.reason = reason
        self.when = self._loop.time()
        self._fire()

    def _fire(self) -> None:
        self.when = min(self.when, self._loop.time())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._waiter is not None and not self._fired:
            self._fired = True
            self._waiter.cancel()

    def error(self) -> APIError:
        if self.reason == "shutdown":
            return APIError(503, "the server is shutting down; retry on another instance",
                            code="server_shutting_down", headers={"retry-after": "1"})
        return APIError(504, f"the request passed its deadline of {self.timeout:g} s; every engine "
                        "request it started was aborted", code="deadline_exceeded",
                        headers={"x-should-retry": "false"})

    async def next(self, events: AsyncIterator[T]) -> T:
        """The next item of ``events``, unless the deadline passes first: then ``error()``
        (and ``events`` ends, its generators closed). StopAsyncIteration at the end."""
        if self.when <= self._loop.time():
            raise self.error()
        self._waiter = asyncio.current_task()
        try:
            return await events.__anext__()
        except asyncio.CancelledError:
            # Ours (and nobody else's, e.g. a client gone): the deadline.
            if self._fired and self._waiter is not None and self._waiter.uncancel() == 0:
                raise self.error() from None
            raise
        finally:
            self._waiter = None

    def release(self) -> None:
        if not self._released:
            self._released = True
            if self._timer is not None:
                self._timer.cancel()
            self._admission._release(self)


class Admission:
    """The weighted concurrent-work limit and the set of live tickets."""

    def __init__(self, limit: int, retry_after: int = 1) -> None:
        self.limit = limit  # 0: no limit
        self.retry_after = retry_after
        self.in_use = 0
        self.draining = False
        self.tickets: set[Ticket] = set()
        self.admitted = 0  # requests admitted so far: the next ticket's number

    def admit(self, weight: int, timeout: float | None) -> Ticket:
        if self.draining:
            raise APIError(503, "the server is shutting down; retry on another instance",
                           code="server_shutting_down", headers={"retry-after": str(self.retry_after)})
        if self.limit and weight > self.limit:
            raise APIError(429, f"this request needs {weight} concurrent sequences (n x samples); the server "
                           f"admits at most {self.limit}. Lower n or the samples.",
                           code="request_too_large", headers={"x-should-retry": "false"})
        if self.limit and self.in_use + weight > self.limit:
            raise APIError(429, f"the server is at capacity ({self.in_use} of {self.limit} concurrent "
                           "sequences in use); retry after the time in Retry-After",
                           code="server_overloaded",
                           headers={"retry-after": str(self.retry_after), "x-should-retry": "true"})
        self.admitted += 1
        ticket = Ticket(self, weight, timeout, self.admitted)
        self.in_use += weight
        self.tickets.add(ticket)
        return ticket

    def _release(self, ticket: Ticket) -> None:
        self.in_use -= ticket.weight
        self.tickets.discard(ticket)

    def expire_all(self, reason: str) -> int:
        live = list(self.tickets)
        for t in live:
            t.expire(reason)
        return len(live)
