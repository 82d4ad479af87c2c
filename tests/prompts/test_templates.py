import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from prompts.template import TemplateError, load_shipped, parse_template, shipped_template_names

GOOD = """
name: mine
version: 3
strategy: cot
system: Be careful.
examples:
  - user: "1+1?"
    assistant: "The answer is 2."
user: "Q: {question}"
"""


def test_every_shipped_template_loads_and_renders():
    names = shipped_template_names()
    assert {"direct", "cot", "cot_zeroshot", "pal", "pal_zeroshot", "react", "react_zeroshot"} <= set(names)
    for name in names:
        template = load_shipped(name)
        assert template.version == 1 and template.name == name
        messages = template.render("How many legs do 3 spiders have?")
        assert any("How many legs do 3 spiders have?" in m.content for m in messages)


def test_render_builds_system_examples_question_and_prefix():
    template = parse_template(GOOD)
    messages = template.render("2+3?")
    assert [type(m) for m in messages] == [SystemMessage, HumanMessage, AIMessage, HumanMessage]
    assert messages[-1].content == "Q: 2+3?"
    pal = load_shipped("pal").render("2+3?")
    assert isinstance(pal[-1], AIMessage) and pal[-1].content == "def solution():"


def test_pal_prompts_end_at_the_signature_not_a_newline():
    for name in ("pal", "pal_zeroshot"):
        assert load_shipped(name).assistant_prefix == "def solution():"


@pytest.mark.parametrize("body, message", [
    (GOOD.replace("{question}", "{query}"), "must contain the placeholder {question}"),
    (GOOD.replace("Q: {question}", "Q: {question} {hint}"), "unknown placeholder"),
    (GOOD.replace("version: 3\n", ""), "missing field"),
    ("name: [unclosed", "not valid YAML"),
    ("- just\n- a list", "expected a mapping"),
    (GOOD.replace('assistant: "The answer is 2."', 'answer: "2"'), "every example needs"),
    (GOOD.replace("Q: {question}", "Q: {question"), "broken placeholder"),
])
def test_invalid_templates_are_refused_clearly(body, message):
    with pytest.raises(TemplateError, match=message):
        parse_template(body)


def test_empty_question_and_unknown_template():
    with pytest.raises(TemplateError, match="empty"):
        load_shipped("cot").render("   ")
    with pytest.raises(TemplateError, match="no template named 'nope'"):
        load_shipped("nope")
