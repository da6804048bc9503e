"""The remote engine's wire: one ``Sampling`` as a vLLM ``POST /v1/completions``
body, and vLLM's streamed completion chunks back as ``Delta``s.

Every field is checked against vLLM 0.32's own protocol classes:
``vllm/entrypoints/openai/completion/protocol.py`` (``CompletionRequest``,
``CompletionStreamResponse``, ``CompletionResponseStreamChoice``,
``CompletionLogProbs``), the chunks as ``completion_stream_generator`` in
``vllm/entrypoints/openai/completion/serving.py`` writes them, and the usage in
``vllm/entrypoints/serve/engine/protocol.py`` (``UsageInfo``,
``PromptTokenUsageInfo``). The mapping mirrors ``vllm_engine._sampling_params``
field by field, so a request samples the same on either engine.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from strategies.engine import Delta, EngineRequestFailed, Sampling, Structured, Tokenizer, TokenLogprob

# vLLM's completions logprobs clamp -inf to this (``_create_completion_logprobs``);
# the in-process engine gives -inf, so it is turned back.
_LOGPROB_FLOOR = -9999.0
# ``return_tokens_as_token_ids`` names tokens so (``format_token_id_placeholder``
# in vllm/entrypoints/generate/base/serving.py): ids, never text that may collide.
_TOKEN_ID = "token_id:"


def structured_outputs(c: Structured) -> dict[str, Any]:
    """``CompletionRequest.structured_outputs`` (vLLM's ``StructuredOutputsParams``
    in vllm/sampling_params.py: json, json_object, regex, choice, grammar,
    structural_tag; exactly one), as ``vllm_structured.structured_params`` builds it."""
    if c.json is not None:
        return {"json": c.json}
    if c.json_object:
        return {"json_object": True}
    if c.regex is not None:
        return {"regex": c.regex}
    if c.choice is not None:
        return {"choice": list(c.choice)}
    if c.structural_tag is not None:
        return {"structural_tag": c.structural_tag}
    return {"grammar": c.grammar}


def completion_body(model: str, prompt_ids: Sequence[int], s: Sampling, request_id: str,
                    max_stop_strings: int) -> dict[str, Any]:
    """The streamed completions request for one engine request.

    Every sampling field is sent, defaults included, so the upstream's own
    defaults (a model's generation_config, which vLLM's server applies to
    fields left out) never apply: the in-process engine does not apply them
    either. A ValueError names what the HTTP API cannot carry.
    """
    if len(s.stop) > max_stop_strings:
        # CompletionRequest.stop is a list of at most VLLM_MAX_STOP_STRINGS (4 by
        # default, vllm/envs.py); the in-process engine has no such limit.
        raise ValueError(f"{len(s.stop)} stop strings; the upstream vLLM servers take {max_stop_strings} "
                         f"(raise their VLLM_MAX_STOP_STRINGS and remote.max_stop_strings)")
    body: dict[str, Any] = {
        "model": model,
        "prompt": list(prompt_ids),  # token ids: not re-tokenized (renderers/base.py)
        "stream": True,
        # The final chunk carries usage (and cached tokens with --enable-prompt-tokens-details).
        "stream_options": {"include_usage": True},
        # Every chunk carries the delta's token ids; the first one of each choice the prompt's.
        "return_token_ids": True,
        "request_id": request_id,  # vLLM's logs name ponder's engine request
        "n": s.n,
        "max_tokens": s.max_tokens,
        # vLLM refuses a floor above the cap; a phase with less room generates what it has.
        "min_tokens": min(s.min_tokens, s.max_tokens),
        "temperature": s.temperature,
        "top_p": s.top_p,
        "top_k": s.top_k,
        "min_p": s.min_p,
        "stop": list(s.stop),
        "stop_token_ids": list(s.stop_token_ids),
        "presence_penalty": s.presence_penalty,
        "frequency_penalty": s.frequency_penalty,
        "repetition_penalty": s.repetition_penalty,
        "skip_special_tokens": s.skip_special_tokens,
        "ignore_eos": s.ignore_eos,
    }
    if s.seed is not None:
        body["seed"] = s.seed
    if s.logit_bias:
        body["logit_bias"] = {str(t): b for t, b in s.logit_bias}  # dict[str, float] on the wire
    if s.logprobs is not None:
        body["logprobs"] = s.logprobs
        body["return_tokens_as_token_ids"] = True
    if s.structured is not None:
        body["structured_outputs"] = structured_outputs(s.structured)
    if s.priority:
        body["priority"] = s.priority
    return body


class ChunkReader:
    """vLLM's completion chunks of one request -> ``Delta``s: ``feed`` per chunk,
    then ``finish`` at ``[DONE]`` (or ``aborted`` after an abort).

    A chunk holds one choice (vLLM writes one per sample and step); the first
    chunk of every choice carries its ``prompt_token_ids``. vLLM reports cached
    tokens only in the final usage chunk (``prompt_tokens_details``, with
    ``--enable-prompt-tokens-details``), written right after the last finishing
    chunk. So a sample's finishing delta is held until then, and it, not the
    first, carries ``prompt_tokens`` and ``cached_tokens`` (the ledger counts them
    wherever they come). Ponder's engine requests have ``n`` = 1, so nothing waits
    on other samples; with ``n`` > 1 a finish waits for the last sample's.
    """

    def __init__(self, tokenizer: Tokenizer, prompt_len: int, n: int, logprobs: int | None) -> None:
        self.tokenizer, self.prompt_len, self.n, self.k = tokenizer, prompt_len, n, logprobs
        self.started: set[int] = set()
        self.finished: dict[int, Delta] = {}  # held finishing deltas, in the order they came
        self.generated = 0
        self.usage: dict[str, Any] | None = None
        self._text: dict[int, str] = {}

    def feed(self, chunk: dict[str, Any]) -> list[Delta]:
        """One chunk (error frames are the caller's: what they mean depends on the upstream's health)."""
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        out = []
        for c in chunk.get("choices") or ():
            delta = self._delta(c)
            if delta.finish_reason is None:
                out.append(delta)
            else:
                self.finished[delta.index] = delta
        return out

    def finish(self) -> list[Delta]:
        """The stream ended with ``[DONE]``: every sample's finishing delta, now with
        its prompt and cache hits."""
        missing = sorted(set(range(self.n)) - set(self.finished))
        if missing:
            raise EngineRequestFailed(f"the upstream ended the stream with samples {missing} unfinished")
        reported = (self.usage or {}).get("completion_tokens")
        if reported is not None and reported != self.generated:
            raise EngineRequestFailed(f"the upstream counted {reported} generated tokens, its chunks carried "
                                      f"{self.generated}")
        return [self._report(d, self.cached_tokens) for d in self.finished.values()]

    def aborted(self) -> list[Delta]:
        """After an abort: the samples that finished, then every other one ending with
        "abort" (as the in-process engine ends them). The cache hits are not known."""
        ended = [self._report(d, None) for d in self.finished.values()]
        return ended + [self._report(Delta(i, (), "", finish_reason="abort"), None)
                        for i in range(self.n) if i not in self.finished]

    @property
    def cached_tokens(self) -> int | None:
        details = (self.usage or {}).get("prompt_tokens_details") or {}
        return details.get("cached_tokens")

    def _report(self, delta: Delta, cached: int | None) -> Delta:
        return replace(delta, prompt_tokens=self.prompt_len, cached_tokens=cached)

    def _delta(self, c: dict[str, Any]) -> Delta:
        i, reason = c["index"], c.get("finish_reason")
        if reason == "error":  # vLLM sends an error frame instead; kept in case a router passes it on
            raise EngineRequestFailed("the upstream failed the request")
        ids = c.get("token_ids")
        if ids is None:
            raise EngineRequestFailed("the upstream sent no token ids (it does not support return_token_ids)")
        if i not in self.started:
            self.started.add(i)
            prompt = c.get("prompt_token_ids")
            if prompt is not None and len(prompt) != self.prompt_len:
                raise EngineRequestFailed(f"the upstream saw a prompt of {len(prompt)} tokens, not {self.prompt_len}")
        self.generated += len(ids)
        return Delta(index=i, token_ids=tuple(ids), text=c.get("text") or "", finish_reason=reason,
                     stop_reason=c.get("stop_reason"), logprobs=self._logprobs(ids, c.get("logprobs")))

    def _logprobs(self, ids: Sequence[int], lp: dict[str, Any] | None) -> tuple[TokenLogprob, ...] | None:
        """``CompletionLogProbs`` -> the in-process engine's shape: the sampled
        token's logprob and the top ``k`` (vLLM sends the sampled token plus the
        top k, so the sampled one is dropped unless it ranks within k)."""
        if self.k is None or not ids:
            return None
        if lp is None:
            raise EngineRequestFailed("the upstream sent no logprobs")
        out = []
        for pos, tid in enumerate(ids):
            value = lp["token_logprobs"][pos]
            step = lp["top_logprobs"][pos] or {}
            ranked = sorted(((_token_id(t), v) for t, v in step.items()), key=lambda tv: -tv[1])
            top = ranked if self.k < 0 else ranked[:self.k]
            out.append(TokenLogprob(self._decode(tid), _logprob(value),
                                    tuple((self._decode(t), _logprob(v)) for t, v in top)))
        return tuple(out)

    def _decode(self, tid: int) -> str:
        text = self._text.get(tid)
        if text is None:
            text = self._text[tid] = self.tokenizer.decode([tid])
        return text


def _token_id(token: str) -> int:
    if not token.startswith(_TOKEN_ID):
        raise EngineRequestFailed(f"the upstream named a token {token!r}, not by id")
    return int(token[len(_TOKEN_ID):])


def _logprob(value: float | None) -> float:
    return -math.inf if value is None or value <= _LOGPROB_FLOOR else float(value)
