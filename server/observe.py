"""What one request's events tell the metrics: first-token times, choices, usage.

A ``feed()`` / ``finish()`` object on the transport loop, like the encoders,
instead of a generator wrapped around the event stream.
"""
from __future__ import annotations

import time

from strategies.events import Answer, ChoiceDone, Event, Thinking
from strategies.ledger import Usage
from strategies.plan import Plan

from .metrics import Metrics


class RequestMetrics:
    def __init__(self, metrics: Metrics, plan: Plan) -> None:
        self.m, self.strategy, self.effort = metrics, plan.strategy, plan.effort or "none"
        self.start = time.perf_counter()
        self.first_thinking = self.first_answer = False
        self.status = "error"
        self.usage = Usage()
        self.m.in_flight.inc()

    def feed(self, event: Event) -> None:
        if not self.first_answer and isinstance(event, Answer) and event.text:
            self.first_answer = True
            self.m.ttft_answer.labels(self.strategy).observe(time.perf_counter() - self.start)
        elif not self.first_thinking and isinstance(event, Thinking):
            self.first_thinking = True
            self.m.ttft_thinking.labels(self.strategy).observe(time.perf_counter() - self.start)
        elif isinstance(event, ChoiceDone):
            self.m.choice_done(self.strategy, self.effort, event.trace)

    def finish(self, usage: Usage) -> None:
        self.status, self.usage = "ok", usage

    def close(self, status: str | None = None) -> None:
        """Once, however the request ended: ``status`` overrides (say "cancelled")."""
        m, status = self.m, status or self.status
        m.in_flight.dec()
        m.requests.labels(self.strategy, self.effort, status).inc()
        if status != "ok":
            return
        u = self.usage
        m.tokens.labels(self.strategy, "thinking").inc(u.reasoning_tokens)
        m.tokens.labels(self.strategy, "answer").inc(u.completion_tokens - u.reasoning_tokens)
        m.thinking_per_request.labels(self.strategy, self.effort).observe(u.reasoning_tokens)
        m.engine_requests.labels(self.strategy).inc(u.engine_requests)
        m.cached_tokens.labels(self.strategy).inc(u.engine_cached_tokens)
