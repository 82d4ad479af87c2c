"""Fuzzing the batch reader (hypothesis, bounded): any file ends in valid questions and numbered problems, or in
one ValueError for the whole file; never another exception, a hang or text the store could not hold."""
import codecs
import csv
import io
import json
import re
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.batch_input import MAX_FIELD_CHARS, read_batch_input

# A fixed budget: examples per property and time per example; no example database left in the tree.
BUDGET = settings(max_examples=120, deadline=timedelta(seconds=3), database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SPECIALS = ["\ud800", "\udfff", "\x00", "\u2028", "\ufeff", ",", '"', "\n", "\r", "\\", "{", "[", " "]
text = st.text(st.one_of(st.characters(exclude_categories=()), st.sampled_from(SPECIALS)), max_size=40)
scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True), text)
value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                     max_leaves=8)
row = st.fixed_dictionaries({}, optional={"question": value, "answer": value, "id": value, "extra": value})
junk_line = st.one_of(
    st.binary(max_size=60),
    st.integers(1, 5000).map(lambda depth: "[" * depth),
    st.integers(1, 3000).map(lambda depth: '{"question": ' + "[" * depth + "1" + "]" * depth + "}"),
    st.just('{"question": "q?", "id": ' + "7" * 5000 + "}"),
    st.just('{"question": "' + "x" * (MAX_FIELD_CHARS + 1) + '"}'),
)
encoding = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "latin-1"])
newline = st.sampled_from(["\n", "\r\n", "\r"])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def encode(lines: list, codec: str, end: str) -> bytes:
    """The lines (bytes read as Latin-1) as one file in `codec`; lone surrogates go in raw where the codec can."""
    content = end.join(line.decode("latin-1") if isinstance(line, bytes) else line for line in lines)
    return content.encode(codec, errors="surrogatepass" if codec.startswith("utf") else "backslashreplace")


def check(workdir, name: str, content: bytes) -> None:
    path = workdir / name
    path.write_bytes(content)
    try:
        batch = read_batch_input(path)
    except ValueError as exc:  # the one allowed failure: a clear message for the whole file
        assert str(exc) and "\n" not in str(exc)
        return
    ids = [q.id for q in batch.questions]
    assert len(ids) == len(set(ids))
    for question in batch.questions:
        for text_field in (question.id, question.question, question.answer or ""):
            assert isinstance(text_field, str) and len(text_field) <= MAX_FIELD_CHARS
            text_field.encode("utf-8")  # the store and OUT can hold it
        assert question.question.strip() == question.question and question.question
    numbers = [int(re.match(r"line (\d+): \S", problem).group(1)) for problem in batch.problems]
    assert numbers == sorted(numbers) and all(n >= 1 for n in numbers)


@BUDGET
@given(content=st.binary(max_size=3000), suffix=st.sampled_from([".csv", ".jsonl"]))
def test_any_bytes(workdir, content, suffix):
    check(workdir, "raw" + suffix, content)


@BUDGET
@given(rows=st.lists(st.one_of(row.map(lambda r: json.dumps(r)), junk_line), max_size=12), codec=encoding,
       end=newline, bom=st.booleans())
def test_jsonl_rows_of_every_kind(workdir, rows, codec, end, bom):
    content = encode(rows, codec, end)
    check(workdir, "rows.jsonl", (codecs.BOM_UTF8 if bom and codec == "utf-8" else b"") + content)


@BUDGET
@given(header=st.lists(st.sampled_from(["question", "Answer", " id ", "other", "", "question"]), min_size=1, max_size=4),
       cells=st.lists(st.lists(text, max_size=5), max_size=10), codec=encoding, end=newline)
def test_csv_rows_of_every_kind(workdir, header, cells, codec, end):
    stream = io.StringIO()
    writer = csv.writer(stream, lineterminator=end)
    for line in [header, *cells]:
        writer.writerow(line)
    check(workdir, "rows.csv", encode([stream.getvalue()], codec, ""))
