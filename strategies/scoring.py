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
from collections.abc import Sequence

from .context import RunContext
from .engine import TokenLogprob

CONFIDENCE_TOP_K = 5
GROUP = 32


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


async def judge(ctx: RunContext, answer_text: str, question: str, index: int) -> tuple[float, int]:
    """Score one candidate answer with the model itself: (P(yes), tokens generated)."""
    if ctx.followup is None:
        raise ValueError("self_judge needs the chat template's follow-up turn")
    ids = ctx.prompt_ids + tuple(ctx.engine.tokenizer.encode(answer_text)) + ctx.followup(question)
    sampling = ctx.phase_sampling(max_tokens=1, temperature=0.0, stop=(), logprobs=20, seed=None)
    first: TokenLogprob | None = None
    generated = 0
    stream = ctx.engine.generate(ids, sampling, ctx.sub_id(f"judge{index}"))
    try:
        async for delta in stream:
            if delta.prompt_tokens is not None:
                ctx.ledger.feed_prompt(delta.prompt_tokens, delta.cached_tokens or 0)
            generated += len(delta.token_ids)
            if delta.logprobs and first is None:
                first = delta.logprobs[0]
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    ctx.ledger.feed_answer(generated)
    return _yes_probability(first), generated
