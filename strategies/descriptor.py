"""What the server needs to know about a strategy, owned by the strategy.

Each strategy module ends with one :class:`Strategy` descriptor: its API
name, how its typed options are read (from the client's ``reasoning`` object,
then the effort preset, then its configs section), its configs section, how
many engine sequences one choice may run at once (admission), whether its
answer streams token by token, and its run function. The registry is the
list of descriptors; the server asks it and names no strategy.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .context import RunContext
from .errors import PlanError
from .events import Event
from .plan import NoOptions, Options, Plan

RunFn = Callable[[RunContext, Plan], AsyncIterator[Event]]

# A reasoning key with no "off" value: any value of it needs the strategy.
ANY = object()


@dataclass(frozen=True)
class OptionSource:
    """Where a strategy's options come from, first one wins: the keys the client
    set in ``reasoning`` (or an ``auto`` level's row), the effort preset's row,
    then the strategy's configs section (``config``, already validated)."""

    reasoning: Mapping[str, Any]
    preset: Mapping[str, Any]
    config: Any
    # Choices in the request (OpenAI ``n``): limits are per request.
    n: int = 1
    # Plans a ``reasoning`` row the way the server plans a client's (for ``auto``).
    plan_row: Callable[[Mapping[str, Any]], Plan] | None = None
    # The admission weight of a plan (any strategy's).
    weigh: Callable[[Plan], int] | None = None
    # Another strategy's configs section by name (a strategy that runs another's
    # phases inside its own: self_consistency's candidates running tool_use).
    section: Callable[[str], Any] | None = None
    # Whether the plan thinks (options that act on the thinking need it).
    thinking: bool = False

    def get(self, key: str, default: Any = None) -> Any:
        for layer in (self.reasoning, self.preset):
            if layer.get(key) is not None:
                return layer[key]
        return default

    def given(self, key: str) -> bool:
        """Whether the client (not a preset) set ``key``."""
        return self.reasoning.get(key) is not None


def _no_options(src: OptionSource) -> Options:
    return NoOptions()


@dataclass(frozen=True)
class Strategy:
    name: str
    # None: the API knows the name but this build does not run it (a 400, never a fallback).
    run: RunFn | None
    read: Callable[[OptionSource], Options] = _no_options
    # The ``reasoning`` keys it reads, each with the value that means "off"
    # (which other strategies accept and ignore) or ANY.
    keys: Mapping[str, Any] = field(default_factory=dict)
    # Its configs section ([section] in configs/server.toml, or a file of its
    # own) and the pydantic model that validates it at start-up.
    section: str | None = None
    config: type | None = None
    # Most engine sequences one choice runs at once (admission weight, candidate limit).
    weight: Callable[[Plan], int] = lambda plan: 1
    # The reasoning key a too-heavy request is refused on.
    weight_param: str = "n"
    # Answer tokens stream as they are generated (no silent phase to keep alive).
    streams_tokens: bool = False
    # Honours an answer format (tool calls, response_format): its answer phases
    # take ``ctx.output``'s constraint and its selection uses the format's keys.
    formats: bool = False
    # Given the client's reasoning keys: whether the plan runs a thinking phase
    # whatever else asks (its work is thinking: code and runs), so thinking is on.
    thinks: Callable[[Mapping[str, Any]], bool] = lambda keys: False
    # Whether a plan runs model-written code (the server's sandbox must be up).
    needs_code: Callable[[Plan], bool] = lambda plan: False
    # The strategy a request gets when it offers the code_interpreter tool and names none.
    code_tool: bool = False

    def options(self, src: OptionSource) -> Options:
        if self.run is None:
            raise PlanError(f"reasoning strategy {self.name!r} is not implemented by this server yet",
                            "reasoning.strategy", "strategy_not_implemented")
        return self.read(src)
