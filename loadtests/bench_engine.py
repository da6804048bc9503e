"""Engine start time and single-request speed: ``ponder serve`` against AsyncLLM direct.

    .venv/bin/python -m loadtests.bench_engine [--runs 5] [--max-tokens 128] [--out loadtests/out]

Method
------
Both sides run the same model folder (the converted default model, from
``server.model_prep.prepare_model``) with the engine settings ponder uses
(``server/engines/vllm_engine.py`` ``EngineConfig.engine_args``: max_model_len
2048, prefix caching on, bf16, seed 0, max_num_seqs 64, 2 GiB CPU KV cache),
one after the other, never at the same time.

1. Direct: in this process, ``import vllm`` (timed), then
   ``AsyncLLM.from_engine_args`` (timed: construction) and one 1-token
   generation of the benchmark prompt (timed: construction + first token =
   "engine start"). Then ``runs`` generations of that prompt. (ponder imports
   vllm inside its engine start, so its logged engine time is compared with
   import + construction here.)
2. ponder: ``ponder serve --port P --default-effort none`` as a subprocess.
   "Engine start" is spawn until ``GET /ready`` answers 200; it includes Python
   imports, the model-cache check and the HTTP server. The server's own log
   line "engine ready in X s" gives its engine construction time. One 1-token
   request follows (spawn until it completes = start to first token; it also
   warms the connection and the prefix cache like the direct warm-up), then
   ``runs`` streamed requests through the official ``openai`` SDK.

Every request is the same chat prompt (one user message asking for a long
story, rendered by the tokenizer's chat template; ponder renders it the same
way), temperature 0, ``max_tokens`` M. ponder has no ``ignore_eos`` or
``min_tokens``, so neither side uses them: the prompt makes the model write
past M, and tokens/s is the generated token count (engine outputs directly,
``usage.completion_tokens`` through ponder) divided by the request's wall
time, TTFT is the time to the first token (direct) or the first content chunk
(ponder). Medians over the runs are reported, with ratios ponder / direct.
Greedy decoding of the same prompt should give the same text on both sides;
the JSON records whether it did.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loadtests.common import free_port, model_folder, stop, wait_ready

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")

QUESTION = "Write a long story about a dragon, at least 500 words."
MODEL_NAME = "SmolLM2-135M-Instruct"
READY_TIMEOUT_S = 900.0


def engine_settings(folder: str) -> Any:
    """The AsyncEngineArgs ponder builds from configs/server.toml (vllm_engine.engine_args)."""
    from server.engines.vllm_engine import engine_args
    from server.settings import load_settings

    return engine_args(load_settings().engine, folder, MODEL_NAME)


def prompt_ids(tokenizer: Any) -> list[int]:
    """The chat prompt as ponder renders it (server/prompt.py)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}],
                                         tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


