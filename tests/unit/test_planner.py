"""The planner: request + settings -> Plan, or a 400 naming the param."""
from __future__ import annotations

from typing import Any

import pytest

from server.errors import APIError
from server.planner import Window, check_presets, plan_request, sampling_for
from server.settings import EFFORTS, Settings, load_settings
from server.wire import ChatCompletionRequest
from strategies import registry
from strategies.engine import Sampling
from strategies.plan import Plan
from strategies.probe import ProbeOptions

# The numbers below are pinned here rather than read from configs/, so the
# table stays right when the shipped presets are retuned.
PINNED = {
    "defaults": {"effort": "none", "max_tokens": 1024, "max_thinking_tokens": 512},
    "efforts": {
        "none": {"thinking": False},
        "low": {"max_thinking_tokens": 64},
        "high": {"max_thinking_tokens": 256},
    },
    "revision": {"rounds": 2},
    "beam": {"beam_width": 2, "expansions": 2, "max_steps": 4},
}


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(overrides=PINNED)


def req(**fields: Any) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return ChatCompletionRequest.model_validate(body)


THINK_OFF = {"thinking": False, "max_thinking_tokens": None, "min_thinking_tokens": None}
# An option the plan's strategy does not have. Since issue 11 each strategy's knobs are
# its own typed options: a plan has no samples, rounds or beam_width unless its strategy
# reads them (before, every plan carried them all, at 1 or 0).
ABSENT = "<absent>"


HESITATION = ("wait", "hmm", "but", "however", "alternatively", "maybe", "unsure")


def field(plan: Plan, name: str) -> Any:
    """A shared field of the plan, or one of its strategy's options (ABSENT when it has none)."""
    return getattr(plan, name) if name in Plan.__dataclass_fields__ else getattr(plan.options, name, ABSENT)


