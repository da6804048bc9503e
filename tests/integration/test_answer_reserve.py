"""The answer reserve (issue 11): reasoning must not eat the client's max_tokens.

Before, ``reasoning_effort: "low"`` with ``max_tokens: 64`` forced 32..64 thinking
tokens and came back with ``content: ""`` and ``finish_reason: "length"``.
Now the planner lowers the thinking to keep ``[defaults] answer_reserve`` (at
most half of max_tokens) for the answer and says so in ``reasoning_plan``.
"""
from __future__ import annotations

import httpx
import openai
import pytest

Q = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def _check(body: dict, max_tokens: int) -> None:
    msg = body["choices"][0]["message"]
    plan = body["reasoning_plan"]
    assert msg["content"], body
    assert plan["thinking"] and plan["max_thinking_tokens"] == max_tokens // 2
    assert any("lowered" in note for note in plan["adjusted"]), plan
    trace = body["choices"][0]["reasoning_trace"]
    assert trace["thinking"]["tokens"] <= max_tokens // 2
    assert body["usage"]["completion_tokens"] <= max_tokens


def test_sdk_low_effort_in_64_tokens_answers(client: openai.OpenAI, live) -> None:
    r = client.chat.completions.create(model=live.model, messages=Q, max_tokens=64, temperature=0,
                                       reasoning_effort="low")
    _check(r.model_dump(), 64)


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_litellm_style_body_answers(live, field: str) -> None:
    """The body LiteLLM's OpenAI-compatible provider sends for ``completion(..., reasoning_effort="low")``."""
    body = {"model": live.model, "messages": Q, field: 64, "reasoning_effort": "low", "stream": False,
            "temperature": 0}
    r = httpx.post(live.v1 + "/chat/completions", json=body, headers=live.headers(), timeout=300)
    assert r.status_code == 200, r.text
    _check(r.json(), 64)


def test_explicit_thinking_cap_that_leaves_no_answer_room_is_400(client: openai.OpenAI, live) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=live.model, messages=Q, max_tokens=64,
                                       extra_body={"reasoning": {"max_thinking_tokens": 60}})
    assert e.value.body["param"] == "reasoning.max_thinking_tokens"
    assert "answer" in e.value.body["message"]
