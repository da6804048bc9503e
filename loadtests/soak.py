"""``make soak``: the long storm. Rounds of streamed requests of mixed strategies,
clients leaving at random moments, past a small admission limit so 429s happen
too (a refused client waits its Retry-After and retries, as the SDK does);
after every round the engine must hold nothing within 5 s. Prints, per round: requests, completed, dropped, 429s, given up, failed, drain time, and the
memory of the API process and of the engine process.

    python -m loadtests.soak [--rounds 5] [--requests 400] [--concurrency 64] [--limit 48]
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from pathlib import Path

import psutil

from .common import ponder_server
from .storm import storm, until_idle

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "loadtests" / "out"
KEY = "soak-key"
MODEL = "SmolLM2-135M-Instruct"


def _rss_mb(proc: psutil.Process) -> dict[str, float]:
    engine = [c for c in proc.children(recursive=True) if "EngineCore" in c.name() + " ".join(c.cmdline())]
    return {"api_mb": proc.memory_info().rss / 2**20,
            "engine_mb": sum(c.memory_info().rss for c in engine) / 2**20}


async def _soak(base: str, pid: int, args: argparse.Namespace) -> list[dict]:
    headers = {"Authorization": f"Bearer {KEY}"}
    proc = psutil.Process(pid)
    await storm(base, headers, MODEL, count=60, concurrency=32, seed=999)  # warm-up, not reported
    await until_idle(base, headers, within=30)
    gc.collect()
    rows = [{"round": "baseline", **_rss_mb(proc)}]
    for i in range(args.rounds):
        report = await storm(base, headers, MODEL, count=args.requests, concurrency=args.concurrency,
                             leave_fraction=args.leave, max_tokens=args.max_tokens, seed=i, retries=args.retries)
        drained, load = await until_idle(base, headers)
        row = {"round": i + 1, **report.row(), "drain_s": round(drained, 2), **_rss_mb(proc)}
        if report.failures:
            row["first_failures"] = report.failures[:3]
        if drained == float("inf"):
            row["left_in_engine"] = load
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _table(rows: list[dict]) -> str:
    cols = ["round", "requests", "completed", "dropped", "rejections", "given_up", "failed", "seconds", "drain_s", "api_mb",
            "engine_mb"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(f"{r[c]:.0f}" if isinstance(r.get(c), float) and c.endswith("mb")
                                     else str(r.get(c, "")) for c in cols) + " |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--limit", type=int, default=48, help="admission limit (sequences) of the soaked server")
    p.add_argument("--leave", type=float, default=0.5, help="share of clients that leave early")
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--retries", type=int, default=30, help="429 retries per client (after Retry-After)")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with ponder_server(OUT / "soak-server.log", "--set", f"server.max_concurrent_sequences={args.limit}",
                       api_key=KEY) as (base, _, pid):
        rows = asyncio.run(_soak(base, pid, args))
    table = _table(rows)
    summary = (f"soak: {args.rounds} rounds x {args.requests} streamed requests, concurrency {args.concurrency}, "
               f"admission limit {args.limit} sequences, {args.leave:.0%} of clients leave early; "
               f"{time.perf_counter() - t0:.0f} s in all")
    print(summary)
    print(table)
    (OUT / "soak.md").write_text(summary + "\n\n" + table + "\n")
    (OUT / "soak.json").write_text(json.dumps(rows, indent=1))
    failed = sum(r.get("failed", 0) for r in rows[1:])
    undrained = [r["round"] for r in rows[1:] if r["drain_s"] == float("inf")]
    if failed or undrained:
        sys.exit(f"soak failed: {failed} failed requests, rounds not drained: {undrained}")


if __name__ == "__main__":
    main()
