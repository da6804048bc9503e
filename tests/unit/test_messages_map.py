"""The Anthropic Messages request mapped onto the chat path (server/messages_map.py):
what every field becomes, and every refusal with the field it names.

Mapped cases compare the chat request's fields as set (``exclude_unset``), so a
field that is dropped, or set where it should not be, shows. Refusals either
come from the wire model (server/messages_wire.py, strict, unknown fields
refused) or from the mapping; both name the Anthropic field.
"""
from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from server.errors import APIError, loc_to_param
from server.messages_map import renamed, sign_thinking, to_chat
from server.messages_wire import CountTokensRequest, MessagesRequest
from server.secret_key import SecretKeys

KEYS = SecretKeys((b"k" * 32,))
OTHER_KEYS = SecretKeys((b"o" * 32,))
BASE: dict[str, Any] = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
ABSENT = object()


def text(t: str) -> dict[str, str]:
    return {"type": "text", "text": t}


def user(*content: Any) -> dict[str, Any]:
    return {"role": "user", "content": list(content) if len(content) != 1 or not isinstance(content[0], str)
            else content[0]}


def assistant(*content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": list(content)}


def thinking(t: str, keys: SecretKeys = KEYS, signed: str | None = None) -> dict[str, str]:
    return {"type": "thinking", "thinking": t, "signature": sign_thinking(keys, t if signed is None else signed)}


TOOL = {"name": "get_weather", "description": "Weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CALL = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"}
CHAT_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": TOOL["input_schema"],
                                              "description": "Weather in a city"}}
CHAT_CALL = {"id": "toolu_1", "type": "function", "function": {"name": "get_weather",
                                                               "arguments": '{"city": "Paris"}'}}
HI = {"role": "user", "content": [text("hi")]}

