"""Cost of the Responses API's reasoning summary (issue 14).

    .venv/bin/python -m loadtests.bench_summary [--base-url URL] [--prompts 8] [--repeats 2]
        [--reasoning '{"effort": "low"}']

Method: every prompt goes to ``POST /v1/responses`` twice, streamed, with the
same plan, seed and temperature 0: once with ``reasoning.summary: "auto"``
and once without. The order of the pair alternates from one prompt (and
repeat) to the next, so neither side always meets a warm prefix cache. Per
pair: the wall time of the whole response, the time to the first answer
delta (the summary streams after the thinking and before the answer, so this
is where a client waits for it), output tokens, and the summary's own cost
from the trace (tokens, prompt tokens, the share of its prompt the prefix
cache served, its wall seconds). Reported: the paired ratios with bootstrap
95 % intervals, and the summary's share of the request's wall time.

Without ``--base-url`` it starts ``ponder serve`` with the default model (one
engine; nothing else should run on the machine meanwhile). The prompts are
fixed below, not chosen on the results.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from loadtests.common import exit_on_sigterm, ponder_server

PROMPTS = [
    "Is 91 a prime number?",
    "A shop sells pens at 3 for 2 dollars. How much do 12 pens cost?",
    "What is 17 times 23?",
    "Which is larger, 2 to the power 10 or 10 to the power 3?",
    "If a train travels 60 km in 45 minutes, what is its speed in km/h?",
    "How many days are there in 3 weeks and 4 days?",
    "What is the next number: 2, 6, 12, 20, 30?",
    "Sara has twice as many apples as Tom, who has 7. How many do they have together?",
]
OUT = Path(__file__).parent / "out"


def streamed(base: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    """One streamed response: wall seconds, seconds to the first answer delta, the final response."""
    t0 = time.perf_counter()
    first_answer = None
    final: dict[str, Any] | None = None
    with httpx.stream("POST", base + "/v1/responses", json={**body, "stream": True}, headers=headers,
                      timeout=900) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if event["type"] == "response.output_text.delta" and first_answer is None:
                first_answer = time.perf_counter() - t0
            elif event["type"] in ("response.completed", "response.incomplete"):
                final = event["response"]
            elif event["type"] in ("error", "response.failed"):
                raise RuntimeError(f"the server failed the request: {event}")
    assert final is not None, "the stream ended without a final response"
    return {"wall_s": time.perf_counter() - t0, "first_answer_s": first_answer, "response": final}


def pair(base: str, model: str, prompt: str, reasoning: dict[str, Any], max_output_tokens: int,
         summary_first: bool, headers: dict[str, str]) -> dict[str, Any]:
    body = {"model": model, "input": prompt, "temperature": 0.0, "seed": 7, "store": False,
            "max_output_tokens": max_output_tokens}
    sides = {"with": {**body, "reasoning": {**reasoning, "summary": "auto"}},
             "without": {**body, "reasoning": reasoning}}
    order = ["with", "without"] if summary_first else ["without", "with"]
    runs = {side: streamed(base, sides[side], headers) for side in order}
    w, wo = runs["with"], runs["without"]
    cost = w["response"].get("reasoning_trace", {}).get("summary", {})
    return {
        "prompt": prompt, "summary_first": summary_first,
        "wall_with_s": w["wall_s"], "wall_without_s": wo["wall_s"],
        "first_answer_with_s": w["first_answer_s"], "first_answer_without_s": wo["first_answer_s"],
        "tokens_with": w["response"]["usage"]["output_tokens"],
        "tokens_without": wo["response"]["usage"]["output_tokens"],
        "summary": cost,
        "summary_text": " ".join(s["text"] for o in w["response"]["output"] if o["type"] == "reasoning"
                                 for s in o.get("summary", [])),
        "same_answer": _answer(w["response"]) == _answer(wo["response"]),
    }


def _answer(response: dict[str, Any]) -> str:
    return "".join(c.get("text", "") for o in response["output"] if o["type"] == "message" for c in o["content"])


def _mean_ci(values: list[float], rounds: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and a bootstrap 95 % interval."""
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(rounds))
    return statistics.fmean(values), means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summarized = [r for r in rows if r["summary"].get("tokens")]
    wall = [r["wall_with_s"] / r["wall_without_s"] for r in rows]
    first = [r["first_answer_with_s"] / r["first_answer_without_s"] for r in rows
             if r["first_answer_with_s"] and r["first_answer_without_s"]]
    tokens = [r["tokens_with"] / r["tokens_without"] for r in rows if r["tokens_without"]]
    share = [r["summary"]["seconds"] / r["wall_with_s"] for r in summarized]
    cached = [r["summary"]["cached_tokens"] / r["summary"]["prompt_tokens"] for r in summarized]
    return {
        "pairs": len(rows), "summarized": len(summarized),
        "wall_ratio": _mean_ci(wall), "first_answer_ratio": _mean_ci(first) if first else None,
        "token_ratio": _mean_ci(tokens),
        "summary_tokens": statistics.fmean(r["summary"]["tokens"] for r in summarized) if summarized else 0,
        "summary_seconds": statistics.fmean(r["summary"]["seconds"] for r in summarized) if summarized else 0,
        "summary_share_of_wall": statistics.fmean(share) if share else 0,
        "summary_prompt_cached": statistics.fmean(cached) if cached else 0,
        "same_answer": sum(r["same_answer"] for r in rows),
        "wall_without_s": statistics.median(r["wall_without_s"] for r in rows),
    }


