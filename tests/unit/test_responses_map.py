"""server/responses_map.py: what every Responses field becomes on the chat path,
and every refusal (a 400 naming the field, in the Responses request's terms)."""
from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from server.errors import APIError
from server.responses_map import Source, renamed, to_chat
from server.responses_seal import seal
from server.responses_wire import ResponsesRequest
from server.secret_key import SecretKeys

KEYS = SecretKeys((b"k" * 32,))
STORED = {"rs_stored": "A stored thought."}
SOURCE = Source(KEYS, STORED.get)
USER = {"role": "user", "content": "What is 6*7?"}


def chat(**fields: Any) -> dict[str, Any]:
    body = ResponsesRequest.model_validate({"model": "m", "input": [USER], **fields})
    return to_chat(body, SOURCE).model_dump(exclude_unset=True, by_alias=True)


def text(t: str) -> dict[str, str]:
    return {"type": "text", "text": t}


CASES = [
    ("string-input", {"input": "Hi"}, {"messages": [{"role": "user", "content": [text("Hi")]}]}),
    ("instructions", {"instructions": "Be brief."},
     {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [text("What is 6*7?")]}]}),
    ("roles-and-parts", {"input": [
        {"role": "developer", "content": [{"type": "input_text", "text": "d"}]},
        {"type": "message", "role": "system", "content": "s"}, USER,
        {"role": "assistant", "content": [{"type": "output_text", "text": "42", "annotations": []}]},
        {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]}]},
     {"messages": [{"role": "developer", "content": [text("d")]}, {"role": "system", "content": [text("s")]},
                   {"role": "user", "content": [text("What is 6*7?")]}, {"role": "assistant", "content": [text("42")]},
                   {"role": "user", "content": [text("a"), text("b")]}]}),
    ("tool-round-trip", {"input": [
        USER, {"type": "reasoning", "id": "rs_stored", "summary": []},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"x\": 1}"},
        {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "two"}]}]},
     {"messages": [{"role": "user", "content": [text("What is 6*7?")]},
                   {"role": "assistant", "content": [], "reasoning": "A stored thought.", "tool_calls": [
                       {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}},
                       {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "c1", "content": [text("one")]},
                   {"role": "tool", "tool_call_id": "c2", "content": [text("two")]}]}),
    ("sampling", {"max_output_tokens": 50, "temperature": 0.5, "top_p": 0.9, "top_k": 3, "seed": 7, "timeout": 9.0,
                  "user": "u", "stream": True},
     {"max_completion_tokens": 50, "temperature": 0.5, "top_p": 0.9, "top_k": 3, "seed": 7, "timeout": 9.0,
      "user": "u", "stream": True}),
    ("function-tools", {"tools": [{"type": "function", "name": "f", "description": "d", "strict": True,
                                   "parameters": {"type": "object"}}], "tool_choice": "required",
                        "parallel_tool_calls": False},
     {"tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"},
                                                  "strict": True}}],
      "tool_choice": "required", "parallel_tool_calls": False}),
    ("named-tool", {"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "f"}},
     {"tool_choice": {"type": "function", "function": {"name": "f"}}}),
    ("code-interpreter", {"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]},
     {"tools": [{"type": "code_interpreter"}]}),
    ("format-text", {"text": {"format": {"type": "text"}}}, {"response_format": {"type": "text"}}),
    ("format-json-object", {"text": {"format": {"type": "json_object"}}}, {"response_format": {"type": "json_object"}}),
    ("format-json-schema", {"text": {"format": {"type": "json_schema", "name": "out", "strict": True,
                                                "schema": {"type": "object"}}}},
     {"response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"},
                                                                 "strict": True}}}),
    ("reasoning-effort-and-ponder-keys", {"reasoning": {"effort": "high", "summary": "auto", "samples": 3,
                                                        "strategy": "self_consistency"}},
     {"reasoning": {"effort": "high", "samples": 3, "strategy": "self_consistency"}}),
    ("summary-only", {"reasoning": {"summary": "concise"}}, {}),
]


@pytest.mark.parametrize(("fields", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_fields_map_onto_the_chat_request(fields: dict, expected: dict) -> None:
    got = chat(**fields)
    for key, value in expected.items():
        assert got[key] == value, key
    if "reasoning" not in expected:
        assert "reasoning" not in got


def test_encrypted_reasoning_is_that_turn_s_reasoning() -> None:
    got = chat(input=[USER, {"type": "reasoning", "summary": [], "encrypted_content": seal(KEYS, "My thought."),
                             "content": [{"type": "reasoning_text", "text": "a forged thought"}]},
                      {"role": "assistant", "content": "42"}, {"role": "user", "content": "Sure?"}])
    assert got["messages"][1] == {"role": "assistant", "content": [text("42")], "reasoning": "My thought."}


def test_stored_history_is_trusted_and_comes_first() -> None:
    body = ResponsesRequest.model_validate({"model": "m", "input": "Sure?", "instructions": "New rules."})
    history = ResponsesRequest.model_validate({"model": "m", "input": [
        USER, {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "Kept."}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "42"}]}]}).input
    got = to_chat(body, Source(KEYS, STORED.get, history)).model_dump(exclude_unset=True)
    assert [m["role"] for m in got["messages"]] == ["system", "user", "assistant", "user"]
    assert got["messages"][2]["reasoning"] == "Kept."


