"""vLLM's own parallelism through ``ponder serve`` (issue 15, part 2): a real command
line, parsed by the CLI's own parser and overrides, loaded with the shipped configs,
turned into vLLM's ``AsyncEngineArgs`` by ``engine_args``, and on to vLLM's
``ParallelConfig``.

``AsyncEngineArgs.create_engine_config()`` is the first thing ``AsyncLLM.from_engine_args``
does, and it runs offline on the CPU build: it reads the model's ``config.json`` (a
tiny Llama written here; no weights, no tokenizer) and places nothing on a device, so
the tests check the ParallelConfig vLLM would start with, including vLLM's own
refusals. What they cannot show is an engine actually running tensor / pipeline /
data parallel or on Ray: that needs several GPUs (or nodes), and these machines have
one CPU and no Ray; the README's "Scaling out" says so.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from vllm.engine.arg_utils import AsyncEngineArgs

from server.cli import _parser, overrides_from_args
from server.engines.vllm_engine import engine_args
from server.settings import Settings, load_settings, model_preset

PARALLEL_KEYS = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size",
                 "distributed_executor_backend", "data_parallel_backend", "data_parallel_size_local",
                 "data_parallel_address", "data_parallel_rpc_port")
TINY_LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
              "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
              "num_hidden_layers": 4, "vocab_size": 1024, "max_position_embeddings": 4096,
              "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "dtype": "bfloat16"}


@pytest.fixture(autouse=True)
def _environment():
    """engine_args sets vLLM's CPU variables (setdefault) for the engine it starts; keep them here."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("tiny-llama")
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA))
    return str(folder)


def serve_settings(*argv: str) -> Settings:
    """Settings as ``ponder serve ARGV`` builds them (cli.main without serving)."""
    args = _parser().parse_args(["serve", *argv])
    return load_settings(args.config, overrides_from_args(args), model_preset(args.model))


def vllm_args(model_dir: str, *argv: str) -> AsyncEngineArgs:
    settings = serve_settings(*argv)
    return engine_args(settings.engine, model_dir, settings.model.served_model_name)


def test_without_flags_vllms_own_defaults_stand(model_dir: str) -> None:
    args, vllms = vllm_args(model_dir), AsyncEngineArgs(model=model_dir)
    assert {k: getattr(args, k) for k in PARALLEL_KEYS} == {k: getattr(vllms, k) for k in PARALLEL_KEYS}
    parallel = args.create_engine_config().parallel_config
    assert (parallel.world_size, parallel.data_parallel_size) == (1, 1)


CASES = {
    "tp-pp-mp": (["--tensor-parallel-size", "2", "--pipeline-parallel-size", "2",
                  "--distributed-executor-backend", "mp"],
                 {"tensor_parallel_size": 2, "pipeline_parallel_size": 2, "distributed_executor_backend": "mp"}),
    "tp-pp-ray": (["--tensor-parallel-size", "8", "--pipeline-parallel-size", "2",
                   "--distributed-executor-backend", "ray"],
                  {"tensor_parallel_size": 8, "pipeline_parallel_size": 2, "distributed_executor_backend": "ray"}),
    "dp-two-nodes-mp": (["--data-parallel-size", "4", "--data-parallel-size-local", "2",
                         "--data-parallel-address", "10.0.0.1", "--data-parallel-rpc-port", "13345"],
                        {"data_parallel_size": 4, "data_parallel_size_local": 2,
                         "data_parallel_address": "10.0.0.1", "data_parallel_rpc_port": 13345}),
    "dp-ray-tp": (["--data-parallel-size", "4", "--data-parallel-size-local", "2", "--data-parallel-backend", "ray",
                   "--tensor-parallel-size", "2"],
                  {"data_parallel_size": 4, "data_parallel_size_local": 2, "data_parallel_backend": "ray",
                   "tensor_parallel_size": 2}),
    "set": (["--set", 'engine.distributed_executor_backend="mp"', "--set", "engine.tensor_parallel_size=4"],
            {"tensor_parallel_size": 4, "distributed_executor_backend": "mp"}),
}


