"""Reading batch input: JSONL and CSV rows, every bad row a numbered problem, every unreadable file one error."""
import codecs
import json

import pytest

from app.batch_input import MAX_FIELD_CHARS, read_batch_input


def test_jsonl_with_bad_rows_reported_by_line(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"id": "a", "question": "1+1?", "answer": "2"}\n'
                     b'{"question": "no id"}\n'
                     b'{broken json\n'
                     b'\n'
                     b'{"answer": "3"}\n'
                     b'{"question": "caf\xe9"}\n'
                     b'["a list"]\n'
                     b'{"id": "a", "question": "dup"}\n'
                     b'{"id": 7, "question": "  spaced  ", "answer": 4}\n')
    batch = read_batch_input(path)
    assert [(q.id, q.question, q.answer) for q in batch.questions] == [("a", "1+1?", "2"), ("line-2", "no id", None),
                                                                       ("7", "spaced", "4")]
    assert batch.problems == ["line 3: broken JSON (Expecting property name enclosed in double quotes)",
                              "line 5: no question", "line 6: not UTF-8 text", "line 7: expected a JSON object",
                              "line 8: duplicate id 'a' (also on line 1)"]
    assert len(batch.sha256) == 64


def test_csv_with_header_and_bad_rows(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes("\ufeffQuestion,Answer,id\n\"How many, exactly?\",3,q1\n,5,q2\nPlain,,\n".encode() + b"bad \xff row,1,q4\n")
    batch = read_batch_input(path)
    assert [(q.id, q.question, q.answer) for q in batch.questions] == [("q1", "How many, exactly?", "3"),
                                                                       ("line-4", "Plain", None)]
    assert batch.problems == ["line 3: no question", "line 5: not UTF-8 text"]


@pytest.mark.parametrize("content, message", [(b"a,b\n1,2\n", "'question' column"), (None, "cannot read")])
def test_unusable_files(tmp_path, content, message):
    path = tmp_path / "in.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_batch_input(path)


def read(tmp_path, name: str, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return read_batch_input(path)


def test_a_50_mb_csv_field_is_one_bad_row_and_the_rest_runs(tmp_path):
    big = b"x" * (50 * 2**20)
    batch = read(tmp_path, "in.csv", b'question,id\nfirst?,a\n"' + big + b'",b\nthird?,c\n')
    assert [q.id for q in batch.questions] == ["a", "c"]
    assert batch.problems == ["line 3: unreadable CSV (field larger than field limit (131072))"]


def test_an_oversized_jsonl_field_is_held_to_the_same_limit(tmp_path):
    rows = [{"question": "x" * (MAX_FIELD_CHARS + 1)}, {"question": "ok?", "id": "y" * (MAX_FIELD_CHARS + 1)},
            {"question": "fine?"}]
    batch = read(tmp_path, "in.jsonl", "\n".join(map(json.dumps, rows)).encode())
    assert [q.question for q in batch.questions] == ["fine?"]
    assert batch.problems == ["line 1: the question is 131,073 characters; the limit is 131,072",
                              "line 2: the id is 131,073 characters; the limit is 131,072"]


def test_a_100k_deep_json_row_is_one_bad_row(tmp_path):
    deep = b'{"question": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    batch = read(tmp_path, "in.jsonl", deep + b'\n{"question": "next?"}\n')
    assert [q.question for q in batch.questions] == ["next?"] and batch.problems == ["line 1: JSON nested too deeply"]


@pytest.mark.parametrize("row, named", [
    ({"question": "why \ud800?"}, "the question holds a lone surrogate (\\ud800)"),
    ({"question": "ok?", "id": "a\udfff"}, "the id holds a lone surrogate (\\udfff)"),
    ({"question": "ok?", "answer": "\udc80"}, "the answer holds a lone surrogate (\\udc80)"),
])
def test_a_lone_surrogate_in_a_row_is_that_rows_error(tmp_path, row, named):
    text = json.dumps(row) + "\n" + json.dumps({"question": "fine?", "id": "z"})  # ensure_ascii keeps \ud800 escaped
    batch = read(tmp_path, "in.jsonl", text.encode())
    assert [q.id for q in batch.questions] == ["z"] and batch.problems == [f"line 1: {named}, which is not text"]


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_with_a_byte_order_mark_are_read(tmp_path, codec):
    text = "question,answer,id\r\n\"Café, how many?\",3,q1\r\nSecond?,4,q2\r\n"
    bom = {"utf-16": "", "utf-16-be": "\ufeff", "utf-32": ""}[codec]  # utf-16/-32 codecs write the mark
    batch = read(tmp_path, "in.csv", (bom + text).encode(codec))
    assert [(q.id, q.question, q.answer) for q in batch.questions] == [("q1", "Café, how many?", "3"), ("q2", "Second?", "4")]
    assert batch.problems == []


@pytest.mark.parametrize("content, message", [
    ("question\nq?\n".encode("utf-16-le"), "UTF-16 or UTF-32 text without a byte-order mark"),
    (codecs.BOM_UTF16_LE + b"q\x00\x00\xd8", "UTF-16 byte-order mark but is not valid UTF-16 text"),
    (b'"' + b"h" * 200_000 + b'"\nq?\n', "the CSV header row is unreadable"),
])
def test_a_file_that_is_not_readable_text_is_one_clear_error(tmp_path, content, message):
    with pytest.raises(ValueError, match=message):
        read(tmp_path, "in.csv", content)


def test_a_utf8_bom_does_not_cost_the_first_jsonl_row(tmp_path):
    batch = read(tmp_path, "in.jsonl", codecs.BOM_UTF8 + b'{"question": "first?"}\r\n{"question": "second?"}\r\n')
    assert [q.question for q in batch.questions] == ["first?", "second?"] and batch.problems == []


def test_ids_are_text_so_1_and_quoted_1_collide_with_a_clear_message(tmp_path):
    rows = [{"id": 1, "question": "a?"}, {"id": "1", "question": "b?"}, {"id": "line-4", "question": "c?"},
            {"question": "d?"}, {"id": 0, "question": "e?"}, {"id": True, "question": "f?"}, {"id": 1.5, "question": "g?"},
            {"question": ["h"]}, {"question": "i?", "answer": {"x": 1}}]
    batch = read(tmp_path, "in.jsonl", "\n".join(map(json.dumps, rows)).encode())
    assert [q.id for q in batch.questions] == ["1", "line-4", "0"]
    assert batch.problems == [
        'line 2: duplicate id \'1\' (also on line 1; ids are text, so 1 and "1" are the same id)',
        "line 4: its default id 'line-4' is already taken on line 3; give the row an id",
        "line 6: the id must be a string or an integer, not true",
        "line 7: the id must be a string or an integer, not 1.5",
        "line 8: the question must be text, not list",
        "line 9: the answer must be a string or a number"]


def test_a_huge_json_integer_is_one_bad_row(tmp_path):
    batch = read(tmp_path, "in.jsonl", b'{"question": "q?", "id": ' + b"9" * 5000 + b'}\n{"question": "ok?"}\n')
    assert [q.question for q in batch.questions] == ["ok?"] and batch.problems[0].startswith("line 1: unreadable JSON")
