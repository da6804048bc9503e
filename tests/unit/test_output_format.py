"""Answer formats (server/output_format.py): tool-call shaping and JSON, on vLLM's real hermes parser."""
from __future__ import annotations

import json

import pytest

from server.engines.vllm_engine import VLLMToolParser
from server.errors import APIError
from server.output_format import GrammarFormat, JsonFormat, ToolFormat, output_format
from server.tool_prompt import hermes_messages, with_reasoning
from server.wire import ChatCompletionRequest
from strategies.events import Answer, ChoiceDone, Progress, Thinking, ToolCallDelta
from strategies.output import PLAIN, canonical_json
from strategies.trace import AnswerTrace

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
PARSER = VLLMToolParser(object(), "hermes")  # the hermes parser needs a tokenizer only to stream
DONE = ChoiceDone(0, "stop", AnswerTrace(3, "stop"))


def _req(**kw) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw})


def _shape(fmt, texts: list[str], done: ChoiceDone = DONE) -> list:
    shaper = fmt.shaper(0)
    out = []
    for t in texts:
        out += shaper.feed(Answer(0, t))
    return out + shaper.feed(done)


def _calls(events) -> list[dict]:
    calls: list[dict] = []
    for e in events:
        if isinstance(e, ToolCallDelta):
            if e.index == len(calls):
                calls.append({"id": e.id, "name": e.name, "arguments": ""})
            calls[e.index]["arguments"] += e.arguments
    return calls


def _content(events) -> str:
    return "".join(e.text for e in events if isinstance(e, Answer))


def test_auto_streams_content_until_the_marker_then_parses_the_call() -> None:
    fmt = output_format(_req(tools=[WEATHER]), PARSER)
    assert fmt.thinking_stop == ("<tool_call>",)
    chunks = ["Let me check. <tool", "_call>\n{\"name\": \"get_weather\", ", "\"arguments\": {\"city\": \"Paris\"}}",
              "\n</tool_call>"]
    shaper = fmt.shaper(0)
    first = shaper.feed(Answer(0, chunks[0]))
    assert _content(first) == "Let me check. "  # "<tool" is held back: it may start a call
    out = first + [e for c in chunks[1:] for e in shaper.feed(Answer(0, c))] + shaper.feed(DONE)
    assert _content(out) == "Let me check. "
    [call] = _calls(out)
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}
    assert call["id"].startswith("call_")
    assert out[-1].finish_reason == "tool_calls"


def test_auto_without_a_call_is_plain_content_and_a_broken_call_stays_content() -> None:
    fmt = output_format(_req(tools=[WEATHER]), PARSER)
    out = _shape(fmt, ["The weather ", "is <nice>."])
    assert _content(out) == "The weather is <nice>." and not _calls(out) and out[-1].finish_reason == "stop"
    broken = _shape(fmt, ["<tool_call>{\"name\": \"get_wea"], ChoiceDone(0, "length", AnswerTrace(9, "length")))
    assert _content(broken) == "<tool_call>{\"name\": \"get_wea" and not _calls(broken)
    assert broken[-1].finish_reason == "length"


def test_auto_parallel_calls_and_parallel_false_keeps_the_first() -> None:
    text = ('<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>\n'
            '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>')
    both = _calls(_shape(output_format(_req(tools=[WEATHER, TIME]), PARSER), [text]))
    assert [c["name"] for c in both] == ["get_weather", "get_time"]
    assert len({c["id"] for c in both}) == 2
    one = _calls(_shape(output_format(_req(tools=[WEATHER, TIME], parallel_tool_calls=False), PARSER), [text]))
    assert [c["name"] for c in one] == ["get_weather"]


def test_named_streams_arguments_live_and_is_constrained_by_the_parameters() -> None:
    fmt = output_format(_req(tools=[WEATHER, TIME], tool_choice={"type": "function",
                                                                "function": {"name": "get_weather"}}), PARSER)
    assert json.loads(fmt.structured.json) == WEATHER["function"]["parameters"]
    shaper = fmt.shaper(0)
    first = shaper.feed(Answer(0, '{"city": '))
    assert isinstance(first[0], ToolCallDelta) and first[0].name == "get_weather" and first[0].id
    second = shaper.feed(Answer(0, '"Rome"}'))
    assert second[0].id is None and second[0].name is None and second[0].arguments == '"Rome"}'
    end = shaper.feed(DONE)
    assert end[-1].finish_reason == "tool_calls"
    assert _calls(first + second) == [{"id": first[0].id, "name": "get_weather", "arguments": '{"city": "Rome"}'}]


