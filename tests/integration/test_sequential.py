"""Sequential and search strategies on the real engine: revision, beam_search, auto."""
from __future__ import annotations

import httpx
import openai
import pytest

from .helpers import batch, engine_drains, plain_and_streamed, stream_then_drop

pytestmark = pytest.mark.integration

EASY = ["Reply with the number 5.", "What is 1 plus 1?", "Reply with the word yes."]
HARD = ["A train leaves at 3:47 pm and travels 283 km at 71 km/h. At what time does it arrive?",
        "If 7 workers build 3 walls in 11 days, how many days do 5 workers need for 9 walls?",
        "What is 4817 divided by 37, rounded to two decimals?"]
STRATEGIES = [
    {"strategy": "revision", "rounds": 2},
    {"strategy": "revision", "rounds": 1, "effort": "low"},
    {"strategy": "beam_search", "beam_width": 2, "max_steps": 3},
    {"strategy": "beam_search", "beam_width": 2, "max_steps": 2, "dvts": True},
    {"strategy": "auto"},
]
IDS = ["revision", "revision-thinking", "beam-search", "beam-search-dvts", "auto"]
# beam_search and auto are compared on chat in test_remote (the same chat encoder and
# strategies, over another engine) and on /v1/messages and /v1/responses (EVERY_STRATEGY).
STREAMED = {k: v for k, v in zip(IDS, STRATEGIES, strict=True) if k not in ("beam-search", "auto")}


def _msgs(p: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": p}]


# beam_search and auto are held to a budget in test_remote (EVERY_STRATEGY, the same
# plans over another engine) and their search in test_beam_search_keeps_at_most_beam_width.
@pytest.mark.asyncio
@pytest.mark.parametrize("reasoning", list(STREAMED.values()), ids=list(STREAMED))
async def test_strategy_runs_within_budget(live, reasoning) -> None:
    budget = 500
    bodies = [{"messages": _msgs(p), "max_tokens": 96, "temperature": 0.8, "seed": i,
               "extra_body": {"reasoning": {**reasoning, "budget_tokens": budget}}}
              for i, p in enumerate(EASY[:1] + HARD[:1])]
    for r in await batch(live, bodies):
        assert r.usage.completion_tokens <= budget
        assert r.choices[0].message.content
        trace = r.choices[0].model_extra["reasoning_trace"]
        assert trace["strategy"] == reasoning["strategy"]
        assert r.model_extra["reasoning_plan"]["strategy"] == reasoning["strategy"]


@pytest.mark.parametrize("reasoning", list(STREAMED.values()), ids=list(STREAMED))
def test_stream_equals_non_stream(live, reasoning) -> None:
    body = {"model": live.model, "messages": _msgs(HARD[0]), "max_tokens": 64, "temperature": 0.8, "seed": 9,
            "reasoning": {**reasoning, "budget_tokens": 300}}
    # Once first, so both compared runs read every phase's prefix from the cache: on
    # vLLM's CPU build a prefix computed in the request and the same prefix read from
    # the cache give slightly different bf16 logits, and a seeded sample at T 0.8 can
    # then part ways (seen on revision and DVTS, also on the code before issue 13).
    httpx.post(live.base_url + "/v1/chat/completions", json=body, headers=live.headers(), timeout=300)
    full, s = plain_and_streamed(live, body)
    assert s.finish_reasons()[0] == [full["choices"][0]["finish_reason"]]


CONTEXT = ("You are a careful math tutor. Read the question, answer it briefly, and keep your answers "
           "short. When asked to check an answer, check every step and say plainly whether it is "
           "right. ") * 6  # long enough that the conversation spans several KV-cache blocks


def test_revision_stops_early_and_reuses_the_cache(client: openai.OpenAI, live) -> None:
    messages = [{"role": "system", "content": CONTEXT}, *_msgs(EASY[1])]
    r = client.chat.completions.create(model=live.model, messages=messages, max_tokens=64, temperature=0,
                                       extra_body={"reasoning": {"strategy": "revision", "rounds": 4}})
    trace = r.choices[0].model_extra["reasoning_trace"]
    assert trace["rounds_run"] < 4
    assert trace["stopped"] in ("critique found no error", "answer unchanged")
    assert [t["turn"] for t in trace["turns"]][:2] == ["draft", "critique"]
    engine = r.usage.model_extra["engine"]
    assert engine["requests"] == len(trace["turns"]) and engine["cached_tokens"] > 0
    assert r.usage.completion_tokens_details.reasoning_tokens > 0  # the critiques


def test_beam_search_keeps_at_most_beam_width(client: openai.OpenAI, live) -> None:
    r = client.chat.completions.create(model=live.model, messages=_msgs(HARD[1]), max_tokens=120, temperature=0.8,
                                       seed=2, extra_body={"reasoning": {"strategy": "beam_search", "beam_width": 2,
                                                                         "max_steps": 3}})
    steps = r.choices[0].model_extra["reasoning_trace"]["steps"]
    assert 1 <= len(steps) <= 3
    assert all(s["kept"] <= 2 and s["expanded"] <= 2 * 2 for s in steps)
    assert all(s["scores"] == sorted(s["scores"], reverse=True) for s in steps)


# Sets measured on the default model: its probe answers agree on these easy
# questions and scatter on these multi-step ones (over seeds 0-3, temperature 0.3).
AUTO_EASY = ["How many days are in a week?", "What is 3 times 3?", "How many legs does a cat have?"]
AUTO_HARD = [HARD[1], HARD[2], "What is 17 times 23 minus 89?"]


@pytest.mark.slow  # statistical: 24 auto runs (240 s on an AVX2 core)
@pytest.mark.asyncio
async def test_auto_picks_by_difficulty_and_says_why(live) -> None:
    bodies = [{"messages": _msgs(p), "max_tokens": 32, "temperature": 0.3, "seed": seed,
               "extra_body": {"reasoning": {"strategy": "auto", "budget_tokens": 300}}}
              for p in AUTO_EASY + AUTO_HARD for seed in range(4)]
    results = await batch(live, bodies)
    autos = [r.choices[0].model_extra["reasoning_trace"]["auto"] for r in results]
    assert all({"difficulty", "probe_agreement", "probe_votes", "chosen"} <= set(a) for a in autos)
    half = len(autos) // 2
    easy, hard = autos[:half], autos[half:]
    mean = lambda xs: sum(a["probe_agreement"] for a in xs) / len(xs)  # noqa: E731
    assert mean(easy) > mean(hard) + 0.15
    levels_easy = [a["difficulty"] for a in easy]
    levels_hard = [a["difficulty"] for a in hard]
    assert levels_easy.count("easy") > levels_hard.count("easy")
    assert levels_hard.count("hard") > levels_easy.count("hard")
    for a in autos:  # the plan it ran is the table's plan for the difficulty it saw
        table = results[0].model_extra["reasoning_plan"]["auto"]
        assert a["chosen"]["strategy"] == table[a["difficulty"]]["strategy"]
    assert all(r.usage.completion_tokens <= 300 for r in results)


@pytest.mark.asyncio
async def test_cancelling_mid_search_aborts_every_engine_request(live) -> None:
    body = {"model": live.model, "messages": _msgs(HARD[0]), "max_tokens": 400, "temperature": 1.0, "stream": True,
            "reasoning": {"strategy": "beam_search", "beam_width": 4, "max_steps": 8}}
    await stream_then_drop(live, body, at_least=1)
    assert await engine_drains(live)
