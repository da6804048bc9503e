"""Parallel candidates: what ``self_consistency``, ``best_of_n`` and ``auto``'s
probe share.

Candidates are whole ``single`` runs (thinking, then answer), or ``tool_use``
runs when the client gave ``reasoning.tools``, with their own
seeds, submitted to the engine together so it batches them and shares the
prompt's KV cache; each gets an equal share of ``budget_tokens``. While they
run, the client gets progress events; with ``stream_candidates`` every
candidate's thinking streams live, tagged with its index.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from . import scoring, single, tool_use
from .context import RunContext
from .engine import TokenLogprob
from .events import Answer, ChoiceDone, Event, Progress, Thinking
from .fanout import FanOut
from .ledger import Ledger
from .plan import Plan
from .tool_use import ToolUseOptions
from .trace import CandidateTrace


class ParallelConfig(BaseModel):
    """configs/server.toml ``[parallel]``: defaults of self_consistency and best_of_n."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    samples: int = Field(ge=1, le=64)
    vote: Literal["majority", "weighted"]
    early_stop: bool
    window: int = Field(ge=1)
    share_prefix: bool
    stop_rule: Literal["esc", "adaptive", "overtake"]
    stop_threshold: float = Field(gt=0.5, lt=1.0)
    scorer: Literal["confidence", "self_judge"]
    judge_question: str
    # DeepConf online (self_consistency's ``deepconf``): candidates run to the end
    # to set the threshold, and the share of traces like them the threshold keeps.
    deepconf_warmup: int = Field(ge=1, le=63)
    deepconf_keep: float = Field(gt=0.0, le=1.0)


# The reasoning keys the parallel strategies read, with their "off" values.
KEYS = {"samples": 1, "scorer": None, "early_stop": False, "stream_candidates": False}


@dataclass
class Candidate:
    index: int
    events: list[Event] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    answer: str = ""
    finish_reason: str | None = None
    stop_sequence: str | None = None
    key: str | None = None
    score: float | None = None
    aborted: bool = False
    tokens: int = 0
    # Its stream ended (FanOut's end marker): only then is it counted and voted on.
    done: bool = False
    # Stopped for low confidence while it ran (DeepConf online): it never votes.
    filtered: bool = False
    confidence: scoring.GroupConfidence = field(default_factory=scoring.GroupConfidence)

    def feed(self, event: Event) -> None:
        if isinstance(event, ChoiceDone):
            self.finish_reason, self.stop_sequence = event.finish_reason, event.stop_sequence
            return
        self.events.append(event)
        if isinstance(event, Answer):
            self.answer += event.text
        if getattr(event, "logprobs", None):
            self.logprobs.extend(event.logprobs)  # type: ignore[union-attr]
            self.confidence.feed(event.logprobs)  # type: ignore[union-attr]

    def trace(self) -> CandidateTrace:
        return CandidateTrace(self.index, self.key, self.score, self.tokens, self.finish_reason, self.aborted,
                              True if self.filtered else None)


