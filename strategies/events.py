"""Events a strategy emits. The HTTP layer folds them into a response or SSE.

Both the streamed and the non-streamed response are folds over the same event
stream, which is why they agree.
"""
from __future__ import annotations

from dataclasses import dataclass

from .engine import TokenLogprob
from .trace import Trace


@dataclass(frozen=True)
class Thinking:
    choice: int
    text: str
    candidate: int | None = None  # set when streaming every candidate
    # Token log-probabilities, for scorers (never sent to the client).
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True)
class Answer:
    choice: int
    text: str
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True)
class Progress:
    """Client-visible progress during phases without tokens (votes, scores)."""

    choice: int
    info: dict[str, object]


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of tool call ``index`` of a choice, as OpenAI streams it: the
    first piece has ``id`` and ``name``, every piece may add ``arguments`` text."""

    choice: int
    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True)
class ChoiceDone:
    choice: int
    finish_reason: str
    trace: Trace
    # The client's stop string that ended the answer, when one did (``finish_reason``
    # is then "stop"): Anthropic's ``stop_sequence`` names it; vLLM drops it from the text.
    stop_sequence: str | None = None


Event = Thinking | Answer | Progress | ToolCallDelta | ChoiceDone
