"""What the code interpreter's sandbox costs per run (issue 12).

    sudo .venv/bin/python -m loadtests.bench_sandbox [--runs 50] [--seconds 10] [--concurrency 1 2 4]
        [--out loadtests/out]

Method
------
Round trip: ``--runs`` runs of ``print(1)``, one after the other, through
``server.sandbox.Sandbox.run`` with the shipped ``[sandbox]`` settings
(configs/server.toml): from the call to the returned ``CodeResult``, so it
counts the launcher's start, the namespaces, the root it builds, the program's
interpreter start, the kill of the namespace and the reaping. The baseline is
the same program without the sandbox: ``python -I -S -c 'print(1)'`` through
``asyncio.create_subprocess_exec`` with the output read, the same number of
times; the difference is what the isolation adds. Median and p99 (nearest
rank) of each.

Sustained rate: for each concurrency c, a sandbox with ``max_concurrent`` = c
and c workers that run ``print(1)`` back to back for ``--seconds``; runs
finished per second, and the median round trip at that load.

The machine's load average is printed before and after: other work on the
same cores (a vLLM engine) shows in every figure.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

from server.sandbox import Sandbox
from server.settings import load_settings

PROGRAM = "print(1)\n"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation between two runs)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary(name: str, seconds: list[float]) -> dict:
    return {"what": name, "runs": len(seconds), "median_ms": round(statistics.median(seconds) * 1000, 1),
            "p99_ms": round(percentile(seconds, 99) * 1000, 1), "max_ms": round(max(seconds) * 1000, 1)}


async def bare_python(python: str) -> float:
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(python, "-I", "-S", "-c", PROGRAM, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    await proc.communicate()
    return time.perf_counter() - start


async def sandboxed(box: Sandbox) -> float:
    start = time.perf_counter()
    result = await box.run(PROGRAM)
    elapsed = time.perf_counter() - start
    if result.stdout != "1\n" or result.exit_status != 0:
        raise RuntimeError(f"unexpected result {result}")
    return elapsed


async def round_trips(runs: int) -> list[dict]:
    settings = load_settings().sandbox
    box = Sandbox(settings)
    reason = await box.check()
    if reason:
        raise SystemExit(f"sandbox unavailable: {reason}")
    bare = [await bare_python(box.interpreter) for _ in range(runs)]  # the sandbox's own interpreter
    boxed = [await sandboxed(box) for _ in range(runs)]
    return [summary("python -I -S, no sandbox", bare), summary("Sandbox.run", boxed)]


async def sustained(concurrency: int, seconds: float) -> dict:
    settings = load_settings(overrides={"sandbox": {"max_concurrent": concurrency}}).sandbox
    box = Sandbox(settings)
    await box.check()
    times: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            times.append(await sandboxed(box))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    return {"concurrency": concurrency, "runs": len(times), "wall_s": round(wall, 2),
            "runs_per_s": round(len(times) / wall, 1), "median_ms": round(statistics.median(times) * 1000, 1),
            "p99_ms": round(percentile(times, 99) * 1000, 1)}


def tables(trips: list[dict], rates: list[dict]) -> str:
    lines = ["| round trip of print(1) | runs | median ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['what']} | {r['runs']} | {r['median_ms']} | {r['p99_ms']} | {r['max_ms']} |" for r in trips]
    lines += ["", "| concurrency | runs | wall s | runs / s | median ms | p99 ms |", "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['concurrency']} | {r['runs']} | {r['wall_s']} | {r['runs_per_s']} | {r['median_ms']} | "
              f"{r['p99_ms']} |" for r in rates]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--out", default="loadtests/out")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("the sandbox needs root (namespaces, its own uids): run this as root")
    load_before = os.getloadavg()
    trips = asyncio.run(round_trips(a.runs))
    rates = [asyncio.run(sustained(c, a.seconds)) for c in a.concurrency]
    load_after = os.getloadavg()
    table = tables(trips, rates)
    print(table)
    print(f"\nload average (1, 5, 15 min) before {load_before}, after {load_after}; {os.cpu_count()} cores")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"round_trips": trips, "sustained": rates, "load_before": load_before, "load_after": load_after,
              "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M")}
    (out / "bench_sandbox.json").write_text(json.dumps(record, indent=2))
    (out / "bench_sandbox.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
