"""`reason batch` as an experiment (sweeps, --fail-under, datasets), `reason compare` and `reason batches`,
against fake OpenAI-compatible servers (fast and deterministic: the model's answer is the server's reply)."""
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from app.cli import cli
from app.cli_experiments import FAIL_UNDER_EXIT
from app.settings import Settings
from app.store import Store
from tests.app.fake_openai import MODEL, fake_openai_server


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("REASON_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REASON_BASE_URL", raising=False)
    return tmp_path / "home"


def questions(path: Path, answers: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Question {i}?", "answer": a}) + "\n"
                            for i, a in enumerate(answers)))
    return path


def reason(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def batch_on(server, source: Path, out: Path, *args: str):
    return reason("batch", source, "--out", out, "--backend", "openai", "--base-url", server.base_url,
                  "--model", MODEL, "--retries", "0", *args)


def store() -> Store:
    return Store.open(Settings.from_env())


def test_fail_under_gates_on_every_configuration(home, tmp_path):
    source = questions(tmp_path / "in.jsonl", ["5", "5", "5", "6"])  # the server always says 5: 75%
    with fake_openai_server() as server:
        passed = batch_on(server, source, tmp_path / "a.jsonl", "--strategy", "direct", "--fail-under", "0.75")
        failed = batch_on(server, source, tmp_path / "b.jsonl", "--strategy", "direct", "--strategy", "cot",
                          "--fail-under", "0.8")
    assert passed.exit_code == 0, passed.output
    assert "PASS" in passed.output and "75.0%" in passed.output
    assert failed.exit_code == FAIL_UNDER_EXIT, failed.output
    assert "FAIL: below --fail-under 80.0%: direct (75.0%), cot (75.0%)" in failed.output


def test_a_sweep_of_templates_and_sampling_from_a_config_file(home, tmp_path):
    source = questions(tmp_path / "in.jsonl", ["5", "7"])
    config = tmp_path / "sweep.yaml"
    config.write_text("sweep:\n  template: [direct@1, cot@1]\n  temperature: [0.0, 0.5]\n"
                      "configurations:\n  - {name: cot-sc3, strategy: cot, self_consistency: 3, sc_stop: overtake}\n")
    with fake_openai_server() as server:
        result = batch_on(server, source, tmp_path / "out.jsonl", "--config", config)
        bodies = [r["body"] for r in server.requests if r["path"] == "/v1/chat/completions"]
    assert result.exit_code == 0, result.output
    names = ["direct@1/temperature=0.0", "direct@1/temperature=0.5", "cot@1/temperature=0.0", "cot@1/temperature=0.5",
             "cot-sc3"]
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted((r["config"], r["id"]) for r in records) == sorted((n, q) for n in names for q in ("q0", "q1"))
    assert {b.get("temperature") for b in bodies} >= {0.0, 0.5}
    batch = store().list_batches()[0]
    assert [c["name"] for c in batch["settings"]["configurations"]] == names
    run = store().get_run(next(r["run_id"] for r in records if r["config"] == "cot-sc3"))
    assert run["config"] == "cot-sc3" and (run["counters"]["paths"], run["counters"]["path_budget"]) == (2, 3)  # decided
    for name in names:
        assert f"{name} " in result.output and "50.0%" in result.output  # every configuration's row, with its interval


def test_compare_two_batches_and_list_them(home, tmp_path):
    source = questions(tmp_path / "in.jsonl", ["5", "5", "7", "7", "5"])
    with fake_openai_server(reply="The answer is 5.") as five:
        assert batch_on(five, source, tmp_path / "a.jsonl", "--strategy", "direct").exit_code == 0
    with fake_openai_server(reply="The answer is 7.") as seven:
        assert batch_on(seven, source, tmp_path / "b.jsonl", "--strategy", "direct").exit_code == 0
    newer, older = (b["id"] for b in store().list_batches())
    result = reason("compare", older, newer[-8:], "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [s["accuracy"] for s in data["sides"]] == [0.6, 0.4] and [s["n"] for s in data["sides"]] == [5, 5]
    assert (data["wins"], data["losses"], data["ties"]) == (3, 2, 0)
    assert data["p_value"] == pytest.approx(1.0)  # 3 to 2 discordant: nothing to see
    assert data["sides"][0]["ci95"] == pytest.approx([0.2307, 0.8824], abs=1e-4)
    assert {c["question_id"] for c in data["changed"]} == {f"q{i}" for i in range(5)}
    change = data["changed"][0]
    assert store().get_run(change["a"]["run_id"])["batch_id"] == older
    assert store().get_run(change["b"]["run_id"])["batch_id"] == newer
    text = reason("compare", f"{older}:direct", newer)
    assert "A wins 3, loses 2, ties 0; exact McNemar p = 1" in text.output
    listing = json.loads(reason("batches", "--json").output)
    assert [b["id"] for b in listing] == [newer, older]
    assert listing[1]["configurations"] == [{"config": "direct", "n": 5, "accuracy": 0.6,
                                             "ci95": pytest.approx([0.2307, 0.8824], abs=1e-4)}]
    assert listing[0]["status"] == "finished" and listing[0]["done"] == 5 and listing[0]["accuracy"] == 0.4
    assert newer in reason("batches").output


def test_compare_says_what_to_name(home, tmp_path):
    source = questions(tmp_path / "in.jsonl", ["5"])
    with fake_openai_server() as server:
        batch_on(server, source, tmp_path / "a.jsonl", "--strategy", "direct", "--strategy", "cot")
    batch_id = store().list_batches()[0]["id"]
    result = reason("compare", batch_id, f"{batch_id}:cot")
    assert result.exit_code == 1 and "has configurations direct, cot: name one" in result.output
    assert "no configuration 'pal'" in reason("compare", f"{batch_id}:direct", f"{batch_id}:pal").output
    assert "no batch 'nope'" in reason("compare", "nope", batch_id).output


def test_a_parquet_dataset_with_gsm8k_answers(home, tmp_path):
    path = tmp_path / "gsm8k.parquet"
    pq.write_table(pa.table({"question": ["A?", "B?"], "answer": ["1 + 4 = 5\n#### 5", "3 + 3 = 6\n#### 6"]}), path)
    with fake_openai_server() as server:
        result = batch_on(server, path, tmp_path / "out.jsonl", "--strategy", "direct", "--answer-pattern", r"####\s*(.+)$")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted((r["id"], r["expected"], r["correct"]) for r in records) == [("row-1", "5", True), ("row-2", "6", False)]
    assert store().list_batches()[0]["settings"]["fields"]["answer_pattern"] == r"####\s*(.+)$"


def test_nothing_to_run_is_a_clear_error(home, tmp_path):
    source = questions(tmp_path / "in.jsonl", ["5"])
    result = reason("batch", source, "--out", tmp_path / "out.jsonl")
    assert result.exit_code == 1 and "nothing to run: give --strategy or --template" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("sweep: {strategy: cot, temprature: 0.5}\n")
    result = reason("batch", source, "--out", tmp_path / "out.jsonl", "--config", bad)
    assert result.exit_code == 1 and "unknown sweep key 'temprature'" in result.output