async def direct_request(llm: Any, ids: list[int], max_tokens: int, rid: str) -> dict[str, Any]:
    """One greedy generation; token count, wall time, TTFT and text."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens,
                            output_kind=RequestOutputKind.DELTA)
    tokens, text, ttft = 0, [], None
    t0 = time.perf_counter()
    async for out in llm.generate(TokensPrompt(prompt_token_ids=ids), params, rid):
        for comp in out.outputs:
            if comp.token_ids and ttft is None:
                ttft = time.perf_counter() - t0
            tokens += len(comp.token_ids)
            text.append(comp.text)
    wall = time.perf_counter() - t0
    return {"tokens": tokens, "wall_s": wall, "ttft_s": ttft, "text": "".join(text)}


async def bench_direct(folder: str, runs: int, max_tokens: int) -> dict[str, Any]:
    """Engine start and ``runs`` requests on AsyncLLM in this process."""
    t0 = time.perf_counter()
    from vllm.v1.engine.async_llm import AsyncLLM

    t_import = time.perf_counter()
    llm = AsyncLLM.from_engine_args(engine_settings(folder))
    t_built = time.perf_counter()
    try:
        ids = prompt_ids(llm.get_tokenizer())
        await direct_request(llm, ids, 1, "warm")
        t_first = time.perf_counter()
        results = [await direct_request(llm, ids, max_tokens, f"run-{i}") for i in range(runs)]
    finally:
        llm.shutdown()
        del llm
        gc.collect()  # finalise AsyncLLM now, not during interpreter teardown
    return {
        "import_vllm_s": t_import - t0,
        "construct_s": t_built - t_import,
        "start_s": t_first - t_import,
        "start_to_first_token_incl_import_s": t_first - t0,
        "prompt_tokens": len(ids),
        "runs": results,
    }



def ponder_command(port: int) -> list[str]:
    exe = shutil.which("ponder", path=str(Path(sys.executable).parent))
    base = [exe] if exe else [sys.executable, "-m", "server.cli"]
    return [*base, "serve", "--port", str(port), "--default-effort", "none"]


def stream_request(client: Any, max_tokens: int) -> dict[str, Any]:
    """One streamed chat completion; completion tokens from usage, wall time, TTFT, text."""
    text, ttft, usage = [], None, None
    t0 = time.perf_counter()
    stream = client.chat.completions.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": QUESTION}],
        temperature=0, max_tokens=max_tokens, stream=True,
        stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                if ttft is None:
                    ttft = time.perf_counter() - t0
                text.append(choice.delta.content)
    wall = time.perf_counter() - t0
    tokens = usage.completion_tokens if usage is not None else 0
    return {"tokens": tokens, "wall_s": wall, "ttft_s": ttft, "text": "".join(text)}


def bench_ponder(runs: int, max_tokens: int, out: Path) -> dict[str, Any]:
    """Start ``ponder serve``, time it to /ready and to a first token, then ``runs`` requests."""
    from openai import OpenAI

    port, log_path = free_port(), out / "ponder_serve.log"
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2"}
    with log_path.open("w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(ponder_command(port), stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_ready(proc, url, log_path, READY_TIMEOUT_S)
            t_ready = time.perf_counter()
            client = OpenAI(base_url=url + "/v1", api_key="unused", timeout=600, max_retries=0)
            stream_request(client, 1)
            t_first = time.perf_counter()
            results = [stream_request(client, max_tokens) for _ in range(runs)]
        finally:
            stop(proc)
    log_text = log_path.read_text(errors="replace")
    found = re.search(r"engine ready in ([\d.]+) s", log_text)
    return {
        "command": " ".join(ponder_command(port)),
        # True if the model cache was (re)converted during this start: not a warm start.
        "model_converted": "converting " in log_text,
        "compile_cache_load_failed": "due to a load failure" in log_text,
        "start_s": t_ready - t0,
        "construct_s": float(found.group(1)) if found else None,
        "start_to_first_token_s": t_first - t0,
        "runs": results,
    }


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {
        "tok_per_s": statistics.median(r["tokens"] / r["wall_s"] for r in runs),
        "ttft_ms": statistics.median(1000 * r["ttft_s"] for r in runs),
        "tokens": statistics.median(r["tokens"] for r in runs),
    }


def table(direct: dict[str, Any], ponder: dict[str, Any]) -> tuple[str, list[tuple]]:
    """Markdown table and its rows (label, direct, ponder)."""
    d, p = medians(direct["runs"]), medians(ponder["runs"])
    rows = [
        ("Engine start, s (direct: construct + 1st token; ponder: spawn to /ready 200)",
         direct["start_s"], ponder["start_s"]),
        ("`import vllm` + engine construction, s (ponder: its log 'engine ready in')",
         direct["import_vllm_s"] + direct["construct_s"], ponder["construct_s"]),
        ("Cold to first token, s (direct incl. `import vllm`; ponder: spawn to 1-token reply)",
         direct["start_to_first_token_incl_import_s"], ponder["start_to_first_token_s"]),
        ("Output tokens/s per request, median", d["tok_per_s"], p["tok_per_s"]),
        ("TTFT, ms, median", d["ttft_ms"], p["ttft_ms"]),
        ("Output tokens per request, median", d["tokens"], p["tokens"]),
    ]
    lines = ["| metric | direct AsyncLLM | ponder serve | ponder / direct |",
             "|---|---:|---:|---:|"]
    for label, a, b in rows:
        ratio = f"{b / a:.2f}" if a and b is not None else "n/a"
        fa = f"{a:.2f}" if a is not None else "n/a"
        fb = f"{b:.2f}" if b is not None else "n/a"
        lines.append(f"| {label} | {fa} | {fb} | {ratio} |")
    for name, side in (("direct", direct), ("ponder", ponder)):
        rates = ", ".join(f"{r['tokens'] / r['wall_s']:.1f}" for r in side["runs"])
        lines.append(f"\n{name} tok/s per run: {rates}")
    return "\n".join(lines), rows


def plot(rows: list[tuple], path: Path) -> bool:
    """Bar plot of the ratios ponder / direct, if matplotlib is installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    picked = [(label.split(",")[0], b / a) for label, a, b in rows[:5] if a and b is not None]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.barh([name for name, _ in picked], [r for _, r in picked], color="tab:blue")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("ponder serve / direct AsyncLLM")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--out", default="loadtests/out")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    folder = model_folder()
    direct = asyncio.run(bench_direct(folder, a.runs, a.max_tokens))
    ponder = bench_ponder(a.runs, a.max_tokens, out)
    md, rows = table(direct, ponder)
    same = [x["text"] == y["text"] for x, y in zip(direct["runs"], ponder["runs"])]
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "model": folder,
              "runs": a.runs, "max_tokens": a.max_tokens, "question": QUESTION,
              "engine_settings": "configs/server.toml [engine]", "same_text_per_run": same,
              "direct": direct, "ponder": ponder}
    (out / "bench_engine.json").write_text(json.dumps(result, indent=2))
    (out / "bench_engine.md").write_text(md + "\n")
    print(md)
    print(f"\nsame greedy text on both sides: {sum(same)}/{len(same)} runs")
    if ponder["model_converted"]:
        print("WARNING: ponder serve converted the model during its start: start time is not warm")
    if not plot(rows, out / "bench_engine.png"):
        print("matplotlib not installed: no plot")
    print(f"wrote {out / 'bench_engine.json'} and {out / 'bench_engine.md'}")


if __name__ == "__main__":
    main()
