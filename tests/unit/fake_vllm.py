"""Fake vLLM 0.32 OpenAI servers for the remote engine's unit tests, on
``httpx.MockTransport`` (no socket, no model).

They speak the endpoints the remote engine uses, in vLLM's own shapes: every
body is built with vLLM's own protocol classes (``ModelList`` / ``ModelCard``,
``TokenizeResponse``, ``CompletionStreamResponse`` /
``CompletionResponseStreamChoice`` / ``CompletionLogProbs``, ``UsageInfo`` /
``PromptTokenUsageInfo``, ``ErrorResponse``) and serialised the way
``completion_stream_generator`` (vllm/entrypoints/openai/completion/serving.py)
serialises them: a choice chunk with ``model_dump_json(exclude_unset=True)``, the
usage chunk with ``exclude_unset=False, exclude_none=True``, an error frame as
``json.dumps(ErrorResponse.model_dump())``, then ``data: [DONE]``. The first chunk of
each choice carries ``prompt_token_ids`` (``return_token_ids``); chunks of ``n``
samples interleave, one choice per chunk. What a real server adds (scheduling,
the cache) is not faked: the proof on real vLLM servers is the integration suite's.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from scripted_engine import EOS_ID, CharTokenizer
from vllm.entrypoints.openai.completion.protocol import (
    CompletionLogProbs,
    CompletionResponseStreamChoice,
    CompletionStreamResponse,
)
from vllm.entrypoints.serve.engine.protocol import (
    ErrorInfo,
    ErrorResponse,
    ModelCard,
    ModelList,
    PromptTokenUsageInfo,
    UsageInfo,
)
from vllm.entrypoints.serve.tokenize.protocol import TokenizeResponse

SSE = {"content-type": "text/event-stream; charset=utf-8"}


@dataclass
class Reply:
    """One sample: its chunks of token ids (one chunk per streamed delta) and how it ends."""

    chunks: Sequence[Sequence[int]]
    finish_reason: str = "stop"
    stop_reason: int | str | None = None


def reply(text: str, eos: bool = True, per_chunk: int = 1) -> Reply:
    ids = [ord(c) for c in text] + ([EOS_ID] if eos else [])
    return Reply([ids[i:i + per_chunk] for i in range(0, len(ids), per_chunk)],
                 "stop" if eos else "length")


def _logprobs(ids: Sequence[int], k: int) -> CompletionLogProbs:
    """vLLM's shape for ``logprobs=k``: the sampled token plus the top k by rank, by
    id (``return_tokens_as_token_ids``). Here the id above the sampled one ranks
    first (-0.25), the sampled one second (-0.5), the one above that third (-1.5)."""
    tops = []
    for t in ids:
        ranked = {t + 1: -0.25, t: -0.5, t + 2: -1.5}
        entries = {t: -0.5, **{tid: lp for r, (tid, lp) in enumerate(ranked.items()) if r < k}}
        tops.append({f"token_id:{tid}": lp for tid, lp in entries.items()})
    return CompletionLogProbs(text_offset=list(range(len(ids))), token_logprobs=[-0.5] * len(ids),
                              tokens=[f"token_id:{t}" for t in ids], top_logprobs=tops)


@dataclass
class FakeVLLM:
    url: str
    model: str = "fake-model"
    root: str | None = "/models/fake"
    max_model_len: int = 4096
    tokenizer: Any = field(default_factory=CharTokenizer)
    # (request body, sample index) -> that sample's reply.
    script: Callable[[dict[str, Any], int], Reply] = lambda body, i: reply("ok")
    # GET /health: True 200, False 503, None: the process is gone (connection refused everywhere).
    health: bool | None = True
    # POST /v1/completions: answer this status (with vLLM's error body) instead of a stream.
    status: int = 200
    # Stream this many choice chunks, then: "error" (a 500 frame), "error503", "cut" (the
    # connection drops), "end" (the body ends without [DONE]), "stall" (wait forever),
    # "garbage" (a frame that is not JSON).
    fail_after: int | None = None
    failure: str = "error"
    # Seconds before every frame; ": keep-alive" comments sent while waiting that long.
    delay: float = 0.0
    keep_alive: float | None = None
    cached_tokens: int | None = 3
    # Every chunk waits for this to be set (None: no wait).
    gate: asyncio.Event | None = None
    bodies: list[dict[str, Any]] = field(default_factory=list)
    closed_early: list[str] = field(default_factory=list)   # request ids whose stream the client closed
    completed: list[str] = field(default_factory=list)
    open_streams: int = 0
    tokenize_offset: int = 0  # a mismatched tokenizer on the server's side

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.health is None:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if path == "/health":
            return httpx.Response(200 if self.health else 503)
        if path == "/v1/models":
            card = ModelCard(id=self.model, root=self.root, max_model_len=self.max_model_len)
            return httpx.Response(200, json=ModelList(data=[card]).model_dump())
        if path == "/tokenize":
            prompt = json.loads(request.content)["prompt"]
            ids = [t + self.tokenize_offset for t in self.tokenizer.encode(prompt)]
            body = TokenizeResponse(count=len(ids), max_model_len=self.max_model_len, tokens=ids)
            return httpx.Response(200, json=body.model_dump())
        if path == "/v1/completions":
            body = json.loads(request.content)
            self.bodies.append(body)
            if self.status != 200:
                err = ErrorResponse(error=ErrorInfo(message=f"fake refusal {self.status}", type="BadRequestError",
                                                    code=self.status))
                return httpx.Response(self.status, json=err.model_dump())
            return httpx.Response(200, headers=SSE, stream=_Stream(self, body))
        return httpx.Response(404, json={"detail": "Not Found"})

    def frames(self, body: dict[str, Any]) -> list[str | None]:
        """What the server writes for one request, in order (None: a failure point)."""
        n, k = body.get("n", 1), body.get("logprobs")
        replies = [self.script(body, i) for i in range(n)]
        rid = f"cmpl-{body.get('request_id')}"
        frames: list[str | None] = []
        generated = 0
        step = 0
        while any(step < len(r.chunks) for r in replies):
            for i, r in enumerate(replies):
                if step >= len(r.chunks):
                    continue
                ids = list(r.chunks[step])
                last = step == len(r.chunks) - 1
                generated += len(ids)
                choice = CompletionResponseStreamChoice(
                    index=i, text=self.tokenizer.decode([t for t in ids if t != EOS_ID]),
                    logprobs=_logprobs(ids, k) if k is not None else None,
                    finish_reason=r.finish_reason if last else None, stop_reason=r.stop_reason if last else None,
                    prompt_token_ids=body["prompt"] if step == 0 else None, token_ids=ids)
                chunk = CompletionStreamResponse(id=rid, object="text_completion", created=0, model=self.model,
                                                 choices=[choice])
                frames.append(f"data: {chunk.model_dump_json(exclude_unset=True)}\n\n")
            step += 1
        if self.fail_after is not None:
            frames = frames[:self.fail_after] + [None]
            return frames
        usage = UsageInfo(prompt_tokens=len(body["prompt"]), completion_tokens=generated,
                          total_tokens=len(body["prompt"]) + generated)
        if self.cached_tokens is not None:
            usage.prompt_tokens_details = PromptTokenUsageInfo(cached_tokens=self.cached_tokens)
        final = CompletionStreamResponse(id=rid, created=0, model=self.model, choices=[], usage=usage)
        frames.append(f"data: {final.model_dump_json(exclude_unset=False, exclude_none=True)}\n\n")
        frames.append("data: [DONE]\n\n")
        return frames


class _Stream(httpx.AsyncByteStream):
    def __init__(self, fake: FakeVLLM, body: dict[str, Any]) -> None:
        self.fake, self.body, self.done = fake, body, False
        self.rid = str(body.get("request_id"))
        fake.open_streams += 1

    async def __aiter__(self) -> AsyncIterator[bytes]:
        fake = self.fake
        for frame in fake.frames(self.body):
            if fake.gate is not None:
                await fake.gate.wait()
            if fake.delay:
                async for comment in self._wait(fake.delay):
                    yield comment
            if frame is None:
                async for tail in self._fail():
                    yield tail
                return
            yield frame.encode()
        self.done = True
        fake.completed.append(self.rid)

    async def _wait(self, seconds: float) -> AsyncIterator[bytes]:
        every = self.fake.keep_alive
        if every is None:
            await asyncio.sleep(seconds)
            return
        waited = 0.0
        while waited < seconds:
            await asyncio.sleep(min(every, seconds - waited))
            waited += every
            yield b": keep-alive\n\n"

    async def _fail(self) -> AsyncIterator[bytes]:
        failure = self.fake.failure
        if failure in ("error", "error503"):
            code = 503 if failure == "error503" else 500
            kind = "ServiceUnavailableError" if code == 503 else "InternalServerError"
            err = ErrorResponse(error=ErrorInfo(message="Internal server error", type=kind, code=code))
            yield f"data: {json.dumps(err.model_dump())}\n\n".encode()
            yield b"data: [DONE]\n\n"
        elif failure == "cut":
            raise httpx.ReadError("connection reset by peer")
        elif failure == "stall":
            await asyncio.Event().wait()
        elif failure == "garbage":
            yield b"data: {not json\n\n"
        # "end": the body just ends

    async def aclose(self) -> None:
        self.fake.open_streams -= 1
        if not self.done:
            self.fake.closed_early.append(self.rid)


class FakeFleet:
    """Several fakes behind one transport, by URL."""

    def __init__(self, *fakes: FakeVLLM) -> None:
        self.fakes = {f.url: f for f in fakes}

    def handle(self, request: httpx.Request) -> httpx.Response:
        url = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        return self.fakes[url].handle(request)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def __getitem__(self, url: str) -> FakeVLLM:
        return self.fakes[url]
