"""What the code interpreter does for the default model: arithmetic answered
directly, with a program (PAL, Gao et al. 2022, arXiv:2211.10435), with
thought-action-observation steps (ReAct, Yao et al. 2022, arXiv:2210.03629),
and with a majority vote over programs (PAL x self_consistency).

    .venv/bin/python -m loadtests.bench_pal [--problems 30] [--seed 7]
        [--base-url URL --model NAME] [--out loadtests/out]

Tasks: ``--problems`` questions "What is A * B + C?" with A, B two-digit and C
one-digit numbers from a seeded RNG (exact multi-digit arithmetic: where a
program should help most). A response is correct when
``strategies.answers.answer_key(content) == str(answer)``, the key the server
votes with. Configurations, through the openai SDK, ``max_tokens`` 300, at most
4 requests in flight:

- ``direct``: effort none (no thinking), greedy;
- ``pal``: ``tool_use`` in PAL mode, greedy, thinking cap 160;
- ``react``: ``tool_use`` in ReAct mode, greedy, thinking cap 160;
- ``pal x4 vote``: ``self_consistency`` with ``tools: ["python"]``, 4 samples at
  temperature 0.8, each a PAL run, thinking cap 160.

Per configuration: accuracy with a 95 % Wilson interval, mean completion tokens,
mean latency, programs run (``ponder_code_runs_total``) and how they ended. The
prompts and the ``[tool_use]`` texts are the shipped ones; nothing here was tuned
on these problems. The issue-13 harness does this properly on a stronger model;
this records what the 135M default shows.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import httpx
import openai

from loadtests.bench_parallel import wilson
from loadtests.common import exit_on_sigterm, metric_value, ponder_server
from strategies.answers import answer_key

IN_FLIGHT = 4
THINK = 160
CONFIGS: list[tuple[str, dict[str, Any], float]] = [
    ("direct", {"effort": "none"}, 0.0),
    ("pal", {"strategy": "tool_use", "tool_mode": "pal", "max_thinking_tokens": THINK}, 0.0),
    ("react", {"strategy": "tool_use", "tool_mode": "react", "max_thinking_tokens": THINK}, 0.0),
    ("pal x4 vote", {"strategy": "self_consistency", "samples": 4, "tools": ["python"], "tool_mode": "pal",
                     "max_thinking_tokens": THINK}, 0.8),
]


def problems(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b, c = rng.randint(11, 99), rng.randint(11, 99), rng.randint(1, 9)
        out.append((f"What is {a} * {b} + {c}?", a * b + c))
    return out


async def _one(client, gate: asyncio.Semaphore, model: str, q: str, truth: int, seed: int,
               reasoning: dict[str, Any], temperature: float) -> dict[str, Any]:
    async with gate:
        t0 = time.perf_counter()
        r = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": q}], max_tokens=300,
            temperature=temperature, seed=seed, extra_body={"reasoning": reasoning})
        content = r.choices[0].message.content or ""
        return {"correct": answer_key(content) == str(truth), "tokens": r.usage.completion_tokens,
                "latency_s": time.perf_counter() - t0, "content": content[:200]}


async def run(base: str, model: str, n: int, seed: int) -> list[dict[str, Any]]:
    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="bench", max_retries=0, timeout=600)
    http = httpx.AsyncClient(headers={"Authorization": "Bearer bench"})
    tasks = problems(n, seed)
    rows = []
    for label, reasoning, temperature in CONFIGS:
        gate = asyncio.Semaphore(IN_FLIGHT)
        before = (await http.get(base + "/metrics")).text
        t0 = time.perf_counter()
        records = await asyncio.gather(*(_one(client, gate, model, q, t, seed * 1000 + i, reasoning, temperature)
                                         for i, (q, t) in enumerate(tasks)))
        wall = time.perf_counter() - t0
        after = (await http.get(base + "/metrics")).text
        runs = {o: metric_value(after, f'ponder_code_runs_total{{outcome="{o}"}}')
                - metric_value(before, f'ponder_code_runs_total{{outcome="{o}"}}')
                for o in ("exit_0", "exit_error", "timeout", "cpu", "memory", "output")}
        k = sum(r["correct"] for r in records)
        lo, hi = wilson(k, n)
        rows.append({"config": label, "reasoning": reasoning, "temperature": temperature, "correct": k,
                     "problems": n, "ci95": [lo, hi], "mean_tokens": sum(r["tokens"] for r in records) / n,
                     "mean_latency_s": sum(r["latency_s"] for r in records) / n, "wall_s": wall,
                     "code_runs": {o: int(v) for o, v in runs.items() if v}, "records": records})
        print(f"  {label}: {k}/{n} [{lo:.2f}-{hi:.2f}], {rows[-1]['mean_tokens']:.0f} tokens, "
              f"runs {rows[-1]['code_runs']}, {wall:.0f} s", flush=True)
    await client.close()
    await http.aclose()
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| configuration | correct | accuracy [95 % CI] | mean tokens | mean latency s | programs run (how they ended) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["ci95"]
        runs = ", ".join(f"{k} {v}" for k, v in r["code_runs"].items()) or "none"
        lines.append(f"| {r['config']} | {r['correct']}/{r['problems']} | {r['correct'] / r['problems']:.2f} "
                     f"[{lo:.2f}-{hi:.2f}] | {r['mean_tokens']:.0f} | {r['mean_latency_s']:.1f} | {runs} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--problems", type=int, default=30)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--base-url")
    p.add_argument("--model", default="SmolLM2-135M-Instruct")
    p.add_argument("--out", type=Path, default=Path("loadtests/out"))
    a = p.parse_args()
    exit_on_sigterm()
    t0 = time.perf_counter()
    if a.base_url:
        rows = asyncio.run(run(a.base_url, a.model, a.problems, a.seed))
    else:
        with ponder_server(a.out / "bench_pal_server.log", api_key="bench") as served:
            print(f"ponder ready in {served.start_s:.0f} s", flush=True)
            rows = asyncio.run(run(served.base, a.model, a.problems, a.seed))
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "bench_pal.json").write_text(json.dumps({"seed": a.seed, "problems": a.problems, "rows": rows},
                                                     indent=1))
    print()
    print(table(rows))
    print(f"\nWhole run {time.perf_counter() - t0:.0f} s; per-problem records in {a.out / 'bench_pal.json'}")


if __name__ == "__main__":
    main()
