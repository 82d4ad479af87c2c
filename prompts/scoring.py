"""Answer scoring: numbers with tolerance (GSM8K-style answers) or SQuAD-style text match and token F1.

Text normalization follows the official SQuAD v1.1 evaluation script (extended to Unicode punctuation).
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

# One number: an optional sign (ASCII hyphen or U+2212 minus), optional currency symbol, then a
# mixed number ("1 1/2"), a fraction ("3/4") or a decimal with optional thousands commas and
# exponent, then an optional "%". A "-" right after a word or digit ("COVID-19", "5-3") is a hyphen.
_NUMBER = re.compile(r"""
    (?<![\w./])
    (?P<sign>[-−+])?
    (?:[$€£¥₹]\s*(?P<sign2>[-−])?\s*)?
    (?:
        (?P<whole>\d+)\s+(?P<mnum>\d+)\s*/\s*(?P<mden>\d+)(?![\d/])
      | (?P<num>\d+)\s*/\s*(?P<den>\d+)(?![\d/])
      | (?P<dec>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?!\d)|\.\d+)
    )
    (?P<percent>\s*%)?
""", re.VERBOSE)
# A whole answer that is just a number, maybe with one unit word ("18 dollars", "3 km") and a final period.
_ONLY_NUMBER_TAIL = re.compile(r"\s*(?:[^\W\d_]+)?\s*\.?\s*")


@dataclass(frozen=True)
class Score:
    """How one predicted answer compares with the expected one; `correct` is what a batch counts."""

    correct: bool
    exact: bool
    f1: float
    numeric: bool


def _value(match: re.Match[str]) -> float | None:
    negative = bool({match["sign"], match["sign2"]} & {"-", "−"})
    if match["dec"] is not None:
        value = float(match["dec"].replace(",", ""))
    elif match["num"] is not None:
        if int(match["den"]) == 0:
            return None
        value = int(match["num"]) / int(match["den"])
    else:
        if int(match["mden"]) == 0:
            return None
        value = int(match["whole"]) + int(match["mnum"]) / int(match["mden"])
    return -value if negative else value


def extract_number(text: str | None) -> float | None:
    """The last number in free text ("The answer is $1,234.50." -> 1234.5), or None if it has none."""
    if not text:
        return None
    values = [_value(match) for match in _NUMBER.finditer(text)]
    values = [value for value in values if value is not None and math.isfinite(value)]
    return values[-1] if values else None


def parse_number(text: str | None) -> float | None:
    """The value of text that is only a number (with currency, %, one unit word), else None."""
    if not text:
        return None
    text = text.strip()
    match = _NUMBER.match(text)
    if match is None or not _ONLY_NUMBER_TAIL.fullmatch(text, match.end()):
        return None
    value = _value(match)
    return value if value is not None and math.isfinite(value) else None


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