# id -> (fields over BASE, chat fields expected among those set; ABSENT: not set)
MAPPED: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "minimal": ({}, {"model": "m", "max_completion_tokens": 100, "stream": False, "messages": [HI],
                     "max_tokens": ABSENT, "thinking": ABSENT, "reasoning": ABSENT, "n": ABSENT, "stop": ABSENT}),
    "stream": ({"stream": True}, {"stream": True}),
    "sampling": ({"temperature": 0.5, "top_p": 0.9, "top_k": 40, "stop_sequences": ["END", "\n\n"]},
                 {"temperature": 0.5, "top_p": 0.9, "top_k": 40, "stop": ["END", "\n\n"]}),
    "temperature-int": ({"temperature": 1}, {"temperature": 1.0}),
    "top_k-0": ({"top_k": 0}, {"top_k": 0}),
    "metadata": ({"metadata": {"user_id": "u-1"}}, {"user": "u-1"}),
    "metadata-without-user": ({"metadata": {}}, {"user": ABSENT}),
    "ponder-extras": ({"seed": 7, "timeout": 30, "reasoning": {"strategy": "self_consistency", "samples": 3}},
                      {"seed": 7, "timeout": 30.0, "reasoning": {"strategy": "self_consistency", "samples": 3}}),
    "system-string": ({"system": "Be brief."}, {"messages": [{"role": "system", "content": "Be brief."}, HI]}),
    "system-blocks": ({"system": [text("A"), {**text("B"), "cache_control": {"type": "ephemeral", "ttl": "1h"}}]},
                      {"messages": [{"role": "system", "content": [text("A"), text("B")]}, HI]}),
    "system-empty": ({"system": ""}, {"messages": [HI]}),
    "user-blocks": ({"messages": [user(text("a"), {**text("b"), "cache_control": {"type": "ephemeral"}})]},
                    {"messages": [{"role": "user", "content": [text("a"), text("b")]}]}),
    "consecutive-turns-combined": ({"messages": [user("a"), user(text("b")), assistant(text("c")),
                                                 assistant(text("d")), user("e")]},
                                   {"messages": [{"role": "user", "content": [text("a"), text("b")]},
                                                 {"role": "assistant", "content": [text("c"), text("d")]},
                                                 {"role": "user", "content": [text("e")]}]}),
    "tools": ({"tools": [TOOL]}, {"tools": [CHAT_TOOL], "tool_choice": ABSENT, "parallel_tool_calls": ABSENT}),
    "tool-strict-and-custom": ({"tools": [{**TOOL, "type": "custom", "strict": True,
                                           "cache_control": {"type": "ephemeral"}}]},
                               {"tools": [{"type": "function", "function": {**CHAT_TOOL["function"], "strict": True}}]}),
    "tool_choice-auto": ({"tools": [TOOL], "tool_choice": {"type": "auto"}}, {"tool_choice": "auto"}),
    "tool_choice-any": ({"tools": [TOOL], "tool_choice": {"type": "any"}}, {"tool_choice": "required"}),
    "tool_choice-tool": ({"tools": [TOOL], "tool_choice": {"type": "tool", "name": "get_weather"}},
                         {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
    "tool_choice-none": ({"tools": [TOOL], "tool_choice": {"type": "none"}}, {"tool_choice": "none"}),
    "disable-parallel": ({"tools": [TOOL], "tool_choice": {"type": "any", "disable_parallel_tool_use": True}},
                         {"tool_choice": "required", "parallel_tool_calls": False}),
    "parallel-not-disabled": ({"tools": [TOOL], "tool_choice": {"type": "auto", "disable_parallel_tool_use": False}},
                              {"tool_choice": "auto", "parallel_tool_calls": ABSENT}),
    "tool-round-trip": ({"tools": [TOOL], "messages": [user("Weather?"), assistant(text("Let me look."), CALL),
                                                       user(RESULT, text("Thanks"))]},
                        {"messages": [{"role": "user", "content": [text("Weather?")]},
                                      {"role": "assistant", "content": [text("Let me look.")],
                                       "tool_calls": [CHAT_CALL]},
                                      {"role": "tool", "tool_call_id": "toolu_1", "content": [text("18 C")]},
                                      {"role": "user", "content": [text("Thanks")]}]}),
    "tool-result-forms": ({"messages": [user("q"), assistant(CALL, {**CALL, "id": "toolu_2"}, {**CALL, "id": "t3"}),
                                        user({**RESULT, "content": [text("a"), text("b")]},
                                             {**RESULT, "tool_use_id": "toolu_2", "is_error": True},
                                             {"type": "tool_result", "tool_use_id": "t3"})]},
                          {"messages": [{"role": "user", "content": [text("q")]},
                                        {"role": "assistant", "content": [], "tool_calls": [
                                            CHAT_CALL, {**CHAT_CALL, "id": "toolu_2"}, {**CHAT_CALL, "id": "t3"}]},
                                        {"role": "tool", "tool_call_id": "toolu_1", "content": [text("a"), text("b")]},
                                        {"role": "tool", "tool_call_id": "toolu_2",
                                         "content": [text("Error: "), text("18 C")]},
                                        {"role": "tool", "tool_call_id": "t3", "content": []}]}),
    "signed-thinking-restored": ({"messages": [user("q"), assistant(thinking("Let me see."), text("42")),
                                               user("why?")]},
                                 {"messages": [{"role": "user", "content": [text("q")]},
                                               {"role": "assistant", "content": [text("42")],
                                                "reasoning": "Let me see."},
                                               {"role": "user", "content": [text("why?")]}]}),
    "two-thinking-blocks": ({"messages": [user("q"), assistant(thinking("a"), CALL, thinking("b")), user(RESULT)]},
                            {"messages": [{"role": "user", "content": [text("q")]},
                                          {"role": "assistant", "content": [], "tool_calls": [CHAT_CALL],
                                           "reasoning": "ab"},
                                          {"role": "tool", "tool_call_id": "toolu_1", "content": [text("18 C")]}]}),
    "thinking-signed-by-a-previous-key": ({"messages": [user("q"), assistant(thinking("t", OTHER_KEYS)), user("r")]},
                                          {"messages": [{"role": "user", "content": [text("q")]},
                                                        {"role": "assistant", "content": [], "reasoning": "t"},
                                                        {"role": "user", "content": [text("r")]}]}),
    "thinking-enabled": ({"thinking": {"type": "enabled", "budget_tokens": 64}},
                         {"thinking": {"type": "enabled", "budget_tokens": 64}, "reasoning": ABSENT}),
    "thinking-below-anthropic-minimum": ({"thinking": {"type": "enabled", "budget_tokens": 1, "display": "summarized"}},
                                         {"thinking": {"type": "enabled", "budget_tokens": 1}}),
    "thinking-disabled": ({"thinking": {"type": "disabled"}}, {"thinking": {"type": "disabled"}}),
    "thinking-adaptive": ({"thinking": {"type": "adaptive"}}, {"thinking": ABSENT, "reasoning": {"strategy": "auto"}}),
    "adaptive-with-reasoning": ({"thinking": {"type": "adaptive"}, "reasoning": {"strategy": "auto",
                                                                                "budget_tokens": 500}},
                                {"reasoning": {"strategy": "auto", "budget_tokens": 500}}),
    "thinking-and-reasoning": ({"thinking": {"type": "enabled", "budget_tokens": 50},
                                "reasoning": {"max_thinking_tokens": 20}},
                               {"thinking": {"type": "enabled", "budget_tokens": 50},
                                "reasoning": {"max_thinking_tokens": 20}}),
    "effort": ({"output_config": {"effort": "high"}}, {"reasoning_effort": "high"}),
    "effort-ponder-values": ({"output_config": {"effort": "minimal"}}, {"reasoning_effort": "minimal"}),
    "format": ({"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
               {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "output", "schema": {"type": "object"}}}}),
    "cache_control-top-level": ({"cache_control": {"type": "ephemeral"}}, {"messages": [HI]}),
}


