"""Generation: one engine request -> channel events, ledger charges, continuation ids."""
from __future__ import annotations

import pytest
from scripted_engine import EOS, EOS_ID, Output, ScriptedEngine, encode, word

from strategies.context import RunContext
from strategies.engine import Sampling
from strategies.events import Answer, Thinking
from strategies.generation import Generated, Generation
from strategies.ledger import Ledger

OPEN, CLOSE = word("<think>"), word("</think>")


async def generate(output: Output, thinking: bool, **sampling: object) -> tuple[Generated, list, Ledger]:
    engine = ScriptedEngine(script=[output])
    ledger = Ledger(prompt_tokens=1)
    ctx = RunContext(engine, encode("P"), (), (), Sampling(max_tokens=100, **sampling), "r", 0, ledger)  # type: ignore[arg-type]
    gen = Generation(ctx, ctx.prompt_ids, ctx.sampling, "x", thinking)
    async with gen as stream:
        events = [e async for e in stream]
    return gen.result, events, ledger


CHARGES = [
    # (output: one chunk = one delta, start in thinking, thinking tokens, answer tokens)
    (["ans", "wer"], False, 0, 6),
    (["abc", "de"], True, 5, 0),
    # Per-token deltas as vLLM streams them: exact.
    ([[OPEN], "a", "b", [CLOSE], "x", "y"], False, 4, 2),
    (["a", "b", [CLOSE], "x"], True, 3, 1),
    # A delta that opens the block is thinking, open tag included.
    (["<think>abcd", "</think>", "ans"], False, 19, 3),
    # A delta crossing the close tag: its last token goes to the answer.
    (["ab</think>x"], True, 10, 1),
    (["<think>a</think>b"], False, 16, 1),
    (["ab", "</think>"], True, 10, 0),
]


@pytest.mark.parametrize(("output", "start_in_thinking", "thinking", "answer"), CHARGES,
                         ids=["answer-only", "thinking-only", "tags-as-tokens-opened", "tags-as-tokens-r1",
                              "delta-opens-block", "delta-crosses-close", "delta-opens-and-closes",
                              "close-tag-last"])
@pytest.mark.asyncio
async def test_charges(output: Output, start_in_thinking: bool, thinking: int, answer: int) -> None:
    gen, _, ledger = await generate(output, start_in_thinking)
    assert (ledger.thinking, ledger.answer) == (thinking, answer)
    assert ledger.generated == len(gen.token_ids)  # every token is charged exactly once


@pytest.mark.asyncio
async def test_events_and_texts() -> None:
    gen, events, _ = await generate([[OPEN], "thought", [CLOSE], "answer", EOS], False)
    assert "".join(e.text for e in events if isinstance(e, Thinking)) == gen.thinking == "thought"
    assert "".join(e.text for e in events if isinstance(e, Answer)) == gen.answer == "answer"
    assert (gen.finish_reason, gen.stop_reason) == ("stop", None)


@pytest.mark.parametrize(
    ("output", "drop", "tail"),
    [
        (["abc" + EOS], (EOS_ID,), encode("abc")),
        (["abc" + EOS], (), encode("abc" + EOS)),
        (["abc"], (EOS_ID,), encode("abc")),
        ([[ord("a"), CLOSE]], (EOS_ID,), (ord("a"), CLOSE)),
    ],
    ids=["drops-eos", "keeps-without-drop", "nothing-to-drop", "keeps-word-ids"],
)
@pytest.mark.asyncio
async def test_continuation_ids(output: Output, drop: tuple[int, ...], tail: tuple[int, ...]) -> None:
    gen, _, _ = await generate(output, False)
    assert gen.continuation_ids(drop=drop) == encode("P") + tail


@pytest.mark.asyncio
async def test_logprobs_attach_once_per_delta() -> None:
    gen, events, _ = await generate(["ab", "cd" + EOS], False, logprobs=1)
    answers = [e for e in events if isinstance(e, Answer)]
    entries = [lp for e in answers for lp in (e.logprobs or ())]
    assert len(entries) == len(gen.token_ids) == 5
    assert [lp.token for lp in entries[:4]] == list("abcd")


@pytest.mark.asyncio
async def test_stream_is_closed_when_the_consumer_stops() -> None:
    engine = ScriptedEngine(script=[["a"] * 20])
    ctx = RunContext(engine, encode("P"), (), (), Sampling(max_tokens=100), "r", 0, Ledger(1))
    gen = Generation(ctx, ctx.prompt_ids, ctx.sampling, "x", False)
    async with gen as events:
        await events.__anext__()
    # Leaving the phase early closed its events: the engine request was aborted, no result.
    assert engine.aborted == ["r-c0-x"] and engine.in_flight == 0
    assert not gen.done
