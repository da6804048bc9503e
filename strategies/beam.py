"""Strategy ``beam_search``: step-level search with a process scorer.

Search-and-learn style (Snell et al. 2024, arXiv:2408.03314; Beeching et al.
2024, "Scaling test-time compute with open models"): a solution grows one step
at a time (a step ends at ``step_delimiter``, a blank line by default). Each
live beam is expanded ``expansions`` times; every expansion of every beam goes
to the engine together; a process scorer scores each partial solution
(``self_judge``: the model's probability that the steps so far are correct, in
a follow-up turn; a PRM on GPU deployments) and the best ``beam_width``
partial solutions survive. It stops at ``max_steps`` or when every beam has
finished. With ``dvts`` (diverse verifier tree search, Beeching et al. 2024)
the ``beam_width`` beams grow as independent subtrees: each keeps only its own
best continuation, so one strong early step cannot take over every beam.
Expansions continue the parent's exact token ids, so the prefix cache covers
the shared steps.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from . import scoring
from .context import RunContext
from .events import Answer, ChoiceDone, Event, Progress
from .fanout import FanOut
from .generation import Generation
from .plan import Plan


@dataclass(frozen=True)
class Beam:
    ids: tuple[int, ...]
    text: str = ""
    tokens: int = 0
    done: bool = False
    score: float = 0.0
    finish_reason: str = "stop"
    tree: int = 0  # the subtree (DVTS); always 0 for plain beam search


async def _expand(ctx: RunContext, plan: Plan, beam: Beam, name: str, room: int, k: int) -> AsyncIterator[Beam]:
    ctx = ctx.candidate(k, None)  # its own seed: expansions of one beam must differ
    sampling = ctx.phase_sampling(max_tokens=room, stop=(plan.step_delimiter,), logprobs=None)
    gen = Generation(ctx, beam.ids, sampling, name, False)
    async for _ in gen.run():
        pass
    eos = gen.finish_reason == "stop" and gen.stop_reason is None
    tokens = beam.tokens + len(gen.token_ids)
    done = eos or tokens >= plan.max_tokens or (gen.finish_reason == "length" and room < plan.step_tokens)
    # vLLM drops the stop string from the text but not from the ids: put it back.
    text = beam.text + gen.answer + (plan.step_delimiter if gen.stop_reason == plan.step_delimiter else "")
    yield Beam(gen.continuation_ids(drop=ctx.engine.info.eos_token_ids), text, tokens, done, 0.0,
               gen.finish_reason or "stop", beam.tree)


async def _score(ctx: RunContext, plan: Plan, beam: Beam, name: str) -> AsyncIterator[Beam]:
    score, _ = await scoring.judge(ctx, beam.text, plan.judge_question, name)
    yield Beam(beam.ids, beam.text, beam.tokens, beam.done, score, beam.finish_reason, beam.tree)


async def _all(ctx: RunContext, jobs: dict[str, AsyncIterator[Beam]]) -> dict[str, Beam]:
    """Run every job at once (one engine batch); their single results by key."""
    fan, out = FanOut(), {}
    try:
        for key, job in jobs.items():
            fan.start(key, job)
        async for key, beam, done in fan.events():
            if not done:
                out[key] = beam
    finally:
        await fan.aclose()
    return out


def _select(pool: list[Beam], plan: Plan) -> list[Beam]:
    """The top ``beam_width`` by score; with DVTS, the best of each subtree."""
    ranked = sorted(pool, key=lambda b: -b.score)
    if not plan.dvts:
        return ranked[: plan.beam_width]
    best: dict[int, Beam] = {}
    for b in ranked:
        best.setdefault(b.tree, b)
    return sorted(best.values(), key=lambda b: -b.score)


async def beam_search(ctx: RunContext, plan: Plan) -> AsyncIterator[Event]:
    beams = [Beam(ctx.prompt_ids, tree=t) for t in range(plan.beam_width if plan.dvts else 1)]
    steps: list[dict] = []
    for step in range(plan.max_steps):
        live = [b for b in beams if not b.done]
        if not live:
            break
        n = len(live) * plan.expansions
        # Every expansion is then judged with one generated token: keep that inside budget_tokens too.
        room = (ctx.ledger.cap((plan.step_tokens + 1) * n) - n) // n
        room = min(room, plan.step_tokens, ctx.engine.info.max_model_len - max(len(b.ids) for b in live) - 1)
        if room <= 0:
            break
        # min(): a beam never grows past max_tokens.
        jobs = {f"s{step}b{i}e{e}": _expand(ctx, plan, b, f"s{step}b{i}e{e}", min(room, plan.max_tokens - b.tokens),
                                            (step * len(live) + i) * plan.expansions + e)
                for i, b in enumerate(live) for e in range(plan.expansions)}
        grown = await _all(ctx, jobs)
        scored = await _all(ctx, {k: _score(ctx, plan, b, f"{k}j") for k, b in grown.items()})
        pool = [b for b in beams if b.done] + list(scored.values())
        beams = _select(pool, plan)
        steps.append({"step": step, "expanded": len(grown), "kept": len(beams),
                      "scores": [round(b.score, 4) for b in beams]})
        yield Progress(ctx.choice, {"step": step, "beams": len(beams), "best": round(beams[0].score, 4)})
    best = max(beams, key=lambda b: (b.done, b.score))
    yield Answer(ctx.choice, best.text.rstrip())
    yield ChoiceDone(ctx.choice, best.finish_reason if best.done else "length",
                     {"strategy": "beam_search", "beam_width": plan.beam_width, "expansions": plan.expansions,
                      "dvts": plan.dvts,
                      "steps": steps, "selected_score": best.score, "finished": best.done})
