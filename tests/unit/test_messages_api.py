"""``/v1/messages`` and ``/v1/messages/count_tokens`` through the HTTP app on the
scripted engine, and through the official ``anthropic`` SDK (its HTTP client
is the app's TestClient): thinking caps, signed thinking sent back, a tool
round trip, stop reasons, the prompt count, Anthropic-shaped errors from every
layer (key check, body parser, validation, planner, engine, deadline), and a
disconnect that aborts the engine work.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anthropic
import orjson
import pytest
from fastapi.testclient import TestClient
from scripted_engine import EOS, ScriptedEngine, char_model_info, decode

from server.app import create_app
from server.messages_map import sign_thinking
from server.prompt import Renderer, followup_renderer
from server.secret_key import SecretKeys
from server.settings import load_settings
from server.state import AppState
from strategies.engine import Delta, Sampling
from tests.unit.test_messages_encode import check_block_order, sse_events

MODEL = "SmolLM2-135M-Instruct"
KEY = "test-key-0123456789"
KEYS = SecretKeys((b"s" * 32,))
THOUGHT = "Six times seven is forty-two."
WEATHER = {"name": "get_weather", "description": "Weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def script(prompt: tuple[int, ...], sampling: Sampling) -> str:
    """Thinks (and closes its thinking) when a thinking block was opened; otherwise
    answers, with a call when the answer is constrained to tool calls."""
    if decode(prompt).endswith("<think>\n"):
        return THOUGHT + "\n</think>"
    structured = json.loads(sampling.structured.json) if sampling.structured and sampling.structured.json else {}
    if structured.get("type") == "array":  # tool_choice any: a JSON array of calls
        return '[{"name": "get_weather", "parameters": {"city": "Paris"}}]' + EOS
    if structured:  # a named tool: its input
        return '{"city": "Paris"}' + EOS
    return "The answer is 42." + EOS


class Served(ScriptedEngine):
    alive = True
    available = True

    def num_unfinished_requests(self) -> int:
        return self.in_flight

    def check_structured(self, structured: Any) -> None:
        pass

    def shutdown(self) -> None:
        pass


class Slow(Served):
    """Every delta a little later, so deadlines and disconnects land mid-stream."""

    async def generate(self, prompt_ids: Sequence[int], sampling: Sampling, request_id: str) -> AsyncIterator[Delta]:
        async for delta in super().generate(prompt_ids, sampling, request_id):
            await asyncio.sleep(0.01)
            yield delta


class Broken(Served):
    async def generate(self, prompt_ids: Sequence[int], sampling: Sampling, request_id: str) -> AsyncIterator[Delta]:
        n = 0
        async for delta in super().generate(prompt_ids, sampling, request_id):
            yield delta
            n += 1
            if n == 3:
                raise RuntimeError("the engine broke")


def serve(engine: Served | None = None, started: bool = True, keys: SecretKeys = KEYS,
          **server: Any) -> tuple[TestClient, Served, AppState]:
    """The app as ``ponder serve`` builds it, on a scripted engine (no lifespan: what
    the engine start sets up is set here)."""
    overrides: dict[str, Any] = {"server": {"api_keys": [KEY], **server.pop("server", {})}, **server}
    state = AppState(load_settings(overrides=overrides), "unused", secrets=keys)
    engine = engine or Served(char_model_info(max_model_len=4096), script)
    cfg = state.settings.model
    state.renderer = Renderer.build(engine.tokenizer, cfg.think_open, cfg.think_close, cfg.native_thinking,
                                    cfg.chat_template_kwargs, cfg.tool_prompt, cfg.keep_reasoning)
    state.followup = followup_renderer(engine.tokenizer, cfg.chat_template_kwargs)
    state.sandbox_unavailable = "not in unit tests"
    if started:
        state.engine = engine
    http = TestClient(create_app(state, lambda: engine), headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"})
    return http, engine, state


@pytest.fixture
def served() -> tuple[TestClient, Served, AppState]:
    return serve()


def body(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 200, "messages": [{"role": "user", "content": "What is 6*7?"}], **fields}


THINK = {"thinking": {"type": "enabled", "budget_tokens": 64}}


def anthropic_error(r: Any, status: int, kind: str, param: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json") and r.headers["x-request-id"]
    err = r.json()
    assert set(err) == {"type", "error"} and err["type"] == "error", err
    assert err["error"]["type"] == kind and err["error"]["message"], err
    if param is not None:
        assert err["error"].get("param") == param, err
    return err["error"]


# -- the message and its stream ------------------------------------------------------


@pytest.mark.parametrize("fields", [{}, THINK, {"system": "Be brief.", **THINK}, {"output_config": {"effort": "low"}}],
                         ids=["plain", "thinking", "system", "effort-low"])
def test_the_stream_folds_to_the_message(served: tuple[TestClient, Served, AppState], fields: dict) -> None:
    http, engine, _ = served
    r = http.post("/v1/messages", json=body(**fields))
    assert r.status_code == 200, r.text
    assert r.headers["x-reasoning-strategy"] == r.json()["reasoning_plan"]["strategy"]
    message = anthropic.types.Message.model_validate(r.json())
    assert message.id.startswith("msg_") and message.model == MODEL and message.stop_reason == "end_turn"
    fresh, _, _ = serve()  # a fresh engine: its prefix cache as cold as the first one's
    s = fresh.post("/v1/messages", json=body(**fields, stream=True))
    assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
    events = sse_events(s.content)
    check_block_order(events)
    snapshot, bufs = None, {}
    for e in events:
        if e["type"] != "ping":
            snapshot = anthropic.lib.streaming._messages.accumulate_event(
                event=e, current_snapshot=snapshot, json_bufs=bufs)  # type: ignore[arg-type]
    assert snapshot is not None
    assert [b.to_dict() for b in snapshot.content] == r.json()["content"]
    assert snapshot.usage.to_dict() == r.json()["usage"] and snapshot.stop_reason == message.stop_reason
    assert events[-2]["reasoning_trace"] == r.json()["reasoning_trace"]


def test_thinking_comes_first_and_its_signature_verifies(served: tuple[TestClient, Served, AppState]) -> None:
    http, _, state = served
    content = http.post("/v1/messages", json=body(**THINK)).json()["content"]
    assert [b["type"] for b in content] == ["thinking", "text"]
    assert content[0]["thinking"] == THOUGHT + "\n" and content[1]["text"] == "The answer is 42."
    assert content[0]["signature"] == sign_thinking(state.keys, content[0]["thinking"])


@pytest.mark.parametrize("budget", [1, 16, 40])
def test_budget_tokens_caps_the_thinking(budget: int) -> None:
    """A model that never closes its thinking is cut at budget_tokens (Anthropic's minimum of 1024 not kept)."""
    http, engine, _ = serve(Served(char_model_info(), lambda p, s: "x" * 5000 if decode(p).endswith("<think>\n")
                                   else "ok" + EOS))
    r = http.post("/v1/messages", json=body(thinking={"type": "enabled", "budget_tokens": budget}))
    assert r.status_code == 200, r.text
    usage, trace = r.json()["usage"], r.json()["reasoning_trace"]
    assert usage["output_tokens_details"]["thinking_tokens"] == budget == trace["thinking"]["tokens"]
    assert trace["thinking"]["cut_by_budget"]
    assert engine.calls[0].sampling.max_tokens == budget


def test_budget_is_lowered_to_keep_the_answer_its_room(served: tuple[TestClient, Served, AppState]) -> None:
    http, _, _ = served
    r = http.post("/v1/messages", json=body(max_tokens=100, thinking={"type": "enabled", "budget_tokens": 90}))
    assert r.status_code == 200 and r.json()["reasoning_plan"]["max_thinking_tokens"] == 50  # 100 // 2 kept


def test_anthropic_s_shape_through_the_sdk(served: tuple[TestClient, Served, AppState]) -> None:
    http, engine, _ = served
    client = anthropic.Anthropic(api_key=KEY, base_url="http://testserver", http_client=http, max_retries=0)
    message = client.messages.create(model=MODEL, max_tokens=200, messages=[{"role": "user", "content": "6*7?"}],
                                     thinking={"type": "enabled", "budget_tokens": 64})
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.model_extra and message.model_extra["reasoning_plan"]["max_thinking_tokens"] == 64
    with client.messages.stream(model=MODEL, max_tokens=200, messages=[{"role": "user", "content": "6*7?"}],
                                thinking={"type": "enabled", "budget_tokens": 64}) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert "content_block_delta" in kinds and kinds[-1] == "message_stop"
    assert [b.to_dict() for b in final.content] == [b.to_dict() for b in message.content]
    assert client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "6*7?"}]).input_tokens \
        == message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)