def test_required_is_an_array_of_calls_and_votes_on_canonical_arguments() -> None:
    fmt = output_format(_req(tools=[WEATHER, TIME], tool_choice="required"), PARSER)
    schema = json.loads(fmt.structured.json)
    assert schema["type"] == "array" and schema["minItems"] == 1 and "maxItems" not in schema
    text = '[{"name": "get_weather", "parameters": {"city": "Oslo"}}]'
    [call] = _calls(_shape(fmt, [text[:10], text[10:]]))
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Oslo"}
    assert fmt.key(text) == fmt.key('[{"parameters": {"city":"Oslo"}, "name": "get_weather"}]')
    assert fmt.key(text) != fmt.key('[{"name": "get_weather", "parameters": {"city": "Bergen"}}]')
    single = output_format(_req(tools=[WEATHER], tool_choice="required", parallel_tool_calls=False), PARSER)
    assert json.loads(single.structured.json)["maxItems"] == 1


def test_passthrough_of_other_events_and_other_choices() -> None:
    fmt = output_format(_req(tools=[WEATHER]), PARSER)
    shaper = fmt.shaper(0)
    for e in (Thinking(0, "hmm <tool_call>"), Progress(0, {"x": 1})):
        assert shaper.feed(e) == [e]


def test_json_formats_and_their_vote_keys() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    fmt = output_format(_req(response_format={"type": "json_schema",
                                              "json_schema": {"name": "x", "schema": schema, "strict": True}}), None)
    assert isinstance(fmt, JsonFormat) and json.loads(fmt.structured.json) == schema
    assert fmt.valid('{"a": 1}') and not fmt.valid('{"a": "one"}') and not fmt.valid("{")
    assert fmt.key('{"a": 1}') == fmt.key('{ "a" : 1 }') and fmt.key('{"a": "x"}') is None
    obj = output_format(_req(response_format={"type": "json_object"}), None)
    assert obj.structured.json_object and obj.valid("{}") and not obj.valid("[]")
    assert output_format(_req(response_format={"type": "text"}), None) is PLAIN
    assert output_format(_req(tools=[WEATHER], tool_choice="none"), PARSER) is PLAIN
    assert canonical_json('{"b":1, "a":[1, 2]}') == '{"a":[1,2],"b":1}'


@pytest.mark.parametrize("kw,param", [
    ({"tool_choice": "required"}, "tool_choice"),
    ({"parallel_tool_calls": True}, "parallel_tool_calls"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": [WEATHER, WEATHER]}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}]},
     "tools[0].function.parameters"),
    ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}},
     "response_format.json_schema.schema"),
    ({"structured_outputs": {}}, "structured_outputs"),
    ({"structured_outputs": {"regex": "a+", "choice": ["a"]}}, "structured_outputs"),
    ({"structured_outputs": {"json_object": False}}, "structured_outputs"),
    ({"structured_outputs": {"regex": "a+"}, "response_format": {"type": "json_object"}}, "structured_outputs"),
    ({"structured_outputs": {"choice": ["a"]}, "tools": [WEATHER]}, "structured_outputs"),
    ({"structured_outputs": {"json": "{not json"}}, "structured_outputs.json"),
    ({"structured_outputs": {"json": {"type": 5}}}, "structured_outputs.json"),
])
def test_what_cannot_be_honoured_is_a_400_naming_the_field(kw: dict, param: str) -> None:
    with pytest.raises(APIError) as e:
        output_format(_req(**kw), PARSER)
    assert e.value.status == 400 and e.value.param == param


