"""Accuracy against generated tokens for the parallel strategies, and what batching buys.

    .venv/bin/python -m loadtests.bench_parallel [--problems 40] [--seed 0]
        [--base-url URL --model NAME] [--out loadtests/out]

Method
------
Tasks: ``--problems`` arithmetic word problems made from templates with a
seeded RNG ("Tom has 3 apples and buys 4 more. How many apples does Tom have
now?"): one addition, subtraction or small multiplication of 1-2 digit
numbers, or two additions, each with one non-negative integer answer. The
default model (SmolLM2-135M-Instruct) solves some of them, so accuracy is
neither 0 nor 1. A response is correct when
``strategies.answers.answer_key(content) == str(answer)``: the answer key the
server itself votes with.

Configurations, every one through the official ``openai`` SDK with
``extra_body={"reasoning": {...}}``, ``temperature`` 0.8, ``max_tokens`` 48
(per candidate), reasoning effort ``none`` (no thinking block), ``seed`` fixed
per problem:

- ``single``: one sample;
- ``self_consistency`` (Wang et al. 2022, "Self-Consistency Improves Chain of
  Thought Reasoning in Language Models", arXiv:2203.11171): 2/4/8 samples,
  majority vote over final answers, ``early_stop`` false; and 4/8 samples with
  ``early_stop`` true (the server's ``[parallel]`` window and stop rule; with
  a window of 4, four samples are one window and cannot stop early);
- ``best_of_n`` with the ``confidence`` scorer (DeepConf: Fu et al. 2025,
  "Deep Think with Confidence", arXiv:2508.15260, lowest group confidence of
  the candidate's tokens): 4/8 samples; with the ``self_judge`` scorer (the
  model answers "Is your answer above correct?" and P(Yes) ranks): 4 samples.

Problems go to the server concurrently, at most 4 requests in flight, so the
engine batches across requests as well as across a request's candidates. Per
configuration: accuracy (with a 95 % Wilson interval), mean
``usage.completion_tokens`` per problem (every candidate's tokens, judge tokens
included), mean request latency, and the configuration's wall time divided by
the number of problems (throughput view). The JSON also keeps, from
``reasoning_trace``, whether any candidate had the right answer (pass@k: the
ceiling a perfect selector would reach).

Batching: for each of the first 8 problems, 8 samples of the same prompt three
ways, one after the other, one problem at a time: one request
(``best_of_n``, samples 8), 8 sequential ``single`` requests, 8 concurrent
``single`` requests; ``max_tokens`` 48, nothing ignored (no ``ignore_eos``, so
token counts differ a little between the ways and are reported). Wall times
are summed over the 8 problems; the ratios are sequential / one-request and
concurrent / one-request. Two extra ways give context: one request with
``self_consistency`` samples 8 without early stop (no logprobs needed, unlike
the confidence scorer) and one ``single`` request with OpenAI ``n`` = 8.

Without ``--base-url`` the script waits until no other engine runs (2 cores),
starts ``ponder serve`` on a free port, and stops it at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadtests.common import free_port, stop, wait_ready
from strategies.answers import answer_key

MODEL_NAME = "SmolLM2-135M-Instruct"
TEMPERATURE = 0.8
MAX_TOKENS = 96
# Without it the tiny model spends its tokens on "Let's break it down..." and is
# cut before it states an answer, so accuracy would measure truncation.
INSTRUCTION = "Solve the problem briefly. End with: The answer is <number>."
IN_FLIGHT = 4
BATCH_PROMPTS = 8
BATCH_SAMPLES = 8
READY_TIMEOUT_S = 600.0
# Engines, and the other benchmarks that start one between their phases.
OTHER_ENGINES = "server.cli|ponder serve|EngineCore|loadtests.bench_(engine|forcing)"

NAMES = ["Tom", "Anna", "Sam", "Lily", "Ben", "Mia", "Jack", "Emma", "Leo", "Zoe"]
ITEMS = ["apple", "pencil", "marble", "cookie", "sticker", "book", "ball", "card"]
# (template, how to draw the numbers, the answer)
TEMPLATES: list[tuple[str, Any, Any]] = [
    ("{name} has {a} {item}s and buys {b} more. How many {item}s does {name} have now?",
     lambda r: {"a": r.randint(2, 30), "b": r.randint(2, 30)}, lambda a, b: a + b),
    ("{name} has {a} {item}s and gives {b} of them to a friend. How many {item}s does {name} have left?",
     lambda r: (lambda a: {"a": a, "b": r.randint(1, a - 1)})(r.randint(5, 60)), lambda a, b: a - b),
    ("{name} buys {a} bags with {b} {item}s in each bag. How many {item}s does {name} buy in total?",
     lambda r: {"a": r.randint(2, 9), "b": r.randint(2, 12)}, lambda a, b: a * b),
    ("There are {a} {item}s in a box. {name} puts in {b} more, then {c} more. "
     "How many {item}s are in the box now?",
     lambda r: {"a": r.randint(2, 20), "b": r.randint(2, 20), "c": r.randint(2, 20)},
     lambda a, b, c: a + b + c),
    ("{name} had {a} {item}s and lost {b}. How many {item}s does {name} have now?",
     lambda r: (lambda a: {"a": a, "b": r.randint(1, a - 1)})(r.randint(5, 40)), lambda a, b: a - b),
]

# (label, family, samples, the reasoning object)
CONFIGS: list[tuple[str, str, int, dict[str, Any]]] = [
    ("single", "single", 1, {"effort": "none", "strategy": "single"}),
    *[(f"self_consistency n={n}", "self_consistency", n,
       {"effort": "none", "strategy": "self_consistency", "samples": n, "early_stop": False}) for n in (2, 4, 8)],
    *[(f"self_consistency n={n} early_stop", "self_consistency early_stop", n,
       {"effort": "none", "strategy": "self_consistency", "samples": n, "early_stop": True}) for n in (4, 8)],
    *[(f"best_of_n confidence n={n}", "best_of_n confidence", n,
       {"effort": "none", "strategy": "best_of_n", "samples": n, "scorer": "confidence"}) for n in (4, 8)],
    ("best_of_n self_judge n=4", "best_of_n self_judge", 4,
     {"effort": "none", "strategy": "best_of_n", "samples": 4, "scorer": "self_judge"}),
    # Sequential and search strategies (issue 5); "samples" here is only the plot label.
    ("budget_forcing low", "budget_forcing", 1, {"effort": "low", "strategy": "budget_forcing"}),
    *[(f"revision rounds={r}", "revision", r, {"effort": "none", "strategy": "revision", "rounds": r})
      for r in (1, 2)],
    ("beam_search width=2", "beam_search", 2,
     {"effort": "none", "strategy": "beam_search", "beam_width": 2, "max_steps": 3}),
    ("auto", "auto", 1, {"strategy": "auto"}),
]


@dataclass
class Problem:
    index: int
    question: str
    answer: int
    seed: int


def make_problems(count: int, seed: int) -> list[Problem]:
    """``count`` word problems from the templates in turn, numbers from a seeded RNG."""
    rng = random.Random(seed)
    problems = []
    for i in range(count):
        template, draw, solve = TEMPLATES[i % len(TEMPLATES)]
        nums = draw(rng)
        text = template.format(name=rng.choice(NAMES), item=rng.choice(ITEMS), **nums)
        problems.append(Problem(i, text, solve(**nums), seed * 100_003 + i))
    return problems


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))


async def ask(client, model: str, problem: Problem, reasoning: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """One chat completion; its answer key, correctness, tokens, latency and candidates."""
    t0 = time.perf_counter()
    try:
        resp = await client.chat.completions.create(
            model=model, messages=[{"role": "system", "content": INSTRUCTION},
                                   {"role": "user", "content": problem.question}],
            temperature=TEMPERATURE, max_tokens=MAX_TOKENS, seed=extra.pop("seed", problem.seed),
            extra_body={"reasoning": reasoning}, **extra)
    except Exception as exc:  # a failed request counts as wrong, and is reported
        return {"problem": problem.index, "error": f"{type(exc).__name__}: {exc}"[:300],
                "correct": False, "tokens": 0, "latency_s": time.perf_counter() - t0}
    latency = time.perf_counter() - t0
    choice = resp.choices[0]
    content = choice.message.content or ""
    key, truth = answer_key(content), str(problem.answer)
    trace = (choice.model_extra or {}).get("reasoning_trace") or {}
    cands = [c.get("answer") for c in trace.get("candidates", [])]
    return {"problem": problem.index, "content": content, "key": key, "correct": key == truth,
            "any_correct": (truth in cands) if cands else key == truth, "candidate_answers": cands,
            "early_stopped": trace.get("early_stopped"), "started": trace.get("started"),
            "tokens": resp.usage.completion_tokens if resp.usage else 0, "latency_s": latency,
            "engine": (resp.usage.model_extra or {}).get("engine") if resp.usage else None,
            "difficulty": (trace.get("auto") or {}).get("difficulty"),
            "choices": len(resp.choices)}


async def run_config(client, model: str, problems: list[Problem], cfg: tuple) -> dict[str, Any]:
    """Every problem under one configuration, at most IN_FLIGHT requests at a time."""
    label, family, samples, reasoning = cfg
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(p: Problem) -> dict[str, Any]:
        async with gate:
            return await ask(client, model, p, reasoning)

    t0 = time.perf_counter()
    records = await asyncio.gather(*(one(p) for p in problems))
    wall = time.perf_counter() - t0
    n, k = len(records), sum(r["correct"] for r in records)
    lo, hi = wilson(k, n)
    summary = {
        "label": label, "family": family, "samples": samples, "reasoning": reasoning,
        "problems": n, "correct": k, "accuracy": k / n, "ci95": [lo, hi],
        "pass_at_k": sum(r.get("any_correct", False) for r in records) / n,
        "mean_tokens": sum(r["tokens"] for r in records) / n,
        "mean_latency_s": sum(r["latency_s"] for r in records) / n,
        "wall_s": wall, "wall_per_problem_s": wall / n,
        "errors": sum("error" in r for r in records),
        "early_stopped": sum(bool(r.get("early_stopped")) for r in records),
        "cached_share": _cached_share(records),
    }
    print(f"  {label:38s} acc {summary['accuracy']:.3f}  tokens {summary['mean_tokens']:7.1f}  "
          f"latency {summary['mean_latency_s']:.2f} s  wall {wall:.1f} s", flush=True)
    return {**summary, "records": records}


def _cached_share(records: list[dict[str, Any]]) -> float:
    """Prefix-cache hits over every engine request's prompt tokens (usage.engine)."""
    engines = [r["engine"] for r in records if r.get("engine")]
    prompt = sum(e["prompt_tokens"] for e in engines)
    return sum(e["cached_tokens"] for e in engines) / prompt if prompt else 0.0


