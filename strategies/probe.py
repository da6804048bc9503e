"""Probe-based early exit from thinking: Dynasor-CoT (Fu et al. 2024, "Efficiently
Serving LLM Reasoning Programs with Certaindex", arXiv:2412.20993) and DEER (Yang
et al. 2025, "Dynamic Early Exit in Reasoning Models", arXiv:2504.15895).

A model often knows its answer long before it stops thinking. Every ``interval``
thinking tokens the thinking phase asks, from the cached prefix, for the answer
as it stands: the thinking so far, the closing of the thinking block, then
``prompt`` ("Final answer:") and at most ``max_tokens`` greedy tokens. The
client never sees a probe; its tokens are reasoning tokens in usage. The
thinking ends early when ``agree`` probes in a row give the same answer
(Dynasor's certainty by consistency) or when one probe's answer tokens have a
mean probability of at least ``confidence`` (DEER's trial answer confidence;
0 switches that rule off). A probe with no answer in it never ends the thinking
and breaks a run of agreeing ones; nor does one that hesitates (Dynasor
discards probe answers with "wait", "hmm"...: ``hesitation``). Probes only start once the plan's
``min_thinking_tokens`` are spent: a floor the client set is honoured.
"""
from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from . import answers
from .context import RunContext
from .descriptor import OptionSource
from .engine import TokenLogprob
from .errors import PlanError
from .generation import Generation


class ProbeConfig(BaseModel):
    """``[probe]`` of configs/server.toml."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    interval: int = Field(ge=8, le=4096)
    agree: int = Field(ge=2, le=16)
    confidence: float = Field(ge=0.0, le=1.0)
    max_tokens: int = Field(ge=2, le=64)
    prompt: str = Field(min_length=1)
    hesitation: tuple[str, ...]


@dataclass(frozen=True)
class ProbeOptions:
    interval: int
    agree: int
    confidence: float
    max_tokens: int
    prompt: str
    hesitation: tuple[str, ...] = ()

    def public(self) -> dict[str, object]:
        return {f"probe_{k}": v for k, v in asdict(self).items() if k not in ("prompt", "hesitation")}


@dataclass(frozen=True)
class ProbeResult:
    answer: str | None  # the answer's key (strategies/answers.py), None: no answer
    confidence: float  # mean probability of the answer line's tokens
    tokens: int


@dataclass
class ProbeWatch:
    """The probes of one thinking phase, and whether they say to stop."""

    options: ProbeOptions
    results: list[ProbeResult] = field(default_factory=list)

    def add(self, result: ProbeResult) -> None:
        self.results.append(result)

    @property
    def settled(self) -> bool:
        o = self.options
        last = self.results[-o.agree:]
        if not self.results or self.results[-1].answer is None:
            return False
        if 0 < o.confidence <= self.results[-1].confidence:
            return True
        return len(last) == o.agree and len({r.answer for r in last}) == 1

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.results)


def read(src: OptionSource, cfg: ProbeConfig) -> ProbeOptions | None:
    """The probe a request asks for (``reasoning.probe: true``), or None."""
    if not src.get("probe", False):
        return None
    if not src.thinking:
        raise PlanError("reasoning.probe ends the thinking early, and this plan does not think; "
                        "ask for an effort above 'none' or a thinking budget", "reasoning.probe")
    return ProbeOptions(cfg.interval, cfg.agree, cfg.confidence, cfg.max_tokens, cfg.prompt, cfg.hesitation)


def probed_answer(text: str, hesitation: tuple[str, ...] = ()) -> str | None:
    """The answer key of a probe's continuation: its first non-empty line, read as
    a final answer (strategies/answers.py); None when there is none or it hesitates."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    words = set(re.findall(r"[a-z']+", line.lower()))
    if not line or any(h in words for h in hesitation):
        return None
    return answers.key(answers.extract(line))


def answer_confidence(logprobs: Sequence[TokenLogprob], token_ids: Sequence[int] = (),
                      skip: Collection[int] = ()) -> float:
    """Mean probability of the tokens up to the end of the answer's line (DEER
    scores the trial answer, not what the model writes after it); tokens in
    ``skip`` (end of sequence) are no part of the answer."""
    probs: list[float] = []
    seen = ""
    for i, lp in enumerate(logprobs):
        if i < len(token_ids) and token_ids[i] in skip:
            continue
        if seen.strip() and "\n" in lp.token:
            break
        probs.append(math.exp(lp.logprob))
        seen += lp.token
    return sum(probs) / len(probs) if probs else 0.0


async def probe(ctx: RunContext, ids: tuple[int, ...], o: ProbeOptions, index: int, limit: int) -> ProbeResult:
    """Ask for the answer as it stands after thinking ``ids`` (read from the
    prefix cache), generating at most ``limit`` tokens. Greedy, none of the
    client's sampling; drained, never shown; its tokens are charged to the ledger
    as reasoning."""
    prompt = ids + ctx.think_suffix_ids + tuple(ctx.engine.tokenizer.encode(o.prompt))
    room = ctx.room(len(prompt), min(o.max_tokens, limit))
    if room <= 0:
        return ProbeResult(None, 0.0, 0)
    gen = Generation(ctx, prompt, ctx.internal_sampling(room, temperature=0.0, logprobs=0), f"probe{index}", True)
    lps: list[TokenLogprob] = []
    async with gen as events:
        async for event in events:
            lps.extend(getattr(event, "logprobs", None) or ())
    done = gen.result
    answer = probed_answer(done.thinking + done.answer, o.hesitation)
    confidence = answer_confidence(lps, done.token_ids, ctx.engine.info.eos_token_ids) if answer is not None else 0.0
    return ProbeResult(answer, confidence, len(done.token_ids))
