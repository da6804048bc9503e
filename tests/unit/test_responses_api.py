"""``/v1/responses`` through the HTTP app on the scripted engine, driven by the
official ``openai`` SDK (its HTTP client is the app's TestClient): create and
stream (whose final response equals the non-streamed one), reasoning summaries
from the engine, sealed reasoning round trips, the store (previous_response_id,
GET, DELETE, ownership by API key), a tool round trip, structured output,
statuses, OpenAI-shaped errors from every layer, and a disconnect that aborts
the engine work."""
from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient
from scripted_engine import char_model_info, decode

from server.responses_store import owner_of
from server.secret_key import SecretKeys
from server.state import AppState
from tests.unit.test_messages_api import (
    KEY,
    KEYS,
    MODEL,
    THOUGHT,
    Broken,
    Served,
    Slow,
    post_then_leave,
    script,
    serve,
)

OTHER_KEY = "other-key-0123456789"
THINK = {"reasoning": {"effort": "low"}}
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def app(keys: SecretKeys = KEYS, **settings: Any) -> tuple[openai.OpenAI, Served, AppState, TestClient]:
    settings.setdefault("responses", {"store_path": ":memory:"})
    server = settings.pop("server", {})
    http, engine, state = serve(keys=keys, server={"api_keys": [KEY, OTHER_KEY], **server}, **settings)
    client = openai.OpenAI(api_key=KEY, base_url="http://testserver/v1", http_client=http, max_retries=0)
    return client, engine, state, http


@pytest.fixture
def served() -> tuple[openai.OpenAI, Served, AppState, TestClient]:
    return app()


def normal(output: list[Any]) -> list[dict[str, Any]]:
    """Output items without what differs from one response to the next (ids, nonces)."""
    out = []
    for item in output:
        d = item if isinstance(item, dict) else item.to_dict(exclude_unset=True)
        d = {k: v for k, v in d.items() if k not in ("id", "encrypted_content")}
        if d["type"] == "message":
            d["content"] = [{k: v for k, v in c.items() if k != "parsed"} for c in d["content"]]
        d.pop("parsed_arguments", None)
        out.append(d)
    return out


# -- create and stream -------------------------------------------------------------------


@pytest.mark.parametrize("fields", [{}, THINK, {"instructions": "Be brief.", **THINK},
                                    {"reasoning": {"effort": "low", "summary": "auto"}}],
                         ids=["plain", "thinking", "instructions", "summary"])
def test_the_stream_s_final_response_is_the_response(fields: dict) -> None:
    client, _, _, _ = app()
    r = client.responses.create(model=MODEL, input="What is 6*7?", **fields)
    assert r.id.startswith("resp_") and r.object == "response" and r.status == "completed"
    assert r.output_text == "The answer is 42." and r.model == MODEL
    assert r.usage is not None and r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    fresh, _, _, _ = app()  # a fresh engine: its prefix cache as cold as the first one's
    with fresh.responses.stream(model=MODEL, input="What is 6*7?", **fields) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert normal(final.output) == normal(r.output)
    assert final.usage == r.usage and final.status == r.status
    assert untimed(final.model_extra["reasoning_trace"]) == untimed(r.model_extra["reasoning_trace"])
    assert final.model_extra["reasoning_plan"] == r.model_extra["reasoning_plan"]


def untimed(trace: dict) -> dict:
    """A trace without the summary's wall seconds (the one timing in it)."""
    if "summary" in trace:
        assert trace["summary"]["seconds"] >= 0
        trace = {**trace, "summary": {k: v for k, v in trace["summary"].items() if k != "seconds"}}
    return trace


def test_thinking_is_a_reasoning_item_before_the_message(served) -> None:
    client, _, _, _ = served
    r = client.responses.create(model=MODEL, input="What is 6*7?", **THINK)
    reasoning, message = r.output
    assert reasoning.type == "reasoning" and reasoning.content[0].text == THOUGHT + "\n"
    assert reasoning.summary == [] and reasoning.encrypted_content is None
    assert message.type == "message" and message.content[0].type == "output_text"
    assert r.usage.output_tokens_details.reasoning_tokens > 0
    assert r.reasoning.effort == "low" and r.model_extra["reasoning_plan"]["strategy"]


