"""The remote engine (server/engines/remote_engine.py) on fake vLLM 0.32 servers
(tests/unit/fake_vllm.py, over httpx.MockTransport): start-up, streaming, abort,
health, failover, timeouts, errors, affinity and spill-over end to end.

What the fakes cannot show (vLLM's scheduler, its prefix cache, a real process
dying) is for the integration suite on real ``vllm serve`` processes.
"""
from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from scripted_engine import EOS_ID, CharTokenizer, encode

from server.engines.remote_engine import RemoteEngine
from server.settings import RemoteSection, load_settings
from strategies.engine import Delta, EngineRequestFailed, EngineUnavailable, Sampling
from tests.unit.fake_vllm import FakeFleet, FakeVLLM, Reply, reply
from tests.unit.test_remote_affinity import engine_ids

A, B = "http://a:8000", "http://b:8000"
SETTINGS = load_settings()
S = Sampling(max_tokens=16)


def remote(**changes: Any) -> RemoteSection:
    # Health checks only when a test calls check_once; short timeouts so nothing waits long.
    base = {**SETTINGS.remote.model_dump(), "urls": [A, B], "health_interval": 3600.0,
            "first_chunk_timeout": 5.0, "chunk_timeout": 5.0}
    return RemoteSection.model_validate({**base, **changes})


