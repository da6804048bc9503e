"""The Responses encoding: two folds over one event stream, the SSE events of a
streamed response and the non-streamed ``response`` object.

:class:`Items` turns the strategies' events into the Responses stream's own
events (``response.output_item.added``, ``response.reasoning_text.delta``,
``response.output_text.delta``, ``response.function_call_arguments.delta``,
``response.output_item.done`` ...), holding only the open output item: a
``reasoning`` item (its thinking as ``reasoning_text``, then its summary as
``summary_text`` when one was asked for, its ``encrypted_content`` sealed when
it closes), a ``message`` with one ``output_text``, or ``function_call`` items.
:class:`ResponseStream` writes each as an SSE event with its
``sequence_number``; :class:`ResponseObjectFold` applies them to a response the
way the ``openai`` SDK's stream accumulator does (an item is what its
``output_item.done`` says), so the two agree by construction, and a test holds
them to it. Both are transport encoders (server/transport.py).

ponder's extras ride where the SDK keeps unknown keys: ``reasoning_plan`` and
``reasoning_trace`` on the response object.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from strategies.events import Answer, ChoiceDone, Event, Progress, Thinking, ToolCallDelta
from strategies.ledger import Usage
from strategies.trace import to_json

from .chat_encode import JsonBody
from .errors import APIError
from .responses_summary import Summary

# ChoiceDone.finish_reason -> the response's incomplete_details.reason (None: completed).
_INCOMPLETE = {"length": "max_output_tokens", "abort": "content_filter"}


@dataclass(frozen=True)
class ResponseMeta:
    id: str
    created_at: int
    # The request's fields as the response echoes them (model, tools, text, reasoning ...).
    echo: dict[str, Any]
    plan: dict[str, Any]
    include_reasoning: bool
    seal: Callable[[str], str] | None  # thinking -> encrypted_content, when included
    # Called with the finished response (the store, when it keeps this one).
    keep: Callable[[dict[str, Any]], None] | None = None

    def item_id(self, prefix: str, k: int) -> str:
        base = self.id.removeprefix("resp_")
        return f"{prefix}_{base}" if k == 0 else f"{prefix}_{base}_{k}"


def usage_dict(u: Usage) -> dict[str, Any]:
    """OpenAI's usage; a reasoning summary's tokens are reasoning tokens (they are thinking about thinking)."""
    return {"input_tokens": u.prompt_tokens,
            "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": u.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
            "total_tokens": u.prompt_tokens + u.completion_tokens}


# A stream event without its sequence_number: {"type": "response....", ...}.
Op = dict[str, Any]


class Items:
    """Events -> the Responses stream's item events, holding only the open item."""

    def __init__(self, meta: ResponseMeta) -> None:
        self.meta = meta
        self.count = 0
        self.kinds: dict[str, int] = {}  # items opened per type, for their ids
        self.item: dict[str, Any] | None = None  # the open item, as its done event will carry it
        self.part: str | None = None  # the open part: "reasoning_text" | "summary_text" | "output_text"
        self.finish: str | None = None
        self.trace: dict[str, Any] = {}
        self.summary_cost: dict[str, Any] | None = None

    def _where(self) -> dict[str, Any]:
        assert self.item is not None
        return {"item_id": self.item.get("id"), "output_index": self.count - 1}

    def _open(self, item: dict[str, Any]) -> list[Op]:
        ops = self.close()
        prefix = {"reasoning": "rs", "message": "msg", "function_call": "fc"}[item["type"]]
        k = self.kinds.get(item["type"], 0)
        self.kinds[item["type"]] = k + 1
        self.item = {"id": self.meta.item_id(prefix, k), **item, "status": "in_progress"}
        self.count += 1
        return [*ops, {"type": "response.output_item.added", "output_index": self.count - 1,
                       "item": {**self.item, **({"content": []} if "content" in item else {}),
                                **({"summary": []} if "summary" in item else {})}}]

    def _part(self, kind: str) -> list[Op]:
        """Open a part of the open item (closing the one before)."""
        assert self.item is not None
        ops = self._close_part()
        self.part = kind
        if kind == "summary_text":
            self.item["summary"].append({"type": "summary_text", "text": ""})
            return [*ops, {"type": "response.reasoning_summary_part.added", **self._where(),
                           "summary_index": len(self.item["summary"]) - 1, "part": dict(self.item["summary"][-1])}]
        part = {"type": kind, "text": ""} if kind == "reasoning_text" else \
            {"type": kind, "text": "", "annotations": [], "logprobs": []}
        self.item["content"].append(part)
        return [*ops, {"type": "response.content_part.added", **self._where(),
                       "content_index": len(self.item["content"]) - 1, "part": dict(part)}]

    def _close_part(self) -> list[Op]:
        kind, item = self.part, self.item
        if kind is None or item is None:
            return []
        self.part = None
        if kind == "summary_text":
            i = len(item["summary"]) - 1
            part = item["summary"][i]
            return [{"type": "response.reasoning_summary_text.done", **self._where(), "summary_index": i,
                     "text": part["text"]},
                    {"type": "response.reasoning_summary_part.done", **self._where(), "summary_index": i,
                     "part": dict(part)}]
        i = len(item["content"]) - 1
        part = item["content"][i]
        done = {"type": "response.reasoning_text.done" if kind == "reasoning_text" else "response.output_text.done",
                **self._where(), "content_index": i, "text": part["text"]}
        if kind == "output_text":
            done["logprobs"] = []
        return [done, {"type": "response.content_part.done", **self._where(), "content_index": i, "part": dict(part)}]

    def close(self) -> list[Op]:
        item = self.item
        if item is None:
            return []
        ops = self._close_part()
        if item["type"] == "function_call":
            ops.append({"type": "response.function_call_arguments.done", **self._where(),
                        "arguments": item["arguments"]})
        if item["type"] == "reasoning" and self.meta.seal is not None:
            item["encrypted_content"] = self.meta.seal("".join(c["text"] for c in item["content"]))
        item["status"] = "incomplete" if self.finish in _INCOMPLETE else "completed"
        self.item = None
        return [*ops, {"type": "response.output_item.done", "output_index": self.count - 1, "item": item}]

    def _delta(self, kind: str, text: str) -> list[Op]:
        assert self.item is not None
        ops = [] if self.part == kind else self._part(kind)
        if kind == "summary_text":
            self.item["summary"][-1]["text"] += text
            return [*ops, {"type": "response.reasoning_summary_text.delta", **self._where(),
                           "summary_index": len(self.item["summary"]) - 1, "delta": text}]
        self.item["content"][-1]["text"] += text
        delta = {"type": "response.reasoning_text.delta" if kind == "reasoning_text" else "response.output_text.delta",
                 **self._where(), "content_index": len(self.item["content"]) - 1, "delta": text}
        if kind == "output_text":
            delta["logprobs"] = []
        return [*ops, delta]

    def _reasoning(self) -> list[Op]:
        if self.item is not None and self.item["type"] == "reasoning":
            return []
        return self._open({"type": "reasoning", "summary": [], "content": []})

    def feed(self, event: Event | Summary) -> list[Op]:
        if isinstance(event, Thinking):
            if not event.text or event.candidate is not None or not self.meta.include_reasoning:
                return []
            return [*self._reasoning(), *self._delta("reasoning_text", event.text)]
        if isinstance(event, Summary):
            if event.text:
                return [*self._reasoning(), *self._delta("summary_text", event.text)]
            self.summary_cost = event.cost
            return []
        if isinstance(event, Answer):
            if not event.text:
                return []
            ops = [] if self.item is not None and self.item["type"] == "message" else self._open(
                {"type": "message", "role": "assistant", "content": []})
            return [*ops, *self._delta("output_text", event.text)]
        if isinstance(event, ToolCallDelta):
            ops = [] if event.id is None and self.item is not None and self.item["type"] == "function_call" else \
                self._open({"type": "function_call", "call_id": event.id or "", "name": event.name or "",
                            "arguments": ""})
            if event.arguments:
                assert self.item is not None
                self.item["arguments"] += event.arguments
                ops.append({"type": "response.function_call_arguments.delta", **self._where(),
                            "delta": event.arguments})
            return ops
        if isinstance(event, ChoiceDone):
            self.finish = event.finish_reason
            self.trace = to_json(event.trace)
            return self.close()
        return []

    def response(self, status: str, output: list[dict[str, Any]], usage: Usage | None) -> dict[str, Any]:
        meta = self.meta
        reason = _INCOMPLETE.get(self.finish or "") if status != "in_progress" else None
        if reason is not None and status == "completed":
            status = "incomplete"
        body: dict[str, Any] = {
            "id": meta.id, "object": "response", "created_at": meta.created_at, "status": status,
            "error": None, "incomplete_details": {"reason": reason} if reason else None, **meta.echo,
            "output": output, "usage": usage_dict(usage) if usage is not None else None,
            "reasoning_plan": meta.plan}
        if status != "in_progress":
            trace = dict(self.trace)
            if self.summary_cost is not None:
                trace["summary"] = self.summary_cost
            body["reasoning_trace"] = trace
            body["completed_at"] = int(time.time()) if status == "completed" else None
        return body


