"""Pull a final answer out of model text: "The answer is N." lines, or the last number.

Numbers are read by the grammar scoring uses (`numbers.py`) and kept in its normalized spelling,
so "The answer is 3/4." gives "3/4" and "−$1,234.50" gives "-1234.50"; votes count numerically
equal answers ("0.75", "3/4") as one.
"""
from __future__ import annotations

import re

from .numbers import find_numbers, parse_number

ANSWER_IS = re.compile(r"answer is[:\s]*\$?\s*([^\n]*?)\s*\.?\s*(?:\n|$)", re.IGNORECASE)
# Vote keys round to this many significant digits so that float noise ("0.30000000000000004") agrees.
_VOTE_DIGITS = 9


def last_number(text: str) -> str | None:
    """The last number in text, in its normalized spelling ("1 1/2 cups" -> "1 1/2")."""
    numbers = find_numbers(text)
    return numbers[-1].text if numbers else None


def extract_answer(text: str) -> str | None:
    """The last "answer is X" phrase (X cleaned to its number when it has one), else the last number."""
    found = ANSWER_IS.findall(text or "")
    if found:
        phrase = found[-1].strip().rstrip(".")
        return last_number(phrase) or (phrase or None)
    return last_number(text)


def first_line(text: str) -> str | None:
    line = (text or "").strip().split("\n", 1)[0].strip()
    return line.rstrip(".") or None


def _vote_key(answer: str) -> str | float:
    value = parse_number(answer)
    return answer if value is None else float(f"{value:.{_VOTE_DIGITS}g}")


def _tally(answers: list[str | None], logprobs: list[float]):
    """(spelling, counts, summed logprob) by vote key: numerically equal answers under the spelling that came first."""
    spelling: dict[str | float, str] = {}
    counts: dict[str | float, int] = {}
    mass: dict[str | float, float] = {}
    for answer, logprob in zip(answers, logprobs):
        if answer is not None:
            key = _vote_key(answer)
            spelling.setdefault(key, answer)
            counts[key] = counts.get(key, 0) + 1
            mass[key] = mass.get(key, 0.0) + logprob
    return spelling, counts, mass


def majority_vote(answers: list[str | None], logprobs: list[float]) -> tuple[str | None, dict[str, int]]:
    """The most frequent answer; ties go to the answer whose samples have the highest summed log-probability.

    Numerically equal answers count together, under the spelling that came first.
    """
    spelling, counts, mass = _tally(answers, logprobs)
    if not counts:
        return None, {}
    best = max(counts, key=lambda k: (counts[k], mass[k]))
    return spelling[best], {spelling[k]: n for k, n in counts.items()}


def vote_mass(answers: list[str | None], logprobs: list[float]) -> dict[str, float]:
    """Each voted answer's summed log-probability (what breaks a tie), keyed as majority_vote's counts."""
    spelling, _, mass = _tally(answers, logprobs)
    return {spelling[k]: round(m, 4) for k, m in mass.items()}


def vote_totals(answers: list[str | None], weights: list[float]) -> dict[str, float]:
    """Each voted answer's summed weight (1 per path: its count), keyed as majority_vote's counts."""
    spelling, _, mass = _tally(answers, weights)
    return {spelling[k]: m for k, m in mass.items()}
