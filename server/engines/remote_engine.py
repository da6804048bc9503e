"""The remote engine: ``strategies.engine.Engine`` on running vLLM OpenAI servers.

For deployments past one machine (DESIGN.md section 7): stateless ponder front
ends over a fleet of ``vllm serve`` processes. Each engine request is one
streamed ``POST /v1/completions`` with the prompt as token ids and the generated
token ids returned (remote_wire.py), so budgets stay exact and continuations hit
the upstream's prefix cache, as on the in-process engine.

- Which upstream: prefix affinity with bounded load, every engine request of
  one ponder request pinned to one upstream (remote_affinity.py).
- Health: checked in the background, taken out on the first failure a check or
  a request finds (remote_fleet.py). A request that an upstream did not take
  (refused connection, 502 / 503 / 504, a connection lost before the response
  began) moves to the next upstream: no token of it was seen. Once a stream has
  begun, a lost upstream ends the request with ``EngineUnavailable`` (a 503).
- Timeouts on every call: connect, the first streamed event, the gap between
  events; silence past them is ``EngineUnavailable`` too.
- Abort: closing a ``generate`` stream (or ``abort``) cancels the task that reads
  the upstream's stream; httpx then closes the connection, and vLLM aborts a
  request whose client went away (``with_cancellation`` and the streaming
  response, vllm/entrypoints/serve/utils/api_utils.py).

Each stream is read by a task of its own that feeds a queue, because a task can
be cancelled at any await while httpx is mid-read; closing a response from
another task could not.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, cast

import httpx
import orjson

from server.settings import ModelSection, RemoteSection
from strategies.engine import (
    Delta,
    EngineRequestFailed,
    EngineUnavailable,
    ModelInfo,
    Sampling,
    Structured,
)

from .remote_affinity import Affinity, pin_key
from .remote_fleet import Fleet, Upstream, verdict
from .remote_model import (
    check_tokenizer,
    discover,
    load_tokenizer,
    model_facts,
    model_info,
    tokenizer_sources,
    vllm_tokenizer,
)
from .remote_wire import ChunkReader, completion_body

log = logging.getLogger("ponder.remote")
_END = object()


class _NotTaken(Exception):
    """The upstream did not take the request; another one may."""

    def __init__(self, reason: str, take_out: bool = True) -> None:
        super().__init__(reason)
        self.take_out = take_out


def _headers(cfg: RemoteSection) -> dict[str, str]:
    return {"authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}


class RemoteEngine:
    """Implements ``strategies.engine.Engine`` (and the server's ``ServedEngine``) over HTTP."""

    def __init__(self, cfg: RemoteSection, fleet: Fleet, info: ModelInfo, tokenizer: Any, model: str,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.cfg, self.fleet, self.info, self.tokenizer, self.model = cfg, fleet, info, tokenizer, model
        self.affinity = Affinity(cfg.affinity_prefix_tokens, cfg.spill_threshold, cfg.pin_seconds)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        # Reading tasks by engine request id (a client may reuse its x-request-id: then several).
        self._running: dict[str, set[asyncio.Task]] = {}
        self._aborted: set[str] = set()
        self._closed = False
        self._closing: asyncio.Task | None = None

    @classmethod
    def start(cls, cfg: RemoteSection, model: ModelSection, prepare: Callable[[], str], *,
              load: Callable[[str], Any] = vllm_tokenizer, transport: httpx.BaseTransport | None = None,
              async_transport: httpx.AsyncBaseTransport | None = None) -> RemoteEngine:
        """Ask the upstreams what they serve, load and check the tokenizer, start
        the health checks (blocking: ``ponder serve`` runs it in its start thread).
        ``prepare`` makes ponder's ``[model]`` local, for a tokenizer the upstream's
        own model cannot give."""
        timeout = httpx.Timeout(cfg.chunk_timeout, connect=cfg.connect_timeout)
        with httpx.Client(timeout=timeout, headers=_headers(cfg), transport=transport) as client:
            served, reachable, failed = discover(client, cfg.urls)
            for url, why in failed.items():
                log.warning("upstream %s did not answer at start: %s", url, why)
            tokenizer, source = load_tokenizer(tokenizer_sources(cfg.tokenizer, served.root, prepare), load)
            for url in reachable:
                try:
                    check_tokenizer(client, url, served.model, tokenizer)
                except httpx.HTTPError as exc:  # it answered /v1/models just now: a check will tell
                    log.warning("upstream %s: the tokenizer could not be checked: %s", url, exc)
        eos, vocab = model_facts(source, tokenizer)
        info = model_info(served, eos, vocab, cfg.kv_block_size, model.think_open, model.think_close,
                          model.native_thinking)
        fleet = Fleet(cfg.urls, cfg.health_interval, cfg.health_timeout, _headers(cfg), transport)
        fleet.start()
        log.info("remote engine: %s (max_model_len %d, tokenizer from %s) on %s", served.model,
                 served.max_model_len, source, ", ".join(cfg.urls))
        return cls(cfg, fleet, info, tokenizer, served.model, async_transport)

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:  # made on the event loop that uses it
            c = self.cfg.connect_timeout
            self._client = httpx.AsyncClient(
                transport=self._transport, headers=_headers(self.cfg),
                # read: None, the stream's own deadlines (first event, between events) bound it.
                timeout=httpx.Timeout(connect=c, read=None, write=c, pool=c),
                # Admission control bounds the streams; the pool must not queue them again.
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))
        return self._client

    # -- the Engine protocol ------------------------------------------------
    async def generate(self, prompt_ids: Sequence[int], sampling: Sampling,
                       request_id: str) -> AsyncIterator[Delta]:
        if self._closed:
            raise EngineUnavailable("the remote engine is shut down")
        body = orjson.dumps(completion_body(self.model, prompt_ids, sampling, request_id,
                                            self.cfg.max_stop_strings))
        reader = ChunkReader(self.tokenizer, len(prompt_ids), sampling.n, sampling.logprobs)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        pump = asyncio.create_task(self._pump(body, prompt_ids, request_id, sampling.n, queue),
                                   name=f"remote-{request_id}")
        self._running.setdefault(request_id, set()).add(pump)
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                for delta in _read(reader, item):
                    yield delta
            if request_id in self._aborted:
                ended = reader.aborted()
            elif self._closed and len(reader.finished) < sampling.n:
                raise EngineUnavailable("the remote engine shut down")
            else:
                ended = reader.finish()
            for delta in ended:
                yield delta
        finally:
            mine = self._running.get(request_id, set())
            mine.discard(pump)
            if not mine:
                self._running.pop(request_id, None)
                self._aborted.discard(request_id)
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)

    async def abort(self, request_id: str) -> None:
        pumps = [p for p in self._running.get(request_id, ()) if not p.done()]
        if pumps:
            self._aborted.add(request_id)
        for pump in pumps:
            pump.cancel()

    # -- what the server asks of an engine (server/state.py ServedEngine) -----
    @property
    def alive(self) -> bool:
        """The engine object itself: an upstream that dies is taken out, not this."""
        return not self._closed

    @property
    def available(self) -> bool:
        """New requests have somewhere to go (``/ready``)."""
        return not self._closed and self.fleet.any_healthy

    def num_unfinished_requests(self) -> int:
        return sum(len(pumps) for pumps in self._running.values())

    def tool_parser(self, name: str) -> Any:
        from .vllm_tools import VLLMToolParser

        return VLLMToolParser(self.tokenizer, name)

    def check_structured(self, structured: Structured) -> None:
        """vLLM's own check, with the local copy of the upstreams' tokenizer and vLLM's
        default backend ("auto"): a constraint they cannot compile is a 400 before the
        first byte. An upstream started with another backend may still refuse one this
        accepts; that request then fails as an engine error."""
        from .vllm_structured import check_structured

        check_structured(structured, self.tokenizer)

    def shutdown(self) -> None:
        self._closed = True
        self.fleet.stop()
        for pumps in list(self._running.values()):
            for pump in list(pumps):
                pump.cancel()
        client, self._client = self._client, None
        if client is not None:
            try:
                self._closing = asyncio.get_running_loop().create_task(client.aclose())
            except RuntimeError:  # no loop: the process is exiting, its sockets go with it
                pass

    # -- one stream -----------------------------------------------------------
    async def _pump(self, body: bytes, prompt_ids: Sequence[int], request_id: str, n: int,
                    queue: asyncio.Queue[Any]) -> None:
        """Choose an upstream, stream from it into ``queue``; move to the next one
        while an upstream does not take the request. Always ends with ``_END``."""
        key = pin_key(request_id)
        tried: list[Upstream] = []
        try:
            while True:
                upstream = cast(Upstream | None, self.affinity.choose(key, prompt_ids, self.fleet.live(tried)))
                if upstream is None:
                    raise EngineUnavailable(self._nowhere(tried))
                upstream.in_flight += n
                try:
                    await self._stream(upstream, body, queue)
                    return
                except _NotTaken as exc:
                    log.warning("upstream %s did not take %s: %s", upstream.url, request_id, exc)
                    if exc.take_out:
                        self.fleet.set_health(upstream, str(exc))
                    tried.append(upstream)
                finally:
                    upstream.in_flight -= n
                    self.affinity.release(key)
        except Exception as exc:  # handed to the consumer, which raises it
            queue.put_nowait(exc)
        finally:
            queue.put_nowait(_END)

    async def _stream(self, up: Upstream, body: bytes, queue: asyncio.Queue[Any]) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        opened = begun = done = False
        try:
            async with asyncio.timeout(cfg.first_chunk_timeout) as deadline:
                async with self.client.stream("POST", f"{up.url}/v1/completions", content=body,
                                              headers={"content-type": "application/json"}) as r:
                    opened = True
                    if r.status_code != 200:
                        await r.aread()
                        await self._refused(up, r)
                    async for line in r.aiter_lines():
                        if done or not line.startswith("data:"):
                            if begun and line.startswith(":"):  # vLLM's SSE keep-alive comment
                                deadline.reschedule(loop.time() + cfg.chunk_timeout)
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            # Read the body to its end, so the connection goes back to the pool.
                            done = True
                            continue
                        try:
                            event = orjson.loads(data)
                        except orjson.JSONDecodeError:
                            raise EngineRequestFailed(f"upstream {up.url} sent a frame that is not JSON: "
                                                      f"{data[:200]!r}") from None
                        if "error" in event:
                            await self._failed(up, event["error"] or {})
                        queue.put_nowait(event)
                        begun = True
                        deadline.reschedule(loop.time() + cfg.chunk_timeout)
        except TimeoutError:
            what = (f"nothing for {cfg.chunk_timeout:g} s" if begun
                    else f"no first event within {cfg.first_chunk_timeout:g} s")
            self.fleet.set_health(up, f"a stream timed out ({what})")
            raise EngineUnavailable(f"upstream {up.url} sent {what}") from None
        except httpx.TransportError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if not opened:  # no response yet, so no token of it was seen: another upstream may take it
                raise _NotTaken(reason) from exc
            self.fleet.set_health(up, reason)
            raise EngineUnavailable(f"upstream {up.url} broke off the stream: {reason}") from exc
        if done:
            return
        # The body ended without [DONE]: the upstream went away mid-stream.
        self.fleet.set_health(up, "a stream ended without [DONE]")
        raise EngineUnavailable(f"upstream {up.url} ended the stream early")

    async def _refused(self, up: Upstream, r: httpx.Response) -> None:
        """A status other than 200, before any token."""
        message = _message(r)
        if r.status_code in (502, 503, 504):
            raise _NotTaken(f"answered {r.status_code}: {message}")
        if r.status_code == 429:
            raise _NotTaken(f"answered 429: {message}", take_out=False)
        if r.status_code >= 500:
            await self._failed(up, {"code": r.status_code, "message": message})
        raise EngineRequestFailed(f"upstream {up.url} refused the request ({r.status_code}): {message}")

    async def _failed(self, up: Upstream, error: dict[str, Any]) -> None:
        """The upstream ended a request with an error (vLLM's ``ErrorResponse``): its
        engine died (503, or /health fails now) or this request failed alone."""
        message = error.get("message") or error
        if error.get("code") == 503 or error.get("type") == "ServiceUnavailableError":
            raise EngineUnavailable(f"upstream {up.url} is unavailable: {message}")
        reason = await self._probe(up)
        if reason is not None:
            self.fleet.set_health(up, reason)
            raise EngineUnavailable(f"upstream {up.url} failed ({message}) and is down: {reason}")
        raise EngineRequestFailed(f"upstream {up.url} failed the request: {message}")

    async def _probe(self, up: Upstream) -> str | None:
        try:
            return verdict(await self.client.get(f"{up.url}/health", timeout=self.cfg.health_timeout))
        except httpx.HTTPError as exc:
            return f"GET /health failed: {type(exc).__name__}: {exc}"

    def _nowhere(self, tried: list[Upstream]) -> str:
        out = [f"{u.url}: {u.reason or 'did not take the request'}" for u in self.fleet.upstreams
               if not u.healthy or u in tried]
        return "no upstream can take the request (" + "; ".join(out) + ")"


def _read(reader: ChunkReader, chunk: Any) -> list[Delta]:
    try:
        return reader.feed(chunk)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise EngineRequestFailed(f"the upstream sent a chunk ponder cannot read: {exc!r}") from exc


def _message(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:500]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return str(body.get("detail", body) if isinstance(body, dict) else body)[:500]
