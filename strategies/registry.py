"""The explicit strategy registry: the list of every strategy's descriptor.

The server asks this module about strategies (by the name a request or a
preset gives) and names none itself. Names the API knows but this build does
not run are listed too, so a request for one is a 400 "not implemented"
instead of a silent fallback.
"""
from __future__ import annotations

from collections.abc import AsyncIterator

from . import auto, beam, best_of_n, budget_forcing, revision, self_consistency, single, tool_use
from .context import RunContext
from .descriptor import Strategy
from .errors import PlanError
from .events import Event
from .plan import Plan

STRATEGIES: tuple[Strategy, ...] = (
    single.STRATEGY,
    budget_forcing.STRATEGY,
    best_of_n.STRATEGY,
    self_consistency.STRATEGY,
    revision.STRATEGY,
    beam.STRATEGY,
    tool_use.STRATEGY,
    auto.STRATEGY,
)
_BY_NAME = {s.name: s for s in STRATEGIES}
KNOWN = tuple(_BY_NAME)
IMPLEMENTED = tuple(s.name for s in STRATEGIES if s.run is not None)


def get(name: str) -> Strategy:
    """The descriptor of ``name``; a PlanError naming ``reasoning.strategy`` when unknown."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise PlanError(f"unknown reasoning strategy {name!r}; use one of {', '.join(KNOWN)}",
                        "reasoning.strategy", "invalid_strategy") from None


def with_formats() -> tuple[str, ...]:
    """The strategies that honour tool calls and ``response_format``."""
    return tuple(s.name for s in STRATEGIES if s.formats and s.run is not None)


def code_tool() -> str:
    """The strategy for the code_interpreter tool when the request names none."""
    return next(s.name for s in STRATEGIES if s.code_tool)


def owners(key: str) -> tuple[str, ...]:
    """The strategies that read the ``reasoning`` key ``key``."""
    return tuple(s.name for s in STRATEGIES if key in s.keys)


def sections() -> dict[str, type]:
    """Every strategy configs section and the model that validates it."""
    out: dict[str, type] = {}
    for s in STRATEGIES:
        if s.section is None or s.config is None:
            continue
        if out.setdefault(s.section, s.config) is not s.config:
            raise TypeError(f"section [{s.section}] has two different models")
    return out


def weight(plan: Plan) -> int:
    """Most engine sequences one choice of ``plan`` runs at once."""
    return get(plan.strategy).weight(plan)


def dispatch(ctx: RunContext, plan: Plan) -> AsyncIterator[Event]:
    """Run ``plan`` for one choice."""
    run = get(plan.strategy).run
    if run is None:
        raise PlanError(f"reasoning strategy {plan.strategy!r} is not implemented", "reasoning.strategy",
                        "strategy_not_implemented")
    return run(ctx, plan)
