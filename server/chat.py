"""``POST /v1/chat/completions``: prepare, then run through the transport loop
with the OpenAI chat encoding (a stream of chunks, or one completion)."""
from __future__ import annotations

import time

from fastapi import Request

from .chat_encode import ChunkEncoder, ResponseFold, ResponseMeta
from .observe import RequestMetrics
from .prepare import Prepared, prepare
from .state import AppState
from .transport import EventResponse
from .wire import ChatCompletionRequest


async def chat_completions(request: Request, req: ChatCompletionRequest, state: AppState) -> EventResponse:
    rid: str = request.state.request_id
    ready = prepare(req, state, rid)
    plan = ready.plan
    request.state.strategy = plan.strategy
    try:
        return _respond(req, state, rid, ready)
    except BaseException:
        ready.ticket.release()
        raise


def _respond(req: ChatCompletionRequest, state: AppState, rid: str, ready: Prepared) -> EventResponse:
    plan = ready.plan
    meta = ResponseMeta(
        id=f"chatcmpl-{rid}", model=req.model, n=req.n, plan=plan.public(),
        reasoning_fields=state.reasoning_fields, include_reasoning=plan.include_reasoning,
        include_usage=bool(req.stream_options and req.stream_options.include_usage),
        created=int(time.time()))
    encoder = ChunkEncoder(meta) if req.stream else ResponseFold(meta)
    ping = None if ready.streams_tokens else state.settings.server.ping_interval
    return EventResponse(ready.run, encoder, ready.ticket, RequestMetrics(state.metrics, plan),
                         {"x-request-id": rid, "x-reasoning-strategy": plan.strategy}, ping)
