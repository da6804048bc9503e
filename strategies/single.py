"""Strategy ``single``: think (optionally capped), then answer.

With thinking off it is one engine request. With thinking on it is two: the
thinking phase stops at the end-of-thinking tag, the cap or end of sequence;
the answer phase continues from the exact token ids of the thinking (closing
the block itself when the model did not), so the prefix cache covers the whole
prompt-plus-thinking and the thinking budget is exact.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from .context import RunContext
from .events import ChoiceDone, Event
from .generation import Generation
from .plan import Plan


def _closed_by_model(gen: Generation, close_tag: str) -> bool:
    return gen.finish_reason == "stop" and gen.stop_reason == close_tag


async def single(ctx: RunContext, plan: Plan) -> AsyncIterator[Event]:
    if not plan.thinking:
        answer_budget = ctx.ledger.cap(plan.max_tokens)  # budget_tokens holds without thinking too
        gen = Generation(ctx, ctx.prompt_ids, _answer_sampling(ctx, answer_budget), "answer", False)
        async with aclosing(gen.run()) as events:  # closing us aborts the engine request now
            async for event in events:
                yield event
        yield ChoiceDone(ctx.choice, gen.finish_reason or "stop", _trace(None, gen))
        return

    think = Generation(
        ctx,
        ctx.prompt_ids + ctx.think_prefix_ids,
        _think_sampling(ctx, plan),
        "think",
        True,
    )
    async with aclosing(think.run()) as events:
        async for event in events:
            yield event
    info = ctx.engine.info
    closed = _closed_by_model(think, info.think_close)
    cut = think.finish_reason == "length"
    answer_budget = ctx.ledger.cap(plan.max_tokens - ctx.ledger.thinking)
    if answer_budget <= 0:
        yield ChoiceDone(ctx.choice, "length", _trace(think, None, cut=cut))
        return
    prompt = think.continuation_ids(drop=info.eos_token_ids)
    if not closed:
        prompt += ctx.think_suffix_ids
    answer = Generation(ctx, prompt, _answer_sampling(ctx, answer_budget), "answer", False)
    async with aclosing(answer.run()) as events:
        async for event in events:
            yield event
    yield ChoiceDone(ctx.choice, answer.finish_reason or "stop", _trace(think, answer, cut=cut))


def _think_sampling(ctx: RunContext, plan: Plan):
    cap = plan.max_thinking_tokens if plan.max_thinking_tokens is not None else plan.max_tokens
    cap = ctx.ledger.cap(min(cap, plan.max_tokens))
    # The client's stop strings end the answer, not the thinking.
    return ctx.phase_sampling(
        max_tokens=max(cap, 1),
        stop=(ctx.engine.info.think_close,),
        stop_token_ids=(),
        logprobs=None,
    )


def _answer_sampling(ctx: RunContext, max_tokens: int):
    return ctx.phase_sampling(max_tokens=max(max_tokens, 1))


def _trace(think: Generation | None, answer: Generation | None, cut: bool = False) -> dict[str, object]:
    trace: dict[str, object] = {"strategy": "single"}
    if think is not None:
        trace["thinking"] = {
            "tokens": len(think.token_ids),
            "finish_reason": think.finish_reason,
            "cut_by_budget": cut,
        }
    if answer is not None:
        trace["answer"] = {"tokens": len(answer.token_ids), "finish_reason": answer.finish_reason}
    return trace
