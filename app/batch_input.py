"""Read a batch input: JSONL or CSV rows (or a Parquet, Arrow or Hugging Face `datasets` table, app/batch_tables.py)
with a question and optional answer and id, in the columns `Fields` names.

Text is UTF-8 (a leading BOM is dropped) or, when it starts with a byte-order mark, UTF-16 or UTF-32.
A bad row (undecodable, broken or too deeply nested JSON, an oversized field, a lone surrogate, no
question, a bad or duplicate id) is reported with its line number and skipped: it never aborts the
batch. A file that cannot be read as text at all is one ValueError that says what to do.
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .batch_tables import is_table, read_table

MAX_FIELD_CHARS = 131_072  # the csv module's own field limit, held for JSONL fields too
# UTF-32-LE's mark begins with UTF-16-LE's, so it is tried first.
_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
              (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


@dataclass(frozen=True)
class Fields:
    """Which column holds what (a dotted name reaches into nested records: `answers.text`), and how to read the answer."""

    question: str = "question"
    answer: str = "answer"
    id: str = "id"
    answer_pattern: str | None = None  # a regex searched in the answer (^ and $ match at lines): group 1 is the answer
    split: str | None = None  # a `datasets` folder with several splits: which one

    def to_dict(self) -> dict:
        return asdict(self)

    def compiled_pattern(self) -> re.Pattern | None:
        if self.answer_pattern is None:
            return None
        try:
            return re.compile(self.answer_pattern, re.MULTILINE)
        except re.error as exc:
            raise ValueError(f"--answer-pattern {self.answer_pattern!r} is not a valid regular expression: {exc}") from exc


PLAIN_FIELDS = Fields()


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
    problems: list[str] = field(default_factory=list)  # "line N: why", one per skipped row, in line order


class RowError(ValueError):
    """Why one row is skipped."""


def read_batch_input(path: str | Path, fields: Fields = PLAIN_FIELDS) -> BatchInput:
    """Parse the input by kind (a table, .csv, else JSON lines); bad rows become `problems`, never exceptions."""
    path, pattern = Path(path), fields.compiled_pattern()
    if is_table(path):
        sha256, records = read_table(path, fields.split)
        rows, unit = enumerate(records, start=1), "row"
    else:
        sha256, rows, fields = _text_rows(path, fields)
        unit = "line"
    batch = BatchInput(path, sha256)
    seen: dict[str, tuple[int, bool]] = {}
    problems: list[tuple[int, str]] = []
    for number, row in rows:
        try:
            batch.questions.append(_question(number, row, seen, fields, pattern, unit))
        except RowError as exc:
            problems.append((number, str(exc)))
    batch.problems = [f"{unit} {number}: {why}" for number, why in sorted(problems, key=lambda p: p[0])]
    return batch


def _text_rows(path: Path, fields: Fields) -> tuple[str, Iterable[tuple[int, dict | RowError]], Fields]:
    """(sha256, numbered rows, fields) of a JSONL or CSV file; a CSV's column names are read in lower case."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    lines = _text_lines(raw)
    if path.suffix.lower() != ".csv":
        return hashlib.sha256(raw).hexdigest(), _jsonl_rows(lines), fields
    fields = replace(fields, question=fields.question.lower(), answer=fields.answer.lower(), id=fields.id.lower())
    return hashlib.sha256(raw).hexdigest(), _csv_rows(lines, fields.question), fields


# --- bytes to numbered lines of text


def _text_lines(raw: bytes) -> list[tuple[int, str | None]]:
    """(line number, its text with its newline) for every line; None for a line that is not UTF-8."""
    for bom, codec in _WIDE_BOMS:
        if raw.startswith(bom):
            return list(enumerate(_split(_decode_whole(raw, codec)), start=1))
    raw = raw.removeprefix(codecs.BOM_UTF8)
    _refuse_wide_text(raw)
    return [(number, _utf8(line)) for number, line in enumerate(_split(raw), start=1)]


def _decode_whole(raw: bytes, codec: str) -> str:
    try:
        return raw.decode(codec.lower())  # the codec reads the mark and drops it
    except UnicodeDecodeError as exc:
        raise ValueError(f"the file starts with a {codec} byte-order mark but is not valid {codec} text "
                         f"(at byte {exc.start}); save it as UTF-8") from exc


def _refuse_wide_text(raw: bytes) -> None:
    first = raw[: raw.find(b"\n")] if b"\n" in raw[:4096] else raw[:4096]
    if len(first) >= 4 and first.count(0) * 4 >= len(first):  # every other (or every fourth) byte is 0
        raise ValueError("the file looks like UTF-16 or UTF-32 text without a byte-order mark; save it as UTF-8")


