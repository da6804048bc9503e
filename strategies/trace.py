"""Typed traces: what a strategy did for one choice, as frozen dataclasses.

Each strategy defines its own trace in its module from the shared pieces
here; :func:`to_json` is the one place a trace becomes the JSON a client sees
as ``choices[i].reasoning_trace``, and the server's metrics read the fields
through :class:`Trace`'s methods, never through dict keys.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any


def optional(default: Any = None) -> Any:
    """A field left out of the JSON while it is None (say, no thinking phase ran)."""
    return field(default=default, metadata={"omit_none": True})


def wrapped() -> Any:
    """A field holding another trace whose keys appear at this trace's level
    (this trace's own keys win): ``auto`` wraps the trace of the plan it ran."""
    return field(metadata={"flatten": True})


@dataclass(frozen=True)
class ThinkingTrace:
    """A thinking phase: how many tokens, and how it ended."""

    tokens: int
    finish_reason: str | None
    cut_by_budget: bool
    closed_by_model: bool
    forced_continuations: int
    nudged: bool
    engine_requests: int
    # The model began a tool call while thinking: thinking was closed there and
    # the call continues in the answer (strategies/output.py, ``thinking_stop``).
    tool_call: bool | None = optional()
    # With a probe (strategies/probe.py): probes run, their tokens (reasoning, in
    # usage), whether they ended the thinking, and the answer each one read.
    probes: int | None = optional()
    probe_tokens: int | None = optional()
    exited_by_probe: bool | None = optional()
    probe_answers: tuple[str | None, ...] | None = optional()


@dataclass(frozen=True)
class AnswerTrace:
    tokens: int
    finish_reason: str | None


@dataclass(frozen=True)
class CandidateTrace:
    """One candidate of a parallel strategy: its extracted answer, score and cost."""

    index: int
    answer: str | None
    score: float | None
    tokens: int
    finish_reason: str | None
    aborted: bool
    # Stopped while it ran because its confidence fell below the threshold (DeepConf online).
    filtered: bool | None = optional()


class Trace:
    """What the server reads from any strategy's trace (for metrics).

    Subclasses are frozen dataclasses with a ``strategy`` field; they override
    what applies to them.
    """

    strategy: str

    def thinking_phases(self) -> tuple[ThinkingTrace, ...]:
        thinking = getattr(self, "thinking", None)
        return (thinking,) if isinstance(thinking, ThinkingTrace) else ()

    def candidate_traces(self) -> tuple[CandidateTrace, ...]:
        return ()

    def early_stop_savings(self) -> int | None:
        """Tokens an early stop did not spend, or None when it did not stop early."""
        return None


def to_json(value: Any) -> Any:
    """A trace (or any part of one) as JSON-ready data."""
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        under: dict[str, Any] = {}
        for f in fields(value):
            item = getattr(value, f.name)
            if item is None and f.metadata.get("omit_none"):
                continue
            if f.metadata.get("flatten"):
                under.update(to_json(item))
            else:
                out[f.name] = to_json(item)
        return {**under, **out}
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value
