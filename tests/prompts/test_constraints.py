"""Templates' output constraints: parsed and checked, filled per ReAct step, sent with each model call,
recorded in the trace (and counted when a backend drops them); free variants send none."""
import pytest
import yaml

from prompts import cot, direct, pal, react
from prompts.template import TemplateError, load_shipped, parse_template, shipped_template_body

from .scripted import ScriptedChatModel
from .test_strategies import INFO, PAGES, FakeWiki

BASE = """
name: mine
version: 1
strategy: react
system: Be careful.
user: "Q: {question}"
"""
CONSTRAINED = {"react": "step", "react_zeroshot": "step", "pal": "program", "pal_zeroshot": "program",
               "cot": "reasoning", "cot_zeroshot": "reasoning"}


def with_constraints(body: str) -> str:
    return BASE + "constraints:\n" + "\n".join("  " + line for line in body.strip().splitlines()) + "\n"


def test_the_shipped_templates_constrain_every_call_of_their_strategy():
    for name, call in CONSTRAINED.items():
        template = load_shipped(name)
        assert set(template.constraints) == {call} and template.constraints[call]["kind"] == "lark", name
    for name in ("react_free", "pal_free", "cot_free", "direct"):
        assert load_shipped(name).constraints == {}, name


@pytest.mark.parametrize("constrained, free", [("react", "react_free"), ("pal", "pal_free"), ("cot", "cot_free")])
def test_a_free_variant_is_its_template_without_the_grammar(constrained, free):
    """The free variants keep today's prompts word for word, so a comparison measures only the grammar."""
    held, loose = (yaml.safe_load(shipped_template_body(n)) for n in (constrained, free))
    held.pop("constraints")
    loose.get("extra", {}).pop("fallback_template", None)  # free ReAct falls back to free CoT
    for data in (held, loose):
        data.pop("name"), data.pop("description")
    assert held == loose


def test_zero_shot_templates_share_the_few_shot_grammar():
    for name in CONSTRAINED:
        few_shot = name.removesuffix("_zeroshot")
        assert load_shipped(name).constraints == load_shipped(few_shot).constraints


def test_a_react_step_grammar_is_numbered_for_its_step():
    template = load_shipped("react")
    assert "{step}" in template.constraints["step"]["spec"]
    step3 = template.constraint("step", step=3)
    assert '"\\nAction 3: "' in step3["spec"] and "{step}" not in step3["spec"] and step3["kind"] == "lark"
    assert template.constraint("step") == template.constraints["step"]  # no number asked: as written
    assert template.constraint("reasoning") is None


def test_a_json_schema_may_be_written_as_a_mapping_and_a_choice_as_a_list():
    template = parse_template(with_constraints("""
step:
  kind: json_schema
  spec: {type: object}
"""))
    assert template.constraint("step") == {"kind": "json_schema", "spec": '{"type": "object"}'}
    choice = parse_template(with_constraints("step: {kind: choice, spec: [left, right]}"))
    assert choice.constraint("step") == {"kind": "choice", "spec": ["left", "right"]}


@pytest.mark.parametrize("body, message", [
    ("- not a mapping", "must map a model call"),
    ("answer: {kind: lark, spec: 'start: \"x\"'}", "makes no model call 'answer'; it can constrain: step"),
    ("step: {kind: ebnf, spec: 'x'}", "kind 'ebnf' is not one of"),
    ("step: {kind: lark}", "needs exactly 'kind' and 'spec'"),
    ("step: {kind: lark, spec: '   '}", "non-empty text"),
    ("step: {kind: choice, spec: []}", "non-empty list of strings"),
    ("step: {kind: lark, spec: x, grammar: y}", "needs exactly 'kind' and 'spec'"),
])
def test_broken_constraints_are_refused_clearly(body, message):
    with pytest.raises(TemplateError, match=message):
        parse_template(with_constraints(body))


