"""Does compute buy accuracy? Accuracy against tokens and wall time, per task family,
for any ponder (issue 13).

    .venv/bin/python -m loadtests.bench_accuracy --base-url http://127.0.0.1:8000 \\
        --model Qwen2.5-Coder-1.5B-Instruct [--families word,arith,count,json]
        [--problems 40] [--seed 2026] [--configs greedy,sample,...] [--out loadtests/out]

Without ``--base-url`` it starts ``ponder serve --model qwen2.5-coder-1.5b`` itself.
Problems come from loadtests/accuracy_tasks.py (seeded families, strict grading).
Every configuration is a plain OpenAI chat request through the ``openai`` SDK with
ponder's ``reasoning`` object in ``extra_body``; tokens are the server's exact
``usage.completion_tokens`` (every sample, probe and program turn a strategy spent).

Configurations (``CONFIGS``): greedy and sampled direct answers (temperature is
compared, not fixed), s1 budget forcing at the shared table's budgets and thinking
the model ends itself, each with and without probe-based early exit
(``reasoning.probe``), self-consistency at two temperatures, DeepConf online
against plain self-consistency, PAL and ReAct (the code tool), a vote over PAL
runs, and ``effort <level>``: the server's own effort table as a client meets it
(``reasoning_effort`` alone, no temperature). ``samples8`` asks for ``n=8`` direct
samples once per problem and draws majority-of-k curves offline (k = 1..8, votes
over the strict answers), the cheap way to see how voting scales and the plain
baseline DeepConf is paired with.

On a slow machine run configurations one invocation at a time and merge them:
``--report A.json B.json [--problems N]`` prints the tables and plots over all of
them (on the first N problems), ``--indices 4,8`` reruns a few problems.

Output: per family a table (accuracy with a 95 % Wilson interval, mean tokens,
tokens relative to greedy, mean latency, wall time), a compute-matched table (the
most accurate configuration at no more than 1x, 2x, 4x and 8x greedy's tokens:
Snell et al. 2024's compute-optimal choice), token savings at equal accuracy
(``SAVINGS``: adaptive against plain, paired over problems with bootstrap
intervals), and ``accuracy_<family>.png`` with accuracy against mean tokens and
against wall time per problem.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import openai

from loadtests.accuracy_tasks import FAMILIES, JSON_SCHEMA, Task, json_answer, numeric_answer, prompt, tasks
from loadtests.bench_parallel import wilson
from loadtests.common import exit_on_sigterm, ponder_server

MAX_TOKENS = 1024
# The request's own deadline (ponder's `timeout`): n=8 requests four at a time take
# longer than the server's default 600 s on 2 AVX2 cores.
DEADLINE_S = 3600
BUDGETS = (1, 2, 4, 8)
# Token savings at equal accuracy (issue 13): (adaptive configuration, its plain
# baseline, k). k > 0: the baseline is a samples-n run, scored per problem as the
# majority of its k samples (plain self-consistency over k, same problems and
# temperature); k == 0: the baseline is an ordinary run.
SAVINGS = (("sc8 T0.7 deepconf", "samples8 T0.7", 8), ("sc8 T0.7 deepconf", "sc8 T0.7", 0),
           ("think medium probe", "think medium", 0), ("think high probe", "think high", 0),
           ("think xhigh probe", "think xhigh", 0), ("think 640 probe", "think 640", 0))


@dataclass(frozen=True)
class Config:
    label: str
    reasoning: dict[str, Any]
    temperature: float | None = 0.0  # None: send none (the server's default, as an SDK user gets)
    n: int = 1  # > 1: n direct samples in one request, voted offline (majority-of-k curve)
    families: tuple[str, ...] = tuple(FAMILIES)
    in_flight: int = 8
    extra: dict[str, Any] = field(default_factory=dict)


NONE = {"strategy": "single", "effort": "none"}
THINK = (("low", 32, 64), ("medium", 96, 160), ("high", 192, 320), ("xhigh", 384, 640))
CONFIGS: list[Config] = [
    Config("greedy", NONE),
    Config("sample T0.7", NONE, 0.7),
    # s1 budget forcing at the shared table's budgets (configs/effort.toml), named
    # explicitly so a model preset's own effort table does not change them.
    *(Config(f"think {e}", {"strategy": "budget_forcing", "min_thinking_tokens": lo, "max_thinking_tokens": hi})
      for e, lo, hi in THINK),
    # Probe-based early exit (Dynasor-CoT / DEER) against the same budgets without it.
    *(Config(f"think {e} probe", {"strategy": "budget_forcing", "min_thinking_tokens": lo, "max_thinking_tokens": hi,
                                  "probe": True}) for e, lo, hi in THINK if e != "low"),
    # Thinking the model ends itself (no minimum), capped at 640: where a probe can
    # cut it short.
    Config("think 640", {"strategy": "single", "max_thinking_tokens": 640}),
    Config("think 640 probe", {"strategy": "single", "max_thinking_tokens": 640, "probe": True}),
    Config("samples8 T0.7", NONE, 0.7, n=8, in_flight=4),
    Config("samples8 T0.4", NONE, 0.4, n=8, in_flight=4),
    Config("sc5 T0.7", {"strategy": "self_consistency", "samples": 5, "effort": "none"}, 0.7, in_flight=4),
    Config("sc5 T0.4", {"strategy": "self_consistency", "samples": 5, "effort": "none"}, 0.4, in_flight=4),
    Config("sc5 T0.7 conf", {"strategy": "self_consistency", "samples": 5, "effort": "none",
                             "scorer": "confidence"}, 0.7, in_flight=4),
    # DeepConf online against plain self-consistency on the same 8 samples.
    Config("sc8 T0.7", {"strategy": "self_consistency", "samples": 8, "effort": "none", "early_stop": False},
           0.7, in_flight=4),
    Config("sc8 T0.7 deepconf", {"strategy": "self_consistency", "samples": 8, "effort": "none",
                                 "early_stop": False, "deepconf": True}, 0.7, in_flight=4),
    Config("pal", {"strategy": "tool_use", "tool_mode": "pal", "max_thinking_tokens": 256},
           families=("word", "arith", "count")),
    Config("react", {"strategy": "tool_use", "tool_mode": "react", "max_thinking_tokens": 256},
           families=("arith", "count")),
    Config("pal sc4 T0.7", {"strategy": "self_consistency", "samples": 4, "tools": ["python"], "tool_mode": "pal",
                            "max_thinking_tokens": 256}, 0.7, families=("word", "arith", "count"), in_flight=4),
    # The server's effort table as a client meets it: reasoning_effort alone, no
    # temperature (the preset's default), nothing else.
    *(Config(f"effort {e}", {}, None, extra={"reasoning_effort": e}, in_flight=4 if e in ("high", "xhigh", "max") else 8)
      for e in ("none", "minimal", "low", "medium", "high", "xhigh", "max")),
]


def grade_all(task: Task, contents: list[str]) -> list[bool]:
    return [task.grade(c) for c in contents]


def answer_of(task: Task, content: str | None) -> Any:
    """The graded answer (hashable) a vote counts, or None."""
    if task.family == "json":
        value = json_answer(content)
        return json.dumps(value, sort_keys=True) if value is not None else None
    return numeric_answer(content)


def majority_at(task: Task, contents: list[str], k: int, rng: random.Random, draws: int = 20) -> float:
    """Expected correctness of a majority vote over k of the samples (ties broken at
    random, no answer never wins), averaged over ``draws`` random subsets."""
    truth = answer_of(task, json.dumps(task.truth)) if task.family == "json" else task.truth
    if k >= len(contents):
        draws = 1
    total = 0.0
    for _ in range(draws):
        pick = rng.sample(contents, k) if k < len(contents) else contents
        votes = Counter(a for a in (answer_of(task, c) for c in pick) if a is not None)
        if not votes:
            continue
        top = max(votes.values())
        leaders = [a for a, v in votes.items() if v == top]
        total += (truth in leaders) / len(leaders)
    return total / draws


async def ask(client, model: str, task: Task, cfg: Config, seed: int) -> dict[str, Any]:
    extra: dict[str, Any] = dict(cfg.extra)
    if task.family == "json":
        extra["response_format"] = {"type": "json_schema",
                                    "json_schema": {"name": "order", "schema": JSON_SCHEMA, "strict": True}}
    if cfg.n > 1:
        extra["n"] = cfg.n
    if cfg.temperature is not None:  # top_p too, so a server's sampling defaults never leak in
        extra.update(temperature=cfg.temperature, top_p=1.0)
    body: dict[str, Any] = {"timeout": DEADLINE_S, **({"reasoning": cfg.reasoning} if cfg.reasoning else {})}
    t0 = time.perf_counter()
    try:
        resp = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt(task)}], max_tokens=MAX_TOKENS,
            seed=seed, extra_body=body, **extra)
    except openai.APIError as exc:  # counted as wrong, and reported
        return {"index": task.index, "error": f"{type(exc).__name__}: {exc}"[:300], "correct": False,
                "tokens": 0, "latency_s": time.perf_counter() - t0, "contents": []}
    contents = [c.message.content or "" for c in resp.choices]
    graded = grade_all(task, contents)
    return {"index": task.index, "contents": contents, "graded": graded, "correct": graded[0],
            "tokens": resp.usage.completion_tokens, "latency_s": time.perf_counter() - t0,
            "finish": [c.finish_reason for c in resp.choices]}


async def run_config(client, model: str, family: str, problems: list[Task], cfg: Config, seed: int) -> dict:
    gate = asyncio.Semaphore(cfg.in_flight)

    async def one(t: Task) -> dict[str, Any]:
        async with gate:
            return await ask(client, model, t, cfg, seed * 100_003 + t.index)

    t0 = time.perf_counter()
    records = await asyncio.gather(*(one(t) for t in problems))
    wall = time.perf_counter() - t0
    row = {"config": cfg.label, "family": family, "reasoning": cfg.reasoning, "temperature": cfg.temperature,
           "n": cfg.n, "problems": len(records), "wall_s": wall, "errors": sum("error" in r for r in records),
           "records": records}
    return {**row, "points": points(row, problems, seed)}


def points(row: dict[str, Any], problems: list[Task], seed: int) -> list[dict[str, Any]]:
    """The run's accuracy points: one, or for a samples-n run the majority of k samples
    for k = 1..n at k/n of the request's tokens and time."""
    # A request that failed (a deadline, say) is no answer of the configuration's: it
    # is left out, and the table says how many were (row["errors"]).
    records = [r for r in row["records"] if "error" not in r]
    n = len(records)
    wall, tokens = row["wall_s"] / row["problems"], sum(r["tokens"] for r in records) / n
    if row["n"] == 1:
        return [_point(row["config"], sum(r["correct"] for r in records), n, tokens, wall)]
    rng = random.Random(seed)
    by_index = {t.index: t for t in problems}
    out = []
    for k in range(1, row["n"] + 1):
        acc = sum(majority_at(by_index[r["index"]], r["contents"], k, rng) for r in records if r["contents"])
        out.append(_point(f"{row['config']} maj@{k}", acc, n, tokens * k / row["n"], wall * k / row["n"]))
    return out


