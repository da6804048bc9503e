"""ponder against vLLM's own OpenAI server, both measured by vLLM's own benchmark client;
and ponder's remote engine (ponder in front of a vLLM server): the cost of the extra hop.

    .venv/bin/python -m loadtests.bench_serve [--concurrency 1 4 8] [--num-prompts 32]
        [--input-len 64] [--output-len 64] [--rounds 1] [--servers vllm ponder remote] [--profile]
        [--out loadtests/out]

Method
------
Servers run one at a time (never two engines at once) on the same model folder
(the converted default model) with the engine settings ponder uses:
max_model_len 2048, prefix caching on, bf16, seed 0, max_num_seqs 64,
``VLLM_CPU_KVCACHE_SPACE=2``.

- vLLM: ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` console
  script of the CPU build does not start), uvicorn access log off as in ponder;
  ready when ``GET /health`` answers 200 (vLLM serves HTTP only once the engine is up).
- ponder: ``python -m server.cli serve`` with its defaults (strategy ``single``,
  no thinking); ready when ``GET /ready`` answers 200.
- remote: the vLLM server above, and ``python -m server.cli serve --engine-url``
  it in front (ponder's remote engine: token ids over ``/v1/completions``,
  streamed). Three processes share the 2 cores (ponder's front end, vLLM's API
  server, its EngineCore) where the other two layouts have two: the hop's cost
  here includes that CPU, which on a real fleet sits on another machine.
  "API server process CPU" is ponder's front end only.

Client: ``vllm.benchmarks.serve`` (``vllm bench serve``), unchanged, in a fresh
subprocess per run (``loadtests.vllm_bench_client``): backend ``openai-chat``
(streamed ``/v1/chat/completions`` with ``max_completion_tokens``,
``stream_options.include_usage`` and ``ignore_eos``), dataset ``random``
(``--input-len`` random tokens as one user message, ``--output-len`` tokens
asked), temperature 1.0, all requests queued at once and at most ``C`` in
flight, ``C`` warm-up requests first. Each concurrency has its own dataset seed,
the same on both servers. Each server first gets one discarded warm-up run.
``--rounds R`` repeats the pair of servers with the order alternating.
``--request-seed N`` sends ``seed`` N and ``ignore_eos`` false in every request
instead: the same prompt then samples the same tokens on both servers (same
engine, same seed), so both stop at the same EOS and the work is equal even
on a server that ignores ``ignore_eos``.

Metrics: output tokens/s and requests/s over the run, as the client reports
them. Latencies are recomputed from the client's per-request records
(``--save-detailed``), because the servers open a stream differently: both
send a first chunk holding only the role, but vLLM sends it with the first
token, ponder at once, before the engine has run. The client's TTFT is the
time to that first chunk, so on ponder it would be a TTFT before any token
exists. Here, on both servers, TTFT is the time to the second chunk (the first
with a token), ITL the gaps between the chunks after it, TPOT (latency - TTFT)
/ (output tokens - 1). The client's own number is kept as "TTFT first chunk".
ITL counts chunks, not tokens: for a token whose text is still empty (part of
a multi-byte character) ponder sends no chunk and vLLM an empty one, so on
ponder that token shows as one gap of two engine steps (visible in ITL p99).
Output tokens per request come from ``usage.completion_tokens``; the table
shows them so a server that stops early is visible, and a probe request per
server (a prompt answered in a few tokens, ``ignore_eos``) checks that
``ignore_eos`` is honoured. "API server process CPU" is the user + system time
of the HTTP process (not its EngineCore child) over a client run, per output
token (the client's warm-up requests counted as ``--output-len`` tokens each):
on 2 cores it competes with the engine for the CPU.

``--profile`` (needs ``py-spy`` in the venv): after the measured runs, one more
run at the highest concurrency with ``py-spy record`` attached to the API
process; raw collapsed stacks (``bench_serve_profile_<server>.txt``, readable by
speedscope and flamegraph.pl) and the top busy self-time functions
(``bench_serve_profile.md``) go to ``--out``. During that run the API process's
main thread runs at nice -10 (root only), so that the wall-clock samples of
py-spy do not pile up where the loop waits for a core. py-spy sees Python frames only:
uvloop's C event loop (vLLM's server) is invisible, the stdlib event loop's
Python frames are not. The profiled run is not part of the table.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.common import free_port, model_folder, stop_group, wait_http

MODEL_NAME = "SmolLM2-135M-Instruct"
ENGINE_FLAGS = ["--max-model-len", "2048", "--max-num-seqs", "64", "--dtype", "bfloat16", "--seed", "0"]
ENV = {"VLLM_CPU_KVCACHE_SPACE": "2"}
READY_TIMEOUT_S = 900.0
CLIENT_TIMEOUT_S = 1800.0
WARMUP_SEED = 12345
SERVERS = ("vllm", "ponder", "remote")
LABELS = {"vllm": "vLLM api_server", "ponder": "ponder serve", "remote": "ponder serve --engine-url (vLLM)"}
# Other engine processes on the machine (another session's tests): recorded, not waited for.
ENGINE_PROCS = re.compile(r"EngineCore|server\.cli serve|ponder serve|vllm\.entrypoints\.openai")


def server_command(name: str, folder: str, port: int, upstream: str = "URL") -> tuple[list[str], str]:
    """The command line and the readiness path of one server (``remote``: its front end)."""
    if name == "remote":
        return [sys.executable, "-m", "server.cli", "serve", "--engine-url", upstream, "--port", str(port)], "/ready"
    if name == "vllm":
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", folder,
                "--served-model-name", MODEL_NAME, "--host", "127.0.0.1", "--port", str(port),
                "--enable-prefix-caching", "--disable-uvicorn-access-log", *ENGINE_FLAGS], "/health"
    return [sys.executable, "-m", "server.cli", "serve", "--model", folder, "--served-model-name", MODEL_NAME,
            "--port", str(port), "--kv-cache-space", ENV["VLLM_CPU_KVCACHE_SPACE"], *ENGINE_FLAGS], "/ready"


@contextmanager
def serving(name: str, folder: str, log_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """One server in its own process group, stopped with its children on exit
    (``remote``: a vLLM server first, and ponder in front of it)."""
    if name == "remote":
        with serving("vllm", folder, log_path.with_name(log_path.stem + "_upstream.log")) as (upstream, _):
            with _serving(name, folder, log_path, upstream) as served:
                yield served
        return
    with _serving(name, folder, log_path) as served:
        yield served


@contextmanager
def _serving(name: str, folder: str, log_path: Path, upstream: str = "") -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    cmd, ready_path = server_command(name, folder, port, upstream)
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **ENV},
                                start_new_session=True)
        try:
            wait_http(proc, url + ready_path, log_path, READY_TIMEOUT_S, poll_s=0.5, name=name)
            print(f"{name} ready in {time.perf_counter() - t0:.0f} s on port {port}", flush=True)
            yield url, proc
        finally:
            stop_group(proc)


def other_engines(own_pgid: int) -> list[int]:
    """Engine processes on the machine that are not ours (they share the 2 cores)."""
    ps = subprocess.run(["ps", "-eo", "pid=,pgid=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in ps.splitlines()]
    return [int(r[0]) for r in rows if len(r) == 3 and ENGINE_PROCS.search(r[2]) and int(r[1]) != own_pgid]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (its threads, not its children: the
    EngineCore is a child process) from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_run(url: str, folder: str, concurrency: int, prompts: int, seed: int, a: argparse.Namespace,
               result_path: Path, log_path: Path) -> dict[str, Any]:
    """One ``vllm bench serve`` run in a subprocess; its JSON result (with per-request records)."""
    args = ["--backend", "openai-chat", "--endpoint", "/v1/chat/completions", "--base-url", url,
            "--model", MODEL_NAME, "--tokenizer", folder, "--dataset-name", "random",
            "--random-input-len", str(a.input_len), "--random-output-len", str(a.output_len),
            "--num-prompts", str(prompts), "--max-concurrency", str(concurrency),
            "--num-warmups", str(concurrency), "--ignore-eos", "--temperature", "1.0",
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
            "--seed", str(seed), "--disable-tqdm", "--save-result", "--save-detailed",
            "--result-dir", str(result_path.parent), "--result-filename", result_path.name]
    if a.request_seed is not None:  # overrides the client's ignore_eos in the request body
        args += ["--extra-body", json.dumps({"seed": a.request_seed, "ignore_eos": False})]
    with log_path.open("a") as log:
        log.write(f"\n### {result_path.name}\n")
        log.flush()
        subprocess.run([sys.executable, "-m", "loadtests.vllm_bench_client", *args], stdout=log,
                       stderr=subprocess.STDOUT, check=True, timeout=CLIENT_TIMEOUT_S)
    return json.loads(result_path.read_text())


def summarize(r: dict[str, Any]) -> dict[str, Any]:
    """The table's numbers from one client result (latencies from the first token chunk on)."""
    ttft, itl, tpot, chunks = [], [], [], []
    for err, t0, gaps, latency, n in zip(r["errors"], r["ttfts"], r["itls"], r["latencies"], r["output_lens"]):
        if err or not gaps:
            continue
        first = t0 + gaps[0]  # the second chunk: the first that carries a token
        ttft.append(first)
        itl.extend(gaps[1:])
        chunks.append(len(gaps) + 1)
        if n > 1:
            tpot.append((latency - first) / (n - 1))
    lens = [n for err, n in zip(r["errors"], r["output_lens"]) if not err]

    def pct(xs: list[float], p: float) -> float | None:
        return float(np.percentile(xs, p)) * 1000 if xs else None

    return {
        "output_tok_s": r["output_throughput"], "req_s": r["request_throughput"],
        "ttft_p50_ms": pct(ttft, 50), "ttft_p99_ms": pct(ttft, 99),
        "itl_p50_ms": pct(itl, 50), "itl_p99_ms": pct(itl, 99), "tpot_p50_ms": pct(tpot, 50),
        "client_ttft_p50_ms": r["median_ttft_ms"], "client_itl_p50_ms": r["median_itl_ms"],
        "tokens_min": min(lens, default=0), "tokens_max": max(lens, default=0),
        "tokens_mean": statistics.fmean(lens) if lens else 0.0,
        "chunks_per_request": statistics.fmean(chunks) if chunks else 0.0,
        "completed": r["completed"], "failed": r["failed"], "duration_s": r["duration"],
    }