def test_a_summary_is_written_by_the_engine_after_the_thinking(served) -> None:
    client, engine, _, _ = served
    plain = client.responses.create(model=MODEL, input="What is 6*7?", **THINK)
    r = client.responses.create(model=MODEL, input="What is 6*7?", reasoning={"effort": "low", "summary": "auto"})
    (call,) = [c for c in engine.calls if "Summarize the reasoning above" in c.prompt]
    thinking = next(c for c in engine.calls[len(engine.calls) - 3:] if c is not call)
    assert call.prompt_ids[:len(thinking.prompt_ids)] == thinking.prompt_ids, "it continues the run's prompt"
    assert THOUGHT in call.prompt and call.sampling.temperature == 0.0 and call.sampling.max_tokens <= 64
    assert r.output[0].summary[0].text == "The answer is 42."  # what the scripted engine answers to any question
    cost = r.model_extra["reasoning_trace"]["summary"]
    assert cost["tokens"] == len(call.output_ids) and cost["prompt_tokens"] == len(call.prompt_ids)
    assert r.usage.output_tokens == plain.usage.output_tokens + cost["tokens"]
    assert r.usage.output_tokens_details.reasoning_tokens == \
        plain.usage.output_tokens_details.reasoning_tokens + cost["tokens"]


def test_no_thinking_no_summary(served) -> None:
    client, engine, _, _ = served
    r = client.responses.create(model=MODEL, input="Hi", reasoning={"effort": "none", "summary": "auto"})
    assert [o.type for o in r.output] == ["message"] and len(engine.calls) == 1


def test_max_output_tokens_makes_it_incomplete() -> None:
    client, _, _, http = app(engine=Served(char_model_info(), ["y" * 100] * 2))
    r = client.responses.create(model=MODEL, input="Hi", max_output_tokens=10)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 10 and r.output[0].status == "incomplete"
    s = http.post("/v1/responses", json={"model": MODEL, "input": "Hi", "max_output_tokens": 10, "stream": True})
    assert b"event: response.incomplete" in s.content


def test_sampling_fields_reach_the_engine(served) -> None:
    client, engine, _, _ = served
    r = client.responses.create(model=MODEL, input="Hi", temperature=0.25, top_p=0.5, user="u1",
                                metadata={"k": "v"}, extra_body={"seed": 3, "top_k": 7})
    s = engine.calls[-1].sampling
    assert (s.temperature, s.top_p, s.top_k, s.seed) == (0.25, 0.5, 7, 3)
    assert r.metadata == {"k": "v"} and r.user == "u1" and r.temperature == 0.25


def test_json_schema_format_constrains_the_answer(served) -> None:
    client, engine, _, _ = served
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    r = client.responses.create(model=MODEL, input="Hi", text={"format": {
        "type": "json_schema", "name": "out", "schema": schema, "strict": True}})
    assert json.loads(engine.calls[-1].sampling.structured.json) == schema
    assert r.text.format.type == "json_schema"


# -- sealed reasoning ------------------------------------------------------------------------


def _second_turn(first: Any, question: str = "Are you sure?") -> list[dict[str, Any]]:
    return [{"role": "user", "content": "What is 6*7?"}, *[o.to_dict(exclude_unset=True) for o in first.output],
            {"role": "user", "content": question}]


def test_encrypted_reasoning_carries_a_store_false_conversation() -> None:
    client, engine, state, _ = app(model={"keep_reasoning": True})
    first = client.responses.create(model=MODEL, input="What is 6*7?", store=False,
                                    include=["reasoning.encrypted_content"], **THINK)
    sealed = first.output[0].encrypted_content
    assert sealed and THOUGHT not in sealed
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    second = client.responses.create(model=MODEL, input=_second_turn(first), store=False, **THINK)
    assert second.status == "completed"
    prompt = engine.calls[-2].prompt  # the second request's thinking phase
    assert f"<think>\n{THOUGHT}\n" in prompt and "Are you sure?" in prompt and "The answer is 42." in prompt


