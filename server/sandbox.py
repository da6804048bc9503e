"""The code interpreter's sandbox: one isolated, limited, killable process tree per run.

:class:`Sandbox` is the server's :class:`~strategies.tools.CodeRunner`. A run
starts ``server/sandbox_init.py`` as root; that script unshares new pid,
mount, network, ipc and uts namespaces and runs the program as a uid of its
own in a chroot of read-only system folders and an empty tmpfs work folder,
under rlimits (see its docstring for the three processes and why). This side
keeps what needs the event loop: the wall clock, the output cap, reading
stdout and stderr as they come, and killing the run when the request that
wanted it is cancelled or times out.

No sandbox, no tool: :meth:`Sandbox.check` runs a probe in the sandbox (no
network interface but loopback, no route out, not root, read-only root) and
records why it cannot be used; :meth:`Sandbox.run` refuses with
:class:`~strategies.tools.ToolUnavailable` until a check has passed. Code is
never run outside the sandbox.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import marshal
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from strategies.tools import CodeResult, ToolUnavailable

from .settings import SandboxSection

log = logging.getLogger("ponder.sandbox")

INIT_SCRIPT = Path(__file__).resolve().with_name("sandbox_init.py")
# Each concurrent run gets its own uid (and gid), never a real account's:
# RLIMIT_NPROC counts per uid, so one run's fork bomb cannot use up another
# run's processes, and two runs cannot signal or ptrace each other.
UID_BASE = 2_000_000_000
UID_POOL = 4096
# Folders of the host visible (read-only) inside; the interpreter's own
# prefix is added. Symlinks (/bin -> usr/bin) are copied as symlinks.
SYSTEM_BINDS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/work",
    "TMPDIR": "/work",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
}
# After SIGTERM the launcher kills the run in milliseconds; past this, SIGKILL its group.
KILL_GRACE_S = 0.3
# After SIGKILL, how long a kill waits for the launcher's exit before it leaves the reaping to asyncio.
REAP_WAIT_S = 0.5
# The probe's own wall clock: generous, a slow start is not a broken sandbox.
PROBE_WALL_S = 10.0
READ_CHUNK = 65536

# The last lines of an uncaught traceback that say a limit ended the program.
_LIMIT_ERRORS = (
    (re.compile(r"^MemoryError\b"), "memory"),
    (re.compile(r"^BlockingIOError: \[Errno 11\]|can't start new thread"), "processes"),
    (re.compile(r"^\w*Error: \[Errno 2[78]\]"), "file_size"),  # EFBIG, ENOSPC
    (re.compile(r"^\w*Error: \[Errno 2[34]\]"), "open_files"),  # ENFILE, EMFILE
)

# Run in the sandbox by check(); prints "ok" or what is wrong.
PROBE = r'''
import os, resource, socket
bad = []
if os.getuid() == 0 or os.getgid() == 0:
    bad.append("runs as root")
names = sorted(name for _, name in socket.if_nameindex())
if set(names) - {"lo"}:
    bad.append(f"network interfaces {names}")
for addr in (("1.1.1.1", 53), ("127.0.0.1", 9)):
    with socket.socket() as s:
        s.settimeout(1.0)
        try:
            s.connect(addr)
            bad.append(f"connected to {addr}")
        except OSError:
            pass
try:
    open("/probe", "w")
    bad.append("the root is writable")
except OSError:
    pass
with open("probe", "w") as fh:
    fh.write("x")
for name in ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_FSIZE", "RLIMIT_NOFILE"):
    if resource.getrlimit(getattr(resource, name))[1] == resource.RLIM_INFINITY:
        bad.append(f"{name} not set")
print("; ".join(bad) or "ok")
'''


class _UidPool:
    """The uids of running sandboxes, shared by every Sandbox of the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: set[int] = set()

    def take(self) -> int:
        with self._lock:
            for uid in range(UID_BASE, UID_BASE + UID_POOL):
                if uid not in self._busy:
                    self._busy.add(uid)
                    return uid
        raise ToolUnavailable(f"more than {UID_POOL} sandboxes at once")

    def give_back(self, uid: int) -> None:
        with self._lock:
            self._busy.discard(uid)


_UIDS = _UidPool()


def sandbox_uid(uid: int) -> bool:
    """Whether ``uid`` is one a sandbox runs as (for tests and leak checks)."""
    return UID_BASE <= uid < UID_BASE + UID_POOL


