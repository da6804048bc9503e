"""The request's answer format: ``response_format`` and ``tools`` / ``tool_choice``.

Builds the :class:`strategies.output.OutputFormat` a run honours (see that
module for what each part does) and refuses what cannot be honoured.

Tool calls follow vLLM's server: ``tool_choice: "auto"`` lets the model write
what it wants and parses calls out of the answer with the model's tool parser
(vLLM's own, chosen by ``[model] tool_parser``); ``"required"`` and a named
function constrain the answer with structured outputs (a JSON array of
``{"name", "parameters"}`` objects, or the named function's parameters), so
even a tiny model returns a valid call. Every returned call ends the choice
with ``finish_reason: "tool_calls"``.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol

from strategies.events import Answer, ChoiceDone, Event, ToolCallDelta
from strategies.output import PLAIN, OutputFormat, Shaper, Structured, canonical_json

from .errors import bad_request
from .wire import ChatCompletionRequest


class ToolParser(Protocol):
    """The model's tool-call syntax (implemented on vLLM's parsers by the engine)."""

    name: str
    # Text that starts a call (``<tool_call>``), None when the syntax has no marker.
    start_marker: str | None

    def parse(self, text: str, tools: list[dict[str, Any]]) -> tuple[str | None, list[tuple[str, str]]]:
        """The content before the calls and every ``(name, arguments JSON)``; no calls when none parse."""
        ...

    def structural_tag(self, tools: list[dict[str, Any]], parallel: bool, required: bool = False) -> str | None:
        """The constraint for ``tool_choice: "auto"`` that holds ``strict`` functions'
        arguments to their schemas once a call opens (None: nothing to constrain);
        ``required``: calls only, from the first token."""
        ...


def call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _finish(reason: str, called: bool) -> str:
    return "tool_calls" if called and reason == "stop" else reason


@dataclass
class _NamedShaper:
    """The answer is the named function's arguments: streamed live as argument deltas."""

    choice: int
    name: str
    started: bool = False

    def feed(self, event: Event) -> list[Event]:
        if isinstance(event, Answer):
            out = [ToolCallDelta(self.choice, 0, None if self.started else call_id(),
                                 None if self.started else self.name, event.text)]
            self.started = True
            return out
        if isinstance(event, ChoiceDone) and event.choice == self.choice:
            head = [] if self.started else [ToolCallDelta(self.choice, 0, call_id(), self.name, "")]
            return [*head, ChoiceDone(event.choice, _finish(event.finish_reason, True), event.trace)]
        return [event]


def _emit_calls(choice: int, calls: list[tuple[str, str]]) -> list[Event]:
    return [ToolCallDelta(choice, i, call_id(), name, args) for i, (name, args) in enumerate(calls)]


@dataclass
class _RequiredShaper:
    """The answer is a JSON array of calls: parsed at the end of the choice."""

    choice: int
    parallel: bool
    text: list[str] = field(default_factory=list)

    def feed(self, event: Event) -> list[Event]:
        if isinstance(event, Answer):
            self.text.append(event.text)
            return []
        if isinstance(event, ChoiceDone) and event.choice == self.choice:
            calls = parse_required("".join(self.text), self.parallel)
            if calls is None:  # cut by a limit: the client sees what was written
                return [Answer(self.choice, "".join(self.text)), event]
            return [*_emit_calls(self.choice, calls), ChoiceDone(event.choice, _finish(event.finish_reason, True),
                                                                 event.trace)]
        return [event]


def parse_required(text: str, parallel: bool) -> list[tuple[str, str]] | None:
    try:
        items = json.loads(text)
    except ValueError:
        return None
    if not isinstance(items, list) or not items:
        return None
    calls = [(it["name"], json.dumps(it.get("parameters", {}), ensure_ascii=False))
             for it in items if isinstance(it, dict) and isinstance(it.get("name"), str)]
    return (calls if parallel else calls[:1]) or None


