"""Which upstream the remote engine picks (server/engines/remote_affinity.py): one
ponder request's engine requests stay together, a shared prefix finds the same
upstream, keys spread, load spills over, pins expire."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, replace

import pytest

from server.engines.remote_affinity import Affinity, pin_key, prefix_digest, rendezvous
from strategies.context import RunContext
from strategies.engine import Sampling
from strategies.ledger import Ledger

URLS = ("http://a:8000", "http://b:8000", "http://c:8000")


@dataclass
class Up:
    url: str
    in_flight: int = 0


def ups(*loads: int) -> list[Up]:
    return [Up(url, load) for url, load in zip(URLS, loads)]


def _ctx(rid: str, choice: int = 0) -> RunContext:
    return RunContext(engine=None, prompt_ids=(), think_prefix_ids=(), think_suffix_ids=(),  # type: ignore[arg-type]
                      sampling=Sampling(max_tokens=1), request_id=rid, choice=choice, ledger=Ledger(0))


def engine_ids(rid: str) -> list[str]:
    """The engine request ids ponder makes for one request: every phase, candidate,
    judge and probe of two choices (strategies/context.py sub_id, auto's probe),
    and the Responses summary (server/responses_summary.py)."""
    out = [f"{rid}-summary"]
    for choice in (0, 11):
        ctx = _ctx(rid, choice)
        out += [ctx.sub_id(n) for n in ("think", "think2", "answer", "judge3", "critique1", "step2-e1")]
        out += [ctx.candidate(k, None).sub_id(n) for k in (0, 12) for n in ("think", "answer", "judge0")]
        out.append(replace(ctx, request_id=f"{rid}-probe").sub_id("probe1"))
    return out


# Ponder's ids: a uuid hex, or the client's x-request-id ([A-Za-z0-9._:-]{1,128}),
# including ones that look like ponder's own suffixes.
RIDS = ["0f3c9a1e2b7d4c6f8e5a9b0c1d2e3f40", "req-1", "a-c1", "a-c1-x", "x-c2s3", "job-c", "q-probe",
        "z-summary", "a-c0-think", "-c1-", "w:1.2_3"]


@pytest.mark.parametrize("rid", RIDS)
def test_every_engine_request_of_a_ponder_request_has_one_key(rid: str) -> None:
    keys = {pin_key(e) for e in engine_ids(rid)}
    assert len(keys) == 1, keys
    (key,) = keys
    assert rid.startswith(key)


def test_different_ponder_requests_have_different_keys() -> None:
    plain = [r for r in RIDS if pin_key(r + "-c0-think") == r]
    assert len({pin_key(f"{r}-c0-think") for r in plain}) == len(plain)
    assert pin_key("0f3c-c0-answer") == "0f3c" and pin_key("0f3c") == "0f3c"


def test_rendezvous_is_stable_and_moves_only_a_removed_upstream_s_keys() -> None:
    rng = random.Random(0)
    digests = [prefix_digest([rng.randrange(50_000) for _ in range(40)], 32) for _ in range(600)]
    first = {d: rendezvous(d, URLS)[0] for d in digests}
    assert first == {d: rendezvous(d, list(reversed(URLS)))[0] for d in digests}  # order of the list is irrelevant
    shares = Counter(first.values())
    assert all(150 <= shares[u] <= 250 for u in URLS), shares  # 200 each on average
    without_c = {d: rendezvous(d, URLS[:2])[0] for d in digests}
    moved = [d for d in digests if first[d] != without_c[d]]
    assert moved and all(first[d] == URLS[2] for d in moved)


def test_the_same_prefix_finds_the_same_upstream_and_the_tail_does_not_matter() -> None:
    aff = Affinity(prefix_tokens=8, spill=100, pin_seconds=0)
    system = list(range(100, 108))
    picks = set()
    for i in range(20):
        up = aff.choose(f"r{i}", system + [i, i + 1, i + 2], ups(0, 0, 0))
        aff.release(f"r{i}")
        picks.add(up.url)
    assert len(picks) == 1
    assert prefix_digest(system + [1], 8) == prefix_digest(system + [2, 3], 8)
    assert prefix_digest([1, 2], 8) != prefix_digest([1, 2, 3], 8)  # a shorter prompt: all of it


def test_a_busy_upstream_spills_to_the_next_in_rank() -> None:
    prompt = [1, 2, 3]
    ranked = rendezvous(prefix_digest(prompt, 256), URLS)
    load = {url: 0 for url in URLS}
    aff = Affinity(prefix_tokens=256, spill=4, pin_seconds=0)

    def pick(key: str) -> str:
        up = aff.choose(key, prompt, [Up(u, load[u]) for u in URLS])
        aff.release(key)
        return up.url

    load[ranked[0]] = 4  # at the threshold: still the preferred one
    assert pick("k1") == ranked[0]
    load[ranked[0]] = 5  # above it: the next in rank, not just any
    assert pick("k2") == ranked[1]
    load[ranked[1]] = 9
    assert pick("k3") == ranked[2]


def test_a_pinned_request_stays_even_on_a_busy_upstream() -> None:
    now = [0.0]
    aff = Affinity(prefix_tokens=4, spill=0, pin_seconds=30, clock=lambda: now[0])
    first = aff.choose("r", [1, 2, 3], ups(0, 0, 0))
    loaded = [Up(u.url, 50 if u.url == first.url else 0) for u in ups(0, 0, 0)]
    # A later phase has a longer prompt (a different prefix) and its upstream is busy: it stays.
    assert aff.choose("r", [9, 9, 9, 9, 9], loaded).url == first.url
    aff.release("r")
    aff.release("r")
    now[0] = 29.0
    assert aff.choose("r", [9, 9, 9, 9, 9], loaded).url == first.url  # idle, but within pin_seconds
    aff.release("r")
    now[0] = 60.0
    other = Affinity(prefix_tokens=4, spill=0, pin_seconds=30).choose("x", [9, 9, 9, 9, 9], loaded)
    assert aff.choose("r", [9, 9, 9, 9, 9], loaded).url == other.url  # expired: chosen afresh
    assert aff.pinned("r") == other.url


def test_a_pin_moves_when_its_upstream_is_not_live_and_keeps_its_count() -> None:
    aff = Affinity(prefix_tokens=4, spill=0, pin_seconds=0)
    first = aff.choose("r", [1, 2], ups(0, 0, 0))  # still running
    rest = [u for u in ups(0, 0, 0) if u.url != first.url]
    moved = aff.choose("r", [1, 2], rest)
    assert moved.url != first.url and aff.pinned("r") == moved.url
    aff.release("r")  # the first request ends: the pin lives on for the second
    assert aff.choose("q", [7], ups(0, 0, 0)) is not None  # a prune pass
    assert aff.pinned("r") == moved.url
    aff.release("r")
    aff.choose("q", [7], ups(0, 0, 0))
    assert aff.pinned("r") is None and len(aff) == 1


def test_nothing_live_is_none() -> None:
    assert Affinity(4, 0, 0).choose("r", [1], []) is None
