"""Tools that give back a stored run's tool results instead of running again: the Wikipedia tool
(ReAct) and the PAL sandbox.

Results come in call order while each call matches its record (same tool, same input); the first
call that does not, and every call after it, goes to the live tool, made only then (a fork whose
earlier steps are all recorded never opens the corpus or the network, and never runs a program).
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from prompts.sandbox import SandboxResult, run_program


@dataclass
class ToolResult:
    """One recorded tool call: which tool, its input, and what it gave back."""

    name: str  # search, lookup or sandbox
    input: str
    output: str
    error: str | None = None
    duration_ms: float = 0.0
    meta: dict = field(default_factory=dict)
    edited: bool = False  # a person's replacement, not the record's


def recorded_result(step: dict) -> ToolResult:
    """The result that gives back a stored tool step."""
    return ToolResult(step["name"], step["input"], step["output"], step.get("error"), step.get("duration_ms") or 0.0,
                      dict(step.get("meta") or {}))


def runs_a_tool(step: dict) -> bool:
    """Whether a stored step was a real tool call (a repeated ReAct action is answered without one)."""
    return step["kind"] == "tool" and not (step.get("meta") or {}).get("repeated")


class ToolScript:
    """The recorded results, taken in order while the calls match them."""

    def __init__(self, results: list[ToolResult]):
        self.results, self.taken, self.diverged = list(results), 0, False
        self._lock = threading.Lock()

    @property
    def replayed(self) -> int:
        """How many calls the record answered so far (an edited result is not the record's)."""
        return sum(1 for result in self.results[:self.taken] if not result.edited)

    def take(self, name: str, argument: str) -> ToolResult | None:
        """The recorded result of this call, or None when the record has no more or names another call."""
        with self._lock:
            if self.diverged or self.taken >= len(self.results):
                return None
            result = self.results[self.taken]
            if (result.name, result.input) != (name, argument):
                self.diverged = True  # the run went another way: from here on, tools run for real
                return None
            self.taken += 1
            return result


class ReplayWiki:
    """ReAct's Search/Lookup from the record, then from a live WikiTool made on first need."""

    def __init__(self, script: ToolScript, live: Callable[[], object] | None):
        self.script, self._make_live, self._live = script, live, None
        self._page_calls: list[tuple[str, str]] = []  # the recorded Search and the Lookups after it

    def search(self, entity: str) -> str:
        recorded = self.script.take("search", entity)
        if recorded is None:
            return self.live(restore=False).search(entity)  # a search opens its own page
        self._page_calls = [("search", entity)]
        return recorded.output

    def lookup(self, keyword: str) -> str:
        recorded = self.script.take("lookup", keyword)
        if recorded is None:
            return self.live(restore=True).lookup(keyword)
        self._page_calls.append(("lookup", keyword))
        return recorded.output

    def live(self, restore: bool):
        """The live tool, made on first need. A Lookup reads the page the recorded Search opened, and the record
        holds only observations: a live tool made for a Lookup first reopens that page and moves past the
        recorded lookups (`restore`)."""
        if self._live is None:
            if self._make_live is None:
                raise ValueError("this run needs the Wikipedia tool after its recorded steps, and none was given")
            self._live = self._make_live()
            for action, argument in self._page_calls if restore else ():
                getattr(self._live, action)(argument)
        return self._live


class ReplaySandbox:
    """PAL's sandbox: a recorded program's result, else a real sandboxed run."""

    def __init__(self, script: ToolScript, run: Callable[..., SandboxResult] | None = None):
        self.script, self.run = script, run

    def __call__(self, program: str, timeout_s: float = 5.0) -> SandboxResult:
        recorded = self.script.take("sandbox", program)
        if recorded is not None:
            return sandbox_result(recorded)
        return (self.run or run_program)(program, timeout_s=timeout_s)


def sandbox_result(result: ToolResult) -> SandboxResult:
    """A recorded sandbox step as the SandboxResult that made it ({"value", "stdout"} JSON, error, kind)."""
    try:
        data = json.loads(result.output or "{}")
    except json.JSONDecodeError:
        data = {"value": result.output}
    data = data if isinstance(data, dict) else {"value": data}
    ok = result.error is None
    kind = result.meta.get("kind") or ("ok" if ok else "error")
    return SandboxResult(ok, data.get("value"), str(data.get("stdout") or ""), result.error or "", kind, result.duration_ms)


def edited_sandbox_output(text: str) -> str:
    """A person's replacement for a sandbox step: {"value", "stdout"} JSON, a JSON value, or plain text (a string)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    data = value if isinstance(value, dict) and "value" in value else {"value": value, "stdout": ""}
    return json.dumps({"value": data.get("value"), "stdout": data.get("stdout") or ""}, default=str)