VALID = [
    # -- defaults and reasoning_effort -------------------------------------
    ("default", {}, {**THINK_OFF, "effort": "none", "strategy": "single", "source": "default",
                     "max_tokens": 1024, "include_reasoning": True, "samples": ABSENT, "budget_tokens": None}),
    ("effort-low", {"reasoning_effort": "low"},
     {"thinking": True, "max_thinking_tokens": 64, "effort": "low", "source": "reasoning_effort"}),
    ("effort-high", {"reasoning_effort": "high"}, {"thinking": True, "max_thinking_tokens": 256}),
    ("effort-none", {"reasoning_effort": "none"}, {**THINK_OFF, "effort": "none"}),
    ("max-tokens", {"max_tokens": 100}, {"max_tokens": 100}),
    ("max-completion-beats-max-tokens", {"max_tokens": 100, "max_completion_tokens": 50}, {"max_tokens": 50}),
    # -- the reasoning object beats everything -------------------------------
    ("reasoning-effort", {"reasoning": {"effort": "high"}},
     {"effort": "high", "thinking": True, "max_thinking_tokens": 256, "source": "reasoning"}),
    ("reasoning-effort-beats-reasoning_effort", {"reasoning": {"effort": "high"}, "reasoning_effort": "low"},
     {"effort": "high", "max_thinking_tokens": 256}),
    ("reasoning-cap-over-effort", {"reasoning": {"max_thinking_tokens": 50}, "reasoning_effort": "high"},
     {"effort": "high", "thinking": True, "max_thinking_tokens": 50, "source": "reasoning"}),
    ("reasoning-cap-zero-turns-off", {"reasoning": {"max_thinking_tokens": 0}, "reasoning_effort": "high"},
     THINK_OFF),
    ("reasoning-openrouter-max-tokens", {"reasoning": {"max_tokens": 40}}, {"thinking": True, "max_thinking_tokens": 40}),
    ("reasoning-enabled", {"reasoning": {"enabled": True}}, {"thinking": True, "max_thinking_tokens": 512}),
    ("reasoning-disabled-over-effort", {"reasoning": {"enabled": False}, "reasoning_effort": "high"}, THINK_OFF),
    ("reasoning-effort-none-over-effort", {"reasoning": {"effort": "none"}, "reasoning_effort": "high"},
     {**THINK_OFF, "effort": "none"}),
    ("reasoning-disabled-zero-min", {"reasoning": {"enabled": False, "min_thinking_tokens": 0}}, THINK_OFF),
    ("reasoning-min-and-max", {"reasoning": {"min_thinking_tokens": 10, "max_thinking_tokens": 20}},
     {"thinking": True, "min_thinking_tokens": 10, "max_thinking_tokens": 20}),
    ("reasoning-min-turns-on", {"reasoning": {"min_thinking_tokens": 10}},
     {"thinking": True, "min_thinking_tokens": 10, "max_thinking_tokens": 512}),
    ("reasoning-beats-thinking-disabled",
     {"reasoning": {"max_thinking_tokens": 30}, "thinking": {"type": "disabled"}},
     {"thinking": True, "max_thinking_tokens": 30, "source": "reasoning"}),
    ("reasoning-disabled-beats-thinking-enabled",
     {"reasoning": {"enabled": False}, "thinking": {"type": "enabled", "budget_tokens": 100}}, THINK_OFF),
    ("reasoning-cap-beats-thinking-budget",
     {"reasoning": {"max_thinking_tokens": 30}, "thinking": {"type": "enabled", "budget_tokens": 100}},
     {"max_thinking_tokens": 30}),
    ("reasoning-budget", {"reasoning": {"budget_tokens": 300}}, {"budget_tokens": 300}),
    ("reasoning-samples", {"reasoning": {"strategy": "self_consistency", "samples": 4}},
     {"samples": 4, "strategy": "self_consistency", "early_stop": True, "scorer": None}),
    ("best-of-n-default-scorer", {"reasoning": {"strategy": "best_of_n", "samples": 3}},
     {"samples": 3, "scorer": "confidence", "early_stop": ABSENT}),  # best_of_n never stops early
    # Issue 13: the probe's settings come from [probe] and show in the plan.
    ("probe-on-effort-low", {"reasoning": {"effort": "low", "probe": True}},
     {"strategy": "budget_forcing", "probe": ProbeOptions(64, 3, 0.95, 16, "Final answer:", HESITATION)}),
    ("no-probe-by-default", {"reasoning_effort": "low"}, {"strategy": "budget_forcing", "probe": None}),
    ("self-consistency-weighted", {"reasoning": {"strategy": "self_consistency", "scorer": "confidence"}},
     {"vote": "weighted"}),
    ("best-of-n-judge", {"reasoning": {"strategy": "best_of_n", "scorer": "self_judge",
                                       "stream_candidates": True}},
     {"scorer": "self_judge", "stream_candidates": True}),
    ("reasoning-strategy-single", {"reasoning": {"strategy": "single"}, "reasoning_effort": "low"},
     {"strategy": "single", "max_thinking_tokens": 64}),
    # -- Anthropic thinking / vLLM / Qwen: beat reasoning_effort -------------
    ("thinking-enabled", {"thinking": {"type": "enabled", "budget_tokens": 100}},
     {"thinking": True, "max_thinking_tokens": 100, "source": "thinking"}),
    ("thinking-disabled-beats-effort", {"thinking": {"type": "disabled"}, "reasoning_effort": "high"},
     {**THINK_OFF, "effort": "high", "source": "thinking"}),
    ("thinking-budget-beats-effort", {"thinking": {"type": "enabled", "budget_tokens": 100}, "reasoning_effort": "low"},
     {"thinking": True, "max_thinking_tokens": 100, "effort": "low"}),
    ("thinking-adaptive-default-cap", {"thinking": {"type": "adaptive"}}, {"thinking": True, "max_thinking_tokens": 512}),
    ("thinking-adaptive-keeps-effort-cap", {"thinking": {"type": "adaptive"}, "reasoning_effort": "low"},
     {"thinking": True, "max_thinking_tokens": 64}),
    ("thinking-enabled-zero-budget", {"thinking": {"type": "enabled", "budget_tokens": 0}}, THINK_OFF),
    ("thinking_token_budget", {"thinking_token_budget": 80},
     {"thinking": True, "max_thinking_tokens": 80, "source": "thinking_token_budget"}),
    ("thinking_token_budget-zero", {"thinking_token_budget": 0, "reasoning_effort": "high"}, THINK_OFF),
    ("thinking-beats-thinking_token_budget", {"thinking": {"type": "disabled"}, "thinking_token_budget": 80}, THINK_OFF),
    ("enable_thinking-true", {"chat_template_kwargs": {"enable_thinking": True}},
     {"thinking": True, "max_thinking_tokens": 512, "source": "chat_template_kwargs"}),
    ("enable_thinking-false-beats-effort", {"chat_template_kwargs": {"enable_thinking": False},
                                            "reasoning_effort": "high"}, THINK_OFF),
    # -- what the client sees --------------------------------------------------
    ("include_reasoning-false", {"include_reasoning": False, "reasoning_effort": "low"},
     {"include_reasoning": False, "thinking": True}),
    ("include_reasoning-true", {"include_reasoning": True}, {"include_reasoning": True}),
    ("exclude", {"reasoning": {"exclude": True}, "reasoning_effort": "low"},
     {"include_reasoning": False, "thinking": True, "source": "reasoning_effort"}),
    ("exclude-false", {"reasoning": {"exclude": False}}, {"include_reasoning": True}),
    ("min-alone-raises-default-cap", {"reasoning": {"min_thinking_tokens": 600}},
     {"thinking": True, "min_thinking_tokens": 600, "max_thinking_tokens": 600}),
    # -- revision and beam_search options ------------------------------------------
    ("revision-default-rounds", {"reasoning": {"strategy": "revision"}},
     {"strategy": "revision", "rounds": 2, "beam_width": ABSENT, "max_steps": ABSENT, "samples": ABSENT}),
    ("revision-rounds", {"reasoning": {"strategy": "revision", "rounds": 5}}, {"rounds": 5}),
    ("revision-rounds-zero", {"reasoning": {"strategy": "revision", "rounds": 0}}, {"rounds": 0}),
    ("rounds-zero-without-revision-is-harmless", {"reasoning": {"rounds": 0}}, {"strategy": "single", "rounds": ABSENT}),
    ("beam-defaults", {"reasoning": {"strategy": "beam_search"}},
     {"strategy": "beam_search", "beam_width": 2, "max_steps": 4, "expansions": 2, "rounds": ABSENT,
      "samples": ABSENT}),
    ("beam-width-and-steps", {"reasoning": {"strategy": "beam_search", "beam_width": 3, "max_steps": 6}},
     {"beam_width": 3, "max_steps": 6}),
    ("non-beam-has-no-beam", {"reasoning": {"strategy": "self_consistency"}}, {"beam_width": ABSENT, "max_steps": ABSENT}),
    # -- the answer reserve (issue 11): thinking leaves min(128, max_tokens // 2) to the answer --
    ("answer-reserve-lowers-a-preset-cap", {"max_tokens": 100, "reasoning_effort": "low"},
     {"thinking": True, "max_thinking_tokens": 50, "min_thinking_tokens": 32, "max_tokens": 100}),
    ("answer-reserve-room-to-spare", {"max_tokens": 1000, "reasoning_effort": "low"},
     {"max_thinking_tokens": 64, "adjusted": ()}),
    ("answer-reserve-lowers-anthropic-budget", {"max_tokens": 100, "thinking": {"type": "enabled", "budget_tokens": 80}},
     {"thinking": True, "max_thinking_tokens": 50}),
    ("answer-reserve-without-client-max-tokens", {"reasoning_effort": "low"}, {"max_thinking_tokens": 64, "adjusted": ()}),
]


