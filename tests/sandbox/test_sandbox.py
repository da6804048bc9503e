"""The code interpreter's sandbox against hostile programs: real processes, real namespaces, no mocks.

Each corpus case is a program that tries one escape or one exhaustion. The
cases run concurrently once per module (``corpus``); each test then checks
one case: it ended blocked (the program itself prints ``BLOCKED`` with the
error it got) or killed with the expected ``killed_by``, within its limit
plus 1 s, left no process behind, and no secret of the server's environment
shows in any output. The limits are small (wall 3 s, CPU 2 s, 256 MB) so the
module takes seconds.

The sandbox needs root (namespaces, its own uids); as another user only the
refusal is tested.
"""
from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from server.sandbox import UID_BASE, Sandbox, sandbox_uid, verdict
from server.settings import SandboxSection, load_settings
from strategies.tools import CodeResult, ToolUnavailable

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-test-secret-xyz"
SECRET_ENV = {"PONDER_API_KEY": SECRET, "OPENAI_API_KEY": SECRET + "-openai"}
LIMITS = {"wall_seconds": 3.0, "cpu_seconds": 2, "memory_mb": 256, "max_processes": 16, "max_file_mb": 8,
          "max_open_files": 64, "max_output_bytes": 65536, "max_concurrent": 4, "python": "", "enabled": True}
WALL = LIMITS["wall_seconds"]
TOKEN = uuid.uuid4().hex[:8]  # names of files the hostile code tries to leave on the host

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root (namespaces, its own uids)")


def settings(**changes) -> SandboxSection:
    """The shipped [sandbox] section (configs/server.toml) with the test's small limits."""
    return load_settings(overrides={"sandbox": {**LIMITS, **changes}}).sandbox


@dataclass(frozen=True)
class Case:
    code: str
    killed_by: str | None = None
    stdout_has: tuple[str, ...] = ()
    stderr_has: tuple[str, ...] = ()
    exit_status: int | None = 0
    within: float = WALL + 1.0
    heavy: bool = False  # spins the CPUs: runs after the others, so their timings stay honest


