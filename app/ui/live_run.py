"""A run as it happens, for the Chat page: model calls as they stream, trace steps as they are added, and Stop.

`LiveRun` is a LangChain callback handler: the chat model streams its tokens into it, and once
Stop is pressed it raises RunStopped on the next token (or the next call), which cancels the
engine request; the run is stored `stopped` with the steps done and the cut-off call's text and
token counts.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from prompts.llm_call import render_messages
from prompts.trace import RunInfo, Step, Trace

from ..errors import RunStopped

log = logging.getLogger(__name__)

STOPPED = "stopped by the user"


@dataclass
class ModelCall:
    """One model call as seen through its callbacks."""
    prompt: str
    prompt_tokens: int = 0  # counted when the call starts (0 when no counter was given)
    started: float = field(default_factory=time.perf_counter)
    started_at: float = field(default_factory=time.time)
    text: str = ""
    tokens: int = 0  # streamed chunks, one per decoded token that added text
    first_token_s: float | None = None  # the prompt was read (prefill) by then
    seconds: float | None = None  # set when the call ends
    error: str | None = None


class _NoStopWarnings(logging.Filter):
    """LangChain logs every exception a callback raises; a Stop is not a problem worth a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(isinstance(arg, str) and arg.startswith("RunStopped(") for arg in record.args or ())


_QUIET = _NoStopWarnings()


def quiet_stop_warnings() -> None:
    """Keep LangChain from logging a warning for each Stop (the app calls this when it builds its pages)."""
    logging.getLogger("langchain_core.callbacks.manager").addFilter(_QUIET)  # added once, however often called


class LiveRun(BaseCallbackHandler):
    """Collects the model calls and traces of one running strategy; `stop()` ends it at the next token."""

    raise_error = True  # LangChain re-raises RunStopped instead of logging it

    def __init__(self, count_tokens: Callable[[list], int] | None = None):
        self.count_tokens = count_tokens  # messages -> prompt tokens, for a stopped call's counts and prefill progress
        self.calls: dict[UUID, ModelCall] = {}  # in the order the calls started
        self.traces: list[Trace] = []  # every trace the strategy started (ReAct's fallback starts a second)
        self.started = time.perf_counter()
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _check(self) -> None:
        if self.stopped:
            raise RunStopped(STOPPED)

    def on_chat_model_start(self, serialized, messages, *, run_id: UUID, **kwargs) -> None:
        self._check()
        prompt_tokens = self.count_tokens(messages[0]) if self.count_tokens else 0
        self.calls[run_id] = ModelCall(render_messages(messages[0]), prompt_tokens)

    def on_llm_new_token(self, token: str, *, run_id: UUID, **kwargs) -> None:
        self._check()
        call = self.calls.get(run_id)
        if call is not None and token:
            if call.first_token_s is None:
                call.first_token_s = time.perf_counter() - call.started
            call.text += token
            call.tokens += 1

    def on_llm_end(self, response, *, run_id: UUID, **kwargs) -> None:
        self._end(run_id, None)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs) -> None:
        self._end(run_id, f"{type(error).__name__}: {error}")

    def _end(self, run_id: UUID, error: str | None) -> None:
        call = self.calls.get(run_id)
        if call is not None and call.seconds is None:
            call.seconds, call.error = time.perf_counter() - call.started, error

    def watch(self, info: RunInfo) -> RunInfo:
        """The same RunInfo, but every trace it starts is shared with this LiveRun."""
        return WatchedRunInfo(**{f: getattr(info, f) for f in info.__dataclass_fields__}, live=self)

    def steps(self) -> list[Step]:
        """The steps recorded so far, across the run's traces, each once."""
        seen, steps = set(), []
        for trace in list(self.traces):
            for step in list(trace.steps):
                if id(step) not in seen:
                    seen.add(id(step))
                    steps.append(step)
        return steps

    def pending_calls(self) -> list[ModelCall]:
        """Model calls not yet in the trace: those still generating (or just ended)."""
        recorded = sum(1 for s in self.steps() if s.kind == "llm")
        return list(self.calls.values())[recorded:]

    def latest_text(self) -> str:
        """What the most recently started model call has generated so far."""
        calls = list(self.calls.values())
        return calls[-1].text if calls else ""

    def settle(self, trace: Trace) -> Trace:
        """A failed or stopped run keeps the steps done before it ended, and the cut-off calls' text and tokens."""
        if not trace.error or trace.steps or not self.traces:
            return trace
        # the runner recorded the failure on a fresh trace; the run began with the first one
        trace.started_at, trace.duration_ms = self.traces[0].started_at, (time.perf_counter() - self.started) * 1e3
        trace.steps = self.steps()
        stopped = trace.status == "stopped"
        for call in self.pending_calls():
            trace.add(Step(kind="llm", name="interrupted call", input=call.prompt, output=call.text,
                           prompt_tokens=call.prompt_tokens, completion_tokens=call.tokens,
                           error=None if stopped else call.error or trace.error,
                           duration_ms=(call.seconds or time.perf_counter() - call.started) * 1e3,
                           meta={"started_at": round(call.started_at, 3), "finish_reason": "stopped" if stopped else "error"}))
        return trace


@dataclass(frozen=True)
class WatchedRunInfo(RunInfo):
    """RunInfo whose new traces are appended to a LiveRun as they are created."""
    live: LiveRun | None = field(default=None, compare=False, repr=False)

    def new_trace(self, question: str, strategy: str, template, history=()) -> Trace:
        trace = super().new_trace(question, strategy, template, history)
        if self.live is not None:
            self.live.traces.append(trace)
        return trace
