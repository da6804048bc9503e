"""A scripted :class:`strategies.engine.Engine` for unit tests of strategy logic.

It is not a model: a *script* decides what every request generates. What it
does mimic is the part of vLLM's ``AsyncLLM`` contract that strategies depend
on, so token accounting and continuations can be checked exactly:

- a character tokenizer (one character = one token, ``ord``/``chr``) plus a
  few multi-character word tokens that ``encode`` never produces, so a
  continuation prompt can be compared token for token and re-tokenized text
  would not match the ids the engine generated;
- ``max_tokens`` -> ``finish_reason "length"``; an eos token (by default
  ``"\\x00"``, id 0) -> ``"stop"`` with ``stop_reason None``, its id kept and its
  text dropped; ``stop_token_ids`` likewise with ``stop_reason`` = the id;
  eos / stop ids are checked before the length cap, as in vLLM v1;
- stop strings: the text is cut before the stop string, the token ids are kept
  up to and including the token that completed it, ``stop_reason`` is the
  string, and, as vLLM's detokenizer does, the last ``len(longest stop) - 1``
  characters are held back until the request finishes;
- ``prompt_tokens`` / ``cached_tokens`` on the first delta of every sample,
  the cache hit being the longest common prefix with anything computed before
  (earlier prompts plus their generated tokens but the last), never the whole
  prompt, rounded down to ``block_size``;
- closing the stream before it finished (or cancelling its consumer) aborts
  the request, which is recorded.

A script is a callable ``(prompt_ids, sampling) -> output`` or a sequence of
outputs handed out in request order. An output is a string or a sequence of
chunks; a chunk (a string, or a list of token ids) becomes one delta. An output
that runs out without eos / stop / length finishes as ``"stop"`` (an implicit
end of sequence without a token). With ``sampling.n > 1`` the script is called
once per sample with ``n = 1`` and the seed offset by the sample index.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Union

from strategies.engine import Delta, ModelInfo, Sampling, TokenLogprob

EOS = "\x00"
EOS_ID = 0
# Word tokens live above the Unicode range: id WORD_BASE + i is WORDS[i].
WORD_BASE = 0x110000
WORDS = ("</think>", "<think>", "Wait", " the", " answer")

Chunk = Union[str, Sequence[int]]
Output = Union[str, Sequence[Chunk]]
ScriptFn = Callable[[tuple[int, ...], Sampling], Output]


class CharTokenizer:
    """One character is one token; plus a few multi-character *word* tokens.

    ``encode`` never produces a word token, so a strategy that re-tokenized
    generated text instead of reusing the engine's ids shows up as a mismatch.
    """

    eos_token_id = EOS_ID

    def __init__(self, words: Sequence[str] = WORDS) -> None:
        self.words = {WORD_BASE + i: w for i, w in enumerate(words)}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return "".join(self.words[i] if i >= WORD_BASE else chr(i) for i in ids)

    def apply_chat_template(self, messages: list[dict[str, Any]], tokenize: bool = False,
                            add_generation_prompt: bool = True, **_: Any) -> str:
        text = "".join(f"<|{m['role']}|>{m.get('content') or ''}\n" for m in messages)
        return text + ("<|assistant|>" if add_generation_prompt else "")


def encode(text: str) -> tuple[int, ...]:
    return tuple(ord(c) for c in text)


def decode(ids: Sequence[int]) -> str:
    return CharTokenizer().decode(ids)


def word(text: str) -> int:
    """The id of one of the default word tokens."""
    return WORD_BASE + WORDS.index(text)


def char_model_info(max_model_len: int = 4096, **kw: Any) -> ModelInfo:
    return ModelInfo(max_model_len=max_model_len, eos_token_ids=(EOS_ID,), **kw)


@dataclass
class Call:
    """One engine request (one sample of it) as the engine saw it."""

    request_id: str
    index: int
    prompt_ids: tuple[int, ...]
    sampling: Sampling
    cached_tokens: int
    output_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    stop_reason: int | str | None = None

    @property
    def prompt(self) -> str:
        return decode(self.prompt_ids)

    @property
    def output(self) -> str:
        """Every generated token decoded, eos and stop strings included."""
        return decode(self.output_ids)


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class _Sample:
    """Token-by-token stop checks and detokenisation for one sample."""

    def __init__(self, call: Call, eos: tuple[int, ...], chunks: Sequence[Chunk],
                 max_model_len: int, tok: CharTokenizer) -> None:
        self.call = call
        self.tok = tok
        self.s = call.sampling
        self.eos = eos
        self.chunks = [encode(c) if isinstance(c, str) else tuple(c) for c in chunks]
        self.hold = max((len(x) for x in self.s.stop), default=1) - 1
        self.full = ""      # detokenized output so far (stop string cut off)
        self.sent = 0       # characters of ``full`` already sent
        self.started = False
        self.max_len = max_model_len

    def step(self, ids: Sequence[int]) -> Delta | None:
        """Consume one chunk; the delta for it (None when it added nothing)."""
        new: list[int] = []
        for tid in ids:
            if self.call.finish_reason is not None:
                break
            new.append(tid)
            self._token(tid)
        if not new:
            return None
        return self._delta(new)

    def end(self) -> Delta:
        """The script ran out: an implicit end of sequence."""
        self.call.finish_reason = "stop"
        return self._delta([])

    def _token(self, tid: int) -> None:
        call, s = self.call, self.s
        call.output_ids.append(tid)
        if tid in self.eos or tid in s.stop_token_ids:
            call.finish_reason = "stop"
            call.stop_reason = None if tid in self.eos else tid
            return
        before = len(self.full)
        self.full += self.tok.decode([tid])
        best: tuple[int, str] | None = None
        for stop in s.stop:
            at = self.full.find(stop, max(0, before - len(stop) + 1))
            if at >= 0 and (best is None or at + len(stop) < best[0] + len(best[1])):
                best = (at, stop)
        if best is not None:
            self.full = self.full[: best[0]]
            call.finish_reason, call.stop_reason = "stop", best[1]
        elif (len(call.output_ids) >= s.max_tokens
              or len(call.prompt_ids) + len(call.output_ids) >= self.max_len):
            call.finish_reason = "length"

    def _delta(self, new: list[int]) -> Delta:
        call = self.call
        finished = call.finish_reason is not None
        upto = len(self.full) if finished else max(self.sent, len(self.full) - self.hold)
        text, self.sent = self.full[self.sent:upto], upto
        call.text += text
        first, self.started = not self.started, True
        return Delta(
            index=call.index,
            token_ids=tuple(new),
            text=text,
            finish_reason=call.finish_reason,
            stop_reason=call.stop_reason if finished else None,
            logprobs=_logprobs(new, self.s.logprobs, self.tok),
            prompt_tokens=len(call.prompt_ids) if first else None,
            cached_tokens=call.cached_tokens if first else None,
        )


def _logprobs(ids: Sequence[int], k: int | None, tok: CharTokenizer) -> tuple[TokenLogprob, ...] | None:
    """Deterministic fake logprobs: the token itself heads its top-k list."""
    if k is None or not ids:
        return None
    out = []
    for tid in ids:
        lp = -((tid % 10) / 10)
        text = tok.decode([tid])
        top = ((text, lp), (text + "?", lp - 1.0))[:k]
        out.append(TokenLogprob(text, lp, top))
    return tuple(out)


class ScriptedEngine:
    """Implements :class:`strategies.engine.Engine` from a script."""

    def __init__(self, info: ModelInfo | None = None, script: ScriptFn | Sequence[Output] = (),
                 block_size: int = 1, tokenizer: CharTokenizer | None = None) -> None:
        self.info = info or char_model_info()
        self.tokenizer = tokenizer or CharTokenizer()
        self._script = script
        self._queue = None if callable(script) else list(script)
        self.block_size = block_size
        self.calls: list[Call] = []         # every sample of every request, in order
        self.aborted: list[str] = []        # request ids aborted before they finished
        self.finished: list[str] = []       # request ids that ran to completion
        self.in_flight = 0
        self.max_in_flight = 0
        self._active: set[str] = set()
        self._abort_flags: set[str] = set()
        self._computed: list[tuple[int, ...]] = []

    # -- what tests assert on ---------------------------------------------
    def calls_for(self, request_id: str) -> list[Call]:
        return [c for c in self.calls if c.request_id == request_id]

    @property
    def request_ids(self) -> list[str]:
        return list(dict.fromkeys(c.request_id for c in self.calls))

    # -- the Engine protocol ----------------------------------------------
    async def generate(self, prompt_ids: Sequence[int], sampling: Sampling,
                       request_id: str) -> AsyncIterator[Delta]:
        if request_id in self._active:
            raise ValueError(f"request id {request_id!r} is already running")
        prompt = tuple(prompt_ids)
        if len(prompt) >= self.info.max_model_len:
            raise ValueError(f"prompt of {len(prompt)} tokens does not fit max_model_len")
        if sampling.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        samples = [self._start(prompt, sampling, request_id, i) for i in range(sampling.n)]
        self._active.add(request_id)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        done = False
        try:
            async for delta in self._interleave(samples, request_id):
                yield delta
            done = True
        finally:
            self.in_flight -= 1
            self._active.discard(request_id)
            flagged = request_id in self._abort_flags
            self._abort_flags.discard(request_id)
            for smp in samples:
                out = smp.call.output_ids
                self._computed.append(prompt + tuple(out[:-1]))
            if flagged:
                pass  # abort() was called while it ran, and recorded it
            elif done:
                self.finished.append(request_id)
            else:  # the consumer closed the stream or was cancelled
                self.aborted.append(request_id)

    async def abort(self, request_id: str) -> None:
        if request_id in self._active:
            self._abort_flags.add(request_id)
            self.aborted.append(request_id)

    # -- internals ----------------------------------------------------------
    def _start(self, prompt: tuple[int, ...], sampling: Sampling, request_id: str, i: int) -> _Sample:
        cached = max((_lcp(prompt, done) for done in self._computed), default=0)
        cached = min(cached, len(prompt) - 1)
        cached -= cached % self.block_size
        call = Call(request_id, i, prompt, sampling, max(cached, 0))
        self.calls.append(call)
        one = sampling if sampling.n == 1 else replace(
            sampling, n=1, seed=None if sampling.seed is None else sampling.seed + i)
        output = self._next_output(prompt, one)
        chunks = [output] if isinstance(output, str) else list(output)
        return _Sample(call, self.info.eos_token_ids, chunks, self.info.max_model_len, self.tokenizer)

    def _next_output(self, prompt: tuple[int, ...], sampling: Sampling) -> Output:
        if self._queue is None:
            return self._script(prompt, sampling)  # type: ignore[operator]
        if not self._queue:
            raise AssertionError(f"script exhausted at request {len(self.calls)}")
        return self._queue.pop(0)

    async def _interleave(self, samples: list[_Sample], request_id: str) -> AsyncIterator[Delta]:
        """Round-robin over the samples' chunks, one event-loop turn per delta."""
        positions = [0] * len(samples)
        live = list(range(len(samples)))
        while live:
            for i in list(live):
                await asyncio.sleep(0)
                smp = samples[i]
                if request_id in self._abort_flags:
                    smp.call.finish_reason = "abort"
                    yield Delta(i, (), "", finish_reason="abort")
                    live.remove(i)
                    continue
                if positions[i] < len(smp.chunks):
                    delta = smp.step(smp.chunks[positions[i]])
                    positions[i] += 1
                else:
                    delta = smp.end()
                if delta is not None:
                    yield delta
                if smp.call.finish_reason is not None:
                    live.remove(i)
