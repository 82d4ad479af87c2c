"""A run's timing waterfall: each model call and tool call as a bar on one time axis, with its
tokens and tokens per second. Steps carry meta["started_at"] (epoch seconds) and duration_ms;
a step without a start (a run stored before starts were kept) follows the one before it.
"""
from __future__ import annotations

import html
from typing import NamedTuple

TIMED_KINDS = ("llm", "tool")
TICKS = 4  # axis labels besides 0


class Bar(NamedTuple):
    number: int  # the step's number in the trace (1-based)
    label: str
    css: str
    start_s: float  # from the first step's start
    seconds: float
    tokens: int  # generated tokens (model calls)


def bars(steps: list[dict], labels: list[tuple[str, str]]) -> list[Bar]:
    """One bar per model or tool call; `labels` gives each step's (label, css kind)."""
    timed, cursor = [], None
    for step, (label, css) in zip(steps, labels):
        if step["kind"] not in TIMED_KINDS:
            continue
        seconds = (step.get("duration_ms") or 0) / 1000
        started = (step.get("meta") or {}).get("started_at")
        start = started if started is not None else (cursor or 0.0)
        cursor = max(cursor or start, start + seconds)
        timed.append((step, label, css, start, seconds))
    if not timed:
        return []
    origin = min(start for *_, start, _ in timed)
    return [Bar(step["idx"] + 1, label, css, start - origin, seconds, step.get("completion_tokens") or 0)
            for step, label, css, start, seconds in timed]


def _rate(bar: Bar) -> str:
    if not bar.tokens:
        return f"{bar.seconds:.2f} s"
    speed = f" · {tokens_per_second(bar.tokens, bar.seconds)}" if bar.seconds > 0 else ""
    return f"{bar.seconds:.2f} s · {bar.tokens} tok{speed}"


def _row(bar: Bar, total: float) -> str:
    left, width = 100 * bar.start_s / total, max(100 * bar.seconds / total, 0.4)
    return (f'<div class="wf-row"><span class="wf-label">{bar.number}. {html.escape(bar.label)}</span>'
            f'<span class="wf-track"><span class="wf-bar kind-{bar.css}" style="left:{left:.2f}%;width:{width:.2f}%">'
            f'</span></span><span class="wf-time">{_rate(bar)}</span></div>')


def _axis(total: float) -> str:
    marks = "".join(f'<span class="wf-tick" style="left:{100 * i / TICKS:.0f}%">{total * i / TICKS:.1f} s</span>'
                    for i in range(TICKS + 1))
    return f'<div class="wf-row wf-axis-row"><span class="wf-label"></span><span class="wf-axis">{marks}</span>' \
           f'<span class="wf-time"></span></div>'


def waterfall(steps: list[dict], labels: list[tuple[str, str]]) -> str:
    """The waterfall as HTML; empty when the run made no call."""
    timed = bars(steps, labels)
    if not timed:
        return ""
    total = max(max(b.start_s + b.seconds for b in timed), 1e-3)
    rows = "".join(_row(bar, total) for bar in timed)
    return (f'<details class="waterfall" open><summary>Timing: {len(timed)} calls over {total:.2f} s</summary>'
            f'{rows}{_axis(total)}</details>')


def tokens_per_second(tokens: int, seconds: float) -> str:
    """'45 tok/s', or with a decimal below 10 (a 7B on a CPU makes 0.4, not 0)."""
    rate = tokens / seconds
    return f"{rate:.0f} tok/s" if rate >= 10 else f"{rate:.1f} tok/s"
