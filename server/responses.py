"""``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``: OpenAI's
Responses API on the chat path.

The request is mapped onto a ``ChatCompletionRequest`` (server/responses_map.py)
and goes through the same prepare step (validation, plan, admission, render,
context fit), strategies, transport loop, deadlines, disconnect aborts and
metrics as a chat completion; only the encoders (server/responses_encode.py)
are this surface's, plus what the Responses API adds around a run: the
reasoning summary phase (server/responses_summary.py), sealed reasoning
(server/responses_seal.py) and the store (server/responses_store.py), whose
records belong to the API key that made them.
"""
from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter

from strategies.plan import Plan

from .chat import respond
from .errors import APIError
from .middleware import given_key
from .prepare import Prepared, prepare
from .responses_encode import ResponseMeta, ResponseObjectFold, ResponseStream
from .responses_map import Source, renamed, to_chat
from .responses_seal import seal
from .responses_store import StoredResponse, owner_of
from .responses_summary import Summarized, SummaryPhase
from .responses_wire import InputItem, ReasoningItem, ResponsesRequest
from .state import AppState
from .transport import Encoder, EventResponse

_ITEMS: TypeAdapter[list[Any]] = TypeAdapter(list[InputItem])  # type: ignore[valid-type]


def _owner(request: Request, state: AppState) -> str:
    """Whose records these are: a hash of the request's API key (``""`` with keys off)."""
    if not state.settings.server.api_keys:
        return ""
    headers = {k.lower(): v for k, v in request.headers.raw}
    return owner_of(given_key(headers))


def _not_found(response_id: str, param: str | None = None) -> APIError:
    return APIError(404, f"No response with id '{response_id}' found (it may have expired, been deleted, "
                    "or been created with another API key).", param, "response_not_found")


def _input_items(body: ResponsesRequest) -> list[dict[str, Any]]:
    """The request's input as stored: a reasoning item keeps only what proves it
    (its id, its encrypted_content), never the plain text a client could have written."""
    if isinstance(body.input, str):
        return [{"type": "message", "role": "user", "content": body.input}]
    return [i.model_dump(exclude_none=True, by_alias=True, exclude={"content"} if isinstance(i, ReasoningItem)
                         else set()) for i in body.input]


def _source(body: ResponsesRequest, state: AppState, owner: str) -> tuple[Source, list[dict[str, Any]]]:
    history: list[dict[str, Any]] = []
    if body.previous_response_id is not None:
        prev = state.store().get(body.previous_response_id, owner)
        if prev is None:
            raise _not_found(body.previous_response_id, "previous_response_id")
        history = [*prev.items, *prev.output]

    def find_reasoning(item_id: str) -> str | None:
        """A stored response's reasoning item, by its id (``rs_<response>[_<k>]``)."""
        base = item_id.removeprefix("rs_").split("_")[0]
        record = state.store().get(f"resp_{base}", owner) if item_id.startswith("rs_") and base else None
        for item in record.output if record is not None else []:
            if item.get("id") == item_id and item.get("type") == "reasoning":
                return "".join(c["text"] for c in item.get("content") or [])
        return None

    return Source(state.keys, find_reasoning, _ITEMS.validate_python(history)), history


def _dump(model: Any) -> dict[str, Any]:
    return model.model_dump(exclude_none=True, by_alias=True)


def _echo(body: ResponsesRequest, store: bool) -> dict[str, Any]:
    """The request's fields as OpenAI's response object repeats them."""
    dump = _dump
    choice = body.tool_choice
    return {
        "model": body.model, "instructions": body.instructions, "metadata": body.metadata or {},
        "tools": [dump(t) for t in body.tools or []],
        "tool_choice": choice if isinstance(choice, str) else dump(choice) if choice is not None else "auto",
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "temperature": body.temperature, "top_p": body.top_p, "max_output_tokens": body.max_output_tokens,
        "previous_response_id": body.previous_response_id,
        "reasoning": {"effort": body.reasoning.effort if body.reasoning else None,
                      "summary": body.reasoning.summary if body.reasoning else None},
        "text": {"format": dump(body.text.format) if body.text and body.text.format else {"type": "text"}},
        "store": store, "truncation": "disabled", "user": body.user,
    }


def _summarized(body: ResponsesRequest, ready: Prepared, state: AppState, rid: str) -> Summarized | None:
    """The run with a summary phase, when a summary is asked for and the plan thinks."""
    if body.reasoning is None or body.reasoning.summary is None or not ready.plan.thinking:
        return None
    cfg = state.settings.responses
    engine, prompt = state.require_engine(), ready.prompt
    assert state.followup is not None  # set before the engine
    return Summarized(ready.run, SummaryPhase(
        engine, prompt.ids, prompt.think_prefix_ids, prompt.think_suffix_ids, state.followup,
        cfg.summary_prompt, cfg.summary_max_tokens, rid, ready.run.make_ctx(0).sampling.priority))


async def create_response(request: Request, body: ResponsesRequest, state: AppState) -> EventResponse:
    rid: str = request.state.request_id
    owner = _owner(request, state)
    store = body.store if body.store is not None else state.settings.responses.store
    source, history = _source(body, state, owner)
    req = to_chat(body, source)
    try:
        ready = prepare(req, state, rid)
    except APIError as exc:
        raise renamed(exc, body) from None
    response_id, created = f"resp_{uuid.uuid4().hex}", int(time.time())
    keys, include = state.keys, set(body.include or ())

    def keep(response: dict[str, Any]) -> None:
        record = StoredResponse(response_id, owner, time.time(), [*history, *_input_items(body)],
                                response["output"], response)
        state.store().put(record)

    def encoder(plan: Plan) -> Encoder:
        meta = ResponseMeta(
            id=response_id, created_at=created, echo=_echo(body, store), plan=plan.public(),
            include_reasoning=plan.include_reasoning,
            seal=(lambda text: seal(keys, text)) if "reasoning.encrypted_content" in include else None,
            keep=keep if store else None)
        return ResponseStream(meta) if body.stream else ResponseObjectFold(meta)

    try:
        run = _summarized(body, ready, state, rid)
    except BaseException:
        ready.ticket.release()
        raise
    return respond(request, state, ready, encoder, run)


async def get_response(request: Request, response_id: str, state: AppState) -> JSONResponse:
    record = state.store().get(response_id, _owner(request, state))
    if record is None:
        raise _not_found(response_id)
    return JSONResponse(record.body)


async def delete_response(request: Request, response_id: str, state: AppState) -> JSONResponse:
    if not state.store().delete(response_id, _owner(request, state)):
        raise _not_found(response_id)
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})
