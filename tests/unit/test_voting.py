"""Votes and early-stopping rules (strategies/voting.py)."""
from __future__ import annotations

import math

import pytest

from strategies.voting import Tally, beta_leader_probability, cannot_be_overtaken, should_stop

Votes = list[tuple[str | None, float]]


def tally_of(votes: Votes) -> Tally:
    t = Tally()
    for k, w in votes:
        t.add(k, w)
    return t


def counts(**c: int) -> Votes:
    """Unit-weight votes, answers in keyword order."""
    return [(k, 1.0) for k, n in c.items() for _ in range(n)]


# id -> (votes in arrival order, ranked by count, ranked by weight)
RANKING: dict[str, tuple[Votes, list[str], list[str]]] = {
    "empty": ([], [], []),
    "more-votes-win": ([("a", 1.0), ("b", 1.0), ("b", 1.0)], ["b", "a"], ["b", "a"]),
    "equal-votes-more-weight": ([("a", 0.2), ("b", 0.9)], ["b", "a"], ["b", "a"]),
    "equal-votes-equal-weight-first-seen": ([("b", 1.0), ("a", 1.0)], ["b", "a"], ["b", "a"]),
    "first-seen-not-alphabetical": ([("z", 0.5), ("y", 0.5), ("x", 0.5)], ["z", "y", "x"], ["z", "y", "x"]),
    "none-is-not-a-vote": ([(None, 5.0), ("a", 1.0), (None, 5.0)], ["a"], ["a"]),
    # Weighted: many weak votes lose to one confident vote.
    "weighted-leader-differs": ([("a", 0.1), ("a", 0.1), ("b", 0.5)], ["a", "b"], ["b", "a"]),
    # Equal weight: more votes, then first seen.
    "weighted-tie-more-votes": ([("a", 0.5), ("b", 0.25), ("b", 0.25)], ["b", "a"], ["b", "a"]),
    "weighted-tie-first-seen": ([("a", 0.5), ("b", 0.5), ("c", 0.25)], ["a", "b", "c"], ["a", "b", "c"]),
}


@pytest.mark.parametrize(("votes", "by_count", "by_weight"), list(RANKING.values()), ids=list(RANKING))
def test_ranking_and_ties(votes: Votes, by_count: list[str], by_weight: list[str]) -> None:
    t = tally_of(votes)
    assert t.ranked() == by_count
    assert t.ranked(weighted=True) == by_weight
    assert t.leader() == (by_count[0] if by_count else None)
    assert t.leader(weighted=True) == (by_weight[0] if by_weight else None)
    c = sorted((t.counts[k] for k in t.counts), reverse=True) + [0, 0]
    assert t.top_two() == (c[0], c[1])
    assert None not in t.counts and sum(t.counts.values()) == sum(k is not None for k, _ in votes)


def test_ranking_does_not_depend_on_insertion_order_of_equal_votes_beyond_first_seen() -> None:
    # Same multiset of votes, different arrival order: only the first-seen tie break moves.
    assert tally_of([("a", 1), ("b", 1), ("a", 1), ("b", 1)]).leader() == "a"
    assert tally_of([("b", 1), ("a", 1), ("a", 1), ("b", 1)]).leader() == "b"


# id -> (votes, remaining samples, cannot be overtaken)
OVERTAKE: dict[str, tuple[Votes, int, bool]] = {
    "empty-never": ([], 0, False),
    "alone-nothing-left": (counts(a=1), 0, True),
    "tie-nothing-left": (counts(a=2, b=2), 0, False),
    "lead-beats-remaining": (counts(a=3, b=1), 1, True),
    "lead-equals-remaining-could-tie": (counts(a=3, b=1), 2, False),
    "runner-up-is-the-threat-not-third": (counts(a=4, b=2, c=1), 1, True),
    "runner-up-could-catch-up": (counts(a=4, b=2, c=1), 2, False),
    "weights-do-not-matter": ([("a", 0.01)] * 3 + [("b", 9.0)], 1, True),
}


@pytest.mark.parametrize(("votes", "remaining", "expected"), list(OVERTAKE.values()), ids=list(OVERTAKE))
def test_cannot_be_overtaken(votes: Votes, remaining: int, expected: bool) -> None:
    assert cannot_be_overtaken(tally_of(votes), remaining) is expected


