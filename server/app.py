"""The FastAPI application: routes, request ids, API keys, lifespan.

The engine is started in the lifespan (in a worker thread so ``/health``
answers while the ~25 s start runs) and shut down with the app.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from . import errors, messages_encode, openapi, wire
from .body import parse_body
from .chat import chat_completions
from .messages import count_tokens, create_message
from .messages_wire import CountTokensRequest, MessagesRequest
from .middleware import RequestContext
from .prompt import Renderer, followup_renderer
from .responses import create_response, delete_response, get_response
from .responses_wire import ResponsesRequest
from .sandbox import Sandbox
from .state import AppState, ServedEngine
from .wire import ChatCompletionRequest

log = logging.getLogger("ponder.app")
# Anthropic's routes answer errors in Anthropic's shape; every other route in OpenAI's.
ERROR_SHAPES = errors.ErrorShapes((("/v1/messages", messages_encode.error_shape),))


def create_app(state: AppState, start_engine: Callable[[], ServedEngine]) -> FastAPI:
    """``start_engine`` builds the engine (blocking); it runs once the server is up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(_start(state, start_engine))
        try:
            yield
        finally:
            if not task.done():
                task.cancel()
            if state.engine is not None:
                state.engine.shutdown()
                state.engine = None  # so the engine is not finalized again at interpreter exit

    app = FastAPI(title="ponder", version="0.1.0", lifespan=lifespan)
    errors.install(app, ERROR_SHAPES)
    server = state.settings.server
    app.add_middleware(RequestContext, api_keys=server.api_keys, public_paths=server.public_paths,
                       max_body_bytes=server.max_body_bytes, error_shapes=ERROR_SHAPES)
    if server.cors_origins:  # outermost, so a browser's preflight is answered before the key check
        app.add_middleware(CORSMiddleware, allow_origins=list(server.cors_origins),
                           allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                           allow_headers=["authorization", "x-api-key", "anthropic-version", "content-type",
                                          "x-request-id"],
                           expose_headers=["x-request-id", "x-reasoning-strategy", "retry-after"])
    app.include_router(_routes(state))
    app.openapi = lambda: openapi.schema(app, state)  # type: ignore[method-assign]
    return app


class _StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_body(await self.body())
        return self._json