def hostile_cases(port: int) -> dict[str, Case]:
    test_pid = os.getpid()
    return {
        "socket_loopback": Case(f"""
import socket
s = socket.socket(); s.settimeout(2)
try:
    s.connect(("127.0.0.1", {port})); print("ESCAPED")
except OSError as e:
    print("BLOCKED", type(e).__name__, e.errno)
""", stdout_has=(f"BLOCKED OSError {errno.ENETUNREACH}",)),
        "socket_public": Case("""
import socket
for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
    s = socket.socket(socket.AF_INET, kind); s.settimeout(2)
    try:
        s.connect(("1.1.1.1", 53)); s.send(b"x"); print("ESCAPED")
    except OSError as e:
        print("BLOCKED", e.errno)
""", stdout_has=(f"BLOCKED {errno.ENETUNREACH}\nBLOCKED {errno.ENETUNREACH}",)),
        "dns": Case("""
import socket
try:
    print("ESCAPED", socket.getaddrinfo("example.com", 443))
except OSError as e:
    print("BLOCKED", type(e).__name__)
""", stdout_has=("BLOCKED gaierror",)),
        "read_shadow": Case("""
for path in ("/etc/shadow", "/proc/1/root/etc/shadow", "/etc/gshadow"):
    try:
        print("ESCAPED", open(path).read())
    except OSError as e:
        print("BLOCKED", type(e).__name__)
""", stdout_has=("BLOCKED FileNotFoundError\n" * 3,)),
        "read_environs": Case(f"""
import os
for path in ("/proc/1/environ", "/proc/{test_pid}/environ", f"/proc/{{os.getppid()}}/environ"):
    try:
        print("ESCAPED", open(path).read())
    except OSError as e:
        print("BLOCKED", type(e).__name__)
print("ENV", sorted(os.environ))
print(open("/proc/self/environ").read())
""", stdout_has=("BLOCKED FileNotFoundError\n" * 3, "ENV ['HOME', 'LANG', 'PATH', 'PYTHONDONTWRITEBYTECODE', 'TMPDIR']")),
        "write_outside": Case(f"""
for path in ("/tmp/x-{TOKEN}", "/root/x-{TOKEN}", "/x-{TOKEN}", "/usr/x-{TOKEN}", "/etc/x-{TOKEN}", "/dev/shm/x-{TOKEN}"):
    try:
        open(path, "w").write("x"); print("ESCAPED", path)
    except OSError as e:
        print("BLOCKED", type(e).__name__)
open("inside", "w").write("fine")
print("INSIDE", open("inside").read())
""", stdout_has=("BLOCKED", "INSIDE fine")),
        "fork_bomb": Case("import os\nwhile True:\n    os.fork()\n", killed_by="processes", exit_status=1,
                          stderr_has=("BlockingIOError",)),
        "fork_bomb_resilient": Case("""
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
""", killed_by="timeout", exit_status=None, heavy=True),
        "alloc_10gb": Case("x = bytearray(10 * 2**30)\n", killed_by="memory", exit_status=1,
                           stderr_has=("MemoryError",)),
        "output_100mb": Case("import sys\nsys.stdout.write('x' * 100_000_000)\n", killed_by="output",
                             exit_status=None),
        "kill_parent": Case(f"""
import os, signal
for pid in (os.getppid(), 1, {test_pid}):
    try:
        os.kill(pid, signal.SIGKILL); print("ESCAPED", pid)
    except OSError as e:
        print("BLOCKED", type(e).__name__)
""", stdout_has=("BLOCKED PermissionError\nBLOCKED PermissionError\nBLOCKED ProcessLookupError",)),
        "ctypes_null": Case("import ctypes\nctypes.string_at(0)\n", killed_by="signal:11", exit_status=None),
        "subclasses": Case("""
for cls in ().__class__.__base__.__subclasses__():
    found = getattr(cls.__init__, "__globals__", {}).get("__builtins__")
    if found:
        imp = found["__import__"] if isinstance(found, dict) else found.__import__
        print("FOUND", cls.__name__, flush=True)
        imp("os").system("id -u; cat /etc/shadow /proc/1/environ; ls /root /work")
        break
""", stdout_has=("FOUND ",), stderr_has=("No such file",)),
        "sleep_forever": Case("import time\nprint('before the sleep')\ntime.sleep(10**6)\n", killed_by="timeout",
                              exit_status=None, stdout_has=("before the sleep\n",)),
        "inherited_fds": Case("import os\nprint('FDS', sorted(os.listdir('/proc/self/fd')))\n",
                              stdout_has=("FDS ['0', '1', '2', '3']",)),
        "thread_bomb": Case("""
import threading, time
while True:
    threading.Thread(target=time.sleep, args=(1000,)).start()
""", killed_by="timeout", exit_status=None, stderr_has=("can't start new thread",)),
        "fill_disk": Case("""
with open("big", "wb") as fh:
    while True:
        fh.write(b"x" * 2**20)
""", killed_by="file_size", exit_status=1),
        "many_files": Case("fs = [open(f'f{i}', 'w') for i in range(10_000)]\n", killed_by="open_files",
                           exit_status=1, stderr_has=("Too many open files",)),
        "setsid_escape": Case("""
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(1000)
    os._exit(0)
print("LEFT A DAEMON")
""", stdout_has=("LEFT A DAEMON",), within=2.0),
    }


def sandbox_processes() -> list[tuple[int, int, str]]:
    """``(pid, uid, cmdline)`` of every process of a sandbox uid, and of every launcher or init (root)."""
    found = []
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                uid = entry.stat().st_uid
                cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if sandbox_uid(uid) or "sandbox_init.py" in cmdline:
                found.append((int(entry.name), uid, cmdline[:100]))
    return found


