"""The real engine: vLLM's AsyncLLM in process (the CPU build or the CUDA build).

Requests go in as token ids (``TokensPrompt``) with ``RequestOutputKind.DELTA``
so every output carries only what is new; prefix caching is on so strategy
continuations reuse the KV cache. Closing a ``generate`` stream aborts the
engine request at once (AsyncLLM aborts on GeneratorExit / CancelledError; we
abort explicitly as well so no path can leak engine work).
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from vllm import SamplingParams
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.inputs import TokensPrompt
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError

from server.settings import EngineSection
from strategies.engine import (
    Delta,
    EngineRequestFailed,
    EngineUnavailable,
    ModelInfo,
    Sampling,
    Structured,
    TokenLogprob,
)

from .vllm_structured import check_structured, structured_params
from .vllm_tools import VLLMToolParser

log = logging.getLogger("ponder.engine")


def engine_args(engine: EngineSection, model: str, served_model_name: str) -> AsyncEngineArgs:
    """vLLM's engine arguments from the ``[engine]`` settings (the one source of them)."""
    if engine.kv_cache_space_gib is not None:
        # The CPU build sizes its KV cache from this variable (GiB); the
        # CUDA build ignores it and uses gpu_memory_utilization.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(engine.kv_cache_space_gib))
    from vllm.platforms import current_platform
    if current_platform.is_cpu():
        # vLLM's AOT compile cache cannot be loaded back on the CPU build (its compiled
        # function has no finalize_loading: "Compiling model again due to a load
        # failure" on every start, ~40 s here); torch.compile's own cache works, and
        # the engine starts in 44 s instead of 83. An operator's setting wins.
        os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
        if engine.cpu_threads_bind is not None:
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_threads_bind(engine.cpu_threads_bind))
    # Absent (None) settings are left out, so vLLM's own defaults stand for them.
    kwargs: dict[str, Any] = engine.model_dump(exclude={"kv_cache_space_gib", "extra", "cpu_dtype_without_bf16",
                                                        "cpu_threads_bind"}, exclude_none=True)
    if (current_platform.is_cpu() and engine.cpu_dtype_without_bf16 and engine.dtype in ("bfloat16", "bf16")
            and not cpu_has_native_bf16()):
        log.info("this CPU has no native bf16 (no avx512_bf16 / amx_bf16): dtype %s instead of %s",
                 engine.cpu_dtype_without_bf16, engine.dtype)
        kwargs["dtype"] = engine.cpu_dtype_without_bf16
    kwargs.update(model=model, served_model_name=[served_model_name], disable_log_stats=False)
    kwargs.update(engine.extra)
    return AsyncEngineArgs(**kwargs)