@pytest.mark.parametrize(("fields", "expected"), [c[1:] for c in VALID], ids=[c[0] for c in VALID])
def test_plan(settings: Settings, fields: dict[str, Any], expected: dict[str, Any]) -> None:
    plan = plan_request(req(**fields), settings)
    got = {k: field(plan, k) for k in expected}
    assert got == expected


INVALID = [
    ("unknown-reasoning_effort", {"reasoning_effort": "ultra"}, "reasoning_effort", None),
    ("unknown-reasoning.effort", {"reasoning": {"effort": "ultra"}}, "reasoning.effort", None),
    ("unknown-reasoning.effort-even-with-valid-top-level", {"reasoning": {"effort": "ultra"}, "reasoning_effort": "low"},
     "reasoning.effort", None),
    ("unknown-strategy", {"reasoning": {"strategy": "magic"}}, "reasoning.strategy", "invalid_strategy"),
    ("min-above-max", {"reasoning": {"min_thinking_tokens": 100, "max_thinking_tokens": 50}},
     "reasoning.min_thinking_tokens", None),
    ("min-with-reasoning-disabled", {"reasoning": {"enabled": False, "min_thinking_tokens": 10}},
     "reasoning.min_thinking_tokens", None),
    ("min-with-effort-none", {"reasoning": {"effort": "none", "min_thinking_tokens": 10}},
     "reasoning.min_thinking_tokens", None),
    ("min-with-zero-cap", {"reasoning": {"min_thinking_tokens": 5, "max_thinking_tokens": 0}},
     "reasoning.min_thinking_tokens", None),
    ("max-with-reasoning-disabled", {"reasoning": {"enabled": False, "max_thinking_tokens": 10}},
     "reasoning.max_thinking_tokens", None),
    ("budget-below-min", {"reasoning": {"min_thinking_tokens": 100, "budget_tokens": 50}},
     "reasoning.budget_tokens", None),
    ("thinking-enabled-without-budget", {"thinking": {"type": "enabled"}}, "thinking.budget_tokens", None),
    ("thinking-disabled-with-budget", {"thinking": {"type": "disabled", "budget_tokens": 10}},
     "thinking.budget_tokens", None),
    ("samples-without-parallel-strategy", {"reasoning": {"samples": 4}}, "reasoning.samples", None),
    ("too-many-candidates", {"n": 16, "reasoning": {"strategy": "best_of_n", "samples": 8}},
     "reasoning.samples", None),
    ("unknown-scorer", {"reasoning": {"strategy": "best_of_n", "scorer": "vibes"}}, "reasoning.scorer", None),
    ("reward-model-not-configured", {"reasoning": {"strategy": "best_of_n", "scorer": "reward_model"}},
     "reasoning.scorer", None),
    ("enabled-with-zero-cap", {"reasoning": {"enabled": True, "max_thinking_tokens": 0}},
     "reasoning.max_thinking_tokens", None),
    ("enabled-with-effort-none", {"reasoning": {"enabled": True, "effort": "none"}}, "reasoning.enabled", None),
    ("enable_thinking-not-bool", {"chat_template_kwargs": {"enable_thinking": "yes"}},
     "chat_template_kwargs.enable_thinking", None),
    ("rounds-without-revision", {"reasoning": {"rounds": 2}}, "reasoning.rounds", None),
    ("rounds-with-beam-search", {"reasoning": {"strategy": "beam_search", "rounds": 1}}, "reasoning.rounds", None),
    ("rounds-with-auto", {"reasoning": {"strategy": "auto", "rounds": 1}}, "reasoning.rounds", None),
    ("beam_width-without-beam-search", {"reasoning": {"beam_width": 2}}, "reasoning.beam_width", None),
    ("max_steps-with-revision", {"reasoning": {"strategy": "revision", "max_steps": 3}}, "reasoning.max_steps", None),
    # 16 choices x 3 beams x 2 expansions is above the 64 candidates one request may start.
    ("beam-too-many-candidates", {"n": 16, "reasoning": {"strategy": "beam_search", "beam_width": 3}},
     "reasoning.beam_width", None),
    # Issue 11: best_of_n scores every candidate; early_stop on it was silently ignored before.
    ("early-stop-with-best-of-n", {"reasoning": {"strategy": "best_of_n", "early_stop": True}},
     "reasoning.early_stop", None),
    # DeepConf online is self_consistency's, and needs candidates after its warm-up of 4.
    ("deepconf-with-best-of-n", {"reasoning": {"strategy": "best_of_n", "deepconf": True}},
     "reasoning.deepconf", None),
    ("deepconf-no-room-after-warm-up", {"reasoning": {"strategy": "self_consistency", "samples": 4,
                                                      "deepconf": True}}, "reasoning.samples", None),
    # Issue 13: the probe ends thinking early; without thinking there is nothing to end,
    # and the parallel strategies do not probe their candidates.
    ("probe-without-thinking", {"reasoning": {"strategy": "single", "effort": "none", "probe": True}},
     "reasoning.probe", None),
    ("probe-with-self-consistency", {"reasoning": {"strategy": "self_consistency", "probe": True}},
     "reasoning.probe", None),
    # Issue 11, the answer reserve: an explicit thinking cap or minimum that leaves the
    # answer less than min(128, max_tokens // 2) of the client's max_tokens is refused.
    ("thinking-cap-leaves-no-answer-room", {"max_completion_tokens": 100, "reasoning": {"max_thinking_tokens": 80}},
     "reasoning.max_thinking_tokens", None),
    ("openrouter-cap-leaves-no-answer-room", {"max_tokens": 100, "reasoning": {"max_tokens": 80}},
     "reasoning.max_tokens", None),
    ("min-leaves-no-answer-room", {"max_tokens": 100, "reasoning": {"min_thinking_tokens": 60}},
     "reasoning.min_thinking_tokens", None),
]


