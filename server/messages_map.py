"""An Anthropic Messages request as a ``ChatCompletionRequest``: the one place
this surface meets the chat path, whose prepare step, plans, strategies and
events then run it unchanged.

What each field becomes (README, "Anthropic Messages API"):

- ``system`` -> a system message; ``messages`` -> chat turns, consecutive turns
  of one role combined (as Anthropic does); ``tool_use`` -> the assistant's
  ``tool_calls``, ``tool_result`` -> ``tool`` messages (``is_error`` written as
  an ``Error:`` prefix the model reads); a ``thinking`` block whose signature
  verifies -> that turn's reasoning (rendered back when ``[model]
  keep_reasoning``), one that does not -> 400. ``redacted_thinking`` -> 400:
  ponder never writes one, so it came from another server and can be neither
  checked nor read, and dropping it would change the conversation unseen.
  A final assistant turn (prefill) -> 400: the chat template opens a new turn.
- ``max_tokens`` -> ``max_completion_tokens`` (thinking plus answer);
  ``stop_sequences`` -> ``stop``; ``metadata.user_id`` -> ``user``;
  ``tools`` / ``tool_choice`` (``auto``, ``any`` = required, ``tool`` = named,
  ``none``; ``disable_parallel_tool_use`` = ``parallel_tool_calls: false``).
- ``thinking: enabled`` -> the chat route's ``thinking``, whose ``budget_tokens``
  caps every thinking phase (an upper bound the planner may only lower, to keep
  the answer its reserve); it must be below ``max_tokens``, as Anthropic says,
  but may be below Anthropic's 1024. ``adaptive`` -> the ``auto`` strategy (a
  probe estimates difficulty, a plan per level decides how much to think);
  ``disabled`` -> no thinking. ``display: "omitted"`` -> 400 (it needs the
  thinking encrypted into the signature, which ponder does not do).
- ``output_config.effort`` -> ``reasoning_effort``; ``output_config.format`` ->
  ``response_format`` json_schema; ponder's ``reasoning``, ``seed`` and
  ``timeout`` as on the chat route (``reasoning.stream_candidates`` -> 400:
  Anthropic's stream has no place for candidates' thinking).

Errors the chat path raises name chat fields; :func:`renamed` names this
surface's instead.
"""
from __future__ import annotations

import json
from typing import Any

