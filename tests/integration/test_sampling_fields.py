"""The rest of the sampling surface on the real engine (issue 12): ``logit_bias``
through the OpenAI SDK's own parameter, vLLM's ``top_k``, ``min_p``,
``repetition_penalty``, ``min_tokens`` and ``stop_token_ids`` through
``extra_body``, each shown to change what it should, and each refused with a 400
naming it when its value is bad.

Every claim is checked against a control request that shows the difference
(greedy decoding, or fixed seeds), so none can pass because the field did
nothing. Token ids come from the served model's own tokenizer (the folder
``/v1/models`` names as ``root``). Which phase of a plan gets which field is
tested on the scripted engine (tests/unit/test_sampling_fields.py).
"""
from __future__ import annotations

from typing import Any

import openai
import pytest

from strategies.engine import Sampling

from .helpers import metric

pytestmark = pytest.mark.integration

POEM = [{"role": "user", "content": "Write a short poem about the sea."}]
CAPITAL = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
SHORT = [{"role": "user", "content": "What is 2 plus 2? Reply with only the number."}]
REPEAT = [{"role": "user", "content": "Write: the the the the the the the the the the"}]
SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def ids_of(client: openai.OpenAI):
    """``text -> [token ids]``: every id of the served model that decodes to ``text``
    (a token is named by its text in the logprobs; several ids may share it)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(client.models.list().data[0].model_extra["root"])
    table: dict[str, list[int]] = {}
    for i in range(len(tok)):
        table.setdefault(tok.decode([i]), []).append(i)

    def ids(text: str) -> list[int]:
        found = table.get(text, [])
        assert found, f"no token decodes to {text!r}"
        return found
    return ids


def chat(client: openai.OpenAI, live, messages: list[dict], **kw: Any):
    return client.chat.completions.create(model=live.model, messages=messages, **kw)


def tokens(r) -> list[str]:
    """The answer's tokens as the logprobs list them (needs ``logprobs=True``)."""
    return [lp.token for lp in r.choices[0].logprobs.content]


# -- logit_bias (OpenAI's own parameter) -----------------------------------------

def test_logit_bias_minus_100_bans_the_greedy_token(client: openai.OpenAI, live, ids_of) -> None:
    base = chat(client, live, CAPITAL, max_tokens=12, temperature=0, logprobs=True)
    first = tokens(base)[0]
    banned = ids_of(first)
    assert first.isascii() and len(banned) <= 300, (first, banned)
    r = chat(client, live, CAPITAL, max_tokens=12, temperature=0, logprobs=True,
             logit_bias={str(i): -100 for i in banned})
    got = tokens(r)
    assert got, r
    assert first not in got, (first, got)  # not first, and nowhere after either
    assert r.choices[0].message.content != base.choices[0].message.content


def test_logit_bias_plus_100_takes_over_thinking_and_answer(client: openai.OpenAI, live, ids_of) -> None:
    """A bias reaches every phase the client reads: the thinking as well as the answer."""
    z = ids_of("Z")[0]
    base = chat(client, live, CAPITAL, max_tokens=48, temperature=0, reasoning_effort="minimal")
    assert "Z" not in base.choices[0].message.content  # the control: no bias, no Zs
    r = chat(client, live, CAPITAL, max_tokens=48, temperature=0, reasoning_effort="minimal",
             logit_bias={str(z): 100})
    msg, usage = r.choices[0].message, r.usage
    thought = usage.completion_tokens_details.reasoning_tokens
    answered = usage.completion_tokens - thought
    assert thought > 0 and answered > 0, usage
    reasoning = msg.model_extra["reasoning_content"]
    # Every thinking token is Z (the cap cut it; the server's wrap-up phrase has no Z).
    assert reasoning.startswith("Z" * thought) and reasoning.count("Z") == thought, reasoning
    assert msg.content == "Z" * answered, msg.content
    assert r.choices[0].finish_reason == "length"  # eos could not win against +100


# -- top_k and min_p: one candidate token makes sampling greedy ------------------------

def _seeded(client: openai.OpenAI, live, **extra: Any) -> list:
    return [chat(client, live, POEM, max_tokens=24, temperature=1.0, seed=s, logprobs=True, top_logprobs=5, **extra)
            for s in SEEDS]


def _off_top(r) -> int:
    """Positions where the sampled token was not a most likely one (raw log-probabilities,
    which vLLM reports before top_k / min_p / temperature)."""
    return sum(lp.logprob < max(t.logprob for t in lp.top_logprobs) for lp in r.choices[0].logprobs.content)


def _tied(r) -> bool:
    """Whether two tokens shared the top log-probability somewhere (bf16 logits tie):
    then top_k=1 keeps both, and the seed picks one."""
    return any(sum(t.logprob == max(u.logprob for u in lp.top_logprobs) for t in lp.top_logprobs) > 1
               for lp in r.choices[0].logprobs.content)


@pytest.mark.parametrize("extra", [{"top_k": 1}, {"min_p": 1.0}], ids=["top_k=1", "min_p=1"])
def test_one_candidate_token_makes_sampling_greedy(client: openai.OpenAI, live, extra: dict) -> None:
    free = _seeded(client, live)
    assert sum(_off_top(r) for r in free) > 0  # the control: at temperature 1 the seeds wander off the top
    narrowed = _seeded(client, live, extra_body=extra)
    assert [_off_top(r) for r in narrowed] == [0] * len(SEEDS)
    assert all(r.usage.completion_tokens > 0 for r in narrowed)
    if not any(_tied(r) for r in narrowed):  # then every seed walks the one greedy path
        greedy = chat(client, live, POEM, max_tokens=24, temperature=0).choices[0].message.content
        assert {r.choices[0].message.content for r in narrowed} == {greedy}


