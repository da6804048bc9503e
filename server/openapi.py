"""What the routes answer, as the OpenAPI schema documents it.

FastAPI's generated schema is made to say what this server does: no 422
(validation is a 400), the response bodies and SSE events, the served model
names, this server's limits and which routes need the key. schemathesis fuzzes
the server against it (tests/integration/test_fuzz.py).
"""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from . import messages_wire, wire
from .state import AppState


def ref(model: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


_HEADER = {"schema": {"type": "string"}}
RID = {"x-request-id": {**_HEADER, "required": True, "description": "echoed when sane, generated otherwise"}}
_RETRY = {"retry-after": {**_HEADER, "description": "seconds to wait before retrying"}}


def error(description: str, retry: bool = False, body: type = wire.ErrorResponse) -> dict[str, Any]:
    return {"description": description, "headers": {**RID, **(_RETRY if retry else {})},
            "content": {"application/json": {"schema": ref(body)}}}


# One SSE event: a chat.completion.chunk, the error frame that ends a failed stream, or [DONE].
_SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string", "if": {"const": "[DONE]"}, "else": {
        "contentMediaType": "application/json",
        "contentSchema": {"anyOf": [ref(wire.ChatCompletionChunk), ref(wire.ErrorResponse)]}}}},
}
CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the completion; with `stream: true` server-sent events, ending with `data: [DONE]`",
          "headers": {**RID, "x-reasoning-strategy": {**_HEADER, "required": True}},
          "content": {"application/json": {"schema": ref(wire.ChatCompletion)},
                      "text/event-stream": {"itemSchema": _SSE_EVENT}}},
    400: error("invalid request: body, field values, reasoning controls, context length"),
    401: error("missing or wrong API key"),
    404: error("unknown model"),
    413: error("request body over the server's limit"),
    429: error("the server is at capacity, or the request needs more than it admits", retry=True),
    503: error("the engine is starting, unavailable or the server is shutting down", retry=True),
    504: error("the request passed its deadline (`timeout`); its engine work was aborted"),
}
GET_ERRORS = {401: error("missing or wrong API key (routes not in `public_paths`)")}


def _anthropic_error(description: str, retry: bool = False) -> dict[str, Any]:
    return error(description, retry, messages_wire.AnthropicError)


# One Anthropic SSE event: its type in `event`, the event object in `data`.
_MESSAGES_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {"event": {"type": "string"}, "data": {
        "type": "string", "contentMediaType": "application/json",
        "contentSchema": {"anyOf": [ref(m) for m in messages_wire.STREAM_EVENTS]}}},
}
_ANTHROPIC_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _anthropic_error("invalid_request_error: body, field values, thinking signatures, context length"),
    401: _anthropic_error("authentication_error: missing or wrong API key (`x-api-key` or Bearer)"),
    404: _anthropic_error("not_found_error: unknown model"),
    413: _anthropic_error("request_too_large: request body over the server's limit"),
    529: _anthropic_error("overloaded_error: the engine is starting or unavailable, or the server is shutting "
                          "down", retry=True),
}
MESSAGES_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the message; with `stream: true` Anthropic's server-sent events, ending with "
                         "`message_stop` (or an `error` event)",
          "headers": {**RID, "x-reasoning-strategy": {**_HEADER, "required": True}},
          "content": {"application/json": {"schema": ref(messages_wire.MessageOut)},
                      "text/event-stream": {"itemSchema": _MESSAGES_EVENT}}},
    **_ANTHROPIC_ERRORS,
    429: _anthropic_error("rate_limit_error: the server is at capacity, or the request needs more than it admits",
                          retry=True),
    504: _anthropic_error("timeout_error: the request passed its deadline (`timeout`); its engine work was "
                          "aborted"),
}
# The Responses API's bodies and events are OpenAI's (the `openai` SDK's types);
# documented here as objects, with the errors in OpenAI's shape.
_RESPONSE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: error("invalid request: body, field values, reasoning controls, encrypted_content, context length"),
    401: error("missing or wrong API key"),
    404: error("unknown model, or previous_response_id not found (with this API key)"),
    413: error("request body over the server's limit"),
}
RESPONSES_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the response object; with `stream: true` the Responses server-sent events, each with "
                         "its `sequence_number`, ending with `response.completed` / `response.incomplete` / "
                         "`response.failed`",
          "headers": {**RID, "x-reasoning-strategy": {**_HEADER, "required": True}},
          "content": {"application/json": {"schema": {"type": "object"}},
                      "text/event-stream": {"itemSchema": {"type": "object"}}}},
    **_RESPONSE_ERRORS,
    429: error("the server is at capacity, or the request needs more than it admits", retry=True),
    503: error("the engine is starting, unavailable or the server is shutting down", retry=True),
    504: error("the request passed its deadline (`timeout`); its engine work was aborted"),
}
STORED_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the stored response (GET), or its deletion (DELETE)", "headers": RID,
          "content": {"application/json": {"schema": {"type": "object"}}}},
    401: error("missing or wrong API key"),
    404: error("no such response stored with this API key"),
}
COUNT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the prompt tokens the engine would see for this request", "headers": RID,
          "content": {"application/json": {"schema": ref(messages_wire.TokenCount)}}},
    **_ANTHROPIC_ERRORS,
}


def schema(app: FastAPI, state: AppState) -> dict[str, Any]:
    """FastAPI's schema, made to say what this server does: no 422 (validation is a
    400), the response bodies, the served model names, this server's limits and keys."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    models = (*wire.RESPONSE_MODELS, *messages_wire.RESPONSE_MODELS)
    _, defs = models_json_schema([(m, "serialization") for m in models], ref_template="#/components/schemas/{model}")
    components.update(defs.get("$defs", {}))
    limits = state.settings
    for name in ("ChatCompletionRequest", "MessagesRequest", "CountTokensRequest", "ResponsesRequest"):
        request = components[name]["properties"]
        request["model"]["enum"] = list(state.model_names)
        if "messages" in request:  # chat turns count against the limit; an Anthropic message is at least one
            request["messages"]["maxItems"] = limits.server.max_messages
    components["ChatCompletionRequest"]["properties"]["n"]["maximum"] = limits.defaults.max_n
    keyed = bool(limits.server.api_keys)
    if keyed:  # either header carries the key, on every route
        schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"},
                                                   "x_api_key": {"type": "apiKey", "in": "header",
                                                                 "name": "x-api-key"}}
    for path, item in schema["paths"].items():
        for op in item.values():
            op["responses"].pop("422", None)
            if keyed:
                op["security"] = [] if path in limits.server.public_paths else [{"bearer": []}, {"x_api_key": []}]
    app.openapi_schema = schema
    return schema


