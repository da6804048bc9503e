"""What every API surface that maps its request onto the chat path shares
(server/messages_map.py, server/responses_map.py): building the chat request,
and naming the surface's own fields in the errors the chat path raises.

A surface gives its renaming as data: ``(pattern, replacement)`` pairs applied
in order to an error's ``param``, and chat words to replace in its message.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from .errors import APIError, bad_request, loc_to_param
from .wire import ChatCompletionRequest

Patterns = tuple[tuple[str, str], ...]


def rename_param(param: str | None, patterns: Patterns) -> str | None:
    if param is None:
        return None
    for pattern, replacement in patterns:
        param = re.sub(pattern, replacement, param)
    return param


def renamed_error(exc: APIError, param: str | None, words: Mapping[str, str]) -> APIError:
    """``exc`` naming ``param`` instead of its own, and this surface's ``words`` in its message."""
    message, head = exc.message, ""
    if exc.param is not None and message.startswith(exc.param + ":"):
        message, head = message[len(exc.param):], str(param)
    if words:
        message = re.sub(r"\b(" + "|".join(map(re.escape, words)) + r")\b", lambda m: words[m.group(1)], message)
    return APIError(exc.status, head + message, param, exc.code, exc.headers)


def chat_request(fields: dict[str, Any], rename: Callable[[APIError], APIError]) -> ChatCompletionRequest:
    """``fields`` as the chat request that runs them; what the surface's own model let
    through and the chat model does not is a 400, renamed to the surface's fields."""
    try:
        return ChatCompletionRequest.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = loc_to_param(tuple(first["loc"]))
        raise rename(bad_request(f"{param}: {first['msg']}", param)) from None