def _failed(err: APIError) -> dict[str, Any]:
    code = "rate_limit_exceeded" if err.status == 429 else "server_error" if err.status >= 500 else \
        (err.code or "invalid_prompt")
    return {"code": code, "message": err.message}


class ResponseObjectFold(JsonBody):
    """Events -> one ``response`` object: the item events applied as the SDK applies a stream."""

    def __init__(self, meta: ResponseMeta) -> None:
        self.meta = meta
        self.items = Items(meta)
        self.output: list[dict[str, Any]] = []

    def apply(self, ops: Iterable[Op]) -> None:
        for op in ops:
            if op["type"] == "response.output_item.added":
                self.output.append(op["item"])
            elif op["type"] == "response.output_item.done":
                self.output[op["output_index"]] = op["item"]

    def feed(self, event: Event) -> None:
        self.apply(self.items.feed(event))

    def feed_all(self, events: Iterable[Event]) -> None:
        for e in events:
            self.feed(e)

    def response(self, usage: Usage) -> dict[str, Any]:
        self.apply(self.items.close())
        body = self.items.response("completed", self.output, usage)
        if self.meta.keep is not None:
            self.meta.keep(body)
        return body

    def finish(self, usage: Usage) -> bytes:
        return orjson.dumps(self.response(usage))