def cpu_threads_bind(value: str) -> str:
    """VLLM_CPU_OMP_THREADS_BIND for the ``cpu_threads_bind`` setting ("all": the CPUs
    this process may run on, as vLLM's id list)."""
    if value != "all":
        return value
    return ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU computes bf16 natively (x86 avx512_bf16 or amx_bf16; any
    non-x86 CPU is given the benefit of the doubt, as vLLM itself does)."""
    try:
        with open(cpuinfo) as fh:
            text = fh.read()
    except OSError:
        return True
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), None)
    return flags is None or bool({"avx512_bf16", "amx_bf16"} & set(flags))


def _sampling_params(s: Sampling) -> SamplingParams:
    return SamplingParams(
        n=s.n,
        max_tokens=s.max_tokens,
        # vLLM refuses a floor above the cap; a phase with less room generates what it has.
        min_tokens=min(s.min_tokens, s.max_tokens),
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k,
        min_p=s.min_p,
        seed=s.seed,
        stop=list(s.stop) or None,
        stop_token_ids=list(s.stop_token_ids) or None,
        logprobs=s.logprobs,
        presence_penalty=s.presence_penalty,
        frequency_penalty=s.frequency_penalty,
        repetition_penalty=s.repetition_penalty,
        logit_bias=dict(s.logit_bias) or None,
        skip_special_tokens=s.skip_special_tokens,
        ignore_eos=s.ignore_eos,
        structured_outputs=structured_params(s.structured),
        output_kind=RequestOutputKind.DELTA,
    )


class VLLMEngine:
    """Implements ``strategies.engine.Engine`` on AsyncLLM."""

    def __init__(self, llm: AsyncLLM, info: ModelInfo) -> None:
        self.llm = llm
        self.info = info
        self.tokenizer = llm.get_tokenizer()

    @classmethod
    def start(cls, args: AsyncEngineArgs, think_open: str, think_close: str,
              native_thinking: bool) -> VLLMEngine:
        llm = AsyncLLM.from_engine_args(args)
        tok = llm.get_tokenizer()
        eos = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        gen_cfg = llm.model_config.try_get_generation_config() or {}
        extra_eos = gen_cfg.get("eos_token_id")
        if isinstance(extra_eos, int):
            eos.add(extra_eos)
        elif isinstance(extra_eos, list):
            eos.update(extra_eos)
        info = ModelInfo(
            max_model_len=llm.model_config.max_model_len,
            eos_token_ids=tuple(sorted(eos)),
            think_open=think_open,
            think_close=think_close,
            native_thinking=native_thinking,
            kv_block_size=llm.vllm_config.cache_config.block_size or 16,
            # What vLLM checks logit_bias and stop_token_ids against (the logits' width).
            vocab_size=llm.model_config.get_vocab_size(),
        )
        return cls(llm, info)

    async def generate(
        self, prompt_ids: Sequence[int], sampling: Sampling, request_id: str
    ) -> AsyncIterator[Delta]:
        if self.llm.errored:
            raise EngineUnavailable("the engine is not running")
        prompt = TokensPrompt(prompt_token_ids=list(prompt_ids))
        finished = False
        seen_first: set[int] = set()
        try:
            async for out in self.llm.generate(prompt, _sampling_params(sampling), request_id,
                                               priority=sampling.priority):
                finished = out.finished
                for comp in out.outputs:
                    if comp.finish_reason == "error":
                        raise EngineRequestFailed(f"the engine failed request {request_id}")
                    first = comp.index not in seen_first
                    seen_first.add(comp.index)
                    yield Delta(
                        index=comp.index,
                        token_ids=tuple(comp.token_ids),
                        text=comp.text,
                        finish_reason=comp.finish_reason,
                        stop_reason=comp.stop_reason,
                        logprobs=_logprobs(comp.logprobs, comp.token_ids, sampling.logprobs,
                                           self.tokenizer),
                        prompt_tokens=len(prompt_ids) if first else None,
                        cached_tokens=(out.num_cached_tokens or 0) if first else None,
                    )
        except EngineDeadError as exc:
            raise EngineUnavailable("the engine died") from exc
        finally:
            if not finished and not self.llm.errored:
                await asyncio.shield(self.llm.abort(request_id))

    async def abort(self, request_id: str) -> None:
        await self.llm.abort(request_id)

    @property
    def alive(self) -> bool:
        return not self.llm.errored

    @property
    def available(self) -> bool:
        return self.alive

    def tool_parser(self, name: str) -> VLLMToolParser:
        return VLLMToolParser(self.tokenizer, name)

    def check_structured(self, structured: Structured) -> None:
        """vLLM's own check against this engine's configuration, made before the first
        byte instead of failing the request inside a stream."""
        cfg = self.llm.vllm_config
        check_structured(structured, self.tokenizer, cfg.model_config, cfg.structured_outputs_config)

    def num_unfinished_requests(self) -> int:
        return self.llm.get_num_unfinished_requests()

    async def check_health(self) -> None:
        await self.llm.check_health()

    def shutdown(self) -> None:
        self.llm.shutdown()
        # AsyncLLM.__del__ shuts it down again, and when that runs at interpreter
        # exit the module globals it calls are gone (a TypeError traceback on every
        # exit). Once is enough.
        self.llm.shutdown = lambda timeout=None: None


def _logprobs(entries, token_ids, k: int | None, tokenizer) -> tuple[TokenLogprob, ...] | None:
    """vLLM gives, per token, the sampled token plus the top ``k`` by rank."""
    if k is None or not entries:
        return None
    out = []
    for tid, entry in zip(token_ids, entries):
        def text(t: int, lp) -> str:
            return lp.decoded_token if lp.decoded_token is not None else tokenizer.decode([t])

        top = sorted(((lp.rank, text(t, lp), lp.logprob) for t, lp in entry.items()
                      if lp.rank is not None and lp.rank <= k))
        chosen = entry.get(tid)
        token = text(tid, chosen) if chosen is not None else tokenizer.decode([tid])
        logprob = chosen.logprob if chosen is not None else float("-inf")
        out.append(TokenLogprob(token, logprob, tuple((t, lp) for _, t, lp in top)))
    return tuple(out)
