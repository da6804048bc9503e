"""Ledger: per-choice token accounting; Usage: the sum over choices."""
from __future__ import annotations

import pytest

from strategies.ledger import Ledger, Usage


@pytest.mark.parametrize(
    ("thinking", "answer", "budget", "remaining"),
    [
        (0, 0, None, None),
        (100, 50, None, None),
        (0, 0, 10, 10),
        (3, 4, 10, 3),
        (6, 4, 10, 0),
        (8, 7, 10, 0),  # overspent: never negative
    ],
    ids=["unbounded-empty", "unbounded-used", "budget-fresh", "budget-partly-used", "budget-exact", "overspent"],
)
def test_remaining(thinking: int, answer: int, budget: int | None, remaining: int | None) -> None:
    led = Ledger(prompt_tokens=5, budget_tokens=budget)
    led.feed_thinking(thinking)
    led.feed_answer(answer)
    assert led.generated == thinking + answer
    assert led.remaining() == remaining


@pytest.mark.parametrize(
    ("budget", "spent", "wanted", "capped"),
    [
        (None, 0, 100, 100),
        (None, 999, 100, 100),
        (50, 0, 100, 50),
        (50, 0, 20, 20),
        (50, 40, 20, 10),
        (50, 50, 20, 0),
        (50, 70, 20, 0),
    ],
    ids=["unbounded", "unbounded-after-use", "clipped", "below-budget", "clipped-after-use", "exhausted", "overspent"],
)
def test_cap(budget: int | None, spent: int, wanted: int, capped: int) -> None:
    led = Ledger(prompt_tokens=1, budget_tokens=budget)
    led.feed_answer(spent)
    assert led.cap(wanted) == capped


def test_charges_split_by_channel() -> None:
    led = Ledger(prompt_tokens=7)
    for n in (3, 0, 2):
        led.feed_thinking(n)
    led.feed_answer(4)
    led.feed_thinking(1)  # a later round thinks again
    u = led.finish()
    assert (u.reasoning_tokens, u.completion_tokens, u.prompt_tokens) == (6, 10, 7)
    assert (led.thinking, led.answer) == (6, 4)


@pytest.mark.parametrize(
    ("prompt", "requests", "cached", "engine"),
    [
        (10, [], 0, (0, 0, 0)),
        (10, [(10, 0)], 0, (1, 10, 0)),
        (10, [(10, 8)], 8, (1, 10, 8)),
        # A continuation re-reads prompt + thinking from the cache; only the
        # first request counts as the client's prompt.
        (10, [(10, 3), (25, 24)], 3, (2, 35, 27)),
        (10, [(10, 0), (25, 24), (40, 39)], 0, (3, 75, 63)),
        # An engine that reports more hits than the client prompt is clipped.
        (10, [(12, 11)], 10, (1, 12, 11)),
    ],
    ids=["no-request", "cold", "warm", "continuation", "three-phases", "clipped-to-prompt"],
)
def test_prompt_and_cache_accounting(prompt: int, requests: list[tuple[int, int]], cached: int,
                                     engine: tuple[int, int, int]) -> None:
    led = Ledger(prompt_tokens=prompt)
    for p, c in requests:
        led.feed_prompt(p, c)
    u = led.finish()
    assert u.prompt_tokens == prompt
    assert u.cached_tokens == cached
    assert (u.engine_requests, u.engine_prompt_tokens, u.engine_cached_tokens) == engine


def test_finish_is_a_snapshot() -> None:
    led = Ledger(prompt_tokens=2, budget_tokens=100)
    led.feed_thinking(5)
    first = led.finish()
    led.feed_answer(3)
    assert first.completion_tokens == 5
    assert led.finish().completion_tokens == 8


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ([], Usage()),
        ([Usage(10, 5, 2, 4, 1, 10, 4)], Usage(10, 5, 2, 4, 1, 10, 4)),
        (
            # n choices share the prompt: counted once; generated tokens add up.
            [Usage(10, 5, 2, 0, 2, 25, 14), Usage(10, 7, 3, 9, 2, 27, 25), Usage(10, 1, 0, 9, 1, 10, 9)],
            Usage(10, 13, 5, 9, 5, 62, 48),
        ),
    ],
    ids=["empty", "one-choice", "three-choices"],
)
def test_usage_sum_over_choices(parts: list[Usage], expected: Usage) -> None:
    total = Usage()
    for u in parts:
        total = total + u
    assert total == expected


def test_usage_addition_is_commutative_for_choices() -> None:
    a = Usage(10, 5, 2, 0, 2, 25, 14)
    b = Usage(10, 7, 3, 9, 2, 27, 25)
    assert a + b == b + a
