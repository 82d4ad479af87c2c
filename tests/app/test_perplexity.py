"""`reason perplexity`: ours against llama.cpp on the same file and text."""
import json

from click.testing import CliRunner

from app.cli import cli
from app.perplexity import default_text, reference_perplexity
from engine import load_model
from tests.engine.tiny_gguf import CORPUS


def test_float32_agrees_with_llama_cpp_within_one_percent(tiny_model):
    ours = load_model(tiny_model, dtype="float32").perplexity(CORPUS, ctx=128)
    theirs = reference_perplexity(tiny_model, CORPUS, 128)
    assert ours.tokens_scored == theirs.tokens_scored and ours.windows >= 2
    assert abs(ours.value / theirs.value - 1) < 0.01


def test_the_command_reports_both_and_their_ratio(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("REASON_HOME", str(tmp_path))
    text = tmp_path / "text.txt"
    text.write_text(CORPUS, encoding="utf-8")
    result = CliRunner().invoke(cli, ["perplexity", str(text), "--model", tiny_model, "--ctx", "128", "--reference",
                                      "--json", "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["ours"]["windows"] == report["llama_cpp"]["windows"] >= 2
    assert abs(report["ratio"] - 1) < 0.01


def test_a_text_shorter_than_a_window_is_a_clear_error(tiny_model, tmp_path):
    text = tmp_path / "short.txt"
    text.write_text("too short", encoding="utf-8")
    result = CliRunner().invoke(cli, ["perplexity", str(text), "--model", tiny_model])
    assert result.exit_code != 0 and "fewer than one window" in result.output


def test_the_shipped_text_is_long_enough_for_three_windows_of_512():
    assert len(default_text().split()) > 1200
