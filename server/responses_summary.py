"""Reasoning summaries (``reasoning.summary``): a short extra phase after the thinking.

OpenAI's reasoning items carry a summary of the thinking. ponder writes a real
one: once the selected thinking is done (the first answer, tool call or end of
the choice), the engine continues the conversation from the cached prefix --
the prompt, the thinking block, then a follow-up turn with ``[responses]
summary_prompt`` -- greedily, at most ``summary_max_tokens``. Its text streams as
:class:`Summary` events before the answer's; its tokens are reasoning tokens in
usage (outside ``budget_tokens``, which bounds the plan), and its cost is the
``summary`` entry of the response's ``reasoning_trace`` (tokens, prompt and cached
tokens, wall seconds; ``loadtests/bench_summary.py`` measures it).

It wraps the plan's run (a :class:`Phase` like it), so the strategies are
unchanged, and the plan's engine requests go on while it runs (they are
already submitted; their output waits in the engine's queue). The thinking is
known here as text, so it is tokenized again for the summary's prompt: the
prompt's own ids are the run's, and the thinking's ids match what was generated
wherever the tokenizer round-trips (almost everywhere), so the prefix cache
covers the prompt at least and usually the thinking too.
"""
from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from strategies.engine import Engine, Sampling
from strategies.events import Answer, ChoiceDone, Event, Thinking, ToolCallDelta
from strategies.ledger import Usage
from strategies.phase import Phase
from strategies.runner import RunPlan


@dataclass(frozen=True)
class Summary:
    """A piece of the summary's text; the last one has no text and carries its ``cost``."""

    choice: int
    text: str
    cost: dict[str, Any] | None = None


@dataclass(frozen=True)
class SummaryPhase:
    """What the summary needs of the prepared request."""

    engine: Engine
    prompt_ids: tuple[int, ...]
    think_prefix_ids: tuple[int, ...]
    think_suffix_ids: tuple[int, ...]
    followup: Callable[[str], tuple[int, ...]]
    instruction: str
    max_tokens: int
    request_id: str
    priority: int = 0

    def prompt(self, thought: str) -> tuple[int, ...]:
        ids = self.engine.tokenizer.encode(thought, add_special_tokens=False)  # type: ignore[call-arg]
        return (self.prompt_ids + self.think_prefix_ids + tuple(ids) + self.think_suffix_ids
                + self.followup(self.instruction))


class Summarized(Phase[Usage]):
    """``run``'s events, with the summary of its selected thinking written once that is done."""

    def __init__(self, run: RunPlan, phase: SummaryPhase) -> None:
        super().__init__()
        self.run, self.phase = run, phase
        self.extra = Usage()

    async def _run(self) -> AsyncGenerator[Event | Summary, None]:
        thought: list[str] | None = []  # None once summarised
        async with self.run as events:
            async for event in events:
                if thought is not None and isinstance(event, Thinking) and event.candidate is None:
                    thought.append(event.text)
                elif thought is not None and isinstance(event, (Answer, ToolCallDelta, ChoiceDone)) \
                        and (not isinstance(event, Answer) or event.text):
                    if "".join(thought).strip():  # closed with this phase, however it ends
                        async with aclosing(self._summarize("".join(thought))) as pieces:
                            async for piece in pieces:
                                yield piece
                    thought = None
                yield event
        self._finish(self.run.result + self.extra)

    async def _summarize(self, thought: str) -> AsyncGenerator[Summary, None]:
        p = self.phase
        prompt = p.prompt(thought)
        room = min(p.max_tokens, p.engine.info.max_model_len - len(prompt) - 1)
        if room < 1:
            yield Summary(0, "", {"skipped": "no room in the context window"})
            return
        sampling = Sampling(max_tokens=room, temperature=0.0, priority=p.priority)
        tokens = cached = 0
        started = time.monotonic()
        stream = p.engine.generate(prompt, sampling, f"{p.request_id}-summary")
        try:
            async for delta in stream:
                tokens += len(delta.token_ids)
                cached = delta.cached_tokens if delta.cached_tokens is not None else cached
                if delta.text:
                    yield Summary(0, delta.text)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        self.extra = Usage(completion_tokens=tokens, reasoning_tokens=tokens, engine_requests=1,
                           engine_prompt_tokens=len(prompt), engine_cached_tokens=cached)
        yield Summary(0, "", {"tokens": tokens, "prompt_tokens": len(prompt), "cached_tokens": cached,
                              "seconds": round(time.monotonic() - started, 3)})
