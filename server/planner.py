"""The planner: a pure function ``request + settings -> Plan``.

Reasoning controls are read in DESIGN.md's order of precedence (first wins):
the ``reasoning`` object; Anthropic ``thinking``, vLLM ``thinking_token_budget``
/ ``include_reasoning`` and Qwen ``chat_template_kwargs.enable_thinking``;
OpenAI ``reasoning_effort``; the server default. Every inconsistency is a 400
naming the offending ``param``, raised before anything reaches the engine.
"""
from __future__ import annotations

from dataclasses import dataclass

from strategies import registry
from strategies.engine import Sampling
from strategies.plan import Plan

from .errors import bad_request
from .settings import EFFORTS, EffortPreset, Settings
from .wire import ChatCompletionRequest, ReasoningOptions


@dataclass(frozen=True)
class _Thinking:
    """What the middle tier of controls says about thinking (None: silent)."""

    enabled: bool | None = None
    max_tokens: int | None = None
    source: str | None = None
    param: str | None = None


def _effort(req: ChatCompletionRequest, settings: Settings) -> tuple[str, str, str]:
    """(effort, where it came from, param)."""
    r = req.reasoning
    # An unknown effort is a 400 even where a higher control would win.
    for value, param in ((r.effort if r is not None else None, "reasoning.effort"),
                         (req.reasoning_effort, "reasoning_effort")):
        if value is not None and value not in EFFORTS:
            raise bad_request(f"unknown reasoning effort {value!r}; use one of {', '.join(EFFORTS)}", param)
    if r is not None and r.effort is not None:
        return r.effort, "reasoning", "reasoning.effort"
    if req.reasoning_effort is not None:
        return req.reasoning_effort, "reasoning_effort", "reasoning_effort"
    return settings.defaults.effort, "default", "reasoning_effort"


def _middle(req: ChatCompletionRequest) -> _Thinking:
    kwargs = req.chat_template_kwargs or {}
    # Checked even where thinking / thinking_token_budget win: a malformed control is never ignored.
    if "enable_thinking" in kwargs and not isinstance(kwargs["enable_thinking"], bool):
        raise bad_request("enable_thinking must be a boolean", "chat_template_kwargs.enable_thinking")
    t = req.thinking
    if t is not None:
        if t.type == "disabled":
            if t.budget_tokens:
                raise bad_request("thinking is disabled but budget_tokens is set", "thinking.budget_tokens")
            return _Thinking(False, None, "thinking", "thinking")
        if t.type == "enabled" and t.budget_tokens is None:
            raise bad_request("thinking.type 'enabled' needs budget_tokens", "thinking.budget_tokens")
        return _Thinking(True, t.budget_tokens, "thinking", "thinking.budget_tokens")
    if req.thinking_token_budget is not None:
        n = req.thinking_token_budget
        return _Thinking(n > 0, n, "thinking_token_budget", "thinking_token_budget")
    if "enable_thinking" in kwargs:
        on = kwargs["enable_thinking"]
        return _Thinking(on, None, "chat_template_kwargs", "chat_template_kwargs.enable_thinking")
    return _Thinking()


def _max_tokens(req: ChatCompletionRequest, settings: Settings, thinking_cap: int | None) -> int:
    """OpenAI's max_completion_tokens covers thinking plus answer; a default leaves
    the answer its usual room on top of the thinking cap."""
    if req.max_completion_tokens is not None:
        return req.max_completion_tokens
    if req.max_tokens is not None:
        return req.max_tokens
    return settings.defaults.max_tokens + (thinking_cap or 0)


def plan_request(req: ChatCompletionRequest, settings: Settings) -> Plan:
    effort, effort_source, effort_param = _effort(req, settings)
    preset: EffortPreset = settings.efforts[effort]
    r = req.reasoning
    middle = _middle(req)
    thinking = preset.thinking
    max_think = preset.max_thinking_tokens
    min_think = preset.min_thinking_tokens
    source = effort_source
    if middle.enabled is not None:
        thinking, source = middle.enabled, middle.source or source
        if middle.max_tokens is not None:
            max_think = middle.max_tokens
        elif thinking and not preset.thinking:
            max_think = settings.defaults.max_thinking_tokens
        if not thinking:
            max_think = min_think = None
    strategy = preset.strategy
    if r is not None:
        thinking, max_think, min_think, strategy = _apply_reasoning(
            r, effort, effort_source, thinking, max_think, min_think, strategy, settings
        )
        if r.model_fields_set - {"exclude"}:
            source = "reasoning"
    if thinking and max_think is None:
        max_think = settings.defaults.max_thinking_tokens
    if max_think == 0:
        thinking, max_think = False, None
    client_min = r is not None and r.min_thinking_tokens is not None
    if not client_min and min_think is not None:
        # A preset's minimum yields to a cap or an off switch the client chose.
        min_think = min(min_think, max_think) if thinking and max_think is not None else None
    _check_strategy(strategy)
    max_tokens = _max_tokens(req, settings, max_think if thinking else None)
    budget = r.budget_tokens if r is not None and r.budget_tokens is not None else preset.budget_tokens
    _check_budgets(thinking, min_think, max_think, budget)
    include = not ((r is not None and r.exclude) or req.include_reasoning is False)
    return Plan(
        strategy=strategy,
        effort=effort,
        thinking=thinking,
        max_thinking_tokens=max_think if thinking else None,
        min_thinking_tokens=min_think if thinking else None,
        budget_tokens=budget,
        max_tokens=max_tokens,
        include_reasoning=include,
        source=source,
        **_forcing(settings),
        **_parallel(req, strategy, preset, settings),
        **_revision(req, strategy, settings),
        **_beam(req, strategy, settings),
        **_auto(req, strategy, settings),
    )