class Pool:
    """The candidates of one choice, running on one FanOut.

    ``reserve`` tokens of ``budget_tokens`` are kept back for work after the
    candidates (a judge's token each); the rest is shared equally.
    """

    def __init__(self, ctx: RunContext, plan: Plan, samples: int, *, share_prefix: bool,
                 logprobs: int | None, reserve: int = 0, code: ToolUseOptions | None = None) -> None:
        self.ctx, self.logprobs, self.samples = ctx, logprobs, samples
        # A candidate is a whole single run, or a whole tool_use run when it may run code.
        if code is None:
            self.plan, self.run = replace(plan, strategy="single", options=single.SingleOptions()), single.run
        else:
            self.plan, self.run = replace(plan, strategy="tool_use", options=code), tool_use.run
        self.share = max(0, plan.budget_tokens - reserve) // samples if plan.budget_tokens else None
        self.fan = FanOut()
        self.candidates: dict[int, Candidate] = {}
        self.ledgers: dict[int, Ledger] = {}
        self.pending: list[int] = []
        # Priming only pays when the prompt fills at least one KV block: a shorter
        # one is never cached, and starting apart would only add latency (and,
        # on CPU kernels, batch-dependent numerics between candidates).
        self.primed = not share_prefix or len(ctx.prompt_ids) < ctx.engine.info.kv_block_size

    def start_all(self, ks: list[int]) -> None:
        """Start candidates ``ks`` so they share the prompt's KV cache.

        Requests that reach vLLM in the same step each compute the prompt: the
        prefix cache only serves blocks already computed. So the first
        candidate starts alone and the rest follow as soon as it has output
        (``release``), reading the prompt from the cache.
        """
        if self.primed:
            for k in ks:
                self.start(k)
            return
        self.start(ks[0])
        self.pending = list(ks[1:])

    def release(self) -> None:
        self.primed = True
        pending, self.pending = self.pending, []
        for k in pending:
            self.start(k)

    def start(self, k: int) -> None:
        cctx = self.ctx.candidate(k, self.share, self.logprobs)
        self.candidates[k] = Candidate(k)
        self.ledgers[k] = cctx.ledger
        self.fan.start(k, self.run(cctx, self.plan))

    async def abort_running(self) -> None:
        for k in list(self.fan.running):
            await self.fan.cancel(k)
            self.candidates[k].aborted = True
            self.candidates[k].tokens = self.ledgers[k].generated

    async def filter(self, k: int) -> None:
        """Stop candidate ``k`` for low confidence: it ends here and never votes."""
        await self.fan.cancel(k)
        cand = self.candidates[k]
        cand.aborted = cand.filtered = cand.done = True
        cand.tokens = self.ledgers[k].generated

    def finished(self) -> list[Candidate]:
        # By end marker, as ``collect`` counts votes: a ChoiceDone already fed for a
        # candidate whose end is still queued must not shrink the samples left.
        return [c for c in self.candidates.values() if c.done]

    def traces(self) -> tuple[CandidateTrace, ...]:
        return tuple(c.trace() for c in sorted(self.candidates.values(), key=lambda c: c.index))


def logprobs_needed(ctx: RunContext, confidence: bool) -> int | None:
    """Top log-probabilities the candidates sample: the client's, or enough for DeepConf."""
    return max(ctx.sampling.logprobs or 0, scoring.CONFIDENCE_TOP_K) if confidence else ctx.sampling.logprobs


async def collect(pool: Pool, on_done: Callable[[Candidate], bool], *, stream_candidates: bool,
                  confidence: bool, keep: Callable[[Candidate], bool] | None = None) -> AsyncIterator[Event]:
    """Drain the pool's events; ``on_done(candidate)`` returns True to stop early.
    With ``confidence`` each finished candidate is scored by DeepConf. ``keep``
    watches running candidates: one it returns False for is stopped at once and
    never votes (DeepConf online's filter)."""
    ctx = pool.ctx
    async for k, event, done in pool.fan.events():
        if not pool.primed:
            pool.release()  # the prompt is computed and cached: start the others
        cand = pool.candidates[k]
        if not done:
            cand.feed(event)
            if stream_candidates and isinstance(event, Thinking) and event.text:
                yield Thinking(ctx.choice, event.text, candidate=k)
            if keep is not None and not keep(cand):
                await pool.filter(k)
                yield Progress(ctx.choice, {"candidates_finished": len(pool.finished()), "of": pool.samples,
                                            "candidate": k, "filtered": True})
            continue
        cand.done = True
        cand.tokens = pool.ledgers[k].generated
        cand.key = ctx.output.key(cand.answer)  # a final answer, canonical JSON, or canonical calls
        if confidence:
            cand.score = scoring.lowest_group_confidence(cand.logprobs)
        stop = on_done(cand)
        yield Progress(ctx.choice, {"candidates_finished": len(pool.finished()), "of": pool.samples,
                                    "candidate": k, "answer": cand.key})
        if stop:
            await pool.abort_running()
            return


def replay(ctx: RunContext, winner: Candidate) -> list[Event]:
    """The winner's events as this choice's, without logprobs the client did not ask for
    (candidates may have sampled more top logprobs, for confidence, than it wants)."""
    k = ctx.sampling.logprobs
    out: list[Event] = []
    for e in winner.events:
        if isinstance(e, Answer):
            lps = None if k is None or e.logprobs is None else tuple(
                TokenLogprob(lp.token, lp.logprob, lp.top[:k]) for lp in e.logprobs)
            out.append(Answer(ctx.choice, e.text, lps))
        elif isinstance(e, Thinking):
            out.append(Thinking(ctx.choice, e.text))
    return out
