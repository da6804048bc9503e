"""``tool_use`` on the real engine with the real sandbox.

The default model writes whatever Python it writes; the first tests check the
path (code streamed as thinking, the run in the trace, usage) whatever it is.
The hostile test starts its own server whose ``[tool_use] lead`` opens the
code block with a hostile program and biases the model to close the block at
once (``logit_bias`` on the fence token, which also shapes thinking), so the
program that runs through the tool path is known: it tries the network (the
server's own port included), the server's environment and secrets, files
outside its folder and the server process, then sleeps until the wall clock
kills it. Meanwhile the server keeps answering, and nothing is left behind.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from loadtests.common import free_port, model_folder
from server.sandbox import UID_BASE

from .conftest import start_server, stop_server
from .helpers import metric
from .sse import post_stream

Q = [{"role": "user", "content": "What is 17 * 23 + 4? Compute it."}]
SECRET = "sk-fake-secret-for-the-sandbox-test"


def _sandbox_processes() -> list[int]:
    """Pids of processes running as a sandbox uid."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if d.stat().st_uid >= UID_BASE:
                    out.append(int(d.name))
            except OSError:
                continue
    return out


@pytest.mark.parametrize("mode", ["pal", "react"])
def test_tool_use_runs_the_models_code_in_the_sandbox(client: openai.OpenAI, live, mode: str) -> None:
    r = client.chat.completions.create(
        model=live.model, messages=Q, max_tokens=300, temperature=0,
        extra_body={"reasoning": {"strategy": "tool_use", "tool_mode": mode, "max_thinking_tokens": 120}})
    plan, trace = r.model_extra["reasoning_plan"], r.choices[0].model_extra["reasoning_trace"]
    assert plan["strategy"] == "tool_use" and plan["mode"] == mode
    reasoning = r.choices[0].message.model_extra["reasoning_content"]
    assert reasoning.startswith("I will compute this with a Python program")
    assert trace["ended"] in ("done", "answered", "max_tool_calls", "budget")
    if trace["ended"] == "answered":  # ReAct: the thought after an observation ended the turn
        assert mode == "react" and r.choices[0].message.content
    answer_tokens = r.usage.completion_tokens - r.usage.completion_tokens_details.reasoning_tokens
    assert answer_tokens == (trace["answer"]["tokens"] if trace.get("answer") else 0)
    for run in trace["runs"]:  # each program the model closed ran, and its output was written back
        assert run["exit_status"] is not None or run["killed_by"]
    if trace["runs"]:
        assert "Output:" in reasoning
    else:
        assert trace["ended"] == "budget"
    assert r.usage.completion_tokens_details.reasoning_tokens == trace["thinking"]["tokens"] <= 120
    assert not _sandbox_processes()


def test_tool_use_streams_what_it_returns(live) -> None:
    """The stream carries the code, the run's output and the answer, and its usage is the
    trace's. (A program's output may differ between two runs, an object's address for
    one, so the two responses are compared up to the first output.)"""
    body = {"model": live.model, "messages": Q, "max_tokens": 240, "temperature": 0,
            "reasoning": {"strategy": "tool_use", "tool_mode": "pal", "max_thinking_tokens": 96},
            "stream_options": {"include_usage": True}}
    full = httpx.post(live.v1 + "/chat/completions", json=body, headers=live.headers(), timeout=300).json()
    s = post_stream(live.base_url, {**body, "stream": True}, live.headers())
    joined = s.joined(1)[0]
    msg = full["choices"][0]["message"]
    assert joined["reasoning_content"].split("Output:")[0] == msg["reasoning_content"].split("Output:")[0]
    usage = s.chunks[-1]["usage"]
    done = [c for c in s.chunks if c["choices"] and c["choices"][0].get("finish_reason")][0]
    trace = done["choices"][0]["reasoning_trace"]
    assert joined["reasoning_content"].count("Output:") == len(trace["runs"])
    answer = trace["answer"]["tokens"] if "answer" in trace else 0
    assert usage["completion_tokens"] == trace["thinking"]["tokens"] + answer
    assert usage["completion_tokens_details"]["reasoning_tokens"] == trace["thinking"]["tokens"]


def test_code_interpreter_tool_and_self_consistency_whose_candidates_each_run_code(
        client: openai.OpenAI, live) -> None:
    """``{"type": "code_interpreter"}`` in the SDK's ``tools`` asks for the built-in
    tool; with ``self_consistency`` every candidate is a whole tool_use run. The
    fence token is favoured (``logit_bias``) so each candidate closes its code block
    and its program runs: the interpreter's counter moves by one run per candidate."""
    fence = str(_fence_token())
    before = metric(live, "ponder_code_runs_total")
    r = client.chat.completions.create(
        model=live.model, messages=Q, max_tokens=160, temperature=0.8, seed=4, logit_bias={fence: 100},
        tools=[{"type": "code_interpreter"}],  # type: ignore[list-item]  # ponder's built-in tool
        extra_body={"reasoning": {"strategy": "self_consistency", "samples": 3, "tool_mode": "pal",
                                  "max_thinking_tokens": 64}})
    plan, trace = r.model_extra["reasoning_plan"], r.choices[0].model_extra["reasoning_trace"]
    assert plan["strategy"] == "self_consistency" and plan["code"] == {"mode": "pal", "max_tool_calls": 3,
                                                                       "tools": ["python"]}
    assert trace["started"] == 3 and len(trace["candidates"]) == 3
    assert metric(live, "ponder_code_runs_total") - before == 3
    assert metric(live, 'ponder_code_runs_total{outcome="exit_0"}') >= 3  # an empty program runs and exits 0
    reasoning = r.choices[0].message.model_extra["reasoning_content"]
    assert reasoning.startswith("I will compute this with a Python program") and "Output:" in reasoning
    assert r.usage.completion_tokens_details.reasoning_tokens > 0
    assert not _sandbox_processes()
    alone = client.chat.completions.create(model=live.model, messages=Q, max_tokens=160, temperature=0,
                                           tools=[{"type": "code_interpreter"}])  # type: ignore[list-item]
    assert alone.model_extra["reasoning_plan"]["strategy"] == "tool_use"