def _beta_integral(a: int, b: int, steps: int = 2000) -> float:
    """P(X > 1/2) for X ~ Beta(a, b), by Simpson's rule on the density."""
    norm = math.gamma(a) * math.gamma(b) / math.gamma(a + b)

    def pdf(x: float) -> float:
        return x ** (a - 1) * (1 - x) ** (b - 1) / norm

    h = 0.5 / steps
    total = pdf(0.5) + pdf(1.0)
    for i in range(1, steps):
        total += (4 if i % 2 else 2) * pdf(0.5 + i * h)
    return total * h / 3


SMALL = [(f, s) for f in range(7) for s in range(7)]


@pytest.mark.parametrize(("first", "second"), SMALL, ids=[f"{f}-{s}" for f, s in SMALL])
def test_beta_leader_probability_matches_the_integral(first: int, second: int) -> None:
    p = beta_leader_probability(first, second)
    assert p == pytest.approx(_beta_integral(first + 1, second + 1), abs=1e-9)
    assert p + beta_leader_probability(second, first) == pytest.approx(1.0)


def test_beta_leader_probability_known_values() -> None:
    assert beta_leader_probability(0, 0) == 0.5
    assert beta_leader_probability(3, 3) == 0.5
    assert beta_leader_probability(1, 0) == 0.75
    assert beta_leader_probability(4, 0) == 31 / 32
    # More agreement, more confidence.
    assert beta_leader_probability(5, 1) > beta_leader_probability(4, 1) > beta_leader_probability(3, 1)


# id -> (rule, votes so far, keys of the current window (all of it finished), remaining, threshold, stop)
STOP: dict[str, tuple[str, Votes, list[str | None], int, float, bool]] = {
    # Nothing left to sample: every rule stops, even with no answer at all.
    "esc-nothing-left": ("esc", [], [], 0, 0.95, True),
    "adaptive-nothing-left": ("adaptive", counts(a=1, b=1), ["a", "b"], 0, 0.95, True),
    "overtake-below-zero": ("overtake", [], [], -1, 0.95, True),
    # ESC: the whole window agrees and has more than one member.
    "esc-window-agrees": ("esc", counts(a=4, b=3), ["a"] * 4, 4, 0.95, True),
    "esc-window-of-two-agrees": ("esc", counts(a=2), ["a", "a"], 6, 0.95, True),
    "esc-window-of-one": ("esc", counts(a=1), ["a"], 7, 0.95, False),
    "esc-window-disagrees": ("esc", counts(a=3, b=1), ["a", "a", "b", "a"], 4, 0.95, False),
    "esc-no-answers-do-not-agree": ("esc", [], [None, None, None], 5, 0.95, False),
    "esc-one-missing-answer": ("esc", counts(a=3), ["a", None, "a", "a"], 4, 0.95, False),
    "esc-window-not-finished": ("esc", counts(a=2), [], 6, 0.95, False),
    "esc-ignores-adaptive": ("esc", counts(a=4), ["a", "b"], 10, 0.5, False),
    "esc-stops-when-not-overtakable": ("esc", counts(a=5, b=1), ["a", "b"], 2, 0.95, True),
    # Adaptive-Consistency: the Beta posterior of the leader over the runner-up.
    "adaptive-4-0-above-095": ("adaptive", counts(a=4), [], 10, 0.95, True),
    "adaptive-3-0-below-095": ("adaptive", counts(a=3), [], 10, 0.95, False),
    "adaptive-3-0-above-090": ("adaptive", counts(a=3), [], 10, 0.90, True),
    "adaptive-needs-two-votes": ("adaptive", counts(a=1), [], 10, 0.5, False),
    "adaptive-6-2-below": ("adaptive", counts(a=6, b=2), [], 10, 0.99, False),
    "adaptive-ignores-window": ("adaptive", counts(a=1, b=1), ["a", "a"], 10, 0.95, False),
    # Overtake: only when the runner-up cannot catch up.
    "overtake-yes": ("overtake", counts(a=3, b=1), [], 1, 0.95, True),
    "overtake-no": ("overtake", counts(a=3, b=1), [], 2, 0.95, False),
    "overtake-ignores-window": ("overtake", counts(a=2), ["a", "a"], 5, 0.95, False),
    "overtake-ignores-adaptive": ("overtake", counts(a=4), [], 10, 0.5, False),
}


@pytest.mark.parametrize(("rule", "votes", "window", "remaining", "threshold", "stop"), list(STOP.values()),
                         ids=list(STOP))
def test_should_stop(rule: str, votes: Votes, window: list[str | None], remaining: int, threshold: float,
                     stop: bool) -> None:
    assert should_stop(rule, tally_of(votes), window, remaining, threshold) is stop
