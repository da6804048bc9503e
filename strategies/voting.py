"""Votes over candidate answers, and the rules that stop sampling early.

- majority and confidence-weighted votes (weights from the candidates'
  confidence, DeepConf-style: Fu et al. 2025, arXiv:2508.15260);
- ties broken deterministically: more votes, then more weight, then the
  answer of the lowest-numbered candidate (not the first to finish);
- early stopping: the leader cannot be overtaken by the samples left; ESC
  (Li et al. 2024, arXiv:2401.10480): a whole window agrees; Adaptive-Consistency
  (Aggarwal et al. 2023, arXiv:2305.11860): the Beta posterior that the leader
  beats the runner-up exceeds a threshold.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import comb


@dataclass
class Tally:
    counts: dict[str, int] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    # The lowest candidate index behind each answer: ties go to it, so the
    # result does not depend on which candidate happened to finish first.
    first: dict[str, int] = field(default_factory=dict)

    def add(self, key: str | None, weight: float = 1.0, index: int | None = None) -> None:
        if key is None:
            return
        position = len(self.first) if index is None else index
        self.first[key] = min(self.first.get(key, position), position)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.weights[key] = self.weights.get(key, 0.0) + weight

    def ranked(self, weighted: bool = False) -> list[str]:
        def rank(k: str) -> tuple:
            primary = self.weights[k] if weighted else self.counts[k]
            return (-primary, -self.counts[k], -self.weights[k], self.first[k])

        return sorted(self.counts, key=rank)

    def leader(self, weighted: bool = False) -> str | None:
        ranked = self.ranked(weighted)
        return ranked[0] if ranked else None

    def top_two(self) -> tuple[int, int]:
        ranked = self.ranked()
        first = self.counts[ranked[0]] if ranked else 0
        second = self.counts[ranked[1]] if len(ranked) > 1 else 0
        return first, second


def cannot_be_overtaken(tally: Tally, remaining: int) -> bool:
    first, second = tally.top_two()
    return first > 0 and first > second + remaining


def beta_leader_probability(first: int, second: int) -> float:
    """P(p1 > p2) under Beta(first+1, second+1): the Adaptive-Consistency stat.

    For integer parameters, P(Beta(a, b) > 1/2) = P(Binomial(a+b-1, 1/2) < a).
    """
    a, b = first + 1, second + 1
    n = a + b - 1
    return sum(comb(n, k) for k in range(a)) / 2**n


def should_stop(rule: str, tally: Tally, window_keys: list[str | None], remaining: int,
                threshold: float) -> bool:
    if remaining <= 0:
        return True
    if cannot_be_overtaken(tally, remaining):
        return True
    if rule == "esc":
        return len(window_keys) > 1 and None not in window_keys and len(set(window_keys)) == 1
    if rule == "adaptive":
        first, second = tally.top_two()
        return first + second >= 2 and beta_leader_probability(first, second) >= threshold
    return False