def test_vllm_structured_outputs_each_kind() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    as_dict = output_format(_req(structured_outputs={"json": schema}), None)
    as_text = output_format(_req(structured_outputs={"json": json.dumps(schema)}), None)
    assert isinstance(as_dict, JsonFormat) and as_dict == as_text and as_dict.valid('{"a": 2}')
    assert output_format(_req(structured_outputs={"json_object": True}), None).structured.json_object
    choice = output_format(_req(structured_outputs={"choice": ["yes", "no"]}), None)
    assert isinstance(choice, GrammarFormat) and choice.structured.choice == ("yes", "no")
    assert choice.key("yes") == "yes" and choice.key("maybe") is None and not choice.valid("no ")
    regex = output_format(_req(structured_outputs={"regex": "[0-9]+"}), None)
    assert regex.structured.regex == "[0-9]+" and regex.key("42") == "42" and regex.key("") is None
    grammar = output_format(_req(structured_outputs={"grammar": 'root ::= "a"'}), None)
    assert grammar.structured.grammar == 'root ::= "a"'


def test_unknown_top_level_field_is_refused_by_the_wire_model() -> None:
    with pytest.raises(ValueError, match="guided_json"):
        _req(guided_json={"type": "object"})


def test_tool_format_is_not_plain() -> None:
    fmt = output_format(_req(tools=[WEATHER]), PARSER)
    assert isinstance(fmt, ToolFormat) and fmt.tools and fmt.key("just words 42") is None


def test_hermes_messages_render_tools_calls_and_results_for_a_template_without_tools() -> None:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "4C, rain"},
            {"role": "tool", "tool_call_id": "call_2", "content": "10:00"}]
    out = hermes_messages(msgs, [WEATHER])
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert out[0]["content"].startswith("Be brief.") and '"name": "get_weather"' in out[0]["content"]
    assert "<tools>" in out[0]["content"]
    assert out[2]["content"] == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    assert out[3]["content"] == "<tool_response>\n4C, rain\n</tool_response>\n<tool_response>\n10:00\n</tool_response>"
    assert all(set(m) == {"role", "content"} for m in out)


def test_earlier_reasoning_is_written_back_only_when_kept() -> None:
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "4", "reasoning": "2+2"}]
    kept = with_reasoning([dict(m) for m in msgs], "<think>", "</think>")
    assert kept[1]["content"] == "<think>\n2+2\n</think>\n\n4" and "reasoning" not in kept[1]


def test_auto_with_a_strict_function_is_held_to_its_schema_once_a_call_opens() -> None:
    """vLLM's structural tag for hermes: free text, then at ``<tool_call>`` the envelope
    and the strict function's arguments (the non-strict one's stay free)."""
    strict = {"type": "function", "function": {**WEATHER["function"], "strict": True}}
    fmt = output_format(_req(tools=[strict, TIME]), PARSER)
    assert isinstance(fmt, ToolFormat) and fmt.mode == "auto"
    tag = json.loads(fmt.structured.structural_tag)["format"]
    assert tag["type"] == "triggered_tags" and tag["triggers"] == ["<tool_call>"]
    schemas = {t["begin"]: t["content"]["json_schema"] for t in tag["tags"]}
    assert schemas['<tool_call>\n{"name": "get_weather", "arguments": '] == WEATHER["function"]["parameters"]
    assert schemas['<tool_call>\n{"name": "get_time", "arguments": '] is True  # not strict: any JSON
    assert output_format(_req(tools=[WEATHER, TIME]), PARSER).structured is None  # nothing strict: free
    one = output_format(_req(tools=[strict], parallel_tool_calls=False), PARSER)
    assert one.structured.structural_tag != fmt.structured.structural_tag


@pytest.mark.parametrize("kind,value", [("json", '{"type": "object"}'), ("json_object", True), ("regex", "a+"),
                                        ("choice", ("a", "b")), ("grammar", 'root ::= "a"'),
                                        ("structural_tag", '{"type": "structural_tag"}')])
def test_every_constraint_kind_reaches_vllm(kind: str, value) -> None:
    from server.engines.vllm_structured import structured_params as _structured
    from strategies.engine import Structured
    params = _structured(Structured(**{kind: value}))
    assert getattr(params, kind) == (list(value) if kind == "choice" else value)