class Sandbox:
    """Runs Python programs in the sandbox, at most ``max_concurrent`` at once."""

    def __init__(self, settings: SandboxSection, on_result: Callable[[CodeResult], None] | None = None) -> None:
        self.settings = settings
        self.on_result = on_result  # every run's outcome (the server's metrics)
        self._slots = asyncio.Semaphore(settings.max_concurrent)
        self._check_lock = asyncio.Lock()
        self._checked = False
        self._reason: str | None = None
        self._python = ""
        self._binds: list[str] = []

    @property
    def reason(self) -> str | None:
        """Why the sandbox cannot run code (None when the last check passed or none ran yet)."""
        return self._reason

    @property
    def interpreter(self) -> str:
        """The Python the sandbox runs (known after a check; "" before)."""
        return self._python

    async def check(self) -> str | None:
        """Set the sandbox up once and probe it; return why it cannot be used, or None.

        Meant for server start: the reason is logged there, and every
        :meth:`run` afterwards refuses with it.
        """
        async with self._check_lock:
            await self._check_locked()
        return self._reason

    async def run(self, code: str, *, timeout: float | None = None) -> CodeResult:  # noqa: ASYNC109 - the program's limit
        """Run ``code`` once; ``timeout`` may lower the configured wall clock, never raise it.

        Without a check at start, the first run makes it (once, however many runs arrive together).
        """
        if not self._checked:
            async with self._check_lock:
                if not self._checked:
                    await self._check_locked()
        if self._reason:
            raise ToolUnavailable(self._reason)
        wall = self.settings.wall_seconds if timeout is None else min(timeout, self.settings.wall_seconds)
        result = await self._run(code, wall)
        if self.on_result is not None:
            self.on_result(result)
        return result

    # ------------------------------------------------------------ set-up

    async def _check_locked(self) -> None:
        self._reason = await self._probe()
        self._checked = True
        if self._reason:
            log.warning("code sandbox unavailable: %s", self._reason)

    async def _probe(self) -> str | None:
        s = self.settings
        if not s.enabled:
            return "the code sandbox is disabled ([sandbox] enabled = false)"
        if sys.platform != "linux":
            return f"the sandbox needs Linux namespaces (platform {sys.platform})"
        python = _interpreter(s.python)
        if not python:
            return f"no Python interpreter at {s.python!r} ([sandbox] python)"
        try:
            prefixes = await _prefixes(python)
        except (OSError, RuntimeError, ValueError) as exc:
            return f"cannot ask {python} where its standard library is: {exc}"
        self._python, self._binds = python, _binds(python, prefixes)
        try:
            result = await self._run(PROBE, PROBE_WALL_S)
        except ToolUnavailable as exc:
            return str(exc) + _privilege_hint(str(exc))
        if result.exit_status == 0 and result.stdout.strip() == "ok":
            return None
        detail = result.stdout.strip() or result.stderr.strip()[-500:] or f"killed_by {result.killed_by}"
        return f"the sandbox probe failed: {detail}"

    def _config(self, uid: int, wall: float, status_fd: int) -> dict[str, Any]:
        s = self.settings
        return {
            "status_fd": status_fd, "parent_pid": os.getpid(), "wall": wall,
            "uid": uid, "gid": uid, "python": self._python, "binds": self._binds,
            "work_bytes": s.max_file_mb << 20, "env": ENV,
            "limits": {"cpu": s.cpu_seconds, "as": s.memory_mb << 20, "nproc": s.max_processes,
                       "fsize": s.max_file_mb << 20, "nofile": s.max_open_files},
        }

    # ------------------------------------------------------------ one run

    async def _run(self, code: str, wall: float) -> CodeResult:
        async with self._slots:
            return await self._run_as(_UIDS.take(), code, wall)

    async def _run_as(self, uid: int, code: str, wall: float) -> CodeResult:
        """One run as ``uid``; the uid goes back to the pool only once every process of the run is gone."""
        status_r, status_w = os.pipe()
        os.set_blocking(status_r, False)
        start = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                self._python, "-I", "-S", str(INIT_SCRIPT), marshal.dumps(self._config(uid, wall, status_w)).hex(),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                pass_fds=(status_w,), start_new_session=True)
        except BaseException:
            os.close(status_r)
            _UIDS.give_back(uid)
            raise
        finally:
            os.close(status_w)
        output = _Output(self.settings.max_output_bytes)
        try:
            host_kill, clean = await self._supervise(proc, code, wall, output)
            report = _read_report(status_r)
        except BaseException:  # cancelled (a disconnect, a deadline): kill, then give up
            stopping = asyncio.ensure_future(_stop(proc))
            stopping.add_done_callback(lambda task: _release(uid, _ended_cleanly(task)))
            await asyncio.shield(stopping)  # a second cancellation cannot stop the kill
            raise
        finally:
            os.close(status_r)
        _release(uid, clean)
        seconds = time.monotonic() - start
        if "error" in report:
            raise ToolUnavailable(f"the sandbox failed: {report['error']}")
        if not report and host_kill is None:
            raise ToolUnavailable(f"the sandbox ended without a report (launcher status {proc.returncode})")
        stderr = output.text("stderr")
        exit_status, killed_by = verdict(report, host_kill, stderr, self.settings.cpu_seconds)
        return CodeResult(exit_status, output.text("stdout"), stderr, killed_by, seconds)

    async def _supervise(self, proc: asyncio.subprocess.Process, code: str, wall: float,
                         output: _Output) -> tuple[str | None, bool]:
        """Feed the code, read the output as it comes, end the run at the wall clock or the output cap.

        Returns what the host killed the run for ("timeout", "output" or None), and whether the run
        ended cleanly (the launcher reaped the namespace: nothing of it is left).
        """
        pumps = [asyncio.ensure_future(output.pump(proc.stdout, "stdout")),
                 asyncio.ensure_future(output.pump(proc.stderr, "stderr"))]
        feed = asyncio.ensure_future(_feed(proc, code))
        exited = asyncio.ensure_future(proc.wait())
        over = asyncio.ensure_future(output.over.wait())
        try:
            await asyncio.wait({exited, over}, timeout=wall, return_when=asyncio.FIRST_COMPLETED)
            host_kill = None
            if not exited.done():
                host_kill = "output" if output.over.is_set() else "timeout"
                clean = await _stop(proc)
            else:
                clean = proc.returncode is not None and proc.returncode >= 0
                if output.over.is_set():
                    host_kill = "output"
            # Once the namespace is gone so is every writer of the pipes: what is left is buffered.
            await asyncio.wait(pumps, timeout=1.0 if clean else 0.2)
            return host_kill, clean
        finally:
            for task in (*pumps, feed, exited, over):
                task.cancel()


