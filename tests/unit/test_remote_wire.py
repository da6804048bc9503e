"""The remote engine's wire (server/engines/remote_wire.py): a ``Sampling`` becomes a
``POST /v1/completions`` body that vLLM 0.32's own ``CompletionRequest`` turns into
the very ``SamplingParams`` the in-process engine builds; vLLM's streamed chunks
(built by tests/unit/fake_vllm.py with vLLM's protocol classes) become ``Delta``s."""
from __future__ import annotations

import json
import math

import pytest
from scripted_engine import EOS_ID, CharTokenizer
from vllm.entrypoints.openai.completion.protocol import CompletionRequest

from server.engines.remote_wire import ChunkReader, completion_body
from server.engines.vllm_engine import _sampling_params
from strategies.engine import EngineRequestFailed, Sampling, Structured
from tests.unit.fake_vllm import FakeVLLM, Reply, reply

TAG = json.dumps({"type": "structural_tag", "format": {"type": "const_string", "value": "x"}})
EVERY = Sampling(max_tokens=32, temperature=0.7, top_p=0.9, top_k=5, min_p=0.1, seed=7, stop=("A", "BB"),
                 stop_token_ids=(3, 4), min_tokens=4, logprobs=2, presence_penalty=0.5, frequency_penalty=0.25,
                 repetition_penalty=1.3, logit_bias=((7, -100.0), (65, 2.5)), n=3, skip_special_tokens=False,
                 ignore_eos=True, priority=5)
SAMPLINGS = [
    pytest.param(Sampling(max_tokens=16), id="defaults"),
    pytest.param(EVERY, id="every-field"),
    pytest.param(Sampling(max_tokens=2, min_tokens=9), id="floor-above-cap"),
    pytest.param(Sampling(max_tokens=8, logprobs=0, temperature=0.0), id="greedy-logprobs-0"),
    *[pytest.param(Sampling(max_tokens=8, structured=Structured(**{kind: value})), id=f"structured-{kind}")
      for kind, value in [("json", '{"type": "object"}'), ("json_object", True), ("regex", "a+"),
                          ("choice", ("a", "b")), ("grammar", 'root ::= "a"'), ("structural_tag", TAG)]],
]
# Every SamplingParams field vllm_engine._sampling_params sets.
FIELDS = ("n", "max_tokens", "min_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop",
          "stop_token_ids", "logprobs", "presence_penalty", "frequency_penalty", "repetition_penalty",
          "logit_bias", "skip_special_tokens", "ignore_eos", "structured_outputs", "output_kind")


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_vllm_reads_the_body_as_the_in_process_engine_builds_its_params(sampling: Sampling) -> None:
    body = completion_body("m", [5, 6, 7], sampling, "rid-c0-answer", max_stop_strings=4)
    req = CompletionRequest.model_validate(json.loads(json.dumps(body)))  # through JSON, as on the wire
    remote = req.to_sampling_params(req.max_tokens, {})  # what vLLM's serving_completion calls
    local = _sampling_params(sampling)
    for name in FIELDS:
        assert getattr(remote, name) == getattr(local, name), name
    assert req.priority == sampling.priority  # AsyncLLM.generate(priority=...) on both engines
    assert (req.prompt, req.stream, req.return_token_ids, req.request_id) == ([5, 6, 7], True, True, "rid-c0-answer")
    assert req.stream_options is not None and req.stream_options.include_usage
    assert req.return_tokens_as_token_ids is (True if sampling.logprobs is not None else None)


def test_what_the_http_api_cannot_carry_is_refused_by_name() -> None:
    s = Sampling(max_tokens=4, stop=("a", "b", "c", "d", "e"))
    with pytest.raises(ValueError, match="5 stop strings.*VLLM_MAX_STOP_STRINGS"):
        completion_body("m", [1], s, "r", max_stop_strings=4)
    assert completion_body("m", [1], s, "r", max_stop_strings=5)["stop"] == list(s.stop)


def test_defaults_are_sent_so_the_upstream_s_own_never_apply() -> None:
    body = completion_body("m", [1], Sampling(max_tokens=4), "r", 4)
    for key in ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
                "repetition_penalty", "stop", "stop_token_ids", "min_tokens"):
        assert key in body, key
    assert "seed" not in body and "priority" not in body and "logprobs" not in body


# -- chunks -> deltas -------------------------------------------------------------

def _chunks(fake: FakeVLLM, sampling: Sampling, prompt: list[int]) -> list[dict]:
    body = completion_body(fake.model, prompt, sampling, "rid-c0-answer", 4)
    return [json.loads(f[len("data: "):]) for f in fake.frames(body) if f and f != "data: [DONE]\n\n"]


def _read(fake: FakeVLLM, sampling: Sampling, ids: tuple[int, ...] = (1, 2, 3)) -> tuple[list, ChunkReader]:
    prompt = list(ids)
    reader = ChunkReader(CharTokenizer(), len(prompt), sampling.n, sampling.logprobs)
    deltas = [d for chunk in _chunks(fake, sampling, prompt) for d in reader.feed(chunk)]
    return deltas + reader.finish(), reader


def test_deltas_carry_the_upstream_s_ids_text_and_finish() -> None:
    fake = FakeVLLM("http://a:1", script=lambda body, i: Reply([[104, 105], [33], [EOS_ID]]))
    deltas, reader = _read(fake, Sampling(max_tokens=8))
    assert [d.token_ids for d in deltas] == [(104, 105), (33,), (EOS_ID,)]
    assert "".join(d.text for d in deltas) == "hi!"
    assert [d.finish_reason for d in deltas] == [None, None, "stop"]
    # vLLM reports cached tokens in the final usage chunk only, after every token: the
    # finishing delta waits for it and carries them, with the prompt's length.
    assert [(d.prompt_tokens, d.cached_tokens) for d in deltas] == [(None, None), (None, None), (3, 3)]
    assert reader.generated == 4


