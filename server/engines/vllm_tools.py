"""vLLM's tool-call parsers behind ``server.output_format.ToolParser``: the
in-process engine and the remote engine (whose tokenizer is local) both use them.
Importing this module loads vLLM's parsers and protocol, not its engine."""
from __future__ import annotations

import json
from typing import Any

from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.tool_parsers import ToolParserManager
from vllm.tool_parsers.structural_tag_registry import limit_to_single_tool_call
from vllm.tool_parsers.tool_strict_level import ToolStrictLevel


class VLLMToolParser:
    """``server.output_format.ToolParser`` on one of vLLM's tool parsers
    (``hermes``, ``llama3_json``, ``mistral``...: ``ToolParserManager``'s names).

    A parser instance keeps streaming state, so each parse gets a fresh one;
    ponder streams content itself up to ``start_marker`` and parses the rest
    once the choice ends (server/output_format.py)."""

    def __init__(self, tokenizer: Any, name: str) -> None:
        try:
            self.cls = ToolParserManager.get_tool_parser(name)
        except KeyError:
            known = ", ".join(ToolParserManager.list_registered())
            raise ValueError(f"unknown tool parser {name!r}; vLLM has {known}") from None
        self.name, self.tokenizer = name, tokenizer
        marker = getattr(self.cls, "tool_call_start_token", None)
        self.start_marker: str | None = marker if isinstance(marker, str) and marker else None

    def structural_tag(self, tools: list[dict[str, Any]], parallel: bool, required: bool = False) -> str | None:
        """What vLLM's own server constrains ``tool_choice: "auto"`` with: free text,
        and once the model opens a call, the call's envelope with the arguments of
        each ``strict: true`` function held to its schema (xgrammar's structural
        tags for this parser's syntax). None when no function is strict (then vLLM
        constrains nothing either) or the parser has no structural format.
        ``required``: the same calls, but only calls, from the first token."""
        request = ChatCompletionRequest(model="ponder", messages=[{"role": "user", "content": ""}], tools=tools,
                                        tool_choice="required" if required else "auto",
                                        parallel_tool_calls=parallel)
        tag = self.cls(self.tokenizer, request.tools).get_structural_tag(
            request, reasoning=False, strict_level=ToolStrictLevel.AUTO)
        if tag is None:
            return None
        if not parallel:
            limit_to_single_tool_call(tag)
        return json.dumps(tag.model_dump())

    def parse(self, text: str, tools: list[dict[str, Any]]) -> tuple[str | None, list[tuple[str, str]]]:
        request = ChatCompletionRequest(model="ponder", messages=[{"role": "user", "content": ""}], tools=tools)
        parser = self.cls(self.tokenizer, request.tools)
        info = parser.extract_tool_calls(text, request)
        if not info.tools_called:
            return text, []
        return info.content, [(c.function.name, c.function.arguments) for c in info.tool_calls]