async def _stop(proc: asyncio.subprocess.Process) -> bool:
    """Kill a run; True when it ended cleanly. Returns within KILL_GRACE_S + REAP_WAIT_S.

    SIGTERM makes the launcher SIGKILL the namespace's init, which takes every
    process of the run with it, and exit once the kernel has reaped them all
    (milliseconds). A launcher that does not exit in KILL_GRACE_S gets SIGKILL
    with its group (the init dies with it, PDEATHSIG). Past that the caller
    is not kept waiting for the kernel's teardown, which a process stuck in
    an uninterruptible wait (D state, e.g. a page fault on a slow disk) can
    delay: the run's uid stays out of use until its processes are gone.
    """
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
        return True
    except TimeoutError:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), REAP_WAIT_S)
    return False


def _ended_cleanly(stopping: asyncio.Future) -> bool:
    return not stopping.cancelled() and stopping.exception() is None and stopping.result()


_releasing: set[asyncio.Task] = set()  # background waits for a dirty run's uid (kept from the GC)


def _release(uid: int, clean: bool) -> None:
    """Give ``uid`` back now if nothing runs as it, else once the kernel has torn its processes down."""
    if clean or not _uids_alive(uid):
        _UIDS.give_back(uid)
        return
    task = asyncio.ensure_future(_give_back_when_gone(uid))
    _releasing.add(task)
    task.add_done_callback(_releasing.discard)


