"""Wire models for ``POST /v1/messages`` and ``/v1/messages/count_tokens``
(Anthropic's Messages API, version 2023-06-01), and the response shapes the
OpenAPI schema documents.

As on the chat route, a field ponder does not know is refused (Anthropic's API
does the same) and types are strict. Unions of blocks are told apart by their
``type`` (or by str versus list), so a bad block gets the error of the block it
claims to be, at its own place (``messages[0].content[1].input``); the tags are
capitalised so that :func:`server.errors.loc_to_param` leaves them out.
What each field means for a run is in server/messages_map.py.
"""
from __future__ import annotations

import functools
import operator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from .settings import EFFORTS
from .wire import _INTEGRAL, ReasoningOptions

MAX_STOP_SEQUENCES = 16  # as the chat route's ``stop``


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _by_type(tags: dict[str, type]) -> Any:
    """A union of models told apart by their ``type`` field."""
    def tag(value: Any) -> str | None:
        t = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        return t.title().replace("_", "") if isinstance(t, str) and t in tags else None

    names = ", ".join(tags)
    members = functools.reduce(operator.or_, (Annotated[cls, Tag(t.title().replace("_", ""))]
                                              for t, cls in tags.items()))
    return Annotated[members, Discriminator(  # type: ignore[valid-type]
        tag, custom_error_type="invalid_type", custom_error_message=f"type must be one of {names}")]


def _text_or(blocks: Any) -> Any:
    """A string, or a list of blocks (Anthropic's shorthand: a string is one text block)."""
    return Annotated[Annotated[str, Tag("Str")] | Annotated[blocks, Tag("Blocks")],
                     Discriminator(lambda v: "Str" if isinstance(v, str) else "Blocks")]


class CacheControl(_Strict):
    """Accepted wherever Anthropic takes it. ponder's engine caches every prompt
    prefix on its own (vLLM's prefix caching), so a marker asks for nothing more."""

    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextBlock(_Strict):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None


class ThinkingBlock(_Strict):
    """A thinking block of an earlier response, sent back with its signature."""

    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlock(_Strict):
    type: Literal["redacted_thinking"]
    data: str


class ToolUseBlock(_Strict):
    type: Literal["tool_use"]
    id: Annotated[str, Field(min_length=1)]
    name: str
    input: dict[str, Any]
    cache_control: CacheControl | None = None


class ToolResultBlock(_Strict):
    type: Literal["tool_result"]
    tool_use_id: Annotated[str, Field(min_length=1)]
    content: _text_or(list[TextBlock]) | None = None  # type: ignore[valid-type]
    is_error: bool | None = None
    cache_control: CacheControl | None = None


Block = _by_type({"text": TextBlock, "thinking": ThinkingBlock, "redacted_thinking": RedactedThinkingBlock,
                  "tool_use": ToolUseBlock, "tool_result": ToolResultBlock})


class InputMessage(_Strict):
    role: Literal["user", "assistant"]
    content: _text_or(list[Block])  # type: ignore[valid-type]


class ToolDef(_Strict):
    """A client tool (Anthropic's server tools, such as web search, are not offered)."""

    # First, so that a server tool's type is the error named, not what it lacks.
    type: Literal["custom"] | None = None
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    input_schema: dict[str, Any]
    strict: bool | None = None
    cache_control: CacheControl | None = None


class ToolChoiceAuto(_Strict):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(_Strict):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(_Strict):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(_Strict):
    type: Literal["none"]


ToolChoice = _by_type({"auto": ToolChoiceAuto, "any": ToolChoiceAny, "tool": ToolChoiceTool,
                       "none": ToolChoiceNone})


class ThinkingEnabled(_Strict):
    type: Literal["enabled"]
    # At least 1 (Anthropic asks for 1024; ponder's caps are exact at any size).
    budget_tokens: Annotated[int, Field(ge=1, le=1_000_000), _INTEGRAL]
    display: Literal["summarized", "omitted"] | None = None


class ThinkingDisabled(_Strict):
    type: Literal["disabled"]


class ThinkingAdaptive(_Strict):
    type: Literal["adaptive"]
    display: Literal["summarized", "omitted"] | None = None


Thinking = _by_type({"enabled": ThinkingEnabled, "disabled": ThinkingDisabled, "adaptive": ThinkingAdaptive})


class JsonOutputFormat(_Strict):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    type: Literal["json_schema"]
    schema_: Annotated[dict[str, Any], Field(alias="schema")]


class OutputConfig(_Strict):
    effort: Annotated[str, Field(json_schema_extra={"enum": list(EFFORTS)})] | None = None
    format: JsonOutputFormat | None = None


class Metadata(_Strict):
    user_id: str | None = None