@pytest.fixture
def model_dir(tmp_path: Path) -> str:
    """What ``root`` names: a model folder with its config (the logits' width) and generation config (eos)."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 1000}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [EOS_ID, 7]}))
    return str(tmp_path)


def start(*fakes: FakeVLLM, load: Callable[[str], Any] = lambda source: CharTokenizer(),
          prepare: Callable[[], str] | None = None, **cfg: Any) -> RemoteEngine:
    fleet = FakeFleet(*fakes)
    cfg.setdefault("urls", [f.url for f in fakes])

    def no_prepare() -> str:
        raise AssertionError("ponder's model was prepared though the upstream's could be used")

    return RemoteEngine.start(remote(**cfg), SETTINGS.model, prepare or no_prepare, load=load,
                              transport=fleet.transport(), async_transport=fleet.transport())


@asynccontextmanager
async def running(*fakes: FakeVLLM, **cfg: Any) -> AsyncIterator[RemoteEngine]:
    engine = start(*fakes, **cfg)
    try:
        yield engine
    finally:
        engine.shutdown()
        await asyncio.sleep(0)  # the client's close
        assert engine.num_unfinished_requests() == 0


async def collect(engine: RemoteEngine, prompt: list[int] | tuple[int, ...], sampling: Sampling = S,
                  rid: str = "req-c0-answer") -> list[Delta]:
    return [d async for d in engine.generate(prompt, sampling, rid)]


async def until(cond: Callable[[], bool]) -> None:
    async with asyncio.timeout(2.0):
        while not cond():
            await asyncio.sleep(0.001)


def which(fake_a: FakeVLLM, fake_b: FakeVLLM) -> tuple[FakeVLLM, FakeVLLM]:
    """(the upstream a prompt of [1, 2, 3] prefers, the other one)."""
    from server.engines.remote_affinity import prefix_digest, rendezvous
    first = rendezvous(prefix_digest([1, 2, 3], SETTINGS.remote.affinity_prefix_tokens), [A, B])[0]
    return (fake_a, fake_b) if first == A else (fake_b, fake_a)


# -- start ------------------------------------------------------------------------

def test_start_reads_what_the_fleet_serves(model_dir: str) -> None:
    a = FakeVLLM(A, root=model_dir, max_model_len=4096)
    b = FakeVLLM(B, root="/elsewhere/same-model", max_model_len=2048)
    engine = start(a, b, kv_block_size=128)
    try:
        info = engine.info
        assert (engine.model, info.max_model_len, info.kv_block_size) == ("fake-model", 2048, 128)
        assert info.eos_token_ids == (EOS_ID, 7) and info.vocab_size == 1000
        assert (info.think_open, info.think_close) == (SETTINGS.model.think_open, SETTINGS.model.think_close)
        assert engine.available and all(u.healthy for u in engine.fleet.upstreams)
    finally:
        engine.shutdown()


@pytest.mark.parametrize("setup,error,match", [
    (lambda a, b: (setattr(a, "health", None), setattr(b, "health", None)), RuntimeError, "no upstream answered"),
    (lambda a, b: setattr(b, "model", "other-model"), ValueError, "different models"),
    (lambda a, b: setattr(b, "tokenize_offset", 1), ValueError, "does not match upstream http://b:8000"),
], ids=["none-reachable", "different-models", "tokenizer-mismatch"])
def test_start_refuses_a_fleet_it_cannot_serve_exactly(setup, error: type, match: str) -> None:
    a, b = FakeVLLM(A), FakeVLLM(B)
    setup(a, b)
    with pytest.raises(error, match=match):
        start(a, b)


def test_the_tokenizer_comes_from_the_upstream_s_model_else_from_ponder_s(model_dir: str) -> None:
    tried: list[str] = []

    def load(source: str) -> CharTokenizer:
        tried.append(source)
        if source == model_dir:
            raise OSError("not on this machine")
        return CharTokenizer()

    start(FakeVLLM(A, root=model_dir), load=load, prepare=lambda: "/prepared/smollm2").shutdown()
    assert tried == [model_dir, "/prepared/smollm2"]
    tried.clear()
    start(FakeVLLM(A, root=model_dir), load=load, tokenizer="/configured").shutdown()
    assert tried == ["/configured"]


def test_an_upstream_down_at_start_is_out_until_a_check_passes() -> None:
    a, b = FakeVLLM(A), FakeVLLM(B, health=None)
    engine = start(a, b)
    try:
        assert [u.healthy for u in engine.fleet.upstreams] == [True, False]
        b.health = True
        engine.fleet.check_once()
        assert [u.healthy for u in engine.fleet.upstreams] == [True, True]
    finally:
        engine.shutdown()


# -- streaming ----------------------------------------------------------------------

@pytest.mark.asyncio
async def test_token_ids_in_and_out() -> None:
    a = FakeVLLM(A, script=lambda body, i: Reply([[104, 105], [EOS_ID]]))
    async with running(a) as engine:
        prompt = list(encode("<|user|>hi\n<|assistant|>"))
        deltas = await collect(engine, prompt, Sampling(max_tokens=8, seed=3, stop_token_ids=(9,)))
    (body,) = a.bodies
    assert body["prompt"] == prompt and body["seed"] == 3 and body["stop_token_ids"] == [9]
    assert body["model"] == "fake-model" and body["request_id"] == "req-c0-answer"
    assert [(d.token_ids, d.text, d.finish_reason) for d in deltas] == [((104, 105), "hi", None),
                                                                         ((EOS_ID,), "", "stop")]
    assert deltas[0].prompt_tokens is None and (deltas[1].prompt_tokens, deltas[1].cached_tokens) == (len(prompt), 3)
    assert a.completed == ["req-c0-answer"] and not a.closed_early


@pytest.mark.asyncio
async def test_n_samples_in_one_request_count_as_n_sequences() -> None:
    a = FakeVLLM(A, script=lambda body, i: reply("x" * (i + 1)), gate=asyncio.Event())
    async with running(a) as engine:
        task = asyncio.create_task(collect(engine, [1, 2, 3], Sampling(max_tokens=8, n=3)))
        await until(lambda: a.open_streams == 1)
        assert engine.fleet.upstreams[0].in_flight == 3 and engine.num_unfinished_requests() == 1
        a.gate.set()
        deltas = await task
    assert {d.index for d in deltas if d.finish_reason == "stop"} == {0, 1, 2}
    assert engine.fleet.upstreams[0].in_flight == 0


# -- abort ----------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_closing_the_stream_closes_the_upstream_stream() -> None:
    a = FakeVLLM(A, script=lambda body, i: reply("long answer"), delay=0.005)
    async with running(a) as engine:
        stream = engine.generate([1, 2, 3], S, "req-c0-think")
        first = await anext(stream)
        assert first.token_ids == (ord("l"),)
        await stream.aclose()  # type: ignore[attr-defined]
        assert a.closed_early == ["req-c0-think"] and a.open_streams == 0
        assert engine.num_unfinished_requests() == 0 and engine.fleet.upstreams[0].in_flight == 0


@pytest.mark.asyncio
async def test_abort_ends_every_unfinished_sample_with_abort() -> None:
    a = FakeVLLM(A, script=lambda body, i: reply("a long answer"), delay=0.005)
    async with running(a) as engine:
        stream = engine.generate([1, 2, 3], Sampling(max_tokens=32, n=2), "req-c0-answer")
        await anext(stream)
        await engine.abort("req-c0-answer")
        rest = [d async for d in stream]
        assert rest[-2:] == [Delta(i, (), "", finish_reason="abort", prompt_tokens=3) for i in (0, 1)]
        assert a.closed_early == ["req-c0-answer"]
        await engine.abort("req-c0-answer")  # done already: nothing to do


@pytest.mark.asyncio
async def test_a_cancelled_consumer_closes_the_upstream_stream() -> None:
    a = FakeVLLM(A, script=lambda body, i: reply("a long answer"), delay=0.005)
    got = asyncio.Event()

    async def consume(engine: RemoteEngine) -> None:
        async for _ in engine.generate([1, 2, 3], S, "req-c0-answer"):
            got.set()

    async with running(a) as engine:
        task = asyncio.create_task(consume(engine))
        await got.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert a.closed_early == ["req-c0-answer"] and engine.num_unfinished_requests() == 0


@pytest.mark.asyncio
async def test_a_reused_request_id_runs_twice_and_aborts_both() -> None:
    """A client may send one x-request-id twice at once; vLLM takes both (its own ids get a suffix)."""
    a = FakeVLLM(A, script=lambda body, i: reply("some answer"), delay=0.005)
    async with running(a, urls=[A]) as engine:
        one, two = (engine.generate([1, 2, 3], S, "dup-c0-answer") for _ in range(2))
        await anext(one), await anext(two)
        assert engine.num_unfinished_requests() == 2
        await engine.abort("dup-c0-answer")
        for stream in (one, two):
            assert [d async for d in stream][-1].finish_reason == "abort"
        assert a.closed_early == ["dup-c0-answer"] * 2


# -- health and failover ----------------------------------------------------------------

@pytest.mark.asyncio
async def test_a_failing_upstream_is_taken_out_and_re_admitted() -> None:
    preferred, other = which(FakeVLLM(A), FakeVLLM(B))
    async with running(preferred, other) as engine:
        await collect(engine, [1, 2, 3], rid="r1")
        assert len(preferred.bodies) == 1
        preferred.health = False
        engine.fleet.check_once()
        await collect(engine, [1, 2, 3], rid="r2")
        assert len(preferred.bodies) == 1 and len(other.bodies) == 1
        other.health = None
        engine.fleet.check_once()
        assert not engine.available
        with pytest.raises(EngineUnavailable, match="no upstream can take the request"):
            await collect(engine, [1, 2, 3], rid="r3")
        assert len(preferred.bodies) + len(other.bodies) == 2  # nothing was sent
        preferred.health = True
        engine.fleet.check_once()
        assert engine.available
        await collect(engine, [1, 2, 3], rid="r4")
        assert len(preferred.bodies) == 2  # back where the prefix lives


@pytest.mark.parametrize("down,taken_out", [("refused", True), (503, True), (502, True), (429, False)])
@pytest.mark.asyncio
async def test_a_request_an_upstream_did_not_take_goes_to_the_next(down: str | int, taken_out: bool) -> None:
    preferred, other = which(FakeVLLM(A), FakeVLLM(B))
    if down == "refused":
        preferred.health = None  # gone, and no health check has seen it yet
    else:
        preferred.status = int(down)
    async with running(preferred, other) as engine:
        engine.fleet.upstreams[0].healthy = engine.fleet.upstreams[1].healthy = True
        deltas = await collect(engine, [1, 2, 3])
        assert "".join(d.text for d in deltas) == "ok" and len(other.bodies) == 1
        up = next(u for u in engine.fleet.upstreams if u.url == preferred.url)
        assert up.healthy is not taken_out and up.in_flight == 0


@pytest.mark.parametrize("failure,match", [("cut", "broke off the stream"), ("end", "ended the stream early")])
@pytest.mark.asyncio
async def test_an_upstream_lost_mid_stream_ends_the_request_unavailable(failure: str, match: str) -> None:
    a = FakeVLLM(A, script=lambda body, i: reply("abcdef"), fail_after=2, failure=failure)
    async with running(a, urls=[A]) as engine:
        got: list[Delta] = []
        with pytest.raises(EngineUnavailable, match=match):
            async for d in engine.generate([1, 2, 3], S, "req-c0-answer"):
                got.append(d)
        assert len(got) == 2
        (up,) = engine.fleet.upstreams
        assert not up.healthy and up.in_flight == 0 and not engine.available


@pytest.mark.asyncio
async def test_a_stream_broken_off_after_tokens_is_not_retried() -> None:
    preferred, other = which(FakeVLLM(A), FakeVLLM(B))
    preferred.script, preferred.fail_after, preferred.failure = (lambda body, i: reply("abcdef")), 2, "cut"
    async with running(preferred, other) as engine:
        got: list[Delta] = []
        with pytest.raises(EngineUnavailable, match="broke off the stream"):
            async for d in engine.generate([1, 2, 3], S, "req-c0-answer"):
                got.append(d)
        assert [d.token_ids for d in got] == [(ord("a"),), (ord("b"),)] and not other.bodies
        assert not next(u for u in engine.fleet.upstreams if u.url == preferred.url).healthy


# -- errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("failure,health,error,taken_out", [
    ("error", True, EngineRequestFailed, False),     # the request failed alone; the upstream is fine
    ("error", False, EngineUnavailable, True),       # its engine died with it
    ("error503", True, EngineUnavailable, False),    # vLLM's retryable error
], ids=["500-healthy", "500-dead", "503"])
@pytest.mark.asyncio
async def test_an_error_frame_is_a_failed_request_or_a_dead_upstream(failure: str, health: bool, error: type,
                                                                      taken_out: bool) -> None:
    a = FakeVLLM(A, script=lambda body, i: reply("abc"), fail_after=1, failure=failure)
    async with running(a, urls=[A]) as engine:
        a.health = health  # what a check now would say; none has run
        with pytest.raises(error):
            await collect(engine, [1, 2, 3])
        assert engine.fleet.upstreams[0].healthy is not taken_out


@pytest.mark.asyncio
async def test_an_upstream_refusal_fails_the_request_with_its_message() -> None:
    a = FakeVLLM(A, status=400)
    async with running(a, urls=[A]) as engine:
        with pytest.raises(EngineRequestFailed, match=r"refused the request \(400\): fake refusal 400"):
            await collect(engine, [1, 2, 3])
        assert len(a.bodies) == 1 and engine.available


@pytest.mark.asyncio
async def test_what_the_api_cannot_carry_fails_before_any_request() -> None:
    a = FakeVLLM(A)
    async with running(a, urls=[A]) as engine:
        with pytest.raises(ValueError, match="stop strings"):
            await collect(engine, [1], Sampling(max_tokens=4, stop=tuple("abcde")))
        assert not a.bodies


@pytest.mark.asyncio
async def test_a_frame_that_is_not_json_fails_the_request() -> None:
    a = FakeVLLM(A, script=lambda body, i: reply("abc"), fail_after=1, failure="garbage")
    async with running(a, urls=[A]) as engine:
        with pytest.raises(EngineRequestFailed, match="not JSON"):
            await collect(engine, [1, 2, 3])
        assert engine.available


@pytest.mark.asyncio
async def test_a_shutdown_ends_running_requests_unavailable() -> None:
    a = FakeVLLM(A, script=lambda body, i: reply("abc"), fail_after=1, failure="stall")
    engine = start(a, urls=[A])
    stream = engine.generate([1, 2, 3], S, "req-c0-answer")
    await anext(stream)
    engine.shutdown()
    with pytest.raises(EngineUnavailable, match="shut down"):
        await anext(stream)
    with pytest.raises(EngineUnavailable, match="shut down"):
        await collect(engine, [1])
    assert not engine.alive and not engine.available and a.closed_early == ["req-c0-answer"]
    await asyncio.sleep(0)


def test_the_health_thread_takes_out_and_re_admits_on_its_own() -> None:
    import time
    a, b = FakeVLLM(A), FakeVLLM(B)
    engine = start(a, b, health_interval=0.01)
    try:
        def wait(cond: Callable[[], bool]) -> None:
            end = time.monotonic() + 5
            while not cond():
                assert time.monotonic() < end, [(u.url, u.healthy, u.reason) for u in engine.fleet.upstreams]
                time.sleep(0.005)

        b.health = False
        wait(lambda: not engine.fleet.upstreams[1].healthy)
        assert engine.fleet.upstreams[1].reason == "GET /health answered 503"
        b.health = True
        wait(lambda: engine.fleet.upstreams[1].healthy)
    finally:
        engine.shutdown()


# -- timeouts -------------------------------------------------------------------------------

@pytest.mark.parametrize("fail_after,cfg,match", [
    (0, {"first_chunk_timeout": 0.05}, "no first event within 0.05 s"),
    (1, {"chunk_timeout": 0.05}, "nothing for 0.05 s"),
], ids=["first-chunk", "between-chunks"])
@pytest.mark.asyncio
async def test_silence_past_a_timeout_is_unavailable(fail_after: int, cfg: dict, match: str) -> None:
    a = FakeVLLM(A, script=lambda body, i: reply("abc"), fail_after=fail_after, failure="stall")
    async with running(a, urls=[A], **cfg) as engine:
        with pytest.raises(EngineUnavailable, match=match):
            await collect(engine, [1, 2, 3])
        assert a.closed_early == ["req-c0-answer"] and not engine.fleet.upstreams[0].healthy


@pytest.mark.parametrize("keep_alive,ok", [(0.01, True), (None, False)], ids=["keep-alive", "silent"])
@pytest.mark.asyncio
async def test_keep_alive_comments_count_as_life_between_chunks(keep_alive: float | None, ok: bool) -> None:
    a = FakeVLLM(A, script=lambda body, i: Reply([[97], [98], [EOS_ID]]), delay=0.1, keep_alive=keep_alive)
    async with running(a, urls=[A], first_chunk_timeout=2.0, chunk_timeout=0.05) as engine:
        if ok:
            assert "".join(d.text for d in await collect(engine, [1])) == "ab"
        else:
            with pytest.raises(EngineUnavailable, match="nothing for"):
                await collect(engine, [1])


# -- affinity and load, end to end -----------------------------------------------------------

@pytest.mark.asyncio
async def test_every_engine_request_of_a_ponder_request_goes_to_one_upstream() -> None:
    a, b = FakeVLLM(A), FakeVLLM(B)
    rng = random.Random(1)
    async with running(a, b, spill_threshold=0) as engine:
        for rid in ("0f3c9a1e", "client-c1-x", "q"):
            for eid in engine_ids(rid):  # each with a prompt of its own: no shared prefix to follow
                await collect(engine, [rng.randrange(1000) for _ in range(rng.randrange(1, 300))], rid=eid)
            where = {f.url for f in (a, b) for body in f.bodies if body["request_id"].startswith(rid)}
            assert len(where) == 1, (rid, where)


@pytest.mark.asyncio
async def test_shared_prefixes_meet_and_different_ones_spread() -> None:
    a, b = FakeVLLM(A), FakeVLLM(B)
    system = list(range(500, 756))  # 256 tokens, the default affinity prefix
    rng = random.Random(2)
    async with running(a, b) as engine:
        for i in range(10):
            await collect(engine, system + [rng.randrange(1000) for _ in range(20)], rid=f"s{i}-c0-answer")
        assert sorted((len(a.bodies), len(b.bodies))) == [0, 10]
        for i in range(40):
            await collect(engine, [rng.randrange(1000) for _ in range(30)], rid=f"d{i}-c0-answer")
        assert min(len(a.bodies), len(b.bodies)) >= 10


@pytest.mark.asyncio
async def test_a_busy_upstream_spills_new_requests_to_the_other() -> None:
    preferred, other = which(FakeVLLM(A), FakeVLLM(B))
    gate = asyncio.Event()
    preferred.gate = other.gate = gate
    async with running(preferred, other, spill_threshold=1) as engine:
        tasks = [asyncio.create_task(collect(engine, [1, 2, 3], rid=f"r{i}-c0-answer")) for i in range(2)]
        await until(lambda: preferred.open_streams == 2)  # 0 then 1 in flight: within the threshold
        third = asyncio.create_task(collect(engine, [1, 2, 3], rid="r2-c0-answer"))
        await until(lambda: other.open_streams == 1)  # 2 > 0 + 1: spilled
        later = asyncio.create_task(collect(engine, [1, 2, 3, 4], rid="r0-c0-judge1"))  # r0's: pinned, busy or not
        await until(lambda: preferred.open_streams == 3)
        gate.set()
        await asyncio.gather(*tasks, third, later)
    assert [b["request_id"] for b in other.bodies] == ["r2-c0-answer"]


# -- a strategy over the remote engine -------------------------------------------------------

@pytest.mark.asyncio
async def test_a_strategy_runs_over_the_remote_engine_on_one_upstream() -> None:
    from strategies.events import Answer
    from strategies.runner import RunPlan
    from tests.unit.harness import P, contexts, make_plan, text_of

    a, b = (FakeVLLM(url, script=lambda body, i: reply("42"), cached_tokens=5) for url in (A, B))
    async with running(a, b) as engine:
        plan = make_plan("self_consistency", samples=3, max_tokens=16)
        run = RunPlan(plan, 2, contexts(engine, P, 16))  # type: ignore[arg-type]
        async with run as items:
            events = [e async for e in items]
    assert text_of(events, Answer, 0) == "42" and text_of(events, Answer, 1) == "42"
    bodies = a.bodies + b.bodies
    assert len(bodies) == 6 and min(len(a.bodies), len(b.bodies)) == 0  # "req": one upstream
    assert all(body["prompt"] == list(P) for body in bodies)
    usage = run.result
    assert (usage.completion_tokens, usage.engine_requests) == (6 * 3, 6)  # "42" + eos, per candidate
    assert (usage.cached_tokens, usage.engine_cached_tokens, usage.engine_prompt_tokens) == (5, 30, 6 * len(P))