@pytest.mark.parametrize("argv,given", CASES.values(), ids=CASES.keys())
def test_flags_reach_vllms_engine_args(model_dir: str, argv: list[str], given: dict) -> None:
    args, vllms = vllm_args(model_dir, *argv), AsyncEngineArgs(model=model_dir)
    assert {k: getattr(args, k) for k in PARALLEL_KEYS} == {k: given.get(k, getattr(vllms, k)) for k in PARALLEL_KEYS}


def test_a_config_file_sets_them_too(model_dir: str, tmp_path: Path) -> None:
    (tmp_path / "big.toml").write_text('[engine]\ntensor_parallel_size = 8\npipeline_parallel_size = 2\n'
                                       'distributed_executor_backend = "ray"\n')
    args = vllm_args(model_dir, "--config", str(tmp_path / "big.toml"), "--pipeline-parallel-size", "4")
    assert (args.tensor_parallel_size, args.pipeline_parallel_size, args.distributed_executor_backend) == (8, 4, "ray")


def test_vllm_builds_the_parallel_config_asked_for(model_dir: str) -> None:
    parallel = vllm_args(model_dir, *CASES["tp-pp-mp"][0]).create_engine_config().parallel_config
    assert (parallel.tensor_parallel_size, parallel.pipeline_parallel_size, parallel.world_size,
            parallel.distributed_executor_backend) == (2, 2, 4, "mp")
    parallel = vllm_args(model_dir, *CASES["dp-two-nodes-mp"][0]).create_engine_config().parallel_config
    assert (parallel.data_parallel_size, parallel.data_parallel_size_local, parallel.data_parallel_master_ip,
            parallel.data_parallel_rpc_port, parallel.data_parallel_backend) == (4, 2, "10.0.0.1", 13345, "mp")


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="Ray is installed here")
@pytest.mark.parametrize("case", ["tp-pp-ray", "dp-ray-tp"])
def test_ray_without_ray_is_refused_at_start_by_vllm(model_dir: str, case: str) -> None:
    with pytest.raises(ValueError, match="pip install ray"):
        vllm_args(model_dir, *CASES[case][0]).create_engine_config()


REFUSED = {
    "unknown-backend": (["--distributed-executor-backend", "threads"], "'mp', 'ray', 'uni' or 'external_launcher'"),
    "external-launcher": (["--distributed-executor-backend", "external_launcher"], "torchrun"),
    # vLLM's CPU build would quietly run "uni" as "mp"; on CUDA one worker cannot hold 2 shards.
    "uni-with-tp": (["--tensor-parallel-size", "2", "--distributed-executor-backend", "uni"], "runs one worker"),
    "dp-local-without-dp": (["--data-parallel-size-local", "2"], "place data-parallel ranks"),
    "dp-ray-without-dp": (["--data-parallel-backend", "ray"], "place data-parallel ranks"),
    "dp-local-above-dp": (["--data-parallel-size", "2", "--data-parallel-size-local", "3"], "more than"),
    "dp-port-0": (["--data-parallel-size", "2", "--data-parallel-rpc-port", "0"], "greater than or equal to 1"),
    "unknown-dp-backend": (["--data-parallel-size", "2", "--data-parallel-backend", "slurm"], "'mp' or 'ray'"),
    "remote-with-tp": (["--engine-url", "http://gpu-0:8000", "--tensor-parallel-size", "2"],
                       "tensor_parallel_size configure the in-process engine"),
}


@pytest.mark.parametrize("argv,match", REFUSED.values(), ids=REFUSED.keys())
def test_a_layout_that_would_not_be_honoured_is_a_startup_error(argv: list[str], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        serve_settings(*argv)


def test_ponder_serve_says_why_and_exits_2_before_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    from server.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["serve", "--tensor-parallel-size", "2", "--distributed-executor-backend", "uni"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("ponder: invalid settings:") and "'uni' runs one worker" in err and "Traceback" not in err
