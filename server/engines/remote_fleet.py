"""The upstream vLLM servers of the remote engine and their health.

Every ``interval`` seconds a daemon thread sends ``GET /health`` to every
upstream (vLLM answers 200, or 503 once its engine died:
vllm/entrypoints/serve/instrumentator/health.py). One failed check takes an
upstream out: no new engine request goes there. One passed check re-admits it.
The engine also takes an upstream out the moment a request finds it broken
(refused connection, a stream cut short, silence past a timeout), without
waiting for the next check.

The checks run in a thread of their own, on a blocking client, so they keep
their pace whatever the event loop is doing, and need no task that the app's
lifespan would have to start and stop. The state they write is one bool and a
reason per upstream; the event loop only reads it.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import httpx

log = logging.getLogger("ponder.remote")


@dataclass
class Upstream:
    url: str
    healthy: bool = True
    # Sequences (engine requests x n) this front end runs there now.
    in_flight: int = 0
    # Why it is out (None while healthy).
    reason: str | None = None


def verdict(response: httpx.Response) -> str | None:
    """None for a healthy upstream, else why not."""
    return None if response.status_code == 200 else f"GET /health answered {response.status_code}"


class Fleet:
    def __init__(self, urls: Iterable[str], interval: float, timeout: float,
                 headers: Mapping[str, str] | None = None, transport: httpx.BaseTransport | None = None) -> None:
        self.upstreams = [Upstream(url) for url in urls]
        self.interval = interval
        self._client = httpx.Client(timeout=timeout, headers=dict(headers or {}), transport=transport)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def live(self, exclude: Iterable[Upstream] = ()) -> list[Upstream]:
        skip = {id(u) for u in exclude}
        return [u for u in self.upstreams if u.healthy and id(u) not in skip]

    @property
    def any_healthy(self) -> bool:
        return any(u.healthy for u in self.upstreams)

    def check_once(self) -> None:
        for upstream in self.upstreams:
            try:
                reason = verdict(self._client.get(f"{upstream.url}/health"))
            except httpx.HTTPError as exc:
                reason = f"GET /health failed: {type(exc).__name__}: {exc}"
            self.set_health(upstream, reason)

    def set_health(self, upstream: Upstream, reason: str | None) -> None:
        if reason is None and not upstream.healthy:
            log.info("upstream %s is back", upstream.url)
        elif reason is not None and upstream.healthy:
            log.warning("upstream %s taken out: %s", upstream.url, reason)
        upstream.healthy, upstream.reason = reason is None, reason

    def start(self) -> None:
        """Check at once, then every ``interval`` seconds in a daemon thread."""
        self.check_once()
        self._thread = threading.Thread(target=self._run, name="remote-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Without waiting: a running thread wakes at once (or after the check under
        way) and closes its client itself."""
        self._stop.set()
        if self._thread is None:
            self._client.close()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    self.check_once()
                except Exception:  # a check must never end the checks
                    log.exception("health check failed")
        finally:
            self._client.close()
