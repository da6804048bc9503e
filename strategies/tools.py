"""The code interpreter as strategies see it: run a program, get a result.

A strategy (``tool_use``: PAL, ReAct) only needs "run this code, tell me what
it printed and how it ended"; where and how the code runs (the server's
sandbox: namespaces, rlimits, a wall-clock kill) is the server's business.
This seam keeps ``strategies/`` free of processes and of the server, and lets
unit tests hand a strategy any object with an async ``run``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class CodeResult:
    """How one program ran.

    ``killed_by`` names the limit that ended it, or None when it ended on its
    own: ``"timeout"`` (wall clock), ``"cpu"``, ``"memory"``, ``"processes"``,
    ``"file_size"``, ``"open_files"``, ``"output"`` (stdout + stderr over the
    cap; both are cut there), ``"cancelled"`` or ``"signal:N"`` (any other
    signal, e.g. ``"signal:11"`` for a crash). A program the sandbox killed
    has ``exit_status`` None; one that died of the error a limit raised
    (``MemoryError``, a failed fork, a file too large) keeps its exit status,
    so a model sees the traceback it would see anywhere.
    """

    exit_status: int | None
    stdout: str
    stderr: str
    killed_by: str | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 3)
        return out


class CodeRunner(Protocol):
    async def run(self, code: str, *, timeout: float | None = None) -> CodeResult:  # noqa: ASYNC109
        """Run ``code`` (Python source) once; ``timeout`` may only lower the configured wall limit."""
        ...


class ToolUnavailable(Exception):
    """The sandbox could not be set up; the message says why."""