class _StrictJSONRoute(APIRoute):
    """Bodies are read by :func:`server.body.parse_body` (FastAPI turns its APIError into a 400)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_StrictJSONRequest(request.scope, request.receive))

        return strict


def _routes(state: AppState) -> APIRouter:
    router = APIRouter(route_class=_StrictJSONRoute)

    @router.post("/v1/chat/completions", response_model=None, responses=openapi.CHAT_RESPONSES)
    async def _chat(request: Request, body: ChatCompletionRequest) -> Response:
        return await chat_completions(request, body, state)

    @router.post("/v1/messages", response_model=None, responses=openapi.MESSAGES_RESPONSES)
    async def _messages(request: Request, body: MessagesRequest) -> Response:
        return await create_message(request, body, state)

    @router.post("/v1/messages/count_tokens", response_model=None, responses=openapi.COUNT_RESPONSES)
    async def _count_tokens(body: CountTokensRequest) -> Response:
        return await count_tokens(body, state)

    @router.post("/v1/responses", response_model=None, responses=openapi.RESPONSES_RESPONSES)
    async def _responses(request: Request, body: ResponsesRequest) -> Response:
        return await create_response(request, body, state)

    @router.get("/v1/responses/{response_id}", response_model=None, responses=openapi.STORED_RESPONSES)
    async def _get_response(request: Request, response_id: str) -> Response:
        return await get_response(request, response_id, state)

    @router.delete("/v1/responses/{response_id}", response_model=None, responses=openapi.STORED_RESPONSES)
    async def _delete_response(request: Request, response_id: str) -> Response:
        return await delete_response(request, response_id, state)

    @router.get("/v1/models", response_model=None, responses={
        200: {"description": "the served model", "headers": openapi.RID,
              "content": {"application/json": {"schema": openapi.ref(wire.ModelList)}}}, **openapi.GET_ERRORS})
    async def _models() -> JSONResponse:
        created = int(state.started_at or time.time())
        data = [{"id": name, "object": "model", "created": created, "owned_by": "ponder",
                 "root": state.model_path, "parent": None,
                 "max_model_len": state.settings.engine.max_model_len}
                for name in state.model_names]
        return JSONResponse({"object": "list", "data": data})

    @router.get("/health", response_class=Response, responses={
        200: {"description": "the process is alive (empty body)", "headers": openapi.RID}, **openapi.GET_ERRORS})
    async def _health() -> Response:
        return Response(status_code=200)

    @router.get("/ready", response_model=None, responses={
        200: {"description": "the engine can generate", "headers": openapi.RID,
              "content": {"application/json": {"schema": openapi.ref(wire.Readiness)}}},
        503: {**openapi.error("not ready: starting, draining or engine dead", retry=True),
              "content": {"application/json": {"schema": openapi.ref(wire.Readiness)}}},
        **openapi.GET_ERRORS})
    async def _ready() -> JSONResponse:
        if state.ready():
            return JSONResponse({"status": "ready"})
        engine = state.engine
        reason = state.startup_error or ("starting" if engine is None else
                                         "engine dead" if not state.engine_ok() else
                                         "no engine upstream is healthy" if not engine.available else "draining")
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503,
                            headers={"retry-after": "5"})

    @router.get("/metrics", response_class=Response, responses={
        200: {"description": "Prometheus text format: ponder_* and vLLM's vllm:*", "headers": openapi.RID,
              "content": {"text/plain": {"schema": {"type": "string"}}}}, **openapi.GET_ERRORS})
    async def _metrics() -> Response:
        return Response(state.metrics.render(state.engine, state.admission),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    return router


async def _in_daemon_thread(build: Callable[[], Any]) -> Any:
    """``build()`` in a daemon thread: a SIGTERM during the ~60 s engine start ends
    the process at once instead of waiting for the start (``asyncio.to_thread``'s
    pool threads are joined at exit). An engine finished after nobody waits for it
    is shut down."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    def discard(ok: bool, value: Any) -> None:
        if ok and hasattr(value, "shutdown"):
            value.shutdown()

    def deliver(ok: bool, value: Any) -> None:
        if done.done():  # cancelled: the server is stopping
            discard(ok, value)
        else:
            (done.set_result if ok else done.set_exception)(value)

    def work() -> None:
        try:
            result: tuple[bool, Any] = (True, build())
        except BaseException as exc:
            result = (False, exc)
        try:
            loop.call_soon_threadsafe(deliver, *result)
        except RuntimeError:  # the loop is closed: the process is exiting
            discard(*result)

    threading.Thread(target=work, name="engine-start", daemon=True).start()
    return await done


def _freeze_startup_heap() -> None:
    """Move everything alive after the engine start (torch, transformers, vLLM,
    the tokenizer: about 620,000 objects) out of the garbage collector's reach,
    as vLLM's own server does (``vllm.utils.gc_utils.freeze_gc_heap``):
    otherwise every oldest-generation collection walks that heap, measured at
    about 300 ms here, and pauses the event loop, so every stream, that long."""
    for generation in (0, 1, 2):
        gc.collect(generation)
    gc.freeze()


async def _check_sandbox(state: AppState) -> None:
    """Probe the code interpreter's sandbox once; without it the tool is refused, with this reason."""
    sandbox = Sandbox(state.settings.sandbox, on_result=state.metrics.code_run)
    reason = await sandbox.check()
    state.sandbox, state.sandbox_unavailable = sandbox, reason
    if reason:
        log.warning("code interpreter unavailable: %s", reason)


async def _start(state: AppState, start_engine: Callable[[], ServedEngine]) -> None:
    t0 = time.perf_counter()
    try:
        engine = await _in_daemon_thread(start_engine)
    except Exception as exc:  # reported by /ready; the CLI exits on it
        state.startup_error = f"{type(exc).__name__}: {exc}"
        log.exception("engine failed to start")
        return
    cfg, tokenizer = state.settings.model, engine.tokenizer
    # Renderer first: a request that sees the engine finds everything it needs.
    state.renderer = Renderer.build(tokenizer, cfg.think_open, cfg.think_close, cfg.native_thinking,
                                    cfg.chat_template_kwargs, cfg.tool_prompt, cfg.keep_reasoning)
    state.followup = followup_renderer(tokenizer, cfg.chat_template_kwargs)
    try:
        state.tool_parser = engine.tool_parser(cfg.tool_parser)
    except ValueError as exc:
        state.startup_error = f"[model] tool_parser: {exc}"
        log.error("%s", state.startup_error)
        engine.shutdown()
        return
    await _check_sandbox(state)
    state.engine = engine
    _freeze_startup_heap()
    state.started_at = time.time()
    log.info("engine ready in %.1f s", time.perf_counter() - t0)
