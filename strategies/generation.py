"""One engine request, consumed delta by delta into channel events.

A :class:`Generation` charges every token to the ledger as it arrives, routes
text through a :class:`ThinkSplitter`, and ends with what it produced
(:class:`Generated`): the token ids, so the next phase can continue from them
without re-tokenizing, and how the request ended.
"""
from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from .context import RunContext
from .engine import Delta, Sampling
from .events import Answer, Event, Thinking
from .phase import Phase
from .splitter import ThinkSplitter


@dataclass(frozen=True)
class Generated:
    """What one engine request produced."""

    prompt_ids: tuple[int, ...]
    token_ids: tuple[int, ...]
    finish_reason: str | None
    stop_reason: int | str | None
    thinking: str
    answer: str

    def continuation_ids(self, drop: Sequence[int] = ()) -> tuple[int, ...]:
        """Prompt plus what was generated, minus a trailing token in ``drop`` (eos)."""
        ids = self.token_ids
        if ids and ids[-1] in drop:
            ids = ids[:-1]
        return self.prompt_ids + ids

    def stop_sequence(self, client_stops: Sequence[str]) -> str | None:
        """The client's stop string that ended this request, if one did (a phase's own
        stops, such as a beam step's delimiter, are not the client's)."""
        s = self.stop_reason
        return s if isinstance(s, str) and s in client_stops else None


class Generation(Phase[Generated]):
    def __init__(
        self,
        ctx: RunContext,
        prompt_ids: Sequence[int],
        sampling: Sampling,
        name: str,
        thinking: bool,
    ) -> None:
        super().__init__()
        self.ctx = ctx
        self.prompt_ids = tuple(prompt_ids)
        self.sampling = sampling
        self.request_id = ctx.sub_id(name)
        info = ctx.engine.info
        self.splitter = ThinkSplitter(info.think_open, info.think_close, start_in_thinking=thinking)
        self._token_ids: list[int] = []
        self._finish_reason: str | None = None
        self._stop_reason: int | str | None = None
        self._thinking_text: list[str] = []
        self._answer_text: list[str] = []

    async def _run(self) -> AsyncGenerator[Event, None]:
        """Stream the request; thinking and answer events for this choice."""
        stream = self.ctx.engine.generate(self.prompt_ids, self.sampling, self.request_id)
        try:
            async for delta in stream:
                for event in self._feed(delta):
                    yield event
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        for event in self._emit(self.splitter.finish(), None, 0):
            yield event
        self._finish(Generated(self.prompt_ids, tuple(self._token_ids), self._finish_reason, self._stop_reason,
                               "".join(self._thinking_text), "".join(self._answer_text)))

    async def drain(self) -> Generated:
        """Run to the end without passing events on (a beam expansion)."""
        async with self as events:
            async for _ in events:
                pass
        return self.result

    def _feed(self, delta: Delta) -> list[Event]:
        if delta.prompt_tokens is not None:
            self.ctx.ledger.feed_prompt(delta.prompt_tokens, delta.cached_tokens or 0)
        self._token_ids.extend(delta.token_ids)
        if delta.finish_reason is not None:
            self._finish_reason = delta.finish_reason
            self._stop_reason = delta.stop_reason
        channel_before = self.splitter.channel
        segments = self.splitter.feed(delta.text)
        self._charge(channel_before, segments, len(delta.token_ids))
        return self._emit(segments, delta.logprobs, len(delta.token_ids))

    def _charge(self, before: str, segments: list[tuple[str, str]], n: int) -> None:
        """Charge ``n`` new tokens; a delta that crosses the end tag gives its
        last token to the answer and the rest (tag included) to thinking."""
        ledger = self.ctx.ledger
        thought = self.splitter.channel == "thinking" or any(ch == "thinking" for ch, _ in segments)
        if before == "answer" and thought:
            # This delta opened the block (only possible before any answer
            # text): its tokens, the open tag included, are thinking.
            before = "thinking"
        crossed = before == "thinking" and self.splitter.channel == "answer"
        if crossed and n > 1 and any(ch == "answer" for ch, _ in segments):
            ledger.feed_thinking(n - 1)
            ledger.feed_answer(1)
        elif before == "thinking":
            ledger.feed_thinking(n)
        else:
            ledger.feed_answer(n)

    def _emit(self, segments, logprobs, n: int) -> list[Event]:
        choice = self.ctx.choice
        events: list[Event] = []
        for channel, text in segments:
            if channel == "thinking":
                self._thinking_text.append(text)
                events.append(Thinking(choice, text, logprobs=logprobs))
            else:
                self._answer_text.append(text)
                events.append(Answer(choice, text, logprobs))
            logprobs = None  # attach a delta's logprobs once
        if logprobs and not segments and n:  # text held back: keep the logprobs on their channel
            cls = Thinking if self.splitter.channel == "thinking" else Answer
            events.append(cls(choice, "", logprobs=logprobs))
        return events
