"""The rest of the sampling surface (issue 12): ``logit_bias``, ``top_k``, ``min_p``,
``repetition_penalty``, ``min_tokens`` and ``stop_token_ids`` reach the engine in
the phases they belong to and in no other, and a bad value is a 400 naming it.

The phase rule (strategies/context.py; README, "The API"):

- what shapes the distribution (temperature, top_p, top_k, min_p, the penalties,
  logit_bias) goes to every phase whose tokens the client reads: thinking,
  answers, candidates, revision turns, beam steps, and auto's probe, which
  measures agreement under the sampling the chosen plan will use;
- what ends or lengthens the answer (stop strings, stop_token_ids, min_tokens)
  goes to answer phases only: not to thinking or a critique; auto's probe keeps
  the stops but not min_tokens; a beam step owes what is left of min_tokens;
- a judge gets none of the client's sampling.
"""
from __future__ import annotations

import re
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from scripted_engine import EOS, Output, ScriptedEngine, char_model_info

from server.app import create_app
from server.errors import APIError
from server.planner import check_token_ids, plan_request, sampling_for
from server.prompt import Renderer, followup_renderer
from server.settings import load_settings
from server.state import AppState
from server.wire import MAX_TOKEN_IDS, ChatCompletionRequest
from strategies import registry
from strategies.engine import Sampling
from strategies.events import Answer, ChoiceDone
from strategies.plan import Plan
from strategies.tools import CodeResult
from tests.unit.harness import CLOSE, P, contexts, followup, make_plan, run_to_end, text_of, trace_of

QUESTION = "Is it right?"
D = "\n\n"
# The client's sampling, every field off its default, so a phase that dropped one
# (or got one it must not) shows.
CLIENT: dict[str, Any] = dict(
    temperature=0.7, top_p=0.9, top_k=5, min_p=0.25, presence_penalty=0.5, frequency_penalty=0.25,
    repetition_penalty=1.3, logit_bias=((7, -100.0), (65, 2.5)),
    stop=("STOP",), stop_token_ids=(1,), min_tokens=3)
SHAPE = ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
         "repetition_penalty", "logit_bias")
ENDS = ("stop", "stop_token_ids", "min_tokens")
DEFAULT = Sampling(max_tokens=1)


class _Runner:
    """A code runner that prints 42 (tool_use's program runs are not sampling)."""

    async def run(self, code: str, *, timeout: float | None = None) -> CodeResult:  # noqa: ASYNC109
        return CodeResult(0, "42\n", "", None, 0.0)


def model(prompt: tuple[int, ...], s: Sampling) -> Output:
    """Thinking ends at once, a judge says "Y", everything else answers 42."""
    if "</think>" in s.stop:
        return ["hmm", [CLOSE]]
    if "```" in s.stop:  # a tool_use code step
        return ["print(42)\n```"]
    if prompt[-len(followup(QUESTION)):] == followup(QUESTION):
        return ["Y"]
    return ["42", EOS]


def role(request_id: str) -> str:
    """What an engine request is to the client: "judge", "probe", "reasoning" or "answer"."""
    if "-judge" in request_id:
        return "judge"
    if "-probe-c" in request_id:
        return "probe"
    if re.search(r"-(think\d*|critique\d+|code\d+)$", request_id):
        return "reasoning"
    return "answer"


def expected(role: str, sampling: Sampling) -> dict[str, Any]:
    """What the engine must have been given, field by field, for a request of ``role``."""
    if role == "judge":
        return {**{f: getattr(DEFAULT, f) for f in SHAPE + ENDS}, "temperature": 0.0}
    want = {f: CLIENT[f] for f in SHAPE}
    if role == "reasoning":  # thinking stops at its tag, a code step at its fence, a critique at nothing of the client's
        own = tuple(s for s in sampling.stop if s in ("</think>", "```", "```python"))
        assert own == sampling.stop, "no stop string of the client's in a reasoning phase"
        return {**want, "stop": own, "stop_token_ids": (), "min_tokens": 0}
    if role == "probe":
        return {**want, "stop": CLIENT["stop"], "stop_token_ids": CLIENT["stop_token_ids"], "min_tokens": 0}
    # An answer: a beam step also stops at the step delimiter.
    stop = (D, *CLIENT["stop"]) if D in sampling.stop else CLIENT["stop"]
    return {**want, "stop": stop, "stop_token_ids": CLIENT["stop_token_ids"], "min_tokens": CLIENT["min_tokens"]}


