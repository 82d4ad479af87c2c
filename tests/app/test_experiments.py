"""Experiments: Wilson intervals and exact McNemar p-values against numbers worked by hand, per-configuration
results from the store, and how sweeps expand into named configurations."""
import math

import pytest

from app.experiments import Backend, Configuration, expand, named
from app.experiments_compare import Side, compare
from app.experiments_stats import batch_results, mcnemar_exact, wilson_interval
from app.store import Store
from prompts.trace import Step, Trace

Z = 1.959963984540054  # the 97.5th percentile of the standard normal


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    """(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), written out."""
    p = k / n
    centre, spread = p + Z * Z / (2 * n), Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return (centre - spread) / (1 + Z * Z / n), (centre + spread) / (1 + Z * Z / n)


def test_wilson_intervals_by_hand():
    assert wilson_interval(8, 10) == pytest.approx((0.4901625, 0.9433178), abs=1e-6)
    assert wilson_interval(8, 10) == pytest.approx(wilson_by_hand(8, 10))
    assert wilson_interval(0, 10) == pytest.approx((0.0, Z * Z / (10 + Z * Z)), abs=1e-9)  # 0.2775: never below 0
    assert wilson_interval(10, 10) == pytest.approx((10 / (10 + Z * Z), 1.0), abs=1e-9)
    assert wilson_interval(1, 200) == pytest.approx(wilson_by_hand(1, 200))
    assert wilson_interval(0, 0) is None


def test_exact_mcnemar_by_hand():
    # two-sided: 2 · P(X <= min(b, c)) for X ~ Binomial(b + c, 1/2), capped at 1
    assert mcnemar_exact(1, 8) == pytest.approx(2 * (1 + 9) / 2 ** 9)  # 0.0390625
    assert mcnemar_exact(8, 1) == pytest.approx(0.0390625)
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 2 ** 5)  # 0.0625
    assert mcnemar_exact(2, 10) == pytest.approx(2 * (1 + 12 + 66) / 2 ** 12)  # 0.03857
    assert mcnemar_exact(3, 2) == 1.0 and mcnemar_exact(0, 0) == 1.0


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "reason.db")
    yield store
    store.close()


def add(store, batch_id, config, qid, correct, tokens=10, steps=()):
    run_id = store.start_config_run(config, f"question {qid}", config.split("/")[0], batch_id=batch_id, question_id=qid,
                                    expected="5")
    trace = Trace(question=f"question {qid}", strategy="cot")
    trace.add(Step(kind="llm", input="p", output="o", prompt_tokens=tokens, completion_tokens=0))
    for kind, error in steps:
        trace.add(Step(kind=kind, input="x", error=error))
    store.finish_run(run_id, trace.finish("5" if correct else "6"), correct)
    return run_id


def test_results_per_configuration_and_a_paired_comparison(store):
    batch_id = store.create_batch("in.jsonl", "h", ["cot"], {"configurations": [{"name": "cot/b"}, {"name": "cot/a"}]}, 20)
    a = [True] * 8 + [False] * 2
    b = [True, False] * 5
    for i, (x, y) in enumerate(zip(a, b)):
        add(store, batch_id, "cot/a", f"q{i}", x, tokens=10, steps=[("parse_error", None)] if i == 0 else [])
        add(store, batch_id, "cot/b", f"q{i}", y, tokens=30, steps=[("tool", "timeout")] if i < 3 else [])
    first, second = batch_results(store, batch_id)
    assert [first.config, second.config] == ["cot/b", "cot/a"]  # the batch's own order
    assert (second.scored, second.correct, second.accuracy) == (10, 8, 0.8)
    assert second.ci95 == pytest.approx(wilson_by_hand(8, 10))
    assert (second.parse_error_rate, second.tool_error_rate, first.tool_error_rate) == (0.1, 0.0, 0.3)
    assert second.mean_tokens == 10 and second.tokens_per_correct == 100 / 8 and first.tokens_per_correct == 300 / 5
    result = compare(store, Side(batch_id, "cot/a"), Side(batch_id, "cot/b"))
    # a right where b is wrong: q1 q3 q5 q7 (4); b right where a is wrong: q8 (1)
    assert (result["wins"], result["losses"], result["ties"]) == (4, 1, 5)
    assert result["p_value"] == pytest.approx(2 * (1 + 5) / 2 ** 5)  # 0.375
    assert [c["question_id"] for c in result["changed"]] == ["q1", "q3", "q5", "q7", "q8"]
    assert result["sides"][0] | {"ci95": None} == {"label": f"{batch_id[-8:]}:cot/a", "batch": batch_id, "config": "cot/a",
                                                   "n": 10, "correct": 8, "accuracy": 0.8, "ci95": None}


