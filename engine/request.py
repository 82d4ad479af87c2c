"""What a caller holds for a submitted request: streamed TokenEvents and, at the end, Completions.

The scheduler (on the compute thread) emits; the caller (any thread) iterates or waits.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .completion import Completion
from .sampling import SamplingParams


class QueueFullError(RuntimeError):
    """The bounded waiting queue is full; try again later."""


@dataclass
class TokenEvent:
    index: int  # which of the request's n samples
    token_id: int | None  # None on a closing event that only carries finish_reason
    text: str  # text added since this sample's previous event
    logprob: dict | None = None
    finish_reason: str | None = None  # "stop", "length" or "cancelled" on a sample's last event


_DONE = object()


class RequestHandle:
    """A submitted request: iterate it for TokenEvents, or wait for its Completions."""

    def __init__(self, request_id: str, prompt: list[int], params: SamplingParams,
                 on_cancel: Callable[[RequestHandle], None], starts_in_reasoning: bool = False):
        self.id, self.prompt, self.params = request_id, prompt, params
        self.prompt_tokens = len(prompt)
        self.starts_in_reasoning = starts_in_reasoning  # the prompt opened a reasoning block (see reasoning.py)
        self._on_cancel = on_cancel
        self._events: queue.Queue = queue.Queue()
        self._completions: list[Completion | None] = [None] * params.n
        self._done = threading.Event()
        self._error: BaseException | None = None
        self.cancelled = False

    def __iter__(self):
        while True:
            event = self._events.get()
            if event is _DONE:
                if self._error is not None:
                    raise self._error
                return
            yield event

    def cancel(self) -> None:
        """Stop generating; the KV blocks return to the pool within one scheduler step."""
        if not self.cancelled and not self._done.is_set():
            self.cancelled = True
            self._on_cancel(self)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> list[Completion]:
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.id} did not finish within {timeout} s")
        if self._error is not None:
            raise self._error
        return list(self._completions)

    # scheduler side
    def _emit(self, event: TokenEvent) -> None:
        self._events.put(event)

    def _complete(self, index: int, completion: Completion) -> None:
        self._completions[index] = completion
        if all(c is not None for c in self._completions):
            self._finish()

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._finish()

    def _finish(self) -> None:
        self._done.set()
        self._events.put(_DONE)
