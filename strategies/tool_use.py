"""Strategy ``tool_use``: the model thinks in Python and a sandboxed
interpreter computes. PAL (Gao et al. 2022, "Program-aided Language Models",
arXiv:2211.10435): the model writes one program, the program's output
grounds the answer. ReAct (Yao et al. 2022, "Synergizing Reasoning and Acting
in Language Models", arXiv:2210.03629): thought, code action, observation,
repeated up to ``max_tool_calls`` times.

Everything happens inside the thinking block, in token ids: the server
writes a lead that opens a code block (``lead``), the model writes code until
the block closes, the program runs in the sandbox (``ctx.code``, the
server's), and its output is appended as an observation block. In ReAct mode
the model then thinks on and may open another code block (``next_code``).
Each step continues the exact ids of the previous one, so the prefix cache
covers everything already computed. Code and observations stream as thinking
(the inserted text too, not counted as generated); the answer follows the
closed thinking block as in ``single``.

A ReAct thought after an observation is held back until it ends, because only
its end says which channel it is: another code block or a closed thinking block
make it thinking; the model ending its turn there (eos, as a model without a
thinking format of its own does once it has its number) makes it the answer, as
ReAct's final step is. Asking for a separate answer after that last thought got
a restatement without the result from Qwen2.5-Coder-1.5B ("This is the result of
the calculation 286 x 25 - 826."), so that thought streams as the answer, its
tokens count as answer tokens, and no answer phase runs (``ended: "answered"``).
Only for a plain answer: with an answer format, tool calls, stop strings or
``min_tokens`` the thought stays thinking and the answer phase, which applies
them, runs as before. A small model that writes correct
Python but adds badly is where this turns compute into right answers.

A request cancelled while a program runs (a disconnect, the deadline)
cancels the sandbox run, which kills the program's whole process tree.
"""
from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .context import RunContext
from .descriptor import ANY, OptionSource, Strategy
from .errors import PlanError
from .events import Answer, ChoiceDone, Event, Thinking
from .generation import Generated, Generation
from .output import PLAIN
from .phase import Phase
from .plan import Plan
from .thinking import Thought, strip_end
from .tools import CodeResult
from .trace import AnswerTrace, ThinkingTrace, Trace, optional