THINKING = dict(thinking=True, max_thinking_tokens=20, max_tokens=100)
PLANS: dict[str, tuple[Plan, set[str]]] = {
    # strategy: (plan, the roles of its engine requests)
    "single": (make_plan("single", **THINKING), {"reasoning", "answer"}),
    # min 10 thinking tokens, one "Wait": two thinking requests.
    "budget_forcing": (make_plan("budget_forcing", **THINKING, min_thinking_tokens=10, max_continuations=1),
                       {"reasoning", "answer"}),
    "self_consistency": (make_plan("self_consistency", **THINKING, samples=2), {"reasoning", "answer"}),
    "best_of_n": (make_plan("best_of_n", **THINKING, samples=2, scorer="self_judge", judge_question=QUESTION),
                  {"reasoning", "answer", "judge"}),
    # The critique finds nothing to stop on: draft, critique, revision.
    "revision": (make_plan("revision", **THINKING, rounds=1, critique_prompt="Check.", revise_prompt="Fix.",
                           critique_ok=""), {"reasoning", "answer"}),
    "beam_search": (make_plan("beam_search", max_tokens=100, beam_width=1, max_steps=1, expansions=2,
                              step_tokens=20, step_delimiter=D, judge_question=QUESTION), {"answer", "judge"}),
    # One program, then the answer: the code step is reasoning.
    "tool_use": (make_plan("tool_use", **THINKING, mode="pal"), {"reasoning", "answer"}),
    "auto": (make_plan("auto", **THINKING, probe_samples=3, probe_tokens=12,
                       levels=tuple((level, make_plan("single", **THINKING)) for level in ("easy", "medium", "hard"))),
             {"probe", "reasoning", "answer"}),
}


def test_every_strategy_has_a_case() -> None:
    # A new strategy decides what its phases take of the client's sampling (through
    # RunContext's phase_sampling / reasoning_sampling / internal_sampling), and says so
    # here: a case in PLANS, and its engine request names in role().
    missing = sorted(set(registry.IMPLEMENTED) - set(PLANS))
    assert not missing, f"no sampling-fields case for {missing}: add one to PLANS"


@pytest.mark.parametrize("name", list(PLANS))
@pytest.mark.asyncio
async def test_each_phase_gets_the_fields_it_should(name: str) -> None:
    plan, roles = PLANS[name]
    engine = ScriptedEngine(char_model_info(), model)
    make = contexts(engine, P, plan.max_tokens, seed=0, followup=followup, code=_Runner(), **CLIENT)
    engine, events, _ = await run_to_end(engine, plan, 1, make)
    seen = {role(c.request_id) for c in engine.calls}
    assert seen == roles, [c.request_id for c in engine.calls]
    if name == "revision":
        assert any(c.request_id.endswith("-critique0") for c in engine.calls)
    if name == "budget_forcing":
        assert sum(role(c.request_id) == "reasoning" for c in engine.calls) == 2
    for c in engine.calls:
        r = role(c.request_id)
        got = {f: getattr(c.sampling, f) for f in SHAPE + ENDS}
        assert got == expected(r, c.sampling), (c.request_id, r)
    assert text_of(events, Answer).strip() == "42"


# -- beam_search: min_tokens over the whole answer; the client's stops end the beam ---------

class StepEngine(ScriptedEngine):
    """Beam expansions say ``steps[i]`` at step i; judges say "Y"."""

    def __init__(self, steps: list[Output]) -> None:
        super().__init__(char_model_info(), self.say)
        self.steps = steps

    def say(self, prompt: tuple[int, ...], s: Sampling) -> Output:
        rid = self.calls[-1].request_id
        if "-judge" in rid:
            return ["Y"]
        step = int(re.search(r"-s(\d+)b\d+e\d+$", rid).group(1))  # type: ignore[union-attr]
        return self.steps[step]


BEAM = make_plan("beam_search", max_tokens=100, beam_width=1, max_steps=3, expansions=1, step_tokens=20,
                 step_delimiter=D, judge_question=QUESTION)


async def _beam(steps: list[Output], **client: Any):
    engine = StepEngine(steps)
    make = contexts(engine, P, BEAM.max_tokens, seed=0, followup=followup, **client)
    engine, events, _ = await run_to_end(engine, BEAM, 1, make)
    expansions = [c for c in engine.calls if "-judge" not in c.request_id]
    return engine, events, expansions


