"""The accuracy harness's problems and grading (loadtests/accuracy_tasks.py): a
benchmark is only as honest as its answer extraction, so it is tested like code."""
from __future__ import annotations

import json
import random

import pytest

from loadtests.accuracy_tasks import FAMILIES, json_answer, numeric_answer, prompt, tasks
from loadtests.bench_accuracy import majority_at, paired, per_problem


@pytest.mark.parametrize(("content", "expected"), [
    (r"\boxed{42}", 42),
    ("So the total is 40 + 2.\n" r"Therefore the answer is \(\boxed{42}\).", 42),
    (r"\boxed{1,234}", 1234),
    (r"\boxed{\$1234}", 1234),
    (r"\boxed{$ 1234}", 1234),
    (r"\boxed{-17}", -17),
    (r"\boxed{56.00}", 56),
    (r"\boxed{42 \text{ apples}}", 42),
    (r"\boxed{3} wait, no: \boxed{5}", 5),    # the last box counts
    (r"\boxed{12 or 13}", None),              # not one plain integer
    (r"\boxed{12.5}", None),                  # not an integer
    (r"\boxed{x + 1}", None),
    (r"\boxed{1,23}", None),                  # not a thousands grouping
    (r"\boxed{50\%}", None),                  # not a count
    (r"\boxed{}", None),
    (r"\boxed{42", None),                     # never closed
    ("Answer: 42", None),                     # no box: wrong, whatever it contains
    ("The answer is 42.", None),
    ("", None),
    (None, None),
], ids=lambda v: repr(v)[:30])
def test_numeric_answer_is_strict(content, expected):
    assert numeric_answer(content) == expected


@pytest.mark.parametrize(("content", "expected"), [
    ('{"total": 5, "most_expensive": "pen"}', {"total": 5, "most_expensive": "pen"}),
    ('```json\n{"total": 5, "most_expensive": "pen"}\n```', {"total": 5, "most_expensive": "pen"}),
    ('Here: {"total": 5}', None),   # prose around the object
    ("[1, 2]", None),               # not an object
    ("", None),
], ids=["plain", "fenced", "prose", "array", "empty"])
def test_json_answer(content, expected):
    assert json_answer(content) == expected


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_families_are_seeded_and_graded_by_their_truth(family):
    first, again, other = tasks(family, 12, seed=1), tasks(family, 12, seed=1), tasks(family, 12, seed=2)
    assert first == again
    assert [t.question for t in first] != [t.question for t in other]
    # Problem i does not depend on how many are drawn.
    assert tasks(family, 3, seed=1) == first[:3]
    for t in first:
        right = json.dumps(t.truth) if isinstance(t.truth, dict) else f"Work.\nSo it is \\(\\boxed{{{t.truth}}}\\)."
        wrong = (json.dumps({**t.truth, "total": t.truth["total"] + 1}) if isinstance(t.truth, dict)
                 else f"\\boxed{{{t.truth + 1}}}")
        assert t.grade(right) and not t.grade(wrong)
        assert ("\\boxed{}" in prompt(t)) == (family != "json")


def test_word_problem_answers_are_whole():
    for t in tasks("word", 200, seed=3):
        assert isinstance(t.truth, int) and t.truth > 0


def test_majority_vote_counts_only_answers():
    t = tasks("arith", 1, seed=1)[0]
    right, wrong = f"\\boxed{{{t.truth}}}", f"\\boxed{{{t.truth + 1}}}"
    rng = random.Random(0)
    assert majority_at(t, [right, right, wrong], 3, rng) == 1.0
    assert majority_at(t, [wrong, wrong, right], 3, rng) == 0.0
    # No answer never wins: one right answer beats two unreadable ones.
    assert majority_at(t, ["no idea", "???", right], 3, rng) == 1.0
    # A tie is broken at random: worth one half.
    assert majority_at(t, [right, wrong], 2, rng) == 0.5


def test_paired_savings_ratio_and_difference():
    # Adaptive spends half the tokens on every problem and loses one of ten.
    base = {i: (1.0, 100.0) for i in range(10)}
    adaptive = {i: (float(i != 3), 50.0) for i in range(10)}
    s = paired(adaptive, base, draws=500)
    assert s["problems"] == 10
    assert s["token_ratio"] == 0.5 and s["token_ratio_ci95"] == [0.5, 0.5]
    assert s["accuracy_diff"] == pytest.approx(-0.1)
    lo, hi = s["accuracy_diff_ci95"]
    assert lo <= -0.1 <= hi and lo >= -0.4 and hi <= 0.0
    # Only problems both ran are compared.
    assert paired({0: (1.0, 10.0), 5: (1.0, 10.0)}, {0: (0.0, 20.0)}, draws=50)["problems"] == 1


def testper_problem_scores_samples_as_majority_of_k():
    t = tasks("arith", 1, seed=1)[0]
    right, wrong = f"\\boxed{{{t.truth}}}", f"\\boxed{{{t.truth + 1}}}"
    row = {"family": "arith", "problems": 1, "n": 4,
           "records": [{"index": 0, "contents": [right, right, right, wrong], "tokens": 400, "correct": True}]}
    assert per_problem(row, 4, seed=1) == {0: (1.0, 400.0)}
    assert per_problem(row, 1, seed=1)[0][1] == 100.0
    assert per_problem({**row, "n": 1}, 0, seed=1) == {0: (1.0, 400.0)}
