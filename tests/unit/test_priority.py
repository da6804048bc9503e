"""Request-level engine priority (server/admission.py engine_priority) and the
client's `priority` field. That every phase of every strategy carries the
request's priority is checked for every strategy run in harness.run_to_end."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.admission import Admission, engine_priority
from server.errors import APIError
from server.planner import plan_request, sampling_for
from server.prepare import check_limits
from server.settings import load_settings
from server.state import AppState
from server.wire import ChatCompletionRequest

CLIENT = st.integers(-(2**20), 2**20)
SEQ = st.integers(1, 2**32 - 1)
INT64 = (-(2**63), 2**63 - 1)


def _req(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": "hi"}], **fields})


@given(CLIENT, SEQ, CLIENT, SEQ)
def test_client_priority_first_then_admission_order(p1: int, s1: int, p2: int, s2: int) -> None:
    a, b = engine_priority(p1, s1), engine_priority(p2, s2)
    assert (a < b) == ((p1, s1) < (p2, s2))
    assert INT64[0] <= a <= INT64[1]  # vLLM sends it to the engine process as a msgpack int64


@pytest.mark.asyncio
async def test_tickets_are_numbered_in_admission_order() -> None:
    adm = Admission(limit=4)
    first, second = adm.admit(2, None), adm.admit(2, None)
    with pytest.raises(APIError):
        adm.admit(1, None)  # refused: takes no number
    first.release()
    third = adm.admit(1, None)
    assert [first.seq, second.seq, third.seq] == [1, 2, 3]
    assert engine_priority(0, second.seq) < engine_priority(0, third.seq)
    second.release()
    third.release()


def test_sampling_carries_the_priority() -> None:
    settings = load_settings()
    req = _req(n=2, seed=5)
    plan = plan_request(req, settings)
    assert [sampling_for(req, plan, i, 42).priority for i in range(2)] == [42, 42]
    assert sampling_for(req, plan, 0).priority == 0


@pytest.mark.parametrize("value", [-(2**20) - 1, 2**20 + 1, 1.5, "1", True])
def test_priority_out_of_range_or_not_an_integer_is_refused(value: Any) -> None:
    with pytest.raises(ValueError):
        _req(priority=value)


@pytest.mark.parametrize("policy, priority, allowed", [
    ("priority", -3, True), ("priority", 0, True), ("fcfs", 0, True), ("fcfs", 2, False)])
def test_client_priority_needs_the_priority_policy(policy: str, priority: int, allowed: bool) -> None:
    # As vLLM's server: a priority other than 0 is an error unless the engine schedules by it.
    state = AppState(load_settings(overrides={"engine": {"scheduling_policy": policy}}), "unused")
    req = _req(priority=priority)
    if allowed:
        check_limits(req, state)
    else:
        with pytest.raises(APIError) as info:
            check_limits(req, state)
        assert info.value.status == 400 and info.value.param == "priority"


def test_the_shipped_policy_is_priority() -> None:
    assert load_settings().engine.scheduling_policy == "priority"
