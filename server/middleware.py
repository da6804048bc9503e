"""The one ASGI middleware in front of the routes: request id, API key, body size, access log.

The key comes as ``Authorization: Bearer <key>`` (OpenAI's SDK) or as
``x-api-key: <key>`` (Anthropic's); either works on every route. Errors
raised here take the shape of the surface the path belongs to.

A plain ASGI callable rather than Starlette's ``BaseHTTPMiddleware``: that
one re-wraps every streamed chunk through a memory channel and an extra task,
which costs CPU on the token path and delays noticing a client that left.
Everything here happens before the route runs, so a request without a key,
or with a body over the limit, never reaches the planner or the engine.
"""
from __future__ import annotations

import hmac
import logging
import re
import time
import uuid

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import APIError, ErrorShapes, Shape
from .logs import request_id_var

access = logging.getLogger("ponder.access")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id(headers: dict[bytes, bytes]) -> str:
    """The client's ``x-request-id`` when it is short and plain, else a fresh one."""
    given = headers.get(b"x-request-id", b"").decode("latin-1")
    return given if _SANE_ID.match(given) else uuid.uuid4().hex


def given_key(headers: dict[bytes, bytes]) -> str:
    """The key a request sends: the Bearer token, else ``x-api-key``."""
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get(b"x-api-key", b"").decode("latin-1").strip()


def authorized(headers: dict[bytes, bytes], keys: tuple[str, ...]) -> bool:
    given = given_key(headers).encode()
    if not given:
        return False
    # Compare against every key in constant time; no early exit on a match.
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given, key.encode())
    return ok


class RequestContext:
    def __init__(self, app: ASGIApp, api_keys: tuple[str, ...], public_paths: tuple[str, ...],
                 max_body_bytes: int, error_shapes: ErrorShapes = ErrorShapes()) -> None:
        self.app = app
        self.api_keys = api_keys
        self.public_paths = frozenset(public_paths)
        self.max_body_bytes = max_body_bytes
        self.error_shapes = error_shapes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = dict(scope["headers"])
        rid = request_id(headers)
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode())
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                hdrs = list(message.get("headers", ()))
                if not any(k.lower() == b"x-request-id" for k, _ in hdrs):
                    hdrs.append(rid_header)
                message = {**message, "headers": hdrs}
            await send(message)

        try:
            err = self._refuse(scope, headers)
            if err is not None:
                await _send_error(send_with_id, err, self.error_shapes.for_path(scope["path"]))
                return
            await self.app(scope, self._counting(receive), send_with_id)
        finally:
            state = scope.get("state", {})
            access.info("%s %s %s", scope["method"], scope["path"], status, extra={
                "method": scope["method"], "path": scope["path"], "status": status,
                "duration_ms": round((time.perf_counter() - start) * 1000, 1),
                "strategy": state.get("strategy")})
            request_id_var.reset(token)

    def _refuse(self, scope: Scope, headers: dict[bytes, bytes]) -> APIError | None:
        if self.api_keys and scope["path"] not in self.public_paths \
                and not authorized(headers, self.api_keys):
            return APIError(401, "Incorrect or missing API key. Send it as 'Authorization: Bearer <key>' "
                            "or as 'x-api-key: <key>'.", code="invalid_api_key")
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_body_bytes
            except ValueError:
                return APIError(400, "Content-Length is not a number")
            if too_big:
                return _too_large(self.max_body_bytes)
        return None

    def _counting(self, receive: Receive) -> Receive:
        """Count body bytes as they arrive (chunked uploads have no Content-Length)."""
        seen = 0
        limit = self.max_body_bytes

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # FastAPI re-raises HTTPException from the body read
                    raise HTTPException(413, _too_large(limit).message)
            return message

        return wrapped


def _too_large(limit: int) -> APIError:
    return APIError(413, f"the request body is larger than the server's limit of {limit} bytes",
                    code="request_too_large")


async def _send_error(send: Send, err: APIError, shape: Shape) -> None:
    status, obj = shape(err)
    body = orjson.dumps(obj)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
