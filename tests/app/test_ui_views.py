"""What the web app's pages draw, without a browser: outcomes, trace cards, waterfall, tokens, prompt size, batch views."""
import json

import pytest

from app.settings import Settings
from app.tools import wiki_problem
from app.ui.batch_views import upload_check
from app.ui.batches import in_input_order
from app.ui.chat_run import final_status, reply_text
from app.ui.outcome import outcome_of
from app.ui.prompt_size import PrefillRate, prefill_progress, size_note
from app.ui.tokens import coloured_output, low_confidence
from app.ui.trace_view import render_run, step_label
from app.ui.waterfall import bars, waterfall


def step(idx, kind="llm", name="", output="", error=None, meta=None, duration_ms=100.0, tokens=(10, 5), **extra):
    return {"idx": idx, "kind": kind, "name": name, "input": extra.get("input", "prompt"), "output": output,
            "error": error, "meta": meta or {}, "duration_ms": duration_ms, "prompt_tokens": tokens[0],
            "completion_tokens": tokens[1]}


def run(steps=(), status="ok", answer="7", strategy="cot", **extra):
    return {"id": "r1", "strategy": strategy, "template_name": strategy, "template_version": 1, "model_id": "m",
            "backend": "engine", "status": status, "duration_ms": 1000.0, "prompt_tokens": 10, "completion_tokens": 5,
            "question": extra.pop("question", "How many?"), "answer": answer, "expected": None, "correct": None,
            "error": None, "counters": {}, "steps": list(steps), **extra}


@pytest.mark.parametrize("fields, key", [({"status": "ok"}, "ok"), ({"status": "ok", "correct": True}, "correct"),
                                         ({"status": "ok", "correct": False}, "wrong"), ({"status": "error"}, "error"),
                                         ({"status": "no_answer"}, "no_answer"), ({"status": "stopped"}, "stopped")])
def test_every_outcome_has_its_own_colour_and_mark(fields, key):
    assert outcome_of(fields).key == key


def test_a_failed_run_is_never_called_done_or_answered():
    for status in ("error", "stopped", "no_answer"):
        line = final_status(run(status=status, answer=None, error="E"), 2.0)
        assert f"outcome-{status}" in line and "done" not in line and "answered" not in line
    assert "answered" in final_status(run(), 2.0)


def test_a_stopped_reply_keeps_the_partial_text():
    assert reply_text(run(status="stopped", answer=None), "1. one\n2. two") == "1. one\n2. two …"
    assert reply_text(run(status="error", answer=None, error="ConnectionError: refused"), "") == "ConnectionError: refused"


@pytest.mark.parametrize("kind, name, strategy, label", [
    ("llm", "step 1", "react", "Thought"), ("tool", "search", "react", "Action"), ("llm", "program", "pal", "Program"),
    ("tool", "sandbox", "pal", "Sandbox output"), ("vote", "majority vote", "cot", "Vote"),
    ("llm", "reasoning", "cot", "Chain of thought"), ("llm", "answer", "direct", "Answer"),
    ("parse_error", "step 1", "react", "Parse error")])
def test_step_cards_are_labelled_by_what_they_are(kind, name, strategy, label):
    assert step_label(step(0, kind, name), strategy)[0] == label


def test_the_trace_escapes_model_text_and_shows_errors_reasoning_and_observations():
    steps = [step(0, output="<script>alert(1)</script> Search[x]\nAction 1: Search[Ilse]", meta={"reasoning": "hmm"}),
             step(1, "tool", "search", output="Ilse was born in Marenhold.", input="Ilse"),
             step(2, "tool", "sandbox", output=json.dumps({"value": None, "stdout": ""}), error="NameError: x")]
    html = render_run(run(steps, strategy="react"))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "Reasoning (the model" in html and "Observation" in html and "Action: Search[Ilse]" in html
    assert 'class="step kind-sandbox has-error"' in html and "NameError: x" in html
    assert "Q: How many?" in html and "Timing: 3 calls" in html


def test_a_stop_is_not_shown_as_an_error():
    html = render_run(run([step(0, output="1. 1", meta={"finish_reason": "stopped"})], status="stopped", answer=None,
                          error="stopped by the user"))
    assert "Run error" not in html and "stopped here by the user" in html and "outcome-stopped" in html


def test_a_tied_vote_says_it_is_a_tie():
    vote = step(2, "vote", "majority vote", output="9", input="['8', '9']",
                meta={"counts": {"8": 1, "9": 1}, "mass": {"8": -2.0, "9": -0.5}})
    html = render_run(run([step(0), step(1), vote]))
    assert "Tie: 8, 9 have 1 vote each" in html and "-0.5" in html
    assert "Tie" not in render_run(run([{**vote, "meta": {"counts": {"8": 2, "9": 1}}}]))


