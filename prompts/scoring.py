"""Answer scoring: numbers with tolerance (GSM8K-style answers) or SQuAD-style text match and token F1.

Numbers are read by the grammar in `numbers.py`, the same one answers are extracted by.
Text normalization follows the official SQuAD v1.1 evaluation script (extended to Unicode punctuation).
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from .numbers import extract_number, parse_number


@dataclass(frozen=True)
class Score:
    """How one predicted answer compares with the expected one; `correct` is what a batch counts."""

    correct: bool
    exact: bool
    f1: float
    numeric: bool


def numeric_match(predicted: str | None, expected: str | None, rel_tol: float = 1e-6, abs_tol: float = 1e-6) -> bool:
    """Whether the last numbers of both texts are equal within the tolerances (percent signs ignored)."""
    got, want = extract_number(predicted), extract_number(expected)
    if got is None or want is None:
        return False
    return math.isclose(got, want, rel_tol=rel_tol, abs_tol=abs_tol)


_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def normalize_answer(s: str | None) -> str:
    """SQuAD normalization: lowercase, drop punctuation and the articles a/an/the, collapse spaces."""
    if not s:
        return ""
    s = "".join(ch for ch in s.lower() if not unicodedata.category(ch).startswith("P"))
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(pred: str | None, gold: str | None) -> bool:
    """Whether both answers are equal after normalize_answer."""
    return normalize_answer(pred) == normalize_answer(gold)


def token_f1(pred: str | None, gold: str | None) -> float:
    """SQuAD token F1 of the normalized answers; 1.0 when both are empty, 0.0 when only one is."""
    pred_tokens, gold_tokens = normalize_answer(pred).split(), normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def score(predicted: str | None, expected: str | Sequence[str]) -> Score:
    """Score an answer: numerically when the expected answer is a number, else by exact match and F1."""
    if isinstance(expected, str):
        return _score_one(predicted, expected)
    scores = [_score_one(predicted, gold) for gold in expected]
    return max(scores, key=lambda s: (s.correct, s.exact, s.f1), default=Score(False, False, 0.0, False))


def _score_one(predicted: str | None, expected: str) -> Score:
    if not predicted or not predicted.strip() or (not normalize_answer(expected) and parse_number(expected) is None):
        return Score(correct=False, exact=False, f1=0.0, numeric=False)
    if parse_number(expected) is not None and extract_number(predicted) is not None:
        hit = numeric_match(predicted, expected)
        return Score(correct=hit, exact=hit, f1=float(hit), numeric=True)
    exact = exact_match(predicted, expected)
    return Score(correct=exact, exact=exact, f1=token_f1(predicted, expected), numeric=False)
