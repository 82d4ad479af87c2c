"""The `reason` command line, run through click's test runner on real GGUF files."""
import json

import pytest
from click.testing import CliRunner

from app.cli import cli


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.setenv("REASON_HOME", str(tmp_path))
    return CliRunner()


def test_generate_prints_a_completion(runner, tiny_model):
    result = runner.invoke(cli, ["generate", "The quick brown fox", "--model", str(tiny_model), "--max-tokens", "5"])
    assert result.exit_code == 0, result.output
    assert result.output.strip()


def test_generate_with_chat_template_fallback(runner, tiny_model):
    result = runner.invoke(cli, ["generate", "Hi", "--chat", "--model", str(tiny_model), "--max-tokens", "3"])
    assert result.exit_code == 0, result.output


def test_model_info_json(runner, tiny_model):
    result = runner.invoke(cli, ["model-info", "--model", str(tiny_model), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["architecture"] == "llama" and info["vocab_kind"] == "llama"
    assert info["tensor_types"]["Q8_0"] > 0 and info["chat_template"] is False


@pytest.mark.parametrize("args, message", [
    (["generate", "hi", "--model", "/no/such/model.gguf"], "model file not found"),
    (["generate", "   "], "the prompt is empty"),
    (["generate", "hi", "--max-tokens", "0"], "0"),
    (["model-info", "--model", "/no/such/model.gguf"], "model file not found"),
])
def test_bad_input_gets_a_clear_message(runner, args, message):
    result = runner.invoke(cli, args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_not_a_gguf_file(runner, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    result = runner.invoke(cli, ["model-info", "--model", str(path)])
    assert result.exit_code == 1 and "not a GGUF file" in result.output


@pytest.mark.slow
def test_generate_on_the_default_model(runner):
    result = runner.invoke(cli, ["generate", "The capital of France is", "--max-tokens", "8"])
    assert result.exit_code == 0, result.output
    assert "Paris" in result.output


@pytest.mark.parametrize("command", ["ask", "batch"])
def test_every_sampling_knob_is_a_flag_and_no_flag_went_missing(command):
    from engine.sampling import sampling_knobs

    flags = {opt for param in cli.commands[command].params for opt in param.opts}
    assert {f"--{knob.replace('_', '-')}" for knob in sampling_knobs()} <= flags
    assert {"--temperature", "--top-p", "--top-k", "--min-p", "--repetition-penalty", "--max-tokens", "--seed",
            "--backend", "--base-url", "--api-key"} <= flags


@pytest.mark.parametrize("args, message", [(["--top-p", "0"], "--top-p"), (["--max-tokens", "0"], "--max-tokens"),
                                           (["--frequency-penalty", "3"], "--frequency-penalty"),
                                           (["--backend", "magic"], "--backend")])
def test_sampling_flags_keep_their_ranges(runner, args, message):
    result = runner.invoke(cli, ["ask", "q", *args])
    assert result.exit_code == 2 and message in result.output


def test_cache_lists_the_packed_weights_a_load_kept_and_clears_them(runner, tiny_model, tmp_path, monkeypatch):
    import threading

    monkeypatch.delenv("REASON_WEIGHT_CACHE")  # the default: weights/ under REASON_HOME
    assert runner.invoke(cli, ["generate", "Hi", "--model", str(tiny_model), "--max-tokens", "2"]).exit_code == 0
    for thread in threading.enumerate():
        if thread.name == "engine-weight-cache":
            thread.join()
    listed = runner.invoke(cli, ["cache"])
    assert listed.exit_code == 0, listed.output
    assert str(tiny_model) in listed.output and "1 cached model, " in listed.output
    doc = json.loads(runner.invoke(cli, ["cache", "--json"]).output)
    assert doc["folder"] == str(tmp_path / "weights") and doc["entries"][0]["bytes"] == doc["bytes"] > 0
    cleared = runner.invoke(cli, ["cache", "clear"])
    assert cleared.exit_code == 0 and cleared.output.startswith("removed ")
    assert "0 cached models" in runner.invoke(cli, ["cache"]).output
    monkeypatch.setenv("REASON_WEIGHT_CACHE", "off")
    off = runner.invoke(cli, ["cache"])
    assert off.exit_code == 1 and "the weight cache is off" in off.output