def assert_no_secret(result: CodeResult) -> None:
    for value in SECRET_ENV.values():
        assert value not in result.stdout + result.stderr


@pytest.fixture(scope="module")
def secret_env():
    """API keys in the server's environment, as in production: none may reach a sandbox."""
    saved = {k: os.environ.get(k) for k in SECRET_ENV}
    os.environ.update(SECRET_ENV)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def corpus(secret_env) -> dict[str, tuple[CodeResult, list]]:
    """Every hostile case run once: light ones concurrently, then the CPU spinners one by one.

    Each result comes with the sandbox processes found once its batch had returned: none may be left.
    """
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs root")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        cases = hostile_cases(listener.getsockname()[1])
        results = asyncio.run(_run_corpus(cases))
        with pytest.raises(BlockingIOError):  # nothing connected to the host's loopback
            listener.accept()
    return results


async def _run_corpus(cases: dict[str, Case]) -> dict[str, tuple[CodeResult, list]]:
    """``{name: (result, sandbox processes once its batch was done)}``."""
    box = Sandbox(settings())
    assert await box.check() is None
    light = [name for name, case in cases.items() if not case.heavy]
    results = await asyncio.gather(*(box.run(cases[name].code) for name in light))
    left = sandbox_processes()
    out = {name: (result, left) for name, result in zip(light, results)}
    for name in cases:
        if cases[name].heavy:
            out[name] = (await box.run(cases[name].code), sandbox_processes())
    return out


CASES = hostile_cases(0)


@needs_root
@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_program_is_contained(corpus, name):
    case = CASES[name]
    result, leftovers = corpus[name]
    context = json.dumps(result.to_json())[:3000]
    assert result.killed_by == case.killed_by, context
    assert result.exit_status == case.exit_status, context
    assert result.seconds <= case.within, context
    for text in case.stdout_has:
        assert text in result.stdout, context
    for text in case.stderr_has:
        assert text in result.stderr, context
    assert "ESCAPED" not in result.stdout, context
    assert_no_secret(result)
    assert leftovers == []


@needs_root
def test_timing_of_killed_runs(corpus):
    """A wall-clock kill lands at the limit, not later; a kill for output comes before the limit."""
    for name in ("sleep_forever", "thread_bomb", "fork_bomb_resilient"):
        assert WALL <= corpus[name][0].seconds <= WALL + 1.0, name
    assert corpus["output_100mb"][0].seconds < WALL
    out = corpus["output_100mb"][0]
    assert len(out.stdout.encode()) + len(out.stderr.encode()) <= LIMITS["max_output_bytes"]
    assert out.stdout.startswith("x" * 1000)


@needs_root
def test_nothing_written_on_the_host(corpus):
    assert corpus["write_outside"][0].stdout.count("BLOCKED") == 6
    for path in (f"/tmp/x-{TOKEN}", f"/root/x-{TOKEN}", f"/x-{TOKEN}", f"/usr/x-{TOKEN}", f"/dev/shm/x-{TOKEN}"):
        assert not os.path.exists(path), path


@needs_root
def test_runs_as_a_uid_of_its_own_in_an_empty_folder(corpus):
    result = corpus["subclasses"][0]
    uid = int(result.stdout.splitlines()[1])  # after "FOUND <class>": id -u
    assert sandbox_uid(uid) and uid >= UID_BASE
    assert "main.py" in result.stdout  # ls /work: only the program itself


@needs_root
def test_cpu_limit_kills_a_busy_loop(secret_env):
    """Alone (other runs would share the CPUs), with a wall clock long enough that only the CPU limit can fire."""
    box = Sandbox(settings(cpu_seconds=1, wall_seconds=6.0))
    result = asyncio.run(box.run("while True:\n    pass\n"))
    assert result.killed_by == "cpu", result
    assert result.exit_status is None
    assert 1.0 <= result.seconds <= 6.0 + 1.0
    assert not sandbox_processes()