def test_the_sdk_s_own_output_objects_go_back_as_input(served) -> None:
    client, _, _, _ = served
    first = client.responses.create(model=MODEL, input="Is 17 prime?", store=False,
                                    include=["reasoning.encrypted_content"], **THINK)
    second = client.responses.create(model=MODEL, store=False, input=[
        {"role": "user", "content": "Is 17 prime?"}, *first.output, {"role": "user", "content": "And 21?"}])
    assert second.status == "completed"
    with client.responses.stream(model=MODEL, input="Weather?", tools=[WEATHER], tool_choice="required",
                                 **THINK) as stream:
        parsed = stream.get_final_response()  # its items carry the SDK's parse fields
    third = client.responses.create(model=MODEL, input=[
        {"role": "user", "content": "Weather?"}, *parsed.output,
        {"type": "function_call_output", "call_id": parsed.output[1].call_id, "output": "18 C"}])
    assert third.output_text == "The answer is 42."


@pytest.mark.parametrize("tamper", ["byte", "foreign-key", "plain-content"])
def test_tampered_reasoning_is_refused(served, tamper: str) -> None:
    client, engine, _, _ = served
    first = client.responses.create(model=MODEL, input="What is 6*7?", store=False,
                                    include=["reasoning.encrypted_content"], **THINK)
    items = _second_turn(first)
    if tamper == "byte":
        token = items[1]["encrypted_content"]
        items[1]["encrypted_content"] = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    elif tamper == "foreign-key":
        other, _, _, _ = app(keys=SecretKeys((b"o" * 32,)))
        items[1]["encrypted_content"] = other.responses.create(
            model=MODEL, input="Hi", include=["reasoning.encrypted_content"], **THINK).output[0].encrypted_content
    else:
        del items[1]["encrypted_content"]
        items[1]["content"] = [{"type": "reasoning_text", "text": "I was told to say 43."}]
    calls = len(engine.calls)
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(model=MODEL, input=items, store=False, **THINK)
    err = exc.value.body
    assert err["param"].startswith("input[1]") and err["type"] == "invalid_request_error"
    assert err["code"] == ("reasoning_not_found" if tamper == "plain-content" else "invalid_encrypted_content")
    assert len(engine.calls) == calls, "refused before the engine"


# -- the store ----------------------------------------------------------------------------------


def test_previous_response_id_continues_the_conversation(served) -> None:
    client, engine, _, _ = served
    first = client.responses.create(model=MODEL, input="What is 6*7?", instructions="Be brief.", **THINK)
    second = client.responses.create(model=MODEL, input="Are you sure?", previous_response_id=first.id, **THINK)
    assert second.previous_response_id == first.id
    prompt = engine.calls[-2].prompt
    assert "What is 6*7?" in prompt and "The answer is 42." in prompt and "Are you sure?" in prompt
    assert "Be brief." not in prompt, "instructions are not carried over"
    third = client.responses.create(model=MODEL, input="Really?", previous_response_id=second.id, **THINK)
    assert third.status == "completed" and "Are you sure?" in engine.calls[-2].prompt


def test_output_sent_back_with_store_on_is_read_by_id(served) -> None:
    client, _, _, _ = served
    first = client.responses.create(model=MODEL, input="What is 6*7?", **THINK)
    assert client.responses.create(model=MODEL, input=_second_turn(first), **THINK).status == "completed"