def _point(label: str, correct: float, n: int, tokens: float, wall: float) -> dict[str, Any]:
    lo, hi = wilson(correct, n)  # expected correct counts of a vote may be fractional
    return {"label": label, "correct": correct, "problems": n, "accuracy": correct / n, "ci95": [lo, hi],
            "mean_tokens": tokens, "wall_per_problem_s": wall}


async def run(base: str, model: str, families: list[str], n: int, seed: int, configs: list[Config],
              save: Path | None = None, indices: set[int] | None = None) -> list[dict]:
    """Every configuration on every family; ``save`` gets the records so far after
    each configuration, so a run stopped midway keeps what it measured."""
    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="bench", max_retries=0, timeout=DEADLINE_S + 60)
    rows = []
    for family in families:
        problems = [t for t in tasks(family, n, seed) if indices is None or t.index in indices]
        for cfg in configs:
            if family not in cfg.families:
                continue
            row = await run_config(client, model, family, problems, cfg, seed)
            rows.append(row)
            if save is not None:
                text = json.dumps({"seed": seed, "problems": n, "rows": rows, "partial": True}, indent=1)
                await asyncio.to_thread(save.write_text, text)
            for p in row["points"]:
                if cfg.n == 1 or p["label"].endswith(("maj@1", "maj@3", "maj@5", f"maj@{cfg.n}")):
                    print(f"  {family:6s} {p['label']:22s} {p['correct']:5.1f}/{n} [{p['ci95'][0]:.2f}-"
                          f"{p['ci95'][1]:.2f}] {p['mean_tokens']:6.0f} tok {p['wall_per_problem_s']:5.1f} s/problem"
                          f"{'  errors ' + str(row['errors']) if row['errors'] else ''}", flush=True)
    await client.close()
    return rows


