"""One thread does all of the engine's tensor work, for every loaded model.

Why one: PyTorch's CPU kernels run on OpenMP (libgomp), which gives every thread that starts
parallel work a team of its own. Once two teams exist on this 2-core machine, libgomp's workers
stop spinning and every parallel region pays a futex wake-up: a 64-row decode step measured
0.22 s on a second thread against 0.11 s on the first. So loading, scoring, beam search and the
schedulers' steps all run here, and callers on other threads wait for their results.
"""
from __future__ import annotations

import logging
import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Protocol

log = logging.getLogger(__name__)


class Steppable(Protocol):
    def has_work(self) -> bool: ...

    def step_once(self) -> None: ...


class ComputeThread:
    def __init__(self):
        self._tasks: queue.Queue = queue.Queue()
        self._steppers: weakref.WeakSet = weakref.WeakSet()  # a dropped engine's scheduler goes with it
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def call(self, fn: Callable, *args, **kwargs):
        """Run fn on the compute thread and return its result (inline when already there)."""
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)
        future: Future = Future()
        self._tasks.put((fn, args, kwargs, future))
        self._ensure_started()
        return future.result()

    def attach(self, stepper: Steppable) -> None:
        self._steppers.add(stepper)

    def wake(self) -> None:
        """Something has work now (a request was submitted or cancelled)."""
        self._tasks.put(None)
        self._ensure_started()

    def _ensure_started(self) -> None:
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="engine-compute", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            busy = [s for s in list(self._steppers) if s.has_work()]
            self._run_tasks(block=not busy)
            for stepper in busy:
                stepper.step_once()

    def _run_tasks(self, block: bool) -> None:
        while True:
            try:
                task = self._tasks.get(timeout=1.0) if block else self._tasks.get_nowait()
            except queue.Empty:
                return
            block = False
            if task is None:
                continue
            fn, args, kwargs, future = task
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # noqa: BLE001 - handed to the caller, who re-raises it
                    future.set_exception(exc)


COMPUTE = ComputeThread()
