"""A resolved reasoning plan: what one choice of a request will do.

The server's planner builds it from the request and the settings (a pure
function); strategies only read it. ``Plan`` holds what every strategy
shares (thinking on or off and its caps, the token budgets, what the client
sees); a strategy's own knobs are its typed ``options``, defined in its
module. ``public()`` is what the client sees as ``reasoning_plan``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Options(Protocol):
    """A strategy's own typed options (a frozen dataclass in its module)."""

    def public(self) -> dict[str, object]:
        """The options as shown in ``reasoning_plan``."""
        ...


@dataclass(frozen=True)
class NoOptions:
    """For strategies without knobs of their own."""

    def public(self) -> dict[str, object]:
        return {}


@dataclass(frozen=True)
class Forcing:
    """s1 budget forcing (Muennighoff et al. 2025, arXiv:2501.19393), applied by
    every thinking phase: ``continuation`` replaces an end of thinking before
    ``min_thinking_tokens`` (at most ``max_continuations`` times), ``wrapup``
    precedes the end the server forces at the cap, and ``nudge`` is appended
    once ``nudge_before`` tokens before it. Phrases come from configs
    (``[thinking]``); the neutral values here switch everything off."""

    continuation: str = ""
    max_continuations: int = 0
    wrapup: str = ""
    nudge: str = ""
    nudge_before: int = 0


@dataclass(frozen=True)
class Plan:
    strategy: str
    # Cap on thinking plus answer of one choice, as OpenAI's max_completion_tokens.
    max_tokens: int
    options: Options = NoOptions()
    effort: str | None = None
    # Thinking on at all? (False: answer directly, no thinking channel.)
    thinking: bool = False
    max_thinking_tokens: int | None = None
    min_thinking_tokens: int | None = None
    # Cap on every token one choice may generate (thinking + answer + discarded).
    budget_tokens: int | None = None
    include_reasoning: bool = True
    forcing: Forcing = Forcing()
    # Where the numbers came from: "reasoning", "thinking", "reasoning_effort", "default"...
    source: str = "default"
    # What the planner changed from what was asked, and why (shown to the client).
    adjusted: tuple[str, ...] = ()

    def public(self) -> dict[str, object]:
        """The plan as shown to the client in ``reasoning_plan``."""
        data: dict[str, object] = {
            "strategy": self.strategy, "effort": self.effort, "thinking": self.thinking,
            "max_thinking_tokens": self.max_thinking_tokens, "min_thinking_tokens": self.min_thinking_tokens,
            "budget_tokens": self.budget_tokens, "max_tokens": self.max_tokens,
            "include_reasoning": self.include_reasoning, "source": self.source,
        }
        if self.thinking:
            f = self.forcing
            data["wrapup"] = f.wrapup
            if self.min_thinking_tokens:
                data.update(continuation=f.continuation, max_continuations=f.max_continuations)
            if f.nudge and f.nudge_before:
                data.update(nudge=f.nudge, nudge_before=f.nudge_before)
        data.update(self.options.public())
        if self.adjusted:
            data["adjusted"] = list(self.adjusted)
        return {k: v for k, v in data.items() if v not in (None, "", 0) or k == "thinking"}
