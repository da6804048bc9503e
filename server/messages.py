"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: Anthropic's
Messages API on the chat path.

The request is mapped onto a ``ChatCompletionRequest`` (server/messages_map.py)
and goes through the same prepare step (validation, plan, admission, render,
context fit), strategies, transport loop, deadlines, disconnect aborts and
metrics as a chat completion; only the encoders (server/messages_encode.py)
are this surface's. Errors of the chat path are renamed to this surface's
fields; their Anthropic shape comes from the app's error shapes.
"""
from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from strategies.plan import Plan

from .chat import respond
from .errors import APIError, bad_request
from .messages_encode import MessageFold, MessageMeta, MessageStream
from .messages_map import renamed, sign_thinking, to_chat
from .messages_wire import CountTokensRequest, MessagesRequest
from .prepare import prepare, prompt_tokens
from .state import AppState
from .transport import Encoder, EventResponse
from .wire import ChatCompletionRequest


def _mapped(body: CountTokensRequest, state: AppState) -> ChatCompletionRequest:
    limit = state.settings.server.max_messages
    if len(body.messages) > limit:  # counted as sent: the mapping may combine turns
        raise bad_request(f"at most {limit} messages are allowed", "messages")
    return to_chat(body, state.keys)


async def create_message(request: Request, body: MessagesRequest, state: AppState) -> EventResponse:
    rid: str = request.state.request_id
    keys = state.keys
    req = _mapped(body, state)
    try:
        ready = prepare(req, state, rid)
    except APIError as exc:
        raise renamed(exc, body) from None

    def encoder(plan: Plan) -> Encoder:
        meta = MessageMeta(id=f"msg_{rid}", model=body.model, plan=plan.public(),
                           prompt_tokens=len(ready.prompt.ids), include_reasoning=plan.include_reasoning,
                           sign=lambda text: sign_thinking(keys, text))
        return MessageStream(meta) if body.stream else MessageFold(meta)

    return respond(request, state, ready, encoder)


async def count_tokens(body: CountTokensRequest, state: AppState) -> JSONResponse:
    """``{"input_tokens": N}``: the prompt of the same request as the engine would see it."""
    req = _mapped(body, state)
    try:
        return JSONResponse({"input_tokens": prompt_tokens(req, state)})
    except APIError as exc:
        raise renamed(exc, body) from None
