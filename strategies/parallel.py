"""Parallel test-time compute: ``self_consistency`` and ``best_of_n``.

Candidates are whole ``single`` runs (thinking, then answer) with their own
seeds, submitted to the engine together so it batches them and shares the
prompt's KV cache; each gets an equal share of ``budget_tokens``.

- ``self_consistency`` (Wang et al. 2022, arXiv:2203.11171): extract each
  candidate's final answer, vote (majority or confidence-weighted), return the
  winner's thinking and answer. With ``early_stop`` it samples in windows and
  stops, aborting the candidates still running, by ESC (Li et al. 2024), by
  Adaptive-Consistency (Aggarwal et al. 2023) or as soon as the leader cannot
  be overtaken.
- ``best_of_n``: score every candidate (``confidence``: DeepConf lowest group
  confidence; ``self_judge``: the model grades each answer) and keep the best.

While candidates run, the client gets progress events; with
``stream_candidates`` every candidate's thinking streams live, tagged.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from . import scoring
from .answers import answer_key
from .context import RunContext
from .engine import TokenLogprob
from .events import Answer, ChoiceDone, Event, Progress, Thinking
from .fanout import FanOut
from .plan import Plan
from .single import single
from .voting import Tally, should_stop


@dataclass
class Candidate:
    index: int
    events: list[Event] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    answer: str = ""
    finish_reason: str | None = None
    trace: dict = field(default_factory=dict)
    key: str | None = None
    score: float | None = None
    aborted: bool = False
    tokens: int = 0
    # Its stream ended (FanOut's end marker): only then is it counted and voted on.
    done: bool = False

    def feed(self, event: Event) -> None:
        if isinstance(event, ChoiceDone):
            self.finish_reason, self.trace = event.finish_reason, event.trace
            return
        self.events.append(event)
        if isinstance(event, Answer):
            self.answer += event.text
        if getattr(event, "logprobs", None):
            self.logprobs.extend(event.logprobs)  # type: ignore[union-attr]

    def summary(self) -> dict[str, object]:
        return {"index": self.index, "answer": self.key, "score": self.score, "tokens": self.tokens,
                "finish_reason": self.finish_reason, "aborted": self.aborted}


class Pool:
    """The candidates of one choice, running on one FanOut."""

    def __init__(self, ctx: RunContext, plan: Plan, logprobs: int | None) -> None:
        self.ctx, self.logprobs = ctx, logprobs
        self.plan = replace(plan, strategy="single")
        # self_judge then spends one token per candidate: keep it inside budget_tokens.
        judges = plan.samples if plan.strategy == "best_of_n" and plan.scorer == "self_judge" else 0
        self.share = max(0, plan.budget_tokens - judges) // plan.samples if plan.budget_tokens else None
        self.fan = FanOut()
        self.candidates: dict[int, Candidate] = {}
        self.ledgers: dict[int, object] = {}
        self.pending: list[int] = []
        # Priming only pays when the prompt fills at least one KV block: a shorter
        # one is never cached, and starting apart would only add latency (and,
        # on CPU kernels, batch-dependent numerics between candidates).
        self.primed = not plan.share_prefix or len(ctx.prompt_ids) < ctx.engine.info.kv_block_size

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
        self.fan.start(k, single(cctx, self.plan))

    async def abort_running(self) -> None:
        for k in list(self.fan.running):
            await self.fan.cancel(k)
            self.candidates[k].aborted = True
            self.candidates[k].tokens = self.ledgers[k].generated  # type: ignore[attr-defined]

    def finished(self) -> list[Candidate]:
        # By end marker, as ``_collect`` counts votes: a ChoiceDone already fed for a
        # candidate whose end is still queued must not shrink the samples left.
        return [c for c in self.candidates.values() if c.done]


def _logprobs_needed(ctx: RunContext, plan: Plan) -> int | None:
    wants = plan.vote == "weighted" or (plan.strategy == "best_of_n" and plan.scorer in (None, "confidence"))
    return max(ctx.sampling.logprobs or 0, scoring.CONFIDENCE_TOP_K) if wants else ctx.sampling.logprobs


async def _collect(pool: Pool, plan: Plan, on_done) -> AsyncIterator[Event]:
    """Drain the pool's events; ``on_done(candidate)`` returns True to stop early."""
    ctx = pool.ctx
    async for k, event, done in pool.fan.events():
        if not pool.primed:
            pool.release()  # the prompt is computed and cached: start the others
        cand = pool.candidates[k]
        if not done:
            cand.feed(event)
            if plan.stream_candidates and isinstance(event, Thinking) and event.text:
                yield Thinking(ctx.choice, event.text, candidate=k)
            continue
        cand.done = True
        cand.tokens = pool.ledgers[k].generated  # type: ignore[attr-defined]
        cand.key = answer_key(cand.answer)
        if plan.vote == "weighted" or plan.strategy == "best_of_n":
            cand.score = scoring.lowest_group_confidence(cand.logprobs)
        stop = on_done(cand)
        yield Progress(ctx.choice, {"candidates_finished": len(pool.finished()), "of": plan.samples,
                                    "candidate": k, "answer": cand.key})
        if stop:
            await pool.abort_running()
            return