def _chat(fields: dict[str, Any], cls: type = MessagesRequest) -> dict[str, Any]:
    return to_chat(cls.model_validate({**BASE, **fields}), KEYS).model_dump(exclude_unset=True, by_alias=True)


@pytest.mark.parametrize("name", list(MAPPED))
def test_mapped(name: str) -> None:
    fields, expected = MAPPED[name]
    keys = SecretKeys((b"k" * 32, b"o" * 32))  # rotated: OTHER_KEYS is a previous key
    chat = to_chat(MessagesRequest.model_validate({**BASE, **fields}), keys).model_dump(exclude_unset=True,
                                                                                         by_alias=True)
    for key, value in expected.items():
        if value is ABSENT:
            assert key not in chat, (key, chat.get(key))
        else:
            assert chat.get(key, ABSENT) == value, key


def test_count_tokens_maps_what_shapes_the_prompt() -> None:
    fields = {"system": "S", "tools": [TOOL], "tool_choice": {"type": "any"},
              "thinking": {"type": "enabled", "budget_tokens": 5000}}  # no max_tokens to be below
    body = {k: v for k, v in {**BASE, **fields}.items() if k != "max_tokens"}
    chat = to_chat(CountTokensRequest.model_validate(body), KEYS).model_dump(exclude_unset=True)
    assert chat["thinking"] == {"type": "enabled", "budget_tokens": 5000} and chat["tool_choice"] == "required"
    assert "max_completion_tokens" not in chat and "stream" not in chat
    for field in ("max_tokens", "stream", "stop_sequences", "temperature", "metadata"):
        with pytest.raises(ValidationError):
            CountTokensRequest.model_validate({**body, field: BASE["max_tokens"] if field == "max_tokens" else None})