def _auto(req: ChatCompletionRequest, strategy: str, settings: Settings) -> dict[str, object]:
    """Each difficulty level is planned like a client's ``reasoning`` object."""
    if strategy != "auto":
        return {}
    a = settings.auto
    levels = []
    for level in ("easy", "medium", "hard"):
        reasoning = {**a.levels[level]}
        if req.reasoning is not None and req.reasoning.budget_tokens is not None:
            reasoning["budget_tokens"] = req.reasoning.budget_tokens
        sub = req.model_copy(update={"reasoning": ReasoningOptions(**reasoning), "reasoning_effort": None,
                                     "thinking": None, "thinking_token_budget": None})
        levels.append((level, plan_request(sub, settings)))
    return {"probe_samples": a.probe_samples, "probe_tokens": a.probe_tokens,
            "easy_agreement": a.easy_agreement, "medium_agreement": a.medium_agreement,
            "share_prefix": settings.parallel.share_prefix,
            "auto": tuple(levels)}


def _beam(req: ChatCompletionRequest, strategy: str, settings: Settings) -> dict[str, object]:
    r, b = req.reasoning, settings.beam
    width = r.beam_width if r is not None and r.beam_width is not None else None
    steps = r.max_steps if r is not None and r.max_steps is not None else None
    if strategy != "beam_search":
        for name, value in (("beam_width", width), ("max_steps", steps), ("dvts", r.dvts if r else None)):
            if value is not None:
                raise bad_request(f"reasoning.{name} needs the beam_search strategy", f"reasoning.{name}")
        return {}
    width = b.beam_width if width is None else width
    if width * b.expansions * req.n > settings.parallel.max_candidates:
        raise bad_request("n x beam_width x expansions is above this server's candidate limit",
                          "reasoning.beam_width")
    dvts = r.dvts if r is not None and r.dvts is not None else b.dvts
    return {"beam_width": width, "max_steps": b.max_steps if steps is None else steps, "dvts": dvts,
            "expansions": b.expansions, "step_tokens": b.step_tokens,
            "step_delimiter": b.step_delimiter, "judge_question": b.process_question}


def _revision(req: ChatCompletionRequest, strategy: str, settings: Settings) -> dict[str, object]:
    r, rv = req.reasoning, settings.revision
    rounds = r.rounds if r is not None and r.rounds is not None else None
    if strategy != "revision":
        if rounds:
            raise bad_request("reasoning.rounds needs the revision strategy", "reasoning.rounds")
        return {}
    return {"rounds": rv.rounds if rounds is None else rounds, "critique_prompt": rv.critique_prompt,
            "revise_prompt": rv.revise_prompt, "critique_ok": rv.critique_ok}


_PARALLEL = ("self_consistency", "best_of_n")
_SCORERS = ("confidence", "self_judge", "reward_model")


def _parallel(req: ChatCompletionRequest, strategy: str, preset: EffortPreset,
              settings: Settings) -> dict[str, object]:
    """Sampling options; they only mean something for the parallel strategies."""
    r, p = req.reasoning, settings.parallel
    given = r.model_fields_set if r is not None else set()
    if strategy not in _PARALLEL:
        for name in ("samples", "scorer", "early_stop", "stream_candidates"):
            if name in given and getattr(r, name) not in (None, 1, False):
                raise bad_request(f"reasoning.{name} needs a parallel strategy (self_consistency, best_of_n)",
                                  f"reasoning.{name}")
        return {"samples": 1}
    samples = r.samples if r is not None and r.samples else (preset.samples if preset.samples > 1 else p.samples)
    if samples * req.n > p.max_candidates:
        raise bad_request(f"n x samples = {samples * req.n} is above this server's limit of "
                          f"{p.max_candidates} candidates per request", "reasoning.samples")
    scorer = r.scorer if r is not None and r.scorer else (p.scorer if strategy == "best_of_n" else None)
    if scorer is not None and scorer not in _SCORERS:
        raise bad_request(f"unknown scorer {scorer!r}; use one of {', '.join(_SCORERS)}", "reasoning.scorer")
    if scorer == "reward_model":
        # A reward model served by vLLM's pooling runner is planned for GPU
        # deployments; until it exists the scorer is refused, never faked.
        raise bad_request("the reward_model scorer is not available on this server; "
                          "use confidence or self_judge", "reasoning.scorer", "scorer_not_available")
    if scorer is not None and strategy == "self_consistency" and scorer != "confidence":
        raise bad_request("self_consistency weighs votes by confidence only", "reasoning.scorer")
    early = r.early_stop if r is not None and r.early_stop is not None else p.early_stop
    return {
        "samples": samples, "scorer": scorer, "early_stop": early and strategy == "self_consistency",
        "vote": "weighted" if scorer == "confidence" and strategy == "self_consistency" else p.vote,
        "window": p.window, "stop_rule": p.stop_rule, "stop_threshold": p.stop_threshold,
        "share_prefix": p.share_prefix,
        "judge_question": p.judge_question,
        "stream_candidates": bool(r is not None and r.stream_candidates),
    }


