"""Pull a final answer out of model text: "The answer is N." lines, or the last number."""
from __future__ import annotations

import re
from collections import Counter

ANSWER_IS = re.compile(r"answer is[:\s]*\$?\s*([^\n]*?)\s*\.?\s*(?:\n|$)", re.IGNORECASE)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def last_number(text: str) -> str | None:
    numbers = NUMBER.findall(text or "")
    return numbers[-1].replace(",", "") if numbers else None


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


def majority_vote(answers: list[str], logprobs: list[float]) -> tuple[str | None, dict[str, int]]:
    """The most frequent answer; ties go to the answer whose samples have the highest summed log-probability."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None, {}
    mass: dict[str, float] = {}
    for answer, logprob in zip(answers, logprobs):
        if answer is not None:
            mass[answer] = mass.get(answer, 0.0) + logprob
    best = max(counts, key=lambda a: (counts[a], mass[a]))
    return best, dict(counts)
