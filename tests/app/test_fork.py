"""Forks, branches and diffs of stored runs, driven by scripted chat models: the steps before the fork
point come from the record (no model call, no tool run), the edited step is kept and the run goes on
from it; a branch continues a token's alternative; diff finds where two runs part."""
import json
import re
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage

from app.fork import branch, fork
from app.run_diff import diff_runs
from app.runner import StrategyOptions, record_run
from app.settings import Settings
from app.store import Store
from app.tools import wiki_paths, wiki_tool_factory
from prompts.sandbox import SandboxResult
from prompts.template import load_shipped
from prompts.trace import RunInfo, Step, Trace
from prompts.wiki import import_corpus
from tests.prompts.scripted import ScriptedChatModel

WIKI = "tests/prompts/fixtures/wiki_small.jsonl"
INFO = RunInfo(model_id="scripted", backend="test", sampling={"temperature": 0.0, "max_tokens": 64})
QUESTION = "Where was Ilse Varga born?"
SAME = ("kind", "name", "input", "output", "error", "prompt_tokens", "completion_tokens")


@pytest.fixture
def settings(tmp_path):
    settings = Settings(home=tmp_path / "home", model_path=None, device="cpu", dtype=None)
    settings.home.mkdir()
    import_corpus(WIKI, wiki_paths(settings)[0])
    return settings


@pytest.fixture
def store(settings):
    store = Store.open(settings)
    yield store
    store.close()


def react_parent(store, settings) -> dict:
    model = ScriptedChatModel().enqueue(" I need her birthplace.\nAction 1: Search[Ilse Varga]",
                                        " She was born in Marenhold.\nAction 2: Finish[Marenhold]")
    run_id = record_run(store, QUESTION, "react", model, INFO, load_shipped("react"),
                        wiki_tool=wiki_tool_factory(settings, "offline"), expected="Marenhold").run_id
    return store.get_run(run_id)


def same_steps(a: list[dict], b: list[dict]) -> bool:
    return [{k: s[k] for k in SAME} for s in a] == [{k: s[k] for k in SAME} for s in b]


def test_a_fork_takes_earlier_steps_from_the_record_without_any_tool_or_model(store, settings):
    parent = react_parent(store, settings)
    assert [s["kind"] for s in parent["steps"]] == ["llm", "tool", "llm"] and parent["correct"]
    wiki_paths(settings)[0].unlink()  # the corpus is gone: a tool that ran would fail
    made = []
    idle = ScriptedChatModel()  # no replies: any model call would raise
    edited = " No, she was born in Veltria's capital, Lindau.\nAction 2: Finish[Lindau]"
    recorded = fork(store, parent["id"], 2, idle, INFO, edit=fork_edit(edited),
                    wiki_tool=lambda: made.append(1) or wiki_tool_factory(settings, "offline")())
    child = store.get_run(recorded.run_id)
    assert made == [] and idle.calls == []
    assert same_steps(child["steps"][:2], parent["steps"][:2])
    assert child["steps"][2]["output"] == edited and child["steps"][2]["meta"]["edited"] is True
    assert child["answer"] == "Lindau" and child["correct"] is False and child["status"] == "ok"
    assert (child["parent_run_id"], child["forked_at"]) == (parent["id"], 2)
    assert child["lineage"]["kind"] == "fork" and child["lineage"]["replayed_calls"] == 1
    assert child["lineage"]["replayed_tools"] == 1 and "replay_diverged_at" not in child["lineage"]
    assert [r["id"] for r in store.forks_of(parent["id"])] == [child["id"]]


def fork_edit(text, continued=False):
    from app.fork import Edit

    return Edit(text, continued=continued)


def test_the_edited_step_is_kept_and_the_run_goes_on_from_it(store, settings):
    parent = react_parent(store, settings)
    model = ScriptedChatModel().enqueue(" The city is Marenhold.\nAction 2: Finish[Marenhold]")
    edited = " First, the city.\nAction 1: Search[Marenhold]"
    recorded = fork(store, parent["id"], 0, model, INFO, edit=fork_edit(edited),
                    wiki_tool=wiki_tool_factory(settings, "offline"))
    child = store.get_run(recorded.run_id)
    assert [s["kind"] for s in child["steps"]] == ["llm", "tool", "llm"]
    assert child["steps"][0]["output"] == edited
    assert child["steps"][1]["input"] == "Marenhold" and "capital" in child["steps"][1]["output"]  # the tool ran live
    prompt = model.calls[0]["messages"][-1].content  # the model saw the edited thought and the live observation
    assert "Thought 1: First, the city.\nAction 1: Search[Marenhold]\nObservation 1: Marenhold is the capital" in prompt
    assert child["answer"] == "Marenhold"