class CountTokensRequest(_Strict):
    """What both routes take: everything that shapes the prompt."""

    model: str
    messages: Annotated[list[InputMessage], Field(min_length=1, max_length=2048)]
    system: _text_or(list[TextBlock]) | None = None  # type: ignore[valid-type]
    tools: Annotated[list[ToolDef], Field(max_length=128)] | None = None
    tool_choice: ToolChoice | None = None  # type: ignore[valid-type]
    thinking: Thinking | None = None  # type: ignore[valid-type]
    output_config: OutputConfig | None = None
    cache_control: CacheControl | None = None
    # ponder's reasoning controls, as on the chat route (a strategy, budgets, samples ...).
    reasoning: ReasoningOptions | None = None


class MessagesRequest(CountTokensRequest):
    # Thinking plus answer, as Anthropic counts it (the chat route's max_completion_tokens).
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000), _INTEGRAL]
    stream: bool = False
    stop_sequences: Annotated[list[Annotated[str, Field(min_length=1)]],
                              Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=0, le=2**31 - 1), _INTEGRAL] | None = None
    metadata: Metadata | None = None
    # ponder's extensions, as on the chat route: a seed, and this request's deadline in seconds.
    seed: Annotated[int, Field(ge=-(2**63), le=2**64 - 1), _INTEGRAL] | None = None
    timeout: Annotated[float, Field(gt=0, le=1e9)] | None = None


# -- responses (documented in the OpenAPI schema) -------------------------------

class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextOut(_Out):
    type: Literal["text"]
    text: str


class ThinkingOut(_Out):
    type: Literal["thinking"]
    thinking: str
    # HMAC-SHA256 of the thinking under the server's key (empty on a block's start event).
    signature: str


class ToolUseOut(_Out):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


ContentOut = Annotated[TextOut | ThinkingOut | ToolUseOut, Field(discriminator="type")]
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]


class OutputTokensDetails(_Out):
    thinking_tokens: Annotated[int, Field(ge=0)]


class MessageUsage(_Out):
    """``input_tokens`` + ``cache_read_input_tokens`` is the whole prompt."""

    input_tokens: Annotated[int, Field(ge=0)]
    output_tokens: Annotated[int, Field(ge=0)]
    cache_read_input_tokens: Annotated[int, Field(ge=0)]
    cache_creation_input_tokens: Annotated[int, Field(ge=0)]
    output_tokens_details: OutputTokensDetails


class MessageOut(_Out):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[ContentOut]
    # null only on a stream's message_start.
    stop_reason: StopReason | None
    stop_sequence: str | None
    usage: MessageUsage
    reasoning_plan: dict[str, Any]
    # Absent on a stream's message_start (its message_delta carries it).
    reasoning_trace: dict[str, Any] | None = None


class MessageStartEvent(_Out):
    type: Literal["message_start"]
    message: MessageOut


class ContentBlockStartEvent(_Out):
    type: Literal["content_block_start"]
    index: Annotated[int, Field(ge=0)]
    content_block: ContentOut


class TextDelta(_Out):
    type: Literal["text_delta"]
    text: str


class ThinkingDelta(_Out):
    type: Literal["thinking_delta"]
    thinking: str


class SignatureDelta(_Out):
    type: Literal["signature_delta"]
    signature: str


class InputJsonDelta(_Out):
    type: Literal["input_json_delta"]
    partial_json: str


class ContentBlockDeltaEvent(_Out):
    type: Literal["content_block_delta"]
    index: Annotated[int, Field(ge=0)]
    delta: Annotated[TextDelta | ThinkingDelta | SignatureDelta | InputJsonDelta, Field(discriminator="type")]


class ContentBlockStopEvent(_Out):
    type: Literal["content_block_stop"]
    index: Annotated[int, Field(ge=0)]


class MessageDeltaBody(_Out):
    stop_reason: StopReason
    stop_sequence: str | None


class MessageDeltaEvent(_Out):
    type: Literal["message_delta"]
    delta: MessageDeltaBody
    usage: MessageUsage
    reasoning_trace: dict[str, Any]


class MessageStopEvent(_Out):
    type: Literal["message_stop"]


class PingEvent(_Out):
    type: Literal["ping"]


ErrorType = Literal["invalid_request_error", "authentication_error", "permission_error", "not_found_error",
                    "request_too_large", "rate_limit_error", "api_error", "timeout_error", "overloaded_error"]


class ErrorObject(_Out):
    type: ErrorType
    message: str
    # ponder: the field at fault, as on the chat route (Anthropic's clients ignore it).
    param: str | None = None


class AnthropicError(_Out):
    """Every error on these routes, and the ``error`` event a failed stream ends with."""

    type: Literal["error"]
    error: ErrorObject


class TokenCount(_Out):
    input_tokens: Annotated[int, Field(ge=0)]


STREAM_EVENTS = (MessageStartEvent, ContentBlockStartEvent, ContentBlockDeltaEvent, ContentBlockStopEvent,
                 MessageDeltaEvent, MessageStopEvent, PingEvent, AnthropicError)
RESPONSE_MODELS = (MessageOut, TokenCount, *STREAM_EVENTS)