def tables(rows: list[dict[str, Any]]) -> str:
    out = []
    for family in dict.fromkeys(r["family"] for r in rows):
        points = [p for r in rows if r["family"] == family for p in r["points"]]
        base = next((p for p in points if p["label"] == "greedy"), points[0])
        out += [f"\n### {family}\n", "| configuration | correct | accuracy [95 % CI] | mean tokens | x greedy "
                "| s / problem |", "|---|---|---|---|---|---|"]
        failed = {p["label"]: r["errors"] for r in rows if r["family"] == family for p in r["points"]}
        for p in points:
            label = p["label"] + (f" ({failed[p['label']]} failed, left out)" if failed.get(p["label"]) else "")
            out.append(f"| {label} | {p['correct']:.1f}/{p['problems']} | {p['accuracy']:.2f} "
                       f"[{p['ci95'][0]:.2f}-{p['ci95'][1]:.2f}] | {p['mean_tokens']:.0f} | "
                       f"{p['mean_tokens'] / base['mean_tokens']:.1f} | {p['wall_per_problem_s']:.2f} |")
        out += ["", "| budget (x greedy tokens) | best configuration | accuracy [95 % CI] | vs greedy |",
                "|---|---|---|---|"]
        for b in BUDGETS:
            within = [p for p in points if p["mean_tokens"] <= b * base["mean_tokens"] * 1.05]
            best = max(within, key=lambda p: p["accuracy"])
            apart = "CIs apart" if best["ci95"][0] > base["ci95"][1] else "CIs overlap"
            out.append(f"| {b}x | {best['label']} | {best['accuracy']:.2f} [{best['ci95'][0]:.2f}-"
                       f"{best['ci95'][1]:.2f}] | {100 * (best['accuracy'] - base['accuracy']):+.0f} points, {apart} |")
    return "\n".join(out)


