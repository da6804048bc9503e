"""The planner: a pure function ``request + settings (+ context window) -> Plan``.

Reasoning controls are read in DESIGN.md's order of precedence (first wins):
the ``reasoning`` object; Anthropic ``thinking``, vLLM ``thinking_token_budget``
/ ``include_reasoning`` and Qwen ``chat_template_kwargs.enable_thinking``;
OpenAI ``reasoning_effort``; the server default. The strategy's own options
are read by the strategy (``strategies.registry``); this module names none.
Every inconsistency is a 400 naming the offending ``param``, raised before
anything reaches the engine.

When the prompt is known (``Window``), the plan is also fitted to the context
window, and the thinking is lowered so the answer keeps its reserve.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from strategies import registry
from strategies.descriptor import ANY, OptionSource
from strategies.engine import Sampling
from strategies.errors import PlanError
from strategies.plan import Plan

from .errors import APIError, bad_request
from .settings import EFFORTS, DefaultsSection, Settings
from .wire import ChatCompletionRequest, ReasoningOptions

# ``reasoning`` keys every strategy shares; the rest belong to strategies.
SHARED_KEYS = frozenset({"effort", "strategy", "max_thinking_tokens", "min_thinking_tokens", "budget_tokens",
                         "exclude", "max_tokens", "enabled"})


@dataclass(frozen=True)
class Window:
    """The rendered prompt against the model's context window."""

    max_model_len: int
    prompt_tokens: int
    # Ids the server adds around a thinking block it opens (prefix and suffix).
    thinking_overhead: int = 0


@dataclass
class _Thinking:
    """Thinking on or off, its cap and minimum, and who set them."""

    on: bool
    cap: int | None
    floor: int | None
    source: str
    # The param of a cap or minimum the client set in ``reasoning`` (None: a preset or default).
    cap_param: str | None = None
    floor_param: str | None = None


def _effort(req: ChatCompletionRequest, settings: Settings) -> tuple[str, str]:
    """(effort, where it came from)."""
    r = req.reasoning
    # An unknown effort is a 400 even where a higher control would win.
    for value, param in ((r.effort if r is not None else None, "reasoning.effort"),
                         (req.reasoning_effort, "reasoning_effort")):
        if value is not None and value not in EFFORTS:
            raise bad_request(f"unknown reasoning effort {value!r}; use one of {', '.join(EFFORTS)}", param)
    if r is not None and r.effort is not None:
        return r.effort, "reasoning"
    if req.reasoning_effort is not None:
        return req.reasoning_effort, "reasoning_effort"
    return settings.defaults.effort, "default"


def _middle(req: ChatCompletionRequest, t: _Thinking, default_cap: int) -> None:
    """Anthropic ``thinking``, vLLM ``thinking_token_budget``, Qwen ``enable_thinking``."""
    kwargs = req.chat_template_kwargs or {}
    # Checked even where thinking / thinking_token_budget win: a malformed control is never ignored.
    if "enable_thinking" in kwargs and not isinstance(kwargs["enable_thinking"], bool):
        raise bad_request("enable_thinking must be a boolean", "chat_template_kwargs.enable_thinking")
    on: bool | None = None
    cap: int | None = None
    th = req.thinking
    if th is not None:
        if th.type == "disabled" and th.budget_tokens:
            raise bad_request("thinking is disabled but budget_tokens is set", "thinking.budget_tokens")
        if th.type == "enabled" and th.budget_tokens is None:
            raise bad_request("thinking.type 'enabled' needs budget_tokens", "thinking.budget_tokens")
        on, cap, t.source = th.type != "disabled", th.budget_tokens, "thinking"
    elif req.thinking_token_budget is not None:
        on, cap, t.source = req.thinking_token_budget > 0, req.thinking_token_budget, "thinking_token_budget"
    elif "enable_thinking" in kwargs:
        on, t.source = kwargs["enable_thinking"], "chat_template_kwargs"
    if on is None:
        return
    if cap is not None:
        t.cap = cap
    elif on and not t.on:
        t.cap = default_cap
    t.on = on
    if not on:
        t.cap = t.floor = None


