"""What the app holds for its lifetime: settings, the engine, metrics.

Created once at start-up and never written by a request.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from strategies.engine import Engine, Structured

from .admission import Admission
from .errors import APIError
from .metrics import Metrics
from .output_format import ToolParser
from .prompt import Renderer
from .responses_store import ResponseStore, open_store
from .sandbox import Sandbox
from .secret_key import SecretKeys, load
from .settings import Settings

Followup = Callable[[str], tuple[int, ...]]


class ServedEngine(Engine, Protocol):
    """What the server needs of an engine beyond what strategies use: whether it
    lives, how much work it holds (metrics, tests), and how to stop it."""

    @property
    def alive(self) -> bool: ...

    @property
    def available(self) -> bool:
        """New requests can be served now. The in-process engine: while it lives;
        the remote engine: while an upstream is healthy (it stays ``alive`` when
        none is, as the fleet may come back)."""
        ...

    def num_unfinished_requests(self) -> int: ...

    def tool_parser(self, name: str) -> ToolParser:
        """The model's tool-call parser (a ValueError names a parser the engine lacks)."""
        ...

    def check_structured(self, structured: Structured) -> None:
        """A ValueError saying why the engine's grammar backend cannot compile
        ``structured`` (checked before the first byte, so it is a 400)."""
        ...

    def shutdown(self) -> None: ...


@dataclass
class AppState:
    settings: Settings
    model_path: str
    metrics: Metrics = field(default_factory=Metrics)
    engine: ServedEngine | None = None  # once started
    started_at: float = 0.0
    startup_error: str | None = None
    # Set once the engine's tokenizer is known: the prompt renderer and
    # question -> follow-up turn ids (judges, critiques).
    renderer: Renderer | None = None
    followup: Followup | None = None
    tool_parser: ToolParser | None = None
    # The code interpreter's sandbox, and why it cannot run code (None: it can).
    sandbox: Sandbox | None = None
    sandbox_unavailable: str | None = "not checked yet"
    # What signs thinking blocks (server/secret_key.py); loaded from the settings
    # and the environment unless given.
    secrets: SecretKeys | None = None
    # Stored responses of /v1/responses (server/responses_store.py); opened on first
    # use, so a server that never stores one touches no file.
    responses_store: ResponseStore | None = None
    admission: Admission = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings.server
        self.admission = Admission(s.max_concurrent_sequences, s.retry_after)
        if self.secrets is None:
            self.secrets = load(s.secret_key_file)

    @property
    def keys(self) -> SecretKeys:
        assert self.secrets is not None  # set by __post_init__
        return self.secrets

    def store(self) -> ResponseStore:
        if self.responses_store is None:
            r = self.settings.responses
            self.responses_store = open_store(r.store_path, r.max_stored, r.max_age_hours)
        return self.responses_store

    @property
    def model_names(self) -> tuple[str, ...]:
        return (self.settings.model.served_model_name,)

    @property
    def reasoning_fields(self) -> tuple[str, ...]:
        mode = self.settings.server.reasoning_fields
        return ("reasoning_content", "reasoning") if mode == "both" else (mode,)

    def engine_ok(self) -> bool:
        return self.engine is not None and self.engine.alive

    def ready(self) -> bool:
        """What ``/ready`` says: the engine can generate and the server is not draining."""
        engine = self.engine
        return engine is not None and engine.alive and engine.available and not self.admission.draining

    def require_engine(self) -> ServedEngine:
        if self.engine is None or not self.engine_ok() or not self.engine.available:
            what = "starting" if self.engine is None and not self.startup_error else "unavailable"
            raise APIError(503, f"the engine is {what}; retry later", code="engine_unavailable",
                           headers={"retry-after": "5"})
        return self.engine
