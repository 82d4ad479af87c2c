"""Between callers and the compute thread: requests in, one scheduler step at a time.

Callers (any thread) submit and cancel through an inbox; the compute thread (engine/compute.py)
drains it, then plans a step (Scheduler.schedule), executes it (ModelRunner.execute) and applies
the result (Scheduler.update). The waiting count callers see for the bounded queue is kept under
a lock: requests still in the inbox plus those the scheduler has not admitted.
"""
from __future__ import annotations

import itertools
import logging
import queue
import threading

from .compute import COMPUTE
from .model_runner import ModelRunner
from .request import QueueFullError, RequestHandle
from .sampling import SamplingParams
from .scheduler import Scheduler

log = logging.getLogger(__name__)


class StepLoop:
    def __init__(self, scheduler: Scheduler, runner: ModelRunner, max_waiting: int = 1024):
        self.scheduler, self.runner, self.max_waiting = scheduler, runner, max_waiting
        self._inbox: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._in_inbox = 0  # submitted, not yet handed to the scheduler
        self._scheduler_waiting = 0  # the scheduler's unadmitted requests after the last step
        self._closed = False
        self._ids = itertools.count(1)

    # ---- callers (any thread)
    def submit(self, prompt: list[int], params: SamplingParams, starts_in_reasoning: bool = False) -> RequestHandle:
        """Queue a checked prompt; raises QueueFullError when `max_waiting` requests already wait."""
        self.scheduler.check_fits(len(prompt))
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine is closed")
            waiting = self._in_inbox + self._scheduler_waiting
            if waiting >= self.max_waiting:
                raise QueueFullError(f"{waiting} requests are waiting (limit {self.max_waiting})")
            self._in_inbox += 1
            handle = RequestHandle(f"req-{next(self._ids)}", list(prompt), params, self.cancel, starts_in_reasoning)
        self._post("submit", handle)
        return handle

    def cancel(self, handle: RequestHandle) -> None:
        self._post("cancel", handle)

    def close(self) -> None:
        """Fail whatever is still queued or running and refuse new requests."""
        with self._lock:
            self._closed = True
        self._post("close", None)

    def stats(self) -> dict:
        with self._lock:
            waiting = self._in_inbox + self._scheduler_waiting
        return {"waiting": waiting, "running": len(self.scheduler.running), **self.scheduler.pool.stats(),
                **self.scheduler.speculation}

    def _post(self, kind: str, handle: RequestHandle | None) -> None:
        self._inbox.put((kind, handle))
        COMPUTE.wake()

    # ---- on the compute thread
    def has_work(self) -> bool:
        return self.scheduler.has_work() or not self._inbox.empty()

    def step_once(self) -> None:
        """Take new requests and cancellations, then plan, run and apply one step."""
        try:
            self._drain_inbox()
            plan = self.scheduler.schedule()
            if plan.batches:
                self.scheduler.update(plan, self.runner.execute(plan))
        except Exception as exc:  # a failed step fails its requests, never the thread
            log.exception("engine step failed")
            self.scheduler.fail_all(exc)
        finally:
            with self._lock:
                self._scheduler_waiting = self.scheduler.waiting_requests()

    def _drain_inbox(self) -> None:
        while True:
            try:
                kind, handle = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "close":
                self.scheduler.fail_all(RuntimeError("the engine was closed"))
            elif kind == "submit":
                self.scheduler.add(handle)
                with self._lock:  # moves from one count to the other, never uncounted
                    self._in_inbox -= 1
                    self._scheduler_waiting += 1
            elif kind == "cancel":
                self.scheduler.cancel(handle)
