"""Wire models for ``POST /v1/responses`` (OpenAI's Responses API).

As on the chat and Messages routes, a field ponder does not know is refused
(a 400 naming it), never ignored, and types are strict. Input items are told
apart by their ``type`` (a ``message`` may leave it out, as OpenAI's
"easy input message" does), so a bad item gets the error of the item it claims
to be, at its own place (``input[2].call_id``). What each field means for a
run is in server/responses_map.py; what comes back in
server/responses_encode.py.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .messages_wire import _by_type, _text_or
from .wire import _INTEGRAL, ReasoningOptions


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class InputText(_Strict):
    type: Literal["input_text"]
    text: str


class OutputText(_Strict):
    """An earlier answer sent back (``annotations`` / ``logprobs`` as returned)."""

    type: Literal["output_text"]
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None
    # The SDK's own parse of ``text`` (``responses.parse`` / ``stream``), sent back with it; the text is what counts.
    parsed: Any = None


TextPart = _by_type({"input_text": InputText, "output_text": OutputText})
_Status = Literal["in_progress", "completed", "incomplete"]


class MessageItem(_Strict):
    type: Literal["message"] | None = None
    id: str | None = None
    status: _Status | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: _text_or(list[TextPart])  # type: ignore[valid-type]


class SummaryText(_Strict):
    type: Literal["summary_text"]
    text: str


class ReasoningText(_Strict):
    type: Literal["reasoning_text"]
    text: str


class ReasoningItem(_Strict):
    """An earlier turn's reasoning: restored from ``encrypted_content`` (a
    ``store: false`` client) or, without it, from the store by ``id``."""

    type: Literal["reasoning"]
    id: str | None = None
    status: _Status | None = None
    summary: list[SummaryText] = []
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None


class FunctionCallItem(_Strict):
    type: Literal["function_call"]
    id: str | None = None
    status: _Status | None = None
    call_id: Annotated[str, Field(min_length=1)]
    name: str
    arguments: str
    # The SDK's own parse of ``arguments`` (``responses.parse`` / ``stream``), sent back with it; the
    # arguments are what counts.
    parsed_arguments: Any = None


class FunctionCallOutputItem(_Strict):
    type: Literal["function_call_output"]
    id: str | None = None
    status: _Status | None = None
    call_id: Annotated[str, Field(min_length=1)]
    output: _text_or(list[InputText])  # type: ignore[valid-type]


def _item_type(value: Any) -> Any:
    """A message may leave its type out; anything else names its own."""
    if isinstance(value, dict) and value.get("type") is None and "role" in value:
        return {**value, "type": "message"}
    return value


InputItem = _by_type({"message": MessageItem, "reasoning": ReasoningItem, "function_call": FunctionCallItem,
                      "function_call_output": FunctionCallOutputItem})


class FunctionTool(_Strict):
    type: Literal["function"]
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class _AutoContainer(_Strict):
    type: Literal["auto"]


class CodeInterpreterTool(_Strict):
    """ponder's own code interpreter (its sandbox); OpenAI's container, uploaded
    files and memory limits have no meaning here, so only ``"auto"`` is taken."""

    type: Literal["code_interpreter"]
    container: Literal["auto"] | _AutoContainer | None = None


ToolDef = _by_type({"function": FunctionTool, "code_interpreter": CodeInterpreterTool})


class NamedFunction(_Strict):
    type: Literal["function"]
    name: str


class TextFormat(_Strict):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    type: Literal["text", "json_object", "json_schema"]
    # json_schema only (a 400 names what the other types do not take).
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")] | None = None
    description: str | None = None
    schema_: Annotated[dict[str, Any] | None, Field(alias="schema")] = None
    strict: bool | None = None


class TextConfig(_Strict):
    format: TextFormat | None = None


class ResponsesReasoning(ReasoningOptions):
    """OpenAI's ``reasoning`` (``effort``, ``summary``) and ponder's own keys in
    the same object: the two share ``effort``, which means one thing in both."""

    summary: Literal["auto", "concise", "detailed"] | None = None


Include = Literal["reasoning.encrypted_content"]


class ResponsesRequest(_Strict):
    model: str
    input: _text_or(Annotated[list[InputItem], Field(min_length=1, max_length=2048)])  # type: ignore[valid-type]
    instructions: str | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=1_000_000), _INTEGRAL] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    tools: Annotated[list[ToolDef], Field(max_length=128)] | None = None  # type: ignore[valid-type]
    tool_choice: Literal["auto", "none", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: ResponsesReasoning | None = None
    stream: bool = False
    # None: the server's default ([responses] store).
    store: bool | None = None
    previous_response_id: str | None = None
    include: Annotated[list[Include], Field(max_length=8)] | None = None
    # Kept with the response and returned with it, as OpenAI does (16 pairs, short values).
    metadata: Annotated[dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
                        Field(max_length=16)] | None = None
    user: str | None = None
    truncation: Literal["disabled"] | None = None
    # ponder's extensions, as on the chat route.
    seed: Annotated[int, Field(ge=-(2**63), le=2**64 - 1), _INTEGRAL] | None = None
    top_k: Annotated[int, Field(ge=-1, le=2**31 - 1), _INTEGRAL] | None = None
    timeout: Annotated[float, Field(gt=0, le=1e9)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _message_types(cls, data: Any) -> Any:
        """Messages without a ``type`` are given theirs, so every item is told apart by it."""
        if isinstance(data, dict) and isinstance(data.get("input"), list):
            data = {**data, "input": [_item_type(i) for i in data["input"]]}
        return data