@pytest.mark.parametrize(("fields", "param", "code"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid(settings: Settings, fields: dict[str, Any], param: str, code: str | None) -> None:
    with pytest.raises(APIError) as info:
        plan_request(req(**fields), settings)
    err = info.value
    assert (err.status, err.param) == (400, param)
    assert err.body()["error"]["type"] == "invalid_request_error"
    if code is not None:
        assert err.code == code


def test_a_strategy_the_build_does_not_run_is_a_400_not_a_fallback() -> None:
    """Every strategy the API names runs today; a descriptor without ``run`` (a name
    kept for a strategy not built) refuses to plan, naming the strategy."""
    from strategies.descriptor import OptionSource, Strategy
    from strategies.errors import PlanError

    assert set(registry.KNOWN) == set(registry.IMPLEMENTED)
    with pytest.raises(PlanError) as info:
        Strategy(name="telepathy", run=None).options(OptionSource({}, {}, None))
    assert (info.value.param, info.value.code) == ("reasoning.strategy", "strategy_not_implemented")
    assert "telepathy" in info.value.message


@pytest.mark.parametrize("name", sorted(registry.IMPLEMENTED), ids=sorted(registry.IMPLEMENTED))
def test_implemented_strategies_plan(settings: Settings, name: str) -> None:
    assert plan_request(req(reasoning={"strategy": name}), settings).strategy == name


@pytest.mark.parametrize("effort", EFFORTS, ids=EFFORTS)
def test_shipped_configs_plan_every_effort(effort: str) -> None:
    """configs/ as shipped: every effort yields a plan the server can run."""
    shipped = load_settings()
    plan = plan_request(req(reasoning_effort=effort), shipped)
    preset = shipped.efforts[effort]
    assert plan.effort == effort
    assert plan.strategy in registry.IMPLEMENTED
    assert plan.thinking is (preset.thinking and preset.max_thinking_tokens != 0)


def test_planner_is_pure(settings: Settings) -> None:
    r = req(reasoning={"max_thinking_tokens": 50}, n=2)
    before = r.model_dump()
    assert plan_request(r, settings) == plan_request(r, settings)
    assert r.model_dump() == before


def test_answer_reserve_is_shown_to_the_client(settings: Settings) -> None:
    plan = plan_request(req(max_tokens=100, reasoning_effort="low"), settings)
    assert len(plan.adjusted) == 1 and "64" in plan.adjusted[0] and "50" in plan.adjusted[0]
    assert plan.public()["adjusted"] == list(plan.adjusted)
    assert "adjusted" not in plan_request(req(max_tokens=1000, reasoning_effort="low"), settings).public()


def test_public_plan_shows_what_ran(settings: Settings) -> None:
    public = plan_request(req(reasoning_effort="minimal"), settings).public()
    assert public["strategy"] == "single" and public["effort"] == "minimal"
    assert public["thinking"] is True and public["max_thinking_tokens"] == 32
    # Issue 11: samples is shown only for strategies that sample (it was 1 for every plan).
    assert "samples" not in public and "continuation" not in public
    forced = plan_request(req(reasoning_effort="high"), settings).public()
    high = settings.efforts["high"]
    assert forced["strategy"] == high.strategy
    assert (forced.get("min_thinking_tokens"), forced["max_thinking_tokens"]) == (
        high.min_thinking_tokens, high.max_thinking_tokens)
    assert forced["continuation"] == settings.thinking.continuation
    off = plan_request(req(), settings).public()
    assert off["thinking"] is False
    assert "max_thinking_tokens" not in off


# -- the context window (issue 11: fitted by the planner, server/chat.py before) ------

WINDOW_VALID = [
    ("fits", {}, Window(2048, 100), {"max_tokens": 1024}),
    ("default-clamped-to-the-window", {}, Window(2048, 2000), {"max_tokens": 48}),
    ("client-max-tokens-that-fits", {"max_tokens": 48}, Window(2048, 2000), {"max_tokens": 48}),
    ("overhead-ignored-without-thinking", {}, Window(2048, 2000, 10), {"max_tokens": 48}),
    # 2048 - 1950 - 10 = 88 for thinking and answer; the answer keeps 44 of them.
    ("thinking-overhead-and-answer-reserve", {"reasoning_effort": "low"}, Window(2048, 1950, 10),
     {"max_tokens": 88, "thinking": True, "max_thinking_tokens": 44, "min_thinking_tokens": 32}),
]


@pytest.mark.parametrize(("fields", "window", "expected"), [c[1:] for c in WINDOW_VALID],
                         ids=[c[0] for c in WINDOW_VALID])
def test_plan_fits_the_window(settings: Settings, fields: dict[str, Any], window: Window,
                              expected: dict[str, Any]) -> None:
    plan = plan_request(req(**fields), settings, window)
    assert {k: field(plan, k) for k in expected} == expected


WINDOW_INVALID = [
    ("prompt-fills-the-window", {}, Window(2048, 2048), "messages"),
    ("max-tokens-over-the-room", {"max_tokens": 49}, Window(2048, 2000), "max_tokens"),
    ("max-completion-tokens-over-the-room", {"max_completion_tokens": 49, "max_tokens": 10}, Window(2048, 2000),
     "max_completion_tokens"),
    ("thinking-overhead-counts", {"max_tokens": 48, "reasoning_effort": "low"}, Window(2048, 2000, 10), "max_tokens"),
]


@pytest.mark.parametrize(("fields", "window", "param"), [c[1:] for c in WINDOW_INVALID],
                         ids=[c[0] for c in WINDOW_INVALID])
def test_what_cannot_fit_the_window_is_400(settings: Settings, fields: dict[str, Any], window: Window,
                                           param: str) -> None:
    with pytest.raises(APIError) as info:
        plan_request(req(**fields), settings, window)
    assert (info.value.status, info.value.param, info.value.code) == (400, param, "context_length_exceeded")


def test_auto_levels_fit_the_window(settings: Settings) -> None:
    window = Window(2048, 1950, 10)
    plan = plan_request(req(reasoning={"strategy": "auto"}), settings, window)
    assert plan.max_tokens == 98  # the probe does not think
    for level, sub in plan.options.levels:
        room = window.max_model_len - window.prompt_tokens - (window.thinking_overhead if sub.thinking else 0)
        assert sub.max_tokens <= room, level


# -- sampling_for ----------------------------------------------------------

SAMPLING = [
    ("no-seed", {}, 2, {"seed": None, "temperature": 1.0, "top_p": 1.0, "stop": (), "logprobs": None}),
    ("seed-choice-0", {"seed": 7}, 0, {"seed": 7}),
    ("seed-plus-choice", {"seed": 7}, 2, {"seed": 9}),
    ("seed-wraps", {"seed": 2**64 - 1}, 1, {"seed": 0}),
    ("negative-seed", {"seed": -1}, 0, {"seed": 2**63 - 1}),
    ("stop-string", {"stop": "END"}, 0, {"stop": ("END",)}),
    ("stop-list", {"stop": ["a", "b"]}, 0, {"stop": ("a", "b")}),
    ("client-sampling", {"temperature": 0.0, "top_p": 0.5, "presence_penalty": 1.0, "frequency_penalty": -1.0}, 0,
     {"temperature": 0.0, "top_p": 0.5, "presence_penalty": 1.0, "frequency_penalty": -1.0}),
    ("logprobs", {"logprobs": True}, 0, {"logprobs": 0}),
    ("top-logprobs", {"logprobs": True, "top_logprobs": 3}, 0, {"logprobs": 3}),
    ("max-tokens-from-plan", {"max_completion_tokens": 77}, 0, {"max_tokens": 77, "n": 1}),
]


@pytest.mark.parametrize(("fields", "choice", "expected"), [c[1:] for c in SAMPLING], ids=[c[0] for c in SAMPLING])
def test_sampling_for(settings: Settings, fields: dict[str, Any], choice: int, expected: dict[str, Any]) -> None:
    r = req(**fields)
    plan = plan_request(r, settings)
    s = sampling_for(r, plan, choice)
    assert isinstance(s, Sampling)
    assert {k: getattr(s, k) for k in expected} == expected


def test_server_sampling_defaults_apply_only_when_the_client_sends_none(settings: Settings) -> None:
    defaults = settings.defaults.model_copy(update={"temperature": 0.7, "top_p": 0.9})
    r = req()
    s = sampling_for(r, plan_request(r, settings), 0, defaults=defaults)
    assert (s.temperature, s.top_p) == (0.7, 0.9)
    r = req(temperature=0.0, top_p=1.0)
    s = sampling_for(r, plan_request(r, settings), 0, defaults=defaults)
    assert (s.temperature, s.top_p) == (0.0, 1.0)
    # The shipped defaults are OpenAI's.
    assert (settings.defaults.temperature, settings.defaults.top_p) == (1.0, 1.0)


def test_seeded_choices_differ_and_repeat(settings: Settings) -> None:
    r = req(seed=42, n=3)
    plan = Plan(strategy="single", max_tokens=10)
    seeds = [sampling_for(r, plan, i).seed for i in range(3)]
    assert seeds == [42, 43, 44]
    assert seeds == [sampling_for(r, plan, i).seed for i in range(3)]


# -- auto: the three level plans, and the start-up check --------------------------

AUTO_TABLE = {"probe_samples": 4, "probe_tokens": 32, "easy_agreement": 0.75, "medium_agreement": 0.5,
              "levels": {"easy": {"strategy": "single", "effort": "minimal"},
                         "medium": {"strategy": "self_consistency", "samples": 5},
                         "hard": {"strategy": "revision", "effort": "low", "rounds": 3}}}


@pytest.mark.parametrize("budget", [None, 400], ids=["no-budget", "client-budget"])
def test_auto_plan_holds_the_three_level_plans(budget: int | None) -> None:
    settings = load_settings(overrides={**PINNED, "auto": AUTO_TABLE})
    extra = {} if budget is None else {"budget_tokens": budget}
    plan = plan_request(req(reasoning={"strategy": "auto", **extra}), settings)
    assert plan.strategy == "auto" and plan.budget_tokens == budget
    o = plan.options
    assert (o.probe_samples, o.probe_tokens, o.easy_agreement, o.medium_agreement) == (4, 32, 0.75, 0.5)
    assert [level for level, _ in o.levels] == ["easy", "medium", "hard"]
    levels = dict(o.levels)
    for level, row in AUTO_TABLE["levels"].items():
        # Each level is planned like a client's reasoning object (the client's budget carried over).
        assert levels[level] == plan_request(req(reasoning={**row, **extra}), settings), level
    assert (levels["easy"].strategy, levels["easy"].effort, levels["easy"].max_thinking_tokens) == ("single",
                                                                                                     "minimal", 32)
    assert (levels["medium"].strategy, levels["medium"].options.samples) == ("self_consistency", 5)
    assert (levels["hard"].strategy, levels["hard"].options.rounds, levels["hard"].thinking) == ("revision", 3, True)
    public = plan.public()
    assert set(public["auto"]) == {"easy", "medium", "hard"} and public["auto"]["medium"]["samples"] == 5
    assert public["probe_samples"] == 4


def test_check_presets_passes_for_the_shipped_configs() -> None:
    assert check_presets(load_settings()) is None  # raises APIError on a bad preset


BROKEN_AUTO = [
    ("unknown-strategy", {"hard": {"strategy": "magic"}}, "reasoning.strategy"),
    # The shipped hard level's rounds=2 stays merged in: rounds on a single level.
    ("rounds-on-a-single-level", {"hard": {"strategy": "single"}}, "reasoning.rounds"),
    ("samples-on-revision", {"medium": {"strategy": "revision", "samples": 4}}, "reasoning.samples"),
    ("unknown-effort", {"easy": {"effort": "ultra"}}, "reasoning.effort"),
]


@pytest.mark.parametrize(("levels", "param"), [c[1:] for c in BROKEN_AUTO], ids=[c[0] for c in BROKEN_AUTO])
def test_check_presets_fails_for_a_broken_auto_table(levels: dict[str, Any], param: str) -> None:
    settings = load_settings(overrides={"auto": {"levels": levels}})
    with pytest.raises(APIError) as info:
        check_presets(settings)
    assert (info.value.status, info.value.param) == (400, param)


def test_a_list_valued_key_of_another_strategy_is_a_400_not_a_crash(settings: Settings) -> None:
    """``reasoning.tools`` is a list: checking it against other strategies' "off" values
    must not hash it (the fuzz test found a 500 there)."""
    with pytest.raises(APIError) as info:
        plan_request(req(reasoning={"strategy": "best_of_n", "tools": ["python"]}), settings)
    assert (info.value.status, info.value.param) == (400, "reasoning.tools")
    assert "tool_use" in info.value.message and "self_consistency" in info.value.message


def test_code_interpreter_tool_plans_tool_use_or_self_consistency_with_code(settings: Settings) -> None:
    ci = [{"type": "code_interpreter"}]
    plan = plan_request(req(tools=ci), settings)
    assert plan.strategy == "tool_use" and plan.thinking and plan.options.mode == settings.section("tool_use").mode
    sc = plan_request(req(tools=ci, reasoning={"strategy": "self_consistency", "samples": 3, "tool_mode": "pal"}),
                      settings)
    assert sc.strategy == "self_consistency" and sc.thinking and sc.options.code.mode == "pal"
    assert registry.get("self_consistency").needs_code(sc) and registry.weight(sc) == 3
    same = plan_request(req(reasoning={"strategy": "self_consistency", "samples": 3, "tools": ["python"],
                                       "tool_mode": "pal"}), settings)
    assert same.options == sc.options
    plain = plan_request(req(reasoning={"strategy": "self_consistency", "samples": 3}), settings)
    assert plain.options.code is None and not registry.get("self_consistency").needs_code(plain)


@pytest.mark.parametrize(("fields", "param"), [
    ({"tools": [{"type": "code_interpreter"}], "reasoning": {"strategy": "single"}}, "tools"),
    ({"tools": [{"type": "code_interpreter"}], "reasoning": {"strategy": "auto"}}, "tools"),
    ({"reasoning": {"strategy": "self_consistency", "tool_mode": "pal"}}, "reasoning.tool_mode"),
    ({"reasoning": {"strategy": "self_consistency", "max_tool_calls": 2}}, "reasoning.max_tool_calls"),
])
def test_code_interpreter_where_it_cannot_run_is_a_400(settings: Settings, fields: dict, param: str) -> None:
    with pytest.raises(APIError) as info:
        plan_request(req(**fields), settings)
    assert (info.value.status, info.value.param) == (400, param)