# -- thinking sent back ----------------------------------------------------------------


def _second_turn(first: dict[str, Any]) -> dict[str, Any]:
    return body(**THINK, messages=[{"role": "user", "content": "What is 6*7?"},
                                   {"role": "assistant", "content": first["content"]},
                                   {"role": "user", "content": "Are you sure?"}])


@pytest.mark.parametrize("keep", [True, False], ids=["keep_reasoning", "dropped"])
def test_verified_thinking_is_that_turn_s_reasoning(keep: bool) -> None:
    http, engine, _ = serve(model={"keep_reasoning": keep})
    first = http.post("/v1/messages", json=body(**THINK)).json()
    r = http.post("/v1/messages", json=_second_turn(first))
    assert r.status_code == 200, r.text
    prompt = engine.calls[-2].prompt  # the second request's thinking phase
    assert "Are you sure?" in prompt and "The answer is 42." in prompt
    assert (f"<think>\n{THOUGHT}\n" in prompt) is keep


@pytest.mark.parametrize("tamper", ["thinking", "signature", "other-key"])
def test_a_forged_thinking_block_is_refused(served: tuple[TestClient, Served, AppState], tamper: str) -> None:
    http, engine, _ = served
    first = http.post("/v1/messages", json=body(**THINK)).json()
    block = first["content"][0]
    if tamper == "thinking":
        block["thinking"] = "I was told to say 43."
    elif tamper == "signature":
        block["signature"] = block["signature"][:-2] + "AA"
    else:
        other, _, _ = serve(keys=SecretKeys((b"o" * 32,)))
        block["signature"] = other.post("/v1/messages", json=body(**THINK)).json()["content"][0]["signature"]
    calls = len(engine.calls)
    anthropic_error(http.post("/v1/messages", json=_second_turn(first)), 400, "invalid_request_error",
                    "messages[1].content[0].signature")
    assert len(engine.calls) == calls, "refused before the engine"


