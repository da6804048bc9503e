"""Wire models for ``POST /v1/chat/completions``: the OpenAI fields plus the
reasoning controls clients already use (OpenAI, Anthropic, vLLM, DeepSeek, Qwen),
and the response shapes the OpenAPI schema documents (bodies are read by
``server.body``).

Pydantic lives only here, at the edge. Unknown top-level fields are ignored,
as vLLM and the OpenAI API do. Types are strict, as the schema says: ``"2"`` is
not an integer and ``1`` is not a boolean, so what the schema calls invalid is
a 400, never silently coerced.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from strategies import registry

from .settings import EFFORTS


def _integral(value: Any) -> Any:
    """JSON Schema's integers include 2.0, and so do this server's (not 2.5, "2" or true)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


_INTEGRAL = BeforeValidator(_integral)
_Tokens = Annotated[int, Field(ge=1, le=1_000_000), _INTEGRAL]
# Values the planner accepts; documented as enums while the planner keeps its own
# 400 (with ``param`` and ``code``) for anything else.
_EFFORT_ENUM = {"enum": list(EFFORTS)}
_STRATEGY_ENUM = {"enum": list(registry.IMPLEMENTED)}
_SCORER_ENUM = {"enum": ["confidence", "self_judge"]}
# Empty stop strings are a 400 (from the server, with its own message).
_Stop = Annotated[str, Field(json_schema_extra={"minLength": 1})]
# Entries of logit_bias and stop_token_ids (this server's limit; OpenAI's reference
# gives none). Ids are also checked against the model's vocabulary (server.prepare).
MAX_TOKEN_IDS = 300
_TokenId = Annotated[int, Field(ge=0), _INTEGRAL]
# A logit_bias key: a token id in plain decimal ("07" and "7" would name one token twice).
_TokenKey = Annotated[str, Field(pattern=r"^(0|[1-9][0-9]{0,9})$")]
_Bias = Annotated[float, Field(ge=-100.0, le=100.0)]


def _token_map_schema(schema: dict[str, Any]) -> None:
    """Pydantic writes the key pattern as ``patternProperties``, which lets any other
    key through; the schema must say that every key is a token id, as the server does."""
    ((pattern, value),) = schema.pop("patternProperties").items()
    schema.update(propertyNames={"pattern": pattern}, additionalProperties=value)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    # A previous turn's reasoning, as DeepSeek / vLLM clients send it back.
    reasoning_content: str | None = None
    reasoning: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type in ("text", "input_text"))


