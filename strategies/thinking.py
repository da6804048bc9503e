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

With a probe (strategies/probe.py, Dynasor-CoT / DEER) the thinking runs in
requests of ``interval`` tokens; after each, the answer as it stands is probed
from the cached prefix, and the thinking is closed as soon as the probes settle.

Every request continues from the exact token ids of the previous one, so the
prefix cache covers everything already computed and the cap is exact: thinking
tokens generated never exceed ``max_thinking_tokens``. Text the server inserts
is streamed on the thinking channel but is not counted as generated.
"""
from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

from .context import RunContext
from .events import Event, Thinking
from .generation import Generated, Generation
from .phase import Phase
from .plan import Plan
from .probe import ProbeOptions, ProbeWatch, probe
from .trace import ThinkingTrace


@dataclass(frozen=True)
class Thought:
    """Where the thinking ended: the ids to continue from, and what happened.

    ``answer_prefix`` is text the answer starts with: the start of a tool call
    the model wrote while thinking, moved behind the closed thinking block
    (its ids are already in ``ids``). When the format holds calls to a
    constraint that starts at that text (``call_constraint``), nothing is moved:
    ``call_opened`` says the answer is to be calls, written under it."""

    ids: tuple[int, ...]
    trace: ThinkingTrace
    answer_prefix: str = ""
    call_opened: bool = False


def strip_end(ctx: RunContext, gen: Generated) -> tuple[int, ...]:
    """The generated ids without the model's end of thinking (tag or eos)."""
    info, tok = ctx.engine.info, ctx.engine.tokenizer
    ids = list(gen.token_ids)
    if ids and ids[-1] in info.eos_token_ids:
        ids.pop()
    if isinstance(gen.stop_reason, str):  # the closing tag, or the start of a tool call
        # A stop string may span several tokens: drop tokens until it is gone.
        text = tok.decode(ids)
        cut = text.rfind(gen.stop_reason)
        while ids and cut >= 0 and len(tok.decode(ids)) > cut:
            ids.pop()
    return tuple(ids)


class Think(Phase[Thought]):
    """The thinking phase of one choice (or candidate); its result is a :class:`Thought`."""

    def __init__(self, ctx: RunContext, plan: Plan, probe: ProbeOptions | None = None) -> None:
        super().__init__()
        self.ctx, self.plan = ctx, plan
        self.watch = ProbeWatch(probe) if probe is not None else None
        self.tokens = 0
        self.requests = 0
        self.continuations = 0
        self.nudged = False

    def _room(self, ids_len: int, reserve: int) -> int:
        """Within the cap, max_tokens, budget_tokens and the context window, keeping
        ``reserve`` for what the server still inserts and one token for the answer."""
        plan, ledger = self.plan, self.ctx.ledger
        cap = plan.max_thinking_tokens if plan.max_thinking_tokens is not None else plan.max_tokens
        return self.ctx.room(ids_len, min(cap - self.tokens, plan.max_tokens - ledger.generated), reserve + 1)

    async def _run(self) -> AsyncGenerator[Event, None]:
        ctx, plan, forcing = self.ctx, self.plan, self.plan.forcing
        tok = ctx.engine.tokenizer
        ids = ctx.prompt_ids + ctx.think_prefix_ids
        wrapup = tuple(tok.encode(forcing.wrapup)) if forcing.wrapup else ()
        reserve = len(wrapup) + len(ctx.think_suffix_ids)
        closed = cut = settled = False
        marker = ""
        floor = plan.min_thinking_tokens or 0
        since_probe = 0
        finish_reason: str | None = None
        while True:
            room = self._room(len(ids), reserve)
            if room <= 0:
                cut = True
                break
            nudge_now = bool(forcing.nudge) and not self.nudged and room > forcing.nudge_before > 0
            limit = room - forcing.nudge_before if nudge_now else room
            probe_now = self.watch is not None and self.watch.options.interval - since_probe < limit
            if probe_now:
                limit = self.watch.options.interval - since_probe  # type: ignore[union-attr]
            gen = Generation(ctx, ids, _sampling(ctx, limit), f"think{self.requests}" if self.requests else "think",
                             True)
            self.requests += 1
            async with gen as events:
                async for event in events:
                    yield event
            done = gen.result
            self.tokens += len(done.token_ids)
            since_probe += len(done.token_ids)
            finish_reason = done.finish_reason
            if done.finish_reason == "length":
                ids = done.continuation_ids()
                if probe_now:
                    since_probe = 0
                    if self.tokens >= floor and await self._probe_settles(ids):
                        settled = True
                        break
                    continue
                if nudge_now:
                    self.nudged = True
                    ids += tuple(tok.encode(forcing.nudge))
                    yield Thinking(ctx.choice, forcing.nudge)
                    continue
                cut = True
                break
            body = done.prompt_ids + strip_end(ctx, done)
            if done.stop_reason in ctx.output.thinking_stop:  # a tool call begins: no "Wait" now
                marker = str(done.stop_reason)
                ids = body
                break
            short = plan.min_thinking_tokens is not None and self.tokens < plan.min_thinking_tokens
            extend = tuple(tok.encode(forcing.continuation))
            if (short and self.continuations < forcing.max_continuations
                    and self._room(len(body) + len(extend), reserve) > 0):
                self.continuations += 1
                ids = body + extend
                yield Thinking(ctx.choice, forcing.continuation)
                continue
            closed = done.stop_reason == ctx.engine.info.think_close
            ids = done.continuation_ids() if closed else body
            break
        if not closed:
            if cut and wrapup:
                ids += wrapup
                yield Thinking(ctx.choice, forcing.wrapup)
            ids += ctx.think_suffix_ids
        held = bool(marker) and ctx.output.call_constraint is not None
        if marker and not held:
            ids += tuple(tok.encode(marker))
        self._finish(Thought(ids, ThinkingTrace(
            tokens=self.tokens, finish_reason=finish_reason, cut_by_budget=cut, closed_by_model=closed,
            forced_continuations=self.continuations, nudged=self.nudged, engine_requests=self.requests,
            tool_call=True if marker else None, **self._probe_trace(settled)), "" if held else marker, held))

    async def _probe_settles(self, ids: tuple[int, ...]) -> bool:
        """Probe the answer after thinking ``ids``; whether the probes now settle it."""
        watch = self.watch
        assert watch is not None
        limit = self.plan.max_tokens - self.ctx.ledger.generated - 1  # the answer keeps a token
        watch.add(await probe(self.ctx, ids, watch.options, len(watch.results), limit))
        return watch.settled

    def _probe_trace(self, settled: bool) -> dict[str, object]:
        if self.watch is None:
            return {}
        return {"probes": len(self.watch.results), "probe_tokens": self.watch.tokens, "exited_by_probe": settled,
                "probe_answers": tuple(r.answer for r in self.watch.results)}


def _sampling(ctx: RunContext, max_tokens: int):
    # The client's stop strings and ids and min_tokens belong to the answer, not the
    # thinking; its top_k, min_p, penalties and logit_bias shape the thinking too.
    # Logprobs are kept: confidence scorers read them (clients only get the answer's).
    return ctx.reasoning_sampling(max_tokens=max(max_tokens, 1),
                                  stop=(ctx.engine.info.think_close, *ctx.output.thinking_stop))
