import json
import re
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from app.bench.engine import QUICK, few_shot_prefix, format_table
from app.bench.questions import SHIPPED_QUESTIONS, load_questions, read_questions
from app.cli import cli

METRICS = {"prefill_tok_s", "decode_tok_s", "ttft_s", "batch_tok_s", "peak_rss_bytes", "load_s"}


def test_quick_bench_runs_both_sides_on_the_same_work(tiny_model):
    result = CliRunner().invoke(cli, ["bench", "engine", "--quick", "--json", "--model", tiny_model])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for side in ("ours", "llamacpp"):
        assert METRICS <= report[side].keys() and all(report[side][k] > 0 for k in METRICS)
        # EOS is masked on both sides, so every request runs to its token budget
        assert report[side]["decode_tokens"] == QUICK.new_tokens
        assert report[side]["batch_generated_tokens"] == QUICK.batch_size * QUICK.new_tokens
    # ours maps the weight cache (as `reason` commands do); its first load, which packs, is timed before
    assert report["ratios"].keys() == METRICS | {"first_load_s"} and all(r > 0 for r in report["ratios"].values())
    assert report["ratios"]["batch_tok_s"] == report["ours"]["batch_tok_s"] / report["llamacpp"]["batch_tok_s"]
    assert report["workload"]["few_shot_prefix_tokens"] > 0 and report["gguf_bytes"] > 0
    assert "time to first token" in format_table(report) and "ours packing (first load)" in format_table(report)


def _word_engine():
    """Tokens are words; the chat template joins the contents."""
    render = lambda messages, add_generation_prompt=True: " ".join(m["content"] for m in messages)  # noqa: E731
    return SimpleNamespace(tokenizer=SimpleNamespace(encode=str.split), apply_chat_template=render)


def test_few_shot_prefix_repeats_exemplars_up_to_the_target():
    engine = _word_engine()
    once = few_shot_prefix(engine, 0)
    longer = few_shot_prefix(engine, 600)
    words = lambda messages: len(engine.apply_chat_template(messages).split())  # noqa: E731
    assert once[0]["role"] == "system" and len(once) == 1 + 2 * 4  # the CoT template's four exemplars, once
    assert words(longer) >= 600 > words(longer[:-2]) and longer[1:9] == once[1:9]


def test_questions_fall_back_to_generated_arithmetic(tmp_path):
    questions, source = load_questions(5, tmp_path / "absent.jsonl")
    assert len(questions) == 5 and source == "generated arithmetic"
    (tmp_path / "q.jsonl").write_text('{"question": "What is 2 + 2?"}\n')
    questions, source = load_questions(3, tmp_path / "q.jsonl")
    assert questions[0] == "What is 2 + 2?" and len(questions) == 3 and source == "q.jsonl (1)"


def test_the_shipped_questions_come_with_the_package_and_have_answers():
    from prompts.scoring import score

    lines = [json.loads(line) for line in SHIPPED_QUESTIONS.read_text(encoding="utf-8").splitlines()]
    assert 16 <= len(lines) == len(read_questions(SHIPPED_QUESTIONS)) == len({r["question"] for r in lines})
    assert all(score(r["answer"], r["answer"]).numeric for r in lines)
    questions, source = load_questions(len(lines) + 2)
    assert questions[:len(lines)] == [r["question"] for r in lines] and source == f"questions.jsonl ({len(lines)})"


@pytest.mark.parametrize("text, problem", [
    ('{"question": "ok"}\nnot json\n', ":2: not a JSON line"),
    ('{"text": "no question field"}\n', ':1: expected an object with a non-empty "question" string'),
    ('["a list"]\n', ":1: expected an object"),
])
def test_a_bad_questions_file_names_its_bad_line(tmp_path, text, problem):
    path = tmp_path / "q.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(problem)):
        load_questions(3, path)


def test_bench_engine_refuses_a_bad_questions_file_before_loading_a_model(tmp_path):
    (tmp_path / "q.jsonl").write_text("{oops\n")
    result = CliRunner().invoke(cli, ["bench", "engine", "--questions", str(tmp_path / "q.jsonl"),
                                      "--model", str(tmp_path / "absent.gguf")])
    assert result.exit_code == 1 and "q.jsonl:1: not a JSON line" in result.output
    result = CliRunner().invoke(cli, ["bench", "engine", "--questions", str(tmp_path / "absent.jsonl")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_the_options_table_shows_each_pair_and_the_acceptance_rate():
    from app.bench.engine_variants import format_variants

    variants = {"decode_plain_tok_s": 50.0, "decode_draft4_tok_s": 60.0, "decode_draft4_ratio": 1.2,
                "decode_draft4_ratios": [1.1, 1.2, None], "draft4_acceptance": 0.5}
    table = format_variants({"variants": variants})
    assert "1.20x  1.10 1.20 -" in table and "50%" in table