# -- repetition_penalty -------------------------------------------------------------

def _repeats(toks: list[str]) -> int:
    return len(toks) - len(set(toks))


def test_repetition_penalty_breaks_a_repetitive_greedy_output(client: openai.OpenAI, live) -> None:
    base = chat(client, live, REPEAT, max_tokens=32, temperature=0, logprobs=True)
    assert _repeats(tokens(base)) >= 3, tokens(base)  # the control is repetitive
    r = chat(client, live, REPEAT, max_tokens=32, temperature=0, logprobs=True,
             extra_body={"repetition_penalty": 2.0})
    assert r.choices[0].message.content != base.choices[0].message.content
    assert _repeats(tokens(r)) < _repeats(tokens(base)), (tokens(base), tokens(r))


# -- min_tokens ----------------------------------------------------------------------

def test_min_tokens_holds_a_short_answer_open(client: openai.OpenAI, live) -> None:
    floor = 24
    base = chat(client, live, SHORT, max_tokens=64, temperature=0)
    assert base.usage.completion_tokens < floor and base.choices[0].finish_reason == "stop", base.usage
    r = chat(client, live, SHORT, max_tokens=64, temperature=0, extra_body={"min_tokens": floor})
    assert floor <= r.usage.completion_tokens <= 64, r.usage
    assert r.choices[0].message.content.startswith(base.choices[0].message.content.rstrip())


def test_min_tokens_is_the_answers_with_thinking_on(client: openai.OpenAI, live) -> None:
    """The floor is on the answer: the thinking before it does not count toward it."""
    floor = 24
    r = chat(client, live, SHORT, max_tokens=96, temperature=0, reasoning_effort="minimal",
             extra_body={"min_tokens": floor})
    usage = r.usage
    assert usage.completion_tokens_details.reasoning_tokens > 0
    assert usage.completion_tokens - usage.completion_tokens_details.reasoning_tokens >= floor, usage


# -- stop_token_ids --------------------------------------------------------------------

def test_stop_token_ids_stop_at_that_token(client: openai.OpenAI, live, ids_of) -> None:
    base = chat(client, live, CAPITAL, max_tokens=16, temperature=0, logprobs=True)
    toks = tokens(base)
    # The first token, after the first, that did not come before: the request must stop there.
    at = next(i for i in range(1, len(toks)) if toks[i] not in toks[:i] and toks[i].strip().isascii())
    assert len(toks) > at + 1, toks  # the control went on past it
    r = chat(client, live, CAPITAL, max_tokens=16, temperature=0, logprobs=True,
             extra_body={"stop_token_ids": ids_of(toks[at])})
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == at + 1, (at, toks, tokens(r))
    assert tokens(r) == toks[: at + 1]
    assert base.choices[0].message.content.startswith(r.choices[0].message.content)


# -- bad values are a 400 naming the field, before the engine ---------------------------

BAD = [
    ({"logit_bias": {"5": 101}}, "logit_bias"),
    ({"logit_bias": {"999999999": 1}}, "logit_bias"),  # outside the vocabulary
    ({"extra_body": {"top_k": -2}}, "top_k"),
    ({"extra_body": {"min_p": 1.5}}, "min_p"),
    ({"extra_body": {"repetition_penalty": 0}}, "repetition_penalty"),
    ({"extra_body": {"repetition_penalty": 5e-324}}, "repetition_penalty"),
    ({"extra_body": {"min_tokens": 9}}, "min_tokens"),  # above max_tokens
    ({"extra_body": {"stop_token_ids": [-1]}}, "stop_token_ids"),
    ({"extra_body": {"stop_token_ids": [999999999]}}, "stop_token_ids"),  # outside the vocabulary
]


@pytest.mark.parametrize("extra,field", BAD, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD)])
def test_bad_value_is_400_naming_the_field(client: openai.OpenAI, live, extra: dict, field: str) -> None:
    before = metric(live, "vllm:prompt_tokens_total")
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, live, SHORT, max_tokens=8, **extra)
    body = e.value.body
    assert e.value.status_code == 400 and body["type"] == "invalid_request_error"
    assert body["param"].split("[")[0].split(".")[0] == field, body
    assert metric(live, "vllm:prompt_tokens_total") == before


# -- the engine adapter: what vLLM is given (no server needed) ---------------------------

def test_sampling_params_carry_every_field() -> None:
    from server.engines.vllm_engine import _sampling_params

    s = Sampling(max_tokens=10, top_k=5, min_p=0.25, repetition_penalty=1.3, logit_bias=((7, -100.0), (65, 2.5)),
                 min_tokens=3, stop_token_ids=(1, 2))
    p = _sampling_params(s)
    assert (p.top_k, p.min_p, p.repetition_penalty, p.min_tokens) == (5, 0.25, 1.3, 3)
    assert p.logit_bias == {7: -100.0, 65: 2.5} and p.stop_token_ids == [1, 2]
    off = _sampling_params(Sampling(max_tokens=10))
    assert (off.top_k, off.min_p, off.repetition_penalty, off.min_tokens, off.logit_bias) == (0, 0.0, 1.0, 0, None)
    # A phase with less room than the client's floor generates what it has (vLLM refuses min > max).
    assert _sampling_params(Sampling(max_tokens=2, min_tokens=5)).min_tokens == 2
