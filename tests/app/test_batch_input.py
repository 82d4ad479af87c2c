import pytest

from app.batch_input import read_batch_input


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
                              "line 8: duplicate id 'a'"]
    assert len(batch.sha256) == 64


def test_csv_with_header_and_bad_rows(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes("\ufeffQuestion,Answer,id\n\"How many, exactly?\",3,q1\n,5,q2\nPlain,,\n".encode() + b"bad \xff row,1,q4\n")
    batch = read_batch_input(path)
    assert [(q.id, q.question, q.answer) for q in batch.questions] == [("q1", "How many, exactly?", "3"), ("line-4", "Plain", None)]
    assert batch.problems == ["line 3: no question", "line 5: not UTF-8 text"]


@pytest.mark.parametrize("content, message", [(b"a,b\n1,2\n", "'question' column"), (None, "cannot read")])
def test_unusable_files(tmp_path, content, message):
    path = tmp_path / "in.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_batch_input(path)