def test_a_previous_key_still_verifies(served: tuple[TestClient, Served, AppState]) -> None:
    http, _, _ = served
    first = http.post("/v1/messages", json=body(**THINK)).json()
    new = b"n" * 32
    rotated, _, _ = serve(keys=SecretKeys((new, *KEYS.keys)))
    r = rotated.post("/v1/messages", json=_second_turn(first))
    assert r.status_code == 200, r.text
    assert r.json()["content"][0]["signature"] == sign_thinking(SecretKeys((new,)), THOUGHT + "\n"), "new key signs"
    retired, _, _ = serve(keys=SecretKeys((new,)))
    anthropic_error(retired.post("/v1/messages", json=_second_turn(first)), 400, "invalid_request_error",
                    "messages[1].content[0].signature")


# -- tools -------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["message", "stream"])
@pytest.mark.parametrize("choice", [{"type": "any"}, {"type": "tool", "name": "get_weather"}], ids=["any", "tool"])
def test_a_tool_round_trip(served: tuple[TestClient, Served, AppState], choice: dict, stream: bool) -> None:
    http, engine, _ = served
    ask = body(**THINK, tools=[WEATHER], tool_choice=choice, messages=[{"role": "user", "content": "Weather?"}])
    r = http.post("/v1/messages", json={**ask, "stream": stream})
    assert r.status_code == 200, r.text
    if stream:
        events = sse_events(r.content)
        deltas = [e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"
                  and e["delta"]["type"] == "input_json_delta"]
        assert json.loads("".join(deltas)) == {"city": "Paris"}
        assert events[-2]["delta"]["stop_reason"] == "tool_use"
        r = http.post("/v1/messages", json=ask)
    message = r.json()
    assert message["stop_reason"] == "tool_use"
    assert [b["type"] for b in message["content"]] == ["thinking", "tool_use"]
    call = message["content"][1]
    assert call["name"] == "get_weather" and call["input"] == {"city": "Paris"} and call["id"]
    follow = {**ask, "tool_choice": {"type": "none"}, "messages": [
        *ask["messages"], {"role": "assistant", "content": message["content"]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "18 C"}]}]}
    r = http.post("/v1/messages", json=follow)
    assert r.status_code == 200, r.text
    assert r.json()["stop_reason"] == "end_turn" and r.json()["content"][-1]["text"] == "The answer is 42."
    prompt = engine.calls[-1].prompt  # SmolLM2-like template: ponder writes the Hermes convention
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert "<tool_response>\n18 C\n</tool_response>" in prompt


