"""Strategy ``budget_forcing``: s1 (Muennighoff et al. 2025, "s1: Simple
test-time scaling", arXiv:2501.19393).

Below ``min_thinking_tokens`` an early end of thinking is replaced by a
continuation such as "Wait,"; at ``max_thinking_tokens`` a wrap-up phrase and
the closing tag are appended and the model answers. The mechanics live in the
thinking phase (strategies/thinking.py), which every strategy shares; this
strategy is ``single``'s pipeline under its own name, so the effort presets
that force thinking (configs/effort.toml) say so in ``reasoning_plan``.
"""
from __future__ import annotations

from . import single
from .descriptor import Strategy
from .probe import ProbeConfig

STRATEGY = Strategy(name="budget_forcing", run=single.run, read=single.read, keys=single.KEYS, section="probe",
                    config=ProbeConfig, streams_tokens=True, formats=True)
