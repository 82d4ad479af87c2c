"""`reason ask` and `reason wiki import` end to end (tiny model in the fast loop, the default model when slow)."""
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import cli

FIXTURES = Path(__file__).resolve().parents[1] / "prompts" / "fixtures"


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.setenv("REASON_HOME", str(tmp_path / "home"))
    return CliRunner()


def ask_json(runner, *args):
    result = runner.invoke(cli, ["ask", *args, "--json"])
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.output)


def assert_complete(trace, strategy):
    assert trace["strategy"] == strategy and trace["question"]
    assert trace["template_name"] and trace["template_version"] == 1 and trace["model_id"] and trace["backend"] == "engine"
    assert trace["status"] in ("ok", "no_answer", "error") and trace["duration_ms"] > 0
    llm = [s for s in trace["steps"] if s["kind"] == "llm"]
    assert llm and all(s["input"] and s["prompt_tokens"] > 0 and s["duration_ms"] > 0 for s in llm)


@pytest.mark.parametrize("strategy", ["direct", "cot"])
def test_ask_prints_a_trace_on_a_tiny_model(runner, tiny_model, strategy):
    trace = ask_json(runner, "How many legs do 3 spiders have?", "--strategy", strategy, "--model", tiny_model,
                     "--max-tokens", "8")
    assert_complete(trace, strategy)


def test_wiki_import_then_react_uses_the_offline_corpus(runner, tiny_model):
    result = runner.invoke(cli, ["wiki", "import", str(FIXTURES / "wiki_small.jsonl")])
    assert result.exit_code == 0 and "imported 10 pages" in result.output
    trace = ask_json(runner, "Where was Ilse Varga born?", "--strategy", "react", "--model", tiny_model, "--max-tokens", "12")
    assert_complete(trace, "react")


def test_offline_wiki_without_a_corpus_is_a_clear_error(runner, tiny_model):
    result = runner.invoke(cli, ["ask", "Who?", "--strategy", "react", "--wiki", "offline", "--model", tiny_model])
    assert result.exit_code == 1 and "reason wiki import" in result.output


def test_react_without_a_corpus_or_network_stops_before_it_starts(runner, tiny_model, monkeypatch):
    monkeypatch.setattr("app.tools.wikipedia_reachable", lambda: False)
    result = runner.invoke(cli, ["ask", "Who?", "--strategy", "react", "--model", tiny_model])
    assert result.exit_code == 1 and "cannot be reached" in result.output and "reason wiki import" in result.output


@pytest.mark.parametrize("args, message", [(["ask", " "], "the question is empty"),
                                           (["ask", "q", "--strategy", "magic"], "Invalid value"),
                                           (["ask", "q", "--template", "nope"], "no template named"),
                                           (["ask", "q", "--strategy", "pal", "--template", "cot"], "is for strategy 'cot'"),
                                           (["wiki", "import", "/no/such/file.jsonl"], "does not exist")])
def test_bad_input_is_refused_clearly(runner, tiny_model, args, message):
    result = runner.invoke(cli, [*args, "--model", tiny_model] if args[0] == "ask" else args)
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["direct", "cot", "pal", "react"])
def test_each_strategy_on_the_default_model_produces_a_complete_trace(runner, strategy):
    if strategy == "react":
        runner.invoke(cli, ["wiki", "import", str(FIXTURES / "wiki_small.jsonl")])
    question = "Where was Ilse Varga born?" if strategy == "react" else "Tom has 3 apples and buys 4 more. How many apples?"
    trace = ask_json(runner, question, "--strategy", strategy, "--max-tokens", "96")
    assert_complete(trace, strategy)
    if strategy == "pal":
        assert any(s["kind"] == "tool" and s["name"] == "sandbox" for s in trace["steps"])
    if strategy == "react":
        assert any(s["kind"] in ("tool", "parse_error") for s in trace["steps"])


def test_a_saved_template_version_is_used_and_recorded(runner, tiny_model, tmp_path):
    from prompts.template import shipped_template_body

    edited = tmp_path / "cot.yaml"
    body = shipped_template_body("cot").replace("version: 1", "version: 2")
    edited.write_text(body.replace("Think step by step", "Reason carefully"))
    saved = runner.invoke(cli, ["templates", "save", "cot", str(edited), "--note", "careful"])
    assert saved.exit_code == 0 and "saved cot@2" in saved.output
    assert ask_json(runner, "2+2?", "--strategy", "cot", "--model", tiny_model, "--max-tokens", "4")[
        "template_version"] == 1  # saving does not change what runs
    promoted = runner.invoke(cli, ["templates", "promote", "cot@2"])
    assert promoted.exit_code == 0 and "cot@2 is now the default" in promoted.output
    listed = runner.invoke(cli, ["templates", "list"])
    assert "cot              v1 (shipped), v2* (careful)" in listed.output
    trace = ask_json(runner, "2+2?", "--strategy", "cot", "--model", tiny_model, "--max-tokens", "4")
    assert (trace["template_name"], trace["template_version"]) == ("cot", 2)
    assert "Reason carefully" in trace["steps"][0]["input"]
    old = ask_json(runner, "2+2?", "--strategy", "cot", "--template", "cot@1", "--model", tiny_model, "--max-tokens", "4")
    assert old["template_version"] == 1 and "Think step by step" in old["steps"][0]["input"]
    shown = runner.invoke(cli, ["runs", "show", trace["run_id"]])
    assert shown.exit_code == 0 and "template cot v2" in shown.output


def test_invalid_template_is_refused_and_nothing_saved(runner, tmp_path):
    broken = tmp_path / "cot.yaml"
    broken.write_text("name: cot\nversion: 2\nstrategy: cot\nuser: 'no slot'\n")
    result = runner.invoke(cli, ["templates", "save", "cot", str(broken)])
    assert result.exit_code == 1 and "{question}" in result.output
    assert "v2" not in runner.invoke(cli, ["templates", "list"]).output