def test_sampled_paths_are_bars_that_start_together_with_their_own_lengths():
    paths = [step(i, meta={"started_at": 100.0}, duration_ms=ms) for i, ms in enumerate((900.0, 300.0))]
    sandbox = step(2, "tool", "sandbox", meta={"started_at": 101.0}, duration_ms=50.0)
    timed = bars([*paths, sandbox], [("Program", "program")] * 2 + [("Sandbox output", "sandbox")])
    assert [(b.start_s, b.seconds) for b in timed] == [(0.0, 0.9), (0.0, 0.3), (1.0, 0.05)]
    assert "5 tok · 5.6 tok/s" in waterfall(paths, [("Program", "program")] * 2)


def test_slow_rates_keep_a_decimal():  # a 7B on a CPU: 8 tokens in 19.5 s is 0.4 tok/s, not 0
    from app.ui.waterfall import tokens_per_second

    assert [tokens_per_second(8, 19.49), tokens_per_second(450, 10.0)] == ["0.4 tok/s", "45 tok/s"]


def test_steps_stored_without_a_start_follow_each_other():
    timed = bars([step(0, duration_ms=500.0), step(1, "tool", duration_ms=200.0)], [("A", "a"), ("B", "b")])
    assert [(b.start_s, b.seconds) for b in timed] == [(0.0, 0.5), (0.5, 0.2)]


def test_tokens_are_coloured_by_probability_with_alternatives():
    logprobs = [["The", -0.01, [["The", -0.01]]], [" answer", -2.3, [[" answer", -2.3], [" result", -0.5]]],
                [" is", -0.7, []], ["\n\n", -0.1, []]]  # the last one is the stop string, cut from the output
    html = coloured_output("The answer is", logprobs)
    assert html.count('class="tok') == 3 and "p-vlow" in html and "p-high" in html
    assert "&#x27; result&#x27; 61%" in html  # the alternative the model preferred
    assert coloured_output("Something else", logprobs) is None  # tokens that do not spell it: plain text instead
    assert low_confidence(logprobs) == 2


def test_prompt_size_warns_near_and_over_the_context():
    rate = PrefillRate(100.0)
    assert "near" not in size_note(1000, 8192, 256, 0, rate) and "~10 s to read" in size_note(1000, 8192, 256, 0, rate)
    assert "Near the context limit" in size_note(6500, 8192, 256, 1, rate)
    assert "Too long" in size_note(8000, 8192, 256, 0, rate)
    assert 'value="50"' in prefill_progress(1000, 5.0, rate)


def test_prefill_rate_learns_from_long_prompts_only():
    rate = PrefillRate(100.0)
    rate.learn(10, 5.0)  # too short to measure reading
    assert rate.tokens_per_s == 100.0
    rate.learn(1000, 2.0)
    assert 100.0 < rate.tokens_per_s < 500.0


def test_an_upload_is_checked_at_once_with_line_numbers(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?"}\nnot json\n{"answer": 2}\n')
    shown = upload_check(str(bad))
    assert "bad.jsonl: 1 usable question" in shown and "line 2: broken JSON" in shown and "line 3: no question" in shown
    empty = tmp_path / "none.jsonl"
    empty.write_text("nope\n")
    assert "nothing can run" in upload_check(str(empty)) and "outcome-error" in upload_check(str(empty))


def test_results_are_rewritten_in_input_order(tmp_path):
    out = tmp_path / "out.jsonl"
    done = [("q2", "cot"), ("q1", "direct"), ("q2", "direct"), ("q1", "cot")]  # as they finished
    out.write_text("".join(json.dumps({"id": q, "strategy": s}) + "\n" for q, s in done))
    in_input_order(out, ["q1", "q2"], ["direct", "cot"])
    assert [(r["id"], r["strategy"]) for r in map(json.loads, out.read_text().splitlines())] == [
        ("q1", "direct"), ("q1", "cot"), ("q2", "direct"), ("q2", "cot")]


def test_react_without_a_corpus_or_network_says_so_before_running(tmp_path):
    settings = Settings(home=tmp_path, model_path=None, device="cpu", dtype=None)
    problem = wiki_problem(settings, reachable=lambda: False)
    assert "reason wiki import" in problem and "cannot be reached" in problem
    assert wiki_problem(settings, reachable=lambda: True) is None
    (tmp_path / "wiki_corpus.db").write_bytes(b"")
    assert wiki_problem(settings, reachable=lambda: False) is None
