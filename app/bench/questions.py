"""Questions the benchmarks run: a small file shipped with the package, or arithmetic made up on the spot."""
from __future__ import annotations

import json
import random
from pathlib import Path

# Grade-school word problems written for this repository (not taken from a data set).
SHIPPED_QUESTIONS = Path(__file__).with_name("questions.jsonl")


def arithmetic_questions(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n short arithmetic word problems with their answers, the same every time."""
    rng = random.Random(seed)
    items = ["apples", "pencils", "books", "marbles", "stickers", "cookies"]
    questions = []
    for _ in range(n):
        a, b, c = rng.randint(2, 40), rng.randint(2, 9), rng.randint(1, 20)
        thing = rng.choice(items)
        questions.append((f"Sam has {a} {thing}. He buys {b} boxes with {c} {thing} in each box. "
                          f"How many {thing} does he have now?", str(a + b * c)))
    return questions


def load_questions(n: int, path: Path = SHIPPED_QUESTIONS) -> tuple[list[str], str]:
    """n questions: the `question` fields of a JSONL file when it exists, topped up with generated arithmetic."""
    questions = read_questions(path)[:n] if path.is_file() else []
    source = f"{path.name} ({len(questions)})" if questions else "generated arithmetic"
    return questions + [q for q, _ in arithmetic_questions(n - len(questions))], source


def read_questions(path: Path) -> list[str]:
    """The `question` string of every non-blank line of a JSONL file; ValueError naming the first bad line."""
    questions = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                questions.append(_question(line, f"{path}:{number}"))
    return questions


def _question(line: str, where: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not a JSON line ({exc.msg})") from exc
    question = record.get("question") if isinstance(record, dict) else None
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f'{where}: expected an object with a non-empty "question" string')
    return question
