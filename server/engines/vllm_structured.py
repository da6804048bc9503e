"""vLLM's structured outputs for an answer format, and vLLM's own check of one.

One home for both engines: the in-process engine passes the parameters to
``AsyncLLM`` and checks them against its own configuration; the remote engine
sends the same constraint to its upstreams (``remote_wire``) and checks it here,
with the local copy of their tokenizer, so that a grammar vLLM cannot compile is a
400 before the first byte instead of a failed engine request mid-stream.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from vllm.config import StructuredOutputsConfig
from vllm.sampling_params import SamplingParams, StructuredOutputsParams

from strategies.engine import Structured

# What vLLM's check reads of a model's configuration: only whether it is a diffusion
# model (they cannot follow a grammar). The remote upstreams serve causal models.
CAUSAL_MODEL = SimpleNamespace(is_diffusion=False)


def structured_params(c: Structured | None) -> StructuredOutputsParams | None:
    """vLLM's structured outputs (xgrammar on the CPU build as on CUDA) for an answer format."""
    if c is None:
        return None
    if c.json is not None:
        return StructuredOutputsParams(json=c.json)
    if c.json_object:
        return StructuredOutputsParams(json_object=True)
    if c.regex is not None:
        return StructuredOutputsParams(regex=c.regex)
    if c.choice is not None:
        return StructuredOutputsParams(choice=list(c.choice))
    if c.structural_tag is not None:
        return StructuredOutputsParams(structural_tag=c.structural_tag)
    return StructuredOutputsParams(grammar=c.grammar)


def check_structured(structured: Structured, tokenizer: Any, model_config: Any = CAUSAL_MODEL,
                     config: StructuredOutputsConfig | None = None) -> None:
    """The check vLLM's input processor makes when a request is added (the configured
    backend; "auto", vLLM's default, falls back from xgrammar to guidance); a
    ``ValueError`` saying what is wrong."""
    try:
        params = SamplingParams(structured_outputs=structured_params(structured))
        params._validate_structured_outputs(model_config, config or StructuredOutputsConfig(), tokenizer)
    except Exception as exc:  # vLLM's validation errors, and what a grammar compiler raises
        raise ValueError(str(exc)) from None