@pytest.mark.asyncio
async def test_a_beam_step_owes_what_is_left_of_min_tokens() -> None:
    # Step 0 makes 4 tokens ("ab" + the delimiter), step 1 makes 9, step 2 ends.
    _, events, expansions = await _beam(["ab" + D, "cdefghi" + D, ["end", EOS]], min_tokens=10)
    assert [c.sampling.min_tokens for c in expansions] == [10, 6, 0]
    assert text_of(events, Answer) == "ab" + D + "cdefghi" + D + "end"


@pytest.mark.parametrize("end,stop_reason", [(["xy", "STOP", "junk"], "STOP"), (["xy", [1]], 1)],
                         ids=["stop-string", "stop-token-id"])
@pytest.mark.asyncio
async def test_a_client_stop_ends_the_beam(end: Output, stop_reason: str | int) -> None:
    # Before issue 12 a beam step stopped at the delimiter only: the client's stop
    # strings were dropped and a stop id ended a step, not the answer.
    _, events, expansions = await _beam(["ab" + D, end, ["never", EOS]], stop=("STOP",), stop_token_ids=(1,))
    assert len(expansions) == 2  # no step after the stop
    assert [c.sampling.stop for c in expansions] == [(D, "STOP")] * 2
    assert expansions[-1].stop_reason == stop_reason
    answer = text_of(events, Answer)
    assert answer.startswith("ab" + D + "xy") and "STOP" not in answer and "never" not in answer
    done = [e for e in events if isinstance(e, ChoiceDone)][0]
    assert done.finish_reason == "stop" and trace_of(events)["finished"] is True


@pytest.mark.asyncio
async def test_a_client_stop_equal_to_the_delimiter_ends_the_beam() -> None:
    _, events, expansions = await _beam(["ab" + D, ["never", EOS]], stop=(D,))
    assert len(expansions) == 1 and expansions[0].sampling.stop == (D,)
    assert text_of(events, Answer) == "ab"  # a stop string is not part of the answer


# -- the planner: the request's fields into the choice's Sampling, and min_tokens --------

SETTINGS = load_settings(overrides={"defaults": {"max_tokens": 1024, "max_thinking_tokens": 512,
                                                 "answer_reserve": 128}})


def req(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields})


def test_sampling_for_carries_every_field() -> None:
    r = req(top_k=5, min_p=0.25, repetition_penalty=1.3, logit_bias={"65": 2.5, "7": -100}, min_tokens=3,
            stop_token_ids=[1, 2], max_tokens=50)
    s = sampling_for(r, plan_request(r, SETTINGS), 0)
    assert (s.top_k, s.min_p, s.repetition_penalty, s.min_tokens, s.stop_token_ids) == (5, 0.25, 1.3, 3, (1, 2))
    assert s.logit_bias == ((7, -100.0), (65, 2.5))  # by token id: one request, one Sampling
    hash(s)  # frozen and hashable, logit_bias included


def test_sampling_for_defaults_are_off() -> None:
    r = req()
    s = sampling_for(r, plan_request(r, SETTINGS), 0)
    assert {f: getattr(s, f) for f in SHAPE[2:] + ENDS} == {f: getattr(DEFAULT, f) for f in SHAPE[2:] + ENDS}
    assert (s.top_k, s.min_p, s.repetition_penalty, s.logit_bias, s.min_tokens) == (0, 0.0, 1.0, (), 0)


@pytest.mark.parametrize("top_k", [-1, 0])
def test_top_k_minus_one_and_zero_are_off(top_k: int) -> None:
    r = req(top_k=top_k)
    assert sampling_for(r, plan_request(r, SETTINGS), 0).top_k == 0


@pytest.mark.parametrize("fields", [{"max_tokens": 10, "min_tokens": 11}, {"max_completion_tokens": 10,
                                                                          "min_tokens": 11},
                                    {"min_tokens": 1_000_000}], ids=["max_tokens", "max_completion_tokens",
                                                                    "default-max-tokens"])
def test_min_tokens_above_max_tokens_is_400(fields: dict[str, Any]) -> None:
    with pytest.raises(APIError) as info:
        plan_request(req(**fields), SETTINGS)
    assert (info.value.status, info.value.param) == (400, "min_tokens")


