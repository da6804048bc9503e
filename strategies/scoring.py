"""Scorers for candidates: how best-of-N picks, and how votes are weighted.

- ``confidence``: DeepConf's lowest group confidence (Fu et al. 2025, "Deep
  Think with Confidence", arXiv:2508.15260). Token confidence is the negative
  mean log-probability of the top-k tokens at that position; a trace scores the
  minimum over sliding windows of its mean, so one confused stretch sinks it.
- ``self_judge``: the same model reads its answer in a follow-up turn and is
  asked whether it is correct; the score is P("Yes") / (P("Yes") + P("No")) of
  the first reply token (LLM-as-judge, e.g. Zheng et al. 2023). All judge
  requests go to the engine together, each continuing the candidate's prompt so
  the prefix cache covers the conversation.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from .context import RunContext
from .engine import TokenLogprob
from .errors import PlanError
from .generation import Generation

CONFIDENCE_TOP_K = 5
GROUP = 32
SCORERS = ("confidence", "self_judge", "reward_model")


def check_scorer(scorer: str | None) -> None:
    """A scorer the API knows and this server runs (a 400 otherwise)."""
    if scorer is None:
        return
    if scorer not in SCORERS:
        raise PlanError(f"unknown scorer {scorer!r}; use one of {', '.join(SCORERS)}", "reasoning.scorer")
    if scorer == "reward_model":
        # A reward model served by vLLM's pooling runner is planned for GPU
        # deployments; until it exists the scorer is refused, never faked.
        raise PlanError("the reward_model scorer is not available on this server; use confidence or self_judge",
                        "reasoning.scorer", "scorer_not_available")


def token_confidence(lp: TokenLogprob, k: int = CONFIDENCE_TOP_K) -> float:
    # The top ``k`` only: a client asking for more top_logprobs must not change scores.
    values = [v for _, v in lp.top[:k] if v != float("-inf")] or [lp.logprob]
    return -sum(values) / len(values)


def lowest_group_confidence(logprobs: Sequence[TokenLogprob], group: int = GROUP) -> float:
    if not logprobs:
        return 0.0
    conf = [token_confidence(lp) for lp in logprobs]
    if len(conf) <= group:
        return sum(conf) / len(conf)
    window = sum(conf[:group])
    low = window
    for i in range(group, len(conf)):
        window += conf[i] - conf[i - group]
        low = min(low, window)
    return low / group


class GroupConfidence:
    """DeepConf's group confidence of a trace as it is generated: the mean token
    confidence of the last ``group`` tokens (``current``, None until a whole window
    is there) and the lowest window so far (``lowest``, what
    :func:`lowest_group_confidence` gives for the whole trace). One running sum,
    so watching a candidate costs O(1) per token (DeepConf online, Fu et al. 2025)."""

    def __init__(self, group: int = GROUP) -> None:
        self.group = group
        self._last: deque[float] = deque(maxlen=group)  # only the window is kept
        self._window = 0.0
        self._lowest: float | None = None

    def feed(self, logprobs: Sequence[TokenLogprob]) -> None:
        for lp in logprobs:
            c = token_confidence(lp)
            if len(self._last) == self.group:
                self._window -= self._last[0]  # leaves the window as c enters it
            self._last.append(c)
            self._window += c
            if len(self._last) == self.group:
                mean = self._window / self.group
                self._lowest = mean if self._lowest is None else min(self._lowest, mean)

    @property
    def current(self) -> float | None:
        return self._window / self.group if len(self._last) == self.group else None

    @property
    def lowest(self) -> float:
        if self._lowest is not None:
            return self._lowest
        return self._window / len(self._last) if self._last else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, linear between order statistics
    (numpy's default), for DeepConf's threshold from the warm-up traces."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _yes_probability(lp: TokenLogprob | None) -> float:
    if lp is None:
        return 0.0
    yes = no = 0.0
    for token, value in ((lp.token, lp.logprob), *lp.top):
        word = token.strip().lower()
        if word in ("yes", "correct", "true"):
            yes = max(yes, math.exp(value))
        elif word in ("no", "incorrect", "false", "wrong"):
            no = max(no, math.exp(value))
    return yes / (yes + no) if yes + no > 0 else 0.0


async def judge(ctx: RunContext, answer_text: str, question: str, index: int | str) -> float:
    """Score one candidate answer with the model itself: P(yes) (its token is charged to the ledger)."""
    if ctx.followup is None:
        raise ValueError("self_judge needs the chat template's follow-up turn")
    ids = ctx.prompt_ids + tuple(ctx.engine.tokenizer.encode(answer_text)) + ctx.followup(question)
    # The client's logit_bias, penalties, top_k... are for its answer, not for the
    # judge's "Yes" / "No": the judge samples as the server's own request.
    sampling = ctx.internal_sampling(1, temperature=0.0, logprobs=20)
    gen = Generation(ctx, ids, sampling, f"judge{index}", False)
    first: TokenLogprob | None = None
    async with gen as events:
        async for event in events:
            if first is None and event.logprobs:
                first = event.logprobs[0]
    return _yes_probability(first)
