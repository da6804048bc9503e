"""Reasoning budgets on the real engine: caps, minimums, effort, exactness."""
from __future__ import annotations

import re
import statistics

import httpx
import openai
import pytest

from .helpers import batch
from .sse import post_stream

pytestmark = pytest.mark.integration

PROMPTS = [
    "What is 12 times 3?",
    "Is 17 a prime number?",
    "Name the capital of France.",
    "If I have 5 apples and eat 2, how many are left?",
]


def _msgs(p: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": p}]


@pytest.mark.asyncio
@pytest.mark.parametrize("lo,hi", [(None, 24), (40, 48), (64, 96)], ids=["cap-only", "min-40-max-48", "min-64-max-96"])
async def test_thinking_stays_within_min_and_max(live, lo, hi) -> None:
    reasoning = {"max_thinking_tokens": hi, **({"min_thinking_tokens": lo} if lo else {})}
    # max_tokens leaves the answer its reserve beside the cap (an explicit cap that
    # cannot fit beside it is a 400 since the answer reserve, issue 11).
    bodies = [{"messages": _msgs(p), "temperature": 0.7, "seed": i, "max_tokens": hi + 128,
               "extra_body": {"reasoning": reasoning}} for i, p in enumerate(PROMPTS[:2])]
    for r in await batch(live, bodies):
        thinking = r.usage.completion_tokens_details.reasoning_tokens
        trace = r.choices[0].model_extra["reasoning_trace"]["thinking"]
        assert thinking == trace["tokens"]
        assert thinking <= hi
        if lo is not None:
            assert thinking >= lo
        assert r.choices[0].message.model_extra["reasoning_content"]


@pytest.mark.slow  # a statistical measure over many requests (100 s on an AVX2 core)
@pytest.mark.asyncio
async def test_mean_thinking_rises_with_effort(live) -> None:
    efforts = ["low", "medium", "high"]
    bodies = [{"messages": _msgs(p), "temperature": 0.7, "seed": 1, "reasoning_effort": e,
               "max_tokens": 400} for e in efforts for p in PROMPTS]
    results = await batch(live, bodies)
    means = []
    for k, e in enumerate(efforts):
        chunk = results[k * len(PROMPTS):(k + 1) * len(PROMPTS)]
        means.append(statistics.mean(r.usage.completion_tokens_details.reasoning_tokens for r in chunk))
        assert all(r.model_extra["reasoning_plan"]["effort"] == e for r in chunk)
    assert means[0] < means[1] < means[2], means


@pytest.mark.parametrize(
    "extra",
    [{"reasoning_effort": "none"},
     {"extra_body": {"thinking": {"type": "disabled"}}},
     {"extra_body": {"chat_template_kwargs": {"enable_thinking": False}}},
     {"extra_body": {"thinking_token_budget": 0}}],
    ids=["effort-none", "thinking-disabled", "enable-thinking-false", "thinking-token-budget-0"],
)
def test_no_thinking_at_all(client: openai.OpenAI, live, extra) -> None:
    r = client.chat.completions.create(model=live.model, messages=_msgs(PROMPTS[0]), max_tokens=24,
                                       temperature=0, **extra)
    assert r.usage.completion_tokens_details.reasoning_tokens == 0
    assert r.choices[0].message.model_extra.get("reasoning_content") is None
    assert r.usage.model_extra["engine"]["requests"] == 1
    assert r.choices[0].message.content


@pytest.mark.parametrize(
    "extra",
    [{"extra_body": {"reasoning": {"effort": "low", "exclude": True}}},
     {"reasoning_effort": "low", "extra_body": {"include_reasoning": False}}],
    ids=["reasoning-exclude", "include-reasoning-false"],
)
def test_hidden_thinking_is_still_counted(live, extra) -> None:
    body = {"model": live.model, "messages": _msgs(PROMPTS[1]), "max_tokens": 120, "temperature": 0,
            **{k: v for k, v in extra.items() if k != "extra_body"}, **extra.get("extra_body", {})}
    full = httpx.post(live.base_url + "/v1/chat/completions", json=body, headers=live.headers(),
                      timeout=300).json()
    msg = full["choices"][0]["message"]
    assert "reasoning_content" not in msg and "reasoning" not in msg
    assert full["usage"]["completion_tokens_details"]["reasoning_tokens"] >= 32
    s = post_stream(live.base_url, {**body, "stream": True}, live.headers())
    assert not any("reasoning_content" in ch["delta"] for c in s.chunks for ch in c["choices"])


def _vllm_prompt_tokens(live) -> float:
    text = httpx.get(live.base_url + "/metrics", headers=live.headers()).text
    return sum(float(m.group(1)) for m in re.finditer(r"^vllm:prompt_tokens_total\{[^}]*\} (\S+)$", text, re.M))


@pytest.mark.parametrize(
    "extra,param",
    [({"reasoning": {"min_thinking_tokens": 50, "max_thinking_tokens": 10}}, "reasoning.min_thinking_tokens"),
     ({"reasoning": {"min_thinking_tokens": 50, "budget_tokens": 20}}, "reasoning.budget_tokens"),
     ({"reasoning": {"effort": "none", "min_thinking_tokens": 5}}, "reasoning.min_thinking_tokens"),
     ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
     ({"reasoning": {"effort": "galaxy"}}, "reasoning.effort"),
     ({"reasoning_effort": "galaxy"}, "reasoning_effort"),
     ({"reasoning": {"strategy": "telepathy"}}, "reasoning.strategy"),
     ({"reasoning": {"max_thinking_tokens": -1}}, "reasoning.max_thinking_tokens")],
    ids=["min-above-max", "budget-below-min", "disabled-with-min", "enabled-without-budget", "bad-effort",
         "bad-reasoning-effort", "unknown-strategy", "negative-cap"],
)
def test_bad_budgets_are_400_before_the_engine(live, extra, param) -> None:
    before = _vllm_prompt_tokens(live)
    body = {"model": live.model, "messages": _msgs("hi"), "max_tokens": 8, **extra}
    for stream in (False, True):
        r = httpx.post(live.base_url + "/v1/chat/completions", json={**body, "stream": stream},
                       headers=live.headers(), timeout=60)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param
    assert _vllm_prompt_tokens(live) == before


@pytest.mark.parametrize("effort", ["minimal", "low", "medium"], ids=["single", "forcing-low", "forcing-medium"])
def test_budget_forcing_stream_equals_non_stream(live, effort: str) -> None:
    body = {"model": live.model, "messages": _msgs(PROMPTS[3]), "temperature": 0, "max_tokens": 240,
            "reasoning_effort": effort}
    full = httpx.post(live.base_url + "/v1/chat/completions", json=body, headers=live.headers(),
                      timeout=300).json()
    s = post_stream(live.base_url, {**body, "stream": True, "stream_options": {"include_usage": True}},
                    live.headers())
    joined, msg = s.joined(1)[0], full["choices"][0]["message"]
    assert joined["content"] == msg["content"]
    assert joined["reasoning_content"] == msg["reasoning_content"]
    su, fu = s.chunks[-1]["usage"], full["usage"]
    assert su["completion_tokens"] == fu["completion_tokens"]
    assert su["completion_tokens_details"] == fu["completion_tokens_details"]


def test_forced_continuations_reuse_the_prefix_cache(client: openai.OpenAI, live) -> None:
    r = client.chat.completions.create(
        model=live.model, messages=_msgs(PROMPTS[2]), temperature=0, max_tokens=300,
        extra_body={"reasoning": {"strategy": "budget_forcing", "min_thinking_tokens": 120,
                                  "max_thinking_tokens": 140}})
    trace = r.choices[0].model_extra["reasoning_trace"]["thinking"]
    engine = r.usage.model_extra["engine"]
    assert engine["requests"] == trace["engine_requests"] + 1 >= 2
    # the answer (and every "Wait" continuation) re-reads prompt + >= 120 thinking
    # tokens from the KV cache instead of recomputing them
    assert engine["cached_tokens"] > 0
    assert engine["prompt_tokens"] > engine["cached_tokens"]
    assert r.usage.completion_tokens_details.reasoning_tokens >= 120
    assert r.model_extra["reasoning_plan"]["strategy"] == "budget_forcing"
    metrics = httpx.get(live.base_url + "/metrics", headers=live.headers()).text
    forced = r'^ponder_thinking_forced_(ends|continuations)_total\{effort="[a-z]+",strategy="budget_forcing"\} [1-9]'
    assert re.search(forced,
                     metrics, re.M)


# 75 s each on an AVX2 core: make test-slow (tests/unit/test_probe*.py check the logic).
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["single", "budget_forcing"])
def test_probes_end_the_thinking_once_the_answer_settles(live, strategy: str) -> None:
    """Dynasor-CoT / DEER (strategies/probe.py): probes every 64 thinking tokens, read
    from the cached prefix, never shown, counted as reasoning; greedy thinking about
    a question the model answers the same way each time settles before the cap. The
    small model ends its own thinking after ~9 tokens, so a floor of 64 ("Wait")
    keeps it thinking; probes start at the floor."""
    body = {"model": live.model, "messages": _msgs(PROMPTS[2]), "temperature": 0, "max_tokens": 800,
            "reasoning": {"strategy": strategy, "min_thinking_tokens": 64, "max_thinking_tokens": 512,
                          "probe": True}}
    full = httpx.post(live.base_url + "/v1/chat/completions", json=body, headers=live.headers(), timeout=300).json()
    trace, usage = full["choices"][0]["reasoning_trace"]["thinking"], full["usage"]
    assert full["reasoning_plan"]["probe_interval"] == 64
    assert trace["exited_by_probe"] is True and not trace["cut_by_budget"], trace
    assert trace["tokens"] < 512 and trace["tokens"] % 64 == 0
    assert len(trace["probe_answers"]) == trace["probes"] == trace["tokens"] // 64
    last = trace["probe_answers"][-3:]
    assert len(set(last)) == 1 or trace["probes"] < 3  # three agreeing, or one confident probe
    engine = usage["engine"]
    assert engine["requests"] == trace["engine_requests"] + trace["probes"] + 1
    assert usage["completion_tokens_details"]["reasoning_tokens"] == trace["tokens"] + trace["probe_tokens"]
    # Each probe re-reads prompt + thinking from the KV cache.
    assert engine["cached_tokens"] >= sum(range(64, trace["tokens"] + 1, 64))
    # Streamed, the thinking shown is the same and holds no probe.
    s = post_stream(live.base_url, {**body, "stream": True, "stream_options": {"include_usage": True}},
                    live.headers())
    joined = s.joined(1)[0]
    assert joined["reasoning_content"] == full["choices"][0]["message"]["reasoning_content"]
    assert "Final answer:" not in joined["reasoning_content"]
    assert joined["content"] == full["choices"][0]["message"]["content"]
    assert s.chunks[-1]["usage"]["completion_tokens"] == usage["completion_tokens"]
