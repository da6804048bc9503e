"""What a strategy run gets: the engine, the prompt and this choice's ledger."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .engine import Engine, Sampling
from .ledger import Ledger
from .output import PLAIN, OutputFormat
from .tools import CodeRunner

if TYPE_CHECKING:
    from .events import Event
    from .plan import Plan

# Runs any plan (the registry's lookup, handed in by the runner so that a
# strategy which runs another one, like ``auto``, needs no import of the registry).
Dispatch = Callable[["RunContext", "Plan"], AsyncIterator["Event"]]


@dataclass(frozen=True)
class RunContext:
    engine: Engine
    # The client's conversation, rendered by the chat template, as token ids.
    prompt_ids: tuple[int, ...]
    # Ids the server appends to open a thinking block (empty when the chat
    # template already opened it, or the model opens it itself).
    think_prefix_ids: tuple[int, ...]
    # Ids that close a thinking block the model did not close itself.
    think_suffix_ids: tuple[int, ...]
    # The client's sampling settings. Phases derive theirs through the three
    # methods below, which hold the rule of which phase gets which field.
    sampling: Sampling
    request_id: str
    choice: int
    ledger: Ledger
    # Set for a candidate of a parallel strategy ("s3"): part of its engine ids.
    tag: str = ""
    # Token ids that end the assistant turn, add a user turn with this text and
    # open the next assistant turn (the chat template's follow-up); for judges
    # and critique rounds.
    followup: Callable[[str], tuple[int, ...]] | None = None
    dispatch: Dispatch | None = None
    # What the answer must look like (JSON, tool calls); answer phases take its constraint.
    output: OutputFormat = PLAIN
    # The code interpreter (the server's sandbox), for strategies that run code.
    code: CodeRunner | None = None

    def sub_id(self, name: str) -> str:
        """A unique engine request id for one phase of this choice (or candidate)."""
        return f"{self.request_id}-c{self.choice}{self.tag}-{name}"

    def room(self, prompt_len: int, limit: int, reserve: int = 0) -> int:
        """Tokens the next engine request may generate: at most ``limit``, within
        what ``budget_tokens`` has left, and within the context window after
        ``prompt_len`` prompt tokens and ``reserve`` tokens that must still fit
        after it (ids the server will insert, the answer's first token)."""
        return self.ledger.cap(min(limit, self.engine.info.max_model_len - prompt_len - reserve))

    def candidate(self, k: int, budget: int | None, logprobs: int | None = None) -> RunContext:
        """The context of candidate ``k``: its own seed, ids and budget share.

        Its ledger charges this choice's ledger too, so usage counts every
        candidate; ``budget`` is its share of ``budget_tokens``.
        """
        seed = self.sampling.seed
        sampling = replace(
            self.sampling,
            seed=None if seed is None else (seed * 1_000_003 + k) % (2**63),
            logprobs=logprobs if logprobs is not None else self.sampling.logprobs,
        )
        return replace(self, sampling=sampling, tag=f"s{k}", ledger=self.ledger.child(budget))

    def phase_sampling(self, **changes: object) -> Sampling:
        """An answer phase (an answer, a candidate's answer, a revision's draft or
        revision, a beam step): all of the client's sampling, stop strings and ids and
        ``min_tokens`` included, and the answer format's constraint, with ``changes``."""
        return replace(self.sampling, **{"structured": self.output.structured, **changes})  # type: ignore[arg-type]

    def reasoning_sampling(self, **changes: object) -> Sampling:
        """A phase whose tokens are reasoning (thinking, a revision's critique): the
        client's distribution (temperature, top_p, top_k, min_p, penalties,
        logit_bias: a banned token is banned in the thinking the client reads too),
        without what ends or lengthens the answer (stop strings and ids, ``min_tokens``)."""
        return replace(self.sampling, **{"stop": (), "stop_token_ids": (), "min_tokens": 0,  # type: ignore[arg-type]
                                         "structured": None, **changes})

    def internal_sampling(self, max_tokens: int, **changes: object) -> Sampling:
        """A phase a strategy runs for itself and the client never reads (a judge):
        none of the client's sampling, so a bias or penalty meant for the answer
        cannot skew a score; only the request's engine priority is kept."""
        return Sampling(max_tokens=max_tokens, priority=self.sampling.priority, **changes)  # type: ignore[arg-type]