@dataclass
class _AutoShaper:
    """Content streams live until the parser's start marker; from there the
    text is held and parsed at the end of the choice (a call, or content if
    nothing parses)."""

    choice: int
    parser: ToolParser
    tools: list[dict[str, Any]]
    parallel: bool
    text: str = ""  # the answer so far
    sent: int = 0  # characters of it already sent as content
    held_logprobs: list[Any] = field(default_factory=list)

    def _safe_end(self, text: str) -> int:
        """How much of ``text`` may go out: up to a marker, or short of a partial one."""
        marker = self.parser.start_marker
        if marker is None:
            return 0
        at = text.find(marker, max(0, self.sent - len(marker)))
        if at >= 0:
            return at
        for k in range(min(len(marker) - 1, len(text)), 0, -1):
            if text.endswith(marker[:k]):
                return len(text) - k
        return len(text)

    def feed(self, event: Event) -> list[Event]:
        if isinstance(event, Answer):
            self.text += event.text  # one append per token, not a join of everything so far
            text = self.text
            end = max(self._safe_end(text), self.sent)
            if event.logprobs:
                self.held_logprobs.extend(event.logprobs)
            if end == self.sent:
                return []
            out = Answer(self.choice, text[self.sent:end], tuple(self.held_logprobs) or None)
            self.sent, self.held_logprobs = end, []
            return [out]
        if isinstance(event, ChoiceDone) and event.choice == self.choice:
            text = self.text
            content, calls = self.parser.parse(text, self.tools) if text[self.sent:] else (None, [])
            if not self.parallel:
                calls = calls[:1]
            out: list[Event] = []
            if not calls:
                if text[self.sent:]:
                    out.append(Answer(self.choice, text[self.sent:], tuple(self.held_logprobs) or None))
                return [*out, event]
            before = content or ""
            if len(before) > self.sent:  # content the parser kept that was held back
                out.append(Answer(self.choice, before[self.sent:]))
            return [*out, *_emit_calls(self.choice, calls),
                    ChoiceDone(event.choice, _finish(event.finish_reason, True), event.trace)]
        return [event]


@dataclass(frozen=True)
class JsonFormat:
    """``response_format``: the answer phase is constrained to JSON (a schema, or any object)."""

    structured: Structured
    schema: dict[str, Any] | None
    thinking_stop: tuple[str, ...] = ()
    call_constraint: Structured | None = None
    tools: bool = False

    def key(self, answer: str) -> str | None:
        return canonical_json(answer) if self.valid(answer) else None

    def valid(self, answer: str) -> bool:
        try:
            value = json.loads(answer)
        except ValueError:
            return False
        if self.schema is None:
            return isinstance(value, dict)
        import jsonschema
        return jsonschema.Draft202012Validator(self.schema).is_valid(value)

    def shaper(self, choice: int) -> Shaper:
        return PLAIN.shaper(choice)


@dataclass(frozen=True)
class GrammarFormat:
    """vLLM's ``structured_outputs`` regex, choice or grammar: the engine keeps the
    answer in the language; a vote is on the answer as written."""

    structured: Structured
    thinking_stop: tuple[str, ...] = ()
    call_constraint: Structured | None = None
    tools: bool = False

    def key(self, answer: str) -> str | None:
        return answer if self.valid(answer) else None

    def valid(self, answer: str) -> bool:
        if self.structured.choice is not None:
            return answer in self.structured.choice
        return bool(answer)  # the engine's grammar is the judge of a regex or a grammar

    def shaper(self, choice: int) -> Shaper:
        return PLAIN.shaper(choice)


@dataclass(frozen=True)
class ToolFormat:
    """``tools`` with ``tool_choice`` auto, required or a named function."""

    mode: str  # "auto" | "required" | "named"
    tools_json: list[dict[str, Any]]
    parallel: bool
    parser: ToolParser | None
    name: str | None = None
    structured: Structured | None = None
    thinking_stop: tuple[str, ...] = ()
    call_constraint: Structured | None = None
    tools: bool = True

    def calls(self, answer: str) -> list[tuple[str, str]]:
        if self.mode == "named":
            return [(self.name or "", answer)] if canonical_json(answer) is not None else []
        if self.mode == "required":
            return parse_required(answer, self.parallel) or []
        assert self.parser is not None
        calls = self.parser.parse(answer, self.tools_json)[1]
        return calls if self.parallel else calls[:1]

    def key(self, answer: str) -> str | None:
        """Calls as name plus canonical JSON arguments; None for a plain answer."""
        calls = self.calls(answer)
        if not calls:
            return None
        return json.dumps([[name, canonical_json(args) or args] for name, args in calls], ensure_ascii=False)

    def valid(self, answer: str) -> bool:
        calls = self.calls(answer)
        if self.mode == "auto":
            return all(canonical_json(args) is not None for _, args in calls)
        return bool(calls) and all(canonical_json(args) is not None for _, args in calls)

    def shaper(self, choice: int) -> Shaper:
        if self.mode == "named":
            return _NamedShaper(choice, self.name or "")
        if self.mode == "required":
            return _RequiredShaper(choice, self.parallel)
        assert self.parser is not None
        return _AutoShaper(choice, self.parser, self.tools_json, self.parallel)


def _parameters(tool: dict[str, Any]) -> dict[str, Any]:
    return tool["function"].get("parameters") or {"type": "object", "properties": {}}


def _required_schema(tools: list[dict[str, Any]], parallel: bool) -> dict[str, Any]:
    """vLLM's schema for ``tool_choice: "required"``: an array of ``{name, parameters}``."""
    items = {"anyOf": [{"type": "object", "properties": {"name": {"type": "string", "enum": [t["function"]["name"]]},
                                                          "parameters": _parameters(t)},
                        "required": ["name", "parameters"]} for t in tools]}
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": items}
    if not parallel:
        schema["maxItems"] = 1
    return schema