def honours_ignore_eos(url: str, max_tokens: int) -> bool:
    """Whether the server honours ``ignore_eos``: a prompt the model answers in a few
    tokens must still give ``max_tokens`` (random prompts rarely meet an EOS in 64
    tokens, so the measured runs alone would not show it)."""
    import httpx

    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Reply with just the word yes."}],
            "max_completion_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=120.0)
    r.raise_for_status()
    return r.json()["usage"]["completion_tokens"] == max_tokens


def tokens_served(r: dict[str, Any], concurrency: int, output_len: int) -> int:
    """Output tokens of a client run, its ``concurrency`` warm-up requests counted as full."""
    return r["total_output_tokens"] + concurrency * output_len


def prompts_for(concurrency: int, num_prompts: int) -> int:
    """Concurrency 1 runs half the prompts: it is the slowest and its spread is small."""
    return num_prompts if concurrency > 1 else max(4, num_prompts // 2)


# --- profiling ---------------------------------------------------------------

PROFILE_RATE_HZ = 200
# Leaf frames of a thread that waits (py-spy's own idle filter kept them here, so
# every sample is recorded with --idle and these are dropped): the stdlib event
# loop's poll, executor threads waiting for work, threading waits, and uvloop's
# run loop (C: its waits and its own work are one Python frame, Runner.run).
_IDLE_LEAF = re.compile(r"^(\S*select \(selectors\.py|_worker \(concurrent/futures/thread\.py"
                        r"|\S*wait \(threading\.py|Runner\.run \(asyncio/runners\.py)")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


@contextmanager
def py_spy(pid: int, raw_path: Path) -> Iterator[None]:
    """``py-spy record`` on ``pid`` (that process only, every thread, idle samples kept)
    while the body runs. Blocking mode (py-spy pauses the process per sample): with
    ``--nonblocking`` it lost almost all samples here. py-spy runs at nice -15 so a
    paused target is not left waiting for py-spy to get a core back."""
    exe = Path(sys.executable).parent / "py-spy"
    cmd = ["nice", "-n", "-15", str(exe), "record", "--pid", str(pid), "--rate", str(PROFILE_RATE_HZ), "--idle", "--threads",
           "--format", "raw", "--output", str(raw_path)]
    with raw_path.with_suffix(".log").open("w") as log:
        spy = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        time.sleep(1.0)  # attached before the load starts
        try:
            yield
        finally:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()


def package_of(path: str) -> str:
    """The package a frame's file belongs to; py-spy shortens paths to the part below
    ``sys.path`` (``starlette/responses.py``, ``server/chat.py``, ``selectors.py``)."""
    head = path.split("/", 1)[0].removesuffix(".py")
    return f"ponder:{head}" if head in ("server", "strategies") else head


def top_self(raw_path: Path, tokens: int, limit: int = 25) -> dict[str, Any]:
    """Busy self time per function and per package from py-spy's collapsed stacks
    (``thread;frame;...;leaf count``: the leaf is where the sample was), and the same
    inclusive for ponder's own functions."""
    funcs: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()  # ponder's own frames, with everything they call
    busy = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if len(frames) < 2 or not count.isdigit() or _IDLE_LEAF.match(frames[-1]):
            continue
        n = int(count)
        m = _FRAME.match(frames[-1])
        func, path = (m["func"], m["file"]) if m else (frames[-1], "")
        pkg = package_of(path)
        funcs[f"{pkg}: {func} ({path.rsplit('/', 1)[-1]})"] += n
        own = {f"{f['file']}: {f['func']}" for f in map(_FRAME.match, frames[1:])
               if f and f["file"].startswith(("server/", "strategies/")) and not f["file"].startswith("server/cli.py")}
        for key in own:  # once per sample, however deep the recursion
            inclusive[key] += n
        packages[pkg] += n
        busy += n
    share = lambda c: 100.0 * c / busy if busy else 0.0  # noqa: E731
    return {"busy_samples": busy, "tokens": tokens,
            "functions": [(name, share(c)) for name, c in funcs.most_common(limit)],
            "packages": [(name, share(c)) for name, c in packages.most_common(limit)],
            "ponder_inclusive": [(name, share(c)) for name, c in inclusive.most_common(limit)]}


def profile_markdown(profiles: dict[str, dict[str, Any]]) -> str:
    lines = [f"# Busy self time in the API server process under load (py-spy {PROFILE_RATE_HZ} Hz, all "
             "threads, waiting samples dropped; % of busy samples)", ""]
    for name, p in profiles.items():
        lines += [f"## {name}: concurrency {p['concurrency']}, {p['tokens']} output tokens, {p['busy_samples']} "
                  f"busy samples; process CPU {p['cpu_ms_per_token']:.2f} ms per output token "
                  "(/proc, under py-spy)", "",
                  "| package | self % |", "|---|---:|"]
        lines += [f"| {pkg} | {pct:.1f} |" for pkg, pct in p["packages"][:15]]
        lines += ["", "| function | self % |", "|---|---:|"]
        lines += [f"| `{fn}` | {pct:.1f} |" for fn, pct in p["functions"]]
        if p["ponder_inclusive"]:
            lines += ["", "| ponder function, with what it calls | inclusive % |", "|---|---:|"]
            lines += [f"| `{fn}` | {pct:.1f} |" for fn, pct in p["ponder_inclusive"]]
        lines.append("")
    return "\n".join(lines)


# --- report ------------------------------------------------------------------

ROWS = [  # key, label, how ponder is compared with vLLM
    ("output_tok_s", "output tokens/s", "ratio"),
    ("req_s", "requests/s", "ratio"),
    ("ttft_p50_ms", "TTFT p50, ms", "diff"),
    ("ttft_p99_ms", "TTFT p99, ms", "diff"),
    ("itl_p50_ms", "ITL p50, ms", "diff"),
    ("itl_p99_ms", "ITL p99, ms", "diff"),
    ("tpot_p50_ms", "TPOT p50, ms", "diff"),
    ("client_ttft_p50_ms", "TTFT first chunk p50, ms (client's own)", "diff"),
    ("api_cpu_ms_per_token", "API server process CPU, ms per output token", "diff"),
    ("tokens_mean", "output tokens / request, mean", "diff"),
]


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    xs = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(xs) if xs else None


def _cell(runs: list[dict[str, Any]], key: str) -> str:
    med = _median(runs, key)
    if med is None:
        return "n/a"
    xs = [r[key] for r in runs if r.get(key) is not None]
    f = ".2f" if abs(med) < 10 else ".1f"
    return f"{med:{f}}" + (f" [{min(xs):{f}}–{max(xs):{f}}]" if len(xs) > 1 else "")


def table(results: dict[str, dict[int, list[dict[str, Any]]]], a: argparse.Namespace) -> str:
    names = [n for n in SERVERS if n in results]
    # Every other server against vLLM alone, when vLLM ran; remote also against ponder.
    pairs = [(n, "vllm") for n in names if n != "vllm" and "vllm" in names]
    pairs += [("remote", "ponder")] if {"remote", "ponder"} <= set(names) else []
    eos = "ignore_eos" if a.request_seed is None else f"EOS honoured, request seed {a.request_seed}"
    lines = [f"# ponder vs vLLM api_server, `vllm bench serve` (openai-chat, random {a.input_len} in / "
             f"at most {a.output_len} out, {eos}, temperature 1.0)", "",
             "Servers: " + "; ".join(f"{n} = {LABELS[n]}" for n in names) + ".", ""]
    if a.rounds > 1:
        lines += [f"Cells: median over {a.rounds} rounds [min–max].", ""]
    for c in a.concurrency:
        runs = {n: results[n][c] for n in names}
        tok = {n: f"{min(r['tokens_min'] for r in runs[n])}–{max(r['tokens_max'] for r in runs[n])}" for n in names}
        lines += [f"## concurrency {c} ({prompts_for(c, a.num_prompts)} prompts)", "",
                  "| metric | " + " | ".join(names) + " | " + "".join(f"{x} vs {y} | " for x, y in pairs),
                  "|---|" + "---:|" * (len(names) + len(pairs))]
        for key, label, how in ROWS:
            row = f"| {label} | " + " | ".join(_cell(runs[n], key) for n in names) + " |"
            for x, y in pairs:
                p, v = _median(runs[x], key), _median(runs[y], key)
                if p is None or v is None:
                    row += " n/a |"
                else:
                    row += f" ×{p / v:.2f} |" if how == "ratio" else f" {p - v:+.{2 if abs(v) < 10 else 1}f} |"
            lines.append(row)
        lines.append("| output tokens / request, min–max | " + " | ".join(tok[n] for n in names)
                     + " |" + "  |" * len(pairs))
        failed = {n: sum(r["failed"] for r in runs[n]) for n in names}
        others = {n: max(r["other_engines"] for r in runs[n]) for n in names}
        notes = [f"{n}: {failed[n]} failed requests" for n in names if failed[n]]
        notes += [f"{n} ignores `ignore_eos` (a short-answer probe stopped early)"
                  for n in names if not all(r["honours_ignore_eos"] for r in runs[n])]
        notes += [f"{n}: up to {others[n]} other engine processes on the machine" for n in names if others[n]]
        if a.request_seed is None:
            notes += [f"{n}: output tokens/request {tok[n]}, asked for exactly {a.output_len} (ignore_eos): "
                      "not comparable" for n in names if tok[n] != f"{a.output_len}–{a.output_len}"]
        lines += [""] + [f"- {x}" for x in notes] + ([""] if notes else [])
    return "\n".join(lines)


def plot(results: dict[str, dict[int, list[dict[str, Any]]]], conc: list[int], path: Path) -> None:
    """Throughput and TTFT p50 against concurrency for both servers (bars: min–max over rounds)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "output_tok_s", "output tokens/s"),
                           (axes[1], "ttft_p50_ms", "TTFT p50, ms (first token chunk)")):
        for name, color in (("vllm", "tab:orange"), ("ponder", "tab:blue"), ("remote", "tab:green")):
            if name not in results:
                continue
            med = [_median(results[name][c], key) for c in conc]
            lo = [m - min(r[key] for r in results[name][c]) for m, c in zip(med, conc)]
            hi = [max(r[key] for r in results[name][c]) - m for m, c in zip(med, conc)]
            ax.errorbar(conc, med, yerr=[lo, hi], marker="o", capsize=3, color=color, label=LABELS[name])
        ax.set_xlabel("max concurrency (vllm bench serve)")
        ax.set_ylabel(label)
        ax.set_xticks(conc)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{MODEL_NAME}, 2 CPU cores: ponder vs vLLM's OpenAI server")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- main --------------------------------------------------------------------

def bench_server(name: str, tag: str, folder: str, a: argparse.Namespace, out: Path,
                 results: dict[str, dict[int, list[dict[str, Any]]]],
                 profiles: dict[str, dict[str, Any]]) -> None:
    """Start one server, warm it, run every concurrency, optionally profile; then stop it."""
    raw_dir, client_log = out / "bench_serve_raw", out / "bench_serve_client.log"
    raw_dir.mkdir(parents=True, exist_ok=True)
    with serving(name, folder, out / f"bench_serve_{name}{tag}.log") as (url, proc):
        client_run(url, folder, 4, 8, WARMUP_SEED, a, raw_dir / f"{name}{tag}_warmup.json", client_log)
        honours = honours_ignore_eos(url, a.output_len)
        if not honours:
            print(f"  WARNING: {name} does not honour ignore_eos: outputs can stop before {a.output_len} tokens")
        for c in a.concurrency:
            others = len(other_engines(proc.pid))
            t0, cpu0 = time.perf_counter(), cpu_seconds(proc.pid)
            r = client_run(url, folder, c, prompts_for(c, a.num_prompts), a.seed + c, a,
                           raw_dir / f"{name}{tag}_c{c}.json", client_log)
            cpu_ms = 1000 * (cpu_seconds(proc.pid) - cpu0)
            s = {**summarize(r), "api_cpu_ms_per_token": cpu_ms / tokens_served(r, c, a.output_len),
                 "honours_ignore_eos": honours, "other_engines": max(others, len(other_engines(proc.pid))),
                 "loadavg_1m": os.getloadavg()[0]}
            results[name].setdefault(c, []).append(s)
            print(f"  {name}{tag} c={c}: {s['output_tok_s']:.1f} tok/s, TTFT p50 {s['ttft_p50_ms']:.1f} ms, "
                  f"ITL p50 {s['itl_p50_ms']:.1f} ms, tokens/request {s['tokens_min']}–{s['tokens_max']} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        if a.profile and name not in profiles:
            c = max(a.concurrency)
            raw = out / f"bench_serve_profile_{name}.txt"
            # py-spy samples wall time: on 2 busy cores a runnable but descheduled event loop
            # would pile samples on whatever line it was preempted at. A higher priority for
            # the API process's main thread keeps samples close to where its CPU time goes.
            try:
                os.setpriority(os.PRIO_PROCESS, proc.pid, -10)
            except PermissionError:
                print("  not allowed to raise the API process's priority: the profile may be skewed")
            cpu0 = cpu_seconds(proc.pid)
            with py_spy(proc.pid, raw):
                r = client_run(url, folder, c, 4 * a.num_prompts, a.seed + 1000, a,
                               raw_dir / f"{name}{tag}_profile.json", client_log)
            tokens = tokens_served(r, c, a.output_len)
            profiles[name] = {**top_self(raw, tokens), "concurrency": c, "raw": str(raw),
                              "cpu_ms_per_token": 1000 * (cpu_seconds(proc.pid) - cpu0) / tokens}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--num-prompts", type=int, default=32, help="per concurrency (half of it at concurrency 1)")
    ap.add_argument("--input-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=1, help="repeat the pair of servers, order alternating")
    ap.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS),
                    help="which layouts to run (default all three), in this order in even rounds")
    ap.add_argument("--seed", type=int, default=0, help="dataset seed; concurrency C uses seed + C")
    ap.add_argument("--request-seed", type=int,
                    help="send every request with this seed and ignore_eos false: both servers then sample "
                         "the same tokens and stop at the same EOS (for a server that ignores ignore_eos)")
    ap.add_argument("--profile", action="store_true", help="py-spy the API process in one extra run")
    ap.add_argument("--out", default="loadtests/out")
    ap.add_argument("--plot", default="loadtests/results/bench_serve.png")
    a = ap.parse_args(argv)
    # SIGTERM as SystemExit: the ``finally`` blocks then stop the server's process group.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_serve_client.log").write_text("")
    folder = model_folder()
    results: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(dict)
    profiles: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for rnd in range(a.rounds):
        for name in a.servers if rnd % 2 == 0 else a.servers[::-1]:
            bench_server(name, f"_r{rnd}", folder, a, out, results, profiles)
    md = table(results, a)
    md += (f"\n\nWhole run {time.perf_counter() - t0:.0f} s, {time.strftime('%Y-%m-%d %H:%M:%S %z')}. "
           f"Commands and per-request data: `{out}/bench_serve.json`, `{out}/bench_serve_raw/`.\n")
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "model": folder, "args": vars(a),
              "commands": {n: server_command(n, folder, 0)[0] for n in a.servers}, "env": ENV,
              "results": {n: {str(c): runs for c, runs in results[n].items()} for n in results},
              "profiles": profiles}
    (out / "bench_serve.json").write_text(json.dumps(result, indent=2))
    (out / "bench_serve.md").write_text(md)
    print("\n" + md)
    plot(results, a.concurrency, Path(a.plot))
    if profiles:
        (out / "bench_serve_profile.md").write_text(profile_markdown(profiles))
        print(profile_markdown(profiles))
    print(f"wrote {out / 'bench_serve.json'}, {out / 'bench_serve.md'} and {a.plot}")


if __name__ == "__main__":
    main()
