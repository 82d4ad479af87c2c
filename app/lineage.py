"""How a forked, branched or replayed run was made, in words (the CLI and the trace view say it alike)."""
from __future__ import annotations


def lineage_line(run: dict, first: int = 0) -> str:
    """How a run was made, in words: 'fork of X at step 2 (edited) · template cot@2' or 'replay of X: identical …'.

    `first`: the number of the first step (the CLI counts from 0, the web app's cards from 1)."""
    lineage, parent = run.get("lineage") or {}, run.get("parent_run_id") or "a deleted run"
    if lineage.get("kind") == "replay":
        text = f"replay of {parent}: " + replay_verdict(lineage, first)
    else:
        step = (run.get("forked_at") or 0) + first
        if "token" in lineage:
            text = f"branch of {parent} at step {step}, token {lineage['token']} → {lineage.get('alternative')!r}"
        else:
            how = "edited, then continued" if lineage.get("continued") else "edited" if lineage.get("edited") else \
                "regenerated"
            text = f"fork of {parent} at step {step} ({how})"
    changed = lineage.get("changed") or {}
    text += "".join(f" · {key} {value}" for key, value in changed.items() if key != "sampling")
    if changed.get("sampling"):
        text += " · sampling " + ", ".join(f"{k}={v}" for k, v in changed["sampling"].items())
    if lineage.get("replay_diverged_at") is not None:
        text += f" · warning: the strategy did not retrace the record at step {lineage['replay_diverged_at'] + first}"
    return text


def replay_verdict(lineage: dict, first: int = 0) -> str:
    """'identical token for token (deterministic)' or where the replay parted from its run."""
    mode = "deterministic" if lineage.get("deterministic") else "not in deterministic mode"
    if lineage.get("identical"):
        return f"identical token for token ({mode})"
    parted = lineage.get("first_divergence") or {}
    token = "" if parted.get("token") is None else f", {parted.get('unit')} {parted.get('token')}"
    return f"not identical: parted at step {parted.get('step', 0) + first}{token} ({mode})"