from .errors import APIError, bad_request
from .messages_wire import (
    CountTokensRequest,
    InputMessage,
    MessagesRequest,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from .secret_key import SecretKeys
from .surface import chat_request, rename_param, renamed_error
from .wire import ChatCompletionRequest

# The purpose thinking signatures are made for (server/secret_key.py).
THINKING = "anthropic-messages/thinking"


def sign_thinking(keys: SecretKeys, text: str) -> str:
    return keys.sign(THINKING, text.encode())


def to_chat(body: CountTokensRequest, keys: SecretKeys) -> ChatCompletionRequest:
    """``body`` as the chat request that runs it; a 400 names what cannot be honoured."""
    fields: dict[str, Any] = {"model": body.model, "messages": [*_system(body), *_conversation(body.messages, keys)]}
    fields.update(_tools(body))
    fields.update(_reasoning(body))
    fmt = body.output_config.format if body.output_config else None
    if fmt is not None:
        fields["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt.schema_}}
    if isinstance(body, MessagesRequest):
        fields.update(_sampling(body))
    return chat_request(fields, lambda exc: renamed(exc, body))


def _text(text: str) -> dict[str, str]:
    return {"type": "text", "text": text}


def _system(body: CountTokensRequest) -> list[dict[str, Any]]:
    s = body.system
    if s is None or s == [] or s == "":
        return []
    return [{"role": "system", "content": s if isinstance(s, str) else [_text(b.text) for b in s]}]


def _turns(messages: list[InputMessage]) -> list[tuple[str, list[tuple[str, Any]]]]:
    """Consecutive messages of one role as one turn: (role, [(param, block)])."""
    turns: list[tuple[str, list[tuple[str, Any]]]] = []
    for i, m in enumerate(messages):
        blocks = [(f"messages[{i}].content", TextBlock(type="text", text=m.content))] if isinstance(m.content, str) \
            else [(f"messages[{i}].content[{j}]", b) for j, b in enumerate(m.content)]
        if turns and turns[-1][0] == m.role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((m.role, blocks))
    return turns


def _conversation(messages: list[InputMessage], keys: SecretKeys) -> list[dict[str, Any]]:
    if messages[-1].role == "assistant":
        raise bad_request("the last message is the assistant's: ponder does not continue an assistant turn "
                          "(prefill); end with a user message", f"messages[{len(messages) - 1}]")
    out: list[dict[str, Any]] = []
    for role, blocks in _turns(messages):
        out.extend(_user(blocks) if role == "user" else [_assistant(blocks, keys)])
    return out


def _user(blocks: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """A user turn: its tool results as ``tool`` messages, its text as user messages, in order."""
    out: list[dict[str, Any]] = []
    for param, b in blocks:
        if isinstance(b, ToolResultBlock):
            out.append({"role": "tool", "tool_call_id": b.tool_use_id, "content": _result(b)})
        elif isinstance(b, TextBlock):
            if out and out[-1]["role"] == "user":
                out[-1]["content"].append(_text(b.text))
            else:
                out.append({"role": "user", "content": [_text(b.text)]})
        else:
            raise bad_request(f"a {b.type} block belongs to an assistant message", param)
    return out


def _result(b: ToolResultBlock) -> list[dict[str, str]]:
    parts = [] if b.content is None else [_text(b.content)] if isinstance(b.content, str) \
        else [_text(t.text) for t in b.content]
    return [_text("Error: "), *parts] if b.is_error else parts


def _assistant(blocks: list[tuple[str, Any]], keys: SecretKeys) -> dict[str, Any]:
    text: list[dict[str, str]] = []
    thought: list[str] = []
    calls: list[dict[str, Any]] = []
    for param, b in blocks:
        if isinstance(b, TextBlock):
            text.append(_text(b.text))
        elif isinstance(b, ThinkingBlock):
            if not keys.verify(THINKING, b.thinking.encode(), b.signature):
                raise bad_request("this thinking block's signature does not verify: it was not written by this "
                                  "server (or its keys changed), or the thinking was modified; send thinking "
                                  "blocks back exactly as they were returned", f"{param}.signature")
            thought.append(b.thinking)
        elif isinstance(b, ToolUseBlock):
            calls.append({"id": b.id, "type": "function", "function": {
                "name": b.name, "arguments": json.dumps(b.input, ensure_ascii=False)}})
        elif isinstance(b, RedactedThinkingBlock):
            raise bad_request("ponder never returns redacted_thinking blocks, so this one came from another "
                              "server and can be neither verified nor read; leave it out", param)
        else:
            raise bad_request(f"a {b.type} block belongs to a user message", param)
    msg: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        msg["tool_calls"] = calls
    if thought:
        msg["reasoning"] = "".join(thought)
    return msg


def _tools(body: CountTokensRequest) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if body.tools is not None:
        out["tools"] = [{"type": "function", "function": {
            "name": t.name, "parameters": t.input_schema,
            **({"description": t.description} if t.description is not None else {}),
            **({"strict": t.strict} if t.strict is not None else {})}} for t in body.tools]
    c = body.tool_choice
    if c is None:
        return out
    out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}.get(c.type) or {
        "type": "function", "function": {"name": c.name}}
    if getattr(c, "disable_parallel_tool_use", None):
        out["parallel_tool_calls"] = False
    return out


def _reasoning(body: CountTokensRequest) -> dict[str, Any]:
    """Anthropic's thinking and effort, and ponder's own reasoning object."""
    out: dict[str, Any] = {}
    reasoning = body.reasoning.model_dump(exclude_unset=True) if body.reasoning is not None else {}
    if reasoning.get("stream_candidates"):
        raise bad_request("Anthropic's stream has no place for every candidate's thinking; leave "
                          "stream_candidates out (the selected candidate's thinking is returned)",
                          "reasoning.stream_candidates")
    th = body.thinking
    if th is not None and getattr(th, "display", None) == "omitted":
        raise bad_request("display \"omitted\" needs the thinking sealed into its signature, which ponder does "
                          "not do; use \"summarized\" (ponder returns the thinking in full)", "thinking.display")
    if th is not None and th.type == "adaptive":
        if reasoning.get("strategy") not in (None, "auto"):
            raise bad_request(f"thinking \"adaptive\" runs the auto strategy, but reasoning.strategy is "
                              f"{reasoning['strategy']!r}", "thinking.type")
        reasoning["strategy"] = "auto"
    elif th is not None and th.type == "enabled":
        if isinstance(body, MessagesRequest) and th.budget_tokens >= body.max_tokens:
            raise bad_request(f"budget_tokens ({th.budget_tokens}) must be less than max_tokens "
                              f"({body.max_tokens})", "thinking.budget_tokens")
        out["thinking"] = {"type": "enabled", "budget_tokens": th.budget_tokens}
    elif th is not None:
        out["thinking"] = {"type": "disabled"}
    if reasoning:
        out["reasoning"] = reasoning
    if body.output_config is not None and body.output_config.effort is not None:
        out["reasoning_effort"] = body.output_config.effort
    return out


def _sampling(body: MessagesRequest) -> dict[str, Any]:
    out: dict[str, Any] = {"max_completion_tokens": body.max_tokens, "stream": body.stream}
    for name in ("temperature", "top_p", "top_k", "seed", "timeout"):
        if getattr(body, name) is not None:
            out[name] = getattr(body, name)
    if body.stop_sequences:
        out["stop"] = list(body.stop_sequences)
    if body.metadata is not None and body.metadata.user_id is not None:
        out["user"] = body.metadata.user_id
    return out


# Chat fields in errors -> this surface's: (pattern, replacement) on the param.
_PARAMS = (
    (r"^max_completion_tokens", "max_tokens"),
    (r"^stop$", "stop_sequences"),
    (r"^reasoning_effort", "output_config.effort"),
    (r"^response_format\.json_schema\.schema", "output_config.format.schema"),
    (r"^response_format.*", "output_config.format"),
    (r"^tools\[(\d+)\]\.function\.parameters", r"tools[\1].input_schema"),
    (r"^tools\[(\d+)\]\.function", r"tools[\1]"),
    (r"^parallel_tool_calls", "tool_choice.disable_parallel_tool_use"),
    (r"^user$", "metadata.user_id"),
    (r"^messages\[.*", "messages"),  # the chat turns are not the client's messages one for one
)
# ... and in messages.
_WORDS = {"max_completion_tokens": "max_tokens", "response_format": "output_config.format",
          "reasoning_effort": "output_config.effort", "parallel_tool_calls": "tool_choice.disable_parallel_tool_use"}


def renamed(exc: APIError, body: CountTokensRequest) -> APIError:
    """``exc`` raised by the chat path for ``body``, naming this surface's fields."""
    param = rename_param(exc.param, _PARAMS)
    adaptive = body.thinking is not None and body.thinking.type == "adaptive"
    if param == "reasoning.strategy" and adaptive and not (body.reasoning and body.reasoning.strategy):
        param = "thinking.type"  # the client chose auto by asking for adaptive thinking
    return renamed_error(exc, param, _WORDS)
