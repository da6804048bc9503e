"""A resolved reasoning plan: what one choice of a request will do.

The server's planner builds it from the request and the settings (a pure
function); strategies only read it. ``public()`` is what the client sees as
``reasoning_plan``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Plan:
    strategy: str = "single"
    effort: str | None = None
    # Thinking on at all? (False: answer directly, no thinking channel.)
    thinking: bool = False
    max_thinking_tokens: int | None = None
    min_thinking_tokens: int | None = None
    # Cap on every token one choice may generate (thinking + answer + discarded).
    budget_tokens: int | None = None
    # Cap on thinking plus answer of one choice, as OpenAI's max_completion_tokens.
    max_tokens: int = 1024
    samples: int = 1
    rounds: int = 0
    beam_width: int = 0
    max_steps: int = 0
    scorer: str | None = None
    early_stop: bool = False
    stream_candidates: bool = False
    include_reasoning: bool = True
    # s1 budget forcing (Muennighoff et al. 2025): phrase appended before the
    # forced end of thinking, and the continuation that replaces an early end.
    wrapup: str = ""
    continuation: str = "Wait"
    max_continuations: int = 0
    # Soft nudge: ``nudge`` is appended once, ``nudge_before`` tokens before the cap.
    nudge: str = ""
    nudge_before: int = 0
    # Parallel sampling: vote "majority" | "weighted"; early stopping samples in
    # windows of ``window`` and stops by ``stop_rule`` ("esc" | "adaptive" |
    # "overtake"); the self-judge question.
    vote: str = "majority"
    window: int = 0
    stop_rule: str = "esc"
    stop_threshold: float = 0.95
    judge_question: str = ""
    # Start one candidate first so the others read the prompt from the prefix
    # cache instead of each computing it (see parallel.Pool.start_all).
    share_prefix: bool = False
    # Revision prompts (configs/server.toml [revision]); critique_ok is a regex
    # that, found in a critique, means "no error" and stops the rounds.
    critique_prompt: str = ""
    revise_prompt: str = ""
    critique_ok: str = ""
    # Beam search: a step ends at step_delimiter and is at most step_tokens long;
    # each live beam is expanded ``expansions`` times.
    step_delimiter: str = "\n\n"
    step_tokens: int = 64
    expansions: int = 2
    dvts: bool = False
    # auto: a probe of probe_samples short answers; agreement >= easy_agreement
    # is easy, >= medium_agreement medium, else hard; ``auto`` maps each to a plan.
    probe_samples: int = 3
    probe_tokens: int = 48
    easy_agreement: float = 1.0
    medium_agreement: float = 0.5
    auto: tuple[tuple[str, Plan], ...] = ()
    # Where the numbers came from: "reasoning", "thinking", "effort", "default"...
    source: str = "default"

    def public(self) -> dict[str, object]:
        """The plan as shown to the client in ``reasoning_plan``."""
        data = asdict(self)
        data.pop("auto")
        if self.strategy == "auto":
            data["auto"] = {level: p.public() for level, p in self.auto}
        else:
            for key in ("probe_samples", "probe_tokens", "easy_agreement", "medium_agreement"):
                data.pop(key)
        if self.strategy != "budget_forcing":
            for key in ("wrapup", "continuation", "max_continuations", "nudge", "nudge_before"):
                data.pop(key)
        if self.strategy not in ("self_consistency", "best_of_n"):
            for key in ("vote", "window", "stop_rule", "stop_threshold", "early_stop", "share_prefix"):
                data.pop(key)
        for key in ("judge_question", "critique_prompt", "revise_prompt", "critique_ok"):
            data.pop(key)
        if self.strategy != "beam_search":
            for key in ("step_delimiter", "step_tokens", "expansions", "dvts"):
                data.pop(key)
        return {k: v for k, v in data.items() if v not in (None, "", 0) or k in ("thinking", "samples")}
