"""Seeded task families for the accuracy harness (loadtests/bench_accuracy.py), and
the strict answer checks that grade them.

Every family draws its problems from ``random.Random(f"{family}:{seed}:{i}")``, so a
seed names the same problems on every machine and problem ``i`` does not depend
on how many are drawn. Four families, chosen so that a 1.5B model answering
directly sits well inside (0, 1) and a different kind of compute helps each:

- ``word``: three-step word problems (start, change, then a multiple or a share);
  the model must carry a quantity through steps, where samples disagree.
- ``arith``: exact multi-digit arithmetic ``a * b - c`` (3 x 2 digits): direct
  answers slip a digit, programs do not.
- ``count``: counting integers in a range with two divisibility conditions; a
  direct answer needs inclusion-exclusion, a program just counts (code helps).
- ``json``: an order's total and its most expensive line as a JSON object, the
  answer checked field by field (structured output with a checkable answer).

Grading is strict: a numeric answer is the one integer in the *last*
``\boxed{...}`` (``\boxed{1,234}`` and ``\boxed{\\$1234}`` read as 1234); without
one the response is wrong, whatever numbers it contains. The prompt asks for
plain-text reasoning and a boxed answer. That wording was chosen on development
seed 1, never on the evaluation seed: asked for an ``Answer: <number>`` line,
Qwen2.5-Coder-1.5B boxed its answer anyway in 10 of 10 word problems (graded 0/10
though 3 were right), and without "no code" it often wrote a program and then
invented its output. A JSON answer must parse as
one object (a single fenced block is unwrapped) with exactly the asked keys and
values.
"""
from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from strategies.answers import boxed

ANSWER_LINE = ("Reason step by step in plain text, without code. "
               "Put the final answer, a single number, in \\boxed{}.")
JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"total": {"type": "integer"}, "most_expensive": {"type": "string"}},
    "required": ["total", "most_expensive"], "additionalProperties": False,
}


@dataclass(frozen=True)
class Task:
    family: str
    index: int
    question: str
    truth: int | dict[str, Any]

    def grade(self, content: str | None) -> bool:
        if isinstance(self.truth, dict):
            return json_answer(content) == self.truth
        return numeric_answer(content) == self.truth


# The contents of a box: one integer, possibly with $ (or \\$), thousands commas, ".0".
_NUMBER_IN_BOX = re.compile(r"\s*(?:\\?\$)?\s*(-?\d{1,3}(?:,\d{3})+|-?\d+)(?:\.0+)?\s*")


def numeric_answer(content: str | None) -> int | None:
    """The integer in the last ``\\boxed{}``, or None (a last box that is not one
    plain integer, say ``\\boxed{12 or 13}`` or ``\\boxed{x + 1}``, is no answer)."""
    if not content:
        return None
    box = boxed(content)
    if box is None:
        return None
    box = re.sub(r"\\text\{[^{}]*\}", "", box)  # \\boxed{42 \\text{ apples}}
    m = _NUMBER_IN_BOX.fullmatch(box)
    return int(m.group(1).replace(",", "")) if m else None


_FENCE = re.compile(r"^```(?:json)?\s*\n(.*?)\n?```$", re.S)


def json_answer(content: str | None) -> dict[str, Any] | None:
    """The JSON object that is the whole answer (one ```json fence allowed), else None."""
    if not content:
        return None
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


_NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivo", "Jia", "Kofi", "Lena"]
_THINGS = [("apples", "crate"), ("books", "box"), ("eggs", "carton"), ("pencils", "pack"), ("cards", "deck"),
           ("stamps", "sheet"), ("bolts", "bag"), ("tiles", "case")]


def _word(rng: random.Random, i: int) -> Task:
    name, (things, unit) = rng.choice(_NAMES), rng.choice(_THINGS)
    start, per, units = rng.randint(20, 90), rng.randint(6, 24), rng.randint(2, 6)
    gone = rng.randint(5, start - 5)
    kind = rng.randrange(3)
    have = start - gone + units * per
    if kind == 0:
        share = rng.choice([2, 3, 4, 5])
        have += (-have) % share  # make the share come out whole: add a few found ones
        found = have - (start - gone + units * per)
        q = (f"{name} has {start} {things}. {name} gives away {gone} of them, then buys {units} {unit}s "
             f"with {per} {things} in each{f' and finds {found} more' if found else ''}. "
             f"Finally {name} splits all the {things} equally among {share} friends. "
             f"How many {things} does each friend get?")
        return Task("word", i, q, have // share)
    if kind == 1:
        price = rng.randint(2, 9)
        q = (f"{name} has {start} {things} and sells {gone} of them. Then {name} buys {units} {unit}s "
             f"of {per} {things} each. Every {things[:-1]} left is worth ${price}. "
             f"What are all of {name}'s {things} worth, in dollars?")
        return Task("word", i, q, have * price)
    lost = rng.randint(2, 9)
    q = (f"A shop starts the day with {start} {things}. It sells {gone}, receives {units} {unit}s "
         f"of {per} {things} each, and then {lost} {things} are found damaged and thrown away. "
         f"How many {things} does the shop have at the end of the day?")
    return Task("word", i, q, have - lost)


def _arith(rng: random.Random, i: int) -> Task:
    a, b, c = rng.randint(101, 999), rng.randint(11, 99), rng.randint(100, 999)
    return Task("arith", i, f"What is {a} * {b} - {c}?", a * b - c)


def _count(rng: random.Random, i: int) -> Task:
    lo, hi = rng.randint(1, 100), rng.randint(300, 999)
    p, q = rng.sample([3, 4, 6, 7, 9, 11, 13], 2)
    n = sum(1 for x in range(lo, hi + 1) if x % p == 0 and x % q != 0)
    return Task("count", i, f"How many integers from {lo} to {hi} inclusive are divisible by {p} "
                            f"but not by {q}?", n)


_ITEMS = ["pen", "notebook", "stapler", "ruler", "marker", "folder", "eraser", "lamp", "mug", "calculator"]


def _json(rng: random.Random, i: int) -> Task:
    while True:  # draw again until the most expensive line is unique
        lines = [(item, rng.randint(1, 9), rng.randint(2, 60)) for item in rng.sample(_ITEMS, rng.randint(3, 5))]
        costs = sorted((qty * price for _, qty, price in lines), reverse=True)
        if costs[0] != costs[1]:
            break
    listing = "\n".join(f"- {qty} x {item} at ${price} each" for item, qty, price in lines)
    total = sum(qty * price for _, qty, price in lines)
    top = max(lines, key=lambda line: line[1] * line[2])[0]
    q = (f"An order has these lines:\n{listing}\n"
         "Reply with only a JSON object with two keys: \"total\" (the order's total in dollars, an integer) "
         "and \"most_expensive\" (the item whose line costs the most).")
    return Task("json", i, q, {"total": total, "most_expensive": top})


FAMILIES: dict[str, Callable[[random.Random, int], Task]] = {
    "word": _word, "arith": _arith, "count": _count, "json": _json}


def tasks(family: str, n: int, seed: int) -> list[Task]:
    make = FAMILIES[family]
    return [make(random.Random(f"{family}:{seed}:{i}"), i) for i in range(n)]


def prompt(task: Task) -> str:
    """The user message: the question, plus the answer-line rule for numeric families."""
    return task.question if task.family == "json" else f"{task.question}\n{ANSWER_LINE}"
