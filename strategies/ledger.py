"""Exact token accounting for one choice, from engine token ids.

Every generated token is charged to a channel (thinking or answer); tokens of
discarded candidates and rounds are charged too, because the client pays for
them. ``remaining()`` is how strategies hold ``budget_tokens``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    # Prefix-cache hits on the client's prompt (the first engine request).
    cached_tokens: int = 0
    # Every engine request, continuations included.
    engine_requests: int = 0
    engine_prompt_tokens: int = 0
    engine_cached_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        """Combine choices of one request: the prompt is shared, the rest adds up."""
        return Usage(
            prompt_tokens=max(self.prompt_tokens, other.prompt_tokens),
            completion_tokens=self.completion_tokens + other.completion_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            cached_tokens=max(self.cached_tokens, other.cached_tokens),
            engine_requests=self.engine_requests + other.engine_requests,
            engine_prompt_tokens=self.engine_prompt_tokens + other.engine_prompt_tokens,
            engine_cached_tokens=self.engine_cached_tokens + other.engine_cached_tokens,
        )


class Ledger:
    """Mutable counter owned by one choice's strategy run."""

    def __init__(self, prompt_tokens: int, budget_tokens: int | None = None) -> None:
        self.prompt_tokens = prompt_tokens
        self.budget_tokens = budget_tokens
        self.thinking = 0
        self.answer = 0
        self.cached_tokens = 0
        self.engine_requests = 0
        self.engine_prompt_tokens = 0
        self.engine_cached_tokens = 0

    def feed_thinking(self, n: int) -> None:
        self.thinking += n

    def feed_answer(self, n: int) -> None:
        self.answer += n

    def thinking_to_answer(self, n: int) -> None:
        """Move ``n`` tokens already charged as thinking to the answer (a step whose
        channel is known only once it ended: ReAct's last thought, see tool_use)."""
        if not 0 <= n <= self.thinking:
            raise ValueError(f"cannot move {n} of {self.thinking} thinking tokens to the answer")
        self.thinking -= n
        self.answer += n

    def feed_prompt(self, prompt_tokens: int, cached_tokens: int) -> None:
        """Record one engine request's prefill; the first one is the client's prompt."""
        if self.engine_requests == 0:
            self.cached_tokens = min(cached_tokens, self.prompt_tokens)
        self.engine_requests += 1
        self.engine_prompt_tokens += prompt_tokens
        self.engine_cached_tokens += cached_tokens

    @property
    def generated(self) -> int:
        return self.thinking + self.answer

    def remaining(self) -> int | None:
        """Tokens this choice may still generate, or None when unbounded."""
        if self.budget_tokens is None:
            return None
        return max(0, self.budget_tokens - self.generated)

    def cap(self, wanted: int) -> int:
        """``wanted`` clipped to what the budget still allows."""
        left = self.remaining()
        return wanted if left is None else min(wanted, left)

    def child(self, budget_tokens: int | None) -> Ledger:
        """A ledger for one candidate that also charges this one."""
        return _ChildLedger(self, budget_tokens)

    def finish(self) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.generated,
            reasoning_tokens=self.thinking,
            cached_tokens=self.cached_tokens,
            engine_requests=self.engine_requests,
            engine_prompt_tokens=self.engine_prompt_tokens,
            engine_cached_tokens=self.engine_cached_tokens,
        )


class _ChildLedger(Ledger):
    def __init__(self, parent: Ledger, budget_tokens: int | None) -> None:
        super().__init__(parent.prompt_tokens, budget_tokens)
        self.parent = parent

    def feed_thinking(self, n: int) -> None:
        super().feed_thinking(n)
        self.parent.feed_thinking(n)

    def feed_answer(self, n: int) -> None:
        super().feed_answer(n)
        self.parent.feed_answer(n)

    def thinking_to_answer(self, n: int) -> None:
        super().thinking_to_answer(n)
        self.parent.thinking_to_answer(n)

    def feed_prompt(self, prompt_tokens: int, cached_tokens: int) -> None:
        super().feed_prompt(prompt_tokens, cached_tokens)
        self.parent.feed_prompt(prompt_tokens, cached_tokens)
