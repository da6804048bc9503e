"""The seam between strategies and an inference engine.

Prompts are token ids, never text: a continuation (answer after thinking, a
forced "Wait", a revision round) is the previous prompt plus the ids the engine
already produced, so budgets are exact and the engine's prefix cache hits.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Sampling:
    """Per-request sampling settings, engine-neutral."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    logprobs: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    n: int = 1
    skip_special_tokens: bool = True
    # Benchmarks only: generate exactly max_tokens.
    ignore_eos: bool = False
    # Scheduling, not sampling, but it must follow every phase the same way:
    # lower runs first when the engine schedules by priority (vLLM's policy).
    priority: int = 0


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Delta:
    """New output of one sample since the previous delta (vLLM's DELTA kind)."""

    index: int
    token_ids: tuple[int, ...]
    text: str
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    stop_reason: int | str | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None
    # Set on the first delta of every sample: prompt length and prefix-cache hits.
    prompt_tokens: int | None = None
    cached_tokens: int | None = None


class EngineUnavailable(RuntimeError):
    """The engine died, is shutting down or cannot be reached: the request gets a 503.

    Every Engine raises this (and only this) for unavailability, so the server
    recognises it by type, whatever engine runs underneath.
    """


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass(frozen=True)
class ModelInfo:
    """What strategies need to know about the served model."""

    max_model_len: int
    eos_token_ids: tuple[int, ...] = ()
    # How thinking is delimited. Native thinkers use the model's own tags.
    think_open: str = "<think>"
    think_close: str = "</think>"
    native_thinking: bool = False
    # Prefix caching works in whole KV blocks (vLLM: 16 on CUDA, 128 on CPU).
    kv_block_size: int = 16


class Engine(Protocol):
    """An engine that generates from token ids and can abort.

    ``generate`` is an async generator; closing it (or cancelling the task
    iterating it) must abort the engine request at once.
    """

    info: ModelInfo
    tokenizer: Tokenizer

    def generate(
        self, prompt_ids: Sequence[int], sampling: Sampling, request_id: str
    ) -> AsyncIterator[Delta]: ...

    async def abort(self, request_id: str) -> None: ...
