"""`reason runs fork | diff | replay` end to end on a tiny model: JSON shapes, what `runs show` says of a fork,
refusals with a clear message."""
import json

import pytest
from click.testing import CliRunner

from app.cli import cli


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.setenv("REASON_HOME", str(tmp_path / "home"))
    return CliRunner()


def invoke_json(runner, *args) -> dict:
    result = runner.invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture
def parent(runner, tiny_model) -> str:
    return invoke_json(runner, "ask", "How many legs do 3 spiders have?", "--strategy", "cot", "--model", tiny_model,
                       "--max-tokens", "6")["run_id"]


def test_fork_replaces_a_step_and_says_so(runner, tiny_model, parent):
    forked = invoke_json(runner, "runs", "fork", parent, "--at", "0", "--replace", "3 spiders have 24 legs. The answer is 24.",
                         "--model", tiny_model)
    assert (forked["parent_run_id"], forked["forked_at"], forked["answer"]) == (parent, 0, "24")
    assert forked["lineage"]["kind"] == "fork" and forked["lineage"]["edited"] is True
    shown = runner.invoke(cli, ["runs", "show", forked["run_id"]]).output
    assert f"fork of {parent} at step 0 (edited)" in shown and "[edited]" in shown
    difference = invoke_json(runner, "runs", "diff", parent, forked["run_id"])
    assert difference["first_divergence"]["step"] == 0 and difference["steps"][0]["equal"] is False
    text = runner.invoke(cli, ["runs", "diff", parent, forked["run_id"]]).output
    assert "first divergence: step 0 (output)" in text and "≠ llm" in text


def test_fork_with_other_sampling_and_a_replace_file(runner, tiny_model, parent, tmp_path):
    edit = tmp_path / "thought.txt"
    edit.write_text("Each spider has 8 legs, so", encoding="utf-8")
    forked = invoke_json(runner, "runs", "fork", parent, "--at", "0", "--replace-file", str(edit), "--continue",
                         "--temperature", "0.8", "--seed", "5", "--model", tiny_model)
    assert forked["lineage"]["kind"] == "branch" and forked["lineage"]["changed"]["sampling"] == {"temperature": 0.8, "seed": 5}
    step = invoke_json(runner, "runs", "show", forked["run_id"])["steps"][0]
    assert step["output"].startswith("Each spider has 8 legs, so") and step["meta"]["continued"] is True
    assert "(edited, then continued)" in runner.invoke(cli, ["runs", "show", forked["run_id"]]).output


def test_a_replay_of_a_deterministic_run_is_identical(runner, tiny_model):
    parent = invoke_json(runner, "ask", "How many legs do 3 spiders have?", "--strategy", "cot", "--model", tiny_model,
                         "--max-tokens", "6", "--temperature", "0.9", "--seed", "3", "--deterministic")["run_id"]
    again = invoke_json(runner, "runs", "replay", parent, "--model", tiny_model)
    assert again["identical"] is True and again["lineage"]["deterministic"] is True
    assert again["lineage"]["first_divergence"] is None and again["parent_run_id"] == parent
    shown = runner.invoke(cli, ["runs", "show", again["run_id"]]).output
    assert f"replay of {parent}: identical token for token (deterministic)" in shown
    other = invoke_json(runner, "runs", "replay", parent, "--seed", "4", "--model", tiny_model)
    assert other["lineage"]["changed"] == {"sampling": {"seed": 4}}


@pytest.mark.parametrize("args, message", [
    (["--at", "5"], "out of range"),
    (["--at", "0", "--continue"], "--continue needs the text"),
    (["--at", "0", "--replace", "a", "--replace-file", "/dev/null"], "not both"),
])
def test_bad_forks_are_refused_clearly(runner, tiny_model, parent, args, message):
    result = runner.invoke(cli, ["runs", "fork", parent, *args, "--model", tiny_model])
    assert result.exit_code != 0 and message in result.output


def test_diff_of_an_unknown_run_says_so(runner, parent):
    result = runner.invoke(cli, ["runs", "diff", parent, "nope"])
    assert result.exit_code != 0 and "no run with id nope" in result.output