HOSTILE = """import os, socket
def attempt(name, fn):
    try:
        print(name, "ESCAPED", repr(fn())[:200])
    except Exception as e:
        print(name, "BLOCKED", type(e).__name__)
def connect(host, port):
    s = socket.socket(); s.settimeout(1); s.connect((host, port)); return "connected"
def environs():
    return [open("/proc/" + d + "/environ").read() for d in os.listdir("/proc") if d.isdigit()]
def signalled():
    out = []
    for pid in range(2, 70000):
        try:
            os.kill(pid, 0); out.append(pid)
        except OSError:
            pass
    if len(out) > 3:
        return out
    raise PermissionError(out)
attempt("server_port", lambda: connect("127.0.0.1", PORT))
attempt("public", lambda: connect("1.1.1.1", 53))
attempt("dns", lambda: socket.gethostbyname("example.com"))
attempt("shadow", lambda: open("/etc/shadow").read())
attempt("init_environ", lambda: open("/proc/1/environ").read())
attempt("write_tmp", lambda: open("/tmp/ponder-escape-TOKEN", "w").write("x"))
attempt("write_root", lambda: open("/root/ponder-escape-TOKEN", "w").write("x"))
attempt("kill_parent", lambda: os.kill(os.getppid(), 9))
attempt("signal_others", signalled)
print("environs", environs())
print("SLEEPING", flush=True)
import time; time.sleep(10**6)
"""
BLOCKED = ("server_port", "public", "dns", "shadow", "init_environ", "write_tmp", "write_root", "kill_parent",
           "signal_others")


async def _drain(response: httpx.Response) -> None:
    async for _ in response.aiter_lines():
        pass


def _left_on_host(token: str) -> list[str]:
    return [p for p in (f"/tmp/ponder-escape-{token}", f"/root/ponder-escape-{token}") if Path(p).exists()]


def _fence_token() -> int:
    ids = AutoTokenizer.from_pretrained(model_folder()).encode("```", add_special_tokens=False)
    assert len(ids) == 1, ids
    return ids[0]


@pytest.mark.slow  # a server of its own (tests/sandbox covers the corpus in make test)
@pytest.mark.asyncio
async def test_hostile_code_through_the_tool_path(tmp_path) -> None:
    port, token, wall = free_port(), uuid.uuid4().hex[:8], 3.0
    program = HOSTILE.replace("PORT", str(port)).replace("TOKEN", token)
    lead = "I will compute this with Python.\n```python\n" + program
    proc, live = start_server(
        tmp_path / "ponder.log", "--set", f"tool_use.lead={json.dumps(lead)}", "--set", f"sandbox.wall_seconds={wall}",
        "--set", "tool_use.mode=\"pal\"", port=port, env={"PONDER_FAKE_SECRET": SECRET})
    try:
        fence = _fence_token()
        body = {"model": live.model, "messages": Q, "max_tokens": 24, "temperature": 0,
                "logit_bias": {str(fence): 100}, "reasoning": {"strategy": "tool_use", "tool_mode": "pal"}}
        async with httpx.AsyncClient(timeout=120, headers=live.headers()) as http:
            hostile = asyncio.create_task(http.post(live.v1 + "/chat/completions", json=body))
            # While the program sleeps in the sandbox, the server answers others.
            while not _sandbox_processes():
                assert not hostile.done(), hostile.result().text
                await asyncio.sleep(0.05)
            t0 = time.monotonic()
            other = await http.post(live.v1 + "/chat/completions", json={
                "model": live.model, "messages": Q, "max_tokens": 4})
            assert other.status_code == 200 and time.monotonic() - t0 < wall
            r = await hostile
        assert r.status_code == 200, r.text
        out = r.json()
        trace = out["choices"][0]["reasoning_trace"]
        [run] = trace["runs"]
        assert run["killed_by"] == "timeout" and run["seconds"] <= wall + 1.0
        reasoning = out["choices"][0]["message"]["reasoning_content"]
        output = reasoning.split("\nOutput:\n", 1)[1]  # what the program printed, after its code
        for name in BLOCKED:
            assert f"{name} BLOCKED" in output, name
        assert "SLEEPING" in output and "ESCAPED" not in output and "[killed: timeout]" in output
        assert SECRET not in json.dumps(out) and "test-key" not in reasoning
        assert not _left_on_host(token)
        assert not _sandbox_processes()

        # A client that goes away while its program runs: the run is killed within a second.
        async with httpx.AsyncClient(timeout=120, headers=live.headers()) as http:
            async with http.stream("POST", live.v1 + "/chat/completions", json={**body, "stream": True}) as s:
                reader = asyncio.create_task(_drain(s))
                started = time.monotonic()
                while not _sandbox_processes():
                    assert not reader.done(), "the stream ended before the program ran"
                    assert time.monotonic() - started < 60
                    await asyncio.sleep(0.02)
                reader.cancel()
        gone = time.monotonic()
        while _sandbox_processes() and time.monotonic() - gone < 1.0:
            await asyncio.sleep(0.02)
        assert not _sandbox_processes()
        assert proc.poll() is None and httpx.get(live.base_url + "/ready").status_code == 200
    finally:
        stop_server(proc)
