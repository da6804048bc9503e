"""vLLM's own parallelism for the in-process engine: the ``[engine]`` fields that say
how many devices and nodes one engine spans, and the checks that make each of them
honoured or refused at start-up.

ponder has no distribution layer of its own (DESIGN.md section 7): tensor, pipeline
and data parallelism are vLLM's, passed through to ``AsyncEngineArgs`` under vLLM's
own names by ``server/engines/vllm_engine.py engine_args``. The checks below refuse
what vLLM (0.32) would silently drop or change, or would only refuse after the model
has been prepared, with a message that says what to set instead. What vLLM checks
itself (Ray installed, enough GPUs, sizes that divide) stays vLLM's: at engine start.

Multi-node fields this section does not carry (``nnodes``, ``node_rank``,
``master_addr``, ``master_port`` for vLLM's multiprocessing across nodes,
``data_parallel_start_rank``, which only a ``vllm serve --headless`` worker sets)
reach vLLM through ``--engine-arg KEY=JSON``.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# vLLM's DistributedExecutorBackend (vllm/config/parallel.py) and DataParallelBackend.
ExecutorBackend = Literal["mp", "ray", "uni", "external_launcher"]
DataParallelBackend = Literal["mp", "ray"]

# One engine process on one device: what none of the fields below changes.
_ONE_PROCESS: dict[str, Any] = {
    "tensor_parallel_size": 1, "pipeline_parallel_size": 1, "data_parallel_size": 1,
    "distributed_executor_backend": None, "data_parallel_backend": "mp", "data_parallel_size_local": None,
    "data_parallel_address": None, "data_parallel_rpc_port": None,
}
# The data-parallel fields that place ranks on nodes: meaningless with one rank.
_DP_PLACEMENT = ("data_parallel_size_local", "data_parallel_address", "data_parallel_rpc_port")


class Parallelism(BaseModel):
    """The parallel layout of the in-process engine (the base of ``EngineSection``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Devices one copy of the model is split over, by layer shard and by layer range.
    tensor_parallel_size: int = Field(ge=1)
    pipeline_parallel_size: int = Field(ge=1)
    # Copies of the model (vLLM engine cores), balanced by vLLM; max_num_seqs is per copy.
    data_parallel_size: int = Field(ge=1)
    # Who runs the tensor x pipeline workers: "mp" (processes on this node), "ray" (a
    # Ray cluster, across nodes), "uni" (the engine process itself, one device).
    # Absent: vLLM's choice (one device: "uni"; enough devices on this node: "mp").
    distributed_executor_backend: ExecutorBackend | None = None
    # Where data-parallel ranks run: "mp" (this node, plus `vllm serve --headless`
    # workers that dial data_parallel_address), "ray" (placed on the Ray cluster).
    data_parallel_backend: DataParallelBackend
    # Data-parallel ranks on this node (0: engines only elsewhere); absent: all of them.
    data_parallel_size_local: int | None = Field(default=None, ge=0)
    # This node's address and port that the other nodes' ranks dial (the mp backend).
    data_parallel_address: str | None = Field(default=None, min_length=1)
    data_parallel_rpc_port: int | None = Field(default=None, ge=1, le=65535)

    @model_validator(mode="after")
    def _honoured(self) -> Parallelism:
        backend, workers = self.distributed_executor_backend, self.tensor_parallel_size * self.pipeline_parallel_size
        if backend == "external_launcher":
            raise ValueError("distributed_executor_backend 'external_launcher' runs one copy of the program per "
                             "rank under torchrun, each fed the same requests; a server cannot be: use 'mp' or "
                             "'ray'")
        if backend == "uni" and workers > 1:
            raise ValueError(f"distributed_executor_backend 'uni' runs one worker, and tensor_parallel_size x "
                             f"pipeline_parallel_size is {workers}: use 'mp' (one node) or 'ray' (several)")
        if self.data_parallel_size == 1:
            placed = [k for k in _DP_PLACEMENT if getattr(self, k) is not None]
            if self.data_parallel_backend == "ray":
                placed.append("data_parallel_backend 'ray'")
            if placed:
                raise ValueError(f"{', '.join(placed)} place data-parallel ranks, and data_parallel_size is 1 "
                                 "(for tensor / pipeline workers on Ray: distributed_executor_backend 'ray')")
        local = self.data_parallel_size_local
        if local is not None and local > self.data_parallel_size:
            raise ValueError(f"data_parallel_size_local ({local}) is more than data_parallel_size "
                             f"({self.data_parallel_size})")
        return self

    def beyond_one_process(self) -> list[str]:
        """The fields set to something other than one engine on one device, by name."""
        return [key for key, single in _ONE_PROCESS.items() if getattr(self, key) != single]