@needs_root
def test_normal_program_and_exception(secret_env):
    box = Sandbox(settings())

    async def both():
        return await asyncio.gather(
            box.run("import math\nprint('héllo', math.factorial(20))\n"),
            box.run("def f():\n    raise ValueError('bad input')\nf()\n"))

    ok, failed = asyncio.run(both())
    assert (ok.exit_status, ok.killed_by, ok.stdout, ok.stderr) == (0, None, "héllo 2432902008176640000\n", "")
    assert failed.exit_status == 1 and failed.killed_by is None and failed.stdout == ""
    assert failed.stderr.startswith("Traceback") and failed.stderr.rstrip().endswith("ValueError: bad input")
    assert ok.to_json()["killed_by"] is None and ok.to_json()["exit_status"] == 0


@needs_root
def test_a_call_timeout_lowers_the_wall_clock(secret_env):
    box = Sandbox(settings())
    result = asyncio.run(box.run("import time\ntime.sleep(60)\n", timeout=1.0))
    assert result.killed_by == "timeout" and 1.0 <= result.seconds < 2.0


@needs_root
def test_cancellation_kills_the_run_within_a_second(secret_env):
    async def scenario() -> float:
        box = Sandbox(settings(wall_seconds=30.0))
        await box.check()
        task = asyncio.create_task(box.run("import os, time\nos.fork()\ntime.sleep(10**6)\n"))
        for _ in range(200):  # until both processes of the program run
            await asyncio.sleep(0.02)
            if sum(sandbox_uid(uid) for _, uid, _ in sandbox_processes()) >= 2:
                break
        else:
            pytest.fail(f"the program never started: {sandbox_processes()}")
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - start

    elapsed = asyncio.run(scenario())
    assert elapsed < 1.0
    assert not sandbox_processes()


@needs_root
def test_a_launcher_deaf_to_sigterm_is_killed_with_its_group(tmp_path, monkeypatch, secret_env):
    """The fallback of the kill: SIGKILL to the launcher's group, the init follows it (PDEATHSIG)."""
    import server.sandbox as sandbox_module

    source = sandbox_module.INIT_SCRIPT.read_text()
    deaf = source.replace("    for sig in (*TERMINATING, signal.SIGALRM):\n        signal.signal(sig, kill_init)",
                          "    for sig in TERMINATING:\n        signal.signal(sig, signal.SIG_IGN)")
    assert deaf != source
    script = tmp_path / "sandbox_init.py"
    script.write_text(deaf)
    monkeypatch.setattr(sandbox_module, "INIT_SCRIPT", script)

    async def scenario() -> CodeResult:
        box = Sandbox(settings(wall_seconds=1.0))
        return await box.run("import os, time\nos.fork()\ntime.sleep(10**6)\n")

    result = asyncio.run(scenario())
    assert result.killed_by == "timeout" and result.exit_status is None
    assert result.seconds < 1.0 + 1.0
    for _ in range(50):  # the kernel tears the namespace down after the launcher's death, not before
        if not sandbox_processes():
            break
        time.sleep(0.02)
    assert not sandbox_processes()


@needs_root
def test_without_the_capabilities_the_cli_refuses_with_the_reason(tmp_path):
    """Root without capabilities (setpriv drops the bounding set): unshare is refused, and the CLI says why."""
    program = tmp_path / "prog.py"
    program.write_text("print(1)\n")
    proc = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--", sys.executable, "-m",
                           "server.cli", "sandbox", "run", str(program)],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "unshare: Operation not permitted" in proc.stderr and "needs root with CAP_SYS_ADMIN" in proc.stderr


def test_disabled_sandbox_refuses():
    box = Sandbox(settings(enabled=False))
    with pytest.raises(ToolUnavailable, match="disabled"):
        asyncio.run(box.run("print(1)"))


def test_missing_interpreter_refuses_with_the_reason():
    box = Sandbox(settings(python="/nonexistent/python3"))
    reason = asyncio.run(box.check())
    assert reason and "/nonexistent/python3" in reason
    with pytest.raises(ToolUnavailable, match="/nonexistent/python3"):
        asyncio.run(box.run("print(1)"))


