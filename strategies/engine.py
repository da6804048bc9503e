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
class Structured:
    """An engine-neutral structured-output constraint (one kind set), for
    answer phases only (strategies/output.py): ``json`` a JSON schema
    (serialised, so Sampling stays hashable), ``json_object`` any JSON object,
    ``regex`` / ``choice`` / ``grammar`` / ``structural_tag`` vLLM's other kinds."""

    json: str | None = None
    json_object: bool = False
    regex: str | None = None
    choice: tuple[str, ...] | None = None
    grammar: str | None = None
    # vLLM's structural tag (JSON): free text with constrained spans (tool calls).
    structural_tag: str | None = None

    @classmethod
    def schema(cls, schema: dict) -> Structured:
        import json
        return cls(json=json.dumps(schema, sort_keys=True))


@dataclass(frozen=True)
class Sampling:
    """Per-request sampling settings, engine-neutral.

    Which phase gets which of the client's settings is decided where phases
    build their sampling (``RunContext``): the fields that shape the
    distribution (temperature, top_p, top_k, min_p, the penalties, logit_bias)
    go to every phase whose tokens the client gets; the ones that end or
    lengthen the answer (``stop``, ``stop_token_ids``, ``min_tokens``) to the
    answer phases only; a judge gets none of them.
    """

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    # 0: every token (vLLM also reads -1 so).
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    # Eos and stops (strings and ids) cannot end a sample before this many tokens.
    # Above max_tokens it means max_tokens: a phase with less room than the client's
    # floor generates what room it has (engines take min(min_tokens, max_tokens)).
    min_tokens: int = 0
    logprobs: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # Penalises tokens already in the prompt or the output, CTRL style (Keskar et al.
    # 2019): their logits are divided by it (multiplied when negative); 1: off.
    repetition_penalty: float = 1.0
    # (token id, bias added to its logit) pairs, sorted by id: a tuple, not a dict,
    # so Sampling stays frozen and hashable.
    logit_bias: tuple[tuple[int, float], ...] = ()
    n: int = 1
    # The answer's format (JSON, a tool call), enforced by the engine; never on thinking.
    structured: Structured | None = None
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
    finish_reason: str | None = None  # "stop" | "length" | "abort" (an engine "error" is raised)
    stop_reason: int | str | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None
    # Set once per sample: prompt length and prefix-cache hits. On its first delta
    # (the in-process engine), or on its last by an engine that learns the hits only
    # when the request ends (the remote engine: vLLM's final usage chunk).
    prompt_tokens: int | None = None
    cached_tokens: int | None = None


class EngineUnavailable(RuntimeError):
    """The engine died, is shutting down or cannot be reached: the request gets a 503.

    Every Engine raises this (and only this) for unavailability, so the server
    recognises it by type, whatever engine runs underneath.
    """


class EngineRequestFailed(RuntimeError):
    """The engine ended one request with an internal error of its own (vLLM's
    ``finish_reason`` "error": a sampler or grammar failure, a lost KV block) while
    it stays up: the request gets a 500, never a 200 whose choice says "error"."""


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
    # Token ids run from 0 to vocab_size - 1 (the width of the model's logits,
    # which may exceed the tokenizer's); None: not known, ids are not checked.
    vocab_size: int | None = None


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