class FunctionDef(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    # A JSON schema (checked when the request is prepared: a 400 names a bad one).
    parameters: dict[str, Any] | None = None
    # OpenAI's strict mode: a forced call (required, named) is always held to the
    # schema; with tool_choice auto, a strict function's arguments are (structural tag).
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDef


class CodeInterpreterTool(_Strict):
    """The built-in code interpreter: the plan runs ``tool_use`` (PAL / ReAct in a
    sandbox), or ``self_consistency`` whose candidates each may run code."""

    type: Literal["code_interpreter"]


class _FunctionName(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: _FunctionName


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    schema_: Annotated[dict[str, Any] | None, Field(alias="schema")] = None
    strict: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StructuredOutputs(_Strict):
    """vLLM's ``structured_outputs`` extension: exactly one constraint on the answer."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    json_: Annotated[dict[str, Any] | str | None, Field(alias="json")] = None
    json_object: bool | None = None
    regex: Annotated[str, Field(min_length=1)] | None = None
    choice: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=1024)] | None = None
    grammar: Annotated[str, Field(min_length=1)] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


class ReasoningOptions(_Strict):
    effort: Annotated[str, Field(json_schema_extra=_EFFORT_ENUM)] | None = None
    strategy: Annotated[str, Field(json_schema_extra=_STRATEGY_ENUM)] | None = None
    max_thinking_tokens: Annotated[int, Field(ge=0, le=1_000_000), _INTEGRAL] | None = None
    min_thinking_tokens: Annotated[int, Field(ge=0, le=1_000_000), _INTEGRAL] | None = None
    budget_tokens: _Tokens | None = None
    samples: Annotated[int, Field(ge=1, le=64), _INTEGRAL] | None = None
    rounds: Annotated[int, Field(ge=0, le=16), _INTEGRAL] | None = None
    beam_width: Annotated[int, Field(ge=1, le=16), _INTEGRAL] | None = None
    max_steps: Annotated[int, Field(ge=1, le=64), _INTEGRAL] | None = None
    dvts: bool | None = None
    # tool_use: the built-in code interpreter (["python"]), PAL or ReAct, runs per answer.
    tools: Annotated[list[Literal["python"]], Field(min_length=1, max_length=1)] | None = None
    tool_mode: Literal["pal", "react"] | None = None
    max_tool_calls: Annotated[int, Field(ge=1, le=16), _INTEGRAL] | None = None
    scorer: Annotated[str, Field(json_schema_extra=_SCORER_ENUM)] | None = None
    early_stop: bool | None = None
    # self_consistency: DeepConf online (warm-up threshold, low-confidence candidates stopped).
    deepconf: bool | None = None
    # single / budget_forcing: probe the thinking for its answer, stop once it settles.
    probe: bool | None = None
    stream_candidates: bool | None = None
    exclude: bool | None = None
    # OpenRouter's spelling of a thinking cap.
    max_tokens: Annotated[int, Field(ge=0, le=1_000_000), _INTEGRAL] | None = None
    enabled: bool | None = None


class ThinkingOptions(_Strict):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: Annotated[int, Field(ge=0, le=1_000_000), _INTEGRAL] | None = None


class ChatCompletionRequest(BaseModel):
    # A field ponder does not know is refused (as OpenAI does), never ignored: a
    # client that sends one expects something of it.
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        # top_logprobs needs logprobs: true (a 400 naming top_logprobs otherwise).
        "if": {"required": ["top_logprobs"], "properties": {"top_logprobs": {"type": "integer"}}},
        "then": {"required": ["logprobs"], "properties": {"logprobs": {"const": True}}}})

    model: str
    messages: Annotated[list[Message], Field(min_length=1, max_length=2048)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=128), _INTEGRAL] = 1
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    max_tokens: _Tokens | None = None
    max_completion_tokens: _Tokens | None = None
    stop: _Stop | Annotated[list[_Stop], Field(max_length=16)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**64 - 1), _INTEGRAL] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20), _INTEGRAL] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    # Token id -> bias added to its logit: -100 bans the token, 100 all but forces it.
    logit_bias: Annotated[dict[_TokenKey, _Bias], Field(max_length=MAX_TOKEN_IDS,
                                                        json_schema_extra=_token_map_schema)] | None = None
    # vLLM's sampling extensions, at the top level as vLLM's server takes them. Which
    # phase of a plan gets each is the rule in strategies.context (README, "The API").
    top_k: Annotated[int, Field(ge=-1, le=2**31 - 1), _INTEGRAL] | None = None  # 0 or -1: off
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    # At least 0.01 (a repeated token's logit x 100): a vanishing penalty overflows the
    # logits to inf, and the NaNs that follow make a grammar reject the sampled token.
    repetition_penalty: Annotated[float, Field(ge=0.01, le=2.0)] | None = None
    # At most max_tokens (a 400 naming min_tokens otherwise, from the planner).
    min_tokens: Annotated[int, Field(ge=0, le=1_000_000), _INTEGRAL] = 0
    stop_token_ids: Annotated[list[_TokenId], Field(max_length=MAX_TOKEN_IDS)] | None = None
    user: str | None = None
    tools: Annotated[list[Tool | CodeInterpreterTool], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    # False: at most one call per answer (the constraint or the parser keeps the first).
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    # vLLM's extension: a regex, a choice, a grammar or a JSON schema for the answer.
    structured_outputs: StructuredOutputs | None = None
    # Reasoning controls, in order of precedence.
    reasoning: ReasoningOptions | None = None
    thinking: ThinkingOptions | None = None
    thinking_token_budget: Annotated[int, Field(ge=0, le=1_000_000), _INTEGRAL] | None = None
    include_reasoning: bool | None = None
    chat_template_kwargs: Annotated[dict[str, Any], Field(json_schema_extra={
        "properties": {"enable_thinking": {"type": "boolean"}}})] | None = None
    reasoning_effort: Annotated[str, Field(json_schema_extra=_EFFORT_ENUM)] | None = None
    # vLLM's extension: keep generating past the end-of-sequence token (benchmarks).
    ignore_eos: bool = False
    # vLLM's extension: lower is served earlier (needs [engine] scheduling_policy "priority").
    priority: Annotated[int, Field(ge=-(2**20), le=2**20), _INTEGRAL] = 0
    # ponder: this request's deadline in seconds (the server's default applies without it).
    timeout: Annotated[float, Field(gt=0, le=1e9)] | None = None

    @property
    def function_tools(self) -> list[Tool]:
        """The client's functions (what the model may call and the client runs)."""
        return [t for t in self.tools or [] if isinstance(t, Tool)]

    @property
    def code_interpreter(self) -> bool:
        """``{"type": "code_interpreter"}`` is among the tools (ponder runs the code)."""
        return any(isinstance(t, CodeInterpreterTool) for t in self.tools or [])


# -- responses (documented in the OpenAPI schema) -------------------------------

class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Out):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(_Out):
    """Every error, and the one error frame a stream may end with."""

    error: ErrorDetail


class PromptTokensDetails(_Out):
    cached_tokens: Annotated[int, Field(ge=0)]


class CompletionTokensDetails(_Out):
    reasoning_tokens: Annotated[int, Field(ge=0)]


class EngineUsage(_Out):
    """The engine requests a plan made (thinking and answer phases, candidates)."""

    requests: Annotated[int, Field(ge=0)]
    prompt_tokens: Annotated[int, Field(ge=0)]
    cached_tokens: Annotated[int, Field(ge=0)]


class Usage(_Out):
    prompt_tokens: Annotated[int, Field(ge=0)]
    completion_tokens: Annotated[int, Field(ge=0)]
    total_tokens: Annotated[int, Field(ge=0)]
    prompt_tokens_details: PromptTokensDetails
    completion_tokens_details: CompletionTokensDetails
    engine: EngineUsage


class TopLogprob(_Out):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(_Out):
    content: list[TokenLogprob]


FinishReason = Literal["stop", "length", "tool_calls", "abort"]


class FunctionCall(_Out):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(_Out):
    id: str
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(_Out):
    role: Literal["assistant"]
    # null when the answer is only tool calls, as OpenAI sends it.
    content: str | None
    tool_calls: list[ToolCall] | None = None
    # Both unless ``[server] reasoning_fields`` keeps one; absent when the thinking is excluded.
    reasoning_content: str | None = None
    reasoning: str | None = None


class Choice(_Out):
    index: Annotated[int, Field(ge=0)]
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None
    finish_reason: FinishReason
    reasoning_trace: dict[str, Any]


class ChatCompletion(_Out):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: None
    choices: list[Choice]
    usage: Usage
    reasoning_plan: dict[str, Any]


class FunctionCallDelta(_Out):
    name: str | None = None
    arguments: str


class ToolCallDelta(_Out):
    """A piece of a tool call: id, type and name on its first piece only."""

    index: Annotated[int, Field(ge=0)]
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta


class Delta(_Out):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class ChunkChoice(_Out):
    index: Annotated[int, Field(ge=0)]
    delta: Delta
    logprobs: ChoiceLogprobs | None
    finish_reason: FinishReason | None
    # On the choice's last chunk.
    reasoning_trace: dict[str, Any] | None = None
    # With ``stream_candidates``: which candidate's thinking this is.
    candidate: Annotated[int, Field(ge=0)] | None = None


class ChatCompletionChunk(_Out):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    system_fingerprint: None
    choices: list[ChunkChoice]
    # With ``stream_options.include_usage``: null on every chunk but the last, whose choices are [].
    usage: Usage | None = None
    # On the first chunk.
    reasoning_plan: dict[str, Any] | None = None


class ModelCard(_Out):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    root: str
    parent: None
    max_model_len: int


class ModelList(_Out):
    object: Literal["list"]
    data: list[ModelCard]


class Readiness(_Out):
    status: Literal["ready", "unavailable"]
    reason: str | None = None


RESPONSE_MODELS = (ErrorResponse, ChatCompletion, ChatCompletionChunk, ModelList, Readiness)
