"""The one step between a parsed request and its run: validate, plan, admit,
render, fit to the context window.

Everything that can be wrong with a request is found here, before the first
byte: limits that need the settings, the plan (strategy options included),
admission (429 / 503), the chat template, the context window and the answer
reserve. What comes out is everything the run needs; every API surface maps
its request onto a ``ChatCompletionRequest`` and comes through here.
"""
from __future__ import annotations

from dataclasses import dataclass

from strategies import registry
from strategies.context import RunContext
from strategies.ledger import Ledger
from strategies.output import PLAIN
from strategies.plan import Plan
from strategies.runner import RunPlan

from .admission import Ticket, engine_priority
from .errors import APIError, bad_request
from .output_format import output_format
from .planner import Window, check_token_ids, plan_request, sampling_for
from .prompt import Prompt
from .state import AppState
from .wire import ChatCompletionRequest


@dataclass(frozen=True)
class Prepared:
    plan: Plan
    prompt: Prompt
    ticket: Ticket
    run: RunPlan
    # Answer tokens stream as they are generated (no pings needed).
    streams_tokens: bool


def check_limits(req: ChatCompletionRequest, state: AppState) -> None:
    """Limits that need the settings (the wire model has the fixed ones)."""
    settings = state.settings
    limits = settings.server
    if req.model not in state.model_names:
        raise APIError(404, f"The model `{req.model}` does not exist.", "model", "model_not_found")
    if req.n > settings.defaults.max_n:
        raise bad_request(f"n must be at most {settings.defaults.max_n}", "n")
    if len(req.messages) > limits.max_messages:
        raise bad_request(f"at most {limits.max_messages} messages are allowed", "messages")
    if req.top_logprobs is not None and not req.logprobs:
        raise bad_request("top_logprobs needs logprobs: true", "top_logprobs")
    stops = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
    if any(not s for s in stops):
        raise bad_request("stop strings must not be empty", "stop")
    if any(len(s) > limits.max_stop_chars for s in stops):
        raise bad_request(f"stop strings must be at most {limits.max_stop_chars} characters", "stop")
    upstream_stops = settings.remote.max_stop_strings
    if settings.remote.urls and len(stops) >= upstream_stops:
        # vLLM's HTTP API refuses more than VLLM_MAX_STOP_STRINGS per request, and a
        # plan's phase may add one of its own (the end of thinking, a beam step's delimiter).
        raise bad_request(f"at most {upstream_stops - 1} stop strings on this server: its vLLM upstreams take "
                          f"{upstream_stops} per request and a phase keeps one for itself", "stop")
    if req.timeout is not None and req.timeout > limits.max_request_timeout:
        raise bad_request(f"timeout must be at most {limits.max_request_timeout:g} s", "timeout")
    if req.priority and settings.engine.scheduling_policy != "priority":
        raise bad_request("priority needs a server whose [engine] scheduling_policy is \"priority\"", "priority")


def prompt_tokens(req: ChatCompletionRequest, state: AppState) -> int:
    """The prompt tokens the engine would see for ``req``, counted without running it
    (Anthropic's ``count_tokens``): checked, planned and rendered as :func:`prepare`
    does, so thinking, tools and the chat template are the same; nothing is admitted.
    A prompt longer than the context window is counted, not refused: the count is
    what a client needs to shorten it."""
    check_limits(req, state)
    plan = plan_request(req, state.settings)
    state.require_engine()
    output_format(req, state.tool_parser)  # tools a run would refuse are refused here too
    assert state.renderer is not None  # set before the engine
    return len(state.renderer.render(req, plan.thinking).ids)


def prepare(req: ChatCompletionRequest, state: AppState, request_id: str) -> Prepared:
    check_limits(req, state)
    settings = state.settings
    plan = plan_request(req, settings)
    engine = state.require_engine()
    output = output_format(req, state.tool_parser)
    strategy = registry.get(plan.strategy)
    needs_code = strategy.needs_code(plan)
    code = state.sandbox if needs_code else None
    if needs_code and (code is None or state.sandbox_unavailable):
        raise bad_request(f"the code interpreter is unavailable on this server: "
                          f"{state.sandbox_unavailable or 'no sandbox'}",
                          "reasoning.strategy", "tool_unavailable")
    if output is not PLAIN and not strategy.formats:
        what = "tool calls" if output.tools else "structured_outputs" if req.structured_outputs else "response_format"
        raise bad_request(f"strategy {plan.strategy!r} does not support {what}; use one of "
                          f"{', '.join(registry.with_formats())}", "reasoning.strategy")
    if output.structured is not None:
        try:
            engine.check_structured(output.structured)
        except ValueError as exc:
            field = next(f for f in ("structured_outputs", "response_format", "tools") if getattr(req, f))
            raise bad_request(f"the engine cannot constrain the answer to this: {exc}", field) from None
    check_token_ids(req, engine.info.vocab_size)
    # Admission before the prompt is even rendered, so a 429 costs the server
    # (which shares the CPU with the engine) almost nothing.
    try:
        ticket = state.admission.admit(registry.weight(plan) * req.n,
                                       req.timeout or settings.server.request_timeout)
    except APIError as exc:
        state.metrics.rejected.labels(exc.code).inc()
        raise
    try:
        renderer, followup = state.renderer, state.followup
        assert renderer is not None
        prompt = renderer.render(req, plan.thinking)
        window = Window(engine.info.max_model_len, len(prompt.ids),
                        len(prompt.think_prefix_ids) + len(prompt.think_suffix_ids))
        fitted = plan_request(req, settings, window)
        if fitted.thinking != plan.thinking:  # the answer reserve turned thinking off
            prompt = renderer.render(req, fitted.thinking)
        plan = fitted
    except BaseException:
        ticket.release()
        raise
    by_priority = settings.engine.scheduling_policy == "priority"
    priority = engine_priority(req.priority, ticket.seq) if by_priority else 0

    def make_ctx(i: int) -> RunContext:
        return RunContext(
            engine=engine, prompt_ids=prompt.ids, think_prefix_ids=prompt.think_prefix_ids,
            think_suffix_ids=prompt.think_suffix_ids, sampling=sampling_for(req, plan, i, priority, settings.defaults),
            request_id=request_id, choice=i, ledger=Ledger(len(prompt.ids), plan.budget_tokens),
            followup=followup, output=output, code=code)

    return Prepared(plan, prompt, ticket, RunPlan(plan, req.n, make_ctx),
                    registry.get(plan.strategy).streams_tokens)
