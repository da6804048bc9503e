"""Shared steps of the integration tests that watch the engine."""
from __future__ import annotations

import asyncio
import re
import time

import httpx
import openai


def unfinished(live) -> float:
    """Engine requests not finished (running or waiting), from /metrics."""
    text = httpx.get(live.base_url + "/metrics", headers=live.headers()).text
    return float(re.search(r"^ponder_engine_unfinished_requests (\S+)$", text, re.M).group(1))


async def stream_then_drop(live, body: dict, at_least: int) -> None:
    """Start a streamed request, check ``at_least`` engine requests run, then go away."""
    async with httpx.AsyncClient(timeout=60) as http:
        async with http.stream("POST", live.base_url + "/v1/chat/completions", json=body,
                               headers=live.headers()) as r:
            assert r.status_code == 200
            lines = r.aiter_lines()  # kept open: leaving an `async for` would close it
            while not (await lines.__anext__()).startswith("data: "):
                pass  # until the role chunk: the strategy has started
            await asyncio.sleep(1.0)
            assert unfinished(live) >= at_least


async def engine_drains(live, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while unfinished(live) > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return unfinished(live) == 0


async def batch(live, bodies: list[dict]) -> list:
    """Chat completions for ``bodies`` at once, through the official async SDK."""
    async with openai.AsyncOpenAI(base_url=live.v1, api_key=live.api_key, max_retries=0, timeout=600) as c:
        return await asyncio.gather(*(c.chat.completions.create(model=live.model, **b) for b in bodies))
