"""The strategy options a stored run was made with, read back from its trace.

A run stores its sampling settings but not its StrategyOptions; a fork or replay must make the same
calls in the same order, so the options that shape the loop are recovered from the steps: the
self-consistency k from the sample names ("reasoning path 2/5"), ReAct's step limit and fallback,
PAL's fix attempt. What a trace cannot tell keeps the default.
"""
from __future__ import annotations

import re
from dataclasses import replace

from .runner import DEFAULT_OPTIONS, StrategyOptions

SAMPLE = re.compile(r" \d+/(\d+)$")  # "reasoning path 2/5", "program 1/3"
REACT_STEP = re.compile(r"step (\d+)$")


def options_of(run: dict) -> StrategyOptions:
    """The options that reproduce this run's calls, as far as its trace shows them."""
    steps = run.get("steps") or []
    own = [s for s in steps if not _fallback(s)]
    options = replace(DEFAULT_OPTIONS, self_consistency=_samples(own) or 1)
    if run["strategy"] == "pal":
        return replace(options, fix_errors=_pal_fixes(own, options.self_consistency))
    if run["strategy"] == "react":
        return _react(run, own, len(own) < len(steps), options)
    return options


def _fallback(step: dict) -> bool:
    return bool((step.get("meta") or {}).get("fallback"))


def _samples(steps: list[dict]) -> int | None:
    counts = [int(m.group(1)) for s in steps if s["kind"] == "llm" and (m := SAMPLE.search(s.get("name") or ""))]
    return max(counts, default=None)


def _pal_fixes(steps: list[dict], k: int) -> bool:
    """False only when a lone program failed and no fix followed (the option was off)."""
    if k > 1 or any(s.get("name") == "fix program" for s in steps):
        return True
    sandbox = [s for s in steps if s["kind"] == "tool"]
    return not (sandbox and sandbox[-1].get("error"))


def _react(run: dict, own: list[dict], fell_back: bool, options: StrategyOptions) -> StrategyOptions:
    """Its step limit (reached exactly when the last step was an action's observation and no Finish came)
    and whether it falls back to CoT-SC (k from the fallback's samples)."""
    numbers = [int(m.group(1)) for s in own if s["kind"] == "llm" and (m := REACT_STEP.match(s.get("name") or ""))]
    reached = max(numbers, default=1)
    finished = not fell_back and run.get("answer") is not None
    ran_out = not finished and bool(own) and own[-1]["kind"] == "tool"
    ended_plainly = run.get("status") in ("ok", "no_answer")  # an error or a Stop says nothing of the options
    fallback_k = _samples([s for s in run.get("steps") or [] if _fallback(s)])
    return replace(options, max_steps=reached if ran_out else max(reached, options.max_steps),
                   react_fallback=fell_back or finished or not ended_plainly,
                   self_consistency=fallback_k if fallback_k and fallback_k > 3 else options.self_consistency)
