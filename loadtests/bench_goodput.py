"""Goodput of a mixed-strategy load: requests per second that finish within their latency target.

    .venv/bin/python -m loadtests.bench_goodput [--rates 1 2 4 6 8] [--duration 30] [--max-requests 300]
        [--target single=5 --target budget_forcing=10 ...] [--max-sequences N] [--seed 0]
        [--policies priority fcfs] [--out loadtests/out] [--results loadtests/results]

Why: throughput alone hides what a user sees. A test-time-compute server mixes
cheap requests with ones that run 4-8 sequences or several turns, and once it
is past its capacity every request slows down; goodput (Zhong et al. 2024,
DistServe) counts only the requests that still met their latency target, so
it shows the arrival rate where the server stops being useful, per strategy.

Method
------
One ``ponder serve`` per engine scheduling policy in ``--policies``, one after
the other (default model and settings, prefix caching on,
``VLLM_CPU_KVCACHE_SPACE=2``, an API key, loopback only), started and stopped
by the script: ``priority`` (ponder's default: every engine request of an
earlier request goes first, ``server/admission.py engine_priority``) against
``fcfs`` (vLLM's default: every engine request, so every phase of a
multi-phase strategy, queues on its own); the same arrivals for both. Every strategy runs once first, off the clock. Then, for each
rate in ``--rates`` (requests per second), an open-loop generator: arrivals
form a Poisson process (exponential gaps from an RNG seeded by ``--seed`` and
the rate) for ``--duration`` seconds, at most ``--max-requests``, each sent at
its time whether or not earlier ones have finished. Strategies come in
shuffled rounds of the mix (each equally often); prompts are ``storm.PROMPTS``;
every request has its own ``seed``. The default rates (1-8 req/s) straddle
where this mix saturates the default model on 2 cores (between 4 and 8
req/s); below 4 every request meets its target. Small budgets (``MIX``): single 64
tokens; budget_forcing 32-64 thinking tokens, 128 in all; self_consistency
and best_of_n (confidence) 4 samples of 48; revision 1 round of 48 per
turn; beam_search width 2, 2 steps, 64 per beam; effort ``none`` except
budget forcing. Plain (not streamed) requests; latency is from sending to
the whole response.

Outcomes: completed (200), rejected (429 from admission control: counted,
never retried), errors (any other status or a transport error), unfinished
(still running at ``duration`` + the largest target: it cannot meet its
target any more, so the client disconnects, which aborts it on the server).
Goodput = completed within the strategy's target / ``duration``; offered
rate = sent / ``duration``. p50 / p90 latencies count unfinished requests as
slower than every completed one (shown as "> N s" when a percentile falls
among them). During each rate ``/metrics`` is sampled every 2 s for the peak
of admitted sequences and of requests waiting in vLLM. Between rates the
script waits until the engine holds nothing.

Output: markdown tables (stdout, ``--out``/bench_goodput.md,
``--results``/bench_goodput.md): goodput per policy side by side with the
ratio, then each policy's full tables; raw per-request records in
``--out``/bench_goodput.json, a plot per policy ``--results``/bench_goodput_POLICY.png
(and copies in ``--out``), the server logs in ``--out``/bench_goodput_serve_POLICY.log.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import random
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from loadtests.common import exit_on_sigterm, metric_value, ponder_server
from loadtests.storm import PROMPTS, until_idle

MODEL = "SmolLM2-135M-Instruct"
KEY = "bench-goodput-key"
TEMPERATURE = 0.8
# strategy -> (reasoning object, max_tokens)
MIX: dict[str, tuple[dict[str, Any], int]] = {
    "single": ({"effort": "none", "strategy": "single"}, 64),
    "budget_forcing": ({"strategy": "budget_forcing", "min_thinking_tokens": 32, "max_thinking_tokens": 64}, 128),
    "self_consistency": ({"effort": "none", "strategy": "self_consistency", "samples": 4}, 48),
    "best_of_n": ({"effort": "none", "strategy": "best_of_n", "samples": 4}, 48),
    "revision": ({"effort": "none", "strategy": "revision", "rounds": 1}, 48),
    "beam_search": ({"effort": "none", "strategy": "beam_search", "beam_width": 2, "max_steps": 2}, 64),
}
TARGETS = {"single": 5.0, "budget_forcing": 10.0, "self_consistency": 20.0, "best_of_n": 20.0,
           "revision": 20.0, "beam_search": 20.0}
METRICS_EVERY_S = 2.0


def schedule(rate: float, duration: float, max_requests: int, seed: int) -> list[tuple[float, str, str, int]]:
    """(send time, strategy, prompt, request seed): Poisson arrivals, the mix in shuffled rounds."""
    rng = random.Random(f"{seed}-{rate}")
    out: list[tuple[float, str, str, int]] = []
    names: list[str] = []
    t = rng.expovariate(rate)
    while t < duration and len(out) < max_requests:
        if not names:
            names = list(MIX)
            rng.shuffle(names)
        out.append((t, names.pop(), rng.choice(PROMPTS), rng.randrange(2**31)))
        t += rng.expovariate(rate)
    return out


async def send(http: httpx.AsyncClient, strategy: str, prompt: str, seed: int, rec: dict[str, Any]) -> None:
    """One plain request; fills ``rec`` (status, latency, tokens). Cancelled: stays "unfinished"."""
    reasoning, max_tokens = MIX[strategy]
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "reasoning": reasoning,
            "max_tokens": max_tokens, "temperature": TEMPERATURE, "seed": seed}
    t0 = time.perf_counter()
    try:
        r = await http.post("/v1/chat/completions", json=body)
    except httpx.HTTPError as exc:
        rec.update(outcome="error", latency_s=time.perf_counter() - t0, detail=f"{type(exc).__name__}: {exc}"[:200])
        return
    rec["latency_s"], rec["status"] = time.perf_counter() - t0, r.status_code
    if r.status_code == 200:
        usage = r.json()["usage"]
        rec.update(outcome="completed", completion_tokens=usage["completion_tokens"],
                   engine_requests=(usage.get("engine") or {}).get("requests"))
    elif r.status_code == 429:
        rec.update(outcome="rejected", retry_after=r.headers.get("retry-after"),
                   code=(r.json().get("error") or {}).get("code"))
    else:
        rec.update(outcome="error", detail=r.text[:200])


async def sample_metrics(http: httpx.AsyncClient, peaks: dict[str, float]) -> None:
    """Peaks of admitted sequences and of vLLM's waiting queue, until cancelled."""
    names = {"admitted": "ponder_admission_sequences_in_use", "waiting": "vllm:num_requests_waiting",
             "running": "vllm:num_requests_running"}
    while True:
        try:
            text = (await http.get("/metrics")).text
            for key, name in names.items():
                peaks[key] = max(peaks.get(key, 0.0), metric_value(text, name))
        except httpx.HTTPError:
            pass
        await asyncio.sleep(METRICS_EVERY_S)


