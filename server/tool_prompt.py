"""Tools and earlier turns in the prompt, for chat templates that do not render them.

Templates such as Qwen2.5's render ``tools``, assistant ``tool_calls`` and
``tool`` messages themselves; SmolLM2's (the default model) ignores tools and
has no place for calls. For those, ponder writes the Hermes convention (the
one Qwen2.5's template uses and vLLM's ``hermes`` parser reads) into plain
messages: the tool signatures in the system message, each earlier call as
``<tool_call>{...}</tool_call>`` in the assistant's text, and tool results as
a user turn of ``<tool_response>`` blocks.

Reasoning a client sends back on earlier assistant turns (``reasoning_content``
or ``reasoning``) is dropped by default, as DeepSeek's and Qwen3's templates
drop earlier thinking; ``[model] keep_reasoning`` renders it back inside the
thinking tags.
"""
from __future__ import annotations

import json
from typing import Any

HERMES_INSTRUCTIONS = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>')


def template_renders_tools(template: str | None) -> bool:
    """Whether a chat template's source uses ``tools`` (then it renders them itself)."""
    return bool(template) and "tools" in template


def _call_text(call: dict[str, Any]) -> str:
    fn = call.get("function") or {}
    args = fn.get("arguments", "{}")
    try:
        args_value = json.loads(args) if isinstance(args, str) else args
    except ValueError:
        args_value = args
    body = json.dumps({"name": fn.get("name", ""), "arguments": args_value}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


def with_reasoning(messages: list[dict[str, Any]], think_open: str, think_close: str) -> list[dict[str, Any]]:
    """Earlier assistant turns with their thinking written back in the thinking tags."""
    out = []
    for m in messages:
        thought = m.pop("reasoning", None)
        if m["role"] == "assistant" and thought:
            m = {**m, "content": f"{think_open}\n{thought}\n{think_close}\n\n{m.get('content') or ''}"}
        out.append(m)
    return out


def hermes_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """``messages`` rewritten so a template that knows only role and content shows tools and calls."""
    out: list[dict[str, Any]] = []
    if tools:
        signatures = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
        instructions = HERMES_INSTRUCTIONS.format(tools=signatures)
        if messages and messages[0]["role"] == "system":
            first, *messages = messages
            out.append({"role": "system", "content": f"{first['content']}\n\n{instructions}".lstrip()})
        else:
            out.append({"role": "system", "content": instructions})
    for m in messages:
        if m["role"] in ("tool", "function"):
            block = f"<tool_response>\n{m.get('content') or ''}\n</tool_response>"
            if out and out[-1].get("_tool_results"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "_tool_results": True})
            continue
        if m["role"] == "assistant" and m.get("tool_calls"):
            text = "\n".join([*([m["content"]] if m.get("content") else []),
                              *(_call_text(c) for c in m["tool_calls"])])
            out.append({"role": "assistant", "content": text})
            continue
        out.append({k: v for k, v in m.items() if k not in ("tool_calls", "tool_call_id")})
    for m in out:
        m.pop("_tool_results", None)
    return out