def _reasoning(r: ReasoningOptions, t: _Thinking, default_cap: int) -> None:
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
        t.on, t.cap, t.floor = False, None, None
        return
    if r.enabled is True and cap == 0:
        raise bad_request("reasoning.enabled is true but the thinking cap is 0", cap_param)
    if cap is not None:
        t.on, t.cap, t.cap_param = cap > 0, cap, cap_param
    if r.min_thinking_tokens is not None:
        t.on, t.floor, t.floor_param = True, r.min_thinking_tokens, "reasoning.min_thinking_tokens"
        if cap is None and (t.cap is None or t.cap < t.floor):
            # A minimum alone raises the default cap rather than contradicting it.
            t.cap = max(t.floor, default_cap)
    if r.enabled is True and not t.on:
        t.on, t.cap = True, default_cap


def _thinking(req: ChatCompletionRequest, settings: Settings, effort: str, effort_source: str) -> _Thinking:
    preset = settings.efforts[effort]
    default_cap = settings.defaults.max_thinking_tokens
    t = _Thinking(preset.thinking, preset.max_thinking_tokens, preset.min_thinking_tokens, effort_source)
    _middle(req, t, default_cap)
    r = req.reasoning
    if r is not None:
        _reasoning(r, t, default_cap)
        if r.model_fields_set - {"exclude"}:
            t.source = "reasoning"
    if t.on and t.cap is None:
        t.cap = default_cap
    if t.cap == 0:
        t.on, t.cap = False, None
    if t.floor_param is None and t.floor is not None:
        # A preset's minimum yields to a cap or an off switch the client chose.
        t.floor = min(t.floor, t.cap) if t.on and t.cap is not None else None
    if not t.on:
        t.cap = None
        if t.floor_param is None:
            t.floor = None
    return t


def _max_tokens(req: ChatCompletionRequest, settings: Settings, t: _Thinking, window: Window | None
                ) -> tuple[int, bool]:
    """(max_tokens, whether the client set it): OpenAI's max_completion_tokens covers thinking
    plus answer; a default leaves the answer its usual room on top of the thinking cap,
    within the context window."""
    asked = req.max_completion_tokens or req.max_tokens
    max_tokens = asked if asked is not None else settings.defaults.max_tokens + (t.cap or 0)
    if window is None:
        return max_tokens, asked is not None
    extra = window.thinking_overhead if t.on else 0
    room = window.max_model_len - window.prompt_tokens - extra
    n = window.max_model_len
    if room < 1:
        raise bad_request(
            f"This model's maximum context length is {n} tokens. However, your messages resulted in "
            f"{window.prompt_tokens} tokens. Please reduce the length of the messages.",
            "messages", "context_length_exceeded")
    if asked is not None and asked > room:
        param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        raise bad_request(
            f"This model's maximum context length is {n} tokens. However, you requested "
            f"{window.prompt_tokens + extra + asked} tokens ({window.prompt_tokens} in the messages, {asked} in "
            f"the completion). Please reduce the length of the messages or completion.",
            param, "context_length_exceeded")
    return min(max_tokens, room), asked is not None