def _check_schema(schema: Any, param: str) -> dict[str, Any]:
    import jsonschema
    if not isinstance(schema, dict):
        raise bad_request("a JSON schema must be an object", param)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise bad_request(f"invalid JSON schema: {exc.message}", param) from None
    return schema


_KINDS = ("json", "json_object", "regex", "choice", "grammar")


def _structured_outputs(req: ChatCompletionRequest, calls_wanted: bool) -> OutputFormat:
    """vLLM's ``structured_outputs`` field: exactly one constraint, for the answer."""
    assert req.structured_outputs is not None
    given = req.structured_outputs.model_dump(by_alias=True, exclude_none=True)
    kinds = [k for k in _KINDS if given.get(k) not in (None, False)]
    if len(kinds) != 1:
        raise bad_request(f"structured_outputs needs exactly one of {', '.join(_KINDS)}", "structured_outputs")
    if req.response_format is not None and req.response_format.type != "text":
        raise bad_request("response_format and structured_outputs both constrain the answer; send one",
                          "structured_outputs")
    if calls_wanted:
        raise bad_request("structured_outputs and tool calls cannot be combined; set tool_choice to \"none\"",
                          "structured_outputs")
    kind, raw = kinds[0], given[kinds[0]]
    if kind == "json_object":
        return JsonFormat(Structured(json_object=True), None)
    if kind == "json":
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                raise bad_request("structured_outputs.json is not valid JSON", "structured_outputs.json") from None
        schema = _check_schema(raw, "structured_outputs.json")
        return JsonFormat(Structured.schema(schema), schema)
    return GrammarFormat(Structured(**{kind: tuple(raw) if kind == "choice" else raw}))


def output_format(req: ChatCompletionRequest, parser: ToolParser | None) -> OutputFormat:
    """The request's answer format, or a 400 naming the field that cannot be honoured."""
    tools = [t.model_dump(exclude_none=True) for t in req.function_tools]
    choice = req.tool_choice
    rf = req.response_format
    if choice is not None and choice != "none" and not tools:
        raise bad_request("tool_choice needs tools", "tool_choice")
    if req.parallel_tool_calls is not None and not tools:
        raise bad_request("parallel_tool_calls needs tools", "parallel_tool_calls")
    names = [t["function"]["name"] for t in tools]
    if len(set(names)) != len(names):
        raise bad_request("tool function names must be unique", "tools")
    for i, t in enumerate(tools):
        if "parameters" in t["function"]:
            _check_schema(t["function"]["parameters"], f"tools[{i}].function.parameters")
    calls_wanted = bool(tools) and choice != "none"
    if req.structured_outputs is not None:
        return _structured_outputs(req, calls_wanted)
    if rf is not None and rf.type != "text" and calls_wanted:
        raise bad_request("response_format and tool calls cannot be combined; set tool_choice to \"none\"",
                          "response_format")
    if rf is not None and rf.type == "json_object":
        return JsonFormat(Structured(json_object=True), None)
    if rf is not None and rf.type == "json_schema":
        if rf.json_schema is None:
            raise bad_request("response_format json_schema needs a json_schema object", "response_format.json_schema")
        schema = _check_schema(rf.json_schema.schema_ or {"type": "object"}, "response_format.json_schema.schema")
        return JsonFormat(Structured.schema(schema), schema)
    if not calls_wanted:
        return PLAIN
    parallel = req.parallel_tool_calls is not False
    if choice is None or choice == "auto":
        if parser is None:
            raise bad_request("this server's model has no tool parser ([model] tool_parser)", "tools")
        marker = parser.start_marker
        strict = any(t["function"].get("strict") for t in tools)
        tag = parser.structural_tag(tools, parallel) if strict else None
        held = parser.structural_tag(tools, parallel, required=True) if tag else None
        if strict and tag is None:
            raise bad_request(f"strict functions with tool_choice \"auto\" need a tool parser with a structural "
                              f"format; this server's ({parser.name}) has none: use tool_choice \"required\"",
                              "tools")
        return ToolFormat("auto", tools, parallel, parser, thinking_stop=(marker,) if marker else (),
                          structured=Structured(structural_tag=tag) if tag else None,
                          call_constraint=Structured(structural_tag=held) if held else None)
    if choice == "required":
        return ToolFormat("required", tools, parallel, parser,
                          structured=Structured.schema(_required_schema(tools, parallel)))
    name = choice.function.name  # a named function (the wire model allows nothing else)
    if name not in names:
        raise bad_request(f"tool_choice names function {name!r}, which is not in tools", "tool_choice")
    tool = tools[names.index(name)]
    return ToolFormat("named", tools, parallel, parser, name=name, structured=Structured.schema(_parameters(tool)))