def test_min_tokens_equal_to_max_tokens_plans() -> None:
    plan = plan_request(req(max_tokens=10, min_tokens=10), SETTINGS)
    assert plan.max_tokens == 10


def test_min_tokens_raises_the_answer_reserve() -> None:
    # 300 tokens, a soft thinking cap of 256: the usual reserve (128) leaves 172 to
    # think; a floor of 200 answer tokens leaves 100.
    base = {"max_tokens": 300, "thinking": {"type": "enabled", "budget_tokens": 256}}
    assert plan_request(req(**base), SETTINGS).max_thinking_tokens == 172
    plan = plan_request(req(**base, min_tokens=200), SETTINGS)
    assert plan.max_thinking_tokens == 100 and plan.adjusted
    # An explicit cap that cannot fit beside the floor is refused, naming the cap.
    with pytest.raises(APIError) as info:
        plan_request(req(max_tokens=300, min_tokens=200, reasoning={"max_thinking_tokens": 150}), SETTINGS)
    assert info.value.param == "reasoning.max_thinking_tokens"


def test_token_ids_are_checked_against_the_vocabulary() -> None:
    check_token_ids(req(logit_bias={"99": 1}, stop_token_ids=[0, 99]), 100)
    check_token_ids(req(logit_bias={"100": 1}, stop_token_ids=[100]), None)  # vocabulary unknown
    with pytest.raises(APIError) as info:
        check_token_ids(req(logit_bias={"5": 1, "100": 1}), 100)
    assert (info.value.status, info.value.param) == (400, "logit_bias[100]")
    with pytest.raises(APIError) as info:
        check_token_ids(req(stop_token_ids=[5, 100]), 100)
    assert (info.value.status, info.value.param) == (400, "stop_token_ids[1]")


# -- through the HTTP app, on the scripted engine -----------------------------------

class _Served(ScriptedEngine):
    alive = True
    available = True

    def num_unfinished_requests(self) -> int:
        return self.in_flight

    def shutdown(self) -> None:
        pass


VOCAB = 1000


@pytest.fixture
def served() -> tuple[TestClient, _Served]:
    """The app as ``ponder serve`` builds it, on a scripted engine whose vocabulary has
    ``VOCAB`` ids (what the engine start sets up is set here; no lifespan)."""
    state = AppState(load_settings(), "unused")
    engine = _Served(char_model_info(vocab_size=VOCAB), model)
    cfg = state.settings.model
    state.renderer = Renderer.build(engine.tokenizer, cfg.think_open, cfg.think_close, cfg.native_thinking,
                                    cfg.chat_template_kwargs)
    state.followup = followup_renderer(engine.tokenizer, cfg.chat_template_kwargs)
    state.engine = engine
    return TestClient(create_app(state, lambda: engine)), engine


def _body(**fields: Any) -> dict[str, Any]:
    return {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64,
            **fields}


WIRE = {"temperature": 0.7, "top_p": 0.9, "top_k": 5, "min_p": 0.25, "presence_penalty": 0.5,
        "frequency_penalty": 0.25, "repetition_penalty": 1.3, "logit_bias": {"65": 2.5, "7": -100},
        "stop": "STOP", "stop_token_ids": [1], "min_tokens": 3}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_the_fields_reach_the_engine_through_the_server(served: tuple[TestClient, _Served], stream: bool) -> None:
    http, engine = served
    r = http.post("/v1/chat/completions", json=_body(**WIRE, stream=stream,
                                                      thinking={"type": "enabled", "budget_tokens": 16}))
    assert r.status_code == 200, r.text
    roles = [role(c.request_id) for c in engine.calls]
    assert roles[0] == "reasoning" and roles[-1] == "answer", [c.request_id for c in engine.calls]
    for c, r_ in zip(engine.calls, roles):
        assert {f: getattr(c.sampling, f) for f in SHAPE + ENDS} == expected(r_, c.sampling), c.request_id


