"""What a strategy run gets: the engine, the prompt and this choice's ledger."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .engine import Engine, Sampling
from .ledger import Ledger

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
    # The client's sampling settings; phases override max_tokens and stop.
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
        return replace(self.sampling, **changes)  # type: ignore[arg-type]
