"""Split a model's text stream into thinking and answer channels.

Tags may arrive split across deltas ("</th" + "ink>"), so a possible tag prefix
at the end of the buffer is held back until the next delta or ``finish()``.
A model may open the thinking block itself (Qwen3), have it opened by the chat
template or the server (DeepSeek-R1, server-driven thinking: start in thinking),
or never think at all.
"""
from __future__ import annotations

from typing import Literal

Channel = Literal["thinking", "answer"]
Segment = tuple[Channel, str]


def _held_prefix(buf: str, tag: str) -> int:
    """Length of the longest suffix of ``buf`` that is a proper prefix of ``tag``."""
    for k in range(min(len(buf), len(tag) - 1), 0, -1):
        if tag.startswith(buf[-k:]):
            return k
    return 0


class ThinkSplitter:
    def __init__(
        self,
        open_tag: str = "<think>",
        close_tag: str = "</think>",
        start_in_thinking: bool = False,
    ) -> None:
        self.open_tag = open_tag
        self.close_tag = close_tag
        self.channel: Channel = "thinking" if start_in_thinking else "answer"
        self._at_start = True  # an opening tag is only recognised before any text
        self._buf = ""
        self.closed = False  # saw the closing tag

    def feed(self, text: str) -> list[Segment]:
        self._buf += text
        out: list[Segment] = []
        if self._at_start and not self._consume_open():
            return out
        if self.channel == "thinking":
            self._consume_thinking(out)
        if self.channel == "answer" and self._buf:
            out.append(("answer", self._buf))
            self._buf = ""
        return out

    def finish(self) -> list[Segment]:
        """Flush what was held back: an unfinished tag is plain text."""
        out: list[Segment] = [(self.channel, self._buf)] if self._buf else []
        self._buf = ""
        self._at_start = False
        return out

    def _consume_open(self) -> bool:
        """Handle a leading open tag; False while it is still undecided."""
        stripped = self._buf.lstrip()
        if not stripped:
            return False
        if stripped.startswith(self.open_tag):
            self.channel = "thinking"
            self._buf = stripped[len(self.open_tag):]
        elif self.open_tag.startswith(stripped):
            return False
        self._at_start = False
        return True

    def _consume_thinking(self, out: list[Segment]) -> None:
        pos = self._buf.find(self.close_tag)
        if pos >= 0:
            if pos:
                out.append(("thinking", self._buf[:pos]))
            self._buf = self._buf[pos + len(self.close_tag):]
            self.channel = "answer"
            self.closed = True
            return
        keep = _held_prefix(self._buf, self.close_tag)
        emit = self._buf[: len(self._buf) - keep]
        if emit:
            out.append(("thinking", emit))
        self._buf = self._buf[len(self._buf) - keep:]
