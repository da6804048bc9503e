"""The OpenAI chat encoding: two folds over one event stream, SSE
``chat.completion.chunk`` frames and the non-streamed ``chat.completion``.

Because both consume the same events, the joined stream equals the
non-streamed response. Each is a transport encoder (server/transport.py):
``start()`` / ``feed()`` / ``finish()`` / ``error()``, holding no state beyond
what the response needs; the per-token path is a dict and one
``orjson.dumps``. Other API surfaces have encoders of their own beside this one.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from strategies.engine import TokenLogprob
from strategies.events import Answer, ChoiceDone, Event, Progress, Thinking, ToolCallDelta
from strategies.ledger import Usage
from strategies.trace import to_json

from .errors import APIError, error_body


@dataclass(frozen=True)
class ResponseMeta:
    id: str
    model: str
    n: int
    plan: dict[str, Any]
    reasoning_fields: tuple[str, ...]  # ("reasoning_content", "reasoning") or one of them
    include_reasoning: bool
    include_usage: bool = False
    created: int = 0


def usage_dict(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        # Every engine request the strategies made, continuations included.
        "engine": {
            "requests": u.engine_requests,
            "prompt_tokens": u.engine_prompt_tokens,
            "cached_tokens": u.engine_cached_tokens,
        },
    }


def _lp_entry(lp: TokenLogprob) -> dict[str, Any]:
    return {
        "token": lp.token,
        "logprob": lp.logprob,
        "bytes": list(lp.token.encode()),
        "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in lp.top],
    }


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def _call_delta(d: ToolCallDelta) -> dict[str, Any]:
    """One ``delta.tool_calls`` entry: id, type and name on a call's first piece only, as OpenAI sends them."""
    fn: dict[str, Any] = {"arguments": d.arguments}
    entry: dict[str, Any] = {"index": d.index}
    if d.id is not None:
        entry.update(id=d.id, type="function")
    if d.name is not None:
        fn["name"] = d.name
    entry["function"] = fn
    return entry


class ChunkEncoder:
    """Events -> ``chat.completion.chunk`` SSE frames."""

    streaming = True
    media_type = "text/event-stream"
    ping = b": ping\n\n"

    def __init__(self, meta: ResponseMeta) -> None:
        self.meta = meta
        self._base = {
            "id": meta.id,
            "object": "chat.completion.chunk",
            "created": meta.created or int(time.time()),
            "model": meta.model,
            "system_fingerprint": None,
        }
        if meta.include_usage:
            self._base["usage"] = None

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None,
               logprobs: Any = None, **extra: Any) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        choice.update(extra)
        return _sse({**self._base, "choices": [choice]})

    def start(self) -> bytes:
        frames = []
        for i in range(self.meta.n):
            extra = {"reasoning_plan": self.meta.plan} if i == 0 else {}
            body = {**self._base, **extra,
                    "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                 "logprobs": None, "finish_reason": None}]}
            frames.append(_sse(body))
        return b"".join(frames)

    def feed(self, event: Event) -> bytes | None:
        if isinstance(event, Answer):
            lp = {"content": [_lp_entry(x) for x in event.logprobs]} if event.logprobs else None
            if not event.text and lp is None:
                return None
            return self._chunk(event.choice, {"content": event.text}, logprobs=lp)
        if isinstance(event, Thinking):
            if not self.meta.include_reasoning or not event.text:
                return None
            delta = {f: event.text for f in self.meta.reasoning_fields}
            extra = {"candidate": event.candidate} if event.candidate is not None else {}
            return self._chunk(event.choice, delta, **extra)
        if isinstance(event, ToolCallDelta):
            return self._chunk(event.choice, {"tool_calls": [_call_delta(event)]})
        if isinstance(event, ChoiceDone):
            return self._chunk(event.choice, {}, event.finish_reason, reasoning_trace=to_json(event.trace))
        if isinstance(event, Progress):
            return b": progress " + orjson.dumps({"choice": event.choice, **event.info}) + b"\n\n"
        return None

    def finish(self, usage: Usage) -> bytes:
        tail = b""
        if self.meta.include_usage:
            tail = _sse({**self._base, "choices": [], "usage": usage_dict(usage)})
        return tail + DONE

    def error(self, err: APIError) -> bytes:
        """After the first byte: one error frame, then [DONE]."""
        return _sse(error_body(err.status, err.message, err.param, err.code)) + DONE

    def error_status(self, err: APIError) -> int:
        return err.status


class JsonBody:
    """What an encoder of one JSON body with OpenAI's errors is besides its fold
    (this one, and the Responses API's)."""

    streaming = False
    media_type = "application/json"
    ping = b""

    def start(self) -> bytes:
        return b""

    def error(self, err: APIError) -> bytes:
        return orjson.dumps(err.body())

    def error_status(self, err: APIError) -> int:
        return err.status


class ResponseFold(JsonBody):
    """Events -> one ``chat.completion`` object."""

    def __init__(self, meta: ResponseMeta) -> None:
        self.meta = meta
        self.answer: list[list[str]] = [[] for _ in range(meta.n)]
        self.thinking: list[list[str]] = [[] for _ in range(meta.n)]
        self.logprobs: list[list[dict[str, Any]] | None] = [None] * meta.n
        self.finish_reason: list[str | None] = [None] * meta.n
        self.trace: list[dict[str, Any]] = [{} for _ in range(meta.n)]
        self.calls: list[list[dict[str, Any]]] = [[] for _ in range(meta.n)]

    def feed(self, event: Event) -> None:
        if isinstance(event, Answer):
            self.answer[event.choice].append(event.text)
            if event.logprobs:
                entries = self.logprobs[event.choice] or []
                entries.extend(_lp_entry(x) for x in event.logprobs)
                self.logprobs[event.choice] = entries
        elif isinstance(event, Thinking) and event.candidate is None:
            self.thinking[event.choice].append(event.text)
        elif isinstance(event, ToolCallDelta):
            calls = self.calls[event.choice]
            if event.index == len(calls):
                calls.append({"id": event.id, "type": "function", "function": {"name": event.name, "arguments": ""}})
            calls[event.index]["function"]["arguments"] += event.arguments
        elif isinstance(event, ChoiceDone):
            self.finish_reason[event.choice] = event.finish_reason
            self.trace[event.choice] = to_json(event.trace)

    def feed_all(self, events: Iterable[Event]) -> None:
        for e in events:
            self.feed(e)

    def finish(self, usage: Usage) -> bytes:
        return orjson.dumps(self.response(usage))

    def response(self, usage: Usage) -> dict[str, Any]:
        choices = []
        for i in range(self.meta.n):
            content = "".join(self.answer[i])
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if self.calls[i]:  # OpenAI: content is null when the model only called tools
                message.update(content=content or None, tool_calls=self.calls[i])
            if self.meta.include_reasoning:
                thought = "".join(self.thinking[i])
                for f in self.meta.reasoning_fields:
                    message[f] = thought or None
            choices.append({
                "index": i,
                "message": message,
                "logprobs": {"content": self.logprobs[i]} if self.logprobs[i] is not None else None,
                "finish_reason": self.finish_reason[i] or "stop",
                "reasoning_trace": self.trace[i],
            })
        return {
            "id": self.meta.id,
            "object": "chat.completion",
            "created": self.meta.created or int(time.time()),
            "model": self.meta.model,
            "system_fingerprint": None,
            "choices": choices,
            "usage": usage_dict(usage),
            "reasoning_plan": self.meta.plan,
        }
