"""Datasets as people have them: GSM8K-style answers through --answer-pattern, other column names, Parquet and
Arrow files, and local Hugging Face `datasets` folders (save_to_disk, a cache of .arrow shards, data files)."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.batch_input import Fields, read_batch_input
from app.batch_tables import offline_datasets

GSM8K = Fields(answer_pattern=r"####\s*(.+)$")
ROWS = [{"question": "Natalia sold 48 clips in April and half as many in May. How many in all?",
         "answer": "In May she sold 48/2 = <<48/2=24>>24 clips.\nIn all 48+24 = <<48+24=72>>72.\n#### 72"},
        {"question": "Weng earns $12 an hour. How much for 50 minutes?",
         "answer": "12/60 = $<<12/60=0.2>>0.2 per minute.\n0.2 x 50 = $<<0.2*50=10>>10.\n#### 10"},
        {"question": "Betty needs $100 and has half. How much more? ", "answer": "It is 1,000 cents.\n####  1,000 \n"}]


def test_the_answer_pattern_reads_gsm8k_answers(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [*ROWS, {"question": "No marker?", "answer": "just 5"}]) + "\n")
    source = read_batch_input(path, GSM8K)
    assert [q.answer for q in source.questions] == ["72", "10", "1,000"]
    assert source.problems == [r"line 4: the answer does not match --answer-pattern '####\s*(.+)$'"]
    plain = read_batch_input(path)  # without the pattern the whole worked solution is the expected answer
    assert plain.questions[0].answer == ROWS[0]["answer"]


def test_a_bad_pattern_is_one_clear_error(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        read_batch_input(path, Fields(answer_pattern="####(("))


def test_other_column_names_and_nested_fields(tmp_path):
    path = tmp_path / "squad.jsonl"
    rows = [{"uid": 7, "prompt": "Where is the Eiffel Tower?", "answers": {"text": ["Paris", "in Paris"]}},
            {"uid": 8, "prompt": "Capital of Italy?", "answers": {"text": []}}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    source = read_batch_input(path, Fields(question="prompt", answer="answers.text", id="uid"))
    assert [(q.id, q.question, q.answer) for q in source.questions] == [("7", rows[0]["prompt"], "Paris"),
                                                                       ("8", "Capital of Italy?", None)]
    csv = tmp_path / "in.csv"
    csv.write_text("Prompt,Gold\nWhat is 2+2?,4\n")
    assert read_batch_input(csv, Fields(question="Prompt", answer="Gold")).questions[0].answer == "4"


def test_parquet_with_its_own_columns(tmp_path):
    path = tmp_path / "test.parquet"
    pq.write_table(pa.table({"idx": [1, 2, 2], "problem": [r["question"] for r in ROWS],
                             "solution": [r["answer"] for r in ROWS]}), path)
    source = read_batch_input(path, Fields(question="problem", answer="solution", id="idx", answer_pattern=GSM8K.answer_pattern))
    assert [(q.id, q.answer) for q in source.questions] == [("1", "72"), ("2", "10")]
    assert source.problems[0].startswith("row 3: duplicate id '2' (also on row 2") and len(source.sha256) == 64


def test_arrow_files_and_streams(tmp_path):
    table = pa.table({"question": ["One?", "Two?"], "answer": [1, 2.5]})
    feather, stream = tmp_path / "q.arrow", tmp_path / "s.arrow"
    with pa.ipc.new_file(str(feather), table.schema) as writer:
        writer.write_table(table)
    with pa.ipc.new_stream(str(stream), table.schema) as writer:
        writer.write_table(table)
    for path in (feather, stream):
        assert [(q.id, q.answer) for q in read_batch_input(path).questions] == [("row-1", "1"), ("row-2", "2.5")]
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="cannot read broken.parquet as parquet"):
        read_batch_input(tmp_path / "broken.parquet")


def gsm8k_dataset_dict():
    datasets = offline_datasets()
    return datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:2]),
                                 "test": datasets.Dataset.from_list(ROWS[2:])})


def test_a_save_to_disk_folder_and_its_splits(tmp_path):
    folder = tmp_path / "gsm8k"
    gsm8k_dataset_dict().save_to_disk(str(folder))
    with pytest.raises(ValueError, match="splits train, test: choose one with --split"):
        read_batch_input(folder, GSM8K)
    train = read_batch_input(folder, Fields(answer_pattern=GSM8K.answer_pattern, split="train"))
    assert [q.answer for q in train.questions] == ["72", "10"] and train.path.name == "gsm8k"
    test = read_batch_input(folder, Fields(answer_pattern=GSM8K.answer_pattern, split="test"))
    assert [q.answer for q in test.questions] == ["1,000"] and test.sha256 != train.sha256
    with pytest.raises(ValueError, match="no split 'dev'; it has train, test"):
        read_batch_input(folder, Fields(split="dev"))


def test_a_datasets_cache_folder_of_arrow_shards(tmp_path):
    datasets = offline_datasets()
    version = tmp_path / "cache" / "openai___gsm8k" / "main" / "0.0.0" / "e53f0a5"
    version.mkdir(parents=True)
    shards = {"gsm8k-train-00000-of-00002.arrow": ROWS[:1], "gsm8k-train-00001-of-00002.arrow": ROWS[1:2],
              "gsm8k-test.arrow": ROWS[2:]}  # what load_dataset leaves in its cache: NAME-SPLIT[-i-of-n].arrow
    for name, rows in shards.items():
        table = pa.Table.from_pylist(rows)
        with pa.ipc.new_stream(str(version / name), table.schema) as writer:
            writer.write_table(table)
    (version / "dataset_info.json").write_text("{}")
    source = read_batch_input(tmp_path / "cache", Fields(answer_pattern=GSM8K.answer_pattern, split="train"))
    assert [q.answer for q in source.questions] == ["72", "10"]
    assert datasets.config.HF_HUB_OFFLINE  # nothing can be downloaded


def test_a_folder_of_data_files_is_read_offline(tmp_path):
    folder = tmp_path / "repo" / "main"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(ROWS), folder / "test-00000-of-00001.parquet")
    source = read_batch_input(tmp_path / "repo", GSM8K)
    assert [q.answer for q in source.questions] == ["72", "10", "1,000"]
    with pytest.raises(ValueError, match="holds no dataset"):
        (tmp_path / "empty").mkdir()
        read_batch_input(tmp_path / "empty")
