"""server/responses_encode.py: the stream and the response object are folds of
one event stream. The stream, read by the ``openai`` SDK's own stream state
(``ResponseStreamState``: its delta accumulation and its final response), equals
the non-streamed object, event for event sequence, for every kind of item."""
from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai._models import construct_type
from openai._types import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent

from server.errors import APIError
from server.responses_encode import ResponseMeta, ResponseObjectFold, ResponseStream
from server.responses_summary import Summary
from strategies.events import Answer, ChoiceDone, Progress, Thinking, ToolCallDelta
from strategies.ledger import Usage
from strategies.single import SingleTrace

USAGE = Usage(prompt_tokens=10, completion_tokens=20, reasoning_tokens=8, cached_tokens=4)
TRACE = SingleTrace("single")


def meta(seal: bool = True) -> ResponseMeta:
    return ResponseMeta(id="resp_abc", created_at=1, echo={"model": "m", "tools": [], "tool_choice": "auto",
                                                           "parallel_tool_calls": True},
                        plan={"strategy": "single"}, include_reasoning=True,
                        seal=(lambda t: f"sealed({t})") if seal else None)


def done(finish: str = "stop") -> ChoiceDone:
    return ChoiceDone(0, finish, TRACE)


SCRIPTS = {
    "answer": [Answer(0, "The answer"), Answer(0, ""), Answer(0, " is 42."), done()],
    "thinking": [Thinking(0, "Six "), Thinking(0, "sevens.", candidate=1), Thinking(0, "times seven."),
                 Progress(0, {"votes": 1}), Answer(0, "42"), done()],
    "summary": [Thinking(0, "Hmm."), Summary(0, "It is "), Summary(0, "42."), Summary(0, "", {"tokens": 3}),
                Answer(0, "42"), done()],
    "tools": [Thinking(0, "Call it."), ToolCallDelta(0, 0, "call_1", "f", '{"a"'), ToolCallDelta(0, 0, None, None, ": 1}"),
              ToolCallDelta(0, 1, "call_2", "g", "{}"), done("tool_calls")],
    "text-then-tool": [Answer(0, "Let me check."), ToolCallDelta(0, 0, "call_1", "f", "{}"), done("tool_calls")],
    "cut": [Thinking(0, "long"), Answer(0, "partial"), done("length")],
    "nothing": [done()],
}


def sse(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for frame in raw.split(b"\n\n"):
        if not frame or frame.startswith(b":"):
            continue
        head, data = frame.split(b"\n", 1)
        event = orjson.loads(data.removeprefix(b"data: "))
        assert head == b"event: " + event["type"].encode()
        out.append(event)
    return out


def unparsed(value: Any) -> Any:
    """What the SDK's parsing adds (``parsed``, ``parsed_arguments``) taken out again."""
    if isinstance(value, dict):
        return {k: unparsed(v) for k, v in value.items() if k not in ("parsed", "parsed_arguments")}
    return [unparsed(v) for v in value] if isinstance(value, list) else value


def streamed(events: list) -> list[dict[str, Any]]:
    enc = ResponseStream(meta())
    raw = enc.start() + b"".join(f for e in events if (f := enc.feed(e))) + enc.finish(USAGE)
    return sse(raw)


def folded(events: list) -> dict[str, Any]:
    fold = ResponseObjectFold(meta())
    fold.feed_all(events)
    return orjson.loads(fold.finish(USAGE))


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_the_sdk_s_fold_of_the_stream_is_the_response(name: str) -> None:
    events = streamed(SCRIPTS[name])
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    state: ResponseStreamState = ResponseStreamState(input_tools=omit, text_format=omit)
    final = None
    for e in events:
        for out in state.handle_event(construct_type(type_=ResponseStreamEvent, value=e)):  # type: ignore[arg-type]
            if out.type in ("response.completed", "response.incomplete"):
                final = out.response
    body = folded(SCRIPTS[name])
    assert final is not None
    assert unparsed(final.to_dict(exclude_unset=True)["output"]) == events[-1]["response"]["output"]
    last = events[-1]["response"]
    assert abs((last.pop("completed_at") or 0) - (body.pop("completed_at") or 0)) <= 1
    assert last == body, "the last event carries the non-streamed response"
    # The SDK's own accumulation of the deltas (items as added, then their deltas) agrees with each item's done.
    dones = {e["output_index"]: e["item"] for e in events if e["type"] == "response.output_item.done"}
    for index, item in state._output_items.items():  # noqa: SLF001
        if item.type == "message":
            assert [c.text for c in item.content] == [c["text"] for c in dones[index]["content"]]
        elif item.type == "function_call":
            assert item.arguments == dones[index]["arguments"]
    # Deltas of reasoning text and summary (the SDK keeps only the done item) add up to it as well.
    for index, item in dones.items():
        if item["type"] == "reasoning":
            text = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta"
                           and e["output_index"] == index)
            summary = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_summary_text.delta"
                              and e["output_index"] == index)
            assert text == "".join(c["text"] for c in item["content"])
            assert summary == "".join(s["text"] for s in item["summary"])
            assert item["encrypted_content"] == f"sealed({text})"


def test_items_and_status() -> None:
    body = folded(SCRIPTS["tools"])
    assert [o["type"] for o in body["output"]] == ["reasoning", "function_call", "function_call"]
    assert [(o["call_id"], o["name"], o["arguments"]) for o in body["output"][1:]] == [
        ("call_1", "f", '{"a": 1}'), ("call_2", "g", "{}")]
    assert body["output"][0]["content"] == [{"type": "reasoning_text", "text": "Call it."}]
    assert body["output"][0]["summary"] == []
    assert body["status"] == "completed" and body["incomplete_details"] is None
    assert body["usage"] == {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
                             "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 8}, "total_tokens": 30}
    cut = folded(SCRIPTS["cut"])
    assert cut["status"] == "incomplete" and cut["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [o["status"] for o in cut["output"]] == ["completed", "incomplete"], "the thinking ended, the answer was cut"
    assert streamed(SCRIPTS["cut"])[-1]["type"] == "response.incomplete"
    summary = folded(SCRIPTS["summary"])
    assert summary["output"][0]["summary"] == [{"type": "summary_text", "text": "It is 42."}]
    assert summary["reasoning_trace"]["summary"] == {"tokens": 3}
    assert [o["id"] for o in folded(SCRIPTS["tools"])["output"]] == ["rs_abc", "fc_abc", "fc_abc_1"]


def test_candidates_thinking_and_excluded_thinking_stay_out() -> None:
    body = folded(SCRIPTS["thinking"])
    assert body["output"][0]["content"] == [{"type": "reasoning_text", "text": "Six times seven."}]
    m = ResponseMeta(**{**meta().__dict__, "include_reasoning": False})
    fold = ResponseObjectFold(m)
    fold.feed_all(SCRIPTS["thinking"])
    assert [o["type"] for o in fold.response(USAGE)["output"]] == ["message"]


def test_an_error_after_the_first_byte_is_an_error_event_then_failed() -> None:
    enc = ResponseStream(meta())
    raw = enc.start() + (enc.feed(Answer(0, "par")) or b"") + enc.error(APIError(500, "boom", code="engine_error"))
    events = sse(raw)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["message"] == "boom" and events[-2]["code"] == "engine_error"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"] == {"code": "server_error", "message": "boom"}
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