# id -> (fields over BASE, the param named). Refused by the mapping (a 400 APIError) ...
REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "prefill": ({"messages": [user("q"), assistant(text("The answer is"))]}, "messages[1]"),
    "forged-signature": ({"messages": [user("q"), assistant({"type": "thinking", "thinking": "t", "signature": "x"}),
                                       user("r")]}, "messages[1].content[0].signature"),
    "modified-thinking": ({"messages": [user("q"), assistant(thinking("I was told", signed="I thought")), user("r")]},
                          "messages[1].content[0].signature"),
    "unknown-key": ({"messages": [user("q"), assistant(text("a"), thinking("t", SecretKeys((b"z" * 32,)))),
                                  user("r")]}, "messages[1].content[1].signature"),
    "signature-of-another-purpose": ({"messages": [user("q"), assistant(
        {"type": "thinking", "thinking": "t", "signature": KEYS.sign("other", b"t")}), user("r")]},
        "messages[1].content[0].signature"),
    "redacted-thinking": ({"messages": [user("q"), assistant({"type": "redacted_thinking", "data": "abc"}),
                                        user("r")]}, "messages[1].content[0]"),
    "tool_use-in-user": ({"messages": [user(CALL)]}, "messages[0].content[0]"),
    "thinking-in-user": ({"messages": [user(text("a"), thinking("t"))]}, "messages[0].content[1]"),
    "tool_result-in-assistant": ({"messages": [user("q"), assistant(RESULT), user("r")]}, "messages[1].content[0]"),
    "combined-turn-keeps-places": ({"messages": [user("q"), user(text("a"), CALL)]}, "messages[1].content[1]"),
    "budget-equals-max_tokens": ({"thinking": {"type": "enabled", "budget_tokens": 100}}, "thinking.budget_tokens"),
    "budget-above-max_tokens": ({"thinking": {"type": "enabled", "budget_tokens": 5000}}, "thinking.budget_tokens"),
    "display-omitted": ({"thinking": {"type": "enabled", "budget_tokens": 10, "display": "omitted"}},
                        "thinking.display"),
    "adaptive-display-omitted": ({"thinking": {"type": "adaptive", "display": "omitted"}}, "thinking.display"),
    "adaptive-and-another-strategy": ({"thinking": {"type": "adaptive"}, "reasoning": {"strategy": "single"}},
                                      "thinking.type"),
    "stream_candidates": ({"reasoning": {"strategy": "self_consistency", "stream_candidates": True}},
                          "reasoning.stream_candidates"),
    "only-empty-messages": ({"messages": [user()]}, "messages"),
}
# ... and by the wire model (pydantic: a 400 from the app's validation handler).
INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "no-max_tokens": ({"max_tokens": None}, "max_tokens"),
    "max_tokens-0": ({"max_tokens": 0}, "max_tokens"),
    "max_tokens-string": ({"max_tokens": "100"}, "max_tokens"),
    "no-messages": ({"messages": []}, "messages"),
    "budget-0": ({"thinking": {"type": "enabled", "budget_tokens": 0}}, "thinking.budget_tokens"),
    "budget-missing": ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
    "thinking-between-tools": ({"thinking": {"type": "between_tools"}}, "thinking"),
    "disabled-with-budget": ({"thinking": {"type": "disabled", "budget_tokens": 10}}, "thinking.budget_tokens"),
    "temperature-above-1": ({"temperature": 1.5}, "temperature"),
    "top_p-0": ({"top_p": 0}, "top_p"),
    "top_k-negative": ({"top_k": -1}, "top_k"),
    "empty-stop-sequence": ({"stop_sequences": ["a", ""]}, "stop_sequences[1]"),
    "17-stop-sequences": ({"stop_sequences": [str(i) for i in range(17)]}, "stop_sequences"),
    "image-block": ({"messages": [user({"type": "image", "source": {}})]}, "messages[0].content[0]"),
    "citations": ({"messages": [user({**text("a"), "citations": []})]}, "messages[0].content[0].citations"),
    "tool_use-input-not-object": ({"messages": [user("q"), assistant({**CALL, "input": [1]}), user("r")]},
                                  "messages[1].content[0].input"),
    "content-number": ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    "role-system": ({"messages": [{"role": "system", "content": "s"}]}, "messages[0].role"),
    "server-tool": ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
    "tool-name": ({"tools": [{**TOOL, "name": "get weather"}]}, "tools[0].name"),
    "tool-without-schema": ({"tools": [{"name": "t"}]}, "tools[0].input_schema"),
    "tool_choice-tool-without-name": ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
    "tool_choice-none-parallel": ({"tool_choice": {"type": "none", "disable_parallel_tool_use": True}},
                                  "tool_choice.disable_parallel_tool_use"),
    "tool_choice-string": ({"tool_choice": "auto"}, "tool_choice"),
    "effort-unknown-type": ({"output_config": {"effort": 3}}, "output_config.effort"),
    "format-not-json_schema": ({"output_config": {"format": {"type": "regex", "schema": {}}}},
                               "output_config.format.type"),
    "metadata-unknown": ({"metadata": {"user_id": "u", "plan": "pro"}}, "metadata.plan"),
    "cache_control-ttl": ({"cache_control": {"type": "ephemeral", "ttl": "1d"}}, "cache_control.ttl"),
    "service_tier": ({"service_tier": "auto"}, "service_tier"),
    "container": ({"container": "c"}, "container"),
    "n": ({"n": 2}, "n"),
    "reasoning-unknown": ({"reasoning": {"mystery": 1}}, "reasoning.mystery"),
    "stream-string": ({"stream": "true"}, "stream"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_by_the_mapping(name: str) -> None:
    fields, param = REFUSED[name]
    body = MessagesRequest.model_validate({**BASE, **fields})
    with pytest.raises(APIError) as info:
        to_chat(body, KEYS)
    assert (info.value.status, info.value.param) == (400, param), info.value.message
    assert info.value.message


@pytest.mark.parametrize("name", list(INVALID))
def test_refused_by_the_wire_model(name: str) -> None:
    fields, param = INVALID[name]
    body = {k: v for k, v in {**BASE, **fields}.items() if v is not None}
    with pytest.raises(ValidationError) as info:
        MessagesRequest.model_validate(body)
    assert loc_to_param(tuple(info.value.errors()[0]["loc"])) == param, info.value.errors()[0]


RENAMED = [
    ("max_completion_tokens", "max_tokens"), ("stop", "stop_sequences"), ("reasoning_effort", "output_config.effort"),
    ("response_format", "output_config.format"), ("response_format.json_schema.schema", "output_config.format.schema"),
    ("tools[2].function.parameters", "tools[2].input_schema"), ("tools[0].function.name", "tools[0].name"),
    ("tools", "tools"), ("parallel_tool_calls", "tool_choice.disable_parallel_tool_use"), ("user", "metadata.user_id"),
    ("messages[3].content", "messages"), ("messages", "messages"), ("thinking.budget_tokens", "thinking.budget_tokens"),
    ("reasoning.strategy", "reasoning.strategy"), ("tool_choice", "tool_choice"), ("model", "model"), (None, None),
]


@pytest.mark.parametrize("chat,messages", RENAMED, ids=[str(c) for c, _ in RENAMED])
def test_chat_errors_name_this_surfaces_fields(chat: str | None, messages: str | None) -> None:
    body = MessagesRequest.model_validate(BASE)
    err = renamed(APIError(400, f"{chat}: went wrong; raise max_completion_tokens" if chat else "went wrong",
                           chat, "some_code", {"h": "v"}), body)
    assert (err.status, err.param, err.code, err.headers) == (400, messages, "some_code", {"h": "v"})
    assert "max_completion_tokens" not in err.message
    if chat:
        assert err.message.startswith(f"{messages}: went wrong")


def test_the_auto_strategy_adaptive_thinking_chose_is_named_as_thinking_type() -> None:
    err = APIError(400, "strategy 'auto' does not support tool calls", "reasoning.strategy")
    adaptive = MessagesRequest.model_validate({**BASE, "thinking": {"type": "adaptive"}})
    assert renamed(err, adaptive).param == "thinking.type"
    named = MessagesRequest.model_validate({**BASE, "thinking": {"type": "adaptive"},
                                            "reasoning": {"strategy": "auto"}})
    assert renamed(err, named).param == "reasoning.strategy"


def _openapi() -> dict[str, Any]:
    from server.app import create_app
    from server.settings import load_settings
    from server.state import AppState

    return create_app(AppState(load_settings(), "unused", secrets=KEYS), lambda: None).openapi()


@pytest.mark.parametrize("cases", ["mapped", "refused", "invalid"])
def test_the_openapi_schema_agrees_with_the_wire_model(cases: str) -> None:
    """The fuzz test (tests/integration/test_fuzz.py) holds the server to /openapi.json:
    what the schema calls invalid must be refused, and what it calls valid parsed."""
    import jsonschema

    schema = _openapi()
    validator = jsonschema.Draft202012Validator({**schema, "$ref": "#/components/schemas/MessagesRequest"})
    table = {"mapped": MAPPED, "refused": REFUSED, "invalid": INVALID}[cases]
    for name, (fields, *_) in table.items():
        sent = {k: v for k, v in {**BASE, **fields, "model": "SmolLM2-135M-Instruct"}.items() if v is not None}
        try:
            MessagesRequest.model_validate(sent)
            accepted = True
        except ValidationError:
            accepted = False
        assert validator.is_valid(sent) == accepted, name


def test_the_openapi_schema_documents_both_routes() -> None:
    paths = _openapi()["paths"]
    create, count = paths["/v1/messages"]["post"], paths["/v1/messages/count_tokens"]["post"]
    assert set(create["responses"]) == {"200", "400", "401", "404", "413", "429", "504", "529"}
    assert set(create["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert create["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/AnthropicError")
    assert set(count["responses"]) == {"200", "400", "401", "404", "413", "529"}
