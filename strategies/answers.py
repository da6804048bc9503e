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

_NUM = r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+"
_ANSWER_IS = re.compile(r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*(.+)", re.I)
_CHOICE = re.compile(r"^\(?([A-E])\)?(?:[.):\s]|$)")
_NUMBER = re.compile(_NUM)
_FRAC = re.compile(r"\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}")


def _boxed(text: str) -> str | None:
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
    text = text.strip()
    if not text:
        return None
    boxed = _boxed(text)
    if boxed is not None:
        return boxed.strip()
    said = _ANSWER_IS.findall(text)
    if said:
        return said[-1].strip().split("\n")[0].rstrip(". ")
    numbers = _NUMBER.findall(text)
    if numbers:
        return numbers[-1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else None


def _as_number(s: str) -> Fraction | None:
    s = _FRAC.sub(r"\1/\2", s).replace("$", "").replace(",", "").strip().rstrip(".")
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
    choice = _CHOICE.match(answer.strip())
    if choice and len(answer.strip()) <= 4:
        return choice.group(1)
    number = _as_number(answer)
    if number is not None:
        return str(number)
    norm = re.sub(r"[\s.,;:!]+", " ", answer.lower()).strip()
    return norm or None


def answer_key(text: str) -> str | None:
    return key(extract(text))
