"""Shared steps of the integration tests that watch the engine."""
from __future__ import annotations

import asyncio
import time

import httpx
import openai

from loadtests.common import metric_value

from .sse import Stream, post_stream

UNFINISHED = "ponder_engine_unfinished_requests"  # engine requests running or waiting


def metric(live, series: str) -> float:
    """The sum of a metric's samples on /metrics: ``series`` is a name (every label
    set) or one labelled series as printed (``name{label="value"}``)."""
    return metric_value(httpx.get(live.base_url + "/metrics", headers=live.headers()).text, series)


def unfinished(live) -> float:
    return metric(live, UNFINISHED)


async def reaches(live, series: str, count: float, within: float = 5.0, unless: tuple = ()) -> bool:
    """Whether ``series`` reaches ``count`` within ``within`` seconds (and before any
    future in ``unless`` is done). Polled, because counts move: the expansions of a
    beam-search step, for one, end one by one before the next step starts."""
    deadline = time.monotonic() + within
    while metric(live, series) < count:
        if time.monotonic() > deadline or any(f.done() for f in unless):
            return False
        await asyncio.sleep(0.02)
    return True


async def stream_then_drop(live, body: dict, at_least: int) -> None:
    """Start a streamed request, check ``at_least`` engine requests run, then go away."""
    async with httpx.AsyncClient(timeout=60) as http:
        async with http.stream("POST", live.base_url + "/v1/chat/completions", json=body,
                               headers=live.headers()) as r:
            assert r.status_code == 200
            lines = r.aiter_lines()  # kept open: leaving an `async for` would close it
            while not (await lines.__anext__()).startswith("data: "):
                pass  # until the role chunk: the strategy has started
            assert await reaches(live, UNFINISHED, at_least)


async def engine_drains(live, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while unfinished(live) > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return unfinished(live) == 0


async def batch(live, bodies: list[dict]) -> list:
    """Chat completions for ``bodies`` at once, through the official async SDK."""
    async with openai.AsyncOpenAI(base_url=live.v1, api_key=live.api_key, max_retries=0, timeout=600) as c:
        return await asyncio.gather(*(c.chat.completions.create(model=live.model, **b) for b in bodies))


def _streamed_trace(s: Stream) -> dict | None:
    for c in s.chunks:
        for ch in c.get("choices", []):
            if ch.get("finish_reason") is not None:
                return ch.get("reasoning_trace")
    return None


def untimed(trace):
    """A trace without its wall times (a code run's or the summary's ``seconds``): the
    clock is not something the engine computes, so two equal runs differ there."""
    if isinstance(trace, dict):
        return {k: untimed(v) for k, v in trace.items() if k != "seconds"}
    if isinstance(trace, list):
        return [untimed(v) for v in trace]
    return trace


def plain_and_streamed(live, body: dict, attempts: int = 3) -> tuple[dict, Stream]:
    """The same request once plain and once streamed (with usage); checks that the
    stream's answer, thinking and completion tokens equal the plain response's.

    vLLM's CPU build is not batch invariant (vLLM supports that on GPUs only): a
    strategy whose engine requests overlap sees different batch shapes in two runs,
    so a seeded sample can part ways. The pair is compared whenever the two traces
    agree (the engine computed the same thing: then any difference is ponder's) and
    run again, up to ``attempts`` times, only when the traces show the engine itself
    diverged; a pair that never agrees fails."""
    seen = []
    for _ in range(attempts):
        full = httpx.post(live.base_url + "/v1/chat/completions", json=body, headers=live.headers(),
                          timeout=300).json()
        s = post_stream(live.base_url, {**body, "stream": True, "stream_options": {"include_usage": True}},
                        live.headers())
        trace, streamed = full["choices"][0].get("reasoning_trace"), _streamed_trace(s)
        if untimed(trace) != untimed(streamed):
            seen.append((trace, streamed))
            continue
        msg, joined = full["choices"][0]["message"], s.joined(1)[0]
        assert joined["content"] == msg["content"]
        assert joined["reasoning_content"] == (msg["reasoning_content"] or "")
        assert s.chunks[-1]["usage"]["completion_tokens"] == full["usage"]["completion_tokens"]
        return full, s
    raise AssertionError(f"the engine never computed the same run twice in {attempts} attempts: {seen}")


# A small plan of every strategy, for the tests that compare a stream with its
# response on /v1/messages and /v1/responses: the encoders there are folds of the
# same event stream as chat's, and each strategy emits its own kinds of events
# (candidates, judges, revision rounds, beam steps, the auto probe, code runs).
# Chat's own comparisons, with larger plans, are in test_sequential and test_parallel.
EVERY_STRATEGY = {
    "single": {"strategy": "single", "max_thinking_tokens": 24},
    "budget_forcing": {"strategy": "budget_forcing", "min_thinking_tokens": 16, "max_thinking_tokens": 24},
    "self_consistency": {"strategy": "self_consistency", "samples": 2, "effort": "minimal"},
    "best_of_n": {"strategy": "best_of_n", "samples": 2, "scorer": "self_judge", "effort": "none"},
    "revision": {"strategy": "revision", "rounds": 1, "effort": "none"},
    "beam_search": {"strategy": "beam_search", "beam_width": 2, "max_steps": 2},
    "auto": {"strategy": "auto", "budget_tokens": 120},
    "tool_use": {"strategy": "tool_use", "tool_mode": "pal", "effort": "none"},
}
