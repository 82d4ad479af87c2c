"""Two stored runs side by side: where they first part (the step, and the token within that step's
output), which steps match, and their answers and outcomes.

Steps match when kind, name, prompt, output and error are all equal. Tokens are the generated
tokens a step recorded (meta["logprobs"]) when both steps have them, else words of the output.
"""
from __future__ import annotations

import re

from prompts.scoring import score

WORD = re.compile(r"\s*\S+|\s+")
COMPARED = ("kind", "name", "input", "output", "error")


def diff_runs(a: dict, b: dict) -> dict:
    """{"a", "b", "first_divergence": {"step", "token", "unit", "part"} or None, "steps": [{"step", "equal", "kinds"}],
    "answers": {"a", "b", "same"}, "outcomes": {"a", "b"}} for two runs read with their steps."""
    steps_a, steps_b = a.get("steps") or [], b.get("steps") or []
    rows, first = [], None
    for i in range(max(len(steps_a), len(steps_b))):
        x = steps_a[i] if i < len(steps_a) else None
        y = steps_b[i] if i < len(steps_b) else None
        equal = x is not None and y is not None and all(x.get(k) == y.get(k) for k in COMPARED)
        rows.append({"step": i, "equal": equal, "kinds": [_kind(x), _kind(y)]})
        if not equal and first is None:
            first = {"step": i, **divergence(x, y)}
    return {"a": a["id"], "b": b["id"], "first_divergence": first, "steps": rows,
            "answers": {"a": a.get("answer"), "b": b.get("answer"), "same": same_answer(a.get("answer"), b.get("answer"))},
            "outcomes": {"a": _outcome(a), "b": _outcome(b)}}


def divergence(x: dict | None, y: dict | None) -> dict:
    """How two steps at the same index differ: which part, and the first differing token of their outputs."""
    if x is None or y is None:
        return {"part": "missing", "token": None, "unit": None}
    if x["kind"] != y["kind"] or x.get("name") != y.get("name"):
        return {"part": "kind", "token": None, "unit": None}
    if x.get("output") == y.get("output"):
        return {"part": "input" if x.get("input") != y.get("input") else "error", "token": None, "unit": None}
    (tokens_x, tokens_y), unit = step_tokens(x, y)
    return {"part": "output", "token": first_difference(tokens_x, tokens_y), "unit": unit}


def step_tokens(x: dict, y: dict) -> tuple[tuple[list[str], list[str]], str]:
    """Both outputs as generated tokens when both steps recorded them, else as words."""
    recorded = [(s.get("meta") or {}).get("logprobs") for s in (x, y)]
    if all(recorded):
        return tuple([token for token, _, _ in tokens] for tokens in recorded), "token"
    return (WORD.findall(x.get("output") or ""), WORD.findall(y.get("output") or "")), "word"


def first_difference(x: list[str], y: list[str]) -> int | None:
    """The first index where the two lists differ (the shorter one's length when it is a prefix); None if equal."""
    for i, (p, q) in enumerate(zip(x, y)):
        if p != q:
            return i
    return None if len(x) == len(y) else min(len(x), len(y))


def same_answer(a: str | None, b: str | None) -> bool:
    """Equal answers, counting numerically equal ones (0.75 and 3/4) and SQuAD-equal text as the same."""
    if a is None or b is None:
        return a is b
    return a == b or score(a, b).correct


def _kind(step: dict | None) -> str | None:
    return None if step is None else step["kind"]


def _outcome(run: dict) -> dict:
    return {"status": run.get("status"), "correct": run.get("correct")}