def test_legacy_batch_runs_are_keyed_by_strategy(store):
    batch_id = store.create_batch("in.jsonl", "h", ["cot"], {}, 1)
    run_id = store.start_run("old?", "cot", batch_id=batch_id, question_id="q0")  # a run from before experiments
    assert store.unfinished_runs(batch_id, "cot") == {"q0": run_id}
    store.fail_run(run_id, "OpenAIConnectionError: Connection error.")
    assert store.finished_question_ids(batch_id, "cot") == {"q0"}
    assert store.finished_question_ids(batch_id, "cot", ("OpenAIConnectionError",)) == set()  # resume retries it
    assert store.unfinished_runs(batch_id, "cot", ("OpenAIConnectionError",)) == {"q0": run_id}
    assert [r.config for r in batch_results(store, batch_id)] == ["cot"]


def templates(spec: str) -> str:
    return spec.split("@")[0].split("_")[0]


def test_a_sweep_expands_templates_only_with_their_strategy():
    sweep = {"strategy": ["direct", "cot"], "template": ["cot@1", "cot_zeroshot@2"], "temperature": [0.0, 0.7]}
    configs = named(expand(sweep, [Backend()], templates))
    assert [c.name for c in configs] == ["direct/temperature=0.0", "direct/temperature=0.7", "cot@1/temperature=0.0",
                                         "cot@1/temperature=0.7", "cot_zeroshot@2/temperature=0.0",
                                         "cot_zeroshot@2/temperature=0.7"]
    only = named(expand({"template": ["cot@1", "cot@2"], "self_consistency": 8, "sc_stop": "beta"}, [Backend()], templates))
    assert [c.name for c in only] == ["cot@1/sc8-beta", "cot@2/sc8-beta"]  # the strategy comes from the templates
    with pytest.raises(ValueError, match="cot@1 is a cot template, and cot is not one of the swept strategies"):
        expand({"strategy": ["pal"], "template": ["cot@1"]}, [Backend()], templates)


def test_backends_and_names():
    backends = [Backend("engine", "/models/a.gguf"), Backend("openai", "qwen", ("http://x/v1", "http://y/v1"))]
    configs = named(expand({"strategy": "cot"}, backends, templates))
    assert [c.name for c in configs] == ["cot/engine:a", "cot/openai:qwen"]
    assert configs[1].base_urls == ("http://x/v1", "http://y/v1")
    assert Configuration.from_dict(configs[1].to_dict()) == configs[1]
    with pytest.raises(ValueError, match="two configurations are both 'cot'"):
        named([Configuration("cot"), Configuration("cot", template=None)])
    with pytest.raises(ValueError, match="unknown sc_stop"):
        Configuration("cot", sc_stop="later")


def test_adaptive_stopping_replayed_on_stored_paths(store):
    from app.experiments_replay import replay

    batch_id = store.create_batch("in.jsonl", "h", ["cot"], {"configurations": [{"name": "cot/sc8"}]}, 2)
    for qid, expected, answers in (("q0", "5", ["5"] * 8), ("q1", "7", ["7", "3"] * 4)):
        run_id = store.start_config_run("cot/sc8", qid, "cot", batch_id=batch_id, question_id=qid, expected=expected)
        trace = Trace(question=qid, strategy="cot")
        for i, answer in enumerate(answers):
            trace.add(Step(kind="llm", name=f"reasoning path {i + 1}/8", input="p", output=f"The answer is {answer}.",
                           prompt_tokens=10, completion_tokens=5))
        store.finish_run(run_id, trace.finish(expected), True)
    result = replay(store, Side(batch_id, "cot/sc8"))
    assert (result["questions"], result["budget"]) == (2, 8)
    assert result["full"] == {"accuracy": 1.0, "correct": 2, "paths": 16, "tokens": 240}
    # overtake: q0 stops at 6 (6 - 0 > 2 left), q1 never settles; beta: q0 at 4 (0.969 >= 0.95), q1 never
    assert result["overtake"] == {"accuracy": 1.0, "correct": 2, "paths": 14, "tokens": 210, "tokens_saved": 0.125,
                                  "same_answers": 2}
    assert result["beta"] == {"accuracy": 1.0, "correct": 2, "paths": 12, "tokens": 180, "tokens_saved": 0.25,
                              "same_answers": 2}