async def run_rate(http: httpx.AsyncClient, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    """One open-loop run at ``rate`` req/s; the per-request records and the metric peaks."""
    plan = schedule(rate, args.duration, args.max_requests, args.seed)
    records: list[dict[str, Any]] = []
    tasks: list[asyncio.Task] = []
    peaks: dict[str, float] = {}
    sampler = asyncio.create_task(sample_metrics(http, peaks))
    t0 = time.perf_counter()
    for at, strategy, prompt, seed in plan:
        await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
        rec = {"strategy": strategy, "sent_at_s": round(time.perf_counter() - t0, 3), "outcome": "unfinished"}
        records.append(rec)
        tasks.append(asyncio.create_task(send(http, strategy, prompt, seed, rec)))
    cutoff = args.duration + max(args.targets.values())
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, t0 + cutoff - time.perf_counter()))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    sampler.cancel()
    await asyncio.gather(sampler, return_exceptions=True)
    elapsed = time.perf_counter() - t0
    for rec in records:
        if rec["outcome"] == "unfinished":
            rec["latency_s"] = elapsed - rec["sent_at_s"]
    return {"rate": rate, "duration_s": args.duration, "cutoff_s": cutoff, "elapsed_s": elapsed,
            "peaks": peaks, "records": records}


def summarize(records: list[dict[str, Any]], targets: dict[str, float], duration: float) -> dict[str, Any]:
    """Counts, latency percentiles and goodput of a set of requests (one strategy, or all)."""
    by = {k: [r for r in records if r["outcome"] == k] for k in ("completed", "rejected", "error", "unfinished")}
    good = [r for r in by["completed"] if r["latency_s"] <= targets[r["strategy"]]]
    # Unfinished requests are slower than every completed one.
    lat = sorted([r["latency_s"] for r in by["completed"]]) + [math.inf] * len(by["unfinished"])
    cut = max((r["latency_s"] for r in by["unfinished"]), default=0.0)

    def pct(p: float) -> float | None:
        if not lat:
            return None
        return lat[min(len(lat) - 1, max(0, math.ceil(p * len(lat)) - 1))]

    return {"sent": len(records), **{k: len(v) for k, v in by.items()}, "good": len(good),
            "offered_rps": len(records) / duration, "throughput_rps": len(by["completed"]) / duration,
            "goodput_rps": len(good) / duration, "good_share": len(good) / len(records) if records else 0.0,
            "p50_s": pct(0.5), "p90_s": pct(0.9), "unfinished_after_s": cut,
            "mean_completion_tokens": statistics.fmean([r["completion_tokens"] for r in by["completed"]])
            if by["completed"] else None}


