"""Strategies ``single`` and ``budget_forcing``: think, then answer.

With thinking off it is one engine request. With thinking on, the thinking
phase (strategies/thinking.py) runs first and the answer continues from its
exact token ids, so the prefix cache covers prompt plus thinking and the
thinking budget is exact. ``budget_forcing`` is the same pipeline with s1's
controls switched on by its preset (minimum with "Wait", wrap-up at the cap,
nudge); ``single`` honours them too when a client sets them.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from .context import RunContext
from .events import ChoiceDone, Event
from .generation import Generation
from .plan import Plan
from .thinking import Thought, think


async def single(ctx: RunContext, plan: Plan) -> AsyncIterator[Event]:
    thought: Thought | None = None
    prompt = ctx.prompt_ids
    if plan.thinking:
        thought = Thought()
        async with aclosing(think(ctx, plan, thought)) as events:
            async for event in events:
                yield event
        prompt = thought.ids
    room = ctx.ledger.cap(min(plan.max_tokens - ctx.ledger.generated,
                              ctx.engine.info.max_model_len - len(prompt)))
    if room <= 0:
        yield ChoiceDone(ctx.choice, "length", _trace(plan, thought, None))
        return
    answer = Generation(ctx, prompt, ctx.phase_sampling(max_tokens=room), "answer", False)
    async with aclosing(answer.run()) as events:  # closing us aborts the engine request now
        async for event in events:
            yield event
    yield ChoiceDone(ctx.choice, answer.finish_reason or "stop", _trace(plan, thought, answer))


budget_forcing = single


def _trace(plan: Plan, thought: Thought | None, answer: Generation | None) -> dict[str, object]:
    trace: dict[str, object] = {"strategy": plan.strategy}
    if thought is not None:
        trace["thinking"] = thought.trace()
    if answer is not None:
        trace["answer"] = {"tokens": len(answer.token_ids), "finish_reason": answer.finish_reason}
    return trace