def _replay(ctx: RunContext, winner: Candidate) -> list[Event]:
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


def _trace(plan: Plan, pool: Pool, winner: Candidate, **extra: object) -> dict[str, object]:
    cands = sorted(pool.candidates.values(), key=lambda c: c.index)
    return {"strategy": plan.strategy, "samples": plan.samples, "started": len(cands),
            "selected": winner.index, "candidates": [c.summary() for c in cands], **extra}


async def self_consistency(ctx: RunContext, plan: Plan) -> AsyncIterator[Event]:
    pool = Pool(ctx, plan, _logprobs_needed(ctx, plan))
    window = plan.window if plan.early_stop and plan.window > 0 else plan.samples
    tally, weighted = Tally(), plan.vote == "weighted"
    state = {"stopped": False, "window": []}

    def on_done(cand: Candidate) -> bool:
        tally.add(cand.key, cand.score if weighted and cand.score is not None else 1.0, cand.index)
        state["window"].append(cand.key)
        if not plan.early_stop:
            return False
        left = plan.samples - len(pool.finished())
        # ESC looks at a window once all of it has finished.
        keys = state["window"] if not pool.fan.running else []
        # Stopping when nothing is left to sample saves nothing: not an early stop.
        state["stopped"] = left > 0 and should_stop(plan.stop_rule, tally, keys, left, plan.stop_threshold)
        return state["stopped"]

    try:
        started = 0
        while started < plan.samples and not state["stopped"]:
            state["window"] = []
            batch = list(range(started, min(plan.samples, started + window)))
            pool.start_all(batch)  # some may start a moment later, from the prefix cache
            started += len(batch)
            async for event in _collect(pool, plan, on_done):
                yield event
    finally:
        await pool.fan.aclose()
    winner = _pick_by_vote(pool, tally, weighted)
    for event in _replay(ctx, winner):
        yield event
    votes = {k: tally.counts[k] for k in tally.ranked(weighted)}
    yield ChoiceDone(ctx.choice, winner.finish_reason or "stop",
                     _trace(plan, pool, winner, votes=votes, early_stopped=state["stopped"],
                            answer=winner.key, tokens_saved_estimate=_saved(pool, plan)))


def _saved(pool: Pool, plan: Plan) -> int:
    """Tokens early stopping did not spend: never-started candidates at the mean
    length of the finished ones, plus what aborted ones would have added."""
    done = [c for c in pool.finished() if not c.aborted]
    if not done:
        return 0
    mean = sum(c.tokens for c in done) / len(done)
    unstarted = plan.samples - len(pool.candidates)
    aborted = sum(max(0.0, mean - c.tokens) for c in pool.candidates.values() if c.aborted)
    return round(unstarted * mean + aborted)


def _pick_by_vote(pool: Pool, tally: Tally, weighted: bool) -> Candidate:
    done = sorted(pool.finished(), key=lambda c: c.index)
    if not done:
        raise RuntimeError("no candidate finished")
    lead = tally.leader(weighted)
    backers = [c for c in done if c.key == lead] or done
    return max(backers, key=lambda c: (c.score if c.score is not None else 0.0, -c.index))


async def best_of_n(ctx: RunContext, plan: Plan) -> AsyncIterator[Event]:
    pool = Pool(ctx, plan, _logprobs_needed(ctx, plan))
    try:
        pool.start_all(list(range(plan.samples)))
        async for event in _collect(pool, plan, lambda cand: False):
            yield event
    finally:
        await pool.fan.aclose()
    done = sorted(pool.finished(), key=lambda c: c.index)
    if not done:
        raise RuntimeError("no candidate finished")
    if plan.scorer == "self_judge":
        async for event in _judge_all(ctx, plan, done):
            yield event
    winner = max(done, key=lambda c: (c.score if c.score is not None else float("-inf"), -c.index))
    for event in _replay(ctx, winner):
        yield event
    yield ChoiceDone(ctx.choice, winner.finish_reason or "stop",
                     _trace(plan, pool, winner, scorer=plan.scorer or "confidence"))


async def _judge_all(ctx: RunContext, plan: Plan, done: list[Candidate]) -> AsyncIterator[Event]:
    """Every judge request at once; each candidate's score is P(its answer is correct)."""
    fan = FanOut()

    async def one(c: Candidate):
        score, _ = await scoring.judge(ctx, c.answer, plan.judge_question, c.index)
        c.score = score
        yield c.index

    try:
        for c in done:
            fan.start(c.index, one(c))
        async for k, _, finished in fan.events():
            if finished:
                yield Progress(ctx.choice, {"judged": k, "score": pool_score(done, k)})
    finally:
        await fan.aclose()


def pool_score(done: list[Candidate], k: object) -> float | None:
    return next((c.score for c in done if c.index == k), None)
