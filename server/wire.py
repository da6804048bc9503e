"""Wire models for ``POST /v1/chat/completions``: the OpenAI fields plus the
reasoning controls clients already use (OpenAI, Anthropic, vLLM, DeepSeek, Qwen).

Pydantic lives only here, at the edge. Unknown top-level fields are ignored,
as vLLM and the OpenAI API do.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_Tokens = Annotated[int, Field(ge=1, le=1_000_000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
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


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ReasoningOptions(_Strict):
    effort: str | None = None
    strategy: str | None = None
    max_thinking_tokens: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    min_thinking_tokens: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    budget_tokens: _Tokens | None = None
    samples: Annotated[int, Field(ge=1, le=64)] | None = None
    rounds: Annotated[int, Field(ge=0, le=16)] | None = None
    beam_width: Annotated[int, Field(ge=1, le=16)] | None = None
    max_steps: Annotated[int, Field(ge=1, le=64)] | None = None
    dvts: bool | None = None
    scorer: str | None = None
    early_stop: bool | None = None
    stream_candidates: bool | None = None
    exclude: bool | None = None
    # OpenRouter's spelling of a thinking cap.
    max_tokens: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    enabled: bool | None = None


class ThinkingOptions(_Strict):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: Annotated[int, Field(ge=0, le=1_000_000)] | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: Annotated[list[Message], Field(min_length=1, max_length=2048)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=128)] = 1
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    max_tokens: _Tokens | None = None
    max_completion_tokens: _Tokens | None = None
    stop: str | Annotated[list[str], Field(max_length=16)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**64 - 1)] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    user: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    # Reasoning controls, in order of precedence.
    reasoning: ReasoningOptions | None = None
    thinking: ThinkingOptions | None = None
    thinking_token_budget: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    include_reasoning: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    # ponder: this request's deadline in seconds (the server's default applies without it).
    timeout: Annotated[float, Field(gt=0, le=1e9)] | None = None