def test_constrained_react_sends_each_step_its_numbered_grammar():
    model = ScriptedChatModel().enqueue(" Look it up.\nAction 1: Search[Antonín Dvořák]",
                                        " He was born there.\nAction 2: Finish[Nelahozeves]")
    trace = react.run("Where was Dvořák born?", model, load_shipped("react"), FakeWiki(PAGES), INFO)
    assert trace.answer == "Nelahozeves" and trace.counters["bad_calls"] == 0
    sent = [call["kwargs"]["constraint"] for call in model.calls]
    assert [c["kind"] for c in sent] == ["lark", "lark"]
    assert '"\\nAction 1: "' in sent[0]["spec"] and '"\\nAction 2: "' in sent[1]["spec"]
    llm_steps = [s for s in trace.steps if s.kind == "llm"]
    assert [s.meta["constraint"] for s in llm_steps] == ["lark", "lark"]
    assert "unconstrained_calls" not in trace.counters


def test_free_templates_send_no_constraint_keyword():
    """A chat model that never heard of constraints must still answer free templates' calls."""
    model = ScriptedChatModel().enqueue(" Done.\nAction 1: Finish[x]", "The answer is 2.", "\n    return 2", "2")
    react.run("?", model, load_shipped("react_free"), FakeWiki({}), INFO)
    cot.run("?", model, load_shipped("cot_free"), INFO)
    pal.run("?", model, load_shipped("pal_free"), INFO)
    direct.run("?", model, load_shipped("direct"), INFO)
    assert all("constraint" not in call["kwargs"] for call in model.calls)
    assert len(model.calls) == 4


def test_pal_holds_the_program_and_its_fix_to_the_grammar():
    model = ScriptedChatModel().enqueue("\n    return 10 / 0", "\n    return 10 / 2")
    trace = pal.run("?", model, load_shipped("pal"), INFO)
    assert trace.answer == "5" and trace.counters["fix_attempts"] == 1
    assert [call["kwargs"]["constraint"]["kind"] for call in model.calls] == ["lark", "lark"]
    assert model.calls[0]["kwargs"]["constraint"] == load_shipped("pal").constraint("program")


def test_cot_self_consistency_samples_under_the_grammar():
    model = ScriptedChatModel().enqueue("The answer is 3.", "The answer is 3.", "The answer is 4.")
    trace = cot.run("?", model, load_shipped("cot"), INFO, self_consistency=3)
    assert trace.answer == "3"
    assert all(call["kwargs"]["constraint"] == load_shipped("cot").constraint("reasoning") for call in model.calls)


def test_a_dropped_constraint_is_recorded_and_counted():
    model = ScriptedChatModel(drops_constraints="the server follows no grammar field").enqueue(
        "rambling without an action", " Finish[4]", "The answer is 4.")
    trace = react.run("?", model, load_shipped("react"), FakeWiki({}), INFO)
    first = trace.steps[0]
    assert first.meta["constraint"] == "lark" and first.meta["constraint_dropped"] == "the server follows no grammar field"
    # run free, the step did not parse: it is re-prompted (free) and counted as a bad call, as without a grammar
    assert trace.counters["bad_calls"] == 1 and trace.counters["unconstrained_calls"] == 1
    assert "constraint" not in model.calls[1]["kwargs"]
    cot_trace = cot.run("?", model, load_shipped("cot"), INFO)
    assert cot_trace.counters["unconstrained_calls"] == 1 and cot_trace.answer == "4"


@pytest.mark.parametrize("completion, action, argument", [
    (" I recall Action 1: Finish[wrong] was tried.\nAction 2: Search[Bern]", "Search", "Bern"),
    (" Look up Bern.\nAction 1: Search[Bern]\nAction 2: Finish[x]", "Search", "Bern"),
    (" Maybe Action 1: Lookup[river]", "Lookup", "river"),
])
def test_an_action_on_its_own_line_wins_over_one_inside_the_thought(completion, action, argument):
    assert react.parse_step(completion)[1:] == (action, argument)


def test_free_react_falls_back_to_free_cot():
    model = ScriptedChatModel().enqueue(" Look.\nAction 1: Search[X]", "The answer is 4.", "The answer is 4.",
                                        "The answer is 5.")
    trace = react.run("?", model, load_shipped("react_free"), FakeWiki({}), INFO, max_steps=1,
                      fallback_template=load_shipped("cot"), fallback_k=3)
    assert trace.answer == "4" and all("constraint" not in call["kwargs"] for call in model.calls)
    assert "Free text" in load_shipped("cot_free").description
