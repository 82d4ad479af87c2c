"""PAL driven by a scripted model: programs run in the real sandbox."""
import pytest

from prompts import pal
from prompts.template import load_shipped
from prompts.trace import RunInfo

from .scripted import ScriptedChatModel

INFO = RunInfo(model_id="scripted", backend="test")


@pytest.mark.parametrize("completion, program", [
    ("\n    return 2 + 3\n", "def solution():\n    return 2 + 3\n"),
    ("```python\ndef solution():\n    x = 4\n    return x * 2\n```\nThis returns 8.",
     "def solution():\n    x = 4\n    return x * 2\n"),
    ("\n    a = 1\n\n    return a\nThe result is 1.", "def solution():\n    a = 1\n\n    return a\n"),
    ("def solution():\n    return 7\n", "def solution():\n    return 7\n"),
])
def test_extract_program(completion, program):
    assert pal.extract_program("def solution():", completion) == program


@pytest.mark.parametrize("value, normalized", [(2.0, "2"), (2.5, "2.5"), (1 / 3, "0.333333"), (7, "7"), (None, None),
                                               ("Paris", "Paris"), (True, "True")])
def test_normalize_value(value, normalized):
    assert pal.normalize_value(value) == normalized


def test_pal_runs_the_program_and_returns_its_value():
    model = ScriptedChatModel().enqueue("\n    apples = 3\n    apples += 4\n    return apples\n")
    trace = pal.run("Tom has 3 apples and buys 4.", model, load_shipped("pal"), INFO)
    assert trace.answer == "7" and trace.status == "ok"
    assert [s.kind for s in trace.steps] == ["llm", "tool"]
    assert trace.steps[1].name == "sandbox" and trace.steps[1].input.startswith("def solution():")
    assert model.calls[0]["messages"][-1].content == "def solution():"  # the model continues the signature


def test_pal_shows_the_error_and_lets_the_model_fix_it_once():
    model = ScriptedChatModel().enqueue("\n    return 10 / 0\n", "\n    return 10 / 2\n")
    trace = pal.run("?", model, load_shipped("pal"), INFO)
    assert trace.answer == "5" and trace.counters["fix_attempts"] == 1
    assert "ZeroDivisionError" in trace.steps[1].error
    assert "ZeroDivisionError" in model.calls[1]["messages"][-2].content


def test_pal_that_keeps_failing_ends_in_error():
    model = ScriptedChatModel().enqueue("\n    return undefined_name\n", "\n    return also_undefined\n")
    trace = pal.run("?", model, load_shipped("pal"), INFO)
    assert trace.status == "error" and "NameError" in trace.error


def test_injected_code_is_stopped_by_the_sandbox(tmp_path):
    target = tmp_path / "pwned"
    model = ScriptedChatModel().enqueue(f"\n    import os\n    open({str(target)!r}, 'w').write('x')\n    return 1\n")
    trace = pal.run("?", model, load_shipped("pal"), INFO, fix_errors=False)
    assert trace.status == "error" and not target.exists()


def test_pal_self_consistency_votes_over_results_and_discards_crashes():
    model = ScriptedChatModel().enqueue("\n    return 6\n", "\n    return 1 / 0\n", "\n    return 6.0\n", "\n    return 5\n")
    trace = pal.run("?", model, load_shipped("pal"), INFO, self_consistency=4)
    assert trace.answer == "6"
    assert trace.steps[-1].kind == "vote" and trace.steps[-1].meta["counts"] == {"6": 2, "5": 1}
