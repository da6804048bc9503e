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
from dataclasses import asdict, dataclass, replace

from pydantic import BaseModel, ConfigDict, Field

from . import scoring
from .context import RunContext
from .descriptor import ANY, OptionSource, Strategy
from .events import Answer, ChoiceDone, Event, Progress
from .fanout import all_of
from .generation import Generation
from .plan import Plan
from .trace import Trace


class BeamConfig(BaseModel):
    """configs/server.toml ``[beam]``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    beam_width: int = Field(ge=1, le=16)
    expansions: int = Field(ge=1, le=8)
    max_steps: int = Field(ge=1, le=64)
    step_tokens: int = Field(ge=1)
    step_delimiter: str = Field(min_length=1)
    dvts: bool
    process_question: str


@dataclass(frozen=True)
class BeamOptions:
    beam_width: int
    max_steps: int
    expansions: int
    step_tokens: int
    step_delimiter: str
    dvts: bool
    judge_question: str

    def public(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("judge_question")
        return data


@dataclass(frozen=True)
class StepTrace:
    step: int
    expanded: int
    kept: int
    scores: tuple[float, ...]


@dataclass(frozen=True)
class BeamTrace(Trace):
    strategy: str
    beam_width: int
    expansions: int
    dvts: bool
    steps: tuple[StepTrace, ...]
    selected_score: float
    finished: bool


def read(src: OptionSource) -> BeamOptions:
    cfg: BeamConfig = src.config
    return BeamOptions(beam_width=src.get("beam_width", cfg.beam_width), max_steps=src.get("max_steps", cfg.max_steps),
                       expansions=cfg.expansions, step_tokens=cfg.step_tokens, step_delimiter=cfg.step_delimiter,
                       dvts=src.get("dvts", cfg.dvts), judge_question=cfg.process_question)


@dataclass(frozen=True)
class Beam:
    ids: tuple[int, ...]
    text: str = ""
    tokens: int = 0
    done: bool = False
    score: float = 0.0
    finish_reason: str = "stop"
    tree: int = 0  # the subtree (DVTS); always 0 for plain beam search
    stop_sequence: str | None = None  # the client's stop string that ended it


async def _expand(ctx: RunContext, plan: Plan, beam: Beam, name: str, room: int, k: int) -> Beam:
    o: BeamOptions = plan.options  # type: ignore[assignment]
    ctx = ctx.candidate(k, None)  # its own seed: expansions of one beam must differ
    client = ctx.sampling
    # Steps are the answer: the client's stop strings and ids end the beam as eos
    # does, and min_tokens counts over the whole answer, so a step owes what the
    # beam has not generated yet.
    sampling = ctx.phase_sampling(max_tokens=room, stop=tuple(dict.fromkeys((o.step_delimiter, *client.stop))),
                                  logprobs=None, min_tokens=max(0, client.min_tokens - beam.tokens))
    gen = await Generation(ctx, beam.ids, sampling, name, False).drain()
    step_end = gen.stop_reason == o.step_delimiter and o.step_delimiter not in client.stop
    ended = gen.finish_reason == "stop" and not step_end  # eos, or a stop of the client's
    tokens = beam.tokens + len(gen.token_ids)
    done = ended or tokens >= plan.max_tokens or (gen.finish_reason == "length" and room < o.step_tokens)
    # vLLM drops the stop string from the text but not from the ids: put a step's back.
    text = beam.text + gen.answer + (o.step_delimiter if step_end else "")
    return Beam(gen.continuation_ids(drop=ctx.engine.info.eos_token_ids), text, tokens, done, 0.0,
                gen.finish_reason or "stop", beam.tree, gen.stop_sequence(client.stop))


async def _score(ctx: RunContext, question: str, beam: Beam, name: str) -> Beam:
    return replace(beam, score=await scoring.judge(ctx, beam.text, question, name))


def _select(pool: list[Beam], o: BeamOptions) -> list[Beam]:
    """The top ``beam_width`` by score; with DVTS, the best of each subtree."""
    ranked = sorted(pool, key=lambda b: -b.score)
    if not o.dvts:
        return ranked[: o.beam_width]
    best: dict[int, Beam] = {}
    for b in ranked:
        best.setdefault(b.tree, b)
    return sorted(best.values(), key=lambda b: -b.score)


async def run(ctx: RunContext, plan: Plan) -> AsyncIterator[Event]:
    o: BeamOptions = plan.options  # type: ignore[assignment]
    beams = [Beam(ctx.prompt_ids, tree=t) for t in range(o.beam_width if o.dvts else 1)]
    steps: list[StepTrace] = []
    for step in range(o.max_steps):
        live = [b for b in beams if not b.done]
        if not live:
            break
        n = len(live) * o.expansions
        # Every expansion is then judged with one generated token: keep that inside budget_tokens too.
        share = (ctx.ledger.cap((o.step_tokens + 1) * n) - n) // n
        room = ctx.room(max(len(b.ids) for b in live), min(share, o.step_tokens))
        if room <= 0:
            break
        # min(): a beam never grows past max_tokens.
        grown = await all_of({f"s{step}b{i}e{e}": _expand(ctx, plan, b, f"s{step}b{i}e{e}",
                                                        min(room, plan.max_tokens - b.tokens),
                                                        (step * len(live) + i) * o.expansions + e)
                            for i, b in enumerate(live) for e in range(o.expansions)})
        scored = await all_of({k: _score(ctx, o.judge_question, b, f"{k}j") for k, b in grown.items()})
        beams = _select([b for b in beams if b.done] + list(scored.values()), o)
        steps.append(StepTrace(step, len(grown), len(beams), tuple(round(b.score, 4) for b in beams)))
        yield Progress(ctx.choice, {"step": step, "beams": len(beams), "best": round(beams[0].score, 4)})
    best = max(beams, key=lambda b: (b.done, b.score))
    yield Answer(ctx.choice, best.text.rstrip())
    yield ChoiceDone(ctx.choice, best.finish_reason if best.done else "length", BeamTrace(
        plan.strategy, o.beam_width, o.expansions, o.dvts, tuple(steps), best.score, best.done),
        best.stop_sequence if best.done else None)


STRATEGY = Strategy(
    name="beam_search", run=run, read=read, keys={"beam_width": ANY, "max_steps": ANY, "dvts": ANY},
    section="beam", config=BeamConfig, weight_param="reasoning.beam_width",
    weight=lambda plan: plan.options.beam_width * plan.options.expansions)  # type: ignore[attr-defined]
