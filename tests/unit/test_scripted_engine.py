"""The scripted engine mimics what strategies rely on in vLLM; check that it does."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from scripted_engine import EOS, EOS_ID, Output, ScriptedEngine, decode, encode, word

from strategies.engine import Delta, Sampling


async def generate(engine: ScriptedEngine, prompt: str | Sequence[int], rid: str = "r",
                   **sampling: Any) -> list[Delta]:
    ids = encode(prompt) if isinstance(prompt, str) else tuple(prompt)
    s = Sampling(**{"max_tokens": 100, **sampling})
    return [d async for d in engine.generate(ids, s, rid)]


def fixed(output: Output) -> ScriptedEngine:
    return ScriptedEngine(script=lambda prompt, sampling: output)


CASES = [
    # (output, sampling, token ids text, visible text per delta, finish, stop_reason)
    (["abc", "def"], {"max_tokens": 4}, "abcd", ["abc", "d"], "length", None),
    (["ab", "c" + EOS + "zz"], {}, "abc" + EOS, ["ab", "c"], "stop", None),
    (["abc"], {}, "abc", ["abc", ""], "stop", None),  # ran out: implicit eos
    # Stop string split over chunks; text held back by len(stop) - 1 like vLLM.
    (["xy</th", "ink>after"], {"stop": ("</think>",)}, "xy</think>", ["", "xy"], "stop", "</think>"),
    (["long text", " here END tail"], {"stop": ("END",)}, "long text here END", ["long te", "xt here "],
     "stop", "END"),
    # The earliest completed stop string wins.
    (["aXbY"], {"stop": ("Y", "X")}, "aX", ["a"], "stop", "X"),
    (["abcdef"], {"stop_token_ids": (ord("c"),)}, "abc", ["ab"], "stop", ord("c")),
    # A stop string completed by the last allowed token is a stop, not a length.
    (["abEND"], {"stop": ("END",), "max_tokens": 5}, "abEND", ["ab"], "stop", "END"),
]


@pytest.mark.parametrize(("output", "sampling", "ids", "texts", "finish", "stop_reason"), CASES,
                         ids=["length", "eos", "ran-out", "stop-string-split", "stop-string-held-back",
                              "earliest-stop", "stop-token-id", "stop-beats-length"])
@pytest.mark.asyncio
async def test_stop_conditions(output: Output, sampling: dict[str, Any], ids: str, texts: list[str],
                               finish: str, stop_reason: object) -> None:
    engine = fixed(output)
    deltas = await generate(engine, "p", **sampling)
    assert decode([t for d in deltas for t in d.token_ids]) == ids
    assert [d.text for d in deltas] == texts
    assert [d.finish_reason for d in deltas] == [None] * (len(deltas) - 1) + [finish]
    assert deltas[-1].stop_reason == stop_reason
    assert engine.calls[0].text == "".join(texts)
    assert engine.finished == ["r"] and engine.aborted == []


@pytest.mark.asyncio
async def test_word_tokens_are_one_token_and_never_encoded() -> None:
    close = word("</think>")
    engine = fixed([[ord("a"), close, ord("b")]])
    deltas = await generate(engine, "p", stop=("</think>",))
    assert deltas[-1].token_ids == (ord("a"), close)
    assert (deltas[-1].text, deltas[-1].stop_reason) == ("a", "</think>")
    assert encode("</think>") != (close,)
    assert decode([close]) == "</think>"


@pytest.mark.parametrize(
    ("earlier", "prompt", "block_size", "cached"),
    [
        ([], "hello", 1, 0),
        ([("hello", "")], "hello", 1, 4),            # never the whole prompt
        # An earlier output is cached too, except its last token (eos here),
        # which was sampled but never fed back through the model.
        ([("hel", "lo world")], "hello world" + EOS + "!", 1, 11),
        ([("abc", "")], "xyz", 1, 0),
        ([("hello", ""), ("help me", "")], "help us", 1, 5),
        ([("hello world", "")], "hello there", 4, 4),
    ],
    ids=["cold", "same-prompt", "continuation", "no-overlap", "best-of-earlier", "block-rounding"],
)
@pytest.mark.asyncio
async def test_cached_tokens_are_longest_computed_prefix(earlier: list[tuple[str, str]], prompt: str,
                                                         block_size: int, cached: int) -> None:
    outputs = [out + EOS if out else EOS for _, out in earlier] + ["x"]
    engine = ScriptedEngine(script=outputs, block_size=block_size)
    for i, (p, _) in enumerate(earlier):
        await generate(engine, p, rid=f"e{i}")
    first = (await generate(engine, prompt, rid="last"))[0]
    assert (first.prompt_tokens, first.cached_tokens) == (len(prompt), cached)


@pytest.mark.asyncio
async def test_closing_the_stream_aborts_and_records() -> None:
    engine = fixed(["a"] * 10)
    stream = engine.generate(encode("p"), Sampling(max_tokens=100), "r1")
    first = await stream.__anext__()
    assert first.prompt_tokens == 1 and engine.in_flight == 1
    await stream.aclose()  # type: ignore[attr-defined]
    assert engine.aborted == ["r1"] and engine.finished == [] and engine.in_flight == 0
    assert engine.calls[0].output_ids == [ord("a")]


@pytest.mark.asyncio
async def test_abort_call_ends_the_stream() -> None:
    engine = fixed(["a"] * 10)
    seen = []
    async for d in engine.generate(encode("p"), Sampling(max_tokens=100), "r1"):
        seen.append(d)
        if len(seen) == 2:
            await engine.abort("r1")
    assert seen[-1].finish_reason == "abort" and len(seen) == 3
    assert engine.aborted == ["r1"] and engine.finished == []


@pytest.mark.asyncio
async def test_n_samples_call_the_script_per_sample() -> None:
    seen: list[Sampling] = []

    def script(prompt: tuple[int, ...], s: Sampling) -> Output:
        seen.append(s)
        return [f"s{s.seed}", "-end"]

    engine = ScriptedEngine(script=script)
    deltas = await generate(engine, "p", n=2, seed=10)
    assert [(s.n, s.seed) for s in seen] == [(1, 10), (1, 11)]
    assert [d.index for d in deltas] == [0, 1, 0, 1, 0, 1]
    text = {i: "".join(d.text for d in deltas if d.index == i) for i in (0, 1)}
    assert text == {0: "s10-end", 1: "s11-end"}
    assert [d.prompt_tokens for d in deltas] == [1, 1, None, None, None, None]


@pytest.mark.asyncio
async def test_script_list_is_consumed_in_order_and_can_run_out() -> None:
    engine = ScriptedEngine(script=["one", "two"])
    assert [d.text for d in await generate(engine, "p", rid="a")] == ["one", ""]
    assert [d.text for d in await generate(engine, "p", rid="b")] == ["two", ""]
    with pytest.raises(AssertionError, match="exhausted"):
        await generate(engine, "p", rid="c")


@pytest.mark.asyncio
async def test_duplicate_running_request_id_is_refused() -> None:
    engine = fixed(["a"] * 5)
    first = engine.generate(encode("p"), Sampling(max_tokens=10), "same")
    await first.__anext__()
    with pytest.raises(ValueError, match="already running"):
        await generate(engine, "p", rid="same")
    await first.aclose()  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_logprobs_one_per_token() -> None:
    engine = fixed(["ab", "c" + EOS])
    deltas = await generate(engine, "p", logprobs=1)
    assert [len(d.logprobs or ()) for d in deltas] == [2, 2]
    assert deltas[0].logprobs is not None and deltas[0].logprobs[0].token == "a"
    assert EOS_ID in deltas[1].token_ids
