"""Prompt templates as data: one YAML file per strategy under prompts/templates/, loaded as LangChain messages.

A template has a name, a version, a system message, few-shot exemplars (user/assistant pairs),
a user turn with a `{question}` slot and an optional assistant prefix the model continues from.
A conversation's earlier turns go between the exemplars and the new question, each question in
the user turn's wording, so a follow-up is read in its context.
"""
from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.resources import files

import yaml
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

REQUIRED_SLOTS = {"question"}


class TemplateError(ValueError):
    pass


Turns = Sequence[tuple[str, str]]  # a conversation's earlier (question, answer) pairs, oldest first


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: int
    strategy: str
    system: str
    user: str  # must contain {question}
    examples: tuple[tuple[str, str], ...] = ()  # (user turn, assistant turn) pairs
    assistant_prefix: str = ""  # the model continues from here (e.g. "def solution():")
    description: str = ""
    extra: dict = field(default_factory=dict)  # strategy-specific settings (e.g. ReAct's stop words)

    def render(self, question: str, history: Turns = ()) -> list[BaseMessage]:
        """Chat messages for a question after the conversation's earlier (question, answer) turns;
        a trailing AIMessage is a prefix to continue."""
        if not isinstance(question, str) or not question.strip():
            raise TemplateError("the question is empty")
        messages: list[BaseMessage] = [SystemMessage(self.system)] if self.system.strip() else []
        for user, assistant in self.examples:
            messages += [HumanMessage(user), AIMessage(assistant)]
        for earlier, answer in history:
            messages += [HumanMessage(_fill(self.user, question=earlier)), AIMessage(answer)]
        messages.append(HumanMessage(_fill(self.user, question=question)))
        if self.assistant_prefix:
            messages.append(AIMessage(self.assistant_prefix))
        return messages


def _slots(text: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise TemplateError(f"broken placeholder in {text[:40]!r}…: {exc}") from exc


def _fill(text: str, **values: str) -> str:
    return text.format(**values)


def parse_template(body: str, source: str = "template") -> PromptTemplate:
    """Validate a YAML template body; raise TemplateError with a clear message when it is not usable."""
    try:
        data = yaml.safe_load(body)
    except yaml.YAMLError as exc:
        raise TemplateError(f"{source}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise TemplateError(f"{source}: expected a mapping with name, version, strategy, system, user")
    missing = [k for k in ("name", "version", "strategy", "user") if k not in data]
    if missing:
        raise TemplateError(f"{source}: missing field(s): {', '.join(missing)}")
    user = str(data["user"])
    slots = _slots(user)
    if not REQUIRED_SLOTS <= slots:
        raise TemplateError(f"{source}: the user turn must contain the placeholder {{question}}")
    if slots - REQUIRED_SLOTS:
        raise TemplateError(f"{source}: unknown placeholder(s) {sorted(slots - REQUIRED_SLOTS)}; only {{question}} is filled")
    examples = tuple((str(e["user"]), str(e["assistant"])) for e in data.get("examples") or () if _is_example(e, source))
    if isinstance(data["version"], bool) or not isinstance(data["version"], int):
        raise TemplateError(f"{source}: version must be a whole number, got {data['version']!r}")
    return PromptTemplate(name=str(data["name"]), version=data["version"], strategy=str(data["strategy"]),
                          system=str(data.get("system", "")), user=user, examples=examples,
                          assistant_prefix=str(data.get("assistant_prefix", "")),
                          description=str(data.get("description", "")), extra=dict(data.get("extra") or {}))


def _is_example(example, source: str) -> bool:
    if not isinstance(example, dict) or "user" not in example or "assistant" not in example:
        raise TemplateError(f"{source}: every example needs 'user' and 'assistant'")
    return True


def shipped_template_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in files("prompts.templates").iterdir() if p.name.endswith(".yaml"))


def shipped_template_body(name: str) -> str:
    """The YAML text of a template shipped with the package."""
    path = files("prompts.templates") / f"{name}.yaml"
    if not path.is_file():
        raise TemplateError(f"no template named '{name}'; shipped: {', '.join(shipped_template_names())}")
    return path.read_text(encoding="utf-8")


def load_shipped(name: str) -> PromptTemplate:
    """A template shipped with the package (version 1 of each)."""
    return parse_template(shipped_template_body(name), source=f"{name}.yaml")
