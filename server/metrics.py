"""Prometheus metrics: ponder's own registry, served beside vLLM's.

vLLM registers its ``vllm:*`` metrics in prometheus_client's default registry
(in this process, since AsyncLLM runs here); ``render()`` concatenates both.
"""
from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from strategies.tools import CodeResult
from strategies.trace import Trace

_TOKEN_BUCKETS = (0, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
_TIME_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("ponder_requests", "Chat requests by strategy, effort and status",
                                ["strategy", "effort", "status"], registry=r)
        self.tokens = Counter("ponder_tokens", "Generated tokens by channel",
                              ["strategy", "channel"], registry=r)
        self.thinking_per_request = Histogram("ponder_thinking_tokens_per_request",
                                              "Thinking tokens per request", ["strategy", "effort"],
                                              buckets=_TOKEN_BUCKETS, registry=r)
        self.engine_requests = Counter("ponder_engine_requests", "Engine requests started by strategies",
                                       ["strategy"], registry=r)
        self.cached_tokens = Counter("ponder_cached_prompt_tokens", "Prefix-cache hits over engine requests",
                                     ["strategy"], registry=r)
        self.ttft_thinking = Histogram("ponder_time_to_first_thinking_token_seconds",
                                       "Time to the first thinking token", ["strategy"],
                                       buckets=_TIME_BUCKETS, registry=r)
        self.ttft_answer = Histogram("ponder_time_to_first_answer_token_seconds",
                                     "Time to the first answer token", ["strategy"],
                                     buckets=_TIME_BUCKETS, registry=r)
        self.forced_ends = Counter("ponder_thinking_forced_ends", "Thinking blocks the server ended at the cap",
                                   ["strategy", "effort"], registry=r)
        self.forced_continuations = Counter("ponder_thinking_forced_continuations",
                                            "Early ends of thinking replaced by a continuation (s1 'Wait')",
                                            ["strategy", "effort"], registry=r)
        self.candidates = Counter("ponder_candidates", "Candidates of parallel strategies by outcome",
                                  ["strategy", "outcome"], registry=r)
        self.early_stops = Counter("ponder_early_stops", "Parallel runs stopped early", ["strategy"], registry=r)
        self.tokens_saved = Counter("ponder_early_stop_tokens_saved",
                                    "Estimated tokens not generated thanks to early stopping",
                                    ["strategy"], registry=r)
        self.engine_unfinished = Gauge("ponder_engine_unfinished_requests",
                                       "Engine requests not finished (running or waiting), read at scrape",
                                       registry=r)
        self.in_flight = Gauge("ponder_requests_in_flight", "Chat requests being served", registry=r)
        self.admission_in_use = Gauge("ponder_admission_sequences_in_use",
                                      "Concurrent engine sequences admitted (n x samples ...), read at scrape",
                                      registry=r)
        self.admission_limit = Gauge("ponder_admission_sequences_limit", "Admission limit (0: none)", registry=r)
        self.rejected = Counter("ponder_requests_rejected", "Requests refused before any work, by error code",
                                ["code"], registry=r)
        self.code_runs = Counter("ponder_code_runs", "Programs the code interpreter ran, by how they ended "
                                 "(exit_0, exit_error, or the limit that killed it)", ["outcome"], registry=r)

    def code_run(self, result: CodeResult) -> None:
        outcome = result.killed_by or ("exit_0" if result.exit_status == 0 else "exit_error")
        self.code_runs.labels(outcome.split(":")[0]).inc()

    def choice_done(self, strategy: str, effort: str, trace: Trace) -> None:
        cands = trace.candidate_traces()
        if cands:
            aborted = sum(1 for c in cands if c.aborted)
            self.candidates.labels(strategy, "started").inc(len(cands))
            self.candidates.labels(strategy, "finished").inc(len(cands) - aborted)
            self.candidates.labels(strategy, "aborted").inc(aborted)
        saved = trace.early_stop_savings()
        if saved is not None:
            self.early_stops.labels(strategy).inc()
            self.tokens_saved.labels(strategy).inc(saved)
        for thinking in trace.thinking_phases():
            if thinking.cut_by_budget:
                self.forced_ends.labels(strategy, effort).inc()
            if thinking.forced_continuations:
                self.forced_continuations.labels(strategy, effort).inc(thinking.forced_continuations)

    def render(self, engine: Any = None, admission: Any = None) -> bytes:
        if engine is not None:
            self.engine_unfinished.set(engine.num_unfinished_requests())
        if admission is not None:
            self.admission_in_use.set(admission.in_use)
            self.admission_limit.set(admission.limit)
        return generate_latest(self.registry) + generate_latest(REGISTRY)
