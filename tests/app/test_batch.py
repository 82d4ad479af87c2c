"""`reason batch`: OUT lines, stored runs, a summary, bad rows, and resume after a killed process."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import cli
from app.settings import Settings
from app.store import Store


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("REASON_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def write_input(path: Path, n: int, bad_rows: bool = False) -> Path:
    lines = [json.dumps({"id": f"q{i}", "question": f"Tom has {i} apples and buys 2 more. How many?", "answer": str(i + 2)})
             for i in range(n)]
    if bad_rows:
        lines[1:1] = ["{not json", json.dumps({"answer": "1"})]
    path.write_text("\n".join(lines) + "\n")
    return path


def out_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_batch_writes_out_stores_runs_and_summarises(home, tmp_path, tiny_model):
    source, out = write_input(tmp_path / "in.jsonl", 3, bad_rows=True), tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["batch", str(source), "--strategy", "direct", "--strategy", "cot", "--out", str(out),
                                      "--model", tiny_model, "--max-tokens", "6", "--concurrency", "2"])
    assert result.exit_code == 0, result.output
    assert "skipped line 2: broken JSON" in result.output and "skipped line 3: no question" in result.output
    records = out_records(out)
    assert sorted((r["strategy"], r["id"]) for r in records) == sorted((s, f"q{i}") for s in ("direct", "cot") for i in range(3))
    assert set(records[0]) >= {"id", "question", "expected", "predicted", "correct", "status", "tokens", "duration_ms", "run_id"}
    assert "direct" in result.output and "accuracy" in result.output
    store = Store.open(Settings.from_env())
    batch = store.list_batches()[0]
    assert batch["status"] == "finished" and batch["done"] == 6
    run = store.get_run(records[0]["run_id"])
    assert run["batch_id"] == batch["id"] and run["steps"] and run["status"] in ("ok", "no_answer")


def test_resume_after_a_killed_batch_runs_only_the_rest(home, tmp_path, tiny_model):
    source, out = write_input(tmp_path / "in.jsonl", 8), tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "app.cli", "batch", str(source), "--strategy", "cot", "--out", str(out),
               "--model", tiny_model, "--max-tokens", "40", "--concurrency", "1"]
    process = subprocess.Popen(command, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 2):
        time.sleep(0.2)  # polling the OUT file the batch writes, not synchronising on time
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    done_before = {r["id"] for r in out_records(out)}
    assert 2 <= len(done_before) < 8, "the batch must be killed mid-run"
    store = Store.open(Settings.from_env())
    batch_id = store.list_batches()[0]["id"]
    resumed = CliRunner().invoke(cli, ["batch", str(source), "--strategy", "cot", "--out", str(out), "--model", tiny_model,
                                       "--max-tokens", "40", "--resume", batch_id])
    assert resumed.exit_code == 0, resumed.output
    ids = [r["id"] for r in out_records(out)]
    assert sorted(ids) == sorted(f"q{i}" for i in range(8)), "every question exactly once"
    runs = store.search_runs(batch_id=batch_id, limit=100)
    assert len(runs) == 8 and all(r["status"] != "running" for r in runs)
    assert store.get_batch(batch_id)["status"] == "finished"


def test_a_run_stored_before_a_kill_reached_out_gets_its_line_on_resume(home, tmp_path, tiny_model):
    """A run is stored before its OUT line is written: a kill in between (here: OUT loses its last records,
    the last one cut mid-line) must not lose those questions from OUT, nor run them again."""
    source, out = write_input(tmp_path / "in.jsonl", 4), tmp_path / "out.jsonl"
    args = ["batch", str(source), "--strategy", "cot", "--out", str(out), "--model", tiny_model, "--max-tokens", "6"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    lines = out.read_text().splitlines(keepends=True)
    out.write_text(lines[0] + lines[1][:25])  # as if killed after storing all four, while writing the second line
    store = Store.open(Settings.from_env())
    batch_id = store.list_batches()[0]["id"]
    resumed = CliRunner().invoke(cli, [*args, "--resume", batch_id])
    assert resumed.exit_code == 0, resumed.output
    records = out_records(out)
    assert sorted(r["id"] for r in records) == [f"q{i}" for i in range(4)], "every question exactly once"
    runs = store.search_runs(batch_id=batch_id, limit=100)
    assert len(runs) == 4 and {r["run_id"] for r in records} == {r["id"] for r in runs}  # nothing ran again
    by_id = {r["id"]: r for r in runs}
    for record in records:
        run = by_id[record["run_id"]]
        assert (record["predicted"], record["status"], record["tokens"]) == (
            run["answer"], run["status"], run["prompt_tokens"] + run["completion_tokens"])


def test_resume_refuses_another_input_file(home, tmp_path, tiny_model):
    source, out = write_input(tmp_path / "in.jsonl", 1), tmp_path / "out.jsonl"
    CliRunner().invoke(cli, ["batch", str(source), "--strategy", "direct", "--out", str(out), "--model", tiny_model,
                             "--max-tokens", "4"])
    batch_id = Store.open(Settings.from_env()).list_batches()[0]["id"]
    other = write_input(tmp_path / "other.jsonl", 2)
    result = CliRunner().invoke(cli, ["batch", str(other), "--strategy", "direct", "--out", str(out), "--model", tiny_model,
                                      "--resume", batch_id])
    assert result.exit_code == 1 and "different input file" in result.output


@pytest.mark.slow
def test_batch_on_the_default_model(home, tmp_path):
    source, out = tmp_path / "word_problems.jsonl", tmp_path / "out.jsonl"
    rows = [{"id": "a", "question": "A shop sells 12 pens a day. How many pens does it sell in 5 days?", "answer": "60"},
            {"id": "b", "question": "Mia had 40 stickers and gave away 15. How many are left?", "answer": "25"}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(cli, ["batch", str(source), "--strategy", "cot", "--strategy", "pal", "--out", str(out),
                                      "--max-tokens", "96"])
    assert result.exit_code == 0, result.output
    assert len(out_records(out)) == 4 and "cot" in result.output and "pal" in result.output
