"""``tool_use`` (PAL / ReAct) on the scripted engine with a scripted code runner:
the exact ids each step continues from, what streams as thinking, usage,
the trace, and that a cancelled request cancels the running program.

The sandbox itself is tested for real in tests/sandbox; the whole path on the
real engine and sandbox in tests/integration/test_tool_use.py.
"""
from __future__ import annotations

import asyncio
import dataclasses

import pytest

from strategies.events import Answer, ChoiceDone, Thinking
from strategies.tools import CodeResult
from tests.scripted_engine import EOS, ScriptedEngine, encode, word
from tests.unit.harness import PREFIX, RID, SUFFIX, P, contexts, events_of, make_plan, run_to_end, text_of, trace_of

LEAD = encode("```python\n")


class Runner:
    """Runs nothing: hands out ``outputs`` in order and records the programs."""

    def __init__(self, *outputs: str, hang: bool = False) -> None:
        self.outputs, self.hang = list(outputs), hang
        self.codes: list[str] = []
        self.cancelled = False

    async def run(self, code: str, *, timeout: float | None = None) -> CodeResult:  # noqa: ASYNC109
        self.codes.append(code)
        if self.hang:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        return CodeResult(0, self.outputs.pop(0), "", None, 0.01)


@pytest.mark.asyncio
async def test_react_runs_code_observes_and_thinks_on_then_answers() -> None:
    engine = ScriptedEngine(script=[
        "x = 6 * 7\nprint(x)\n```",                    # code0, stops at the code fence
        "Let me check the sum too.\n```python",       # think0, opens another block
        "print(40 + 2)\n```",                          # code1
        ["So it is 42.", [word("</think>")]],         # think1, closes the thinking
        "The answer is 42." + EOS,                     # answer
    ])
    runner = Runner("42\n", "42\n")
    plan = make_plan("tool_use", max_tool_calls=3, thinking=True, max_thinking_tokens=300, max_tokens=400)
    _, events, usage = await run_to_end(engine, plan, 1, contexts(engine, P, 400, code=runner))

    assert runner.codes == ["x = 6 * 7\nprint(x)\n", "print(40 + 2)\n"]
    names = [c.request_id for c in engine.calls]
    assert names == [f"{RID}-c0-{n}" for n in ("code0", "think0", "code1", "think1", "answer")]
    obs = encode("```\nOutput: 42\n")
    code0 = P + PREFIX + LEAD + encode("x = 6 * 7\nprint(x)\n")
    think0 = code0 + obs + encode("Let me check the sum too.\n")
    code1 = think0 + encode("```python")
    think1 = code1 + encode("print(40 + 2)\n") + obs
    assert [c.prompt_ids for c in engine.calls] == [P + PREFIX + LEAD, code0 + obs, code1, think1,
                                                   think1 + encode("So it is 42.") + SUFFIX]
    assert engine.calls[0].sampling.stop == ("```",)
    assert engine.calls[1].sampling.stop == ("```python", "</think>")
    assert text_of(events, Answer) == "The answer is 42."
    thinking = text_of(events, Thinking)
    assert thinking.startswith("```python\nx = 6 * 7") and thinking.count("Output: 42") == 2
    trace = trace_of(events)
    assert trace["mode"] == "react" and trace["ended"] == "done" and len(trace["runs"]) == 2
    assert trace["runs"][0]["exit_status"] == 0 and trace["thinking"]["closed_by_model"]
    # Generated tokens only: the lead, fences and observations the server wrote are not counted.
    assert usage.completion_tokens == sum(len(c.output_ids) for c in engine.calls)
    assert usage.reasoning_tokens == sum(len(c.output_ids) for c in engine.calls[:4])


