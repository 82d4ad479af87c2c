"""Read a batch input file: JSONL or CSV rows with `question` and optional `answer` and `id`.

Bad rows (broken JSON, wrong encoding, no question) are reported with their line number and
skipped; they never abort the batch.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answer: str | None = None


@dataclass
class BatchInput:
    path: Path
    sha256: str
    questions: list[Question] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "line N: why", one per skipped row


def read_batch_input(path: str | Path) -> BatchInput:
    """Parse the file by extension (.jsonl/.ndjson/.json lines, or .csv)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    batch = BatchInput(path, hashlib.sha256(raw).hexdigest())
    rows = _csv_rows(raw, batch.problems) if path.suffix.lower() == ".csv" else _jsonl_rows(raw, batch.problems)
    seen: set[str] = set()
    for line, row in rows:
        question = _question(line, row, batch.problems, seen)
        if question:
            batch.questions.append(question)
    batch.problems.sort(key=lambda problem: int(problem.split()[1].rstrip(":")))  # CSV decode errors come first
    return batch


def _jsonl_rows(raw: bytes, problems: list[str]):
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            problems.append(f"line {number}: not UTF-8 text")
            continue
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: broken JSON ({exc.msg})")
            continue
        if not isinstance(row, dict):
            problems.append(f"line {number}: expected a JSON object")
            continue
        yield number, row


def _csv_rows(raw: bytes, problems: list[str]):
    lines = raw.splitlines(keepends=True)
    text_lines = []
    for number, line in enumerate(lines, start=1):
        try:
            text_lines.append(line.decode("utf-8-sig" if number == 1 else "utf-8"))
        except UnicodeDecodeError:
            problems.append(f"line {number}: not UTF-8 text")
            text_lines.append("\n")  # keep line numbers aligned
    reader = csv.DictReader(io.StringIO("".join(text_lines)))
    if not reader.fieldnames or "question" not in [f.strip().lower() for f in reader.fieldnames]:
        raise ValueError("the CSV needs a header row with a 'question' column (optional: answer, id)")
    for row in reader:
        if any(v for v in row.values() if v):
            yield reader.line_num, {(k or "").strip().lower(): v for k, v in row.items()}


def _question(line: int, row: dict, problems: list[str], seen: set[str]) -> Question | None:
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        problems.append(f"line {line}: no question")
        return None
    qid = str(row.get("id") or f"line-{line}")
    if qid in seen:
        problems.append(f"line {line}: duplicate id '{qid}'")
        return None
    seen.add(qid)
    answer = row.get("answer")
    return Question(qid, question.strip(), None if answer in (None, "") else str(answer))
