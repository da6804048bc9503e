"""Chat messages -> prompt token ids, through the model's own chat template.

The prompt is rendered once per request; every strategy phase continues from
these ids. The thinking block the server opens for a model that does not think
natively is also built here, as token ids.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import bad_request
from .tool_prompt import hermes_messages, template_renders_tools, with_reasoning
from .wire import ChatCompletionRequest


@dataclass(frozen=True)
class Prompt:
    ids: tuple[int, ...]
    think_prefix_ids: tuple[int, ...]
    think_suffix_ids: tuple[int, ...]


def _messages(req: ChatCompletionRequest) -> list[dict[str, Any]]:
    out = []
    for m in req.messages:
        role = "system" if m.role == "developer" else m.role
        msg: dict[str, Any] = {"role": role, "content": m.text()}
        if m.name:
            msg["name"] = m.name
        if m.tool_calls:
            msg["tool_calls"] = m.tool_calls
        if m.tool_call_id:
            msg["tool_call_id"] = m.tool_call_id
        thought = m.reasoning_content or m.reasoning
        if role == "assistant" and thought:
            msg["reasoning"] = thought
        out.append(msg)
    return out


def _arguments_as_objects(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Templates that render calls write ``arguments | tojson``: give them objects, as vLLM does."""
    for m in messages:
        for call in m.get("tool_calls") or ():
            fn = call.get("function") or {}
            if isinstance(fn.get("arguments"), str):
                try:
                    call["function"] = {**fn, "arguments": json.loads(fn["arguments"])}
                except ValueError:
                    pass
    return messages


# apply_chat_template's own switches: the server sets them, a request cannot.
_RESERVED = ("tokenize", "add_generation_prompt", "tools", "return_dict", "return_tensors", "continue_final_message",
             "return_assistant_tokens_mask", "tokenizer_kwargs")


@dataclass(frozen=True, eq=False)
class Renderer:
    """The model's chat template and thinking delimiters, set up once when the
    engine's tokenizer is known; ``render`` is then the only per-request work."""
    tokenizer: Any
    native_thinking: bool
    think_open: str
    template_kwargs: dict[str, Any]
    open_ids: tuple[int, ...]  # "<think>\n", for a model that does not think natively
    suffix_ids: tuple[int, ...]  # "\n</think>\n\n": what closes a block the server ends
    think_close: str = "</think>"
    # True: the chat template renders tools and calls; False: ponder writes them (tool_prompt.py).
    template_tools: bool = True
    keep_reasoning: bool = False

    @classmethod
    def build(cls, tokenizer: Any, think_open: str, think_close: str, native_thinking: bool,
              template_kwargs: dict[str, Any], tool_prompt: str = "auto", keep_reasoning: bool = False) -> Renderer:
        def encode(text: str) -> tuple[int, ...]:
            return tuple(tokenizer.encode(text, add_special_tokens=False))

        template = getattr(tokenizer, "chat_template", None)
        template_tools = tool_prompt == "template" or (
            tool_prompt == "auto" and template_renders_tools(template if isinstance(template, str) else None))
        return cls(tokenizer, native_thinking, think_open, dict(template_kwargs),
                   encode(think_open + "\n"), encode("\n" + think_close + "\n\n"), think_close,
                   template_tools, keep_reasoning)

    def messages(self, req: ChatCompletionRequest) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        """The conversation and tools as this model's template takes them."""
        messages = _messages(req)
        if self.keep_reasoning:
            messages = with_reasoning(messages, self.think_open, self.think_close)
        else:
            for m in messages:
                m.pop("reasoning", None)
        tools = [t.model_dump(exclude_none=True) for t in req.function_tools] or None
        if self.template_tools:
            return _arguments_as_objects(messages), tools
        return hermes_messages(messages, tools), None

    def render(self, req: ChatCompletionRequest, thinking: bool = False) -> Prompt:
        client = req.chat_template_kwargs or {}
        if "chat_template" in client:  # a client's own Jinja would run here (vLLM too needs a flag for it)
            raise bad_request("a chat template of the request's own is not accepted",
                              "chat_template_kwargs.chat_template")
        kwargs = {**self.template_kwargs, **client}
        if self.native_thinking:
            # Qwen3-style templates switch thinking with this flag; the plan decides.
            kwargs["enable_thinking"] = thinking
        kwargs = {k: v for k, v in kwargs.items() if k not in _RESERVED}
        messages, tools = self.messages(req)
        try:
            text = self.tokenizer.apply_chat_template(
                messages,
                tools=tools,
                tokenize=False,
                add_generation_prompt=True,
                **kwargs,
            )
        except Exception as exc:  # a template error is the client's message shape
            raise bad_request(f"messages could not be rendered by the chat template: {exc}", "messages") from exc
        ids = tuple(self.tokenizer.encode(text, add_special_tokens=False))
        if not ids:
            raise bad_request("the messages rendered to an empty prompt", "messages")
        # A template that already opened a thinking block (DeepSeek-R1 style).
        opened = self.native_thinking and text.rstrip().endswith(self.think_open)
        return Prompt(ids, () if opened or self.native_thinking else self.open_ids, self.suffix_ids)


def followup_renderer(tokenizer: Any, template_kwargs: dict[str, Any]):
    """``question -> ids`` that end an assistant turn, ask ``question`` as the
    user and open the next assistant turn, in the model's own chat template.

    Rendered by difference: the same conversation with and without the extra
    user turn; what follows the assistant's text is the follow-up.
    """
    mark = "\u2063PONDER\u2063"
    base = [{"role": "user", "content": "q"}, {"role": "assistant", "content": mark}]
    cache: dict[str, tuple[int, ...]] = {}

    def render_followup(question: str) -> tuple[int, ...]:
        if question not in cache:
            text = tokenizer.apply_chat_template(
                [*base, {"role": "user", "content": question}], tokenize=False,
                add_generation_prompt=True, **template_kwargs)
            tail = text[text.index(mark) + len(mark):]
            cache[question] = tuple(tokenizer.encode(tail, add_special_tokens=False))
        return cache[question]

    return render_followup
