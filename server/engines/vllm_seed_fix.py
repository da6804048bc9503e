"""vLLM general plugin: seeded sampling that cannot kill the CPU engine.

vLLM rewinds a seeded request's generator when it discards a token sampled at
the end of a partial (chunked) prefill step: ``gen.set_offset(gen.get_offset()
- 4)`` in ``gpu_model_runner``. That is the CUDA Philox generator's offset; the
CPU generator (Mersenne Twister) has none and raises ``RuntimeError: CPU
Generator does not use offset``, which kills the engine core. Any client could
trigger it with a seed and a long prompt or a busy server.

The fix keeps vLLM's semantics exactly instead of dropping the rewind: on the
CPU, each seeded request gets a :class:`RewindableGenerator` whose state is
snapshotted before every sampling step; "rewinding" restores that snapshot, so
the discarded sample consumes no randomness, as on CUDA. Seeded output is then
independent of how the prefill was chunked.

It is registered as a ``vllm.general_plugins`` entry point (pyproject.toml),
vLLM's documented way to run code in every engine process, including the
spawned engine core where the model runner lives. On CUDA it does nothing.
"""
from __future__ import annotations

import functools

import torch


class RewindableGenerator(torch.Generator):
    """A CPU generator that emulates Philox-style rewinding with snapshots."""

    def snapshot(self) -> None:
        self._saved = self.get_state()

    def get_offset(self) -> int:  # noqa: D401 - torch API name
        return 0

    def set_offset(self, offset: int) -> torch.Generator:
        saved = getattr(self, "_saved", None)
        if saved is not None:
            self.set_state(saved)
        return self

    @classmethod
    def like(cls, gen: torch.Generator) -> RewindableGenerator:
        new = cls(device="cpu")
        new.set_state(gen.get_state())
        return new


def _wrap_add_request(original):
    @functools.wraps(original)
    def add_request(self, request):
        gen = getattr(request, "generator", None)
        if gen is not None and gen.device.type == "cpu" and not isinstance(gen, RewindableGenerator):
            request.generator = RewindableGenerator.like(gen)
        return original(self, request)

    return add_request


def _wrap_sample(original):
    @functools.wraps(original)
    def forward(self, logits, sampling_metadata, *args, **kwargs):
        for gen in sampling_metadata.generators.values():
            if isinstance(gen, RewindableGenerator):
                gen.snapshot()
        return original(self, logits, sampling_metadata, *args, **kwargs)

    return forward


def register() -> None:
    """Entry point; vLLM may call it several times per process."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.v1.sample.sampler import Sampler
    from vllm.v1.worker.gpu_input_batch import InputBatch

    if getattr(InputBatch.add_request, "__wrapped__", None) is None:
        InputBatch.add_request = _wrap_add_request(InputBatch.add_request)
    if getattr(Sampler.forward, "__wrapped__", None) is None:
        Sampler.forward = _wrap_sample(Sampler.forward)
