"""A Responses request as a ``ChatCompletionRequest``: the one place this
surface meets the chat path, whose prepare step, plans, strategies and events
then run it unchanged.

What each field becomes (README, "OpenAI Responses API"):

- ``instructions`` -> a system message first (not carried over by
  ``previous_response_id``, as OpenAI does); ``input`` -> chat turns, after the
  stored conversation of ``previous_response_id`` (its input and output items).
  ``message`` items keep their role (``developer`` and ``system`` as given);
  ``reasoning``, assistant ``message`` and ``function_call`` items in a row are
  one assistant turn (its reasoning, text and ``tool_calls``);
  ``function_call_output`` -> a ``tool`` message.
- A ``reasoning`` item is that turn's reasoning (rendered back when ``[model]
  keep_reasoning``) only when it can be trusted as this server's: its
  ``encrypted_content`` opens (server/responses_seal.py; else 400
  ``invalid_encrypted_content``), or it is a stored response's item, by ``id``
  (else 400). Its plain ``content`` from a client is never trusted.
- A last item of the assistant's (prefill) -> 400: the chat template opens a new turn.
- ``max_output_tokens`` -> ``max_completion_tokens`` (thinking plus answer);
  ``text.format`` -> ``response_format``; ``tools`` (functions, and
  ``code_interpreter`` = ponder's sandboxed interpreter), ``tool_choice``,
  ``parallel_tool_calls``, ``temperature``, ``top_p``, ``user``, and ponder's
  ``seed``, ``top_k``, ``timeout`` as on the chat route.
- ``reasoning``: OpenAI's ``effort`` and ponder's own keys (strategy, budgets,
  samples...) in the one object, as the chat route's ``reasoning``;
  ``summary`` is this surface's (server/responses_summary.py);
  ``stream_candidates`` -> 400 (the Responses stream has no place for every
  candidate's thinking).

Errors the chat path raises name chat fields; :func:`renamed` names this surface's.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import APIError, bad_request
from .responses_seal import unseal
from .responses_wire import (
    CodeInterpreterTool,
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    ReasoningItem,
    ResponsesRequest,
)
from .secret_key import SecretKeys
from .surface import chat_request, rename_param, renamed_error
from .wire import ChatCompletionRequest

# A reasoning item's id -> its text, from the store (None: unknown to this client).
FindReasoning = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Source:
    """Where input items come from: the client's own, or the store's (trusted)."""

    keys: SecretKeys
    find_reasoning: FindReasoning
    history: list[Any] = field(default_factory=list)  # parsed items of previous_response_id


def to_chat(body: ResponsesRequest, source: Source) -> ChatCompletionRequest:
    """``body`` as the chat request that runs it; a 400 names what cannot be honoured."""
    items: list[tuple[str, Any, bool]] = [("previous_response_id", i, True) for i in source.history]
    given = [MessageItem(role="user", content=body.input)] if isinstance(body.input, str) else body.input
    items += [(f"input[{k}]" if not isinstance(body.input, str) else "input", i, False) for k, i in enumerate(given)]
    system = [{"role": "system", "content": body.instructions}] if body.instructions else []
    fields: dict[str, Any] = {"model": body.model, "messages": [*system, *_conversation(items, source)]}
    fields.update(_tools(body))
    fields.update(_reasoning(body))
    fields.update(_sampling(body))
    fmt = _format(body)
    if fmt is not None:
        fields["response_format"] = fmt
    return chat_request(fields, lambda exc: renamed(exc, body))


def _text(text: str) -> dict[str, str]:
    return {"type": "text", "text": text}


def _parts(content: Any) -> list[dict[str, str]]:
    return [_text(content)] if isinstance(content, str) else [_text(p.text) for p in content]


class _Turns:
    """Chat messages built item by item; the assistant turn stays open while its items come."""

    def __init__(self) -> None:
        self.out: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None

    def assistant(self, fresh: bool = False) -> dict[str, Any]:
        if self.open is None or fresh:
            self.open = {"role": "assistant", "content": []}
            self.out.append(self.open)
        return self.open

    def add(self, message: dict[str, Any]) -> None:
        self.open = None
        self.out.append(message)


def _conversation(items: list[tuple[str, Any, bool]], source: Source) -> list[dict[str, Any]]:
    if not items:
        raise bad_request("input must hold at least one item", "input")
    turns = _Turns()
    for param, item, trusted in items:
        if isinstance(item, MessageItem) and item.role != "assistant":
            turns.add({"role": item.role, "content": _parts(item.content)})
        elif isinstance(item, MessageItem):
            turns.assistant()["content"].extend(_parts(item.content))
        elif isinstance(item, FunctionCallItem):
            turns.assistant().setdefault("tool_calls", []).append(
                {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}})
        elif isinstance(item, FunctionCallOutputItem):
            turns.add({"role": "tool", "tool_call_id": item.call_id, "content": _parts(item.output)})
        else:
            open_turn = turns.open
            fresh = open_turn is not None and bool(open_turn["content"] or open_turn.get("tool_calls"))
            msg = turns.assistant(fresh)
            msg["reasoning"] = msg.get("reasoning", "") + _reasoning_text(param, item, trusted, source)
    last_param = items[-1][0]
    if turns.open is not None:
        raise bad_request("the last input item is the assistant's: ponder does not continue an assistant turn "
                          "(prefill); end with a user message or a function_call_output", last_param)
    return turns.out


def _reasoning_text(param: str, item: ReasoningItem, trusted: bool, source: Source) -> str:
    if trusted and item.content is not None:
        return "".join(c.text for c in item.content)
    if item.encrypted_content is not None:
        text = unseal(source.keys, item.encrypted_content)
        if text is None:
            raise bad_request("this reasoning item's encrypted_content does not open: it was not written by this "
                              "server (or its keys changed), or it was modified; send reasoning items back exactly "
                              "as they were returned", f"{param}.encrypted_content", "invalid_encrypted_content")
        return text
    text = source.find_reasoning(item.id) if item.id else None
    if text is None:
        raise bad_request("this reasoning item is not a stored response's (with this API key) and has no "
                          "encrypted_content; ask for include: [\"reasoning.encrypted_content\"] with store: "
                          "false, or continue with previous_response_id", param, "reasoning_not_found")
    return text


def _tools(body: ResponsesRequest) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if body.tools is not None:
        out["tools"] = [{"type": "code_interpreter"} if isinstance(t, CodeInterpreterTool) else
                        {"type": "function", "function": t.model_dump(exclude={"type"}, exclude_none=True)}
                        for t in body.tools]
    c = body.tool_choice
    if c is not None:
        out["tool_choice"] = c if isinstance(c, str) else {"type": "function", "function": {"name": c.name}}
    if body.parallel_tool_calls is not None:
        out["parallel_tool_calls"] = body.parallel_tool_calls
    return out


def _reasoning(body: ResponsesRequest) -> dict[str, Any]:
    if body.reasoning is None:
        return {}
    reasoning = body.reasoning.model_dump(exclude_unset=True, exclude={"summary"})
    if reasoning.get("stream_candidates"):
        raise bad_request("the Responses stream has no place for every candidate's thinking; leave "
                          "stream_candidates out (the selected candidate's thinking is returned)",
                          "reasoning.stream_candidates")
    return {"reasoning": reasoning} if reasoning else {}


def _format(body: ResponsesRequest) -> dict[str, Any] | None:
    fmt = body.text.format if body.text is not None else None
    if fmt is None:
        return None
    if fmt.type != "json_schema":
        for name in ("name", "schema_", "strict", "description"):
            if getattr(fmt, name) is not None:
                what = name.rstrip("_")
                raise bad_request(f"text.format.{what} belongs to a json_schema format, not {fmt.type}",
                                  f"text.format.{what}")
        return {"type": fmt.type}
    if fmt.name is None or fmt.schema_ is None:
        missing = "name" if fmt.name is None else "schema"
        raise bad_request(f"a json_schema format needs {missing}", f"text.format.{missing}")
    schema = {"name": fmt.name, "schema": fmt.schema_,
              **{k: v for k, v in (("strict", fmt.strict), ("description", fmt.description)) if v is not None}}
    return {"type": "json_schema", "json_schema": schema}


def _sampling(body: ResponsesRequest) -> dict[str, Any]:
    out: dict[str, Any] = {"stream": body.stream}
    if body.max_output_tokens is not None:
        out["max_completion_tokens"] = body.max_output_tokens
    for name in ("temperature", "top_p", "top_k", "seed", "timeout", "user"):
        if getattr(body, name) is not None:
            out[name] = getattr(body, name)
    return out


# Chat fields in errors -> this surface's: (pattern, replacement) on the param.
_PARAMS = (
    (r"^max_completion_tokens", "max_output_tokens"),
    (r"^response_format\.json_schema\.schema", "text.format.schema"),
    (r"^response_format.*", "text.format"),
    (r"^tools\[(\d+)\]\.function", r"tools[\1]"),
    (r"^messages\[.*", "input"),  # the chat turns are not the client's items one for one
    (r"^messages$", "input"),
)
# ... and in messages.
_WORDS = {"max_completion_tokens": "max_output_tokens", "response_format": "text.format",
          "reasoning_effort": "reasoning.effort"}


def renamed(exc: APIError, body: ResponsesRequest) -> APIError:
    """``exc`` raised by the chat path for ``body``, naming this surface's fields."""
    param = rename_param(exc.param, _PARAMS)
    asked = body.reasoning is not None and body.reasoning.strategy is not None
    if exc.code == "tool_unavailable" and not asked:
        param = "tools"  # the client asked for the code interpreter as a tool
    return renamed_error(exc, param, _WORDS)
