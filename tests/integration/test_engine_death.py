"""If the engine process dies: errors, not hangs; /ready 503; a clean exit for the supervisor."""
from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import psutil
import pytest

from server.lifecycle import ENGINE_DIED

from .conftest import start_server, stop_server

# A server of its own (or minutes of load): `make test-slow`, not `make test`.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

STORY = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]


def _engine_core(pid: int) -> psutil.Process:
    for child in psutil.Process(pid).children(recursive=True):
        if "EngineCore" in " ".join(child.cmdline()) or "EngineCore" in child.name():
            return child
    raise AssertionError("no EngineCore process under the server")


@pytest.mark.asyncio
async def test_killed_engine_fails_requests_turns_unready_and_exits(tmp_path) -> None:
    proc, live = start_server(tmp_path / "ponder.log")
    try:
        url = live.base_url + "/v1/chat/completions"
        async with httpx.AsyncClient(timeout=60) as http:
            plain = asyncio.ensure_future(http.post(url, headers=live.headers(), json={
                "model": live.model, "messages": STORY, "max_tokens": 1000,
                "reasoning": {"strategy": "best_of_n", "samples": 2}}))
            async with http.stream("POST", url, headers=live.headers(), json={
                    "model": live.model, "messages": STORY, "max_tokens": 1000, "stream": True}) as r:
                lines = r.aiter_lines()
                assert (await lines.__anext__()).startswith("data: ")
                await asyncio.sleep(1.0)
                os.kill(_engine_core(proc.pid).pid, signal.SIGKILL)
                t_kill = time.perf_counter()
                rest = [line async for line in lines if line]
            assert rest[-1] == "data: [DONE]" and '"code":"engine_unavailable"' in rest[-2], rest[-3:]
            failed = await plain
            assert failed.status_code == 503 and failed.json()["error"]["code"] == "engine_unavailable"
            assert time.perf_counter() - t_kill < 10
            # Until the process exits: /ready and new requests answer 503 at once.
            ready = (await http.get(live.base_url + "/ready")).status_code
            new = await http.post(url, headers=live.headers(), json={
                "model": live.model, "messages": STORY, "max_tokens": 8})
            assert ready == 503 and new.status_code == 503, (ready, new.text)
        assert await asyncio.to_thread(proc.wait, 60) == ENGINE_DIED
        assert "the engine died" in live.log_path.read_text(errors="replace")
    finally:
        stop_server(proc)
