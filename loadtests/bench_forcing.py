"""Cost of s1 forced continuations against one-shot generation (issue 3).

    .venv/bin/python -m loadtests.bench_forcing [--tokens 256] [--segments 2 4] [--runs 3]

Method: the real engine (``server.engines.vllm_engine.VLLMEngine``, AsyncLLM in
this process) generates T tokens of thinking for the same prompt two ways:

- one-shot: one request, ``max_tokens=T`` (``ignore_eos`` so it is exactly T);
- forced: S requests of T/S tokens each, every one continuing from the previous
  prompt + generated ids + the token ids of "Wait," (what budget forcing does
  when the model stops before ``min_thinking_tokens``).

Wall time of forced / one-shot is the cost of the continuations; the cached
share is the prefix-cache hits of the continuation requests over their prompt
tokens. Both are measured with prefix caching on, then off (a second engine),
in one process, one engine at a time. Medians over the runs.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

from loadtests.common import model_folder

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")

QUESTION = "Think carefully: how many prime numbers are there below 60?"
# A long context makes the prefill that the cache saves visible (--context 0: none).
CONTEXT = "Notes: a prime has exactly two divisors, one and itself. "


async def _generate(engine, ids, max_tokens, rid):
    from strategies.engine import Sampling

    out, cached = [], 0
    sampling = Sampling(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    async for d in engine.generate(ids, sampling, rid):
        out.extend(d.token_ids)
        if d.cached_tokens is not None:
            cached = d.cached_tokens
    return tuple(out), cached


async def _one_run(engine, prompt, tokens, segments, tag):
    t0 = time.perf_counter()
    await _generate(engine, prompt, tokens, f"{tag}-one")
    one = time.perf_counter() - t0
    wait = tuple(engine.tokenizer.encode("\nWait,", add_special_tokens=False))
    ids, cached, prompt_total = prompt, 0, 0
    t0 = time.perf_counter()
    for k in range(segments):
        new, hit = await _generate(engine, ids, tokens // segments, f"{tag}-seg{k}")
        if k:
            cached, prompt_total = cached + hit, prompt_total + len(ids)
        ids = ids + new + wait
    forced = time.perf_counter() - t0
    return one, forced, cached / prompt_total if prompt_total else 0.0


async def _measure(model: str, prefix_caching: bool, tokens: int, segments: list[int], runs: int,
                   contexts: list[int]):
    from server.engines.vllm_engine import VLLMEngine, engine_args
    from server.settings import load_settings

    settings = load_settings(overrides={"engine": {"enable_prefix_caching": prefix_caching}})
    engine = VLLMEngine.start(engine_args(settings.engine, model, "bench"), "<think>", "</think>", False)
    try:
        rows = []
        for context in contexts:
            rows += await _measure_prompt(engine, prefix_caching, tokens, segments, runs, context)
        return rows
    finally:
        engine.shutdown()


async def _measure_prompt(engine, prefix_caching, tokens, segments, runs, context):
    tok = engine.tokenizer
    question = CONTEXT * context + QUESTION
    text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                   add_generation_prompt=True)
    prompt = tuple(tok.encode(text + "<think>\n", add_special_tokens=False))
    await _generate(engine, prompt, 4, f"warmup{context}")
    rows = []
    for s in segments:
        samples = [await _one_run(engine, prompt, tokens, s, f"p{int(prefix_caching)}-c{context}-s{s}-r{r}")
                   for r in range(runs)]
        one = statistics.median(x[0] for x in samples)
        forced = statistics.median(x[1] for x in samples)
        rows.append({"prefix_caching": prefix_caching, "segments": s, "tokens": tokens,
                     "prompt_tokens": len(prompt), "one_shot_s": round(one, 3), "forced_s": round(forced, 3),
                     "ratio": round(forced / one, 3),
                     "cached_share": round(statistics.median(x[2] for x in samples), 3)})
    return rows


def _table(rows) -> str:
    lines = ["| prefix caching | prompt tokens | requests | generated | one-shot s | forced s "
             "| forced / one-shot | cached share |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {'on' if r['prefix_caching'] else 'off'} | {r['prompt_tokens']} | {r['segments']} | "
                     f"{r['tokens']} | "
                     f"{r['one_shot_s']} | {r['forced_s']} | {r['ratio']} | {r['cached_share']:.0%} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--segments", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--context", type=int, nargs="+", default=[0, 50],
                    help="repeats of a context sentence before the question (prompt length)")
    ap.add_argument("--out", default="loadtests/out")
    a = ap.parse_args()
    model = model_folder()
    rows = []
    for caching in (True, False):
        rows += asyncio.run(_measure(model, caching, a.tokens, a.segments, a.runs, a.context))
    table = _table(rows)
    print(table)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_forcing.json").write_text(json.dumps(rows, indent=2))
    (out / "bench_forcing.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