# -- stop reasons ------------------------------------------------------------------------


def test_stop_sequence_is_named() -> None:
    http, engine, _ = serve(Served(char_model_info(), ["one two END three" + EOS]))
    r = http.post("/v1/messages", json=body(stop_sequences=["NOPE", "END"]))
    assert (r.json()["stop_reason"], r.json()["stop_sequence"]) == ("stop_sequence", "END")
    assert r.json()["content"] == [{"type": "text", "text": "one two "}]
    assert engine.calls[0].sampling.stop == ("NOPE", "END")


def test_max_tokens_stop_reason() -> None:
    http, _, _ = serve(Served(char_model_info(), ["y" * 100]))
    r = http.post("/v1/messages", json=body(max_tokens=10))
    assert r.json()["stop_reason"] == "max_tokens" and r.json()["stop_sequence"] is None
    assert r.json()["usage"]["output_tokens"] == 10


def test_sampling_fields_reach_the_engine(served: tuple[TestClient, Served, AppState]) -> None:
    http, engine, _ = served
    r = http.post("/v1/messages", json=body(temperature=0.25, top_p=0.5, top_k=7, seed=3,
                                            metadata={"user_id": "u"}))
    assert r.status_code == 200, r.text
    s = engine.calls[0].sampling
    assert (s.temperature, s.top_p, s.top_k, s.seed, s.max_tokens) == (0.25, 0.5, 7, 3, 200)


# -- count_tokens --------------------------------------------------------------------------

COUNTED = {
    "plain": {},
    "system-blocks": {"system": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
    "tools": {"tools": [WEATHER], "tool_choice": {"type": "any"}},
    "thinking": THINK,
    "conversation": {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                  {"role": "user", "content": [{"type": "text", "text": "c"}]}]},
}


@pytest.mark.parametrize("name", list(COUNTED))
def test_count_tokens_is_the_prompt_the_engine_sees(served: tuple[TestClient, Served, AppState], name: str) -> None:
    http, engine, _ = served
    fields = COUNTED[name]
    r = http.post("/v1/messages", json=body(**fields))
    assert r.status_code == 200, r.text
    count = http.post("/v1/messages/count_tokens", json={k: v for k, v in body(**fields).items()
                                                         if k != "max_tokens"})
    assert count.status_code == 200 and set(count.json()) == {"input_tokens"}
    n = count.json()["input_tokens"]
    usage = r.json()["usage"]
    assert n == usage["input_tokens"] + usage["cache_read_input_tokens"]
    first = engine.calls[0]  # the thinking phase sees the server's "<think>\n" after the prompt
    assert len(first.prompt_ids) == n + (len("<think>\n") if "thinking" in fields else 0)


def test_count_tokens_counts_a_prompt_over_the_context(served: tuple[TestClient, Served, AppState]) -> None:
    http, engine, _ = served
    long = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 5000}]}
    assert http.post("/v1/messages/count_tokens", json=long).json()["input_tokens"] > 5000
    anthropic_error(http.post("/v1/messages", json={**long, "max_tokens": 10}), 400, "invalid_request_error",
                    "messages")
    assert not engine.calls


# -- errors in Anthropic's shape, from every layer ---------------------------------------

