"""The Anthropic encoders (server/messages_encode.py) are two folds of one event
stream: for every strategy (the cases of test_response_shapes, one choice each)
and for hand-made event sequences (tool calls, stop sequences, interleaved
thinking), the SSE events, folded the way the ``anthropic`` SDK folds them,
equal the non-streamed message, and both have the shapes of the wire models
(which forbid undeclared fields) and of the SDK's own types.
"""
from __future__ import annotations

from typing import Any

import anthropic.types as at
import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event  # the SDK's own fold of a stream
from pydantic import TypeAdapter

from server import messages_wire as mw
from server.errors import APIError
from server.messages_encode import MessageFold, MessageMeta, MessageStream, error_shape
from server.messages_map import THINKING, sign_thinking
from server.secret_key import SecretKeys
from strategies.events import Answer, ChoiceDone, Event, Progress, Thinking, ToolCallDelta
from strategies.ledger import Usage
from strategies.single import SingleTrace
from tests.unit.harness import make_plan, text_of
from tests.unit.test_response_shapes import SHAPES, _models

KEYS = SecretKeys((b"s" * 32,))
OURS = {m.model_fields["type"].annotation.__args__[0]: m for m in mw.STREAM_EVENTS}  # type: ignore[union-attr]
SDK_EVENT = TypeAdapter(at.RawMessageStreamEvent)
ONE_CHOICE = [name for name, shape in SHAPES.items() if shape.n == 1]


def encode(events: list[Event], usage: Usage, plan: dict[str, Any], include_reasoning: bool = True
           ) -> tuple[bytes, dict[str, Any]]:
    """The raw SSE stream and the message the server makes of ``events``."""
    meta = MessageMeta(id="msg_1", model="m", plan=plan, prompt_tokens=usage.prompt_tokens,
                       include_reasoning=include_reasoning, sign=lambda t: sign_thinking(KEYS, t))
    enc = MessageStream(meta)
    raw = enc.start() + b"".join(f for e in events if (f := enc.feed(e)) is not None) + enc.finish(usage)
    fold = MessageFold(meta)
    fold.feed_all(events)
    return raw, orjson.loads(fold.finish(usage))


def sse_events(raw: bytes) -> list[dict[str, Any]]:
    """Every SSE event's data, checked to be ``event: <type>`` + ``data: <json of that type>``."""
    out = []
    for frame in raw.split(b"\n\n"):
        if not frame or frame.startswith(b":"):  # comments: progress
            continue
        head, data, *rest = frame.split(b"\n")
        assert not rest and head.startswith(b"event: ") and data.startswith(b"data: "), frame
        obj = orjson.loads(data[len(b"data: "):])
        assert obj["type"] == head[len(b"event: "):].decode()
        out.append(obj)
    return out


def check_block_order(stream: list[dict[str, Any]]) -> None:
    """message_start, ping, blocks one at a time (a thinking block's signature_delta just
    before its stop), then message_delta and message_stop."""
    kinds = [e["type"] for e in stream]
    assert kinds[:2] == ["message_start", "ping"] and kinds[-2:] == ["message_delta", "message_stop"]
    open_block, count, last = None, 0, None
    for e in stream[2:-2]:
        if e["type"] == "content_block_start":
            assert open_block is None and e["index"] == count
            open_block, count = e["content_block"]["type"], count + 1
        elif e["type"] == "content_block_delta":
            assert open_block is not None and e["index"] == count - 1
            assert last != "signature_delta", "the signature is a thinking block's last delta"
            assert {"thinking": ("thinking_delta", "signature_delta"), "text": ("text_delta",),
                    "tool_use": ("input_json_delta",)}[open_block].count(e["delta"]["type"])
        elif e["type"] == "content_block_stop":
            assert e["index"] == count - 1 and (open_block != "thinking" or last == "signature_delta")
            open_block = None
        else:
            raise AssertionError(e)
        last = e["delta"]["type"] if e["type"] == "content_block_delta" else None
    assert open_block is None


