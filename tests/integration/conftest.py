"""One real `ponder serve` (real vLLM engine, real model) for the whole session.

The server runs in a subprocess exactly as a user starts it, with an API key,
and a small `max_num_batched_tokens` so that long prompts are prefilled in
chunks (the path on which seeded requests used to kill the CPU engine).
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from loadtests.common import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-key-0123456789"
MODEL = "SmolLM2-135M-Instruct"
START_TIMEOUT = float(os.environ.get("PONDER_TEST_START_TIMEOUT", "600"))


@dataclass(frozen=True)
class Live:
    base_url: str
    api_key: str
    model: str
    log_path: Path
    pid: int = 0

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def start_server(log_path: Path, *extra: str, port: int | None = None,
                 env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Live]:
    """``ponder serve`` as a user starts it, with the test key (and ``env`` on top of
    this process's environment); returns once /ready says 200."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--api-key", API_KEY,
           *([] if "--engine-url" in extra else ["--max-model-len", "2048"]), *extra]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"), **(env or {})}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base, log_path, START_TIMEOUT, poll_s=0.5)
    except BaseException:
        stop_server(proc)
        raise
    return proc, Live(base, API_KEY, MODEL, log_path, proc.pid)


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    log_path = tmp_path_factory.mktemp("server") / "ponder.log"
    # Small batches so long prompts are prefilled in chunks; pings every second
    # so the keep-alive of silent phases is seen within a short test.
    # The engine computes on both cores (vLLM's CPU default keeps one for the front end):
    # measured on test_messages.py here, 216 s against 310 s of tests, as the Qwen
    # preset measured its doubling. PONDER_TEST_SERVER_ARGS: more `ponder serve` flags
    # for this server (shell words; a later --set wins).
    extra = shlex.split(os.environ.get("PONDER_TEST_SERVER_ARGS", ""))
    proc, server = start_server(log_path, "--max-num-batched-tokens", "256", "--set", "server.ping_interval=1",
                                "--set", 'engine.cpu_threads_bind="all"', *extra)
    try:
        yield server
    finally:
        stop_server(proc)


@pytest.fixture(scope="session")
def client(live: Live) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.v1, api_key=live.api_key, max_retries=0, timeout=300)