@pytest.mark.asyncio
async def test_react_thought_that_ends_the_turn_is_the_answer() -> None:
    # After the observation the model writes its result and ends its turn (eos):
    # no answer phase, that thought streams as the answer and counts as answer tokens.
    engine = ScriptedEngine(script=["print(6 * 7)\n```", "The final answer is 42." + EOS])
    runner = Runner("42\n")
    plan = make_plan("tool_use", max_tool_calls=3, thinking=True, max_thinking_tokens=300, max_tokens=400)
    _, events, usage = await run_to_end(engine, plan, 1, contexts(engine, P, 400, code=runner))

    assert [c.request_id for c in engine.calls] == [f"{RID}-c0-code0", f"{RID}-c0-think0"]
    assert text_of(events, Answer) == "The final answer is 42."
    assert "final answer" not in text_of(events, Thinking) and "Output: 42" in text_of(events, Thinking)
    # Every answer event comes after the last thinking event (the thought was held back).
    kinds = [type(e) for e in events if isinstance(e, (Thinking, Answer))]
    assert kinds.index(Answer) > max(i for i, k in enumerate(kinds) if k is Thinking)
    trace = trace_of(events)
    assert trace["ended"] == "answered" and trace["answer"]["tokens"] == len(engine.calls[1].output_ids)
    assert trace["thinking"]["tokens"] == len(engine.calls[0].output_ids)
    assert usage.completion_tokens == sum(len(c.output_ids) for c in engine.calls)
    assert usage.reasoning_tokens == len(engine.calls[0].output_ids)
    assert [e for e in events if isinstance(e, ChoiceDone)][0].finish_reason == "stop"


@pytest.mark.asyncio
async def test_react_thought_stays_thinking_when_the_answer_has_stop_strings() -> None:
    # The thought was generated without the client's stop strings: it cannot be the
    # answer, so it streams as thinking and the answer phase (which applies them) runs.
    engine = ScriptedEngine(script=["print(6 * 7)\n```", "It is 42." + EOS, "42" + EOS])
    plan = make_plan("tool_use", max_tool_calls=3, thinking=True, max_thinking_tokens=300, max_tokens=400)
    _, events, usage = await run_to_end(engine, plan, 1, contexts(engine, P, 400, code=Runner("42\n"),
                                                                  stop=("END",)))
    assert [c.request_id.rsplit("-", 1)[1] for c in engine.calls] == ["code0", "think0", "answer"]
    assert engine.calls[2].sampling.stop == ("END",)
    assert "It is 42." in text_of(events, Thinking) and text_of(events, Answer) == "42"
    assert trace_of(events)["ended"] == "done"
    assert usage.reasoning_tokens == sum(len(c.output_ids) for c in engine.calls[:2])


@pytest.mark.asyncio
async def test_react_thought_cut_by_the_cap_stays_thinking() -> None:
    # Out of room is not an answer: the thought stays thinking and an answer follows.
    engine = ScriptedEngine(script=["print(1)\n```", "and now " * 40, "1" + EOS])
    plan = make_plan("tool_use", max_tool_calls=3, thinking=True, max_thinking_tokens=30, max_tokens=200)
    _, events, _ = await run_to_end(engine, plan, 1, contexts(engine, P, 200, code=Runner("1")))
    assert [c.request_id.rsplit("-", 1)[1] for c in engine.calls] == ["code0", "think0", "answer"]
    assert "and now" in text_of(events, Thinking) and text_of(events, Answer) == "1"
    assert trace_of(events)["ended"] == "budget"


@pytest.mark.asyncio
async def test_pal_runs_one_program_and_the_output_grounds_the_answer() -> None:
    engine = ScriptedEngine(script=["print(17 * 3)\n```", "51" + EOS])
    runner = Runner("51\n")
    plan = make_plan("tool_use", mode="pal", thinking=True, max_tokens=200)
    _, events, _ = await run_to_end(engine, plan, 1, contexts(engine, P, 200, code=runner))
    assert [c.request_id for c in engine.calls] == [f"{RID}-c0-code0", f"{RID}-c0-answer"]
    assert engine.calls[1].prompt_ids[-len(SUFFIX):] == SUFFIX
    assert "Output: 51" in text_of(events, Thinking) and text_of(events, Answer) == "51"
    assert trace_of(events)["ended"] == "done"


@pytest.mark.asyncio
async def test_max_tool_calls_ends_the_loop() -> None:
    engine = ScriptedEngine(script=["print(1)\n```", "again\n```python", "print(2)\n```", "done" + EOS])
    plan = make_plan("tool_use", max_tool_calls=2, thinking=True, max_tokens=200)
    _, events, _ = await run_to_end(engine, plan, 1, contexts(engine, P, 200, code=Runner("1", "2")))
    assert [c.request_id.rsplit("-", 1)[1] for c in engine.calls] == ["code0", "think0", "code1", "answer"]
    assert trace_of(events)["ended"] == "max_tool_calls"


