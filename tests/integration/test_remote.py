"""ponder over a fleet: the remote engine on two real ``vllm serve`` processes.

Two vLLM OpenAI servers of the default model are started here, each with its
compute bound to its own core (two engines pinned to the same core slow each
other tenfold), and one ``ponder serve --engine-url A --engine-url B`` in front.
The core guarantees of the in-process engine are checked again through them:
every strategy's stream equals its response, thinking budgets hold, usage is
the trace's sum and the prefix cache is hit, a disconnect aborts the upstream
work, every engine request of one ponder request goes to one upstream, and
prompts with different prefixes spread over both. Last, a fault: one upstream
is killed while requests run; nothing hangs and the survivor takes new work.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from loadtests.common import free_port, metric_value, model_folder, wait_http

from .conftest import MODEL, Live, start_server, stop_server
from .helpers import EVERY_STRATEGY, plain_and_streamed

pytestmark = pytest.mark.integration

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
SUCCESS = "vllm:request_success_total"


def _start_vllm(folder: str, core: int, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", folder,
           "--served-model-name", MODEL, "--port", str(port), "--host", "127.0.0.1",
           "--max-model-len", "2048", "--max-num-batched-tokens", "256", "--enable-prefix-caching",
           "--enable-prompt-tokens-details", "--disable-uvicorn-access-log"]
    # VLLM_USE_AOT_COMPILE=0 as ponder's own engine sets it: the CPU build cannot load
    # vLLM's AOT cache back, torch.compile's own cache works (a start in half the time).
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": str(core),
           "VLLM_USE_AOT_COMPILE": "0"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=60)


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[subprocess.Popen, str]]]:
    folder = model_folder()
    logs = tmp_path_factory.mktemp("vllm")
    started = [_start_vllm(folder, core, logs / f"vllm{core}.log") for core in (0, 1)]
    try:
        for core, (proc, url) in enumerate(started):
            wait_http(proc, url + "/health", logs / f"vllm{core}.log", timeout_s=600, poll_s=0.5, name="vllm serve")
        yield started
    finally:
        for proc, _ in started:
            _kill_group(proc)


@pytest.fixture(scope="module")
def fleet(upstreams, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    log_path = tmp_path_factory.mktemp("remote") / "ponder.log"
    urls = [a for _, url in upstreams for a in ("--engine-url", url)]
    proc, server = start_server(log_path, *urls, "--set", "remote.health_interval=0.5")
    try:
        yield server
    finally:
        stop_server(proc)


def _upstream_metric(url: str, series: str) -> float:
    return metric_value(httpx.get(url + "/metrics", timeout=10).text, series)


def _upstream_work(upstreams) -> float:
    return sum(_upstream_metric(url, RUNNING) + _upstream_metric(url, WAITING) for _, url in upstreams)


CONTEXT = ("You are a careful math tutor. Read the question, answer it briefly, and keep your answers "
           "short. When asked to check an answer, check every step and say plainly whether it is "
           "right. ") * 6  # several KV-cache blocks


def _msgs(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize("plan", list(EVERY_STRATEGY.values()), ids=list(EVERY_STRATEGY))
def test_every_strategy_streams_what_it_returns(fleet: Live, plan: dict) -> None:
    body = {"model": fleet.model, "messages": _msgs("What is 12 times 3?"), "max_tokens": 96, "temperature": 0.8,
            "seed": 9, "reasoning": {"budget_tokens": 240, **plan}}
    warm = httpx.post(fleet.v1 + "/chat/completions", json=body, headers=fleet.headers(), timeout=300)
    assert warm.status_code == 200, warm.text  # and the cache holds every phase's prefix
    full, s = plain_and_streamed(fleet, body)
    assert full["choices"][0]["reasoning_trace"]["strategy"] == plan["strategy"]
    assert s.finish_reasons()[0] == [full["choices"][0]["finish_reason"]]
    assert full["usage"]["completion_tokens"] <= 240


@pytest.mark.parametrize("low,high", [(16, 24), (40, 48)])
def test_thinking_stays_within_its_budget(fleet: Live, low: int, high: int) -> None:
    client = openai.OpenAI(base_url=fleet.v1, api_key=fleet.api_key, max_retries=0, timeout=300)
    for prompt in ("Is 17 a prime number?", "Name the capital of France.", "What is 7 plus 8?"):
        r = client.chat.completions.create(
            model=fleet.model, messages=_msgs(prompt), max_tokens=120, temperature=0.7, seed=1,
            extra_body={"reasoning": {"strategy": "budget_forcing", "min_thinking_tokens": low,
                                      "max_thinking_tokens": high}})
        thinking = r.usage.completion_tokens_details.reasoning_tokens
        assert low <= thinking <= high, (prompt, thinking)
        trace = r.choices[0].model_extra["reasoning_trace"]
        assert trace["thinking"]["tokens"] == thinking


def test_usage_is_exact_and_continuations_hit_the_cache(fleet: Live) -> None:
    body = {"model": fleet.model, "messages": _msgs("Why is the sky blue?"), "max_tokens": 40,
            "temperature": 0.9, "seed": 3,
            "reasoning": {"strategy": "self_consistency", "samples": 4, "early_stop": False, "effort": "none"}}
    r = httpx.post(fleet.v1 + "/chat/completions", json=body, headers=fleet.headers(), timeout=300).json()
    trace = r["choices"][0]["reasoning_trace"]
    assert r["usage"]["completion_tokens"] == sum(c["tokens"] for c in trace["candidates"])
    # A revision's critique and redraft continue the conversation on the same upstream:
    # its prefix (several KV blocks of system prompt) is read from that server's cache.
    body = {"model": fleet.model, "max_tokens": 64, "temperature": 0,
            "messages": [{"role": "system", "content": CONTEXT}, *_msgs("What is 1 plus 1?")],
            "reasoning": {"strategy": "revision", "rounds": 2}}
    r = httpx.post(fleet.v1 + "/chat/completions", json=body, headers=fleet.headers(), timeout=300).json()
    turns, engine = r["choices"][0]["reasoning_trace"]["turns"], r["usage"]["engine"]
    assert engine["requests"] == len(turns) >= 2, (engine, turns)
    assert engine["cached_tokens"] > 0, r["usage"]


def test_one_ponder_request_stays_on_one_upstream_and_prefixes_spread(fleet: Live, upstreams) -> None:
    before = [_upstream_metric(url, SUCCESS) for _, url in upstreams]
    body = {"model": fleet.model, "messages": _msgs("Reply with the number 5."), "max_tokens": 24,
            "temperature": 0.9, "seed": 5,
            "reasoning": {"strategy": "best_of_n", "samples": 3, "scorer": "self_judge", "effort": "low"}}
    r = httpx.post(fleet.v1 + "/chat/completions", json=body, headers=fleet.headers(), timeout=300)
    assert r.status_code == 200, r.text
    grew = [_upstream_metric(url, SUCCESS) - b for (_, url), b in zip(upstreams, before, strict=True)]
    assert sorted(grew)[0] == 0 and sorted(grew)[1] >= 6, grew  # thinking, answers, judges: one upstream

    # Different system prompts (different first blocks) land on both upstreams.
    before = [_upstream_metric(url, SUCCESS) for _, url in upstreams]
    for k in range(12):
        system = f"You are assistant number {k}. " * 4
        httpx.post(fleet.v1 + "/chat/completions", headers=fleet.headers(), timeout=120, json={
            "model": fleet.model, "max_tokens": 2, "reasoning_effort": "none",
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": "hi"}]}).raise_for_status()
    grew = [_upstream_metric(url, SUCCESS) - b for (_, url), b in zip(upstreams, before, strict=True)]
    assert min(grew) >= 2, grew


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24},
                                           "degrees": {"type": "integer"}},
          "required": ["city", "degrees"], "additionalProperties": False}


def test_answer_formats_and_tool_calls_hold_over_the_wire(fleet: Live) -> None:
    """The constraint goes to the upstream with the answer phase (the thinking stays
    free text), vLLM's check runs before the first byte, and tool calls are parsed
    from the upstream's token ids by ponder."""
    ask = _msgs("What is the weather in Paris right now?")
    client = openai.OpenAI(base_url=fleet.v1, api_key=fleet.api_key, max_retries=0, timeout=300)
    r = client.chat.completions.create(
        model=fleet.model, messages=ask, max_tokens=120, temperature=0.8, seed=3,
        response_format={"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA}},
        extra_body={"reasoning": {"max_thinking_tokens": 24}})
    answer = json.loads(r.choices[0].message.content)
    assert set(answer) == {"city", "degrees"} and isinstance(answer["degrees"], int), answer
    assert r.choices[0].message.model_extra.get("reasoning_content")

    bad = httpx.post(fleet.v1 + "/chat/completions", headers=fleet.headers(), timeout=60, json={
        "model": fleet.model, "messages": ask, "max_tokens": 8, "structured_outputs": {"regex": "[0-9"}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "structured_outputs", bad.text

    # vLLM's HTTP API takes 4 stop strings (VLLM_MAX_STOP_STRINGS) and a phase may add one.
    stops = {k: httpx.post(fleet.v1 + "/chat/completions", headers=fleet.headers(), timeout=60, json={
        "model": fleet.model, "messages": ask, "max_tokens": 8, "stop": [f"STOP{i}" for i in range(k)]})
        for k in (3, 4)}
    assert stops[3].status_code == 200, stops[3].text
    assert stops[4].status_code == 400 and stops[4].json()["error"]["param"] == "stop", stops[4].text

    r = client.chat.completions.create(model=fleet.model, messages=ask, max_tokens=120, temperature=0,
                                       tools=[WEATHER], tool_choice="required")
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather", r
    assert isinstance(json.loads(call.function.arguments)["city"], str)


@pytest.mark.asyncio
async def test_a_disconnect_aborts_the_upstream_work(fleet: Live, upstreams) -> None:
    body = {"model": fleet.model, "messages": _msgs("Write a long story about a dragon."), "max_tokens": 1500,
            "stream": True, "reasoning": {"strategy": "self_consistency", "samples": 4, "early_stop": False,
                                          "effort": "none"}}
    async with httpx.AsyncClient(timeout=60, headers=fleet.headers()) as http:
        async with http.stream("POST", fleet.v1 + "/chat/completions", json=body) as r:
            assert r.status_code == 200
            lines = r.aiter_lines()
            while not (await lines.__anext__()).startswith("data: "):
                pass
            deadline = asyncio.get_running_loop().time() + 20
            while _upstream_work(upstreams) < 1:
                assert asyncio.get_running_loop().time() < deadline, "the work never reached an upstream"
                await asyncio.sleep(0.05)
    deadline = asyncio.get_running_loop().time() + 5
    while _upstream_work(upstreams) > 0:
        assert asyncio.get_running_loop().time() < deadline, "the upstream kept generating after the client left"
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_an_upstream_killed_mid_load(fleet: Live, upstreams) -> None:
    """Runs last in this module: it kills one of the two upstreams."""
    async def one(http: httpx.AsyncClient, k: int) -> int:
        r = await http.post(fleet.v1 + "/chat/completions", json={
            "model": fleet.model, "max_tokens": 64, "reasoning_effort": "none",
            "messages": _msgs(f"Count from {k} to {k + 30}.")})
        return r.status_code

    async with httpx.AsyncClient(timeout=120, headers=fleet.headers()) as http:
        load = [asyncio.create_task(one(http, k)) for k in range(16)]
        deadline = asyncio.get_running_loop().time() + 30
        while min(_upstream_metric(url, RUNNING) for _, url in upstreams) < 1:
            assert asyncio.get_running_loop().time() < deadline, "the load never reached both upstreams"
            await asyncio.sleep(0.05)
        victim, _ = upstreams[0]
        _kill_group(victim)
        statuses = await asyncio.wait_for(asyncio.gather(*load), timeout=120)  # nothing hangs
        print("statuses with one upstream killed:", sorted(statuses))
        assert set(statuses) <= {200, 503}, statuses
        assert statuses.count(503) >= 1 and statuses.count(200) >= 1, statuses
        await asyncio.sleep(1.5)  # a health check or two: the dead one is out
        after = await asyncio.gather(*(one(http, k) for k in range(6)))
    assert after == [200] * 6, after
    assert httpx.get(fleet.base_url + "/ready").status_code == 200
