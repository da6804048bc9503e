"""``POST /v1/chat/completions``: prepare, then run through the transport loop
with the OpenAI chat encoding (a stream of chunks, or one completion).

:func:`respond` is what every surface does with a prepared request; only the
encoder differs (server/messages.py gives it Anthropic's).
"""
from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import Request

from strategies.ledger import Usage
from strategies.phase import Phase
from strategies.plan import Plan

from .chat_encode import ChunkEncoder, ResponseFold, ResponseMeta
from .observe import RequestMetrics
from .prepare import Prepared, prepare
from .state import AppState
from .transport import Encoder, EventResponse
from .wire import ChatCompletionRequest


async def chat_completions(request: Request, req: ChatCompletionRequest, state: AppState) -> EventResponse:
    rid: str = request.state.request_id
    ready = prepare(req, state, rid)

    def encoder(plan: Plan) -> Encoder:
        meta = ResponseMeta(
            id=f"chatcmpl-{rid}", model=req.model, n=req.n, plan=plan.public(),
            reasoning_fields=state.reasoning_fields, include_reasoning=plan.include_reasoning,
            include_usage=bool(req.stream_options and req.stream_options.include_usage),
            created=int(time.time()))
        return ChunkEncoder(meta) if req.stream else ResponseFold(meta)

    return respond(request, state, ready, encoder)


def respond(request: Request, state: AppState, ready: Prepared, encoder: Callable[[Plan], Encoder],
            run: Phase[Usage] | None = None) -> EventResponse:
    """The response of a prepared request: its run (``ready.run``, or ``run`` that wraps
    it) through the transport loop, encoded by ``encoder(plan)``; the admission ticket
    is released if this fails."""
    plan = ready.plan
    request.state.strategy = plan.strategy
    rid: str = request.state.request_id
    try:
        ping = None if ready.streams_tokens else state.settings.server.ping_interval
        return EventResponse(run or ready.run, encoder(plan), ready.ticket, RequestMetrics(state.metrics, plan),
                             {"x-request-id": rid, "x-reasoning-strategy": plan.strategy}, ping)
    except BaseException:
        ready.ticket.release()
        raise
