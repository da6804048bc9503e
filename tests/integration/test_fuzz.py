"""Fuzzing the real server: schemathesis against its own OpenAPI schema, and
hand-made malformed bodies that must all be a 400 before the engine.

The schemathesis run generates valid and invalid requests from
``/openapi.json`` (coverage phase: boundary values and every kind of wrong
input, field by field; fuzzing phase: random ones) and checks every response:
no 5xx, the status code, the content type, the headers and the body all as
the schema documents them (each SSE event of a stream too), and invalid data
refused with a 4xx. Only the cost of a chat case is bounded (:func:`cheap`),
so every case the engine runs is a few tokens. Anthropic's ``/v1/messages`` and
``/v1/messages/count_tokens`` are in the same schema and fuzzed the same way;
their errors must have Anthropic's shape. OpenAI's ``/v1/responses`` (and
``GET`` / ``DELETE /v1/responses/{id}``) too, with OpenAI's errors.
"""
from __future__ import annotations

import copy
import json
import os
import re
import time
from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .helpers import engine_drains

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
COUNT = "/v1/messages/count_tokens"
RESPONSES = "/v1/responses"
# What one generated chat request may cost. Only integers above a cap are
# lowered; types, negative values and everything else stay as generated, so
# invalid cases stay invalid and valid ones still run on the engine.
CAPS = {"n": 2, "max_tokens": 8, "max_completion_tokens": 8, "thinking_token_budget": 16, "min_tokens": 8}
NESTED_CAPS = {
    "reasoning": {"samples": 2, "rounds": 1, "beam_width": 2, "max_steps": 2, "max_thinking_tokens": 16,
                  "min_thinking_tokens": 16, "max_tokens": 16, "budget_tokens": 64},
    "thinking": {"budget_tokens": 16},
}
# /v1/messages: max_tokens is required (a case without it stays invalid); thinking's
# budget must be below it, so a capped budget below the capped max_tokens still runs.
MESSAGES_CAPS = {"max_tokens": 24}
# /v1/responses: max_output_tokens is optional (the default would be 1024 answer tokens).
RESPONSES_CAPS = {"max_output_tokens": 24}
_CAPS = {CHAT: CAPS, MESSAGES: MESSAGES_CAPS, RESPONSES: RESPONSES_CAPS}
# Every case with a valid timeout gets this one: far above what a capped case
# needs (so a 504 means a hang), while a generated tiny one would make 504 the
# right answer.
TIMEOUT = 20.0
# Per operation; the coverage phase adds its own cases. `make test` runs 30 (six
# operations reach the engine or the store: 100 took 24 of make test's minutes on 2
# cores); `make fuzz` runs the long version with PONDER_FUZZ_EXAMPLES=300.
FUZZ_EXAMPLES = int(os.environ.get("PONDER_FUZZ_EXAMPLES", "30"))


def _integral(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer())


def _cap(obj: dict[str, Any], caps: dict[str, int]) -> None:
    for key, cap in caps.items():
        if _integral(obj.get(key)) and obj[key] > cap:
            obj[key] = cap


def cheap(body: Any, path: str = CHAT) -> Any:
    """The generated body with its cost bounded, streamed unless it says (a copy;
    a non-object as it is)."""
    if not isinstance(body, dict):
        return body
    body = copy.deepcopy(body)
    _cap(body, _CAPS[path])
    for name, caps in NESTED_CAPS.items():
        if isinstance(body.get(name), dict):
            _cap(body[name], caps)
    if path == CHAT and body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
        body["max_tokens"] = CAPS["max_tokens"]  # the default is 1024 answer tokens
    if path == RESPONSES and body.get("max_output_tokens") is None:
        body["max_output_tokens"] = RESPONSES_CAPS["max_output_tokens"]
    # Generated cases rarely name `stream`; those that do not are streamed, so both
    # the SSE encoder and the JSON fold are fuzzed (explicit `false` still folds).
    body.setdefault("stream", True)
    timeout = body.get("timeout")
    if timeout is None or (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0):
        body["timeout"] = TIMEOUT
    return body