def _forcing(settings: Settings) -> dict[str, object]:
    bf = settings.budget_forcing
    return {"continuation": bf.continuation, "max_continuations": bf.max_continuations,
            "wrapup": bf.wrapup, "nudge": bf.nudge, "nudge_before": bf.nudge_before}


def _apply_reasoning(r, effort, effort_source, thinking, max_think, min_think, strategy, settings):
    """The ``reasoning`` object overrides everything below it; it must not contradict itself."""
    disabled = r.enabled is False or r.effort == "none"
    cap = r.max_thinking_tokens if r.max_thinking_tokens is not None else r.max_tokens
    cap_param = "reasoning.max_thinking_tokens" if r.max_thinking_tokens is not None else "reasoning.max_tokens"
    if disabled:
        if cap or r.min_thinking_tokens:
            param = "reasoning.min_thinking_tokens" if r.min_thinking_tokens else cap_param
            raise bad_request("reasoning is disabled but a thinking budget is set", param)
        if r.enabled is True:
            raise bad_request("reasoning.enabled is true but effort is 'none'", "reasoning.enabled")
        return False, None, None, r.strategy or strategy
    if r.enabled is True and cap == 0:
        raise bad_request("reasoning.enabled is true but the thinking cap is 0", cap_param)
    if cap is not None:
        thinking, max_think = cap > 0, cap
    if r.min_thinking_tokens is not None:
        thinking, min_think = True, r.min_thinking_tokens
        if cap is None and (max_think is None or max_think < min_think):
            # A minimum alone raises the default cap rather than contradicting it.
            max_think = max(min_think, settings.defaults.max_thinking_tokens)
    if r.enabled is True and not thinking:
        thinking, max_think = True, settings.defaults.max_thinking_tokens
    return thinking, max_think, min_think, r.strategy or strategy


def _check_strategy(strategy: str) -> None:
    if strategy not in registry.KNOWN:
        raise bad_request(
            f"unknown reasoning strategy {strategy!r}; use one of {', '.join(registry.KNOWN)}",
            "reasoning.strategy",
            "invalid_strategy",
        )
    if strategy not in registry.IMPLEMENTED:
        raise bad_request(
            f"reasoning strategy {strategy!r} is not implemented by this server yet",
            "reasoning.strategy",
            "strategy_not_implemented",
        )


def _check_budgets(thinking: bool, lo: int | None, hi: int | None, budget: int | None) -> None:
    if lo is not None and not thinking:
        raise bad_request("min_thinking_tokens needs thinking enabled", "reasoning.min_thinking_tokens")
    if lo is not None and hi is not None and lo > hi:
        raise bad_request(
            f"min_thinking_tokens ({lo}) is above max_thinking_tokens ({hi})", "reasoning.min_thinking_tokens"
        )
    if budget is not None and lo is not None and budget < lo:
        raise bad_request(f"budget_tokens ({budget}) is below min_thinking_tokens ({lo})", "reasoning.budget_tokens")


def sampling_for(req: ChatCompletionRequest, plan: Plan, choice: int, priority: int = 0) -> Sampling:
    """The client's sampling settings for one choice; ``priority`` is the engine
    priority every phase of the request carries.

    With a seed, choice ``i`` samples with ``seed + i`` so ``n`` seeded choices
    differ from each other yet the whole response is reproducible.
    """
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    seed = None if req.seed is None else (req.seed + choice) % (2**63)
    return Sampling(
        max_tokens=plan.max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        seed=seed,
        stop=stop,
        logprobs=(req.top_logprobs or 0) if req.logprobs else None,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        ignore_eos=req.ignore_eos,
        priority=priority,
    )


def check_presets(settings: Settings) -> None:
    """Plan one request per effort and one ``auto`` request at start-up, so a bad
    preset or auto table fails the server's start instead of a client's request."""
    base = {"model": "check", "messages": [{"role": "user", "content": "check"}]}
    for effort in EFFORTS:
        plan_request(ChatCompletionRequest.model_validate({**base, "reasoning_effort": effort}), settings)
    plan_request(ChatCompletionRequest.model_validate({**base, "reasoning": {"strategy": "auto"}}), settings)
