"""Selecting the remote engine: ``ponder serve --engine-url``, the ``[remote]``
settings, and what the server says while no upstream is healthy."""
from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from scripted_engine import CharTokenizer, char_model_info

from server.app import create_app
from server.cli import _parser, overrides_from_args
from server.settings import load_settings
from server.state import AppState


def settings_for(*argv: str):
    return load_settings(overrides=overrides_from_args(_parser().parse_args(["serve", *argv])))


def test_the_in_process_engine_stays_the_default() -> None:
    assert settings_for().remote.urls == ()


def test_engine_urls_select_the_remote_engine() -> None:
    s = settings_for("--engine-url", "http://gpu-0:8000/v1", "--engine-url", "https://gpu-1:8000/")
    assert s.remote.urls == ("http://gpu-0:8000", "https://gpu-1:8000")
    assert settings_for("--set", 'remote.urls=["http://x:1"]').remote.urls == ("http://x:1",)


@pytest.mark.parametrize("flags,named", [
    (["--max-model-len", "4096"], "max_model_len"), (["--no-prefix-caching"], "enable_prefix_caching"),
    (["--engine-arg", "block_size=32"], "extra"), (["--kv-cache-space", "4"], "kv_cache_space_gib")])
def test_in_process_engine_flags_with_engine_urls_are_refused(flags: list[str], named: str) -> None:
    with pytest.raises(SystemExit, match=f"{named} configure the in-process engine"):
        settings_for("--engine-url", "http://gpu-0:8000", *flags)


@pytest.mark.parametrize("argv,match", [
    (["--engine-url", "gpu-0:8000"], "not an http"),
    (["--engine-url", "http://a:1", "--engine-url", "http://a:1/v1"], "listed twice"),
    (["--set", "remote.chunk_timeout=0"], "greater than 0"),
    (["--set", "remote.affinity_prefix_tokens=0"], "greater than or equal to 1"),
], ids=["no-scheme", "twice", "timeout-0", "prefix-0"])
def test_bad_remote_settings_are_refused_at_start(argv: list[str], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        settings_for(*argv)


class _NoUpstream:
    """A remote engine whose every upstream is down: alive (it may come back), not available."""

    info = char_model_info()
    tokenizer = CharTokenizer()
    alive = True
    available = False

    def num_unfinished_requests(self) -> int:
        return 0

    def shutdown(self) -> None:
        pass


def test_without_a_healthy_upstream_the_server_is_not_ready_and_answers_503() -> None:
    state = AppState(load_settings(), "unused")
    engine: Any = _NoUpstream()
    state.engine = engine
    http = TestClient(create_app(state, lambda: engine))
    r = http.get("/ready")
    assert r.status_code == 503 and r.json() == {"status": "unavailable", "reason": "no engine upstream is healthy"}
    r = http.post("/v1/chat/completions", json={"model": "SmolLM2-135M-Instruct",
                                                "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 503 and r.json()["error"]["code"] == "engine_unavailable"
    assert r.headers["retry-after"] == "5"
    assert state.engine_ok()  # so the lifecycle's watch does not exit: the fleet may come back