def check_folds(events: list[Event], usage: Usage, plan: dict[str, Any], include_reasoning: bool = True
                ) -> dict[str, Any]:
    raw, body = encode(events, usage, plan, include_reasoning)
    stream = sse_events(raw)
    # -- shapes: ours (undeclared fields refused) and the SDK's ----------------------
    mw.MessageOut.model_validate(body)
    at.Message.model_validate(body)
    for e in stream:
        OURS[e["type"]].model_validate(e)
        if e["type"] != "ping":  # the SDK drops pings before parsing
            SDK_EVENT.validate_python(e)
    check_block_order(stream)
    # -- the stream, folded as the SDK folds it, is the message ----------------------
    snapshot, bufs = None, {}
    for e in stream:
        if e["type"] != "ping":
            snapshot = accumulate_event(event=e, current_snapshot=snapshot, json_bufs=bufs)  # type: ignore[arg-type]
    assert snapshot is not None
    assert [b.to_dict() for b in snapshot.content] == body["content"]
    assert (snapshot.stop_reason, snapshot.stop_sequence) == (body["stop_reason"], body["stop_sequence"])
    assert snapshot.usage.to_dict() == body["usage"]
    assert (snapshot.id, snapshot.model, snapshot.role) == (body["id"], body["model"], "assistant")
    # ponder's extras: the plan on message_start's message, the trace on message_delta.
    assert stream[0]["message"]["reasoning_plan"] == body["reasoning_plan"] == plan
    assert (snapshot.model_extra or {})["reasoning_plan"] == plan
    assert stream[-2]["reasoning_trace"] == body["reasoning_trace"]
    # -- what the blocks say ---------------------------------------------------------
    blocks = body["content"]
    thoughts = [b for b in blocks if b["type"] == "thinking"]
    assert all(KEYS.verify(THINKING, b["thinking"].encode(), b["signature"]) for b in thoughts)
    assert "".join(b["thinking"] for b in thoughts) == (text_of(events, Thinking, untagged=True)
                                                        if include_reasoning else "")
    assert "".join(b["text"] for b in blocks if b["type"] == "text") == text_of(events, Answer)
    assert body["usage"]["output_tokens"] == usage.completion_tokens
    assert body["usage"]["output_tokens_details"]["thinking_tokens"] == usage.reasoning_tokens
    assert body["usage"]["input_tokens"] + body["usage"]["cache_read_input_tokens"] == usage.prompt_tokens
    return body


@pytest.mark.parametrize("include_reasoning", [True, False], ids=["reasoning", "excluded"])
@pytest.mark.parametrize("name", ONE_CHOICE)
@pytest.mark.asyncio
async def test_every_strategy_streams_what_it_answers(name: str, include_reasoning: bool) -> None:
    shape = SHAPES[name]
    events, usage = await shape.run()
    body = check_folds(events, usage, shape.plan.public(), include_reasoning)
    assert body["reasoning_trace"]["strategy"] == shape.plan.strategy
    assert body["stop_reason"] in ("end_turn", "max_tokens")
    if include_reasoning and shape.plan.thinking and text_of(events, Thinking, untagged=True):
        assert body["content"][0]["type"] == "thinking", "the thinking comes first"


def test_every_strategy_case_of_one_choice_is_here() -> None:
    assert {SHAPES[n].plan.strategy for n in ONE_CHOICE} == {s.plan.strategy for s in SHAPES.values()}


TRACE = SingleTrace("single")
USAGE = Usage(prompt_tokens=20, completion_tokens=30, reasoning_tokens=10, cached_tokens=16)


def done(reason: str = "stop", stop: str | None = None) -> ChoiceDone:
    return ChoiceDone(0, reason, TRACE, stop)


