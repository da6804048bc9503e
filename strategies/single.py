"""Strategy ``single``: think (when the plan thinks), then answer.

With thinking off it is one engine request. With thinking on, the thinking
phase (strategies/thinking.py) runs first and the answer continues from its
exact token ids, so the prefix cache covers prompt plus thinking and the
thinking budget is exact. s1's controls (a minimum with "Wait", a wrap-up at
the cap) apply whenever the plan sets them; ``budget_forcing`` is this same
pipeline with presets that set them. With ``reasoning.probe`` the thinking is
probed for its answer as it goes and closed once the probes settle
(Dynasor-CoT / DEER, strategies/probe.py).
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from .context import RunContext
from .descriptor import OptionSource, Strategy
from .events import Answer, ChoiceDone, Event
from .generation import Generation
from .plan import Plan
from .probe import ProbeConfig, ProbeOptions
from .probe import read as read_probe
from .thinking import Think
from .trace import AnswerTrace, ThinkingTrace, Trace, optional


@dataclass(frozen=True)
class SingleOptions:
    probe: ProbeOptions | None = None

    def public(self) -> dict[str, object]:
        return self.probe.public() if self.probe is not None else {}


def read(src: OptionSource) -> SingleOptions:
    return SingleOptions(read_probe(src, src.config))


@dataclass(frozen=True)
class SingleTrace(Trace):
    strategy: str
    thinking: ThinkingTrace | None = optional()
    answer: AnswerTrace | None = optional()


async def run(ctx: RunContext, plan: Plan) -> AsyncIterator[Event]:
    thinking: ThinkingTrace | None = None
    prompt = ctx.prompt_ids
    held: dict[str, object] = {}
    o: SingleOptions = plan.options  # type: ignore[assignment]
    if plan.thinking:
        think = Think(ctx, plan, o.probe)
        async with think as events:
            async for event in events:
                yield event
        prompt, thinking = think.result.ids, think.result.trace
        if think.result.answer_prefix:  # a tool call begun while thinking continues here
            yield Answer(ctx.choice, think.result.answer_prefix)
        if think.result.call_opened:  # ... or is written again, held to the calls' constraint
            held = {"structured": ctx.output.call_constraint}
    room = ctx.room(len(prompt), plan.max_tokens - ctx.ledger.generated)
    if room <= 0:
        yield ChoiceDone(ctx.choice, "length", SingleTrace(plan.strategy, thinking))
        return
    answer = Generation(ctx, prompt, ctx.phase_sampling(max_tokens=room, **held), "answer", False)
    async with answer as events:  # closing us aborts the engine request now
        async for event in events:
            yield event
    done = answer.result
    reason = done.finish_reason or "stop"
    yield ChoiceDone(ctx.choice, reason,
                     SingleTrace(plan.strategy, thinking, AnswerTrace(len(done.token_ids), done.finish_reason)),
                     done.stop_sequence(ctx.sampling.stop))


# ``reasoning`` keys of single and budget_forcing, with their "off" values.
KEYS = {"probe": False}

STRATEGY = Strategy(name="single", run=run, read=read, keys=KEYS, section="probe", config=ProbeConfig,
                    streams_tokens=True, formats=True)
