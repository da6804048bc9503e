"""The explicit strategy registry: API name -> implementation.

Names the API knows but this build does not implement yet are listed too, so
the planner can answer 400 "not implemented" instead of silently falling back.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from .auto import auto
from .beam import beam_search
from .context import RunContext
from .events import Event
from .parallel import best_of_n, self_consistency
from .plan import Plan
from .revision import revision
from .single import budget_forcing, single

StrategyFn = Callable[[RunContext, Plan], AsyncIterator[Event]]

KNOWN = (
    "single",
    "budget_forcing",
    "best_of_n",
    "self_consistency",
    "revision",
    "beam_search",
    "tool_use",
    "auto",
)

IMPLEMENTED: dict[str, StrategyFn] = {
    "single": single,
    "budget_forcing": budget_forcing,
    "self_consistency": self_consistency,
    "best_of_n": best_of_n,
    "revision": revision,
    "beam_search": beam_search,
    "auto": auto,
}


def get(name: str) -> StrategyFn:
    return IMPLEMENTED[name]
