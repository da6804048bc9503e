"""The Anthropic Messages encoding: two folds over one event stream, the SSE
events of a streamed message and the non-streamed ``message``.

:class:`Blocks` turns the strategies' events into content-block operations
(start a block, add to it, stop it) exactly as Anthropic's stream has them:
a ``thinking`` block (its ``signature_delta``, an HMAC of its text under the
server's key, just before its stop), ``text`` blocks and ``tool_use`` blocks
whose ``input`` arrives as ``input_json_delta`` pieces. :class:`MessageStream`
writes each operation as an SSE event; :class:`MessageFold` applies them to a
message the way the SDK accumulates a stream, so the two agree by construction
(and a test holds them to it per strategy). Both are transport encoders
(server/transport.py).

Only the selected candidate's thinking is shown: candidates' tagged live
thinking has no place in Anthropic's stream (the mapping refuses
``stream_candidates``). ponder's extras ride where the SDK keeps unknown keys:
``reasoning_plan`` on the message (and on ``message_start``'s), ``reasoning_trace``
on the message and on the ``message_delta`` event.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic_core import from_json

from strategies.events import Answer, ChoiceDone, Event, Progress, Thinking, ToolCallDelta
from strategies.ledger import Usage
from strategies.trace import to_json

from .errors import APIError

# ChoiceDone.finish_reason -> Anthropic's stop_reason ("stop" is end_turn unless a stop sequence ended it).
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "abort": "refusal"}
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large",
                429: "rate_limit_error", 500: "api_error", 504: "timeout_error", 529: "overloaded_error"}


def error_shape(err: APIError) -> tuple[int, dict[str, Any]]:
    """An error as Anthropic answers it: ``{"type": "error", "error": {"type", "message"}}``
    (plus ponder's ``param``); 503 (starting, draining, engine down) is Anthropic's 529."""
    status = 529 if err.status == 503 else err.status
    error: dict[str, Any] = {"type": _ERROR_TYPES.get(status, "api_error"), "message": err.message}
    if err.param is not None:
        error["param"] = err.param
    return status, {"type": "error", "error": error}


def usage_dict(u: Usage) -> dict[str, Any]:
    """Anthropic's usage: the prompt is ``input_tokens`` (not from the cache) plus
    ``cache_read_input_tokens`` (prefix-cache hits); the engine writes its cache on
    its own, so nothing is reported as a cache write."""
    return {"input_tokens": u.prompt_tokens - u.cached_tokens, "output_tokens": u.completion_tokens,
            "cache_read_input_tokens": u.cached_tokens, "cache_creation_input_tokens": 0,
            "output_tokens_details": {"thinking_tokens": u.reasoning_tokens}}


@dataclass(frozen=True)
class MessageMeta:
    id: str
    model: str
    plan: dict[str, Any]
    prompt_tokens: int  # what message_start reports before the run knows its cache hits
    include_reasoning: bool
    sign: Callable[[str], str]  # thinking text -> signature


# A block operation: ("start", index, block) | ("delta", index, delta) | ("stop", index, None).
Op = tuple[str, int, Any]


class Blocks:
    """Events -> content-block operations, holding only the open block."""

    def __init__(self, meta: MessageMeta) -> None:
        self.meta = meta
        self.count = 0
        self.open: str | None = None  # type of the open block
        self.thought: list[str] = []  # the open thinking block's text, for its signature
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.trace: dict[str, Any] = {}

    def _start(self, block: dict[str, Any]) -> list[Op]:
        ops = self.close()
        self.open = block["type"]
        self.count += 1
        return [*ops, ("start", self.count - 1, block)]

    def _delta(self, delta: dict[str, Any]) -> Op:
        return ("delta", self.count - 1, delta)

    def close(self) -> list[Op]:
        if self.open is None:
            return []
        ops: list[Op] = []
        if self.open == "thinking":
            ops.append(self._delta({"type": "signature_delta", "signature": self.meta.sign("".join(self.thought))}))
            self.thought = []
        self.open = None
        return [*ops, ("stop", self.count - 1, None)]

    def feed(self, event: Event) -> list[Op]:
        if isinstance(event, Thinking):
            if not event.text or event.candidate is not None or not self.meta.include_reasoning:
                return []
            ops = [] if self.open == "thinking" else self._start({"type": "thinking", "thinking": "", "signature": ""})
            self.thought.append(event.text)
            return [*ops, self._delta({"type": "thinking_delta", "thinking": event.text})]
        if isinstance(event, Answer):
            if not event.text:
                return []
            ops = [] if self.open == "text" else self._start({"type": "text", "text": ""})
            return [*ops, self._delta({"type": "text_delta", "text": event.text})]
        if isinstance(event, ToolCallDelta):
            ops = [] if event.id is None and self.open == "tool_use" else self._start(
                {"type": "tool_use", "id": event.id or "", "name": event.name or "", "input": {}})
            if event.arguments:
                ops.append(self._delta({"type": "input_json_delta", "partial_json": event.arguments}))
            return ops
        if isinstance(event, ChoiceDone):
            self.stop_sequence = event.stop_sequence if event.finish_reason == "stop" else None
            self.stop_reason = "stop_sequence" if self.stop_sequence else _STOP.get(event.finish_reason, "end_turn")
            self.trace = to_json(event.trace)
            return self.close()
        return []


def _message(meta: MessageMeta, content: list[dict[str, Any]], stop_reason: str | None,
             stop_sequence: str | None, usage: dict[str, Any]) -> dict[str, Any]:
    return {"id": meta.id, "type": "message", "role": "assistant", "model": meta.model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": stop_sequence, "usage": usage,
            "reasoning_plan": meta.plan}


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


class MessageStream:
    """Events -> Anthropic's SSE events (``event: <type>`` + ``data: <json>``)."""

    streaming = True
    media_type = "text/event-stream"
    ping = _event("ping", {})

    def __init__(self, meta: MessageMeta) -> None:
        self.meta = meta
        self.blocks = Blocks(meta)

    def start(self) -> bytes:
        usage = usage_dict(Usage(prompt_tokens=self.meta.prompt_tokens))
        return _event("message_start", {"message": _message(self.meta, [], None, None, usage)}) + self.ping

    def _frames(self, ops: Iterable[Op]) -> bytes:
        out = []
        for kind, index, value in ops:
            if kind == "start":
                out.append(_event("content_block_start", {"index": index, "content_block": value}))
            elif kind == "delta":
                out.append(_event("content_block_delta", {"index": index, "delta": value}))
            else:
                out.append(_event("content_block_stop", {"index": index}))
        return b"".join(out)

    def feed(self, event: Event) -> bytes | None:
        if isinstance(event, Progress):
            return b": progress " + orjson.dumps({"choice": event.choice, **event.info}) + b"\n\n"
        return self._frames(self.blocks.feed(event)) or None

    def finish(self, usage: Usage) -> bytes:
        b = self.blocks
        delta = {"stop_reason": b.stop_reason or "end_turn", "stop_sequence": b.stop_sequence}
        return (self._frames(b.close())
                + _event("message_delta", {"delta": delta, "usage": usage_dict(usage), "reasoning_trace": b.trace})
                + _event("message_stop", {}))

    def error(self, err: APIError) -> bytes:
        """After the first byte: one ``error`` event, as Anthropic ends a failed stream."""
        return _event("error", {"error": error_shape(err)[1]["error"]})

    def error_status(self, err: APIError) -> int:
        return error_shape(err)[0]


class MessageFold:
    """Events -> one ``message``: the block operations applied as the SDK accumulates a stream."""

    streaming = False
    media_type = "application/json"
    ping = b""

    def __init__(self, meta: MessageMeta) -> None:
        self.meta = meta
        self.blocks = Blocks(meta)
        self.content: list[dict[str, Any]] = []
        self.json: dict[int, str] = {}  # a tool_use block's input, as JSON text so far

    def apply(self, ops: Iterable[Op]) -> None:
        for kind, index, value in ops:
            if kind == "start":
                self.content.append(dict(value))
                continue
            block = self.content[index]
            if kind == "stop":
                if block["type"] == "tool_use":
                    block["input"] = tool_input(self.json.pop(index, ""))
                continue
            key = {"text_delta": "text", "thinking_delta": "thinking"}.get(value["type"])
            if key is not None:
                block[key] += value[key]
            elif value["type"] == "signature_delta":
                block["signature"] = value["signature"]
            else:
                self.json[index] = self.json.get(index, "") + value["partial_json"]

    def feed(self, event: Event) -> None:
        self.apply(self.blocks.feed(event))

    def feed_all(self, events: Iterable[Event]) -> None:
        for e in events:
            self.feed(e)

    def start(self) -> bytes:
        return b""

    def message(self, usage: Usage) -> dict[str, Any]:
        b = self.blocks
        self.apply(b.close())
        body = _message(self.meta, self.content, b.stop_reason or "end_turn", b.stop_sequence, usage_dict(usage))
        return {**body, "reasoning_trace": b.trace}

    def finish(self, usage: Usage) -> bytes:
        return orjson.dumps(self.message(usage))

    def error(self, err: APIError) -> bytes:
        return orjson.dumps(error_shape(err)[1])

    def error_status(self, err: APIError) -> int:
        return error_shape(err)[0]


def tool_input(text: str) -> dict[str, Any]:
    """A tool call's arguments as ``input`` (an object). Arguments cut short (by
    ``max_tokens``: stop_reason says so) are read as far as they go, as the SDK reads
    a stream's ``input_json_delta`` pieces; ``{}`` when there are none or they are no
    JSON object."""
    try:
        value = from_json(text, allow_partial=True) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
