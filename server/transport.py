"""The transport loop: one prepared request's events to the client.

One loop per request, for every API surface: it waits for the next event
through the admission ticket (so the deadline, or the drain at shutdown,
interrupts the wait), hands it to the metrics and to the surface's encoder,
and writes what the encoder returns. There is no task per event: the client's
disconnect is watched by one task per request, which cancels the loop (and so
every engine request, through the strategies' generators), and pings come
from one timer that re-arms itself while the stream is silent.

Before the first byte a failure is an error response with its status; after
it, one error frame in the surface's shape.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from strategies.engine import EngineRequestFailed, EngineUnavailable
from strategies.events import Event
from strategies.ledger import Usage
from strategies.phase import Phase

from .admission import Ticket
from .errors import APIError
from .observe import RequestMetrics

log = logging.getLogger("ponder.transport")


class Encoder(Protocol):
    """An API surface's encoding of the event stream (stream or single body)."""

    streaming: bool
    media_type: str
    ping: bytes

    def start(self) -> bytes: ...

    def feed(self, event: Event) -> bytes | None: ...

    def finish(self, usage: Usage) -> bytes: ...

    def error(self, err: APIError) -> bytes: ...

    def error_status(self, err: APIError) -> int:
        """The HTTP status of ``err`` on this surface, before the first byte."""
        ...


def as_api_error(exc: BaseException) -> APIError:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, EngineUnavailable):
        return APIError(503, "the engine is unavailable; retry later", code="engine_unavailable",
                        headers={"retry-after": "5"})
    if isinstance(exc, EngineRequestFailed):
        log.warning("%s", exc)
        return APIError(500, "the engine failed while generating this request; it is still serving others",
                        code="engine_error")
    log.error("strategy run failed", exc_info=exc)
    return APIError(500, "internal error while generating", code="internal_error")


class EventResponse(Response):
    """An ASGI response that runs ``run`` and sends what ``encoder`` makes of it.

    A Starlette ``Response`` only so that the router passes it through; it
    sends everything itself (status and headers once the outcome is known, for
    a single body).
    """

    def __init__(self, run: Phase[Usage], encoder: Encoder, ticket: Ticket, observer: RequestMetrics,
                 headers: dict[str, str], ping_interval: float | None) -> None:
        self.background = None
        self.run, self.encoder, self.ticket, self.observer = run, encoder, ticket, observer
        self.extra_headers = headers
        self.ping_interval = ping_interval if encoder.streaming else None
        self._lock = asyncio.Lock()
        self._started = False  # the status line went out
        self._closed = False  # the last body message went out
        self._gone = False  # the client disconnected
        self._last = 0.0  # when the stream last sent something
        self._send: Send | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        self._send = send
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.create_task(self._watch(receive, task))
        timer = loop.call_later(self.ping_interval, self._tick) if self.ping_interval else None
        status = None
        try:
            status = await self._serve()
        except asyncio.CancelledError:
            if not self._gone:
                raise
            task.uncancel()
            status = "cancelled"  # the client left; nothing more to send
        finally:
            self._closed = True  # stops the ping timer
            if timer is not None:
                timer.cancel()
            watcher.cancel()
            self.ticket.release()
            self.observer.close(status)

    async def _serve(self) -> str | None:
        enc = self.encoder
        if enc.streaming:
            await self._begin(200, self.extra_headers)
            await self._write(enc.start())
        try:
            async with self.run as events:
                while True:
                    try:
                        event = await self.ticket.next(events)
                    except StopAsyncIteration:
                        break
                    self.observer.feed(event)
                    frame = enc.feed(event)
                    if frame:
                        await self._write(frame)
            usage = self.run.result
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._fail(as_api_error(exc))
            return None
        self.observer.finish(usage)
        body = enc.finish(usage)
        if not enc.streaming:
            await self._begin(200, self.extra_headers)
        await self._write(body, last=True)
        return None

    async def _fail(self, err: APIError) -> None:
        if self._started:
            await self._write(self.encoder.error(err), last=True)
            return
        await self._begin(self.encoder.error_status(err), {**self.extra_headers, **err.headers}, "application/json")
        await self._write(self.encoder.error(err), last=True)

    async def _begin(self, status: int, headers: dict[str, str], media_type: str | None = None) -> None:
        assert self._send is not None
        media = media_type or self.encoder.media_type
        raw = [(b"content-type", media.encode())]
        if self.encoder.streaming and status == 200:
            raw.append((b"cache-control", b"no-cache"))
        raw += [(k.encode(), v.encode()) for k, v in headers.items()]
        self._started = True
        await self._send({"type": "http.response.start", "status": status, "headers": raw})

    async def _write(self, body: bytes, last: bool = False) -> None:
        async with self._lock:
            if self._closed:
                return
            self._closed = last
            self._last = asyncio.get_running_loop().time()
            assert self._send is not None
            await self._send({"type": "http.response.body", "body": body, "more_body": not last})

    def _tick(self) -> None:
        """The ping timer: a comment frame when the stream was silent for the interval."""
        if self._closed or self.ping_interval is None:
            return
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._last
        if self._started and idle >= self.ping_interval:
            loop.create_task(self._write(self.encoder.ping))  # under the lock, never inside a frame
            idle = 0.0
        loop.call_later(self.ping_interval - idle, self._tick)

    async def _watch(self, receive: Receive, task: asyncio.Task) -> None:
        """Cancel the loop when the client disconnects (aborting the engine work)."""
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                if not self._closed:
                    self._gone = True
                    task.cancel()
                return