def _batch_ways(client, model: str, p: Problem) -> dict[str, Any]:
    """The ways to get 8 samples of one prompt, each a coroutine factory."""
    single = {"effort": "none", "strategy": "single"}

    async def sequential():
        return [await ask(client, model, p, single, seed=p.seed + k) for k in range(BATCH_SAMPLES)]

    async def concurrent():
        return await asyncio.gather(*(ask(client, model, p, single, seed=p.seed + k)
                                      for k in range(BATCH_SAMPLES)))

    async def one(reasoning, **extra):
        return [await ask(client, model, p, reasoning, **extra)]

    return {
        "one_request_best_of_n": lambda: one({"effort": "none", "strategy": "best_of_n",
                                              "samples": BATCH_SAMPLES, "scorer": "confidence"}),
        "sequential_single": sequential,
        "concurrent_single": concurrent,
        "one_request_self_consistency": lambda: one({"effort": "none", "strategy": "self_consistency",
                                                     "samples": BATCH_SAMPLES, "early_stop": False}),
        "one_request_n8_single": lambda: one(single, n=BATCH_SAMPLES),
    }


async def batching(client, model: str, problems: list[Problem]) -> dict[str, Any]:
    """8 samples of each of the first 8 prompts, each way in turn per prompt; summed wall times."""
    totals: dict[str, dict[str, float]] = {}
    for p in problems[:BATCH_PROMPTS]:
        for name, way in _batch_ways(client, model, p).items():
            t0 = time.perf_counter()
            records = await way()
            wall = time.perf_counter() - t0
            t = totals.setdefault(name, {"wall_s": 0.0, "tokens": 0, "errors": 0, "per_prompt_s": []})
            t["wall_s"] += wall
            t["tokens"] += sum(r["tokens"] for r in records)
            t["errors"] += sum("error" in r for r in records)
            t["per_prompt_s"].append(round(wall, 3))
    base = totals["one_request_best_of_n"]["wall_s"]
    for t in totals.values():
        t["tokens_per_s"] = t["tokens"] / t["wall_s"] if t["wall_s"] else 0.0
        t["ratio_to_one_request"] = t["wall_s"] / base if base else float("nan")
    ratios = {"sequential/one_request": totals["sequential_single"]["ratio_to_one_request"],
              "concurrent/one_request": totals["concurrent_single"]["ratio_to_one_request"]}
    print("  batching: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()), flush=True)
    return {"prompts": min(BATCH_PROMPTS, len(problems)), "samples": BATCH_SAMPLES,
            "ways": totals, "ratios": ratios}


def wait_until_idle(poll_s: float = 30.0, limit_s: float = 3600.0) -> None:
    """Two cores: wait until no other ponder server, vLLM engine or engine benchmark runs
    (two checks 5 s apart, so a test between two engines is not taken for idle)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        others: list[str] = []
        for _ in range(2):
            found = subprocess.run(["pgrep", "-f", OTHER_ENGINES], capture_output=True, text=True).stdout.split()
            others = others or [pid for pid in found if int(pid) != os.getpid()]
            time.sleep(0 if others else 5)
        if not others:
            return
        print(f"  another engine runs (pids {' '.join(others)}); retrying in {poll_s:.0f} s", flush=True)
        time.sleep(poll_s)
    raise TimeoutError("other engines kept running")


@contextmanager
def own_server(out: Path, times: dict[str, float]):
    """``ponder serve`` on a free port, stopped (and waited for) on exit; yields its base URL.
    ``times`` gets the wait for other engines and the spawn-to-ready time."""
    t_wait = time.perf_counter()
    wait_until_idle()
    times["wait_idle_s"] = time.perf_counter() - t_wait
    port, log_path = free_port(), out / "bench_parallel_serve.log"
    exe = shutil.which("ponder", path=str(Path(sys.executable).parent))
    cmd = [*([exe] if exe else [sys.executable, "-m", "server.cli"]), "serve", "--port", str(port)]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
    with log_path.open("w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_ready(proc, f"http://127.0.0.1:{port}", log_path, READY_TIMEOUT_S, poll_s=0.5)
            times["server_start_s"] = time.perf_counter() - t0
            print(f"  ponder serve ready in {times['server_start_s']:.1f} s (port {port})", flush=True)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            stop(proc)


def table(results: list[dict[str, Any]], batch: dict[str, Any], meta: dict[str, Any]) -> str:
    """The markdown report: accuracy table, then the batching comparison."""
    lines = [f"# Parallel strategies: accuracy against tokens ({meta['model']}, {meta['problems']} problems, "
             f"seed {meta['seed']})", "",
             f"temperature {TEMPERATURE}, max_tokens {MAX_TOKENS} per candidate (per turn, per beam), "
             f"system prompt {INSTRUCTION!r}, effort none unless named, "
             f"{IN_FLIGHT} requests in flight. Time: configurations {meta['configs_s']:.0f} s, batching "
             f"{meta['batching_s']:.0f} s, server start {meta.get('server_start_s', 0):.0f} s, whole run "
             f"{meta['run_s']:.0f} s (with {meta.get('wait_idle_s', 0):.0f} s waiting for other engines).", "",
             "| configuration | samples | accuracy | 95% CI | pass@k | mean tokens / problem "
             "| mean latency, s | wall / problem, s | early stops | cached share | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lo, hi = r["ci95"]
        lines.append(f"| {r['label']} | {r['samples']} | {r['accuracy']:.3f} | {lo:.2f}-{hi:.2f} | "
                     f"{r['pass_at_k']:.3f} | {r['mean_tokens']:.1f} | {r['mean_latency_s']:.2f} | "
                     f"{r['wall_per_problem_s']:.2f} | {r['early_stopped']} | {r['cached_share']:.0%} | "
                     f"{r['errors']} |")
    lines += ["", f"## Batching: {batch['samples']} samples of each of the first {batch['prompts']} prompts", "",
              "| way | wall, s (sum) | / one request | completion tokens | tokens/s | errors |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, t in batch["ways"].items():
        lines.append(f"| {name} | {t['wall_s']:.2f} | {t['ratio_to_one_request']:.2f} | {t['tokens']} | "
                     f"{t['tokens_per_s']:.0f} | {t['errors']} |")
    lines += ["", "Ratios: " + ", ".join(f"{k} = {v:.2f}" for k, v in batch["ratios"].items()), ""]
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against mean generated tokens (log x), one marker and line per family.
    Strategies that share candidates land on the same spot: hollow markers of falling
    size stay visible inside each other, and each family's labels sit at their own offset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, ScalarFormatter

    styles = {"single": ("o", 15, (6, 8)), "self_consistency": ("s", 13, (6, -14)),
              "self_consistency early_stop": ("D", 10, (-30, 8)),
              "best_of_n confidence": ("^", 9, (-30, -14)), "best_of_n self_judge": ("v", 7, (10, 2)),
              "budget_forcing": ("P", 11, (8, -12)), "revision": ("X", 11, (8, 6)),
              "beam_search": ("*", 13, (-34, 6)), "auto": ("h", 11, (8, -4))}
    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    for family, (marker, size, offset) in styles.items():
        pts = sorted((r["mean_tokens"], r["accuracy"], r["samples"]) for r in results if r["family"] == family)
        if not pts:
            continue
        line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, markersize=size,
                        fillstyle="none", markeredgewidth=2, linewidth=1.5, alpha=0.9, label=family)
        for x, y, n in pts:
            ax.annotate(f"n={n}", (x, y), textcoords="offset points", xytext=offset, fontsize=9,
                        color=line.get_color())
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_xlabel("mean generated tokens per problem (usage.completion_tokens, log scale)")
    ax.set_ylabel("accuracy (answer_key == true answer)")
    ax.set_ylim(-0.03, min(1.03, max(0.5, max(r["accuracy"] for r in results) + 0.15)))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)
    ax.set_title(f"Accuracy vs generated tokens, {results[0]['problems']} arithmetic word problems "
                 f"(T={TEMPERATURE}, max_tokens {MAX_TOKENS})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


async def bench(base_url: str, model: str, problems: list[Problem], times: dict[str, float]) -> tuple[list, dict]:
    from openai import AsyncOpenAI

    t0 = time.perf_counter()
    async with AsyncOpenAI(base_url=base_url, api_key=os.environ.get("PONDER_API_KEY", "unused"),
                           timeout=600.0, max_retries=0) as client:
        # Warm-up: every strategy once, off the clock.
        await asyncio.gather(*(ask(client, model, problems[0], cfg[3]) for cfg in (CONFIGS[0], CONFIGS[3], CONFIGS[6], CONFIGS[8])))
        t1 = time.perf_counter()
        results = [await run_config(client, model, problems, cfg) for cfg in CONFIGS]
        t2 = time.perf_counter()
        batch = await batching(client, model, problems)
        times.update(warmup_s=t1 - t0, configs_s=t2 - t1, batching_s=time.perf_counter() - t2)
        return results, batch


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base-url", help="a running server's OpenAI base URL (e.g. http://host:8000/v1)")
    ap.add_argument("--model", default=MODEL_NAME)
    ap.add_argument("--out", type=Path, default=Path("loadtests/out"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    problems = make_problems(args.problems, args.seed)
    t0, times = time.perf_counter(), {}
    if args.base_url:
        results, batch = asyncio.run(bench(args.base_url, args.model, problems, times))
    else:
        with own_server(args.out, times) as url:
            results, batch = asyncio.run(bench(url, args.model, problems, times))
    times["run_s"] = time.perf_counter() - t0  # includes the wait for other engines
    meta = {"model": args.model, "problems": args.problems, "seed": args.seed, **times,
            "base_url": args.base_url or "own ponder serve", "cpus": os.cpu_count(),
            "temperature": TEMPERATURE, "max_tokens": MAX_TOKENS, "in_flight": IN_FLIGHT}
    report = table(results, batch, meta)
    print(report)
    (args.out / "bench_parallel.md").write_text(report)
    (args.out / "bench_parallel.json").write_text(json.dumps(
        {"meta": meta, "problems": [asdict(p) for p in problems], "results": results, "batching": batch},
        indent=1))
    plot(results, args.out / "accuracy_vs_tokens.png")
    print(f"wrote {args.out}/bench_parallel.md, bench_parallel.json, accuracy_vs_tokens.png "
          f"(run {meta['run_s']:.0f} s)")


if __name__ == "__main__":
    main()
