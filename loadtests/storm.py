"""A storm of streaming requests of mixed strategies whose clients leave at random moments.

Used by the storm test (small, in ``make test``) and by ``make soak`` (long,
with figures). Afterwards the engine must hold nothing: every request either
completed, was dropped by its client (and aborted by the server), or was
refused with a 429 before any byte.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from loadtests.common import metric_value

PROMPTS = ["Write a short poem about the sea.", "What is 17 times 3? Answer with the number.",
           "Explain why the sky is blue in two sentences.", "Name three prime numbers.",
           "Write a long story about a dragon who learns to bake bread."]
# Small budgets so a storm of hundreds fits in CI time on two cores. A thinking cap
# leaves the answer its reserve (half of the storm's max_tokens of 24), or it is a 400.
REASONING = [
    None,
    {"max_thinking_tokens": 12},
    {"strategy": "budget_forcing", "min_thinking_tokens": 6, "max_thinking_tokens": 12},
    {"strategy": "self_consistency", "samples": 3},
    {"strategy": "best_of_n", "samples": 2},
    {"strategy": "best_of_n", "samples": 2, "scorer": "self_judge"},
    {"strategy": "revision", "rounds": 1},
    {"strategy": "beam_search", "beam_width": 2, "max_steps": 2},
    {"strategy": "auto"},
]


@dataclass
class StormReport:
    outcomes: Counter = field(default_factory=Counter)
    by_strategy: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    requests: int = 0

    def row(self) -> dict[str, float]:
        """Requests, then outcomes: completed, dropped, failed, given_up (each request once) and rejections (429s)."""
        counts = {k: self.outcomes[k] for k in ("completed", "dropped", "failed", "given_up", "rejections")}
        return {"requests": self.requests, **counts, **self.outcomes, "seconds": round(self.seconds, 1)}


def bodies(model: str, count: int, max_tokens: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        body = {"model": model, "stream": True, "max_tokens": max_tokens, "temperature": 0.8,
                "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
                "stream_options": {"include_usage": True}}
        reasoning = REASONING[i % len(REASONING)]
        if reasoning is not None:
            body["reasoning"] = reasoning
        out.append(body)
    rng.shuffle(out)
    return out


async def _read(r: httpx.Response) -> list[str]:
    return [line async for line in r.aiter_lines() if line]


async def _one(http: httpx.AsyncClient, url: str, headers: dict, body: dict, leave_after: float | None,
               report: StormReport) -> float | None:
    """One request; returns the Retry-After of a 429 (the request was refused), else None."""
    strategy = (body.get("reasoning") or {}).get("strategy", "single")
    report.by_strategy[strategy] += 1
    try:
        async with http.stream("POST", url, json=body, headers=headers) as r:
            if r.status_code == 429 and r.headers.get("retry-after"):
                report.outcomes["rejections"] += 1
                return float(r.headers["retry-after"])
            if r.status_code != 200:
                report.outcomes["failed"] += 1
                report.failures.append(f"{strategy}: status {r.status_code} {(await r.aread())[:200]!r}")
                return
            try:
                lines = await asyncio.wait_for(_read(r), timeout=leave_after)
            except TimeoutError:
                report.outcomes["dropped"] += 1
                return  # leaving the block closes the connection mid-stream
            error = next((line for line in lines if line.startswith('data: {"error"')), None)
            if error is None and lines and lines[-1] == "data: [DONE]":
                report.outcomes["completed"] += 1
            else:
                report.outcomes["failed"] += 1
                report.failures.append(f"{strategy}: {error or (lines[-1][:200] if lines else 'no data')}")
    except httpx.HTTPError as exc:
        report.outcomes["failed"] += 1
        report.failures.append(f"{strategy}: {type(exc).__name__}: {exc}")


async def storm(base_url: str, headers: dict, model: str, count: int = 200, concurrency: int = 32,
                leave_fraction: float = 0.5, max_tokens: int = 24, seed: int = 0,
                leaver_tokens: int = 512, retries: int = 0) -> StormReport:
    """``count`` streamed requests, ``concurrency`` at a time; a share of clients leaves early.

    A client refused with 429 waits its Retry-After and tries again, up to
    ``retries`` times, as the OpenAI SDK does; then it counts as given up.

    Clients that will leave ask for ``leaver_tokens``: if the server failed to
    abort them, the engine would stay busy long after the storm.
    """
    rng = random.Random(seed + 1)
    report = StormReport(requests=count)
    gate = asyncio.Semaphore(concurrency)
    url = base_url + "/v1/chat/completions"
    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=httpx.Timeout(300, connect=30),
                                 limits=httpx.Limits(max_connections=concurrency + 8)) as http:
        async def run(body: dict) -> None:
            leave = rng.uniform(0.0, 3.0) if rng.random() < leave_fraction else None
            if leave is not None:
                body = {**body, "max_tokens": leaver_tokens}
            for _ in range(retries + 1):
                async with gate:
                    pause = await _one(http, url, headers, body, leave, report)
                if pause is None:
                    return
                await asyncio.sleep(pause)
            report.outcomes["given_up"] += 1

        await asyncio.gather(*(run(b) for b in bodies(model, count, max_tokens, seed)))
    report.seconds = time.perf_counter() - t0
    return report


def engine_load(base_url: str, headers: dict) -> dict[str, float]:
    """What the engine and the admission still hold, from /metrics."""
    text = httpx.get(base_url + "/metrics", headers=headers, timeout=10).text
    return {key: metric_value(text, name) for key, name in (
        ("unfinished", "ponder_engine_unfinished_requests"), ("running", "vllm:num_requests_running"),
        ("waiting", "vllm:num_requests_waiting"), ("admitted", "ponder_admission_sequences_in_use"))}


async def until_idle(base_url: str, headers: dict, within: float = 5.0) -> tuple[float, dict[str, float]]:
    """Seconds until the engine holds nothing (inf if not within ``within``), and the last reading."""
    t0 = time.perf_counter()
    while True:
        load = engine_load(base_url, headers)
        if not any(load.values()):
            return time.perf_counter() - t0, load
        if time.perf_counter() - t0 > within:
            return float("inf"), load
        await asyncio.sleep(0.1)
