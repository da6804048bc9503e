"""Strategy ``tool_use`` (PAL, Gao et al. 2022, arXiv:2211.10435; ReAct, Yao et
al. 2022, arXiv:2210.03629): the model writes code that a sandboxed
interpreter runs. The API knows the name; this build does not run it yet, so
a request for it is a 400 ``strategy_not_implemented``, never a fallback.
"""
from __future__ import annotations

from .descriptor import Strategy

STRATEGY = Strategy(name="tool_use", run=None)