@pytest.mark.parametrize("cached", [0, 7, None], ids=["miss", "hit", "not-reported"])
def test_cache_hits_are_what_the_usage_chunk_says(cached: int | None) -> None:
    """None: the upstream runs without --enable-prompt-tokens-details (the ledger counts 0)."""
    deltas, _ = _read(FakeVLLM("http://a:1", cached_tokens=cached), Sampling(max_tokens=8))
    assert (deltas[-1].prompt_tokens, deltas[-1].cached_tokens) == (3, cached)


def test_n_samples_interleave_each_with_its_own_first_delta() -> None:
    fake = FakeVLLM("http://a:1", script=lambda body, i: reply("ab" if i == 0 else "xyz"))
    deltas, _ = _read(fake, Sampling(max_tokens=8, n=2))
    assert [d.index for d in deltas][:4] == [0, 1, 0, 1]
    for i, text in ((0, "ab"), (1, "xyz")):
        mine = [d for d in deltas if d.index == i]
        assert "".join(d.text for d in mine) == text and mine[-1].finish_reason == "stop"
        assert [d.prompt_tokens for d in mine] == [None] * (len(mine) - 1) + [3]


def test_stop_reason_and_length_pass_through() -> None:
    fake = FakeVLLM("http://a:1", script=lambda body, i: Reply([[65], [66]], "stop", "B"))
    deltas, _ = _read(fake, Sampling(max_tokens=8, stop=("B",)))
    assert (deltas[-1].finish_reason, deltas[-1].stop_reason) == ("stop", "B")
    fake.script = lambda body, i: reply("abc", eos=False)
    deltas, _ = _read(fake, Sampling(max_tokens=3))
    assert deltas[-1].finish_reason == "length"


@pytest.mark.parametrize("k,top", [(0, ()), (1, ((1, -0.25),)), (2, ((1, -0.25), (0, -0.5)))],
                         ids=["k0", "k1", "k2"])
def test_logprobs_keep_the_sampled_token_and_the_top_k_by_rank(k: int, top: tuple) -> None:
    """vLLM sends the sampled token plus the top k; the in-process engine keeps the
    sampled token's logprob and, as top, the entries ranked within k."""
    fake = FakeVLLM("http://a:1", script=lambda body, i: Reply([[104]]))
    deltas, _ = _read(fake, Sampling(max_tokens=8, logprobs=k))
    (lp,) = deltas[0].logprobs
    assert (lp.token, lp.logprob) == ("h", -0.5)
    assert lp.top == tuple((chr(104 + off), v) for off, v in top)


def test_the_clamped_minus_infinity_is_turned_back() -> None:
    reader = ChunkReader(CharTokenizer(), 1, 1, 0)
    chunk = {"choices": [{"index": 0, "text": "a", "token_ids": [97], "finish_reason": None,
                          "prompt_token_ids": [1],
                          "logprobs": {"tokens": ["token_id:97"], "token_logprobs": [-9999.0],
                                       "top_logprobs": [{"token_id:97": -9999.0}], "text_offset": [0]}}]}
    (delta,) = reader.feed(chunk)
    assert delta.logprobs[0].logprob == -math.inf


@pytest.mark.parametrize("change,match", [
    (lambda c: c["choices"][0].pop("token_ids"), "no token ids"),
    (lambda c: c["choices"][0].update(prompt_token_ids=[1]), "prompt of 1 tokens, not 3"),
    (lambda c: c["choices"][0].update(finish_reason="error"), "failed the request"),
], ids=["no-token-ids", "prompt-changed", "finish-error"])
def test_a_chunk_the_engine_cannot_trust_fails_the_request(change, match: str) -> None:
    chunk = _chunks(FakeVLLM("http://a:1"), Sampling(max_tokens=8), [1, 2, 3])[0]
    change(chunk)
    with pytest.raises(EngineRequestFailed, match=match):
        ChunkReader(CharTokenizer(), 3, 1, None).feed(chunk)


def test_a_stream_that_ends_without_every_sample_or_with_other_counts_fails() -> None:
    fake = FakeVLLM("http://a:1", script=lambda body, i: reply("ab"))
    chunks = _chunks(fake, Sampling(max_tokens=8, n=2), [1, 2, 3])
    reader = ChunkReader(CharTokenizer(), 3, 2, None)
    for chunk in chunks[:-2]:  # sample 1's last chunk and the usage are missing
        reader.feed(chunk)
    with pytest.raises(EngineRequestFailed, match=r"samples \[1\] unfinished"):
        reader.finish()
    reader = ChunkReader(CharTokenizer(), 3, 2, None)
    for chunk in chunks:
        reader.feed(chunk)
    reader.usage = {**(reader.usage or {}), "completion_tokens": 99}
    with pytest.raises(EngineRequestFailed, match="counted 99"):
        reader.finish()


def test_an_abort_ends_every_unfinished_sample() -> None:
    fake = FakeVLLM("http://a:1", script=lambda body, i: reply("a" if i == 0 else "long"))
    reader = ChunkReader(CharTokenizer(), 3, 3, None)
    for chunk in _chunks(fake, Sampling(max_tokens=8, n=3), [1, 2, 3])[:4]:
        reader.feed(chunk)  # sample 0 finished ("a", eos), 1 and 2 not
    ended = reader.aborted()
    assert [(d.index, d.finish_reason, d.prompt_tokens) for d in ended] == [(0, "stop", 3), (1, "abort", 3),
                                                                            (2, "abort", 3)]
    assert ended[1].token_ids == () and all(d.cached_tokens is None for d in ended)