def test_a_lookup_after_the_fork_reads_the_page_the_recorded_search_opened(store, settings):
    parent = react_parent(store, settings)
    model = ScriptedChatModel().enqueue(" So Marenhold.\nAction 3: Finish[Marenhold]")
    recorded = fork(store, parent["id"], 2, model, INFO, edit=fork_edit(" Check it.\nAction 2: Lookup[born]"),
                    wiki_tool=wiki_tool_factory(settings, "offline"))
    lookup = store.get_run(recorded.run_id)["steps"][3]
    assert lookup["name"] == "lookup" and lookup["output"].startswith("(Result 1 /") and "born" in lookup["output"]


def test_diff_finds_the_fork_step_and_compares_answers(store, settings):
    parent = react_parent(store, settings)
    edited = " She was born in Lindau.\nAction 2: Finish[Lindau]"
    child = store.get_run(fork(store, parent["id"], 2, ScriptedChatModel(), INFO, edit=fork_edit(edited)).run_id)
    diff = diff_runs(parent, child)
    assert diff["first_divergence"] == {"step": 2, "part": "output", "token": 4, "unit": "word"}  # " She was born in" match
    assert [row["equal"] for row in diff["steps"]] == [True, True, False]
    assert diff["answers"] == {"a": "Marenhold", "b": "Lindau", "same": False}
    assert diff["outcomes"] == {"a": {"status": "ok", "correct": True}, "b": {"status": "ok", "correct": False}}
    assert diff_runs(parent, parent)["first_divergence"] is None


def test_a_fork_point_outside_the_run_or_an_edit_of_a_written_step_is_refused(store, settings):
    parent = react_parent(store, settings)
    with pytest.raises(ValueError, match=r"steps 0\.\.2"):
        fork(store, parent["id"], 3, ScriptedChatModel(), INFO)
    with pytest.raises(ValueError, match="no run"):
        fork(store, "nope", 0, ScriptedChatModel(), INFO)
    with pytest.raises(ValueError, match="only a model call can be continued"):
        fork(store, parent["id"], 1, ScriptedChatModel(), INFO, edit=fork_edit("x", continued=True))
    with pytest.raises(ValueError, match="fork at step 0"):
        fork(store, parent["id"], 1, ScriptedChatModel(), INFO, strategy="cot")


def test_a_pal_fork_replays_the_sandbox_and_runs_only_the_new_program(store, monkeypatch):
    programs = []

    def sandbox(program, timeout_s=5.0):
        programs.append(program)
        value = 12 if "return 12" in program else None
        return SandboxResult(value is not None, value, "", "" if value else "NameError: x", "ok" if value else "error", 1.0)

    monkeypatch.setattr("app.replay_tools.run_program", sandbox)
    model = ScriptedChatModel().enqueue("\n    return x\n", "def solution():\n    return 11\n")
    parent_id = record_run(store, "6 + 6?", "pal", model, INFO, load_shipped("pal"),
                           StrategyOptions(sandbox=sandbox)).run_id
    parent = store.get_run(parent_id)
    assert [s["kind"] for s in parent["steps"]] == ["llm", "tool", "llm", "tool"] and len(programs) == 2
    programs.clear()
    child = store.get_run(fork(store, parent_id, 2, ScriptedChatModel(), INFO,
                               edit=fork_edit("def solution():\n    return 12\n")).run_id)
    assert programs == ["def solution():\n    return 12\n"]  # the recorded failing program did not run again
    assert same_steps(child["steps"][:2], parent["steps"][:2]) and child["answer"] == "12"
    programs.clear()
    edited = store.get_run(fork(store, parent_id, 3, ScriptedChatModel(), INFO, edit=fork_edit("13")).run_id)
    assert programs == [] and edited["answer"] == "13"  # the sandbox's result itself, edited
    assert json.loads(edited["steps"][3]["output"]) == {"value": 13, "stdout": ""}