def per_problem(row: dict[str, Any], k: int, seed: int) -> dict[int, tuple[float, float]]:
    """index -> (correctness, tokens) of one run; k > 0 scores a samples-n run as the
    majority of k of its samples, at k/n of its tokens."""
    valid = [r for r in row["records"] if "error" not in r]  # failed requests pair with nothing
    if not k:
        return {r["index"]: (float(r["correct"]), float(r["tokens"])) for r in valid}
    rng = random.Random(seed)
    upto = max((r["index"] for r in valid), default=-1) + 1
    problems = {t.index: t for t in tasks(row["family"], upto, seed)}
    return {r["index"]: (majority_at(problems[r["index"]], r["contents"], k, rng) if r["contents"] else 0.0,
                         r["tokens"] * k / row["n"]) for r in valid}


def paired(a: dict[int, tuple[float, float]], b: dict[int, tuple[float, float]], draws: int = 4000,
           seed: int = 0) -> dict[str, Any]:
    """Token ratio a/b and accuracy difference a-b on the problems both ran, each with
    a 95 % paired bootstrap interval over problems (resampled together, so a problem's
    difficulty moves both sides)."""
    keys = sorted(set(a) & set(b))
    rng = random.Random(seed)

    def stats(ks: list[int]) -> tuple[float, float]:
        ta, tb = sum(a[i][1] for i in ks), sum(b[i][1] for i in ks)
        return (ta / tb if tb else float("nan")), sum(a[i][0] - b[i][0] for i in ks) / len(ks)

    ratio, diff = stats(keys)
    boots = sorted(stats([rng.choice(keys) for _ in keys]) for _ in range(draws))
    ratios, diffs = sorted(x for x, _ in boots), sorted(y for _, y in boots)
    lo, hi = int(0.025 * draws), int(0.975 * draws) - 1
    return {"problems": len(keys), "token_ratio": ratio, "token_ratio_ci95": [ratios[lo], ratios[hi]],
            "accuracy_a": sum(a[i][0] for i in keys) / len(keys), "accuracy_b": sum(b[i][0] for i in keys) / len(keys),
            "accuracy_diff": diff, "accuracy_diff_ci95": [diffs[lo], diffs[hi]]}


