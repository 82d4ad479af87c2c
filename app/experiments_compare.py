"""Two configurations compared question by question: each side's accuracy with its interval, wins, losses and
ties, the exact McNemar p-value, and the questions that changed with both runs' ids.

A side is `BATCH` (a batch of one configuration) or `BATCH:CONFIG`; a batch may be named by a unique
start or end of its id (the web app shows the last 8 characters).
"""
from __future__ import annotations

from dataclasses import dataclass

from .experiments_stats import config_names, mcnemar_exact, wilson_interval
from .store import Store

SHORTEST_ID = 4


@dataclass(frozen=True)
class Side:
    batch_id: str
    config: str

    @property
    def label(self) -> str:
        return f"{self.batch_id[-8:]}:{self.config}"


def resolve_side(store: Store, text: str) -> Side:
    """BATCH or BATCH:CONFIG as a Side; ValueError that lists the choices when it names none or several."""
    batch_ref, _, config = text.partition(":")
    batch = find_batch(store, batch_ref)
    names = config_names(batch)
    if not config:
        if len(names) != 1:
            raise ValueError(f"batch {batch['id']} has configurations {', '.join(names)}: name one as "
                             f"{batch['id'][-8:]}:CONFIG")
        config = names[0]
    if config not in names:
        raise ValueError(f"batch {batch['id']} has no configuration {config!r}; it has {', '.join(names)}")
    return Side(batch["id"], config)


def find_batch(store: Store, ref: str) -> dict:
    """The batch whose id is `ref`, or the only one whose id starts or ends with it."""
    if batch := store.get_batch(ref):
        return batch
    matches = [b for b in store.list_batches(limit=100_000) if len(ref) >= SHORTEST_ID and
               (b["id"].startswith(ref) or b["id"].endswith(ref))]
    if len(matches) != 1:
        raise ValueError(f"no batch {ref!r}; see `reason batches`" if not matches else
                         f"{ref!r} names {len(matches)} batches; give more of the id")
    return matches[0]


def compare(store: Store, a: Side, b: Side) -> dict:
    """The comparison as JSON-ready data (keys: sides, wins, losses, ties, p_value, changed, only_a, only_b).

    Only questions both sides scored are paired; `wins` are those A got right and B wrong."""
    runs_a, runs_b = _scored(store, a), _scored(store, b)
    paired = [q for q in runs_a if q in runs_b]
    pairs = [(runs_a[q]["correct"], runs_b[q]["correct"]) for q in paired]
    wins = sum(1 for x, y in pairs if x and not y)
    losses = sum(1 for x, y in pairs if y and not x)
    changed = [_change(q, runs_a[q], runs_b[q]) for q in paired if runs_a[q]["correct"] != runs_b[q]["correct"]]
    return {"sides": [_side(side, [p[i] for p in pairs]) for i, side in enumerate((a, b))],
            "wins": wins, "losses": losses, "ties": len(pairs) - wins - losses, "p_value": mcnemar_exact(wins, losses),
            "changed": changed, "only_a": len(runs_a) - len(paired), "only_b": len(runs_b) - len(paired)}


def _scored(store: Store, side: Side) -> dict[str, dict]:
    return {q: run for q, run in store.config_runs(side.batch_id, side.config).items() if run["correct"] is not None}


def _side(side: Side, correct: list[bool]) -> dict:
    n, right = len(correct), sum(map(bool, correct))
    interval = wilson_interval(right, n)
    return {"label": side.label, "batch": side.batch_id, "config": side.config, "n": n, "correct": right,
            "accuracy": right / n if n else None, "ci95": list(interval) if interval else None}


def _change(question_id: str, a: dict, b: dict) -> dict:
    brief = lambda run: {k: run[k] for k in ("correct", "answer", "status", "run_id")}  # noqa: E731
    return {"question_id": question_id, "question": a["question"], "expected": a["expected"], "a": brief(a), "b": brief(b)}
