"""Final-answer extraction (strategies/answers.py) and the keys votes compare.

Cases marked ``was-wrong`` failed before the fix that came with these tests.
"""
from __future__ import annotations

import pytest

from strategies.answers import answer_key, extract, key

# id -> (text, what extract() returns, its key)
EXTRACT: dict[str, tuple[str, str | None, str | None]] = {
    # \boxed{} wins over everything, braces nest, the last box wins.
    "boxed": ("so x is \\boxed{42}.", "42", "42"),
    "boxed-nested-frac": ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", "1/2"),
    "boxed-nested-power": ("Thus \\boxed{x^{2}+1} holds", "x^{2}+1", "x^{2}+1"),
    "boxed-last-wins": ("first \\boxed{1}, corrected: \\boxed{2}", "2", "2"),
    "boxed-over-answer-is": ("The answer is 5 so \\boxed{6}", "6", "6"),
    "boxed-over-later-number": ("\\boxed{7} (checked 3 times)", "7", "7"),
    "boxed-unclosed-falls-back": ("\\boxed{7", "7", "7"),
    "boxed-empty-is-no-answer": ("\\boxed{}", "", None),
    # "the answer is X" / "Final answer: X": the last statement, its first sentence.
    "the-answer-is": ("Adding up, the answer is 42.", "42", "42"),
    "final-answer-colon": ("Work...\nFinal answer: 1,200", "1,200", "1200"),
    "answer-equals": ("answer = 2", "2", "2"),
    "answer-is-last-statement-wins": ("The answer is 5\nNo wait. The answer is 6", "6", "6"),
    "was-wrong-answer-then-check": ("The answer is 12. Check: 3*4=12, 2+10=12 and 7 is off.", "12", "12"),
    "answer-is-words": ("The answer is Paris.", "Paris", "paris"),
    "was-wrong-answer-is-colon-choice": ("The final answer is: (B)", "(B)", "B"),
    "was-wrong-answer-then-sentence": ("The answer is 42. This is because 6*7=42 and 40+2=42.", "42", "42"),
    "was-wrong-answer-because": ("The answer is B because the others fail", "B", "B"),
    "was-wrong-markdown-bold": ("**Final Answer:** B", "B", "B"),
    "was-wrong-markdown-bold-value": ("The answer is **(C)**.", "(C)", "C"),
    "was-wrong-isnt-is-no-answer": ("The answer isn't 5, it's 7", "7", "7"),
    # Multiple-choice letters.
    "choice-parenthesized": ("(B)", "(B)", "B"),
    "choice-period": ("B.", "B.", "B"),
    "choice-bare": ("B", "B", "B"),
    "choice-answer-is": ("The answer is (C).", "(C)", "C"),
    "was-wrong-choice-answer-with-value": ("Answer: D) 17", "D) 17", "D"),
    "was-wrong-choice-with-value": ("B) 17", "B) 17", "B"),
    "was-wrong-choice-in-text": ("Option (C) is right: it gives 17 apples.", "(C)", "C"),
    "was-wrong-choice-alone-on-last-line": ("3 options fail, so:\nB.", "B.", "B"),
    "function-call-is-not-a-choice": ("so P(A) = 0.3", "0.3", "3/10"),
    "a-word-is-not-a-choice": ("A triangle", "A triangle", "a triangle"),
    # Otherwise the last number.
    "last-number": ("We get 3 then 7.", "7", "7"),
    "negative": ("x = -5", "-5", "-5"),
    "negative-decimal": ("It is -3.5 degrees", "-3.5", "-7/2"),
    "thousands": ("They sold 1,234,567 cars", "1,234,567", "1234567"),
    "percent-by-value": ("The rate is 50%", "50", "50"),
    "decimal-without-zero": ("p = .5", ".5", "1/2"),
    "was-wrong-latex-fraction": ("the ratio is $\\frac{3}{4}$", "3/4", "3/4"),
    "was-wrong-latex-negative-fraction": ("so $x = \\frac{-1}{2}$", "-1/2", "-1/2"),
    "was-wrong-unicode-minus": ("x = \u22125", "-5", "-5"),
    "was-wrong-comma-list-is-not-a-number": ("the pair 3,4", "4", "4"),
    # Otherwise the final line; nothing at all is None.
    "final-line": ("no numbers here\nParis, France\n", "Paris, France", "paris france"),
    "empty": ("", None, None),
    "blank": ("  \n\t ", None, None),
}


@pytest.mark.parametrize(("text", "extracted", "keyed"), list(EXTRACT.values()), ids=list(EXTRACT))
def test_extract_and_key(text: str, extracted: str | None, keyed: str | None) -> None:
    assert extract(text) == extracted
    assert key(extract(text)) == keyed
    assert answer_key(text) == keyed


# Answers in each group are one answer; answers of different groups are not.
SAME: dict[str, list[str]] = {
    "one-half": ["0.5", "1/2", "\\frac{1}{2}", "\\dfrac{1}{2}", "$\\frac{1}{2}$", ".5", "2/4", "0.50"],
    "minus-one-half": ["-0.5", "-1/2", "-\\frac{1}{2}", "\\frac{-1}{2}", "\u22120.5"],
    "twelve-hundred": ["1,200", "1200", "1200.0", "1,200.00", "$1,200$", "1200."],
    "fifty": ["50", "50%", "50 %", "50\\%", "50.0"],
    "choice-b": ["B", "(B)", "B.", "B)", "(B).", "B: 17", "**B**", "(B) 17"],
    "choice-c": ["C"],
    "five": ["5", "+5", "$5", "5 apples"],
    "minus-five": ["-5", "\u22125"],
    "twelve": ["12"],
    "one-comma-two": ["1,2", "1, 2"],
    "paris": ["Paris", "paris.", " PARIS "],
}


@pytest.mark.parametrize("group", list(SAME), ids=list(SAME))
def test_same_answers_share_a_key(group: str) -> None:
    keys = {key(a) for a in SAME[group]}
    assert len(keys) == 1 and None not in keys, keys
    others = {key(a) for g, answers in SAME.items() if g != group for a in answers}
    assert keys.isdisjoint(others), f"{group} collides with another group"


@pytest.mark.parametrize("answer", [None, "", "   ", "...", ";"], ids=["none", "empty", "blank", "dots", "semicolon"])
def test_no_answer_has_no_key(answer: str | None) -> None:
    assert key(answer) is None


def test_division_by_zero_is_not_a_number() -> None:
    assert key("1/0") == "1/0"