@pytest.mark.asyncio
async def test_a_thinking_cap_cuts_the_code_and_nothing_runs() -> None:
    engine = ScriptedEngine(script=["print(" + "9" * 50, "no" + EOS])
    runner = Runner()
    plan = make_plan("tool_use", thinking=True, max_thinking_tokens=10, max_tokens=100)
    _, events, usage = await run_to_end(engine, plan, 1, contexts(engine, P, 100, code=runner))
    assert runner.codes == [] and trace_of(events)["ended"] == "budget"
    assert usage.reasoning_tokens <= 10


@pytest.mark.asyncio
async def test_closing_the_request_while_a_program_runs_cancels_it() -> None:
    engine = ScriptedEngine(script=["while True: pass\n```"])
    runner = Runner(hang=True)
    plan = make_plan("tool_use", thinking=True, max_tokens=100)
    events = events_of(plan, 1, contexts(engine, P, 100, code=runner))

    async def consume() -> None:
        async for _ in events:
            pass

    task = asyncio.create_task(consume())
    while not runner.codes:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runner.cancelled and engine.in_flight == 0


def test_the_trace_is_typed_and_counts_thinking_phases() -> None:
    from strategies.tool_use import CodeRunTrace, ToolUseTrace
    from strategies.trace import AnswerTrace, ThinkingTrace
    t = ToolUseTrace("tool_use", "pal", (CodeRunTrace(0, None, 0.1, 5, 3),), "done",
                     ThinkingTrace(5, None, False, False, 0, False, 1), AnswerTrace(2, "stop"))
    assert t.thinking_phases() == (t.thinking,)
    assert dataclasses.is_dataclass(t) and isinstance(ChoiceDone(0, "stop", t).trace, ToolUseTrace)


class Interpreter:
    """"Runs" ``print(N)`` programs: the output is N (candidates run in any order)."""

    def __init__(self) -> None:
        self.codes: list[str] = []

    async def run(self, code: str, *, timeout: float | None = None) -> CodeResult:  # noqa: ASYNC109
        self.codes.append(code)
        return CodeResult(0, code.strip()[len("print("):-1] + "\n", "", None, 0.01)


@pytest.mark.asyncio
async def test_self_consistency_candidates_each_run_code_and_the_programs_answers_are_voted() -> None:
    """PAL with a majority vote (Gao et al. 2022, section 5): every candidate is a
    whole tool_use run; the vote is on the answers the programs grounded."""
    from strategies.tool_use import ToolUseOptions
    from tests.scripted_engine import CharTokenizer
    programs = {0: "print(42)", 1: "print(41)", 2: "print(42)"}
    tok = CharTokenizer()

    def script(prompt: tuple[int, ...], sampling) -> str:
        k = sampling.seed % 1_000_003  # RunContext.candidate: seed * STRIDE + k
        if prompt[-len(LEAD):] == LEAD:
            return programs[k] + "\n```"
        assert prompt[-len(SUFFIX):] == SUFFIX, "PAL: the code, then the answer"
        return tok.decode(prompt).rsplit("Output: ", 1)[1].split("\n")[0] + EOS

    engine = ScriptedEngine(script=script)
    runner = Interpreter()
    code = ToolUseOptions("pal", 1, "```python\n", "```python", "```", "\nOutput: {output}\n", 200)
    plan = make_plan("self_consistency", samples=3, code=code, thinking=True, max_tokens=200)
    _, events, usage = await run_to_end(engine, plan, 1, contexts(engine, P, 200, seed=5, code=runner))
    assert sorted(runner.codes) == sorted(p + "\n" for p in programs.values())
    assert sorted(c.request_id.rsplit("-", 1)[1] for c in engine.calls) == ["answer"] * 3 + ["code0"] * 3
    trace = trace_of(events)
    assert trace["votes"] == {"42": 2, "41": 1} and trace["answer"] == "42"
    assert text_of(events, Answer) == "42" and "Output: 42" in text_of(events, Thinking)
    assert plan.options.public()["code"] == {"mode": "pal", "max_tool_calls": 1, "tools": ["python"]}
    assert usage.completion_tokens == sum(len(c.output_ids) for c in engine.calls)
