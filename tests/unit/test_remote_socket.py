"""The remote engine over real sockets (a tiny HTTP/1.1 server on 127.0.0.1 that
streams fake_vllm's vLLM-shaped frames): what a MockTransport cannot show, that
closing a stream closes the TCP connection (which is how vLLM's server learns to
abort), that a finished stream leaves its connection for the next request, and
what a cut connection or a closed port looks like to the engine."""
from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from scripted_engine import CharTokenizer, char_model_info

from server.engines.remote_engine import RemoteEngine
from server.engines.remote_fleet import Fleet
from strategies.engine import EngineUnavailable, Sampling
from tests.unit.fake_vllm import FakeVLLM, reply
from tests.unit.test_remote_engine import remote

S = Sampling(max_tokens=32)


@dataclass
class Server:
    url: str = ""
    fake: FakeVLLM = field(default_factory=lambda: FakeVLLM("http://unused", script=lambda b, i: reply("a b c d")))
    connections: int = 0
    requests: int = 0
    # After this many frames of a stream the server closes the socket (None: never).
    cut_after: int | None = None
    frame_delay: float = 0.0
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:  # HTTP/1.1 keep-alive: requests one after another on this connection
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))
                body = json.loads(await reader.readexactly(length))
                self.requests += 1
                if not await self._stream(reader, writer, body):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            self.disconnected.set()
        finally:
            writer.close()

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: dict) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        eof = asyncio.ensure_future(reader.read(1))  # b"": the client closed the connection
        try:
            for n, frame in enumerate(self.fake.frames(body)):
                if n == self.cut_after:
                    return False
                data = frame.encode()
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                await writer.drain()
                done, _ = await asyncio.wait({eof}, timeout=self.frame_delay)
                if done:
                    self.disconnected.set()
                    return False
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        finally:
            eof.cancel()
            await asyncio.gather(eof, return_exceptions=True)  # before the next read of this connection


@asynccontextmanager
async def serving(*servers: Server, dead_first: bool = False) -> AsyncIterator[RemoteEngine]:
    listening = [await asyncio.start_server(s.handle, "127.0.0.1", 0) for s in servers]
    for s, srv in zip(servers, listening):
        s.url = f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    urls = [s.url for s in servers]
    if dead_first:  # a port nothing listens on any more
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        urls.insert(0, f"http://127.0.0.1:{probe.sockets[0].getsockname()[1]}")
        probe.close()
        await probe.wait_closed()
    cfg = remote(urls=urls)
    engine = RemoteEngine(cfg, Fleet(urls, cfg.health_interval, cfg.health_timeout), char_model_info(),
                          CharTokenizer(), "fake-model")
    try:
        yield engine
    finally:
        engine.shutdown()
        await asyncio.sleep(0)
        for srv in listening:
            srv.close()
            await srv.wait_closed()


@pytest.mark.asyncio
async def test_closing_a_stream_closes_its_connection() -> None:
    server = Server(frame_delay=0.05)
    async with serving(server) as engine:
        stream = engine.generate([1, 2, 3], S, "req-c0-answer")
        await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
        async with asyncio.timeout(2):
            await server.disconnected.wait()  # vLLM's server sees this and aborts the request


@pytest.mark.asyncio
async def test_a_finished_stream_leaves_its_connection_for_the_next_request() -> None:
    server = Server()
    async with serving(server) as engine:
        for i in range(3):
            got = [d async for d in engine.generate([1, 2, 3], S, f"r{i}-c0-answer")]
            assert "".join(d.text for d in got) == "a b c d"
    assert (server.requests, server.connections) == (3, 1)


@pytest.mark.asyncio
async def test_a_connection_cut_mid_stream_is_unavailable() -> None:
    server = Server(cut_after=2)
    async with serving(server) as engine:
        got = []
        with pytest.raises(EngineUnavailable, match="broke off the stream"):
            async for d in engine.generate([1, 2, 3], S, "req-c0-answer"):
                got.append(d)
        assert len(got) == 2 and not engine.available


@pytest.mark.asyncio
async def test_a_closed_port_sends_the_request_to_the_next_upstream() -> None:
    server = Server()
    async with serving(server, dead_first=True) as engine:
        for i in range(4):  # whichever the prefixes prefer, every request is served
            got = [d async for d in engine.generate([i, 2, 3], S, f"r{i}-c0-answer")]
            assert got[-1].finish_reason == "stop"
        dead = engine.fleet.upstreams[0]
        assert server.requests == 4 and (dead.healthy is False or dead.in_flight == 0)
