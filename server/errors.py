"""Errors: one :class:`APIError` inside, a shape per API surface outside.

The OpenAI shape ``{"error": {"message", "type", "param", "code"}}`` is the
default; a surface with a shape of its own (Anthropic's for ``/v1/messages``)
claims its paths in :class:`ErrorShapes`, and every error on them, from the
key check and the body parser to validation and the planner, takes that
shape. Validation is 400, never FastAPI's 422; every error carries
``x-request-id``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
    504: "timeout_error",
}
# Codes for the errors Starlette raises itself (unknown route, wrong method, body too large).
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param, self.code)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param, code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error"),
                      "param": param, "code": code}}


# An error as a surface answers it: (HTTP status, body).
Shape = Callable[[APIError], tuple[int, dict[str, Any]]]


def openai_shape(err: APIError) -> tuple[int, dict[str, Any]]:
    return err.status, err.body()


@dataclass(frozen=True)
class ErrorShapes:
    """The shape errors take on a path: a surface's own under the prefixes it
    claims (the prefix itself and everything below it), OpenAI's elsewhere."""

    surfaces: tuple[tuple[str, Shape], ...] = ()

    def for_path(self, path: str) -> Shape:
        for prefix, shape in self.surfaces:
            if path == prefix or path.startswith(prefix + "/"):
                return shape
        return openai_shape


def error_response(exc: APIError, request_id: str | None = None, shape: Shape = openai_shape) -> JSONResponse:
    headers = dict(exc.headers)
    if request_id:
        headers["x-request-id"] = request_id
    status, body = shape(exc)
    return JSONResponse(body, status_code=status, headers=headers)


def loc_to_param(loc: tuple[Any, ...]) -> str | None:
    """A pydantic error location as this server's ``param`` (``messages[0].content``)."""
    parts = [str(p) for p in loc if p != "body"]
    # Drop pydantic's union-branch tags such as "str" / "list[...]" / "function-after[...]".
    # and model names of a union's branches ("NamedToolChoice"): fields are snake_case.
    parts = [p for p in parts if "[" not in p and p not in ("str", "int", "float", "bool", "list", "dict")
             and not p[:1].isupper()]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or None


def _rid(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _body_problem(error: dict[str, Any], content_type: str | None) -> str | None:
    """Say what is wrong with a body FastAPI could not use as an object at all."""
    if error.get("type") == "missing":
        return "the request body is empty or null; send a JSON object"
    given = error.get("input")
    if isinstance(given, bytes):  # FastAPI reads only JSON media types as JSON
        sent = f"not {content_type!r}" if content_type else "it has no Content-Type"
        return f"the request body must be JSON sent as 'Content-Type: application/json'; {sent}"
    if given is not None and not isinstance(given, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean"}.get(type(given), "a number")
        return f"the request body must be a JSON object, not {kind}"
    return None


def install(app: FastAPI, shapes: ErrorShapes = ErrorShapes()) -> None:
    def respond(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc, _rid(request), shapes.for_path(request.url.path))

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return respond(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = tuple(first.get("loc", ()))
        param = loc_to_param(loc)
        msg = first.get("msg", "invalid request")
        if first.get("type") == "extra_forbidden":
            msg = "unrecognized request argument; ponder refuses a field it does not honour"
        if param is None:  # the body as a whole
            msg = _body_problem(first, request.headers.get("content-type")) or msg
        text = f"{param}: {msg}" if param else msg
        return respond(request, bad_request(text, param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, APIError):  # raised while FastAPI read the body (body.parse_body)
            return respond(request, exc.__cause__)
        return respond(request, APIError(exc.status_code, str(exc.detail), code=_HTTP_CODES.get(exc.status_code)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return respond(request, APIError(500, "internal server error"))