# id -> (events, expected content, stop_reason, stop_sequence)
CASES: dict[str, tuple[list[Event], list[dict[str, Any]], str, str | None]] = {
    "tool-calls": ([Thinking(0, "I should "), Thinking(0, "call it."), Answer(0, "Let me check."),
                    ToolCallDelta(0, 0, "call_a", "get_weather", '{"ci'), ToolCallDelta(0, 0, None, None, 'ty": "Paris"}'),
                    ToolCallDelta(0, 1, "call_b", "get_time", '{"city": "Rome"}'), done("tool_calls")],
                   [{"type": "thinking", "thinking": "I should call it."}, {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {"city": "Rome"}}],
                   "tool_use", None),
    "call-without-arguments": ([ToolCallDelta(0, 0, "call_a", "ping", ""), done("tool_calls")],
                               [{"type": "tool_use", "id": "call_a", "name": "ping", "input": {}}], "tool_use", None),
    "call-cut-by-max_tokens": ([ToolCallDelta(0, 0, "call_a", "f", '{"city": "Paris", "n": 1'), done("length")],
                               [{"type": "tool_use", "id": "call_a", "name": "f", "input": {"city": "Paris", "n": 1}}],
                               "max_tokens", None),
    "stop-sequence": ([Answer(0, "one two"), done("stop", "END")], [{"type": "text", "text": "one two"}],
                      "stop_sequence", "END"),
    "end-turn": ([Answer(0, "a"), Answer(0, ""), Answer(0, "b"), done()], [{"type": "text", "text": "ab"}],
                 "end_turn", None),
    "max_tokens": ([Thinking(0, "long"), done("length")], [{"type": "thinking", "thinking": "long"}], "max_tokens",
                   None),
    "abort": ([Answer(0, "x"), done("abort")], [{"type": "text", "text": "x"}], "refusal", None),
    "interleaved-thinking": ([Thinking(0, "a"), Answer(0, "b"), Thinking(0, "c"), Answer(0, "d"), done()],
                             [{"type": "thinking", "thinking": "a"}, {"type": "text", "text": "b"},
                              {"type": "thinking", "thinking": "c"}, {"type": "text", "text": "d"}], "end_turn", None),
    "candidates-and-progress": ([Thinking(0, "cand", candidate=1), Progress(0, {"done": 1}), Thinking(0, ""),
                                 Thinking(0, "mine"), Answer(0, "42"), done()],
                                [{"type": "thinking", "thinking": "mine"}, {"type": "text", "text": "42"}],
                                "end_turn", None),
    "nothing": ([done()], [], "end_turn", None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_event_sequences(name: str) -> None:
    events, content, stop_reason, stop_sequence = CASES[name]
    body = check_folds(events, USAGE, make_plan().public())
    assert [{k: v for k, v in b.items() if k != "signature"} for b in body["content"]] == content
    assert (body["stop_reason"], body["stop_sequence"]) == (stop_reason, stop_sequence)
    assert body["usage"] == {"input_tokens": 4, "output_tokens": 30, "cache_read_input_tokens": 16,
                             "cache_creation_input_tokens": 0, "output_tokens_details": {"thinking_tokens": 10}}


def test_each_thinking_block_is_signed_over_its_own_text() -> None:
    body = check_folds(CASES["interleaved-thinking"][0], USAGE, {})
    a, c = body["content"][0], body["content"][2]
    assert a["signature"] == sign_thinking(KEYS, "a") and c["signature"] == sign_thinking(KEYS, "c")


def test_progress_is_an_sse_comment_and_pings_are_anthropic_events() -> None:
    raw, _ = encode([Progress(0, {"candidate": 2}), done()], USAGE, {})
    assert b': progress {"choice":0,"candidate":2}\n\n' in raw
    assert MessageStream.ping == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert MessageFold.ping == b""


ERRORS = [(400, "invalid_request_error", 400), (401, "authentication_error", 401), (404, "not_found_error", 404),
          (413, "request_too_large", 413), (429, "rate_limit_error", 429), (500, "api_error", 500),
          (503, "overloaded_error", 529), (504, "timeout_error", 504), (418, "api_error", 418)]


@pytest.mark.parametrize("status,kind,http", ERRORS, ids=[str(e[0]) for e in ERRORS])
def test_errors_take_anthropic_s_shape(status: int, kind: str, http: int) -> None:
    err = APIError(status, "went wrong", "thinking.budget_tokens" if status == 400 else None)
    got_status, body = error_shape(err)
    assert got_status == http
    assert body == {"type": "error", "error": {"type": kind, "message": "went wrong",
                                               **({"param": "thinking.budget_tokens"} if status == 400 else {})}}
    mw.AnthropicError.model_validate(body)
    meta = MessageMeta("msg_1", "m", {}, 1, True, lambda t: "")
    assert orjson.loads(MessageFold(meta).error(err)) == body and MessageFold(meta).error_status(err) == http
    frame = MessageStream(meta).error(err)
    assert frame == b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"
    assert MessageStream(meta).error_status(err) == http


@pytest.mark.parametrize("model", mw.RESPONSE_MODELS, ids=lambda m: m.__name__)
def test_every_nested_response_model_forbids_undeclared_fields(model: type) -> None:
    """So a field an encoder adds without declaring it fails the shape checks above."""
    models = _models(model)
    assert {m.__name__: m.model_config.get("extra") for m in models} == {m.__name__: "forbid" for m in models}
