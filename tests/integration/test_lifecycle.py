"""A server of its own with a small admission limit, 4 engine slots, CORS and a
short drain: 429s before any byte, the engine's queue in priority order, CORS as
configured, then SIGTERM's drain; and a SIGTERM that comes while the engine is
still starting."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import openai
import psutil
import pytest

from loadtests.common import free_port

from .conftest import ROOT, Live, start_server, stop_server
from .helpers import metric, reaches
from .sse import post_stream

# A server of its own (or minutes of load): `make test-slow`, not `make test`.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

ORIGIN = "https://app.example"
LIMIT, DRAIN, SLOTS = 8, 3.0, 4
STORY = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen, Live]]:
    log_path = tmp_path_factory.mktemp("ops") / "ponder.log"
    proc, live = start_server(log_path, "--max-num-seqs", str(SLOTS),
                              "--set", f"server.max_concurrent_sequences={LIMIT}",
                              "--set", f"server.drain_timeout={DRAIN}", "--set", "server.retry_after=2",
                              "--set", f'server.cors_origins=["{ORIGIN}"]')
    try:
        yield proc, live
    finally:
        stop_server(proc)


async def _stream(live: Live, body: dict) -> tuple[int, dict, list[str]]:
    """Status, headers and the data lines of one streamed request."""
    async with httpx.AsyncClient(timeout=300) as http:
        async with http.stream("POST", live.base_url + "/v1/chat/completions", json=body,
                               headers=live.headers()) as r:
            lines = [line async for line in r.aiter_lines() if line]
            return r.status_code, dict(r.headers), lines


@pytest.mark.asyncio
async def test_past_the_limit_429_comes_before_any_byte_and_the_accepted_finish(ops) -> None:
    _, live = ops
    rejected_before = metric(live, 'ponder_requests_rejected_total{code="server_overloaded"}')
    body = {"model": live.model, "messages": STORY, "max_tokens": 48, "temperature": 1.0, "stream": True,
            "reasoning": {"strategy": "best_of_n", "samples": 4}}  # weight 4 of 8
    results = await asyncio.gather(*(_stream(live, body) for _ in range(6)))
    accepted = [r for r in results if r[0] == 200]
    rejected = [r for r in results if r[0] != 200]
    assert len(accepted) >= 2 and rejected, [r[0] for r in results]
    for status, headers, lines in rejected:
        assert status == 429 and headers["retry-after"] == "2" and headers["x-should-retry"] == "true"
        assert headers["content-type"] == "application/json"  # an error body, not a stream
        assert '"code":"server_overloaded"' in lines[0] and '"type":"rate_limit_error"' in lines[0]
    for _, _, lines in accepted:
        assert lines[-1] == "data: [DONE]" and '"finish_reason":"length"' in "".join(lines)
        assert '"error"' not in "".join(lines)
    assert metric(live, 'ponder_requests_rejected_total{code="server_overloaded"}') == rejected_before + len(rejected)
    assert metric(live, "ponder_admission_sequences_in_use") == 0


@pytest.mark.asyncio
async def test_the_sdk_retries_after_retry_after_and_gets_through(ops) -> None:
    _, live = ops
    heavy = {"model": live.model, "messages": STORY, "max_tokens": 64,
             "reasoning": {"strategy": "self_consistency", "samples": 8, "early_stop": False}}
    async with httpx.AsyncClient(timeout=300) as http:
        hog = asyncio.ensure_future(http.post(live.base_url + "/v1/chat/completions", json=heavy,
                                              headers=live.headers()))
        assert await reaches(live, "ponder_admission_sequences_in_use", LIMIT, 30, unless=(hog,))  # the hog holds it
        async with openai.AsyncOpenAI(base_url=live.v1, api_key=live.api_key, max_retries=6, timeout=300) as c:
            r = await c.chat.completions.with_raw_response.create(
                model=live.model, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8)
        assert (await hog).status_code == 200
    assert r.retries_taken >= 1 and r.parse().choices[0].finish_reason in ("stop", "length")


async def _first_token_at(live: Live, body: dict) -> float:
    async with httpx.AsyncClient(timeout=300) as http:
        async with http.stream("POST", live.base_url + "/v1/chat/completions", json=body,
                               headers=live.headers()) as r:
            assert r.status_code == 200, await r.aread()
            first, last = None, ""
            async for line in r.aiter_lines():
                if first is None and '"content":"' in line and '"content":""' not in line:
                    first = time.perf_counter()
                last = line or last
            assert first is not None and last == "data: [DONE]", last
            return first


@pytest.mark.asyncio
async def test_the_engine_queue_runs_in_priority_order(ops) -> None:
    """Four hogs fill the 4 slots and end one after another; two requests wait, the
    later one with a lower `priority`: it gets the first free slot. vLLM's own
    first-come-first-served order would give that slot to the earlier one."""
    _, live = ops
    base = {"model": live.model, "messages": STORY, "ignore_eos": True, "stream": True}
    hogs = [asyncio.ensure_future(_stream(live, {**base, "max_tokens": 60 + 30 * i})) for i in range(SLOTS)]
    assert await reaches(live, "vllm:num_requests_running", SLOTS, 30, unless=tuple(hogs))
    early = asyncio.ensure_future(_first_token_at(live, {**base, "max_tokens": 8}))
    assert await reaches(live, "vllm:num_requests_waiting", 1, 30, unless=tuple(hogs))
    urgent = asyncio.ensure_future(_first_token_at(live, {**base, "max_tokens": 8, "priority": -1}))
    assert await reaches(live, "vllm:num_requests_waiting", 2, 30, unless=tuple(hogs))
    t_early, t_urgent = await asyncio.gather(early, urgent)
    assert all(status == 200 for status, _, _ in await asyncio.gather(*hogs))
    assert t_urgent < t_early, t_early - t_urgent


def test_heavier_than_the_limit_is_refused_for_good(ops) -> None:
    _, live = ops
    client = openai.OpenAI(base_url=live.v1, api_key=live.api_key, max_retries=3)
    t0 = time.perf_counter()
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=live.model, messages=STORY, max_tokens=8, n=3,
                                       extra_body={"reasoning": {"strategy": "best_of_n", "samples": 3}})
    assert info.value.body["code"] == "request_too_large"
    assert time.perf_counter() - t0 < 1.0  # x-should-retry: false, so no retry


def test_cors_answers_only_the_configured_origin(ops) -> None:
    _, live = ops
    pre = httpx.options(live.base_url + "/v1/chat/completions",
                        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                 "Access-Control-Request-Headers": "authorization, content-type"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.options(live.base_url + "/v1/chat/completions",
                          headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in other.headers
    r = httpx.get(live.base_url + "/v1/models", headers={**live.headers(), "Origin": ORIGIN})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in r.headers["access-control-expose-headers"]
    denied = httpx.get(live.base_url + "/v1/models", headers={"Origin": ORIGIN})  # CORS does not replace the key
    assert denied.status_code == 401


@pytest.mark.asyncio
async def test_sigterm_drains_then_aborts_then_exits_cleanly(ops) -> None:
    """Last in this module: the server is gone afterwards."""
    proc, live = ops
    short = {"model": live.model, "messages": STORY, "max_tokens": 24, "stream": True}
    long = {"model": live.model, "messages": STORY, "max_tokens": 1500, "stream": True,
            "stream_options": {"include_usage": True}}
    long_task = asyncio.ensure_future(_stream(live, long))
    short_task = asyncio.ensure_future(_stream(live, short))
    await asyncio.sleep(0.5)
    t_term = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    assert httpx.get(live.base_url + "/ready").status_code == 503
    late = await asyncio.to_thread(post_stream, live.base_url, short, live.headers())
    assert late.status == 503 and late.frames[0]["error"]["code"] == "server_shutting_down"
    assert late.headers["retry-after"]
    status, _, lines = await short_task
    assert status == 200 and lines[-1] == "data: [DONE]" and '"finish_reason":"length"' in "".join(lines)
    status, _, lines = await long_task
    ended = time.perf_counter() - t_term
    assert status == 200 and lines[-1] == "data: [DONE]"
    assert '"code":"server_shutting_down"' in lines[-2]
    assert DRAIN - 0.5 < ended < DRAIN + 3, ended
    code = await asyncio.to_thread(proc.wait, 60)
    assert code == 0
    assert "Traceback" not in live.log_path.read_text(errors="replace")  # a clean exit, no finalizer noise


def test_sigterm_while_the_engine_starts_exits_promptly_and_leaves_nothing(tmp_path) -> None:
    log_path = tmp_path / "ponder.log"
    cmd = [sys.executable, "-m", "server.cli", "serve", "--port", str(free_port())]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        children: list[psutil.Process] = []
        while time.monotonic() < deadline and not children:  # the engine process is being built
            children = [c for c in psutil.Process(proc.pid).children(recursive=True)
                        if "EngineCore" in c.name() + " ".join(c.cmdline())]
            time.sleep(0.2)
        assert children, log_path.read_text(errors="replace")[-2000:]
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert time.perf_counter() - t0 < 20  # not the ~60 s an engine start takes
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, alive
    finally:
        stop_server(proc)