_REFUSED_WITHOUT_ROOT = f"""
import asyncio, sys
sys.path.insert(0, {str(ROOT)!r})
from server.sandbox import Sandbox
from server.settings import load_settings
from strategies.tools import ToolUnavailable
try:
    asyncio.run(Sandbox(load_settings(overrides={{"sandbox": {LIMITS!r}}}).sandbox).run("print(1)"))
except ToolUnavailable as e:
    print("REFUSED", e)
else:
    print("RAN")
"""


def test_without_the_privileges_the_tool_is_refused():
    """Without root's capabilities the sandbox cannot be set up and says why. Run as root
    (CI is), the check runs in a child that drops every capability (a container without
    privileges), so it runs on every machine."""
    drop = [] if os.geteuid() != 0 else ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all"]
    out = subprocess.run([*drop, sys.executable, "-c", _REFUSED_WITHOUT_ROOT], capture_output=True, text=True,
                         timeout=120, cwd="/", env={"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("REFUSED") and "needs root with CAP_SYS_ADMIN" in out.stdout, out.stdout


@pytest.mark.parametrize(("report", "host_kill", "stderr", "expected"), [
    ({"signal": signal.SIGXCPU, "cpu": 2.0}, None, "", (None, "cpu")),
    ({"signal": 9, "cpu": 3.0}, None, "", (None, "cpu")),
    ({"signal": 9, "cpu": 0.1}, None, "", (None, "signal:9")),
    ({"signal": 11, "cpu": 0.1}, None, "", (None, "signal:11")),
    ({"signal": signal.SIGXFSZ, "cpu": 0.1}, None, "", (None, "file_size")),
    ({}, "timeout", "", (None, "timeout")),
    ({"exit": 0, "cpu": 0.1}, "output", "", (0, "output")),
    ({"exit": 1, "cpu": 0.1}, None, "Traceback ...\nMemoryError\n", (1, "memory")),
    ({"exit": 1, "cpu": 0.1}, None, "OSError: [Errno 27] File too large\n", (1, "file_size")),
    ({"exit": 1, "cpu": 0.1}, None, "ValueError: MemoryError is not this\n", (1, None)),
    ({"exit": 3, "cpu": 0.1}, None, "MemoryError\n", (3, None)),
])
def test_verdict(report, host_kill, stderr, expected):
    assert verdict(report, host_kill, stderr, cpu_seconds=2) == expected


@needs_root
def test_cli_prints_the_result_as_json(tmp_path, secret_env):
    program = tmp_path / "prog.py"
    program.write_text("import os\nprint('from', os.getcwd(), sorted(os.environ))\n")
    sleeper = tmp_path / "sleep.py"
    sleeper.write_text("import time\ntime.sleep(60)\n")
    env = {**os.environ, **SECRET_ENV}

    def cli(path: Path) -> dict:
        proc = subprocess.run([sys.executable, "-m", "server.cli", "sandbox", "run", str(path),
                               "--set", "sandbox.wall_seconds=2"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    out = cli(program)
    assert set(out) == {"exit_status", "stdout", "stderr", "killed_by", "seconds"}
    assert out["exit_status"] == 0 and out["killed_by"] is None
    assert out["stdout"].startswith("from /work ['HOME', 'LANG', 'PATH',")
    assert SECRET not in json.dumps(out)
    slept = cli(sleeper)
    assert slept["killed_by"] == "timeout" and slept["exit_status"] is None and 2.0 <= slept["seconds"] < 3.0
    assert not sandbox_processes()


def test_cli_refuses_when_the_sandbox_is_off(tmp_path):
    program = tmp_path / "prog.py"
    program.write_text("print(1)\n")
    proc = subprocess.run([sys.executable, "-m", "server.cli", "sandbox", "run", str(program),
                           "--set", "sandbox.enabled=false"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "disabled" in proc.stderr
