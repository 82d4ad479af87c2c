"""Per-configuration results of a batch, with a 95% Wilson score interval on accuracy (Wilson, 1927), and the
exact McNemar test for two configurations answering the same questions (a two-sided binomial test on the
questions where exactly one is right). The numbers come from scipy.stats."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .store import Store


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """The Wilson score interval of correct/n (None when n is 0): unlike p ± z·se it stays in [0, 1] and is
    honest for small n and accuracies near 0 or 1, which small evaluations have."""
    if n == 0:
        return None
    from scipy.stats import binomtest

    interval = binomtest(correct, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def mcnemar_exact(wins: int, losses: int) -> float:
    """Two-sided exact McNemar p-value: under 'no difference' each discordant question goes either way with 1/2."""
    if wins + losses == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(wins, wins + losses, 0.5).pvalue)


@dataclass
class ConfigResult:
    """What one configuration of a batch did; rates are over its ended runs, accuracy over the scored ones."""

    config: str
    strategy: str
    total: int  # ended runs
    scored: int  # runs with an expected answer: wrong, unanswered and failed ones count as not correct
    correct: int
    accuracy: float | None
    ci95: tuple[float, float] | None
    answered_rate: float
    error_rate: float
    parse_error_rate: float
    tool_error_rate: float
    mean_tokens: float
    mean_latency_ms: float
    tokens_per_correct: float | None  # every token the configuration spent, over its correct answers

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ci95"] = list(self.ci95) if self.ci95 else None
        return data


def result(row: dict) -> ConfigResult:
    """A ConfigResult from the store's counts for one configuration (BatchStore.config_metrics)."""
    total, scored, correct = row["total"], row["scored"], row["correct"]
    rate = lambda n: n / total if total else 0.0  # noqa: E731
    return ConfigResult(row["config"], row["strategy"], total, scored, correct, correct / scored if scored else None,
                        wilson_interval(correct, scored), rate(row["answered"]), rate(row["errors"]),
                        rate(row["parse_errors"]), rate(row["tool_errors"]), rate(row["tokens"] or 0),
                        rate(row["duration_ms"] or 0.0), (row["tokens"] or 0) / correct if correct else None)


def batch_results(store: Store, batch_id: str) -> list[ConfigResult]:
    """Every configuration of a batch that has ended runs, in the batch's own order of configurations."""
    order = {name: i for i, name in enumerate(config_names(store.get_batch(batch_id) or {}))}
    rows = sorted(store.config_metrics(batch_id), key=lambda r: (order.get(r["config"], len(order)), r["config"]))
    return [result(row) for row in rows]


def config_names(batch: dict) -> list[str]:
    """A batch's configuration keys in order: its stored configurations, or (before experiments) its strategies."""
    configs = (batch.get("settings") or {}).get("configurations")
    return [c["name"] for c in configs] if configs else list(batch.get("strategies") or [])


def batch_listing(store: Store, limit: int = 50) -> list[dict]:
    """Batches, newest first: id, input, status, counts, overall accuracy and each configuration's."""
    rows = []
    for batch in store.list_batches(limit=limit):
        results = batch_results(store, batch["id"])
        scored, correct = sum(r.scored for r in results), sum(r.correct for r in results)
        configs = {name: None for name in config_names(batch)} | {r.config: r for r in results}
        rows.append({"id": batch["id"], "input": batch["input_name"], "status": batch["status"],
                     "created_at": batch["created_at"], "total": batch["total"], "done": batch["done"],
                     "correct": batch["correct"], "errors": batch["errors"],
                     "accuracy": correct / scored if scored else None,
                     "configurations": [{"config": name, "n": r.scored if r else 0, "accuracy": r.accuracy if r else None,
                                         "ci95": list(r.ci95) if r and r.ci95 else None} for name, r in configs.items()]})
    return rows
