"""Which upstream serves an engine request: prefix affinity, bounded load, pins.

- Affinity: the first ``prefix_tokens`` prompt ids are hashed and the upstreams
  ranked by rendezvous (highest random weight) hashing (Thaler & Ravishankar
  1998), so prompts that share a prefix (a system prompt, a conversation's first
  turns) land where that prefix is already in the KV cache, and an upstream
  that leaves or comes back moves only its own share of the keys.
- Load: the best-ranked upstream is passed over while it runs more than
  ``spill`` sequences above the least loaded one (consistent hashing with
  bounded loads, Mirrokni et al. 2018, in its simplest form); the next in rank
  order takes the request, so spilled keys still spread consistently.
- Pins: every engine request of one ponder request (phases, candidates, beams,
  judges, the summary) goes where its first one went, whatever the load, so
  continuations hit the cache they just filled. A pin lives while its
  requests run and ``pin_seconds`` after. A pin whose upstream is not live (taken
  out, or it failed this request before it started) moves with the next request.

Nothing here does I/O; the fleet (remote_fleet.py) says which upstreams are healthy
and how loaded they are.
"""
from __future__ import annotations

import hashlib
import re
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

# Engine request ids are ``<ponder request id>`` + a suffix that starts with "-"
# (strategies/context.py RunContext.sub_id: "-c<choice>[s<candidate>]-<phase>";
# auto's probe "-probe-c..."; server/responses_summary.py "-summary"). The first
# such suffix ends the ponder id. A client's x-request-id may itself contain one:
# then every engine id of that request still shares the same shorter key, since
# each suffix starts with "-".
_SUFFIX = re.compile(r"-(?:c\d+(?:s\d+)?-|probe-|summary$)")


def pin_key(request_id: str) -> str:
    """The ponder request an engine request id belongs to."""
    m = _SUFFIX.search(request_id)
    return request_id[:m.start()] if m else request_id


def prefix_digest(prompt_ids: Sequence[int], prefix_tokens: int) -> bytes:
    """The affinity key: a digest of the first ``prefix_tokens`` ids (all of a shorter prompt)."""
    return hashlib.blake2b(array("q", prompt_ids[:prefix_tokens]).tobytes(), digest_size=16).digest()


def rendezvous(digest: bytes, urls: Sequence[str]) -> list[str]:
    """``urls`` from the highest weight for this key to the lowest."""
    def weight(url: str) -> bytes:
        return hashlib.blake2b(digest + url.encode(), digest_size=8).digest()

    return sorted(urls, key=weight, reverse=True)


class Loaded(Protocol):
    url: str
    in_flight: int


@dataclass
class _Pin:
    url: str
    running: int = 0
    idle_since: float = 0.0


class Affinity:
    """Chooses an upstream per engine request and keeps the pins (one per engine)."""

    def __init__(self, prefix_tokens: int, spill: int, pin_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.prefix_tokens, self.spill, self.pin_seconds, self.clock = prefix_tokens, spill, pin_seconds, clock
        # Idle pins in the order they went idle (oldest first), so expired ones are pruned from the front.
        self._pins: OrderedDict[str, _Pin] = OrderedDict()

    def choose(self, key: str, prompt_ids: Sequence[int], live: Sequence[Loaded]) -> Loaded | None:
        """The upstream for one engine request of ponder request ``key`` among the
        ``live`` ones (healthy, not already tried), or None when there is none. The
        choice is held (``acquire``) until ``release``."""
        if not live:
            return None
        self._prune()
        pin = self._pins.get(key)
        by_url = {u.url: u for u in live}
        if pin is not None and pin.url in by_url:
            return self._acquire(key, by_url[pin.url])
        least = min(u.in_flight for u in live)
        ranked = rendezvous(prefix_digest(prompt_ids, self.prefix_tokens), list(by_url))
        chosen = next(by_url[url] for url in ranked if by_url[url].in_flight <= least + self.spill)
        return self._acquire(key, chosen)

    def release(self, key: str) -> None:
        pin = self._pins.get(key)
        if pin is None:
            return
        pin.running -= 1
        if pin.running <= 0:
            pin.idle_since = self.clock()
            self._pins.move_to_end(key)

    def pinned(self, key: str) -> str | None:
        pin = self._pins.get(key)
        return pin.url if pin is not None else None

    def __len__(self) -> int:
        return len(self._pins)

    def _acquire(self, key: str, upstream: Loaded) -> Loaded:
        pin = self._pins.get(key)
        if pin is None or pin.url != upstream.url:
            pin = self._pins[key] = _Pin(upstream.url, running=(pin.running if pin else 0))
        pin.running += 1
        self._pins.move_to_end(key)
        return upstream

    def _prune(self) -> None:
        """Drop pins idle for ``pin_seconds``. Idle pins sit in the order they went
        idle; a running one met on the way is moved behind them."""
        now = self.clock()
        for _ in range(len(self._pins)):
            key, pin = next(iter(self._pins.items()))
            if pin.running > 0:
                self._pins.move_to_end(key)
            elif now - pin.idle_since >= self.pin_seconds:
                del self._pins[key]
            else:
                return
