"""ThinkSplitter: text deltas -> (channel, text) segments, tags split anywhere."""
from __future__ import annotations

import random

import pytest

from strategies.splitter import ThinkSplitter


def run(pieces: list[str], start_in_thinking: bool = False, open_tag: str = "<think>",
        close_tag: str = "</think>") -> list[tuple[str, str]]:
    """Feed ``pieces`` then finish; adjacent segments of one channel merged."""
    sp = ThinkSplitter(open_tag, close_tag, start_in_thinking=start_in_thinking)
    raw = [seg for piece in pieces for seg in sp.feed(piece)] + sp.finish()
    return merge(raw)


def merge(segments: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for channel, text in segments:
        assert text, f"empty segment emitted on {channel}"
        if out and out[-1][0] == channel:
            out[-1] = (channel, out[-1][1] + text)
        else:
            out.append((channel, text))
    return out


T, A = "thinking", "answer"

CASES = [
    # (pieces, start_in_thinking, expected merged segments)
    (["<thi", "nk>abc</th", "ink>answer"], False, [(T, "abc"), (A, "answer")]),
    (["<think>abc</think>answer"], False, [(T, "abc"), (A, "answer")]),
    (["<", "t", "h", "i", "n", "k", ">", "x", "<", "/", "t", "h", "i", "n", "k", ">", "y"], False,
     [(T, "x"), (A, "y")]),
    (["<think>", "</think>", "only answer"], False, [(A, "only answer")]),
    # DeepSeek-R1 style: the template opened the block, the model only closes it.
    (["reason", "ing</think>", "the answer"], True, [(T, "reasoning"), (A, "the answer")]),
    (["reasoning</think>"], True, [(T, "reasoning")]),
    # A model that repeats the open tag although the block is already open.
    (["<think>r</think>a"], True, [(T, "r"), (A, "a")]),
    # Leading whitespace before the open tag is dropped with it.
    (["\n  ", "<think>", "r</think>a"], False, [(T, "r"), (A, "a")]),
    (["  \n<think>r</think>a"], False, [(T, "r"), (A, "a")]),
    # Unclosed thinking (cut at length): the held-back partial tag is thinking text.
    (["<think>abc</th"], False, [(T, "abc</th")]),
    (["abc", "</", "thin"], True, [(T, "abc</thin")]),
    (["abc<"], True, [(T, "abc<")]),
    # Text that only looks like a tag.
    (["<think>a</thx", "b</think>c"], False, [(T, "a</thxb"), (A, "c")]),
    (["<thinx>hello"], False, [(A, "<thinx>hello")]),
    (["<thi", "s is not a tag"], False, [(A, "<this is not a tag")]),
    (["<th"], False, [(A, "<th")]),
    # No thinking at all.
    (["plain answer"], False, [(A, "plain answer")]),
    (["plain", " ", "answer"], False, [(A, "plain answer")]),
    # An open tag after text is just text; a close tag in the answer is just text.
    (["hi <think>x</think>"], False, [(A, "hi <think>x</think>")]),
    (["<think>a</think>b</think>c<think>d"], False, [(T, "a"), (A, "b</think>c<think>d")]),
    # Whitespace-only output is held until finish(), then kept on its channel.
    (["  "], False, [(A, "  ")]),
    (["  "], True, [(T, "  ")]),
    ([""], False, []),
    ([], True, []),
    # Leading whitespace that is not followed by a tag is kept.
    (["  hello"], False, [(A, "  hello")]),
    (["\n", "thought</think>ans"], True, [(T, "\nthought"), (A, "ans")]),
]
CASE_IDS = [
    "open-and-close-split-mid-tag", "whole", "char-by-char", "empty-thinking",
    "no-open-tag-r1", "no-open-tag-closed-at-end", "repeated-open-tag", "whitespace-before-open-split",
    "whitespace-before-open-whole", "unclosed-partial-close-tag", "unclosed-partial-split", "unclosed-lt",
    "fake-close-tag", "fake-open-tag", "open-prefix-then-text", "open-prefix-unfinished",
    "no-thinking", "no-thinking-pieces", "open-tag-after-text", "second-open-after-close",
    "whitespace-only-answer", "whitespace-only-thinking", "empty-delta", "nothing",
    "leading-space-no-tag", "leading-newline-thinking",
]


@pytest.mark.parametrize(("pieces", "start_in_thinking", "expected"), CASES, ids=CASE_IDS)
def test_split(pieces: list[str], start_in_thinking: bool, expected: list[tuple[str, str]]) -> None:
    assert run(pieces, start_in_thinking) == expected


@pytest.mark.parametrize(
    ("pieces", "start_in_thinking", "closed"),
    [
        (["<think>a</think>b"], False, True),
        (["<think>a</th", "ink>"], False, True),
        (["<think>a</th"], False, False),
        (["a</think>"], True, True),
        (["a"], True, False),
        (["a</think>"], False, False),
    ],
    ids=["closed", "closed-split", "partial", "r1-closed", "r1-open", "answer-only-close-is-text"],
)
def test_closed_flag_and_channel(pieces: list[str], start_in_thinking: bool, closed: bool) -> None:
    sp = ThinkSplitter(start_in_thinking=start_in_thinking)
    for p in pieces:
        sp.feed(p)
    assert sp.closed is closed
    if closed:
        assert sp.channel == "answer"


def test_channel_switches_only_when_tag_complete() -> None:
    sp = ThinkSplitter(start_in_thinking=True)
    assert sp.feed("abc</thi") == [("thinking", "abc")]
    assert sp.channel == "thinking"
    assert sp.feed("nk>") == []
    assert sp.channel == "answer"
    assert sp.feed("x") == [("answer", "x")]
    assert sp.finish() == []


def test_custom_tags() -> None:
    pieces = ["<|begin", "_of_thought|>r<|end_of_th", "ought|>a"]
    got = run(pieces, open_tag="<|begin_of_thought|>", close_tag="<|end_of_thought|>")
    assert got == [(T, "r"), (A, "a")]


def test_finish_is_idempotent_and_flushes_once() -> None:
    sp = ThinkSplitter(start_in_thinking=True)
    assert sp.feed("x</") == [("thinking", "x")]
    assert sp.finish() == [("thinking", "</")]
    assert sp.finish() == []


# -- property: any way of cutting the text gives the same channels -------------

_ALPHABET = ["<think>", "</think>", "<", ">", "/", "<th", "</th", "ink>", "think", "t", "a", " ", "\n", "x"]


def _random_text(rng: random.Random) -> str:
    body = "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 12)))
    if rng.random() < 0.4:  # often open a block, sometimes after whitespace
        body = rng.choice(["", " ", "\n", " \n "]) + "<think>" + body
    return body


def _random_cuts(rng: random.Random, text: str) -> list[str]:
    if len(text) < 2:
        return [text]
    cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(1, 4))))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def _oracle(text: str, start_in_thinking: bool) -> list[tuple[str, str]]:
    """The split of the whole text, written without any streaming."""
    channel, rest = (T if start_in_thinking else A), text
    if text.lstrip().startswith("<think>"):
        channel, rest = T, text.lstrip()[len("<think>"):]
    if channel == T and "</think>" in rest:
        thought, answer = rest.split("</think>", 1)
        return merge([(c, x) for c, x in ((T, thought), (A, answer)) if x])
    return [(channel, rest)] if rest else []


@pytest.mark.parametrize("start_in_thinking", [False, True], ids=["tagged", "r1-style"])
def test_any_feeding_equals_whole_text_split(start_in_thinking: bool) -> None:
    rng = random.Random(1234)
    texts = [_random_text(rng) for _ in range(1500)]
    switched = 0
    for text in texts:
        expected = _oracle(text, start_in_thinking)
        assert run([text], start_in_thinking) == expected, text
        assert run(list(text), start_in_thinking) == expected, text
        assert run(_random_cuts(rng, text), start_in_thinking) == expected, text
        switched += [c for c, _ in expected] == [T, A]
    # The generated texts really exercise the switch from thinking to answer.
    assert switched > 100