def test_get_and_delete(served) -> None:
    client, _, _, http = served
    r = client.responses.create(model=MODEL, input="What is 6*7?", **THINK)
    got = client.responses.retrieve(r.id)
    assert got.to_dict() == r.to_dict()
    other = openai.OpenAI(api_key=OTHER_KEY, base_url="http://testserver/v1", http_client=http, max_retries=0)
    for call in (lambda: other.responses.retrieve(r.id), lambda: other.responses.delete(r.id),
                 lambda: other.responses.create(model=MODEL, input="Hi", previous_response_id=r.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError) as exc:
        client.responses.retrieve(r.id)
    assert exc.value.body["code"] == "response_not_found"


def test_without_api_keys_every_client_shares_the_store() -> None:
    client, _, _, http = app(server={"api_keys": []})
    r = client.responses.create(model=MODEL, input="Hi")
    assert http.get(f"/v1/responses/{r.id}", headers={"x-api-key": "", "authorization": ""}).status_code == 200


def test_a_stored_file_is_where_the_settings_say(tmp_path) -> None:
    path = tmp_path / "stored" / "responses.sqlite3"
    client, _, state, _ = app(responses={"store_path": str(path), "max_stored": 2})
    ids = [client.responses.create(model=MODEL, input="Hi").id for _ in range(3)]
    assert path.is_file()
    kept = [state.store().get(i, owner_of(KEY)) is not None for i in ids]
    assert kept == [False, True, True], "retention keeps the newest"


def test_store_false_and_the_server_default() -> None:
    client, _, _, _ = app(responses={"store_path": ":memory:", "store": False})
    r = client.responses.create(model=MODEL, input="Hi")
    assert r.model_extra["store"] is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    kept = client.responses.create(model=MODEL, input="Hi", store=True)
    assert client.responses.retrieve(kept.id).id == kept.id


def test_a_streamed_response_is_stored_as_it_ended(served) -> None:
    client, _, _, _ = served
    with client.responses.stream(model=MODEL, input="What is 6*7?", **THINK) as stream:
        final = stream.get_final_response()
    assert normal(client.responses.retrieve(final.id).output) == normal(final.output)


# -- tools ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("choice", ["required", {"type": "function", "name": "get_weather"}], ids=["required", "named"])
def test_a_tool_round_trip(served, choice: Any, stream: bool) -> None:
    client, engine, _, _ = served
    ask: dict[str, Any] = dict(model=MODEL, tools=[WEATHER], tool_choice=choice, **THINK)
    if stream:
        with client.responses.stream(input="Weather?", **ask) as s:
            deltas = [e.delta for e in s if e.type == "response.function_call_arguments.delta"]
            r = s.get_final_response()
        assert json.loads("".join(deltas)) == {"city": "Paris"}
    else:
        r = client.responses.create(input="Weather?", **ask)
    assert [o.type for o in r.output] == ["reasoning", "function_call"]
    call = r.output[1]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"} and call.call_id
    follow = [{"role": "user", "content": "Weather?"}, *[o.to_dict(exclude_unset=True) for o in r.output],
              {"type": "function_call_output", "call_id": call.call_id, "output": "18 C"}]
    r2 = client.responses.create(input=follow, **{**ask, "tool_choice": "none"})
    assert r2.output_text == "The answer is 42."
    prompt = engine.calls[-1].prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert "<tool_response>\n18 C\n</tool_response>" in prompt


def test_code_interpreter_is_ponder_s_sandbox(served) -> None:
    client, _, _, _ = served
    with pytest.raises(openai.BadRequestError) as exc:  # unit tests have no sandbox
        client.responses.create(model=MODEL, input="2**10?", tools=[{"type": "code_interpreter", "container": {"type": "auto"}}])
    assert exc.value.body["code"] == "tool_unavailable" and exc.value.body["param"] == "tools"


# -- errors -------------------------------------------------------------------------------------------

REFUSED = [
    ("unknown-field", {"background": True}, 400, "background"),
    ("unknown-include", {"include": ["message.output_text.logprobs"]}, 400, "include[0]"),
    ("unknown-model", {"model": "gpt-5"}, 404, "model"),
    ("unknown-previous", {"previous_response_id": "resp_nope"}, 404, "previous_response_id"),
    ("prefill", {"input": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, 400, "input[1]"),
    ("bad-schema", {"text": {"format": {"type": "json_schema", "name": "o", "schema": {"type": "nope"}}}}, 400,
     "text.format.schema"),
    ("cap-over-max-output", {"max_output_tokens": 20, "reasoning": {"max_thinking_tokens": 100}}, 400,
     "reasoning.max_thinking_tokens"),
    ("unknown-effort", {"reasoning": {"effort": "ultra"}}, 400, "reasoning.effort"),
    ("stream-candidates", {"reasoning": {"stream_candidates": True}}, 400, "reasoning.stream_candidates"),
]


@pytest.mark.parametrize(("fields", "status", "param"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_refused_before_the_engine(served, fields: dict, status: int, param: str, stream: bool) -> None:
    _, engine, _, http = served
    r = http.post("/v1/responses", json={"model": MODEL, "input": "What is 6*7?", "stream": stream, **fields})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == param, err
    assert not engine.calls


def test_the_api_key_opens_every_route(served) -> None:
    _, _, _, http = served
    for method, path in (("post", "/v1/responses"), ("get", "/v1/responses/resp_x"),
                         ("delete", "/v1/responses/resp_x")):
        r = getattr(http, method)(path, headers={"x-api-key": "wrong", "authorization": "Bearer wrong"},
                                  **({"json": {"model": MODEL, "input": "q"}} if method == "post" else {}))
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_engine_failure_before_and_after_the_first_byte() -> None:
    client, _, _, http = app(engine=Broken(char_model_info(), [["a", " long", " answer", " that", " goes"]] * 2))
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model=MODEL, input="Hi")
    s = http.post("/v1/responses", json={"model": MODEL, "input": "Hi", "stream": True})
    assert s.status_code == 200
    kinds = [line.removeprefix(b"event: ") for line in s.content.split(b"\n") if line.startswith(b"event: ")]
    assert kinds[:2] == [b"response.created", b"response.in_progress"] and kinds[-2:] == [b"error", b"response.failed"]
    with client.responses.stream(model=MODEL, input="Hi") as stream:
        seen = [e.type for e in stream]
    assert seen[-2:] == ["error", "response.failed"]


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.asyncio
async def test_a_disconnect_aborts_the_engine_work(stream: bool) -> None:
    engine = Slow(char_model_info(), [["z"] * 3000])
    _, _, state = serve(engine, responses={"store_path": ":memory:"})
    sent = await post_then_leave(state, engine, "/v1/responses",
                                 {"model": MODEL, "input": "Hi", "max_output_tokens": 3000, "stream": stream})
    assert not any(m.get("status", 200) != 200 for m in sent[1:]), sent
    assert engine.aborted and engine.in_flight == 0 and not engine.finished
    assert state.admission.in_use == 0, "the admission ticket is released"


@pytest.mark.asyncio
async def test_a_disconnect_during_the_summary_aborts_it() -> None:
    engine = Slow(char_model_info(max_model_len=4096), lambda prompt, sampling: "z" * 2000 if
                  "Summarize the reasoning above" in decode(prompt) else script(prompt, sampling))
    _, _, state = serve(engine, responses={"store_path": ":memory:"})

    def summarizing() -> bool:
        return any("Summarize the reasoning above" in c.prompt for c in engine.calls)

    await post_then_leave(state, engine, "/v1/responses", {
        "model": MODEL, "input": "Hi", "stream": True, "reasoning": {"effort": "low", "summary": "auto"}},
        until=summarizing)
    assert any(r.endswith("-summary") for r in engine.aborted), engine.aborted
    assert engine.in_flight == 0 and state.admission.in_use == 0


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_the_deadline_ends_it(stream: bool) -> None:
    engine = Slow(char_model_info(), [["z"] * 1000])  # 1000 deltas, 10 ms apart
    _, _, _, http = app(engine=engine)
    r = http.post("/v1/responses", json={"model": MODEL, "input": "Hi", "max_output_tokens": 1000, "timeout": 0.3,
                                         "stream": stream})
    if stream:
        assert r.status_code == 200
        assert b"event: error" in r.content and r.content.rstrip().split(b"\n")[-1].startswith(b"data: ")
        assert b'"type":"response.failed"' in r.content.split(b"event: ")[-1]
    else:
        assert r.status_code == 504 and r.json()["error"]["type"] == "timeout_error"
    assert engine.aborted and engine.in_flight == 0


def test_ponder_s_reasoning_keys_ride_in_the_sdk_s_reasoning_object(served) -> None:
    client, _, _, _ = served
    r = client.responses.create(model=MODEL, input="Hi", reasoning={  # type: ignore[typeddict-unknown-key]
        "effort": "low", "strategy": "single", "max_thinking_tokens": 16})
    plan = r.model_extra["reasoning_plan"]
    assert (plan["strategy"], plan["max_thinking_tokens"], plan["source"]) == ("single", 16, "reasoning")
