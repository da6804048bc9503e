"""Strategy ``best_of_n``: ``samples`` candidates at once (strategies/candidates.py),
each scored, the best kept.

Scorers (strategies/scoring.py): ``confidence``, DeepConf's lowest group
confidence over the candidate's token log-probabilities (Fu et al. 2025,
arXiv:2508.15260); ``self_judge``, the model's own P("Yes") that its answer is
correct, every judge request sent together. Ties go to the lowest-numbered
candidate.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass

from . import scoring
from .candidates import KEYS, Candidate, ParallelConfig, Pool, collect, logprobs_needed, replay
from .context import RunContext
from .descriptor import OptionSource, Strategy
from .errors import PlanError
from .events import ChoiceDone, Event, Progress
from .fanout import all_of
from .plan import Plan
from .trace import CandidateTrace, Trace


@dataclass(frozen=True)
class BestOfNOptions:
    samples: int
    scorer: str  # "confidence" | "self_judge"
    judge_question: str
    share_prefix: bool
    stream_candidates: bool

    def public(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("judge_question")
        return data


@dataclass(frozen=True)
class BestOfNTrace(Trace):
    strategy: str
    samples: int
    started: int
    selected: int
    candidates: tuple[CandidateTrace, ...]
    scorer: str

    def candidate_traces(self) -> tuple[CandidateTrace, ...]:
        return self.candidates


def read(src: OptionSource) -> BestOfNOptions:
    cfg: ParallelConfig = src.config
    if src.get("early_stop"):
        raise PlanError("early_stop applies to self_consistency; best_of_n scores every candidate",
                        "reasoning.early_stop")
    scorer = src.get("scorer") or cfg.scorer
    scoring.check_scorer(scorer)
    return BestOfNOptions(samples=src.get("samples") or cfg.samples, scorer=scorer,
                          judge_question=cfg.judge_question, share_prefix=cfg.share_prefix,
                          stream_candidates=bool(src.get("stream_candidates", False)))


async def run(ctx: RunContext, plan: Plan) -> AsyncIterator[Event]:
    o: BestOfNOptions = plan.options  # type: ignore[assignment]
    judged = o.scorer == "self_judge"
    # A judge spends one token per candidate: keep it inside budget_tokens.
    pool = Pool(ctx, plan, o.samples, share_prefix=o.share_prefix, logprobs=logprobs_needed(ctx, not judged),
                reserve=o.samples if judged else 0)
    try:
        pool.start_all(list(range(o.samples)))
        async for event in collect(pool, lambda cand: False, stream_candidates=o.stream_candidates,
                                   confidence=True):
            yield event
    finally:
        await pool.fan.aclose()
    done = sorted(pool.finished(), key=lambda c: c.index)
    if not done:
        raise RuntimeError("no candidate finished")
    if judged:
        await _judge_all(ctx, o.judge_question, done)
        for c in done:
            yield Progress(ctx.choice, {"judged": c.index, "score": c.score})
    # With an answer format (JSON, tool calls), a well-formed candidate beats any malformed one.
    winner = max(done, key=lambda c: (ctx.output.valid(c.answer), c.score if c.score is not None else float("-inf"),
                                      -c.index))
    for event in replay(ctx, winner):
        yield event
    yield ChoiceDone(ctx.choice, winner.finish_reason or "stop", BestOfNTrace(
        plan.strategy, o.samples, len(pool.candidates), winner.index, pool.traces(), o.scorer), winner.stop_sequence)


async def _judge_all(ctx: RunContext, question: str, done: list[Candidate]) -> None:
    """Every judge request at once; each candidate's score is P(its answer is correct)."""
    scores = await all_of({c.index: scoring.judge(ctx, c.answer, question, c.index) for c in done})
    for c in done:
        c.score = scores[c.index]


STRATEGY = Strategy(
    name="best_of_n", run=run, read=read, keys=KEYS, section="parallel", config=ParallelConfig,
    weight=lambda plan: plan.options.samples, weight_param="reasoning.samples", formats=True)  # type: ignore[attr-defined]