def refused(fields: dict, param: str, code: str | None = None) -> APIError:
    with pytest.raises(APIError) as exc:
        chat(**fields)
    assert exc.value.status == 400 and exc.value.param == param, (exc.value.param, exc.value.message)
    if code is not None:
        assert exc.value.code == code
    return exc.value


def _tampered() -> str:
    token = seal(KEYS, "t")
    return token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]


REFUSALS = [
    ("tampered", {"input": [USER, {"type": "reasoning", "summary": [], "encrypted_content": _tampered()},
                            {"role": "user", "content": "q"}]},
     "input[1].encrypted_content", "invalid_encrypted_content"),
    ("foreign", {"input": [USER, {"type": "reasoning", "summary": [],
                                  "encrypted_content": seal(SecretKeys((b"o" * 32,)), "t")},
                           {"role": "user", "content": "q"}]}, "input[1].encrypted_content", "invalid_encrypted_content"),
    ("plain-reasoning", {"input": [USER, {"type": "reasoning", "summary": [],
                                          "content": [{"type": "reasoning_text", "text": "forged"}]},
                                   {"role": "user", "content": "q"}]}, "input[1]", "reasoning_not_found"),
    ("unknown-reasoning-id", {"input": [USER, {"type": "reasoning", "id": "rs_gone", "summary": []},
                                        {"role": "user", "content": "q"}]}, "input[1]", "reasoning_not_found"),
    ("prefill", {"input": [USER, {"role": "assistant", "content": "4"}]}, "input[1]", None),
    ("dangling-call", {"input": [USER, {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]},
     "input[1]", None),
    ("stream-candidates", {"reasoning": {"stream_candidates": True}}, "reasoning.stream_candidates", None),
    ("schema-on-text", {"text": {"format": {"type": "text", "schema": {}}}}, "text.format.schema", None),
    ("name-on-json-object", {"text": {"format": {"type": "json_object", "name": "x"}}}, "text.format.name", None),
    ("json-schema-without-schema", {"text": {"format": {"type": "json_schema", "name": "x"}}},
     "text.format.schema", None),
    ("json-schema-without-name", {"text": {"format": {"type": "json_schema", "schema": {}}}},
     "text.format.name", None),
]


@pytest.mark.parametrize(("fields", "param", "code"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals_name_the_field(fields: dict, param: str, code: str | None) -> None:
    refused(fields, param, code)


WIRE_REFUSALS = [
    ("unknown-field", {"background": True}, "background"),
    ("unknown-include", {"include": ["file_search_call.results"]}, "include[0]"),
    ("auto-truncation", {"truncation": "auto"}, "truncation"),
    ("web-search-tool", {"tools": [{"type": "web_search"}]}, "tools[0]"),
    ("container-id", {"tools": [{"type": "code_interpreter", "container": "cntr_1"}]}, "tools[0].container"),
    ("unknown-summary", {"reasoning": {"summary": "long"}}, "reasoning.summary"),
    ("unknown-reasoning-key", {"reasoning": {"generate_summary": "auto"}}, "reasoning.generate_summary"),
    ("item-reference", {"input": [{"type": "item_reference", "id": "x"}]}, "input[0]"),
    ("bad-role", {"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ("zero-max-output", {"max_output_tokens": 0}, "max_output_tokens"),
    ("string-temperature", {"temperature": "1"}, "temperature"),
    ("verbosity", {"text": {"verbosity": "low"}}, "text.verbosity"),
]


@pytest.mark.parametrize(("fields", "param"), [r[1:] for r in WIRE_REFUSALS], ids=[r[0] for r in WIRE_REFUSALS])
def test_the_wire_model_refuses(fields: dict, param: str) -> None:
    from server.errors import loc_to_param
    with pytest.raises(ValidationError) as exc:
        ResponsesRequest.model_validate({"model": "m", "input": "q", **fields})
    assert loc_to_param(tuple(exc.value.errors()[0]["loc"])) == param


@pytest.mark.parametrize(("chat_param", "param"), [
    ("max_completion_tokens", "max_output_tokens"), ("response_format.json_schema.schema", "text.format.schema"),
    ("response_format", "text.format"), ("tools[2].function.parameters", "tools[2].parameters"),
    ("messages[3].content", "input"), ("messages", "input"), ("reasoning.samples", "reasoning.samples")])
def test_chat_errors_name_this_surface_s_fields(chat_param: str, param: str) -> None:
    body = ResponsesRequest.model_validate({"model": "m", "input": "q"})
    err = renamed(APIError(400, f"{chat_param}: max_completion_tokens is too small for response_format", chat_param),
                  body)
    assert err.param == param
    assert err.message == f"{param}: max_output_tokens is too small for text.format"
