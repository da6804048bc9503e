"""Strategy ``revision``: draft, then critique and revise for up to ``rounds``.

Sequential revision (Madaan et al. 2023, "Self-Refine", arXiv:2303.17651; the
sequential half of Snell et al. 2024, arXiv:2408.03314). The model drafts an
answer (thinking first when the plan thinks), is asked in a follow-up turn to
critique it, then to revise it. It stops early when the critique finds no
error or the extracted answer stops changing. Every turn continues the exact
token ids of the conversation so far, so each round re-reads it from the
prefix cache. Critiques and intermediate drafts stream live on the thinking
channel (labelled); the final answer streams as content. Critique tokens count
as reasoning tokens; discarded drafts count as completion tokens. Drafts and
revisions sample as answers (the client's stop strings and ids, ``min_tokens``),
critiques as reasoning (the client's distribution only).
"""
from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from .answers import answer_key
from .context import RunContext
from .descriptor import OptionSource, Strategy
from .events import Answer, ChoiceDone, Event, Thinking
from .generation import Generated, Generation
from .phase import Phase
from .plan import Plan
from .thinking import Think
from .trace import ThinkingTrace, Trace, optional


class RevisionConfig(BaseModel):
    """configs/server.toml ``[revision]``: the prompts are data, not code."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    rounds: int = Field(ge=0, le=16)
    critique_prompt: str
    revise_prompt: str
    # Found in a critique (regex), it means "no error": the rounds stop.
    critique_ok: str


@dataclass(frozen=True)
class RevisionOptions:
    rounds: int
    critique_prompt: str
    revise_prompt: str
    critique_ok: str

    def public(self) -> dict[str, object]:
        return {"rounds": self.rounds}


@dataclass(frozen=True)
class TurnTrace:
    turn: str  # "draft" | "critique" | "revision"
    tokens: int
    finish_reason: str | None
    text: str


@dataclass(frozen=True)
class RevisionTrace(Trace):
    strategy: str
    rounds_run: int
    stopped: str
    turns: tuple[TurnTrace, ...]
    answer: str | None
    thinking: ThinkingTrace | None = optional()


def read(src: OptionSource) -> RevisionOptions:
    cfg: RevisionConfig = src.config
    return RevisionOptions(src.get("rounds", cfg.rounds), cfg.critique_prompt, cfg.revise_prompt, cfg.critique_ok)


class Turn(Phase["Generated | None"]):
    """One model turn; its text streams as thinking under ``label``. None: no room left."""

    def __init__(self, ctx: RunContext, ids: tuple[int, ...], name: str, plan: Plan, label: str,
                 turns: list[TurnTrace]) -> None:
        super().__init__()
        self.ctx, self.ids, self.name, self.plan, self.label, self.turns = ctx, ids, name, plan, label, turns

    async def _run(self) -> AsyncGenerator[Event, None]:
        ctx = self.ctx
        room = ctx.room(len(self.ids), self.plan.max_tokens)
        if room <= 0:
            self._finish(None)
            return
        yield Thinking(ctx.choice, f"\n[{self.label}]\n")
        # A critique is reasoning (no client stop strings or ids, no min_tokens); a
        # draft or a revision may be the answer and samples as one.
        critique = self.label == "critique"
        sampling = (ctx.reasoning_sampling if critique else ctx.phase_sampling)(max_tokens=room, logprobs=None)
        gen = Generation(ctx, self.ids, sampling, self.name, thinking=critique)
        async with gen as events:
            async for e in events:
                if isinstance(e, (Thinking, Answer)) and e.text:
                    yield Thinking(ctx.choice, e.text)
        done = gen.result
        self.turns.append(TurnTrace(self.label, len(done.token_ids), done.finish_reason,
                                    (done.thinking or done.answer)[:2000]))
        self._finish(done)


def _ids(gen: Generated, ctx: RunContext) -> tuple[int, ...]:
    return gen.continuation_ids(drop=ctx.engine.info.eos_token_ids)


async def run(ctx: RunContext, plan: Plan) -> AsyncIterator[Event]:
    o: RevisionOptions = plan.options  # type: ignore[assignment]
    if ctx.followup is None:
        raise ValueError("revision needs the chat template's follow-up turn")
    turns: list[TurnTrace] = []
    ids, thinking = ctx.prompt_ids, None
    if plan.thinking:
        think = Think(ctx, plan)
        async with think as events:
            async for event in events:
                yield event
        ids, thinking = think.result.ids, think.result.trace
    draft = Turn(ctx, ids, "draft", plan, "draft", turns)
    async with draft as events:
        async for event in events:
            yield event
    answer = draft.result
    if answer is None:  # no room for a draft
        yield ChoiceDone(ctx.choice, "length", RevisionTrace(plan.strategy, 0, "budget", (), None, thinking))
        return
    stop_reason = "rounds exhausted"
    for r in range(o.rounds):
        critique = Turn(ctx, _ids(answer, ctx) + ctx.followup(o.critique_prompt), f"critique{r}", plan, "critique",
                        turns)
        async with critique as events:
            async for event in events:
                yield event
        said = critique.result
        if said is None:
            stop_reason = "budget"
            break
        if o.critique_ok and re.search(o.critique_ok, said.thinking + said.answer):
            stop_reason = "critique found no error"
            break
        revise = Turn(ctx, _ids(said, ctx) + ctx.followup(o.revise_prompt), f"revise{r}", plan, "revision", turns)
        async with revise as events:
            async for event in events:
                yield event
        revised = revise.result
        if revised is None:
            stop_reason = "budget"
            break
        stable = answer_key(revised.answer) is not None and answer_key(revised.answer) == answer_key(answer.answer)
        answer = revised
        if stable:
            stop_reason = "answer unchanged"
            break
    yield Answer(ctx.choice, answer.answer)
    rounds_run = sum(1 for t in turns if t.turn == "critique")
    yield ChoiceDone(ctx.choice, answer.finish_reason or "stop", RevisionTrace(
        plan.strategy, rounds_run, stop_reason, tuple(turns), answer_key(answer.answer), thinking),
        answer.stop_sequence(ctx.sampling.stop))


STRATEGY = Strategy(name="revision", run=run, read=read, keys={"rounds": 0}, section="revision",
                    config=RevisionConfig)