def _lat(v: float | None, cut: float) -> str:
    if v is None:
        return "-"
    return f"> {cut:.0f}" if math.isinf(v) else f"{v:.1f}"


def header(args: argparse.Namespace, meta: dict[str, Any]) -> list[str]:
    targets = ", ".join(f"{k} {v:g} s" for k, v in args.targets.items())
    starts = ", ".join(f"{p} {s:.0f} s" for p, s in meta["start_s"].items())
    return [f"# Goodput under a mixed-strategy load ({MODEL})", "",
            f"{meta['date']}, {meta['cpus']} CPUs, one `ponder serve` per engine scheduling policy "
            f"({', '.join(args.policies)}; defaults otherwise, prefix caching on, admission limit "
            f"{meta['admission_limit']} sequences), loopback. Open loop: Poisson arrivals "
            f"for {args.duration:g} s per rate (at most {args.max_requests} requests), strategies in "
            f"equal shares, seed {args.seed}; plain requests, no retries. Latency targets: {targets}. "
            f"Goodput = requests completed within their target per second of the {args.duration:g} s "
            f"arrival window. Whole run {meta['run_s']:.0f} s (server starts: {starts}). "
            "Method: docstring of `loadtests/bench_goodput.py`.", ""]


def compare(by_policy: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Goodput and within-target shares of each policy at each rate, with the ratio to the last."""
    names = list(by_policy)
    base = names[-1]
    lines = ["## Policies side by side", "",
             "| rate, req/s | " + " | ".join(f"goodput {p}, req/s" for p in names) +
             f" | ratio to {base} | " + " | ".join(f"within target {p}" for p in names) + " |",
             "|---:|" + "---:|" * (2 * len(names) + 1)]
    for i, run in enumerate(by_policy[base]):
        cells = [by_policy[p][i]["all"] for p in names]
        ratio = ", ".join(f"x{c['goodput_rps'] / cells[-1]['goodput_rps']:.2f}" if cells[-1]["goodput_rps"] else "-"
                          for c in cells[:-1])
        lines.append(f"| {run['rate']:g} | " + " | ".join(f"{c['goodput_rps']:.2f}" for c in cells) +
                     f" | {ratio} | " + " | ".join(f"{c['good_share']:.0%}" for c in cells) + " |")
    lines += ["", "Within target by strategy (share of its requests), " + " / ".join(names) + ":", "",
              "| rate, req/s | " + " | ".join(MIX) + " |", "|---:|" + "---:|" * len(MIX)]
    for i, run in enumerate(by_policy[base]):
        lines.append(f"| {run['rate']:g} | " + " | ".join(
            " / ".join(f"{by_policy[p][i]['by_strategy'][n]['good_share']:.0%}" for p in names) for n in MIX) + " |")
    return lines + [""]


def report(runs: list[dict[str, Any]], args: argparse.Namespace, policy: str) -> str:
    lines = [f"## Policy `{policy}`: overall", "",
             "| offered rate, req/s | sent | completed | 429 | errors | unfinished | p50 s | p90 s "
             "| within target | goodput, req/s | goodput / offered | peak sequences admitted | peak waiting in vLLM |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        s = run["all"]
        lines.append(f"| {run['rate']:g} (actual {s['offered_rps']:.2f}) | {s['sent']} | {s['completed']} | "
                     f"{s['rejected']} | {s['error']} | {s['unfinished']} | {_lat(s['p50_s'], s['unfinished_after_s'])} | "
                     f"{_lat(s['p90_s'], s['unfinished_after_s'])} | {s['good']} | {s['goodput_rps']:.2f} | "
                     f"{s['good_share']:.0%} | {run['peaks'].get('admitted', 0):.0f} | "
                     f"{run['peaks'].get('waiting', 0):.0f} |")
    lines += ["", f"### Policy `{policy}`: by strategy", "",
              "| rate, req/s | strategy | target s | sent | completed | 429 | errors | unfinished | p50 s | p90 s "
              "| mean tokens | within target | goodput, req/s | goodput / offered |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        for name, s in run["by_strategy"].items():
            tokens = "-" if s["mean_completion_tokens"] is None else f"{s['mean_completion_tokens']:.0f}"
            lines.append(f"| {run['rate']:g} | {name} | {args.targets[name]:g} | {s['sent']} | {s['completed']} | "
                         f"{s['rejected']} | {s['error']} | {s['unfinished']} | "
                         f"{_lat(s['p50_s'], s['unfinished_after_s'])} | {_lat(s['p90_s'], s['unfinished_after_s'])} | "
                         f"{tokens} | {s['good']} | {s['goodput_rps']:.3f} | {s['good_share']:.0%} |")
    errors = [r.get("detail") for run in runs for r in run["records"] if r["outcome"] == "error"]
    if errors:
        lines += ["", f"Errors ({len(errors)}), first 3:", "", *[f"- {e}" for e in errors[:3]]]
    lines.append("")
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], args: argparse.Namespace, policy: str, path: Path) -> None:
    """Left: offered rate against throughput and goodput (the diagonal is "everything in time").
    Right: per strategy, the share of its requests that met the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), dpi=110)
    offered = [r["all"]["offered_rps"] for r in runs]
    top = max(offered + [r["rate"] for r in runs]) * 1.1
    left.plot([0, top], [0, top], color="grey", linestyle=":", label="offered (ideal)")
    left.plot(offered, [r["all"]["throughput_rps"] for r in runs], marker="s", label="completed / s")
    left.plot(offered, [r["all"]["goodput_rps"] for r in runs], marker="o", linewidth=2.5,
              label="goodput (within target) / s")
    left.set_xlabel("offered rate, requests/s (sent / window)")
    left.set_ylabel("requests/s")
    left.set_xlim(0, top)
    left.set_ylim(0, top)
    left.grid(True, alpha=0.3)
    left.legend(loc="upper left", fontsize=9)
    left.set_title("all strategies")
    # Strategies that all meet their target lie on top of each other: markers of falling
    # size and different dashes keep each visible.
    styles = [("o", 11, "-"), ("s", 9, "--"), ("D", 8, "-."), ("^", 7, ":"), ("v", 6, "-"), ("*", 9, "--")]
    for name, (marker, size, dash) in zip(MIX, styles, strict=True):
        right.plot(offered, [100 * r["by_strategy"][name]["good_share"] for r in runs], marker=marker,
                   markersize=size, fillstyle="none", markeredgewidth=1.5, linestyle=dash,
                   label=f"{name} (target {args.targets[name]:g} s)")
    right.set_xlabel("offered rate, requests/s (all strategies)")
    right.set_ylabel("% of the strategy's requests within target")
    right.set_xlim(0, top)
    right.set_ylim(-3, 103)
    right.grid(True, alpha=0.3)
    right.legend(loc="lower left", fontsize=8)
    right.set_title("by strategy")
    fig.suptitle(f"Goodput, mixed strategies, {MODEL}, {os.cpu_count()} CPUs, {args.duration:g} s per rate, "
                 f"engine scheduling {policy}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


async def bench(base: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=httpx.Timeout(None, connect=30),
                                 limits=httpx.Limits(max_connections=args.max_requests + 16,
                                                     max_keepalive_connections=64)) as http:
        t0 = time.perf_counter()
        for name in MIX:  # warm-up, off the clock
            await send(http, name, PROMPTS[0], 1, {"strategy": name})
        print(f"  warm-up {time.perf_counter() - t0:.0f} s", flush=True)
        runs = []
        for rate in args.rates:
            idle_s, load = await until_idle(base, headers, within=120)
            if math.isinf(idle_s):
                print(f"  warning: the engine still holds work before rate {rate:g}: {load}", flush=True)
            run = await run_rate(http, rate, args)
            run["all"] = summarize(run["records"], args.targets, args.duration)
            run["by_strategy"] = {n: summarize([r for r in run["records"] if r["strategy"] == n], args.targets,
                                               args.duration) for n in MIX}
            s = run["all"]
            print(f"  rate {rate:g}: sent {s['sent']}, completed {s['completed']}, 429 {s['rejected']}, "
                  f"errors {s['error']}, unfinished {s['unfinished']}, goodput {s['goodput_rps']:.2f} req/s "
                  f"({run['elapsed_s']:.0f} s)", flush=True)
            runs.append(run)
        return runs


def finite(node: Any) -> Any:
    """The results with infinite latencies as None: JSON has no Infinity."""
    if isinstance(node, float) and math.isinf(node):
        return None
    if isinstance(node, dict):
        return {k: finite(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [finite(v) for v in node]
    return node


def _target(item: str) -> tuple[str, float]:
    name, _, seconds = item.partition("=")
    if name not in MIX:
        raise argparse.ArgumentTypeError(f"unknown strategy {name!r} (one of {', '.join(MIX)})")
    return name, float(seconds)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[1.0, 2.0, 4.0, 6.0, 8.0], help="arrival rates, req/s")
    ap.add_argument("--duration", type=float, default=30.0, help="arrival window per rate, s")
    ap.add_argument("--max-requests", type=int, default=300, help="at most this many requests per rate")
    ap.add_argument("--target", type=_target, action="append", default=[], metavar="STRATEGY=SECONDS",
                    help="latency target (defaults: " + ", ".join(f"{k}={v:g}" for k, v in TARGETS.items()) + ")")
    ap.add_argument("--max-sequences", type=int, help="server admission limit (server.max_concurrent_sequences)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policies", nargs="+", choices=["priority", "fcfs"], default=["priority", "fcfs"],
                    help="engine scheduling policies to run, one server each")
    ap.add_argument("--out", type=Path, default=Path("loadtests/out"))
    ap.add_argument("--results", type=Path, default=Path("loadtests/results"))
    args = ap.parse_args(argv)
    args.targets = {**TARGETS, **dict(args.target)}
    exit_on_sigterm()
    args.out.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    flags = () if args.max_sequences is None else ("--set", f"server.max_concurrent_sequences={args.max_sequences}")
    meta: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpus": os.cpu_count(),
                            "admission_limit": args.max_sequences or "the default 256", "targets": args.targets,
                            "mix": MIX, "rates": args.rates, "duration_s": args.duration, "seed": args.seed}
    t0 = time.perf_counter()
    by_policy: dict[str, list[dict[str, Any]]] = {}
    meta["start_s"] = {}
    for policy in args.policies:
        print(f"starting ponder serve, scheduling {policy}", flush=True)
        with ponder_server(args.out / f"bench_goodput_serve_{policy}.log", *flags, "--scheduling-policy", policy,
                           api_key=KEY) as (base, start_s, _):
            print(f"  ready in {start_s:.0f} s", flush=True)
            meta["start_s"][policy] = start_s
            by_policy[policy] = asyncio.run(bench(base, args))
    meta["run_s"] = time.perf_counter() - t0
    parts = header(args, meta) + (compare(by_policy) if len(by_policy) > 1 else [])
    text = "\n".join(parts) + "\n".join(report(runs, args, p) for p, runs in by_policy.items())
    print(text)
    for folder in (args.out, args.results):
        (folder / "bench_goodput.md").write_text(text)
    (args.out / "bench_goodput.json").write_text(json.dumps(finite({"meta": meta, "policies": by_policy}), indent=1))
    for policy, runs in by_policy.items():
        png = f"bench_goodput_{policy}.png"
        plot(runs, args, policy, args.results / png)
        if args.out.resolve() != args.results.resolve():
            shutil.copyfile(args.results / png, args.out / png)
    print(f"wrote bench_goodput.md and bench_goodput_POLICY.png in {args.out} and {args.results}, "
          f"bench_goodput.json in {args.out} (run {meta['run_s']:.0f} s)")


if __name__ == "__main__":
    main()
