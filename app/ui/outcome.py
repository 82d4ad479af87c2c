"""How a run ended, as every page shows it: one mark, word and colour per outcome.

The outcomes are the run statuses (prompts.trace.STATUSES, and `running`) with `ok` split by the
expected answer: `correct` and `wrong`. The marks are characters the default fonts have (no emoji).
"""
from __future__ import annotations

import html
from typing import NamedTuple


class Outcome(NamedTuple):
    key: str  # also the CSS class suffix: outcome-<key>
    mark: str
    word: str


OUTCOMES = {o.key: o for o in (
    Outcome("running", "…", "running"),
    Outcome("ok", "✓", "answered"),
    Outcome("correct", "✓", "correct"),
    Outcome("wrong", "✗", "wrong vs expected"),
    Outcome("no_answer", "?", "no answer"),
    Outcome("error", "⚠", "error"),
    Outcome("stopped", "■", "stopped"),
)}


def outcome_of(run: dict) -> Outcome:
    """The outcome of a stored run (or any dict with status and, maybe, correct)."""
    status = run.get("status") or "running"
    if status == "ok" and run.get("correct") is not None:
        return OUTCOMES["correct" if run["correct"] else "wrong"]
    return OUTCOMES.get(status, OUTCOMES["error"])


def badge(outcome: Outcome, text: str | None = None) -> str:
    """An inline coloured label: mark and word (or `text`)."""
    label = html.escape(text if text is not None else outcome.word)
    return f'<span class="badge outcome-{outcome.key}"><span class="mark" aria-hidden="true">{outcome.mark}</span> {label}</span>'


def status_line(outcome: Outcome, text: str) -> str:
    """The Chat page's status line, coloured by outcome (its container is an aria-live region)."""
    return (f'<div class="status-line outcome-{outcome.key}"><span class="mark" aria-hidden="true">{outcome.mark}</span> '
            f'{text}</div>')


def plain_status(text: str) -> str:
    """A status line that reports no outcome (a hint, a refusal)."""
    return f'<div class="status-line">{text}</div>'
