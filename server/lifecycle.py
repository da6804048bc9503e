"""The server's life after start: the drain on SIGTERM and the watch on the engine.

On SIGTERM (or Ctrl-C) the server first drains: ``/ready`` turns 503 so a
load balancer stops sending, new requests get 503 ``server_shutting_down``
with ``Retry-After``, and running requests get ``drain_timeout`` seconds to
finish. Those still running then end with one 503 error (an error frame on a
stream) and their engine requests are aborted; only then does uvicorn close
the connections and the engine shut down. Exit status 0. During the engine's
start (which runs in a daemon thread, see ``app._in_daemon_thread``) there is
nothing to drain and the process exits at once.

If the engine process dies, vLLM fails every running request (they end with
a 503 or an error frame) and ``/ready`` turns 503. The server does not try to
rebuild an engine in a process whose engine just died: it drains what is left
and exits with status 3, so a supervisor (systemd, Docker's restart policy,
Kubernetes) starts a fresh one. It never hangs.
"""
from __future__ import annotations

import asyncio
import logging

import uvicorn

from .state import AppState

log = logging.getLogger("ponder.lifecycle")
ENGINE_DIED = 3
START_FAILED = 1


class PonderServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: AppState) -> None:
        super().__init__(config)
        self.state = state
        self.exit_code = 0

    async def shutdown(self, sockets=None) -> None:
        await drain(self.state, self.state.settings.server.drain_timeout)
        # A clean drain is a clean exit: uvicorn would re-raise the captured
        # SIGTERM after serving, and the process would end as "killed".
        self._captured_signals.clear()
        await super().shutdown(sockets)

    async def watch(self, poll_s: float = 0.25, linger_s: float = 2.0) -> None:
        """Stop the server when the engine failed to start or died.

        After a death the server lingers ``linger_s`` answering 503 (``/ready``
        included) so probes and clients see why before the port closes.
        """
        state = self.state
        while not self.should_exit:
            if state.startup_error:
                self.exit_code = START_FAILED
                self.should_exit = True
            elif state.engine is not None and not state.engine_ok():
                log.error("the engine died; failing running requests and exiting so a supervisor restarts "
                          "the server (exit status %d)", ENGINE_DIED)
                self.exit_code = ENGINE_DIED
                await asyncio.sleep(linger_s)
                self.should_exit = True
            await asyncio.sleep(poll_s)


async def drain(state: AppState, timeout_s: float, abort_grace_s: float = 5.0) -> None:
    """Refuse new work, give running requests ``timeout_s``, then abort what is left."""
    admission = state.admission
    admission.draining = True
    if not state.engine_ok():
        timeout_s = min(timeout_s, 1.0)  # nothing running can finish without an engine
    running = len(admission.tickets)
    log.info("draining: %d running request(s), up to %.0f s", running, timeout_s)
    if await _until_idle(state, timeout_s):
        return
    aborted = admission.expire_all("shutdown")
    log.warning("drain time is up: aborting %d request(s)", aborted)
    await _until_idle(state, abort_grace_s)


async def _until_idle(state: AppState, timeout_s: float) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while state.admission.tickets:
        if loop.time() >= end:
            return False
        await asyncio.sleep(0.05)
    return True