def report(s: dict[str, Any], model: str, reasoning: dict[str, Any]) -> str:
    def ci(t: tuple[float, float, float] | None) -> str:
        return "n/a" if t is None else f"{t[0]:.2f} [{t[1]:.2f}-{t[2]:.2f}]"

    return "\n".join([
        f"### reasoning summary cost ({model}, reasoning {json.dumps(reasoning)})", "",
        "| measure | value |", "|---|---|",
        f"| pairs (with a summary written) | {s['pairs']} ({s['summarized']}) |",
        f"| wall time, with / without summary | {ci(s['wall_ratio'])} |",
        f"| time to the first answer token, with / without | {ci(s['first_answer_ratio'])} |",
        f"| output tokens, with / without | {ci(s['token_ratio'])} |",
        f"| summary tokens (mean) | {s['summary_tokens']:.1f} |",
        f"| summary seconds (mean) | {s['summary_seconds']:.2f} |",
        f"| summary's share of the request's wall time | {s['summary_share_of_wall']:.0%} |",
        f"| summary prompt served by the prefix cache | {s['summary_prompt_cached']:.0%} |",
        f"| same answer with and without | {s['same_answer']}/{s['pairs']} |",
        f"| median wall time without summary | {s['wall_without_s']:.2f} s |", ""])


def run(base: str, args: argparse.Namespace, headers: dict[str, str]) -> None:
    model = args.model or httpx.get(base + "/v1/models", headers=headers).json()["data"][0]["id"]
    reasoning = json.loads(args.reasoning)
    rows = []
    for repeat in range(args.repeats):
        for i, prompt in enumerate(PROMPTS[:args.prompts]):
            rows.append(pair(base, model, prompt, reasoning, args.max_output_tokens, (i + repeat) % 2 == 0, headers))
            print(f"  {len(rows):3d}  wall {rows[-1]['wall_with_s']:.2f} / {rows[-1]['wall_without_s']:.2f} s  "
                  f"summary {rows[-1]['summary']}", flush=True)
    s = summarize(rows)
    text = report(s, model, reasoning)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_summary.json").write_text(json.dumps({"model": model, "reasoning": reasoning,
                                                             "summary": s, "rows": rows}, indent=1))
    (args.out / "bench_summary.md").write_text(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-url", help="a running ponder (default: start one with the default model)")
    ap.add_argument("--model", help="the model name to send (default: the server's first)")
    ap.add_argument("--api-key")
    ap.add_argument("--prompts", type=int, default=8, choices=range(1, len(PROMPTS) + 1))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--reasoning", default='{"effort": "low"}', help="the plan, as JSON (summary is added)")
    ap.add_argument("--max-output-tokens", type=int, default=320)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    if args.base_url:
        run(args.base_url.rstrip("/"), args, headers)
        return
    exit_on_sigterm()
    args.out.mkdir(parents=True, exist_ok=True)
    with ponder_server(args.out / "bench_summary_serve.log") as served:
        run(served.base, args, headers)


if __name__ == "__main__":
    main()