class ToolUseConfig(BaseModel):
    """configs/server.toml ``[tool_use]``: the texts are data, not code."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    mode: Literal["pal", "react"]
    max_tool_calls: int = Field(ge=1, le=16)
    # Opens the first code block (after the thinking tag).
    lead: str
    # Written by the model, it opens another code block (ReAct).
    next_code: str
    # What closes a code block: the model's stop string, and the text written back.
    code_end: str
    # The observation written after a run; {output} is the program's output.
    observation: str
    # Characters of output shown to the model (the rest is cut, and says so).
    max_observation_chars: int = Field(ge=16)


@dataclass(frozen=True)
class ToolUseOptions:
    mode: str
    max_tool_calls: int
    lead: str
    next_code: str
    code_end: str
    observation: str
    max_observation_chars: int

    def public(self) -> dict[str, object]:
        return {"mode": self.mode, "max_tool_calls": self.max_tool_calls, "tools": ["python"]}


@dataclass(frozen=True)
class CodeRunTrace:
    """One program: how it ran (the sandbox's verdict) and its size."""

    exit_status: int | None
    killed_by: str | None
    seconds: float
    code_tokens: int
    output_chars: int


@dataclass(frozen=True)
class ToolUseTrace(Trace):
    strategy: str
    mode: str
    runs: tuple[CodeRunTrace, ...]
    # Why the code loop ended: "done" (the model stopped or closed its thinking),
    # "answered" (it ended its turn after an observation: that thought is the answer),
    # "max_tool_calls", "budget".
    ended: str
    thinking: ThinkingTrace
    answer: AnswerTrace | None = optional()

    def thinking_phases(self) -> tuple[ThinkingTrace, ...]:
        return (self.thinking,)


# The reasoning keys of the code interpreter (for this strategy and for a host
# strategy whose candidates run it); none has an "off" value.
KEYS = {"tools": ANY, "tool_mode": ANY, "max_tool_calls": ANY}


def read(src: OptionSource) -> ToolUseOptions:
    return _options(src, src.config)


def read_hosted(src: OptionSource) -> ToolUseOptions | None:
    """The code interpreter inside a host strategy's candidates (self_consistency,
    each candidate a whole tool_use run), from the ``[tool_use]`` section: None
    unless the client asked for ``reasoning.tools``."""
    if src.get("tools") is None:
        for key in ("tool_mode", "max_tool_calls"):
            if src.given(key):
                raise PlanError(f"reasoning.{key} needs reasoning.tools", f"reasoning.{key}")
        return None
    assert src.section is not None, "the planner gives every OptionSource its sections"
    return _options(src, src.section(STRATEGY.section))


def _options(src: OptionSource, cfg: ToolUseConfig) -> ToolUseOptions:
    tools = src.get("tools", ["python"])
    if list(tools) != ["python"]:
        raise PlanError("reasoning.tools supports [\"python\"] only", "reasoning.tools")
    mode = src.get("tool_mode", cfg.mode)
    if mode not in ("pal", "react"):
        raise PlanError("tool_mode must be \"pal\" or \"react\"", "reasoning.tool_mode")
    return ToolUseOptions(mode, src.get("max_tool_calls", cfg.max_tool_calls), cfg.lead, cfg.next_code,
                          cfg.code_end, cfg.observation, cfg.max_observation_chars)


def observation(o: ToolUseOptions, result: CodeResult) -> str:
    """What the model reads after a run: output, errors, and how it ended."""
    text = result.stdout
    if result.stderr:
        text += ("\n" if text and not text.endswith("\n") else "") + result.stderr
    if result.killed_by:
        text += f"\n[killed: {result.killed_by}]"
    if len(text) > o.max_observation_chars:
        text = text[:o.max_observation_chars] + "\n[output cut]"
    return o.observation.format(output=text.rstrip("\n"))


def _lead_code(o: ToolUseOptions) -> str:
    """Code the lead itself writes inside the first block (after its opening fence)."""
    fence = o.next_code + "\n"
    return o.lead.rsplit(fence, 1)[1] if fence in o.lead else ""


class CodeThink(Phase[Thought]):
    """The thinking phase of a ``tool_use`` choice: code, runs and observations."""

    def __init__(self, ctx: RunContext, plan: Plan, o: ToolUseOptions) -> None:
        super().__init__()
        self.ctx, self.plan, self.o = ctx, plan, o
        self.tokens = self.requests = 0
        self.runs: list[CodeRunTrace] = []
        self.ended = "done"
        # ReAct's last thought when the model ended its turn with it: the answer.
        self.answer: Generated | None = None

    def _room(self, ids_len: int) -> int:
        plan, ctx = self.plan, self.ctx
        cap = plan.max_thinking_tokens if plan.max_thinking_tokens is not None else plan.max_tokens
        reserve = len(ctx.think_suffix_ids) + len(ctx.engine.tokenizer.encode(self.o.code_end)) + 1
        return ctx.room(ids_len, min(cap - self.tokens, plan.max_tokens - ctx.ledger.generated), reserve)

    async def _step(self, ids: tuple[int, ...], stop: tuple[str, ...], name: str) -> AsyncGenerator[Event, None]:
        room = self._room(len(ids))
        if room <= 0:
            self.last: Generated | None = None
            return
        gen = Generation(self.ctx, ids, self.ctx.reasoning_sampling(max_tokens=room, stop=stop, logprobs=None),
                         name, True)
        self.requests += 1
        async with gen as events:
            async for event in events:
                yield event
        self.last = gen.result
        self.tokens += len(gen.result.token_ids)

    def _after(self, ids: tuple[int, ...], gen: Generated | None) -> tuple[tuple[int, ...], bool]:
        """The ids after a step (its stop string dropped), and whether the room ran out."""
        if gen is None or gen.finish_reason == "length":
            self.ended = "budget"
            return (ids if gen is None else gen.continuation_ids()), True
        return gen.prompt_ids + strip_end(self.ctx, gen), False

    async def _run(self) -> AsyncGenerator[Event, None]:
        ctx, o = self.ctx, self.o
        tok = ctx.engine.tokenizer
        if ctx.code is None:
            raise RuntimeError("tool_use needs the server's code runner")
        ids = ctx.prompt_ids + ctx.think_prefix_ids + tuple(tok.encode(o.lead))
        yield Thinking(ctx.choice, o.lead)
        closed = False
        while True:
            async for event in self._step(ids, (o.code_end,), f"code{len(self.runs)}"):
                yield event
            code = self.last
            ids, out_of_room = self._after(ids, code)
            if out_of_room:
                break
            assert code is not None
            # The program is the code block's whole text: the lead may open it with code of its own.
            program = (_lead_code(o) if not self.runs else "") + code.thinking
            t0 = time.perf_counter()
            result = await ctx.code.run(program)
            shown = o.code_end + observation(o, result)
            ids += tuple(tok.encode(shown))
            yield Thinking(ctx.choice, shown)
            self.runs.append(CodeRunTrace(result.exit_status, result.killed_by,
                                          round(time.perf_counter() - t0, 3), len(code.token_ids),
                                          len(result.stdout) + len(result.stderr)))
            if o.mode == "pal" or len(self.runs) >= o.max_tool_calls:
                self.ended = "max_tool_calls" if o.mode == "react" else "done"
                break
            stops = (o.next_code, ctx.engine.info.think_close)
            step = self._step(ids, stops, f"think{len(self.runs) - 1}")
            held = [event async for event in step] if self._plain() else None
            if held is None:  # it cannot be the answer: stream it as it comes
                async for event in step:
                    yield event
            thought = self.last
            if held is not None and self._answers(thought):
                assert thought is not None
                for event in held:
                    yield Answer(event.choice, event.text, event.logprobs) if isinstance(event, Thinking) else event
                self.answer, self.ended = thought, "answered"
                self.tokens -= len(thought.token_ids)
                ctx.ledger.thinking_to_answer(len(thought.token_ids))
                break
            for event in held or ():
                yield event
            ids, out_of_room = self._after(ids, thought)
            if out_of_room:
                break
            assert thought is not None
            if thought.stop_reason != o.next_code:  # the model closed its thinking
                closed = thought.stop_reason == ctx.engine.info.think_close
                break
            ids += tuple(tok.encode(o.next_code))
            yield Thinking(ctx.choice, o.next_code)
        ids += ctx.think_suffix_ids
        trace = ThinkingTrace(tokens=self.tokens, finish_reason=None, cut_by_budget=self.ended == "budget",
                              closed_by_model=closed, forced_continuations=0, nudged=False,
                              engine_requests=self.requests)
        self._finish(Thought(ids, trace))

    def _plain(self) -> bool:
        """Nothing shapes this request's answer that a thought is not generated under
        (an answer format or tool calls, the client's stop strings or ids,
        ``min_tokens``): only then may a thought be the answer."""
        s = self.ctx.sampling
        return self.ctx.output is PLAIN and not s.stop and not s.stop_token_ids and not s.min_tokens

    @staticmethod
    def _answers(thought: Generated | None) -> bool:
        """Whether a ReAct thought after an observation is the model's answer: it
        ended its turn (eos, not a stop string, not out of room) and said something."""
        return (thought is not None and thought.finish_reason == "stop" and not isinstance(thought.stop_reason, str)
                and bool(thought.thinking.strip()))


async def run(ctx: RunContext, plan: Plan) -> AsyncIterator[Event]:
    o: ToolUseOptions = plan.options  # type: ignore[assignment]
    think = CodeThink(ctx, plan, o)
    async with think as events:
        async for event in events:
            yield event
    prompt = think.result.ids
    answer_trace = None
    reason, stop_sequence = "length", None
    room = ctx.room(len(prompt), plan.max_tokens - ctx.ledger.generated)
    if think.answer is not None:  # ReAct's last thought was the answer (streamed by the phase)
        reason, answer_trace = "stop", AnswerTrace(len(think.answer.token_ids), "stop")
    elif room > 0:
        answer = Generation(ctx, prompt, ctx.phase_sampling(max_tokens=room), "answer", False)
        async with answer as events:
            async for event in events:
                yield event
        done = answer.result
        reason, stop_sequence = done.finish_reason or "stop", done.stop_sequence(ctx.sampling.stop)
        answer_trace = AnswerTrace(len(done.token_ids), done.finish_reason)
    yield ChoiceDone(ctx.choice, reason, ToolUseTrace(plan.strategy, o.mode, tuple(think.runs), think.ended,
                                                      think.result.trace, answer_trace), stop_sequence)


STRATEGY = Strategy(
    name="tool_use", run=run, read=read, section="tool_use", config=ToolUseConfig,
    keys=KEYS, thinks=lambda keys: True, needs_code=lambda plan: True, code_tool=True)
