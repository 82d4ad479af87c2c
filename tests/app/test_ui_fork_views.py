"""What History's fork controls draw and do, without a browser: Fork here and Branch here in a trace, a
fork's header and cards, a comparison's greyed steps and divergence, and the JSON action page.js sends."""
import html
import json
import re

import pytest

from app.runner import record_run
from app.settings import Settings
from app.store import Store
from app.ui import history_fork
from app.ui.history_fork import FORKABLE, act, compare, summary
from app.ui.state import AppState
from app.ui.trace_view import render_run
from engine import load_model
from prompts.template import load_shipped
from tests.app.test_ui_views import run, step
from tests.prompts.scripted import ScriptedChatModel

TOKENS = [["The", -0.1, [["The", -0.1], ["So", -2.5]]], [" <b>7</b>", -0.9, [[" <b>7</b>", -0.9], [' "8"', -1.2]]]]


def test_a_forkable_trace_offers_fork_here_and_branchable_tokens_with_escaped_text():
    trace = render_run(run([step(0, output="The <b>7</b>", meta={"logprobs": TOKENS}),
                            step(1, kind="tool", name="search", output="<script>x</script>"),
                            step(2, kind="tool", name="search", output="again", meta={"repeated": True}),
                            step(3, kind="vote", output="7")]), FORKABLE)
    assert 'class="trace forkable" data-run="r1"' in trace
    assert re.findall(r'class="fork-btn" data-step="(\d+)"', trace) == ["0", "1"]  # model and tool steps only
    assert "<script>" not in trace and "&lt;script&gt;x&lt;/script&gt;" in trace
    alts = [json.loads(html.unescape(a)) for a in re.findall(r'data-alts="([^"]*)"', trace)]
    assert alts == [[["So", 0.0821]], [[' "8"', 0.3012]]]  # each token's other alternatives, with probabilities
    assert 'data-i="1"' in trace and "&lt;b&gt;7&lt;/b&gt;</span>" in trace
    assert "fork-btn" not in render_run(run([step(0, output="x")]))  # only History's traces fork


def test_a_fork_says_where_it_came_from_and_which_steps_it_took_from_the_record():
    lineage = {"kind": "fork", "edited": True, "changed": {"template": "cot@2"}}
    trace = render_run(run([step(0, output="a"), step(1, output="b", meta={"edited": True, "cached_prompt_tokens": 96})],
                           parent_run_id="p1", forked_at=1, lineage=lineage))
    assert "fork of p1 at step 2 (edited) · template cot@2" in trace  # cards count from 1
    assert trace.count("from the parent run") == 1 and 'class="tag edited"' in trace
    assert "10 prompt (96 from cache) + 5 completion tokens" in trace


def test_a_comparison_greys_matching_steps_and_marks_the_diverging_token():
    a = run([step(0, output="same"), step(1, output="The <b>7</b>", meta={"logprobs": TOKENS})])
    b = run([step(0, output="same"), step(1, output="The 8", meta={"logprobs": [TOKENS[0], [" 8", -1.2, []]]})],
            id="r2", answer="8")
    left, right = history_fork.side_by_side(a, b)
    for trace in (left, right):
        assert re.search(r'class="step kind-\w+ same" data-step="0"', trace)
        assert re.search(r'class="step kind-\w+ diverges" data-step="1"', trace) and "first divergence at token 1" in trace
        assert trace.count("tok-diverge") == 1
    from app.run_diff import diff_runs

    assert summary(diff_runs(a, b)) == ("First divergence at step 2 (output, token 1) · answers 7 | 8 (different) · "
                                        "outcomes answered | answered")


@pytest.fixture
def state(tmp_path, tiny_model):
    settings = Settings(home=tmp_path, model_path=tiny_model, device="cpu", dtype=None)
    engine = load_model(tiny_model, device="cpu")
    state = AppState(settings, Store.open(settings), engine, "tiny")
    yield state
    engine.close()


def test_the_action_page_js_sends_forks_a_run_and_shows_both_side_by_side(state):
    model, info = state.chat_model({"max_tokens": 4})
    parent = record_run(state.store, "3 + 4?", "cot", ScriptedChatModel().enqueue("The answer is 7."), info,
                        load_shipped("cot")).run_id
    action = json.dumps({"action": "fork", "run": parent, "step": 0, "text": "The answer is 9."})
    message, left, right = act(state, parent, action)
    assert "Forked" in message and f"fork of {parent} at step 1 (edited)" in message and "<b>9</b>" in message
    assert "first divergence" in left and "Answer: <b>9</b>" in right
    child = state.store.forks_of(parent)[0]
    assert child["answer"] == "9" and child["forked_at"] == 0
    refused, _, _ = act(state, parent, json.dumps({"action": "fork", "run": parent, "step": 5, "text": "x"}))
    assert "Not forked" in refused and "out of range" in refused
    missing, _, _ = compare(state, parent, "nope")
    assert "No run with id" in missing