class ResponseStream:
    """Events -> the Responses SSE events (``event: <type>`` + ``data: <json>``), numbered from 0."""

    streaming = True
    media_type = "text/event-stream"
    ping = b": ping\n\n"

    def __init__(self, meta: ResponseMeta) -> None:
        self.fold = ResponseObjectFold(meta)
        self.seq = 0

    def _frames(self, ops: Iterable[Op]) -> bytes:
        out = []
        for op in ops:
            out.append(b"event: " + op["type"].encode() + b"\ndata: "
                       + orjson.dumps({**op, "sequence_number": self.seq}) + b"\n\n")
            self.seq += 1
        return b"".join(out)

    def start(self) -> bytes:
        skeleton = self.fold.items.response("in_progress", [], None)
        return self._frames([{"type": "response.created", "response": skeleton},
                             {"type": "response.in_progress", "response": skeleton}])

    def feed(self, event: Event) -> bytes | None:
        if isinstance(event, Progress):
            return b": progress " + orjson.dumps({"choice": event.choice, **event.info}) + b"\n\n"
        ops = self.fold.items.feed(event)
        self.fold.apply(ops)
        return self._frames(ops) or None

    def finish(self, usage: Usage) -> bytes:
        fold = self.fold
        ops = fold.items.close()
        fold.apply(ops)
        body = fold.response(usage)
        kind = "response.completed" if body["status"] == "completed" else "response.incomplete"
        return self._frames([*ops, {"type": kind, "response": body}])

    def error(self, err: APIError) -> bytes:
        """After the first byte: an ``error`` event, then ``response.failed``."""
        items = self.fold.items
        failed = {**items.response("failed", self.fold.output, None), "error": _failed(err)}
        return self._frames([{"type": "error", "code": err.code, "message": err.message, "param": err.param},
                             {"type": "response.failed", "response": failed}])

    def error_status(self, err: APIError) -> int:
        return err.status
