"""Strategy ``auto``: pick strategy and budget per prompt from its estimated
difficulty — compute-optimal test-time scaling (Snell et al. 2024,
arXiv:2408.03314), with difficulty estimated from a cheap probe instead of
an oracle or a verifier.

The probe samples a few short answers at once (no thinking); their agreement
on the extracted final answer estimates difficulty: all agree -> ``easy``, a
majority -> ``medium``, otherwise ``hard``. The plan for each difficulty comes
from configs/auto.toml, each level planned like a client's ``reasoning``
object; it runs with what is left of ``budget_tokens`` after the probe. The
trace wraps the trace of the plan that ran and says what the probe saw.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .candidates import Pool, collect
from .context import RunContext
from .descriptor import OptionSource, Strategy
from .events import ChoiceDone, Event
from .plan import Plan
from .trace import CandidateTrace, ThinkingTrace, Trace, wrapped
from .voting import Tally

LEVELS = ("easy", "medium", "hard")


class AutoConfig(BaseModel):
    """configs/auto.toml: the probe and the difficulty -> plan table."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    probe_samples: int = Field(ge=2, le=16)
    probe_tokens: int = Field(ge=1)
    easy_agreement: float = Field(gt=0, le=1)
    medium_agreement: float = Field(gt=0, le=1)
    # The probe's first sample computes the prompt; the others read it from the cache.
    share_prefix: bool
    levels: dict[Literal["easy", "medium", "hard"], dict[str, Any]]

    @model_validator(mode="after")
    def _complete(self) -> AutoConfig:
        if set(self.levels) != set(LEVELS):
            raise ValueError("auto levels must be easy, medium and hard")
        if any(row.get("strategy") == "auto" for row in self.levels.values()):
            raise ValueError("an auto level cannot be auto")
        return self


@dataclass(frozen=True)
class AutoOptions:
    probe_samples: int
    probe_tokens: int
    easy_agreement: float
    medium_agreement: float
    share_prefix: bool
    levels: tuple[tuple[str, Plan], ...]
    # The most sequences any level runs at once (admission weighs the heaviest).
    level_weight: int

    def public(self) -> dict[str, object]:
        return {"probe_samples": self.probe_samples, "probe_tokens": self.probe_tokens,
                "easy_agreement": self.easy_agreement, "medium_agreement": self.medium_agreement,
                "auto": {level: plan.public() for level, plan in self.levels}}


@dataclass(frozen=True)
class AutoExplain:
    difficulty: str
    probe_agreement: float
    probe_votes: dict[str, int]
    probe_tokens: int
    chosen: dict[str, object]


@dataclass(frozen=True)
class AutoTrace(Trace):
    # The trace of the plan that ran; its keys appear beside these in the JSON.
    inner: Trace = wrapped()
    auto: AutoExplain
    ran: str
    strategy: str = "auto"

    def thinking_phases(self) -> tuple[ThinkingTrace, ...]:
        return self.inner.thinking_phases()

    def candidate_traces(self) -> tuple[CandidateTrace, ...]:
        return self.inner.candidate_traces()

    def early_stop_savings(self) -> int | None:
        return self.inner.early_stop_savings()


def read(src: OptionSource) -> AutoOptions:
    cfg: AutoConfig = src.config
    assert src.plan_row is not None and src.weigh is not None
    levels = tuple((level, src.plan_row(cfg.levels[level])) for level in LEVELS)
    return AutoOptions(cfg.probe_samples, cfg.probe_tokens, cfg.easy_agreement, cfg.medium_agreement,
                       cfg.share_prefix, levels, max(src.weigh(plan) for _, plan in levels))


def difficulty(agreement: float, easy: float, medium: float) -> str:
    if agreement >= easy:
        return "easy"
    return "medium" if agreement >= medium else "hard"


async def _probe(ctx: RunContext, plan: Plan, o: AutoOptions) -> tuple[float, dict[str, int]]:
    # Inside budget_tokens, and leaving the chosen plan at least one token.
    probe = replace(plan, thinking=False, max_tokens=o.probe_tokens,
                    budget_tokens=None if plan.budget_tokens is None else max(1, plan.budget_tokens - 1))
    # Pool tags its candidates s0, s1... (a tag here would be replaced): its own
    # request id keeps the probe's engine ids apart from a self_consistency plan's.
    # The probe samples as the chosen plan will (the client's distribution and stops:
    # it measures agreement under them) but without min_tokens: its answers are short
    # by design, and padding them past their end would bury what the vote extracts.
    pctx = replace(ctx, request_id=f"{ctx.request_id}-probe", sampling=replace(ctx.sampling, min_tokens=0))
    pool = Pool(pctx, probe, o.probe_samples, share_prefix=o.share_prefix, logprobs=None)
    tally = Tally()
    try:
        pool.start_all(list(range(o.probe_samples)))
        async for _ in collect(pool, lambda c: tally.add(c.key, 1.0, c.index) or False, stream_candidates=False,
                               confidence=False):
            pass
    finally:
        await pool.fan.aclose()
    first, _ = tally.top_two()
    return first / max(1, o.probe_samples), dict(tally.counts)


async def run(ctx: RunContext, plan: Plan) -> AsyncIterator[Event]:
    o: AutoOptions = plan.options  # type: ignore[assignment]
    assert ctx.dispatch is not None
    agreement, votes = await _probe(ctx, plan, o)
    level = difficulty(agreement, o.easy_agreement, o.medium_agreement)
    chosen = dict(o.levels)[level]
    spent = ctx.ledger.generated
    budget = None if plan.budget_tokens is None else max(1, plan.budget_tokens - spent)
    chosen = replace(chosen, budget_tokens=budget if chosen.budget_tokens is None
                     else min(chosen.budget_tokens, budget or chosen.budget_tokens))
    explain = AutoExplain(level, round(agreement, 3), votes, spent, chosen.public())
    # The chosen plan counts its own tokens against its max_tokens; the choice's
    # ledger still sees every token (probe included) for usage and budget.
    sub = replace(ctx, ledger=ctx.ledger.child(chosen.budget_tokens))
    async with aclosing(ctx.dispatch(sub, chosen)) as events:
        async for event in events:
            if isinstance(event, ChoiceDone):
                event = ChoiceDone(event.choice, event.finish_reason,
                                   AutoTrace(event.trace, explain, event.trace.strategy), event.stop_sequence)
            yield event


STRATEGY = Strategy(name="auto", run=run, read=read, section="auto", config=AutoConfig,
                    weight=lambda plan: max(plan.options.probe_samples,  # type: ignore[attr-defined]
                                            plan.options.level_weight))  # type: ignore[attr-defined]
