"""``POST /v1/chat/completions``: validate, plan, render, run, fold.

Everything that can be wrong with a request is found before the first byte
(planner, prompt length, limits); after it, a failure is one error frame.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import orjson
from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from strategies.context import RunContext
from strategies.events import Answer, ChoiceDone, Event, Thinking
from strategies.ledger import Ledger, Usage
from strategies.plan import Plan
from strategies.runner import Finished, run_plan

from .admission import Ticket, engine_priority, plan_weight
from .encode import DONE, ChunkEncoder, ResponseFold, ResponseMeta
from .errors import APIError, bad_request, error_body
from .planner import plan_request, sampling_for
from .prompt import Prompt
from .state import AppState
from .wire import ChatCompletionRequest

log = logging.getLogger("ponder.chat")


def _check_request(req: ChatCompletionRequest, state: AppState) -> None:
    """Limits that need the settings (the wire model has the fixed ones)."""
    limits = state.settings.server
    if req.model not in state.model_names:
        raise APIError(404, f"The model `{req.model}` does not exist.", "model", "model_not_found")
    if req.n > state.settings.defaults.max_n:
        raise bad_request(f"n must be at most {state.settings.defaults.max_n}", "n")
    if len(req.messages) > limits.max_messages:
        raise bad_request(f"at most {limits.max_messages} messages are allowed", "messages")
    if req.top_logprobs is not None and not req.logprobs:
        raise bad_request("top_logprobs needs logprobs: true", "top_logprobs")
    stops = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
    if any(not s for s in stops):
        raise bad_request("stop strings must not be empty", "stop")
    if any(len(s) > limits.max_stop_chars for s in stops):
        raise bad_request(f"stop strings must be at most {limits.max_stop_chars} characters", "stop")
    if req.timeout is not None and req.timeout > limits.max_request_timeout:
        raise bad_request(f"timeout must be at most {limits.max_request_timeout:g} s", "timeout")
    if req.priority and state.settings.engine.scheduling_policy != "priority":
        raise bad_request("priority needs a server whose [engine] scheduling_policy is \"priority\"", "priority")
    if req.tool_choice not in (None, "none", "auto"):
        raise bad_request("only tool_choice 'none' and 'auto' are supported", "tool_choice")


def _fit_context(req: ChatCompletionRequest, plan: Plan, prompt: Prompt, max_len: int) -> Plan:
    """Refuse prompts that do not fit; clamp a defaulted max_tokens to the window."""
    extra = len(prompt.think_prefix_ids) + len(prompt.think_suffix_ids) if plan.thinking else 0
    room = max_len - len(prompt.ids) - extra
    if room < 1:
        raise bad_request(
            f"This model's maximum context length is {max_len} tokens. However, your messages "
            f"resulted in {len(prompt.ids)} tokens. Please reduce the length of the messages.",
            "messages", "context_length_exceeded")
    asked = req.max_completion_tokens or req.max_tokens
    if asked is not None and asked > room:
        param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        raise bad_request(
            f"This model's maximum context length is {max_len} tokens. However, you requested "
            f"{len(prompt.ids) + extra + asked} tokens ({len(prompt.ids)} in the messages, {asked} in the "
            f"completion). Please reduce the length of the messages or completion.",
            param, "context_length_exceeded")
    auto = tuple((level, replace(sub, max_tokens=min(sub.max_tokens, room))) for level, sub in plan.auto)
    return replace(plan, max_tokens=min(plan.max_tokens, room), auto=auto)


async def chat_completions(request: Request, req: ChatCompletionRequest, state: AppState) -> Response:
    _check_request(req, state)
    plan = plan_request(req, state.settings)
    engine = state.require_engine()
    request.state.strategy = plan.strategy
    # Admission before the prompt is even rendered, so a 429 costs the server
    # (which shares the CPU with the engine) almost nothing.
    try:
        ticket = state.admission.admit(plan_weight(plan, req.n),
                                       req.timeout or state.settings.server.request_timeout)
    except APIError as exc:
        state.metrics.rejected.labels(exc.code).inc()
        raise
    try:
        return await _serve(request, req, plan, engine, ticket, state)
    except BaseException:
        ticket.release()  # idempotent: a response that took the ticket releases it too
        raise


async def _serve(request: Request, req: ChatCompletionRequest, plan: Plan, engine, ticket: Ticket,
                 state: AppState) -> Response:
    rid: str = request.state.request_id
    prompt = state.renderer.render(req, plan.thinking)
    plan = _fit_context(req, plan, prompt, engine.info.max_model_len)
    by_priority = state.settings.engine.scheduling_policy == "priority"
    priority = engine_priority(req.priority, ticket.seq) if by_priority else 0

    def make_ctx(i: int) -> RunContext:
        return RunContext(
            engine=engine, prompt_ids=prompt.ids, think_prefix_ids=prompt.think_prefix_ids,
            think_suffix_ids=prompt.think_suffix_ids, sampling=sampling_for(req, plan, i, priority),
            request_id=rid, choice=i, ledger=Ledger(len(prompt.ids), plan.budget_tokens),
            followup=state.followup)

    meta = ResponseMeta(
        id=f"chatcmpl-{rid}", model=req.model, n=req.n, plan=plan.public(),
        reasoning_fields=state.reasoning_fields, include_reasoning=plan.include_reasoning,
        include_usage=bool(req.stream_options and req.stream_options.include_usage),
        created=int(time.time()))
    events = ticket.guard(_observe(run_plan(plan, req.n, make_ctx), plan, state))
    if plan.strategy not in _TOKEN_STREAMING:  # silent phases (sampling, scoring): keep it alive
        events = _with_pings(events, state.settings.server.ping_interval)
    headers = {"x-request-id": rid, "x-reasoning-strategy": plan.strategy}
    if req.stream:
        return _TicketedStream(ticket, _stream(events, meta), media_type="text/event-stream",
                               headers={**headers, "cache-control": "no-cache"})
    try:
        body = await _until_disconnect(request, _fold(events, meta))
    finally:
        ticket.release()
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


class _TicketedStream(StreamingResponse):
    """Releases the request's admission ticket however the stream ends, even if it never started."""

    def __init__(self, ticket: Ticket, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ticket = ticket

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.ticket.release()
            await self.body_iterator.aclose()  # type: ignore[attr-defined]


async def _fold(events: AsyncIterator[Event | Finished], meta: ResponseMeta) -> dict:
    fold = ResponseFold(meta)
    async for item in events:
        if item is PING:
            continue
        if isinstance(item, Finished):
            return fold.finish(item.usage)
        fold.feed(item)
    raise RuntimeError("strategy run ended without usage")


PING = object()
# Strategies whose events are tokens as they are generated: they need no pings,
# and skip the task hop per event that pings cost.
_TOKEN_STREAMING = ("single", "budget_forcing")


async def _with_pings(events: AsyncIterator, interval: float) -> AsyncIterator:
    """Pass events through; yield ``PING`` whenever none came for ``interval`` s."""
    it = events.__aiter__()
    nxt = asyncio.ensure_future(it.__anext__())
    try:
        while True:
            done, _ = await asyncio.wait({nxt}, timeout=interval)
            if not done:
                yield PING
                continue
            try:
                item = nxt.result()
            except StopAsyncIteration:
                return
            yield item
            nxt = asyncio.ensure_future(it.__anext__())
    finally:
        nxt.cancel()
        await asyncio.gather(nxt, return_exceptions=True)
        await events.aclose()  # type: ignore[attr-defined]


async def _stream(events: AsyncIterator[Event | Finished], meta: ResponseMeta) -> AsyncIterator[bytes]:
    enc = ChunkEncoder(meta)
    yield enc.start()
    try:
        async for item in events:
            if item is PING:
                yield b": ping\n\n"
                continue
            if isinstance(item, Finished):
                yield enc.finish(item.usage)
                return
            frame = enc.feed(item)
            if frame is not None:
                yield frame
    except Exception as exc:  # after the first byte: one error frame, then [DONE]
        err = exc if isinstance(exc, APIError) else _as_api_error(exc)
        yield b"data: " + orjson.dumps(error_body(err.status, err.message, err.param, err.code)) + b"\n\n"
        yield DONE
    finally:
        await events.aclose()  # type: ignore[attr-defined]


def _as_api_error(exc: BaseException) -> APIError:
    from .state import is_engine_unavailable

    if is_engine_unavailable(exc):
        return APIError(503, "the engine is unavailable; retry later", code="engine_unavailable")
    log.exception("strategy run failed", exc_info=exc)
    return APIError(500, "internal error while generating", code="internal_error")


async def _until_disconnect(request: Request, work):
    """Run ``work``; if the client goes away first, cancel it (aborting the engine)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled():
        raise asyncio.CancelledError()
    exc = task.exception()
    if exc is not None:
        raise exc if isinstance(exc, APIError) else _as_api_error(exc) from exc
    return task.result()


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _observe(events: AsyncIterator[Event | Finished], plan: Plan, state: AppState
                   ) -> AsyncIterator[Event | Finished]:
    """Pass events through, recording first-token times and the outcome."""
    m = state.metrics
    start = time.perf_counter()
    first_thinking = first_answer = False
    status = "error"
    usage = Usage()
    m.in_flight.inc()
    try:
        async for item in events:
            if not first_answer and isinstance(item, Answer) and item.text:
                first_answer = True
                m.ttft_answer.labels(plan.strategy).observe(time.perf_counter() - start)
            elif not first_thinking and isinstance(item, Thinking):
                first_thinking = True
                m.ttft_thinking.labels(plan.strategy).observe(time.perf_counter() - start)
            elif isinstance(item, ChoiceDone):
                m.choice_done(plan.strategy, plan.effort or "none", item.trace)
            elif isinstance(item, Finished):
                status, usage = "ok", item.usage
            yield item
    except asyncio.CancelledError:
        status = "cancelled"
        raise
    finally:
        m.in_flight.dec()
        _count(m, plan, status, usage)
        await events.aclose()  # type: ignore[attr-defined]


def _count(m, plan: Plan, status: str, usage: Usage) -> None:
    effort = plan.effort or "none"
    m.requests.labels(plan.strategy, effort, status).inc()
    if status != "ok":
        return
    m.tokens.labels(plan.strategy, "thinking").inc(usage.reasoning_tokens)
    m.tokens.labels(plan.strategy, "answer").inc(usage.completion_tokens - usage.reasoning_tokens)
    m.thinking_per_request.labels(plan.strategy, effort).observe(usage.reasoning_tokens)
    m.engine_requests.labels(plan.strategy).inc(usage.engine_requests)
    m.cached_tokens.labels(plan.strategy).inc(usage.engine_cached_tokens)


