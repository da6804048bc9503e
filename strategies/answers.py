"""Final-answer extraction and comparison for voting.

Self-consistency (Wang et al. 2022, arXiv:2203.11171) votes over *final answers*,
not texts, so each candidate's answer is reduced to a key: ``\\boxed{...}``
first, then an explicit "the answer is ..." / "final answer: ...", then a
multiple-choice letter, then the last number, then the final line. Numbers and
fractions compare by value (``0.5`` == ``1/2`` == ``\\frac{1}{2}``).
"""
from __future__ import annotations

import re
from fractions import Fraction

# Commas only as thousands separators: "1,200" is one number, "1,2" is two.
_NUM = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+"
# "is" as a word ("isn't" is no answer), optionally "is:"; markdown bold around it.
_ANSWER_IS = re.compile(r"(?:final answer|the answer|answer)[*_]*\s*(?:is\b\s*:?|:|=)[*_]*\s*(.+)", re.I)
# Where a stated answer ends: a new sentence, or its justification.
_ANSWER_END = re.compile(r"\.\s+(?=[A-Z])|;|,?\s+(?:because|since)\b", re.I)
# A whole answer that is a choice: "(B)", "(B) 17", "B", "B.", "B) 17", "B: 17".
_CHOICE = re.compile(r"\(([A-E])\)(?!\S)|([A-E])(?:[.):]|$)(?!\S)")
# A choice inside text: "(C)" not part of a call like "P(C)", or a line that is only a letter.
_CHOICE_IN_TEXT = re.compile(r"(?<![\w)\\])\(([A-E])\)(?![\w(])|^[ \t*]*\(?([A-E])[.)]?[ \t*]*$", re.M)
_NUMBER = re.compile(_NUM)
_FRAC = re.compile(r"\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def boxed(text: str) -> str | None:
    """The contents of the last ``\\boxed{...}`` (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def extract(text: str) -> str | None:
    """The final answer in ``text`` as written, or None when there is none."""
    text = text.strip().replace("\u2212", "-")  # a typeset minus sign is still a minus
    if not text:
        return None
    box = boxed(text)
    if box is not None:
        return box.strip()
    said = _ANSWER_IS.findall(text)
    if said:
        return _ANSWER_END.split(said[-1].strip(), 1)[0].strip(" *").rstrip(". ").strip(" *")
    if "\n" not in text and _CHOICE.match(text.strip(" *$")):
        return text  # the whole answer is a choice, as in "B) 17"
    choices = list(_CHOICE_IN_TEXT.finditer(text))
    if choices:
        return choices[-1].group(0).strip(" \t*")
    # \frac{a}{b} is one number, not its last digits.
    numbers = _NUMBER.findall(_FRAC.sub(r"\1/\2", text))
    if numbers:
        return numbers[-1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else None


def _as_number(s: str) -> Fraction | None:
    s = _FRAC.sub(r"\1/\2", s).replace("\u2212", "-").replace("$", "")
    s = _THOUSANDS.sub("", s).strip().rstrip(".")
    m = re.fullmatch(r"(-?)(\d+(?:\.\d+)?|\.\d+)(?:/(\d+))?\s*%?", s)
    if not m:
        found = _NUMBER.findall(s)
        if len(found) != 1 or len(s) > len(found[0]) + 12:
            return None
        return _as_number(found[0])
    try:
        value = Fraction(m.group(2)) / (Fraction(m.group(3)) if m.group(3) else 1)
    except ZeroDivisionError:
        return None
    return -value if m.group(1) else value


def key(answer: str | None) -> str | None:
    """A canonical key: equal keys are the same answer."""
    if answer is None:
        return None
    choice = _CHOICE.match(answer.strip(" \t\n*$").rstrip("."))
    if choice:
        return choice.group(1) or choice.group(2)
    number = _as_number(answer)
    if number is not None:
        return str(number)
    norm = re.sub(r"[\s.,;:!]+", " ", answer.lower()).strip()
    return norm or None


def answer_key(text: str) -> str | None:
    return key(extract(text))
