"""Request bodies read as strict JSON (RFC 8259): what Python's json module lets
through (NaN, huge numbers, repeated keys, lone surrogates) is a 400 here."""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

from .errors import APIError

_MAX_NUMBER_CHARS = 100
# A \u escape of a UTF-16 surrogate: the only way a lone surrogate gets into a parsed string.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _invalid(message: str) -> APIError:
    return APIError(400, message, code="invalid_json")


def _number(text: str, parse: type) -> int | float:
    if len(text) > _MAX_NUMBER_CHARS:
        raise _invalid(f"a number in the request body has more than {_MAX_NUMBER_CHARS} characters")
    value = parse(text)
    if not math.isfinite(value):
        raise _invalid(f"the number {text} in the request body is out of range")
    return value


def _constant(name: str) -> Any:
    raise _invalid(f"{name} is not valid JSON (RFC 8259 has no NaN or Infinity)")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _invalid(f"the request body repeats the key {dup!r} in one object")
    return obj


def _strings(value: Any) -> Iterator[str]:
    """Every key and string in a parsed body (without recursion: the body may be deep)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            yield v
        elif isinstance(v, dict):
            stack.extend(v)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def parse_body(raw: bytes) -> Any:
    """A request body as JSON (RFC 8259), refusing what Python's json module lets
    through: NaN / Infinity, numbers that overflow or run to thousands of digits,
    repeated keys (which value wins differs between parsers), lone surrogates
    (no tokenizer can encode them) and invalid UTF-8. Every refusal is a 400."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(f"the request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, object_pairs_hook=_object, parse_constant=_constant,
                           parse_int=lambda t: _number(t, int), parse_float=lambda t: _number(t, float))
    except json.JSONDecodeError as exc:
        raise _invalid(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise _invalid("the request body's JSON is nested too deeply") from None
    if _SURROGATE_ESCAPE.search(text) and any(_LONE_SURROGATE.search(s) for s in _strings(value)):
        raise _invalid("the request body has a string with an unpaired UTF-16 surrogate (\\ud800-\\udfff)")
    return value


