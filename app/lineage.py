"""How a forked, branched or replayed run was made, in words (the CLI and the trace view say it alike)."""
from __future__ import annotations


def lineage_line(run: dict) -> str:
    """How a run was made, in words: 'fork of X at step 2 (edited) · template cot@2' or 'replay of X: identical …'."""
    lineage, parent = run.get("lineage") or {}, run.get("parent_run_id") or "a deleted run"
    kind = lineage.get("kind", "fork")
    if kind == "replay":
        text = f"replay of {parent}: " + replay_verdict(lineage)
    else:
        how = {"branch": f"branched at token {lineage.get('token')} with {lineage.get('alternative')!r}"}.get(
            kind, "edited" if lineage.get("edited") else "regenerated")
        text = f"{kind} of {parent} at step {run.get('forked_at')} ({how})"
    changed = lineage.get("changed") or {}
    text += "".join(f" · {key} {value}" for key, value in changed.items() if key != "sampling")
    if changed.get("sampling"):
        text += " · sampling " + ", ".join(f"{k}={v}" for k, v in changed["sampling"].items())
    if lineage.get("replay_diverged_at") is not None:
        text += f" · warning: the strategy did not retrace the record at step {lineage['replay_diverged_at']}"
    return text


def replay_verdict(lineage: dict) -> str:
    """'identical token for token (deterministic)' or where the replay parted from its run."""
    mode = "deterministic" if lineage.get("deterministic") else "not in deterministic mode"
    if lineage.get("identical"):
        return f"identical token for token ({mode})"
    first = lineage.get("first_divergence") or {}
    token = "" if first.get("token") is None else f", {first.get('unit')} {first.get('token')}"
    return f"not identical: parted at step {first.get('step')}{token} ({mode})"
