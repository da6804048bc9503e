"""The thinking phase, with s1 budget forcing (Muennighoff et al. 2025, "s1:
Simple test-time scaling", arXiv:2501.19393).

The model thinks in engine requests that each stop at the end-of-thinking tag,
end of sequence, or the remaining cap. Between them the server may:

- *extend*: the model ended before ``min_thinking_tokens``; its end (tag or
  eos) is dropped and a continuation such as "Wait" is appended, up to
  ``max_continuations`` times;
- *nudge*: ``nudge_before`` tokens before the cap, a soft hint (``nudge``) is
  appended once so the model starts to conclude;
- *force the end*: at the cap, an optional wrap-up phrase and the closing tag
  are appended and the model answers.

Every request continues from the exact token ids of the previous one, so the
prefix cache covers everything already computed and the cap is exact: thinking
tokens generated never exceed ``max_thinking_tokens``. Text the server inserts
is streamed on the thinking channel but is not counted as generated.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field

from .context import RunContext
from .events import Event, Thinking
from .generation import Generation
from .plan import Plan


@dataclass
class Thought:
    """Where the thinking ended: the ids to continue from, and what happened."""

    ids: tuple[int, ...] = ()
    tokens: int = 0
    closed_by_model: bool = False
    cut_by_budget: bool = False
    forced_continuations: int = 0
    nudged: bool = False
    requests: int = 0
    finish_reason: str | None = None  # of the last thinking request
    inserted: list[str] = field(default_factory=list)

    def trace(self) -> dict[str, object]:
        return {
            "tokens": self.tokens,
            "finish_reason": self.finish_reason,
            "cut_by_budget": self.cut_by_budget,
            "closed_by_model": self.closed_by_model,
            "forced_continuations": self.forced_continuations,
            "nudged": self.nudged,
            "engine_requests": self.requests,
        }


def _strip_end(ctx: RunContext, gen: Generation) -> tuple[int, ...]:
    """The generated ids without the model's end of thinking (tag or eos)."""
    info, tok = ctx.engine.info, ctx.engine.tokenizer
    ids = list(gen.token_ids)
    if ids and ids[-1] in info.eos_token_ids:
        ids.pop()
    if gen.stop_reason == info.think_close:
        # The tag may span several tokens: drop tokens until it is gone.
        text = tok.decode(ids)
        cut = text.rfind(info.think_close)
        while ids and cut >= 0 and len(tok.decode(ids)) > cut:
            ids.pop()
    return tuple(ids)


def _room(ctx: RunContext, plan: Plan, thought: Thought, ids_len: int, reserve: int) -> int:
    """Tokens the next thinking request may generate: within the cap, max_tokens,
    budget_tokens, and the context window (keeping ``reserve`` for what the
    server still has to insert and at least one answer token)."""
    cap = plan.max_thinking_tokens if plan.max_thinking_tokens is not None else plan.max_tokens
    left = min(cap - thought.tokens, plan.max_tokens - ctx.ledger.generated,
               ctx.engine.info.max_model_len - ids_len - reserve - 1)
    return ctx.ledger.cap(left)


async def think(ctx: RunContext, plan: Plan, thought: Thought) -> AsyncIterator[Event]:
    """Run the thinking phase, filling ``thought``; yields thinking events."""
    tok = ctx.engine.tokenizer
    ids = ctx.prompt_ids + ctx.think_prefix_ids
    wrapup = tuple(tok.encode(plan.wrapup)) if plan.wrapup else ()
    reserve = len(wrapup) + len(ctx.think_suffix_ids)
    while True:
        room = _room(ctx, plan, thought, len(ids), reserve)
        if room <= 0:
            thought.cut_by_budget = True
            break
        nudge_now = bool(plan.nudge) and not thought.nudged and room > plan.nudge_before > 0
        limit = room - plan.nudge_before if nudge_now else room
        name = f"think{thought.requests}" if thought.requests else "think"
        gen = Generation(ctx, ids, _sampling(ctx, limit), name, True)
        thought.requests += 1
        async with aclosing(gen.run()) as events:
            async for event in events:
                yield event
        thought.tokens += len(gen.token_ids)
        thought.finish_reason = gen.finish_reason
        if gen.finish_reason == "length":
            ids = gen.continuation_ids()
            if nudge_now:
                thought.nudged = True
                ids += tuple(tok.encode(plan.nudge))
                yield _inserted(ctx, thought, plan.nudge)
                continue
            thought.cut_by_budget = True
            break
        body = gen.prompt_ids + _strip_end(ctx, gen)
        short = plan.min_thinking_tokens is not None and thought.tokens < plan.min_thinking_tokens
        extend = tuple(tok.encode(plan.continuation))
        if (short and thought.forced_continuations < plan.max_continuations
                and _room(ctx, plan, thought, len(body) + len(extend), reserve) > 0):
            thought.forced_continuations += 1
            ids = body + extend
            yield _inserted(ctx, thought, plan.continuation)
            continue
        thought.closed_by_model = gen.stop_reason == ctx.engine.info.think_close
        ids = gen.continuation_ids() if thought.closed_by_model else body
        break
    if not thought.closed_by_model:
        if thought.cut_by_budget and wrapup:
            ids += wrapup
            yield _inserted(ctx, thought, plan.wrapup)
        ids += ctx.think_suffix_ids
    thought.ids = ids


def _inserted(ctx: RunContext, thought: Thought, text: str) -> Thinking:
    thought.inserted.append(text)
    return Thinking(ctx.choice, text)


def _sampling(ctx: RunContext, max_tokens: int):
    # The client's stop strings belong to the answer, not the thinking. Logprobs
    # are kept: confidence scorers read them (clients only get the answer's).
    return ctx.phase_sampling(
        max_tokens=max(max_tokens, 1),
        stop=(ctx.engine.info.think_close,),
        stop_token_ids=(),
    )