@pytest.fixture(scope="module")
def api_schema(live):
    config = schemathesis.Config.from_dict({
        "seed": 20240607,
        "max-stream-events": 1000,
        "auth": {"openapi": {"bearer": {"bearer": live.api_key}}},
        "generation": {"mode": "all", "max-examples": FUZZ_EXAMPLES, "database": "none", "deterministic": True},
        "phases": {"examples": {"enabled": False}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True},
                   "stateful": {"enabled": False}},
        "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large", "large_base_example"],
    })
    return schemathesis.openapi.from_url(live.base_url + "/openapi.json", config=config, headers=live.headers(),
                                         timeout=30)


@pytest.fixture(scope="module")
def seen() -> Counter:
    """What the schemathesis run got back: (operation, status, content type) -> count."""
    return Counter()


@pytest.fixture(scope="module")
def slowest() -> list:
    """(seconds, operation, status, body) of every schemathesis case, to print the slowest."""
    return []


@pytest.fixture
def _pytest9_nodeid(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32's lazy loader reads and renames ``Node._nodeid``, which pytest 9.2 no longer has.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]


@schema.parametrize()
@pytest.mark.usefixtures("_pytest9_nodeid")
# One test per operation: 100 examples took up to 736 s for one on 2 AVX2 cores.
@pytest.mark.timeout(600 + 12 * FUZZ_EXAMPLES)
def test_schemathesis(case, seen: Counter, slowest: list) -> None:
    if case.path in (CHAT, MESSAGES, RESPONSES):
        case.body = cheap(case.body, case.path)
    started = time.monotonic()
    response = case.call(timeout=60)
    kind = response.headers.get("content-type", [""])[0].split(";")[0]
    seen[(f"{case.method} {case.path}", response.status_code, kind)] += 1
    slowest.append((time.monotonic() - started, f"{case.method} {case.path}", response.status_code,
                    json.dumps(case.body, default=str)[:300]))
    case.validate_response(response, checks=CHECKS)


def test_schemathesis_reached_the_engine_both_ways(seen: Counter, slowest: list) -> None:
    """The run above had chat cases answered by the engine, streamed and not, and refused."""
    assert seen, "runs after test_schemathesis, in the same session"
    by_op = Counter()
    for seconds, op, _, _ in slowest:
        by_op[op] += seconds
    print("schemathesis seconds per operation:", {op: round(s) for op, s in by_op.most_common()})
    for case in sorted(slowest, reverse=True)[:15]:
        print(f"  {case[0]:6.1f} s {case[1]} {case[2]} {case[3]}")
    chat = Counter({(status, kind): k for (op, status, kind), k in seen.items() if op == "POST " + CHAT})
    print("schemathesis responses:", dict(sorted(seen.items())))
    assert chat[(200, "application/json")] >= 5, chat
    assert chat[(200, "text/event-stream")] >= 5, chat
    assert chat[(400, "application/json")] >= 50, chat
    messages = Counter({(status, kind): k for (op, status, kind), k in seen.items() if op == "POST " + MESSAGES})
    assert messages[(200, "application/json")] >= 1, messages
    assert messages[(200, "text/event-stream")] >= 1, messages
    assert messages[(400, "application/json")] >= 20, messages
    assert any(op == "POST " + COUNT and status == 200 for op, status, _ in seen), seen
    responses = Counter({(status, kind): k for (op, status, kind), k in seen.items() if op == "POST " + RESPONSES})
    assert responses[(200, "application/json")] >= 1, responses
    assert responses[(200, "text/event-stream")] >= 1, responses
    assert responses[(400, "application/json")] >= 20, responses
    assert all(status < 500 for _, status, _ in seen), seen


@pytest.mark.asyncio
async def test_engine_idle_and_ready_after_fuzz(live) -> None:
    assert await engine_drains(live, within=10.0)
    assert httpx.get(live.base_url + "/ready").status_code == 200


# -- malformed bodies, by hand ------------------------------------------------------

def _prompt_tokens(live) -> float:
    text = httpx.get(live.base_url + "/metrics", headers=live.headers()).text
    return sum(float(m.group(1)) for m in re.finditer(r"^vllm:prompt_tokens_total\{[^}]*\} (\S+)$", text, re.M))


def _valid(live) -> dict[str, Any]:
    return {"model": live.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def _raw(live, **fields: Any) -> bytes:
    """A valid body with ``fields`` spliced in as raw JSON text (no JSON encoder would write them)."""
    body = json.dumps(_valid(live))[:-1]
    return (body + "".join(f', "{k}": {v}' for k, v in fields.items()) + "}").encode()


# (id, body bytes builder, content type, what the message must say)
MALFORMED = [
    ("invalid-utf8", lambda lv: _raw(lv, user='"caf\xe9"').replace(b"\xc3\xa9", b"\xe9"), "application/json",
     "UTF-8"),
    ("5000-digit-number", lambda lv: _raw(lv, seed="9" * 5000), "application/json", "number"),
    ("5000-digit-ignored-field", lambda lv: _raw(lv, extra="1" * 5000), "application/json", "number"),
    ("1e999", lambda lv: _raw(lv, temperature="1e999"), "application/json", "out of range"),
    ("-1e999-ignored-field", lambda lv: _raw(lv, extra="-1e999"), "application/json", "out of range"),
    ("NaN", lambda lv: _raw(lv, temperature="NaN"), "application/json", "NaN"),
    ("Infinity", lambda lv: _raw(lv, top_p="Infinity"), "application/json", "Infinity"),
    ("-Infinity-ignored-field", lambda lv: _raw(lv, extra="[-Infinity]"), "application/json", "Infinity"),
    ("deep-nesting", lambda lv: _raw(lv, extra="[" * 100_000 + "]" * 100_000), "application/json", "nested"),
    ("deep-object-nesting", lambda lv: _raw(lv, extra='{"a":' * 100_000 + "1" + "}" * 100_000), "application/json",
     "nested"),
    ("duplicate-key", lambda lv: _raw(lv, model='"other"'), "application/json", "repeats the key 'model'"),
    ("duplicate-nested-key", lambda lv: _raw(lv, reasoning='{"effort": "low", "effort": "high"}'),
     "application/json", "repeats the key 'effort'"),
    ("lone-surrogate", lambda lv: _raw(lv, stop='["\\ud800"]'), "application/json", "surrogate"),
    ("empty-body", lambda lv: b"", "application/json", "empty"),
    ("null-body", lambda lv: b"null", "application/json", "JSON object"),
    ("array-body", lambda lv: b"[" + json.dumps(_valid(lv)).encode() + b"]", "application/json", "not an array"),
    ("string-body", lambda lv: b'"hello"', "application/json", "not a string"),
    ("number-body", lambda lv: b"42", "application/json", "not a number"),
    ("truncated-json", lambda lv: json.dumps(_valid(lv)).encode()[:-3], "application/json", "not valid JSON"),
    ("trailing-garbage", lambda lv: json.dumps(_valid(lv)).encode() + b" x", "application/json", "not valid JSON"),
    ("text-plain", lambda lv: json.dumps(_valid(lv)).encode(), "text/plain", "Content-Type"),
    ("form-encoded", lambda lv: b"model=x&messages=y", "application/x-www-form-urlencoded", "Content-Type"),
    ("no-content-type", lambda lv: json.dumps(_valid(lv)).encode(), None, "Content-Type"),
]


def _post(live, content: bytes, content_type: str | None) -> httpx.Response:
    headers = live.headers() | ({"content-type": content_type} if content_type else {})
    return httpx.post(live.base_url + CHAT, content=content, headers=headers, timeout=60)


def _assert_openai_400(r: httpx.Response, *, says: str | None = None, param: str | None = None) -> None:
    assert r.status_code == 400, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json") and r.headers["x-request-id"]
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["message"]
    if says is not None:
        assert says.lower() in err["message"].lower(), err
    if param is not None:
        assert err["param"] == param, err


@pytest.mark.parametrize("name,build,content_type,says", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_body_is_400_before_the_engine(live, name, build, content_type, says) -> None:
    before = _prompt_tokens(live)
    _assert_openai_400(_post(live, build(live), content_type), says=says)
    assert _prompt_tokens(live) == before


# Values of the right JSON type that are out of range: the field is named.
OUT_OF_RANGE = [
    ("n", -1), ("n", 0), ("n", 17), ("n", 10**6), ("n", 10**30),
    ("max_tokens", -5), ("max_tokens", 0), ("max_tokens", 10**9), ("max_tokens", 10**40),
    ("max_completion_tokens", -1), ("max_completion_tokens", 2**63),
    ("seed", -(2**63) - 1), ("seed", 2**64), ("seed", 10**50),
    ("temperature", -0.5), ("temperature", 2.5), ("temperature", 1e308), ("temperature", -1e308),
    ("top_p", 0), ("top_p", 1.5), ("top_logprobs", 21), ("presence_penalty", 3), ("frequency_penalty", -1e300),
    ("timeout", 0), ("timeout", -1), ("timeout", 1e300),
    ("top_k", -2), ("top_k", 2**31), ("min_p", -0.5), ("min_p", 1.5), ("repetition_penalty", 0),
    ("repetition_penalty", 2.5), ("min_tokens", -1), ("min_tokens", 5),  # above max_tokens (4)
]


@pytest.mark.parametrize("field,value", OUT_OF_RANGE, ids=[f"{f}={v:g}" if isinstance(v, float) else f"{f}={v}"
                                                          for f, v in OUT_OF_RANGE])
def test_out_of_range_number_is_400_naming_it(live, field: str, value) -> None:
    before = _prompt_tokens(live)
    content = json.dumps({**_valid(live), field: value}).encode()
    _assert_openai_400(_post(live, content, "application/json"), param=field)
    assert _prompt_tokens(live) == before


# A value of the wrong JSON type for every top-level field (including values a
# lax parser would coerce: "2" for an integer, 1 for a boolean, 1.5 for an integer).
WRONG_TYPES = {
    "model": [[], {}, 5, None, True],
    "messages": [{}, "hi", None, [["user", "hi"]], [{"role": "user", "content": 5}], [{"role": "robot"}], [{}]],
    "stream": ["true", 1, None, {}],
    "stream_options": ["yes", [], {"include_usage": "yes"}],
    "n": ["2", 2.5, True, [], None],
    "temperature": ["0.5", True, [], {}],
    "top_p": ["1", False, []],
    "max_tokens": ["8", 8.5, True, {}],
    "max_completion_tokens": ["8", [], 1.5],
    "stop": [5, {}, [1, 2], [None], True],
    "seed": ["1", 1.5, True, []],
    "priority": ["1", 1.5, True, [], 2**21],
    "logprobs": ["true", 1, None],
    "top_logprobs": ["2", 2.5, True],
    "presence_penalty": ["0", [], True],
    "frequency_penalty": ["0", {}, False],
    "logit_bias": ["x", [], 5, True, {"5": "1"}, {"x": 1}, {"5": None}],
    "top_k": ["5", 1.5, True, []],
    "min_p": ["0.5", True, []],
    "repetition_penalty": ["1", False, {}],
    "min_tokens": ["3", 1.5, True, None],
    "stop_token_ids": [5, "1", ["1"], [1.5], [True], {}],
    "user": [5, [], {}],
    "tools": ["x", {}, [1], 5],
    "tool_choice": [5, [], True],
    "parallel_tool_calls": ["yes", 1, [], {}],
    "response_format": ["json", [], {"type": "xml"}, {"type": 5}, {"type": "json_schema"}],
    "structured_outputs": ["regex", [], 5, {"regex": 5}, {"choice": "a"}, {"choice": []}, {"yaml": "x"}],
    "reasoning": ["high", [], 5, True, {"effort": 5}, {"samples": "2"}, {"unknown": 1}],
    "thinking": ["enabled", True, {}, {"type": True}, {"type": "enabled", "budget_tokens": "8"}],
    "thinking_token_budget": ["16", 1.5, True],
    "include_reasoning": ["false", 0, []],
    "chat_template_kwargs": ["x", [], 5, {"enable_thinking": "yes"}],
    "reasoning_effort": [5, [], True, {}],
    "timeout": ["20", True, []],
    "ignore_eos": ["yes", 1, None, {}],
}
WRONG = [(f, v) for f, values in WRONG_TYPES.items() for v in values]


@pytest.mark.parametrize("field,value", WRONG, ids=[f"{f}={json.dumps(v)[:24]}" for f, v in WRONG])
def test_wrong_type_is_400_naming_the_field(live, field: str, value) -> None:
    before = _prompt_tokens(live)
    r = _post(live, json.dumps({**_valid(live), field: value}).encode(), "application/json")
    _assert_openai_400(r)
    assert r.json()["error"]["param"].split(".")[0].split("[")[0] == field, r.json()
    assert _prompt_tokens(live) == before


def test_every_request_field_has_a_wrong_type_case(api_schema) -> None:
    fields = set(api_schema.raw_schema["components"]["schemas"]["ChatCompletionRequest"]["properties"])
    assert fields == set(WRONG_TYPES)


# -- /v1/messages: the same refusals, in Anthropic's shape -----------------------------

def _message(live) -> dict[str, Any]:
    return {"model": live.model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}


def _assert_anthropic_400(r: httpx.Response, param: str | None = None) -> None:
    assert r.status_code == 400, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json") and r.headers["x-request-id"]
    body = r.json()
    assert set(body) == {"type", "error"} and body["type"] == "error", body
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["message"], body
    if param is not None:
        assert body["error"]["param"].split(".")[0].split("[")[0] == param, body


MESSAGES_MALFORMED = {
    "invalid-utf8": b'{"model": "caf\xe9"}',
    "NaN": b'{"model": "m", "max_tokens": 4, "temperature": NaN, "messages": []}',
    "duplicate-key": b'{"model": "m", "model": "n", "max_tokens": 4, "messages": []}',
    "empty-body": b"",
    "array-body": b"[]",
    "truncated-json": b'{"model": "m", "max_tokens": 4, "messa',
}


@pytest.mark.parametrize("name", list(MESSAGES_MALFORMED))
@pytest.mark.parametrize("path", [MESSAGES, COUNT])
def test_malformed_messages_body_is_an_anthropic_400(live, name: str, path: str) -> None:
    before = _prompt_tokens(live)
    r = httpx.post(live.base_url + path, content=MESSAGES_MALFORMED[name],
                   headers=live.headers() | {"content-type": "application/json"}, timeout=60)
    _assert_anthropic_400(r)
    assert _prompt_tokens(live) == before


# A value of the wrong JSON type for every field of the Messages request.
MESSAGES_WRONG_TYPES = {
    "model": [[], 5, None],
    "messages": [{}, "hi", None, [{"role": "user"}], [{"role": "robot", "content": "x"}],
                 [{"role": "user", "content": 5}], [{"role": "user", "content": [{"type": "image"}]}]],
    "max_tokens": ["8", 8.5, True, None, 0],
    "system": [5, {}, [5], [{"type": "text"}]],
    "tools": ["x", {}, [1], [{"name": "t"}], [{"type": "web_search_20250305", "name": "w"}]],
    "tool_choice": ["auto", 5, {"type": "sometimes"}, {"type": "tool"}],
    "thinking": ["enabled", {}, {"type": "enabled"}, {"type": "enabled", "budget_tokens": "8"}],
    "output_config": ["high", {"effort": 5}, {"format": {"type": "regex"}}],
    "cache_control": ["ephemeral", {"type": "persistent"}],
    "reasoning": ["high", {"unknown": 1}],
    "stream": ["true", 1],
    "stop_sequences": ["END", [5], [""]],
    "temperature": ["0.5", 1.5, True],
    "top_p": ["1", 0],
    "top_k": ["5", -1, 1.5],
    "metadata": ["u", {"user_id": 5}, {"other": "x"}],
    "seed": ["1", 1.5],
    "timeout": ["20", True],
}
MESSAGES_WRONG = [(f, v) for f, values in MESSAGES_WRONG_TYPES.items() for v in values]


@pytest.mark.parametrize("field,value", MESSAGES_WRONG, ids=[f"{f}={json.dumps(v)[:24]}" for f, v in MESSAGES_WRONG])
def test_wrong_type_in_a_message_is_an_anthropic_400_naming_the_field(live, field: str, value) -> None:
    before = _prompt_tokens(live)
    r = httpx.post(live.base_url + MESSAGES, json={**_message(live), field: value}, headers=live.headers(),
                   timeout=60)
    _assert_anthropic_400(r, param=field)
    assert _prompt_tokens(live) == before


def test_every_messages_field_has_a_wrong_type_case(api_schema) -> None:
    fields = set(api_schema.raw_schema["components"]["schemas"]["MessagesRequest"]["properties"])
    assert fields == set(MESSAGES_WRONG_TYPES)


# -- /v1/responses: the same refusals, in OpenAI's shape ------------------------------------

def _response(live) -> dict[str, Any]:
    return {"model": live.model, "max_output_tokens": 4, "input": "hi"}


@pytest.mark.parametrize("name", list(MESSAGES_MALFORMED))
def test_malformed_responses_body_is_an_openai_400(live, name: str) -> None:
    before = _prompt_tokens(live)
    r = httpx.post(live.base_url + RESPONSES, content=MESSAGES_MALFORMED[name],
                   headers=live.headers() | {"content-type": "application/json"}, timeout=60)
    _assert_openai_400(r)
    assert _prompt_tokens(live) == before


# A value of the wrong JSON type (or an unsupported one) for every field of the Responses request.
RESPONSES_WRONG_TYPES = {
    "model": [[], 5, None],
    "input": [{}, 5, None, [], [{"role": "robot", "content": "x"}], [{"role": "user", "content": 5}],
              [{"type": "item_reference", "id": "x"}], [{"type": "function_call_output", "call_id": "c"}],
              [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]],
    "instructions": [5, ["x"]],
    "max_output_tokens": ["8", 8.5, True, 0],
    "temperature": ["0.5", 2.5, True],
    "top_p": ["1", 0],
    "tools": ["x", {}, [1], [{"type": "function"}], [{"type": "web_search"}],
              [{"type": "code_interpreter", "container": "cntr_1"}]],
    "tool_choice": ["sometimes", 5, {"type": "function"}, {"type": "web_search"}],
    "parallel_tool_calls": ["true", 1],
    "text": ["json", {"format": {"type": "regex"}}, {"verbosity": "low"}],
    "reasoning": ["high", {"summary": "long"}, {"unknown": 1}, {"stream_candidates": True}],
    "stream": ["true", 1],
    "store": ["true", 1],
    "previous_response_id": [5, ["resp_x"]],
    "include": ["reasoning.encrypted_content", ["file_search_call.results"]],
    "metadata": ["m", {"k": 5}],
    "user": [5],
    "truncation": ["auto", 5],
    "seed": ["1", 1.5],
    "top_k": ["5", 1.5],
    "timeout": ["20", True],
}
RESPONSES_WRONG = [(f, v) for f, values in RESPONSES_WRONG_TYPES.items() for v in values]


@pytest.mark.parametrize("field,value", RESPONSES_WRONG,
                         ids=[f"{f}={json.dumps(v)[:24]}" for f, v in RESPONSES_WRONG])
def test_wrong_type_in_a_response_request_is_a_400_naming_the_field(live, field: str, value) -> None:
    before = _prompt_tokens(live)
    r = httpx.post(live.base_url + RESPONSES, json={**_response(live), field: value}, headers=live.headers(),
                   timeout=60)
    _assert_openai_400(r)
    assert r.json()["error"]["param"].split(".")[0].split("[")[0] == field, r.json()
    assert _prompt_tokens(live) == before


def test_every_responses_field_has_a_wrong_type_case(api_schema) -> None:
    fields = set(api_schema.raw_schema["components"]["schemas"]["ResponsesRequest"]["properties"])
    assert fields == set(RESPONSES_WRONG_TYPES)