def _split(data):
    """Lines of bytes or str split at "\\n" only, each keeping its newline (line numbers as an editor counts)."""
    newline = b"\n" if isinstance(data, bytes) else "\n"
    parts = data.split(newline)
    return [part + newline for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _utf8(line: bytes) -> str | None:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return None


# --- lines to rows: a dict per row, or the RowError that skips it


def _jsonl_rows(lines: list[tuple[int, str | None]]) -> Iterator[tuple[int, dict | RowError]]:
    for number, text in lines:
        if text is None:
            yield number, RowError("not UTF-8 text")
        elif text.strip():
            yield number, _json_object(text)


def _json_object(text: str) -> dict | RowError:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        return RowError(f"broken JSON ({exc.msg})")
    except RecursionError:
        return RowError("JSON nested too deeply")
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        return RowError(f"unreadable JSON ({exc})")
    return row if isinstance(row, dict) else RowError("expected a JSON object")


def _csv_rows(lines: list[tuple[int, str | None]], question: str) -> Iterator[tuple[int, dict | RowError]]:
    for number, text in lines:
        if text is None:
            yield number, RowError("not UTF-8 text")
    # An undecodable line stays as an empty one, so the reader's line numbers remain the file's; newline=""
    # lets the reader see \r\n, \n and a lone \r as the csv module expects.
    content = "".join("\n" if text is None else text for _, text in lines)
    reader = csv.reader(io.StringIO(content, newline=""))
    header = _header(reader, question)
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, RowError(f"unreadable CSV ({exc})")
            continue
        if any(cells):
            yield reader.line_num, dict(zip(header, cells))


def _header(reader, question: str) -> list[str]:
    try:
        header = [name.strip().lower() for name in next(reader, [])]
    except csv.Error as exc:
        raise ValueError(f"the CSV header row is unreadable ({exc})") from exc
    if question not in header:
        raise ValueError(f"the CSV needs a header row with a '{question}' column (optional: answer, id; "
                         f"other names with --question-field, --answer-field, --id-field)")
    return header


# --- a row to a Question


def _question(number: int, row: dict | RowError, seen: dict[str, tuple[int, bool]], fields: Fields,
              pattern: re.Pattern | None, unit: str) -> Question:
    if isinstance(row, RowError):
        raise row
    question = _field(row, fields.question)
    if question is None or (isinstance(question, str) and not question.strip()):
        raise RowError("no question")
    if not isinstance(question, str):
        raise RowError(f"the question must be text, not {type(question).__name__}")
    raw_id = _field(row, fields.id)
    qid, answer = _id(raw_id, number, unit), _answer(_field(row, fields.answer), pattern)
    for name, value in (("question", question), ("id", qid), ("answer", answer)):
        _check_text(name, value)
    _claim(qid, number, raw_id, seen, unit)
    return Question(qid, question.strip(), answer)


def _field(row: dict, name: str):
    """row[name]; a dotted name walks nested records, where a list gives its first item (SQuAD's answers.text)."""
    if name in row or "." not in name:
        return row.get(name)
    value = row
    for part in name.split("."):
        value = value[0] if isinstance(value, list) and value else value
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _id(value, number: int, unit: str = "line") -> str:
    if value is None or value == "":
        return f"{unit}-{number}"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RowError(f"the id must be a string or an integer, not {json.dumps(value)[:40]}")
    return str(value)


def _answer(value, pattern: re.Pattern | None = None) -> str | None:
    """The expected answer as text: the pattern's first group (else its whole match) when there is a pattern."""
    if value is None or value == "":
        return None
    if not isinstance(value, (str, int, float)):
        raise RowError("the answer must be a string or a number")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a float column's 18.0 is the 18 its data set means
    if pattern is None:
        return str(value)
    found = pattern.search(str(value))
    if found is None:
        raise RowError(f"the answer does not match --answer-pattern '{pattern.pattern}'")
    return (found.group(1) if pattern.groups else found.group(0)).strip() or None


def _check_text(name: str, value: str | None) -> None:
    if value is None:
        return
    if len(value) > MAX_FIELD_CHARS:
        raise RowError(f"the {name} is {len(value):,} characters; the limit is {MAX_FIELD_CHARS:,}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # only JSON escapes such as "\ud800" can make one
        lone = value[exc.start].encode("unicode_escape").decode()
        raise RowError(f"the {name} holds a lone surrogate ({lone}), which is not text") from None


def _claim(qid: str, number: int, raw_id, seen: dict[str, tuple[int, bool]], unit: str = "line") -> None:
    """Record the id as used by this line; a second use is this row's error."""
    if qid not in seen:
        seen[qid] = (number, isinstance(raw_id, int))
        return
    first, first_was_int = seen[qid]
    if raw_id is None or raw_id == "":
        raise RowError(f"its default id '{qid}' is already taken on {unit} {first}; give the row an id")
    note = f'; ids are text, so {qid} and "{qid}" are the same id' if first_was_int or isinstance(raw_id, int) else ""
    raise RowError(f"duplicate id '{qid}' (also on {unit} {first}{note})")