def test_a_self_consistency_fork_keeps_earlier_samples_and_samples_the_rest(store):
    model = ScriptedChatModel().enqueue("The answer is 7.", "The answer is 8.", "The answer is 7.")
    parent_id = record_run(store, "3 + 4?", "cot", model, INFO, load_shipped("cot"),
                           StrategyOptions(self_consistency=3)).run_id
    again = ScriptedChatModel().enqueue("The answer is 8.")
    child = store.get_run(fork(store, parent_id, 1, again, INFO, edit=fork_edit("The answer is 8.")).run_id)
    assert len(again.calls) == 1  # only the third path was sampled
    assert [s["output"] for s in child["steps"][:3]] == ["The answer is 7.", "The answer is 8.", "The answer is 8."]
    assert child["answer"] == "8" and child["steps"][3]["kind"] == "vote"


def logprob_parent(store) -> str:
    """A stored CoT run whose one step has per-token log-probabilities and alternatives."""
    tokens = [["The", -0.1, [["The", -0.1], ["So", -2.5]]], [" answer", -0.2, [[" answer", -0.2], [" sum", -1.9]]],
              [" is", -0.1, [[" is", -0.1]]], [" 7", -0.3, [[" 7", -0.3], [" 8", -1.4]]], [".", -0.1, [[".", -0.1]]]]
    trace = Trace(QUESTION, "cot", "cot", 1, "scripted", "test", dict(INFO.sampling))
    trace.add(Step("llm", "system: …", "The answer is 7.", "reasoning", 30, 5, meta={"logprobs": tokens}))
    run_id = store.start_run("3 + 4?", "cot", template_name="cot", template_version=1, expected="8")
    store.finish_run(run_id, trace.finish("7"), correct=False)
    return run_id


class TokenModel(ScriptedChatModel):
    """Scripted replies with per-token log-probabilities (each word a token), as the engine sends them."""

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        result = super()._generate(messages, stop, run_manager, **kwargs)
        message = result.generations[0].message
        words = re.findall(r"\s*\S+", str(message.content))
        message.response_metadata["logprobs"] = {"content": [{"token": w, "logprob": -0.5, "top_logprobs": []}
                                                              for w in words]}
        return result


def test_branch_here_continues_a_tokens_alternative(store):
    parent_id = logprob_parent(store)
    model = TokenModel().enqueue(" is 8.")
    child = store.get_run(branch(store, parent_id, 0, 1, " sum", model, INFO).run_id)
    assert model.calls[0]["messages"][-1] == AIMessage("The sum")  # the model continues the kept text
    step = child["steps"][0]
    assert step["output"] == "The sum is 8." and child["answer"] == "8" and child["correct"] is True
    assert [t for t, _, _ in step["meta"]["logprobs"]] == ["The", " sum", " is", " 8."]  # kept, alternative, new
    assert step["meta"]["branched_at_token"] == 1
    assert child["lineage"] | {"token": 1, "alternative": " sum", "replaced_token": " answer", "kind": "branch"} \
        == child["lineage"]
    diff = diff_runs(store.get_run(parent_id), child)
    assert diff["first_divergence"]["step"] == 0 and diff["first_divergence"]["token"] == 1
    with pytest.raises(ValueError, match="not one of token 1's alternatives"):
        branch(store, parent_id, 0, 1, " total", model, INFO)


def test_a_fork_with_another_template_version_and_model_records_both(store):
    """Issue 19: a fork may run another template version or another model; the run and its lineage say so."""
    from app.templates import load_template, save_template

    parent_model = ScriptedChatModel().enqueue("7")
    parent_id = record_run(store, "3 + 4?", "direct", parent_model, INFO, load_shipped("direct"), expected="7").run_id
    body = (Path(__file__).resolve().parents[2] / "prompts" / "templates" / "direct.yaml").read_text(encoding="utf-8")
    version = save_template(store, "direct", body.replace("You answer questions.", "You answer sums tersely."))
    other = RunInfo(model_id="other-scripted", backend="test", sampling=INFO.sampling)
    model = ScriptedChatModel().enqueue("8")
    recorded = fork(store, parent_id, 0, model, other, template=load_template(store, f"direct@{version}"))
    child = store.get_run(recorded.run_id)
    assert "You answer sums tersely." in model.calls[0]["messages"][0].content  # the new version's prompt was sent
    assert (child["template_name"], child["template_version"], child["model_id"]) == ("direct", version, "other-scripted")
    assert child["lineage"]["changed"] == {"template": f"direct@{version}", "model": "other-scripted"}
    assert (child["parent_run_id"], child["forked_at"], child["answer"]) == (parent_id, 0, "8")