REFUSED = [
    ("unknown-model", {"model": "claude-9"}, 404, "not_found_error", "model"),
    ("validation", {"max_tokens": "200"}, 400, "invalid_request_error", "max_tokens"),
    ("missing-max_tokens", {"max_tokens": None}, 400, "invalid_request_error", "max_tokens"),
    ("unknown-field", {"service_tier": "auto"}, 400, "invalid_request_error", "service_tier"),
    ("budget-not-below-max", {"thinking": {"type": "enabled", "budget_tokens": 200}}, 400, "invalid_request_error",
     "thinking.budget_tokens"),
    ("tool_choice-without-tools", {"tool_choice": {"type": "any"}}, 400, "invalid_request_error", "tool_choice"),
    ("bad-input-schema", {"tools": [{**WEATHER, "input_schema": {"type": 5}}]}, 400, "invalid_request_error",
     "tools[0].input_schema"),
    ("unknown-effort", {"output_config": {"effort": "galaxy"}}, 400, "invalid_request_error", "output_config.effort"),
    ("over-the-context", {"max_tokens": 100_000}, 400, "invalid_request_error", "max_tokens"),
    ("explicit-cap-too-big", {"reasoning": {"max_thinking_tokens": 190}}, 400, "invalid_request_error",
     "reasoning.max_thinking_tokens"),
    ("adaptive-with-tools", {"thinking": {"type": "adaptive"}, "tools": [WEATHER], "tool_choice": {"type": "any"}}, 400, "invalid_request_error",
     "thinking.type"),
    ("format-with-tools", {"tools": [WEATHER], "output_config": {"format": {"type": "json_schema",
                                                                           "schema": {"type": "object"}}}},
     400, "invalid_request_error", "output_config.format"),
    ("timeout-too-long", {"timeout": 10**6}, 400, "invalid_request_error", "timeout"),
    ("too-many-messages", {"messages": [{"role": "user", "content": "a"}] * 513}, 400, "invalid_request_error",
     "messages"),
    ("too-many-samples", {"reasoning": {"strategy": "self_consistency", "samples": 65}}, 400, "invalid_request_error",
     "reasoning.samples"),
]


@pytest.mark.parametrize("name,fields,status,kind,param", REFUSED, ids=[r[0] for r in REFUSED])
@pytest.mark.parametrize("stream", [False, True], ids=["message", "stream"])
def test_refused_before_the_engine(served: tuple[TestClient, Served, AppState], name: str, fields: dict, status: int,
                                   kind: str, param: str, stream: bool) -> None:
    http, engine, _ = served
    sent = {k: v for k, v in body(**fields, stream=stream).items() if v is not None}
    anthropic_error(http.post("/v1/messages", json=sent), status, kind, param)
    assert not engine.calls


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
def test_api_key_by_either_header(path: str) -> None:
    http, _, _ = serve()
    ok = body() if path == "/v1/messages" else {"model": MODEL, "messages": body()["messages"]}
    assert http.post(path, json=ok).status_code == 200  # x-api-key
    assert http.post(path, json=ok, headers={"x-api-key": "", "authorization": f"Bearer {KEY}"}).status_code == 200
    for headers in ({"x-api-key": ""}, {"x-api-key": "wrong"}, {"x-api-key": "", "authorization": "Bearer wrong"}):
        error = anthropic_error(http.post(path, json=ok, headers=headers), 401, "authentication_error")
        assert "x-api-key" in error["message"]