def savings(rows: list[dict[str, Any]], seed: int) -> str:
    """The SAVINGS pairs that both ran, per family, as a table."""
    out = ["\n### token savings at equal accuracy (paired over problems, 95 % bootstrap)\n",
           "| family | adaptive | baseline | problems | tokens adaptive / baseline | accuracy adaptive vs baseline "
           "| difference |", "|---|---|---|---|---|---|---|"]
    found = False
    for family in dict.fromkeys(r["family"] for r in rows):
        by = {r["config"]: r for r in rows if r["family"] == family}
        for a, b, k in SAVINGS:
            if a in by and b in by:
                found = True
                s = paired(per_problem(by[a], 0, seed), per_problem(by[b], k, seed))
                base = f"{b} maj@{k}" if k else b
                out.append(f"| {family} | {a} | {base} | {s['problems']} | {s['token_ratio']:.2f} "
                           f"[{s['token_ratio_ci95'][0]:.2f}-{s['token_ratio_ci95'][1]:.2f}] | "
                           f"{s['accuracy_a']:.2f} vs {s['accuracy_b']:.2f} | {100 * s['accuracy_diff']:+.0f} points "
                           f"[{100 * s['accuracy_diff_ci95'][0]:+.0f}, {100 * s['accuracy_diff_ci95'][1]:+.0f}] |")
    return "\n".join(out) if found else ""


