"""Strategy ``self_consistency`` (Wang et al. 2022, arXiv:2203.11171).

``samples`` candidates (strategies/candidates.py) run at once; each
candidate's final answer is extracted and voted on (majority, or weighted by
DeepConf confidence with ``scorer: "confidence"``); the winner's thinking and
answer are returned. With ``early_stop`` it samples in windows and stops,
aborting the candidates still running, by ESC (Li et al. 2024), by
Adaptive-Consistency (Aggarwal et al. 2023) or as soon as the leader cannot
be overtaken (strategies/voting.py). With ``deepconf`` it runs DeepConf online
(Fu et al. 2025, arXiv:2508.15260): a warm-up of ``deepconf_warmup`` candidates
sets a threshold at a percentile of their lowest group confidences (keeping
about ``deepconf_keep`` of traces like them), every later candidate is stopped
the moment its group confidence falls below it and does not vote, and votes
are weighted by confidence. With ``reasoning.tools`` every candidate
is a whole ``tool_use`` run (PAL / ReAct, Gao et al. 2022; Yao et al. 2022)
and the programs' answers are voted on, as PAL does with majority voting.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass

from . import scoring, tool_use
from .candidates import KEYS, Candidate, ParallelConfig, Pool, collect, logprobs_needed, replay
from .context import RunContext
from .descriptor import OptionSource, Strategy
from .errors import PlanError
from .events import ChoiceDone, Event
from .plan import Plan
from .tool_use import ToolUseOptions
from .trace import CandidateTrace, Trace, optional
from .voting import Tally, should_stop


@dataclass(frozen=True)
class SelfConsistencyOptions:
    samples: int
    scorer: str | None
    vote: str  # "majority" | "weighted"
    early_stop: bool
    window: int
    stop_rule: str  # "esc" | "adaptive" | "overtake"
    stop_threshold: float
    share_prefix: bool
    stream_candidates: bool
    # DeepConf online: warm-up size and the share of warm-up-like traces kept (0: off).
    deepconf_warmup: int = 0
    deepconf_keep: float = 0.9
    # Each candidate may run code (reasoning.tools): a whole tool_use run.
    code: ToolUseOptions | None = None

    def public(self) -> dict[str, object]:
        out = asdict(self)
        out["code"] = self.code.public() if self.code is not None else None
        return out


@dataclass(frozen=True)
class SelfConsistencyTrace(Trace):
    strategy: str
    samples: int
    started: int
    selected: int
    candidates: tuple[CandidateTrace, ...]
    votes: dict[str, int]
    early_stopped: bool
    answer: str | None
    tokens_saved_estimate: int
    # DeepConf online: the threshold the warm-up set, and how many candidates it stopped.
    confidence_threshold: float | None = optional()
    filtered: int | None = optional()

    def candidate_traces(self) -> tuple[CandidateTrace, ...]:
        return self.candidates

    def early_stop_savings(self) -> int | None:
        return self.tokens_saved_estimate if self.early_stopped or self.filtered else None


def read(src: OptionSource) -> SelfConsistencyOptions:
    cfg: ParallelConfig = src.config
    scorer = src.get("scorer")
    scoring.check_scorer(scorer)
    if scorer is not None and scorer != "confidence":
        raise PlanError("self_consistency weighs votes by confidence only", "reasoning.scorer")
    samples = src.get("samples") or cfg.samples
    deepconf = bool(src.get("deepconf", False))
    if deepconf and samples <= cfg.deepconf_warmup:
        raise PlanError(f"deepconf needs more samples than its warm-up of {cfg.deepconf_warmup}",
                        "reasoning.samples")
    return SelfConsistencyOptions(
        samples=samples, scorer=scorer,
        vote="weighted" if scorer == "confidence" or deepconf else cfg.vote,
        early_stop=src.get("early_stop", cfg.early_stop), window=cfg.window, stop_rule=cfg.stop_rule,
        stop_threshold=cfg.stop_threshold, share_prefix=cfg.share_prefix,
        stream_candidates=bool(src.get("stream_candidates", False)),
        deepconf_warmup=cfg.deepconf_warmup if deepconf else 0, deepconf_keep=cfg.deepconf_keep,
        code=tool_use.read_hosted(src))


async def run(ctx: RunContext, plan: Plan) -> AsyncIterator[Event]:
    o: SelfConsistencyOptions = plan.options  # type: ignore[assignment]
    weighted = o.vote == "weighted"
    pool = Pool(ctx, plan, o.samples, share_prefix=o.share_prefix, logprobs=logprobs_needed(ctx, weighted),
                code=o.code)
    window = o.window if o.early_stop and o.window > 0 else o.samples
    tally = Tally()
    stopped = False
    keys: list[str | None] = []
    threshold: float | None = None

    def keep(cand: Candidate) -> bool:
        current = cand.confidence.current
        return threshold is None or current is None or current >= threshold

    def on_done(cand: Candidate) -> bool:
        nonlocal stopped
        if cand.filtered:
            return False
        tally.add(cand.key, cand.score if weighted and cand.score is not None else 1.0, cand.index)
        keys.append(cand.key)
        if not o.early_stop:
            return False
        left = o.samples - len(pool.finished())
        # ESC looks at a window once all of it has finished; stopping when nothing
        # is left to sample saves nothing: not an early stop.
        whole = keys if not pool.fan.running else []
        stopped = left > 0 and should_stop(o.stop_rule, tally, whole, left, o.stop_threshold)
        return stopped

    try:
        started = 0
        while started < o.samples and not stopped:
            keys.clear()
            # DeepConf's warm-up is a batch of its own: the threshold needs whole traces.
            size = o.deepconf_warmup if o.deepconf_warmup and started == 0 else window
            batch = list(range(started, min(o.samples, started + size)))
            pool.start_all(batch)  # some may start a moment later, from the prefix cache
            started += len(batch)
            async for event in collect(pool, on_done, stream_candidates=o.stream_candidates, confidence=weighted,
                                       keep=keep if o.deepconf_warmup else None):
                yield event
            if o.deepconf_warmup and threshold is None:
                warm = [c.confidence.lowest for c in pool.finished() if not c.aborted]
                threshold = scoring.percentile(warm, 1.0 - o.deepconf_keep) if warm else None
    finally:
        await pool.fan.aclose()
    winner = _pick_by_vote(pool, tally, weighted)
    for event in replay(ctx, winner):
        yield event
    votes = {k: tally.counts[k] for k in tally.ranked(weighted)}
    yield ChoiceDone(ctx.choice, winner.finish_reason or "stop", SelfConsistencyTrace(
        plan.strategy, o.samples, len(pool.candidates), winner.index, pool.traces(), votes, stopped, winner.key,
        _saved(pool, o.samples), threshold,
        sum(c.filtered for c in pool.candidates.values()) if o.deepconf_warmup else None), winner.stop_sequence)


def _saved(pool: Pool, samples: int) -> int:
    """Tokens early stopping did not spend: never-started candidates at the mean
    length of the finished ones, plus what aborted ones would have added."""
    done = [c for c in pool.finished() if not c.aborted]
    if not done:
        return 0
    mean = sum(c.tokens for c in done) / len(done)
    unstarted = samples - len(pool.candidates)
    aborted = sum(max(0.0, mean - c.tokens) for c in pool.candidates.values() if c.aborted)
    return round(unstarted * mean + aborted)


def _pick_by_vote(pool: Pool, tally: Tally, weighted: bool) -> Candidate:
    done = sorted((c for c in pool.finished() if not c.filtered), key=lambda c: c.index)
    if not done:
        raise RuntimeError("no candidate finished")
    lead = tally.leader(weighted)
    backers = [c for c in done if c.key == lead] or done
    return max(backers, key=lambda c: (c.score if c.score is not None else 0.0, -c.index))


STRATEGY = Strategy(
    name="self_consistency", run=run, read=read, keys={**KEYS, **tool_use.KEYS, "deepconf": False}, section="parallel",
    config=ParallelConfig, weight=lambda plan: plan.options.samples,  # type: ignore[attr-defined]
    weight_param="reasoning.samples", formats=True, thinks=lambda keys: keys.get("tools") is not None,
    needs_code=lambda plan: plan.options.code is not None)  # type: ignore[attr-defined]
