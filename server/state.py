"""What the app holds for its lifetime: settings, the engine, metrics.

Created once at start-up and never written by a request.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .admission import Admission
from .errors import APIError
from .metrics import Metrics
from .settings import Settings


def is_engine_unavailable(exc: BaseException) -> bool:
    return type(exc).__name__ in ("EngineUnavailable", "EngineDeadError")


@dataclass
class AppState:
    settings: Settings
    model_path: str
    metrics: Metrics = field(default_factory=Metrics)
    engine: Any = None  # strategies.engine.Engine once started
    started_at: float = 0.0
    startup_error: str | None = None
    # Set once the engine's tokenizer is known: the prompt renderer (server.prompt.Renderer)
    # and question -> follow-up turn ids.
    renderer: Any = None
    followup: Any = None
    admission: Admission = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings.server
        self.admission = Admission(s.max_concurrent_sequences, s.retry_after)

    @property
    def model_names(self) -> tuple[str, ...]:
        return (self.settings.model.served_model_name,)

    @property
    def reasoning_fields(self) -> tuple[str, ...]:
        mode = self.settings.server.reasoning_fields
        return ("reasoning_content", "reasoning") if mode == "both" else (mode,)

    def engine_ok(self) -> bool:
        return self.engine is not None and getattr(self.engine, "alive", True)

    def ready(self) -> bool:
        """What ``/ready`` says: the engine can generate and the server is not draining."""
        return self.engine_ok() and not self.admission.draining

    def require_engine(self) -> Any:
        if not self.engine_ok():
            what = "starting" if self.engine is None and not self.startup_error else "unavailable"
            raise APIError(503, f"the engine is {what}; retry later", code="engine_unavailable",
                           headers={"retry-after": "5"})
        return self.engine
