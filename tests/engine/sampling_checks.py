"""Definitional filters and a chi-square test, shared by the torch and Triton sampler tests."""
from __future__ import annotations

import math

import torch


def softmax(values: dict[int, float]) -> dict[int, float]:
    top = max(values.values())
    exp = {t: math.exp(v - top) for t, v in values.items()}
    total = sum(exp.values())
    return {t: e / total for t, e in exp.items()}


def keep_prefix(ordered: list[int], probs: dict[int, float], p: float) -> set[int]:
    kept, mass = set(), 0.0
    for t in ordered:
        if kept and mass >= p:
            break
        kept.add(t)
        mass += probs[t]
    return kept


def exact_distribution(logits: list[float], temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0) -> list[float]:
    """The filtered, tempered distribution computed straight from the definitions, one filter at a time."""
    alive = dict(enumerate(logits))
    if top_k:
        kth = sorted(alive.values(), reverse=True)[min(top_k, len(alive)) - 1]
        alive = {t: v for t, v in alive.items() if v >= kth}
    if typical_p < 1:
        probs = softmax(alive)
        entropy = -sum(p * math.log(p) for p in probs.values() if p > 0)
        order = sorted(alive, key=lambda t: abs(-math.log(probs[t]) - entropy))
        alive = {t: alive[t] for t in keep_prefix(order, probs, typical_p)}
    if top_p < 1:
        probs = softmax(alive)
        alive = {t: alive[t] for t in keep_prefix(sorted(alive, key=lambda t: -probs[t]), probs, top_p)}
    if min_p > 0:
        probs = softmax(alive)
        alive = {t: v for t, v in alive.items() if probs[t] >= min_p * max(probs.values())}
    final = softmax({t: v / temperature for t, v in alive.items()})
    return [final.get(t, 0.0) for t in range(len(logits))]


def chi_square_p_value(counts: torch.Tensor, expected_probs: list[float]) -> float:
    """Pearson's chi-square goodness of fit; tokens with zero expected probability must never appear."""
    expected = torch.tensor(expected_probs, dtype=torch.float64) * counts.sum()
    support = expected > 0
    outside = torch.nonzero(counts * ~support).flatten().tolist()
    assert counts[~support].sum() == 0, f"sampled tokens outside the distribution: {outside}"
    stat = ((counts[support] - expected[support]) ** 2 / expected[support]).sum()
    dof = int(support.sum()) - 1
    if dof == 0:
        return 1.0
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), stat / 2))


SIGNIFICANCE = 1e-3  # fixed seeds make the tests deterministic; a true match fails 1 in 1000 seeds

LOGITS = [2.0, 1.5, 1.4, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0, 0.7]

PARAM_CASES = {
    "temperature": dict(temperature=0.7),
    "top_k": dict(temperature=1.0, top_k=4),
    "top_p": dict(temperature=1.0, top_p=0.6),
    "min_p": dict(temperature=1.3, min_p=0.3),
    "typical": dict(temperature=1.0, typical_p=0.5),
    "all": dict(temperature=0.8, top_k=7, typical_p=0.95, top_p=0.9, min_p=0.05),
}
