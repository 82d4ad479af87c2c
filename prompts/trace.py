"""The record of one run: ordered steps (LLM calls, tool calls, parse errors, votes) and the answer."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

# How a run can end: Trace.finish sets one; the store adds `running` for a run not yet finished.
# `stopped`: the person stopped it (the steps done and the cut-off call's text are kept).
# A new status also needs a store migration (the run table CHECKs its status).
STATUSES = ("ok", "no_answer", "error", "stopped")


@dataclass
class Step:
    kind: str  # llm, tool, parse_error or vote
    input: str  # the exact prompt, the tool input, or what was being parsed
    output: str = ""
    name: str = ""  # tool name (search, lookup, sandbox) or what the call was for
    prompt_tokens: int = 0
    completion_tokens: int = 0
    duration_ms: float = 0.0
    error: str | None = None
    # e.g. a sample's log-probability, vote counts, "started_at" (epoch s, for the timing waterfall),
    # "logprobs" ([token, logprob, [[alternative, logprob], …]] per generated token), "reasoning"
    meta: dict = field(default_factory=dict)


@dataclass
class Trace:
    question: str
    strategy: str
    template_name: str = ""
    template_version: int = 0
    model_id: str = ""
    backend: str = ""
    sampling: dict = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    counters: dict = field(default_factory=dict)  # e.g. bad_calls, repeated_actions, fix_attempts
    answer: str | None = None
    status: str = "no_answer"  # one of STATUSES
    error: str | None = None
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    duration_ms: float = 0.0
    _t0: float = field(default_factory=time.perf_counter, repr=False)

    def add(self, step: Step) -> Step:
        """Append a step; one added when it ended (its duration known) started that long ago."""
        step.meta.setdefault("started_at", round(time.time() - step.duration_ms / 1e3, 3))
        self.steps.append(step)
        return step

    def finish(self, answer: str | None, error: str | None = None, stopped: bool = False) -> Trace:
        """Set the final answer, the status (ok / no_answer / error, or stopped by the person) and the duration."""
        self.answer = answer if answer not in ("",) else None
        self.error = error
        if stopped:
            self.status = "stopped"
        else:
            self.status = "error" if error else ("ok" if self.answer is not None else "no_answer")
        self.duration_ms = (time.perf_counter() - self._t0) * 1e3
        return self

    @property
    def prompt_tokens(self) -> int:
        return sum(s.prompt_tokens for s in self.steps)

    @property
    def completion_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.steps)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("_t0")
        data["prompt_tokens"], data["completion_tokens"] = self.prompt_tokens, self.completion_tokens
        return data


@dataclass(frozen=True)
class RunInfo:
    """Who answered: the model and backend ids and the sampling settings, copied into every trace."""
    model_id: str = ""
    backend: str = ""
    sampling: dict = field(default_factory=dict)
    model_hash: str = ""  # identifies the exact weights file, when there is one

    def new_trace(self, question: str, strategy: str, template, history=()) -> Trace:
        """A trace for this question; `history` (the earlier turns it follows) is counted in its counters."""
        trace = Trace(question=question, strategy=strategy, template_name=template.name,
                      template_version=template.version, model_id=self.model_id, backend=self.backend,
                      sampling=dict(self.sampling))
        if history:
            trace.counters["earlier_turns"] = len(history)
        return trace
