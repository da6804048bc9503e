"""Model presets (configs/models) and the GGUF-in-parts path of server/model_prep.py,
without the network or a conversion: joining, checking, the marker, the lookup.
Fetching and converting the real 22 parts is the opt-in model suite's job."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from server.cli import _parser, overrides_from_args
from server.model_prep import MARKER, join_parts, prepare_model
from server.settings import GgufParts, load_settings, model_preset


def _spec(data: bytes, parts: int = 3, **kw) -> GgufParts:
    return GgufParts(package="x-part{n}==1", parts=parts, member="data/part{n:02d}.bin", bytes=len(data),
                     sha256=hashlib.sha256(data).hexdigest(), folder="M", **kw)


def _write_parts(root: Path, chunks: list[bytes]) -> None:
    (root / "data").mkdir(parents=True)
    for n, chunk in enumerate(chunks, 1):
        (root / "data" / f"part{n:02d}.bin").write_bytes(chunk)


def test_parts_are_joined_in_numeric_order_and_checked(tmp_path: Path) -> None:
    chunks = [bytes([n]) * (1000 + n) for n in range(1, 12)]  # 11 parts: part10 sorts before part2 as text
    _write_parts(tmp_path / "parts", chunks)
    spec = _spec(b"".join(chunks), parts=11)
    join_parts(spec, tmp_path / "parts", tmp_path / "m.gguf")
    assert (tmp_path / "m.gguf").read_bytes() == b"".join(chunks)


@pytest.mark.parametrize("change", ["sha256", "bytes"])
def test_a_wrong_size_or_hash_is_an_error(tmp_path: Path, change: str) -> None:
    chunks = [b"a" * 10, b"b" * 10, b"c" * 10]
    _write_parts(tmp_path / "parts", chunks)
    good = _spec(b"".join(chunks))
    bad = good.model_copy(update={"sha256": "0" * 64} if change == "sha256" else {"bytes": 31})
    with pytest.raises(RuntimeError, match="the preset says"):
        join_parts(bad, tmp_path / "parts", tmp_path / "m.gguf")


def test_a_finished_conversion_is_reused_without_fetching(tmp_path: Path) -> None:
    spec = _spec(b"abc")
    done = tmp_path / "M"
    done.mkdir()
    (done / MARKER).write_text(f"{spec.package} parts={spec.parts} bytes={spec.bytes} sha256={spec.sha256}\n")
    assert prepare_model("some-preset", tmp_path, gguf=spec) == str(done)
    assert prepare_model("org/hub-model", tmp_path) == "org/hub-model"  # not ours to prepare


def test_the_shipped_preset_is_found_by_name_and_configures_the_server() -> None:
    preset = model_preset("qwen2.5-coder-1.5b")
    assert preset is not None and model_preset("Qwen/Qwen2.5-1.5B") is None and model_preset("nope") is None
    args = _parser().parse_args(["serve", "--model", "qwen2.5-coder-1.5b"])
    settings = load_settings(None, overrides_from_args(args), preset)
    m = settings.model
    assert m.source == "qwen2.5-coder-1.5b" and m.served_model_name == "Qwen2.5-Coder-1.5B-Instruct"
    assert m.gguf is not None and m.gguf.parts == 22 and m.gguf.bytes == 1_117_320_768
    assert m.gguf.sha256.startswith("cc324af0") and m.gguf.sha256.endswith("933bb046")
    assert m.gguf.tie_word_embeddings is False and settings.engine.max_model_len == 4096


def test_the_qwen_preset_has_its_own_effort_table_and_never_forces_thinking() -> None:
    """Its table comes from its measured curves (loadtests/RESULTS.md): forced thinking
    hurt it, programs won, so no level is budget forcing and levels above minimal run
    code; the shared table stays the default for every other model."""
    from server.planner import check_presets, plan_request
    from server.wire import ChatCompletionRequest

    settings = load_settings(None, None, model_preset("qwen2.5-coder-1.5b"))
    check_presets(settings)  # every row (and every auto level) plans like a client's
    assert settings.defaults.effort == "none"
    assert (settings.defaults.temperature, settings.defaults.top_p) == (0.7, 0.8)
    plans = {e: plan_request(ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "2+2?"}],
                                                   reasoning_effort=e), settings) for e in settings.efforts}
    assert all(p.strategy != "budget_forcing" and not p.min_thinking_tokens for p in plans.values())
    assert [plans[e].strategy for e in ("none", "minimal", "low", "medium")] == ["single", "single", "tool_use",
                                                                                 "tool_use"]
    samples = [plans[e].options.samples for e in ("high", "xhigh", "max")]
    assert samples == sorted(samples) and all(plans[e].options.code is not None for e in ("high", "xhigh", "max"))
    shared = load_settings()
    assert shared.efforts["low"].strategy == "budget_forcing" and shared.defaults.temperature == 1.0
