"""Raw SSE reading for tests: what a client without the SDK sees on the wire."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Stream:
    status: int
    headers: dict[str, str]
    frames: list[Any] = field(default_factory=list)  # parsed JSON, or "[DONE]"
    comments: list[str] = field(default_factory=list)

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if isinstance(f, dict)]

    def joined(self, n: int) -> list[dict[str, str]]:
        out = [{"content": "", "reasoning_content": "", "reasoning": ""} for _ in range(n)]
        for c in self.chunks:
            for ch in c.get("choices", []):
                d = ch["delta"]
                for k in out[ch["index"]]:
                    out[ch["index"]][k] += d.get(k) or ""
        return out

    def finish_reasons(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for c in self.chunks:
            for ch in c.get("choices", []):
                if ch.get("finish_reason") is not None:
                    out.setdefault(ch["index"], []).append(ch["finish_reason"])
        return out


def post_stream(base: str, body: dict[str, Any], headers: dict[str, str], timeout: float = 300) -> Stream:
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, headers=headers,
                      timeout=timeout) as r:
        s = Stream(r.status_code, dict(r.headers))
        if r.status_code != 200:
            r.read()
            s.frames.append(r.json())
            return s
        for line in r.iter_lines():
            if line.startswith(":"):
                s.comments.append(line)
            elif line.startswith("data: "):
                data = line[6:]
                s.frames.append(data if data == "[DONE]" else json.loads(data))
    return s