def plots(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []
    for family in dict.fromkeys(r["family"] for r in rows):
        fig, axes = plt.subplots(1, 2, figsize=(13, 5))
        for r in (r for r in rows if r["family"] == family):
            pts = r["points"]
            for ax, x in zip(axes, ("mean_tokens", "wall_per_problem_s")):
                xs, ys = [p[x] for p in pts], [p["accuracy"] for p in pts]
                err = [[max(0.0, p["accuracy"] - p["ci95"][0]) for p in pts],
                       [max(0.0, p["ci95"][1] - p["accuracy"]) for p in pts]]
                if len(pts) > 1:
                    ax.plot(xs, ys, "-o", ms=3, label=r["config"] + " (maj@k)")
                else:
                    ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=3, label=r["config"])
        for ax, name in zip(axes, ("mean completion tokens per problem (log)", "wall seconds per problem (log)")):
            ax.set_xscale("log")
            ax.set_xlabel(name)
            ax.set_ylabel("accuracy")
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=7, loc="lower right")
        fig.suptitle(f"{family}: accuracy against compute (95 % Wilson intervals)")
        fig.tight_layout()
        path = out / f"accuracy_{family}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def report(paths: list[Path], out: Path, first: int | None = None) -> None:
    """Tables and plots over runs made separately (a family's configurations run one
    invocation at a time on a slow machine); a later file's record of a problem
    replaces an earlier one (``--indices`` reruns a few problems). Wall time per
    problem is the slowest of the runs merged.
    ``first``: only problems 0..first-1, so runs of different sizes compare on the
    same problems."""
    runs = [json.loads(path.read_text()) for path in paths]
    seeds = {r["seed"] for r in runs}
    if len(seeds) != 1:
        raise SystemExit(f"runs of different seeds {sorted(seeds)} cannot be merged")
    merged: dict[tuple[str, str], dict] = {}
    by_index: dict[tuple[str, str], dict[int, dict]] = {}
    for run_ in runs:
        for row in run_["rows"]:
            key = (row["family"], row["config"])
            per = row["wall_s"] / row["problems"]
            old = merged.get(key)
            merged[key] = {**row, "wall_s": per if old is None else max(old["wall_s"], per)}
            by_index.setdefault(key, {}).update({r["index"]: r for r in row["records"]})
    seed = seeds.pop()
    # A problem whose request failed in any configuration leaves every configuration
    # of its family, so all compare on the same problems.
    failed = {(f, i) for (f, _), recs in by_index.items() for i, r in recs.items() if "error" in r}
    for family, i in sorted(failed):
        print(f"{family} problem {i} left out: a request failed in some configuration")
    rows = []
    for key, row in merged.items():
        records = sorted((r for i, r in by_index[key].items() if (first is None or i < first)
                          and (key[0], i) not in failed), key=lambda r: r["index"])
        row = {**row, "records": records, "problems": len(records), "wall_s": row["wall_s"] * len(records),
               "errors": sum("error" in r for r in records)}
        upto = max((r["index"] for r in records), default=-1) + 1
        rows.append({**row, "points": points(row, tasks(row["family"], upto, seed), seed)})
    out.mkdir(parents=True, exist_ok=True)
    text = tables(rows) + savings(rows, seed)
    (out / "report.md").write_text(text + "\n")
    print(text)
    for path in plots(rows, out):
        print("plot:", path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base-url")
    p.add_argument("--model", default="Qwen2.5-Coder-1.5B-Instruct")
    p.add_argument("--preset", default="qwen2.5-coder-1.5b", help="served when no --base-url is given")
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--problems", type=int, help="problems a family (default 40; with --report: only the first N)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--configs", help="comma-separated labels (default: all)")
    p.add_argument("--out", type=Path, default=Path("loadtests/out"))
    p.add_argument("--indices", help="comma-separated problem indices to run (rerun a few; merge with --report)")
    p.add_argument("--in-flight", type=int, help="requests in flight for every configuration (default: its own)")
    p.add_argument("--report", type=Path, nargs="+", metavar="JSON",
                   help="run nothing: merge these runs' records (same seed) into the tables and plots")
    a = p.parse_args()
    exit_on_sigterm()
    if a.report:
        report(a.report, a.out, a.problems)
        return
    a.problems = a.problems or 40
    wanted = a.configs.split(",") if a.configs else None
    configs = [c for c in CONFIGS if wanted is None or c.label in wanted]
    if a.in_flight:
        configs = [replace(c, in_flight=a.in_flight) for c in configs]
    unknown = set(wanted or ()) - {c.label for c in configs}
    if unknown:
        p.error(f"unknown configurations {sorted(unknown)}; known: {[c.label for c in CONFIGS]}")
    families = a.families.split(",")
    indices = {int(i) for i in a.indices.split(",")} if a.indices else None
    if indices:
        a.problems = max(a.problems, max(indices) + 1)
    t0 = time.perf_counter()
    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.out / f"bench_accuracy_{a.seed}"
    save = stem.with_suffix(".partial.json")
    if a.base_url:
        rows = asyncio.run(run(a.base_url, a.model, families, a.problems, a.seed, configs, save, indices))
    else:
        with ponder_server(a.out / "bench_accuracy_server.log", "--model", a.preset, api_key="bench") as served:
            print(f"ponder ready in {served.start_s:.0f} s", flush=True)
            rows = asyncio.run(run(served.base, a.model, families, a.problems, a.seed, configs, save, indices))
    stem.with_suffix(".json").write_text(json.dumps({"seed": a.seed, "problems": a.problems, "rows": rows},
                                                    indent=1))
    text = tables(rows) + savings(rows, a.seed)
    stem.with_suffix(".md").write_text(text + "\n")
    print(text)
    for path in plots(rows, a.out):
        print("plot:", path)
    print(f"\nWhole run {time.perf_counter() - t0:.0f} s; records in {stem.with_suffix('.json')}")


if __name__ == "__main__":
    main()