def _answer_reserve(t: _Thinking, max_tokens: int, reserve_cfg: int, strict: bool, min_answer: int = 0
                    ) -> str | None:
    """Lower the thinking so the answer keeps ``min(reserve, max_tokens // 2)`` tokens
    ("reasoning ate my max_tokens"), or the client's ``min_tokens`` when more; an
    explicit ``reasoning`` cap or minimum that cannot fit beside it is a 400. A cap
    from Anthropic's or vLLM's controls is an upper bound, and lowering it honours
    it; so is a cap the context window (not the client's max_tokens, ``strict``)
    leaves no room for. Returns what was changed, for the plan."""
    if not t.on or t.cap is None:
        return None
    reserve = max(min(reserve_cfg, max(1, max_tokens // 2)), min_answer)
    room = max_tokens - reserve
    if t.cap <= room:
        return None
    if strict and t.cap_param is not None:
        raise bad_request(f"{t.cap_param.split('.')[-1]} ({t.cap}) does not fit in max_tokens {max_tokens} beside "
                          f"the {reserve} tokens kept for the answer; lower it or raise max_completion_tokens",
                          t.cap_param)
    if strict and t.floor_param is not None and t.floor is not None and t.floor > room:
        raise bad_request(f"min_thinking_tokens ({t.floor}) does not fit in max_tokens {max_tokens} beside the "
                          f"{reserve} tokens kept for the answer", t.floor_param)
    was = t.cap
    if room < 1:
        t.on, t.cap, t.floor = False, None, None
        return f"thinking off: max_tokens {max_tokens} leaves no room beside the answer reserve of {reserve}"
    t.cap = room
    if t.floor is not None:
        t.floor = min(t.floor, room)
    return f"max_thinking_tokens lowered from {was} to {room} to keep {reserve} of max_tokens {max_tokens} " \
           f"for the answer"


def _strategy_keys(r: ReasoningOptions | None) -> dict[str, Any]:
    if r is None:
        return {}
    return {k: getattr(r, k) for k in r.model_fields_set if k not in SHARED_KEYS}


def _check_foreign(keys: Mapping[str, Any], reads: Mapping[str, Any]) -> None:
    """A strategy key the chosen strategy does not read is a 400 unless it says "off"."""
    for key, value in keys.items():
        if key in reads or value is None:
            continue
        # Compared by ==: a value may be a list (reasoning.tools), which a set cannot hold.
        neutral = [registry.get(name).keys.get(key, ANY) for name in registry.owners(key)]
        if any(off is not ANY and value == off for off in neutral):
            continue
        owners = registry.owners(key)
        which = f"the {owners[0]} strategy" if len(owners) == 1 else f"one of the strategies {', '.join(owners)}"
        raise bad_request(f"reasoning.{key} needs {which}", f"reasoning.{key}")


def plan_request(req: ChatCompletionRequest, settings: Settings, window: Window | None = None) -> Plan:
    try:
        return _plan(req, settings, window)
    except PlanError as exc:
        raise bad_request(exc.message, exc.param, exc.code) from None


def _plan(req: ChatCompletionRequest, settings: Settings, window: Window | None) -> Plan:
    effort, effort_source = _effort(req, settings)
    preset = settings.efforts[effort]
    r = req.reasoning
    t = _thinking(req, settings, effort, effort_source)
    name = r.strategy if r is not None and r.strategy else preset.strategy
    keys = _strategy_keys(r)
    if req.code_interpreter:  # the built-in tool: reasoning.tools ["python"], tool_use unless a strategy is named
        keys.setdefault("tools", ["python"])
        name = r.strategy if r is not None and r.strategy else registry.code_tool()
        if "tools" not in registry.get(name).keys:
            raise bad_request(f"the code_interpreter tool needs one of the strategies "
                              f"{', '.join(registry.owners('tools'))}, not {name!r}", "tools")
    strategy = registry.get(name)
    if strategy.thinks(keys) and not t.on:  # its work is thinking (code and runs): on, at the default cap
        t.on, t.cap, t.floor = True, settings.defaults.max_thinking_tokens, None
    _check_foreign(keys, strategy.keys)
    max_tokens, asked = _max_tokens(req, settings, t, window)
    _check_min_tokens(req, max_tokens, asked)
    budget = r.budget_tokens if r is not None and r.budget_tokens is not None else preset.budget_tokens
    _check_budgets(t, budget)  # the client's own controls first: they must agree with each other
    adjusted = _answer_reserve(t, max_tokens, settings.defaults.answer_reserve, asked, req.min_tokens)

    def plan_row(row: Mapping[str, Any]) -> Plan:
        """An ``auto`` level: planned like a client's reasoning object, in this request's budget."""
        reasoning = {**row, **({"budget_tokens": r.budget_tokens} if r and r.budget_tokens is not None else {})}
        sub = req.model_copy(update={"reasoning": ReasoningOptions(**reasoning), "reasoning_effort": None,
                                     "thinking": None, "thinking_token_budget": None})
        return _plan(sub, settings, window)

    preset_keys = {k: v for k, v in preset.strategy_keys.items() if k in strategy.keys}
    src = OptionSource(keys, preset_keys, settings.section(strategy.section), req.n, plan_row, registry.weight,
                       settings.section, t.on)
    plan = Plan(
        strategy=name, max_tokens=max_tokens, options=strategy.options(src), effort=effort, thinking=t.on,
        max_thinking_tokens=t.cap, min_thinking_tokens=t.floor, budget_tokens=budget,
        include_reasoning=not ((r is not None and r.exclude) or req.include_reasoning is False),
        forcing=settings.thinking.forcing(), source=t.source, adjusted=(adjusted,) if adjusted else ())
    heavy = strategy.weight(plan) * req.n
    if heavy > settings.defaults.max_candidates:
        raise bad_request(f"n x {strategy.weight_param.split('.')[-1]} needs {heavy} concurrent sequences, above "
                          f"this server's limit of {settings.defaults.max_candidates} per request",
                          strategy.weight_param)
    return plan


def _check_min_tokens(req: ChatCompletionRequest, max_tokens: int, asked: bool) -> None:
    """``min_tokens`` is a floor on the answer, so it must fit in what the request may
    generate (vLLM's server refuses it above max_tokens too)."""
    if req.min_tokens <= max_tokens:
        return
    if asked:
        cap = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        raise bad_request(f"min_tokens ({req.min_tokens}) is above {cap} ({max_tokens})", "min_tokens")
    raise bad_request(f"min_tokens ({req.min_tokens}) is above the {max_tokens} tokens this request may generate "
                      f"(the server's default max_tokens, within the context window); set max_completion_tokens",
                      "min_tokens")


def _check_budgets(t: _Thinking, budget: int | None) -> None:
    lo, hi = t.floor, t.cap
    if lo is not None and not t.on:
        raise bad_request("min_thinking_tokens needs thinking enabled", "reasoning.min_thinking_tokens")
    if lo is not None and hi is not None and lo > hi:
        raise bad_request(
            f"min_thinking_tokens ({lo}) is above max_thinking_tokens ({hi})", "reasoning.min_thinking_tokens")
    if budget is not None and lo is not None and budget < lo:
        raise bad_request(f"budget_tokens ({budget}) is below min_thinking_tokens ({lo})", "reasoning.budget_tokens")


def sampling_for(req: ChatCompletionRequest, plan: Plan, choice: int, priority: int = 0,
                 defaults: DefaultsSection | None = None) -> Sampling:
    """The client's sampling settings for one choice; ``priority`` is the engine
    priority every phase of the request carries; ``defaults`` the server's
    temperature and top_p for a client that sends none. Which phase gets which of
    them is decided by the phases (``strategies.context.RunContext``).

    With a seed, choice ``i`` samples with ``seed + i`` so ``n`` seeded choices
    differ from each other yet the whole response is reproducible.
    """
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    seed = None if req.seed is None else (req.seed + choice) % (2**63)
    return Sampling(
        max_tokens=plan.max_tokens,
        temperature=(defaults.temperature if defaults else 1.0) if req.temperature is None else req.temperature,
        top_p=(defaults.top_p if defaults else 1.0) if req.top_p is None else req.top_p,
        top_k=max(req.top_k or 0, 0),  # -1 and 0 both mean every token
        min_p=req.min_p or 0.0,
        seed=seed,
        stop=stop,
        stop_token_ids=tuple(req.stop_token_ids or ()),
        min_tokens=req.min_tokens,
        logprobs=(req.top_logprobs or 0) if req.logprobs else None,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
        logit_bias=tuple(sorted((int(k), float(v)) for k, v in (req.logit_bias or {}).items())),
        ignore_eos=req.ignore_eos,
        priority=priority,
    )


def check_token_ids(req: ChatCompletionRequest, vocab_size: int | None) -> None:
    """Token ids the client names (``logit_bias`` keys, ``stop_token_ids``) are in the
    model's vocabulary: the engine would refuse them after the first byte otherwise.
    The param names the entry, as the wire model's own errors do."""
    if vocab_size is None:
        return
    for key in req.logit_bias or {}:
        if int(key) >= vocab_size:
            raise bad_request(f"logit_bias names token {key}, outside this model's vocabulary "
                              f"(ids 0 to {vocab_size - 1})", f"logit_bias[{key}]")
    for i, tid in enumerate(req.stop_token_ids or ()):
        if tid >= vocab_size:
            raise bad_request(f"stop_token_ids[{i}] is token {tid}, outside this model's vocabulary "
                              f"(ids 0 to {vocab_size - 1})", f"stop_token_ids[{i}]")


def check_presets(settings: Settings) -> None:
    """Plan one request per effort and one per strategy at start-up, so a bad
    preset or strategy table fails the server's start instead of a client's request."""
    base = {"model": "check", "messages": [{"role": "user", "content": "check"}]}
    for effort, preset in settings.efforts.items():
        try:
            reads = registry.get(preset.strategy).keys
        except PlanError as exc:
            raise APIError(400, f"effort {effort!r}: {exc.message}", exc.param) from None
        foreign = sorted(set(preset.strategy_keys) - set(reads))
        if foreign:
            raise bad_request(f"effort {effort!r}: {preset.strategy} does not read {foreign}",
                              f"reasoning.{foreign[0]}")
        plan_request(ChatCompletionRequest.model_validate({**base, "reasoning_effort": effort}), settings)
    for name in registry.IMPLEMENTED:
        plan_request(ChatCompletionRequest.model_validate({**base, "reasoning": {"strategy": name}}), settings)