def test_other_routes_keep_the_openai_shape() -> None:
    http, _, _ = serve()
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    assert http.post("/v1/chat/completions", json=chat).status_code == 200, "x-api-key works on every route"
    r = http.post("/v1/chat/completions", json=chat, headers={"x-api-key": "wrong"})
    assert r.status_code == 401 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = http.post("/v1/chat/completions", json={**chat, "max_tokens": "8"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"


def test_malformed_bodies_and_unknown_routes() -> None:
    http, _, _ = serve(server={"max_body_bytes": 2048})
    raw = {"content-type": "application/json"}
    anthropic_error(http.post("/v1/messages", content=b'{"model": "x",', headers=raw), 400, "invalid_request_error")
    anthropic_error(http.post("/v1/messages", content=b"[]", headers=raw), 400, "invalid_request_error")
    anthropic_error(http.post("/v1/messages", content=b"x" * 4096, headers=raw), 413, "request_too_large")
    anthropic_error(http.post("/v1/messages/nope", json=body()), 404, "not_found_error")
    anthropic_error(http.get("/v1/messages"), 405, "invalid_request_error")


def test_engine_not_ready_is_overloaded_529() -> None:
    http, _, _ = serve(started=False)
    r = http.post("/v1/messages", json=body())
    anthropic_error(r, 529, "overloaded_error")
    assert r.headers["retry-after"]
    anthropic_error(http.post("/v1/messages/count_tokens", json={"model": MODEL, "messages": body()["messages"]}),
                    529, "overloaded_error")


def test_at_capacity_is_rate_limited_429() -> None:
    http, _, state = serve(server={"max_concurrent_sequences": 4})
    state.admission.in_use = 4  # as if other requests held every sequence
    r = http.post("/v1/messages", json=body())
    anthropic_error(r, 429, "rate_limit_error")
    assert r.headers["retry-after"]


def test_engine_failure_is_api_error_before_and_after_the_first_byte() -> None:
    http, _, _ = serve(Broken(char_model_info(), [["a", " long", " answer", " that", " goes", " on"]] * 2))
    anthropic_error(http.post("/v1/messages", json=body()), 500, "api_error")
    s = http.post("/v1/messages", json=body(stream=True))
    assert s.status_code == 200
    events = sse_events(s.content)
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "error"
    assert events[-1]["error"]["type"] == "api_error" and "message_stop" not in [e["type"] for e in events]


@pytest.mark.parametrize("stream", [False, True], ids=["message", "stream"])
def test_the_deadline_is_timeout_error(stream: bool) -> None:
    engine = Slow(char_model_info(), [["z"] * 1000])  # 1000 deltas, 10 ms apart
    http, _, _ = serve(engine)
    r = http.post("/v1/messages", json=body(max_tokens=1000, timeout=0.3, stream=stream))
    if stream:
        events = sse_events(r.content)
        assert r.status_code == 200 and events[-1]["type"] == "error"
        assert events[-1]["error"]["type"] == "timeout_error"
    else:
        anthropic_error(r, 504, "timeout_error")
        assert r.headers["x-should-retry"] == "false"
    assert engine.aborted and engine.in_flight == 0


# -- a client that leaves -------------------------------------------------------------------


async def post_then_leave(state: AppState, engine: Served, path: str, fields: dict[str, Any],
                          until: Callable[[], bool] | None = None) -> list[dict]:
    """POST ``fields`` to ``path`` straight through the ASGI app, and disconnect once
    the engine is generating (and ``until()`` holds); what the app sent (after a first
    placeholder)."""
    app = create_app(state, lambda: engine)
    payload = orjson.dumps(fields)
    running = asyncio.Event()
    sent: list[dict] = []

    async def receive() -> dict:
        if not sent:
            sent.append({})
            return {"type": "http.request", "body": payload, "more_body": False}
        await running.wait()  # the engine is generating: now the client goes away
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    async def watch() -> None:
        def ready() -> bool:
            if until is not None:
                return bool(engine.in_flight) and until()
            return bool(engine.in_flight) or any(m.get("type") == "http.response.body" for m in sent[1:])

        while not ready():
            await asyncio.sleep(0.005)
        running.set()

    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "scheme": "http", "server": ("testserver", 80),
             "client": ("test", 1), "http_version": "1.1", "asgi": {"version": "3.0"},
             "headers": [(b"content-type", b"application/json"), (b"x-api-key", KEY.encode()),
                         (b"content-length", str(len(payload)).encode())]}
    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(app(scope, receive, send), 5)
    await watcher
    return sent


@pytest.mark.parametrize("stream", [False, True], ids=["message", "stream"])
@pytest.mark.asyncio
async def test_a_disconnect_aborts_the_engine_work(stream: bool) -> None:
    engine = Slow(char_model_info(), [["z"] * 3000])
    _, _, state = serve(engine)
    sent = await post_then_leave(state, engine, "/v1/messages", body(max_tokens=3000, stream=stream))
    assert not any(m.get("status", 200) != 200 for m in sent[1:]), sent
    assert engine.aborted and engine.in_flight == 0
    assert not engine.finished, "nothing ran to the end"
    assert state.admission.in_use == 0, "the admission ticket is released"