class _Output:
    """stdout and stderr of a run, read as they come, up to a cap on both together."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.total = 0
        self.parts = {"stdout": bytearray(), "stderr": bytearray()}
        self.over = asyncio.Event()

    async def pump(self, stream: asyncio.StreamReader | None, name: str) -> None:
        """Keep up to the cap; past it, signal ``over`` and read on to EOF (the run is being
        killed) so the pipe ends like any other and its transport closes."""
        assert stream is not None
        while chunk := await stream.read(READ_CHUNK):
            room = max(self.cap - self.total, 0)
            self.parts[name] += chunk[:room]
            self.total += len(chunk)
            if self.total > self.cap:
                self.over.set()

    def text(self, name: str) -> str:
        return self.parts[name].decode("utf-8", "replace")


async def _feed(proc: asyncio.subprocess.Process, code: str) -> None:
    """The program goes in on stdin; the launcher reads all of it before it builds anything."""
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(code.encode("utf-8", "surrogatepass"))
        await proc.stdin.drain()
        proc.stdin.close()


def _read_report(fd: int) -> dict[str, Any]:
    """The first report the init (or the program's pre-exec step) wrote: how the program ended.

    Marshalled by the init (root, trusted; the program never holds the fd).
    """
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    return marshal.loads(data) if data else {}  # the first object; a second one is ignored


def verdict(report: dict[str, Any], host_kill: str | None, stderr: str,
            cpu_seconds: int) -> tuple[int | None, str | None]:
    """``(exit_status, killed_by)`` from the init's report, the host's kill and the program's stderr."""
    if "signal" in report:
        sig = report["signal"]
        cpu_out = sig == signal.SIGXCPU or (sig == signal.SIGKILL and report.get("cpu", 0) >= cpu_seconds)
        if host_kill:
            return None, host_kill
        if cpu_out:
            return None, "cpu"
        return None, "file_size" if sig == signal.SIGXFSZ else f"signal:{sig}"
    exit_status = report.get("exit")
    if host_kill:
        return exit_status, host_kill
    return exit_status, _limit_error(stderr) if exit_status == 1 else None


def _limit_error(stderr: str) -> str | None:
    """The limit named by the uncaught exception that ended the program, if any.

    Python raises instead of dying when an rlimit refuses memory, a process
    or a file; forked processes share stderr, so the last few lines are read.
    """
    for line in reversed(stderr.rstrip().splitlines()[-20:]):
        for pattern, name in _LIMIT_ERRORS:
            if pattern.search(line):
                return name
    return None


def _privilege_hint(failure: str) -> str:
    if os.geteuid() == 0 and "not permitted" not in failure:
        return ""
    return (f" (the sandbox needs root with CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID and CAP_SYS_CHROOT "
            f"to create namespaces and switch to its own uids; the server runs as uid {os.geteuid()})")


def _interpreter(configured: str) -> str:
    """The real path of the sandbox's interpreter ("" when it is not one): the configured one,
    or the base install under the server's venv (the venv's packages are not for the sandbox)."""
    python = os.path.realpath(configured or getattr(sys, "_base_executable", "") or sys.executable)
    return python if os.path.isfile(python) and os.access(python, os.X_OK) else ""


async def _prefixes(python: str) -> list[str]:
    """Where ``python`` keeps its standard library: it must be visible inside."""
    proc = await asyncio.create_subprocess_exec(
        python, "-I", "-S", "-c", "import sys, json; print(json.dumps([sys.base_prefix, sys.base_exec_prefix]))",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={})
    try:
        out, err = await asyncio.wait_for(proc.communicate(), PROBE_WALL_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(err.decode(errors="replace").strip()[-300:] or f"exit {proc.returncode}")
    return [str(p) for p in json.loads(out)]


def _binds(python: str, prefixes: list[str]) -> list[str]:
    """The system folders plus whatever of the interpreter they do not already contain."""
    binds = [p for p in SYSTEM_BINDS if os.path.lexists(p)]
    covered = [os.path.realpath(p) for p in binds if os.path.isdir(p) and not os.path.islink(p)]
    for path in (*prefixes, os.path.dirname(python)):
        real = os.path.realpath(path)
        if not any(real == c or real.startswith(c.rstrip("/") + "/") for c in covered):
            binds.append(real)
            covered.append(real)
    return binds


def _uids_alive(uid: int) -> bool:
    """Whether any process runs as ``uid`` (a /proc scan: a few hundred entries, ~1 ms)."""
    with os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if entry.stat().st_uid == uid:
                        return True
    return False


async def _give_back_when_gone(uid: int, within: float = 60.0) -> None:
    """Poll until no process of ``uid`` is left, then give it back; never while one is."""
    for _ in range(int(within / 0.05)):
        if not _uids_alive(uid):
            _UIDS.give_back(uid)
            return
        await asyncio.sleep(0.05)
    log.error("processes of sandbox uid %d outlived their run by %.0f s; the uid stays out of use", uid, within)