BAD = [
    ("logit_bias", {"5": 101}), ("logit_bias", {"5": -100.5}), ("logit_bias", {"-1": 1}),
    ("logit_bias", {"x": 1}), ("logit_bias", {"05": 1}), ("logit_bias", {"5": "1"}), ("logit_bias", {"5": True}),
    ("logit_bias", [5]), ("logit_bias", "5"), ("logit_bias", {str(i): 1 for i in range(MAX_TOKEN_IDS + 1)}),
    ("logit_bias", {str(VOCAB): 1}),  # outside the vocabulary
    ("top_k", -2), ("top_k", 1.5), ("top_k", "5"), ("top_k", True), ("top_k", 2**31),
    ("min_p", -0.1), ("min_p", 1.01), ("min_p", "0.5"), ("min_p", False),
    ("repetition_penalty", 0), ("repetition_penalty", -1), ("repetition_penalty", 2.01), ("repetition_penalty", "1"),
    ("min_tokens", -1), ("min_tokens", 1.5), ("min_tokens", None), ("min_tokens", "3"), ("min_tokens", 65),
    ("stop_token_ids", [-1]), ("stop_token_ids", ["1"]), ("stop_token_ids", 5), ("stop_token_ids", [1.5]),
    ("stop_token_ids", [True]), ("stop_token_ids", list(range(MAX_TOKEN_IDS + 1))), ("stop_token_ids", [VOCAB]),
]


@pytest.mark.parametrize("field,value", BAD, ids=[f"{f}={str(v)[:20]}" for f, v in BAD])
def test_bad_value_is_400_naming_the_field(served: tuple[TestClient, _Served], field: str, value: Any) -> None:
    http, engine = served
    r = http.post("/v1/chat/completions", json=_body(**{field: value}))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    assert err["param"].split("[")[0].split(".")[0] == field, err
    assert err["message"] and not engine.calls


GOOD = [("top_k", -1), ("top_k", 0), ("top_k", 2**31 - 1), ("min_p", 0), ("min_p", 1), ("repetition_penalty", 2),
        ("min_tokens", 64), ("stop_token_ids", [VOCAB - 1]), ("stop_token_ids", None),
        ("logit_bias", {str(VOCAB - 1): 100, "0": -100}), ("logit_bias", None), ("logit_bias", {})]


@pytest.mark.parametrize("field,value", GOOD, ids=[f"{f}={str(v)[:20]}" for f, v in GOOD])
def test_edge_values_are_served(served: tuple[TestClient, _Served], field: str, value: Any) -> None:
    http, engine = served
    r = http.post("/v1/chat/completions", json=_body(**{field: value}))
    assert r.status_code == 200, r.text
    assert engine.calls


# -- the OpenAPI schema says what the server accepts --------------------------------

SAMPLES: dict[str, list[Any]] = {
    "logit_bias": [{"5": 1}, {"0": -100, "49151": 100}, {"5": 101}, {"-1": 1}, {"05": 1}, {"x": 1}, {"5": "1"},
                   {str(i): 0 for i in range(MAX_TOKEN_IDS + 1)}, None, [1]],
    "top_k": [-1, 0, 1, 2**31 - 1, 2**31, -2, 1.5, 2.0, None, "1"],
    "min_p": [0, 0.5, 1, -0.1, 1.1, None, "0.5"],
    "repetition_penalty": [0.1, 1, 2, 0, 2.1, -1, None],
    "min_tokens": [0, 5, 1_000_000, 1_000_001, -1, None, 1.5],
    "stop_token_ids": [[], [0, 5], None, [-1], ["1"], [1.5], 3, list(range(MAX_TOKEN_IDS + 1))],
}


def _accepted(field: str, value: Any) -> bool:
    try:
        req(**{field: value})
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("field", list(SAMPLES))
def test_schema_and_wire_model_agree(field: str) -> None:
    """The fuzz test (tests/integration/test_fuzz.py) holds the server to /openapi.json:
    a value the schema calls invalid must be refused, so the two must agree."""
    state = AppState(load_settings(), "unused")
    schema = create_app(state, lambda: None).openapi()
    prop = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"][field]
    validator = jsonschema.Draft202012Validator(prop)
    for value in SAMPLES[field]:
        assert validator.is_valid(value) == _accepted(field, value), (field, value)


def test_stop_token_ids_and_logit_bias_are_documented_as_token_id_maps() -> None:
    prop = create_app(AppState(load_settings(), "unused"), lambda: None).openapi()["components"]["schemas"][
        "ChatCompletionRequest"]["properties"]["logit_bias"]["anyOf"][0]
    assert prop["maxProperties"] == MAX_TOKEN_IDS and "patternProperties" not in prop
    assert prop["additionalProperties"] == {"type": "number", "minimum": -100.0, "maximum": 100.0}
