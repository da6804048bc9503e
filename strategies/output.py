"""What the answer must look like: plain text, JSON, or tool calls.

A client can ask for more than text: ``response_format`` (JSON, optionally
against a schema) or ``tools`` (function calls). Both shape only the answer:
thinking stays free. An :class:`OutputFormat` carries what a strategy needs
to honour that without knowing which API asked for it:

- ``structured``: the constraint for answer phases (the engine enforces it
  with structured outputs); thinking and internal phases never get it;
- ``thinking_stop``: text that, written while thinking, ends the thinking
  phase at once (the start of a tool call), so a call is never returned as
  thinking and a thinking cap never cuts one in half;
- ``call_constraint``: when answers are held to a constraint that starts at
  that text (strict functions with ``tool_choice: "auto"``), the constraint
  for an answer after a call was opened in the thinking: calls only, the
  start marker written by the model again under the constraint;
- ``key``: the canonical form two answers are compared by (tool calls as
  name plus canonical JSON arguments, JSON as canonical JSON), for voting;
- ``valid``: whether an answer is well formed (a selection prefers those);
- ``shaper``: per choice, turns the answer's text events into what the
  client gets (``ToolCalls`` events and ``finish_reason: "tool_calls"``).

The server builds the formats (it owns the tool parsers, which come from
vLLM); strategies only call these methods.
"""
from __future__ import annotations

import json
from typing import Protocol

from .answers import answer_key
from .engine import Structured
from .events import Event

__all__ = ["PLAIN", "OutputFormat", "PlainText", "Shaper", "Structured", "canonical_json"]


class Shaper(Protocol):
    """One choice's answer events in, the client's events out."""

    def feed(self, event: Event) -> list[Event]:
        ...


class OutputFormat(Protocol):
    structured: Structured | None
    thinking_stop: tuple[str, ...]
    call_constraint: Structured | None
    # Whether a ``tool_calls`` finish is possible (the strategy must pass the
    # answer text through untouched for the shaper to parse it).
    tools: bool

    def key(self, answer: str) -> str | None:
        """The canonical form to vote on (None: the answer has none, it gets no vote)."""
        ...

    def valid(self, answer: str) -> bool:
        ...

    def shaper(self, choice: int) -> Shaper:
        ...


class _PassThrough:
    def feed(self, event: Event) -> list[Event]:
        return [event]


class PlainText:
    """No format asked for: any text, voted on by its extracted final answer."""

    structured: Structured | None = None
    thinking_stop: tuple[str, ...] = ()
    call_constraint: Structured | None = None
    tools = False

    def key(self, answer: str) -> str | None:
        return answer_key(answer)

    def valid(self, answer: str) -> bool:
        return True

    def shaper(self, choice: int) -> Shaper:
        return _PassThrough()


PLAIN = PlainText()


def canonical_json(text: str) -> str | None:
    """``text`` as canonical JSON (sorted keys, no spaces), None when it is not JSON."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
